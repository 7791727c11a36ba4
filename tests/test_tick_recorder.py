"""The tick recorder (infra/tick_recorder.py) and the replay of its recordings (issue 22, item 1).

Data: tests/data/databento_es/ (Databento GLBX.MDP3, ESU4 trades and MBP-1 top of book of
2024-07-01 23:58-00:02 UTC, provenance in its README.md), read as MES. Every file is written and
read on disk in tmp_path.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import gzip
import heapq
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from actors.dispatcher import Dispatcher
from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from domain.calendar import CT, NS, dt_to_ns, trading_day
from domain.handler import CLOCK_TOPIC, FEED, bars_topic, prints_topic, quotes_topic, ticks_topic
from domain.messages import Bar, QuoteTick, TradeTick
from infra.alerts import SlackAlerter
from infra.feeds import LiveFeed
from infra.replay import BadDataFile, load_databento_quotes, load_databento_trades
from infra.tick_recorder import (QUOTE_FIELDS, RECORDER, TRADE_FIELDS, FlushTicks, RecordedData, TickRecorder,
                                 find_recordings, is_recording_dir, open_recordings, read_recording,
                                 recording_path, scan_gzip)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "databento_es"
DAY = dt.date(2024, 7, 2)  # 23:58 UTC on July 1 is 18:58 CT: the trading day of July 2


def real_ticks() -> tuple[list[TradeTick], list[QuoteTick]]:
    trades, rej = load_databento_trades(DATA / "ES_trades.csv.gz")
    quotes, rej2 = load_databento_quotes(DATA / "ES_mbp-1.csv.gz")
    assert not rej and not rej2 and len(trades) == 120 and len(quotes) == 2288
    return trades, quotes


def through_live_feed(ticks, root: Path) -> tuple[TickRecorder, list]:
    """The ticks as the hub posts them to the feed actor, through the live feed handler, to the
    recorder on the topics the node subscribes it to (``Node.topics`` with hub data); returns the
    recorder and the ticks it was sent."""
    sent: list = []
    feed = LiveFeed([], ticks[0].ts_ns)
    recorder = TickRecorder(root)

    class Tap:  # what the recorder actor receives, in order
        def handle(self, msg):
            sent.append(msg)
            return recorder.handle(msg)

    disp = Dispatcher({FEED: feed, RECORDER: Tap()},
                      {ticks_topic("MES"): (RECORDER,), quotes_topic("MES"): (RECORDER,), prints_topic("MES"): (),
                       CLOCK_TOPIC: ()})
    for t in ticks:
        disp.send([(FEED, t)])
        disp.drain()
    recorder.close()
    return recorder, sent


def test_round_trip_every_field_of_every_trade_and_quote(tmp_path):
    trades, quotes = real_ticks()
    merged = list(heapq.merge(trades, quotes, key=lambda t: (t.ts_ns, isinstance(t, QuoteTick))))
    recorder, sent = through_live_feed(merged, tmp_path)
    sent_trades = [t for t in sent if isinstance(t, TradeTick)]
    sent_quotes = [q for q in sent if isinstance(q, QuoteTick)]
    assert sent_trades == trades                       # every print passed the feed's validation
    assert len(sent_quotes) == 2287                    # one MBP-1 record repeats the one before it: a duplicate
    assert recorder.written == {"trades": 120, "quotes": 2287} and not recorder.errors and not recorder.dropped
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "2024-07-02", "2024-07-02/MES_quotes.csv.gz", "2024-07-02/MES_trades.csv.gz"]

    back_trades, rej = read_recording(recording_path(tmp_path, DAY, "MES", "trades"))
    back_quotes, rej2 = read_recording(recording_path(tmp_path, DAY, "MES", "quotes"))
    assert not rej and not rej2
    assert back_trades == sent_trades and back_quotes == sent_quotes  # instrument, ts_ns, prices, sizes, seq
    assert [type(t.price) for t in back_trades[:1]] == [Decimal]
    # the existing Databento loaders read the files as they are (no new parser)
    assert load_databento_trades(recording_path(tmp_path, DAY, "MES", "trades"), micro=False)[0] == sent_trades
    with gzip.open(recording_path(tmp_path, DAY, "MES", "trades"), "rt") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == TRADE_FIELDS and len(rows) == 121
    assert rows[1][:5] == ["2024-07-01 23:58:01.218218853+00:00", rows[1][1], "MES", "5528.75", "2"]
    recv = dt.datetime.fromisoformat(rows[1][1])
    assert recv.tzinfo is not None and abs(recv - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    with gzip.open(recording_path(tmp_path, DAY, "MES", "quotes"), "rt") as fh:
        assert tuple(next(csv.reader(fh))) == QUOTE_FIELDS


def test_a_trading_day_boundary_splits_the_files(tmp_path):
    """17:00 CT begins the next trading day's files: real prints, moved in time so that the
    61st falls on 17:00:00 CT of Tuesday 2024-07-02 exactly."""
    trades, _ = real_ticks()
    shift = dt_to_ns(dt.datetime(2024, 7, 2, 17, 0, tzinfo=CT)) - trades[60].ts_ns
    moved = [TradeTick(t.instrument, t.ts_ns + shift, t.price, t.size, t.seq) for t in trades]
    recorder = TickRecorder(tmp_path)
    for t in moved:
        recorder.handle(t)
    recorder.close()
    first, _ = read_recording(recording_path(tmp_path, dt.date(2024, 7, 2), "MES", "trades"))
    second, _ = read_recording(recording_path(tmp_path, dt.date(2024, 7, 3), "MES", "trades"))
    assert first == moved[:60] and second == moved[60:]
    assert {trading_day(t.ts_ns) for t in first} == {dt.date(2024, 7, 2)}
    assert {trading_day(t.ts_ns) for t in second} == {dt.date(2024, 7, 3)}


def test_rows_are_on_disk_within_the_flush_period(tmp_path):
    """A row waits in memory at most ``flush_s`` (written with the next tick after that, or the
    node's heartbeat ``FlushTicks``): a kill -9 loses that much at most."""
    trades, _ = real_ticks()
    path = recording_path(tmp_path, DAY, "MES", "trades")
    recorder = TickRecorder(tmp_path, flush_s=0.2)
    recorder.handle(trades[0])
    assert not path.exists()                            # buffered
    recorder.handle(FlushTicks(time.time_ns()))
    assert read_recording(path)[0] == trades[:1]        # the heartbeat wrote it
    recorder.handle(trades[1])
    time.sleep(0.25)
    recorder.handle(trades[2])                          # 0.25 s after the last write: written with this tick
    assert read_recording(path)[0] == trades[:3]
    assert path.read_bytes().count(b"\x1f\x8b\x08") == 2  # two flushes, two gzip members, one stream


def three_members(trades, root: Path, path: Path) -> list[int]:
    """Record ``trades`` in three flushes (prints 0-39, 40-79, 80-): one gzip member each; returns
    the file's size after each."""
    recorder = TickRecorder(root, flush_s=1e9)
    ends = []
    for chunk in (trades[:40], trades[40:80], trades[80:]):
        for t in chunk:
            recorder.handle(t)
        recorder.flush()
        ends.append(path.stat().st_size)
    return ends


def test_a_truncated_file_is_read_to_the_damage_and_repaired_by_the_next_recorder(tmp_path):
    trades, _ = real_ticks()
    path = recording_path(tmp_path, DAY, "MES", "trades")
    ends = three_members(trades, tmp_path, path)
    cut = ends[1] + (ends[2] - ends[1]) * 2 // 3        # a kill -9 inside the third write
    path.write_bytes(path.read_bytes()[:cut])
    assert scan_gzip(path).intact_end == ends[1] and scan_gzip(path).truncated

    with pytest.raises(BadDataFile, match="truncated"):
        load_databento_trades(path, micro=False)        # the loaders' error path refuses the file ...
    back, rejects = read_recording(path)                # ... read_recording reads it up to the damage
    assert back == trades[:len(back)] and 80 <= len(back) < 120
    assert rejects == collections.Counter(damaged_file_tail=1, partial_row=1)

    more = TickRecorder(tmp_path)                       # the next process appends to the same day file
    extra = [TradeTick("MES", trades[-1].ts_ns + k * NS, trades[-1].price, 1, 10_000 + k) for k in range(1, 4)]
    for t in extra:
        more.handle(t)
    more.close()
    assert more.repaired == 1
    fixed, rejects = load_databento_trades(path, micro=False)  # a plain gzip stream again
    assert not rejects and fixed == back + extra


def test_a_file_corrupt_inside_is_read_to_the_damage_and_set_aside_by_the_next_recorder(tmp_path):
    trades, _ = real_ticks()
    path = recording_path(tmp_path, DAY, "MES", "trades")
    ends = three_members(trades, tmp_path, path)
    data = bytearray(path.read_bytes())
    data[(ends[0] + ends[1]) // 2] ^= 0xFF              # a flipped byte inside the second member
    path.write_bytes(bytes(data))
    back, rejects = read_recording(path)
    assert back == trades[:40] and rejects == collections.Counter(damaged_file_tail=1)  # nothing after the damage

    more = TickRecorder(tmp_path)
    more.handle(trades[0])
    more.close()
    [aside] = [p for p in path.parent.iterdir() if p.name.startswith("MES_trades.csv.gz.damaged-")]
    assert aside.read_bytes() == bytes(data) and more.repaired == 1   # kept whole, out of the replay's way
    assert read_recording(path) == ([trades[0]], collections.Counter())
    assert list(find_recordings(tmp_path)[DAY]) == [("MES", "trades")]


def test_write_errors_are_counted_and_the_rows_kept_for_the_next_flush(tmp_path):
    trades, _ = real_ticks()
    blocker = tmp_path / "ticks"
    blocker.write_text("a file where the folder should be")
    recorder = TickRecorder(blocker)
    for t in trades[:5]:
        assert recorder.handle(t) == []
    recorder.flush()                                    # cannot create the day folder: counted, never raised
    assert sum(recorder.errors.values()) == 1 and recorder.written["trades"] == 0
    blocker.unlink()
    recorder.flush()
    assert recorder.written["trades"] == 5 and read_recording(recording_path(blocker, DAY, "MES", "trades"))[0] == trades[:5]


def record(trades, root: Path) -> None:
    recorder = TickRecorder(root)
    for t in trades:
        recorder.handle(t)
    recorder.close()


def one_second_config(data_dir: Path, run_dir: Path):
    """An EMA cross on 1-second MES bars (a strategy asking for ``bar_s: 1`` makes the node's bar
    builder build them), too slow to cross in four minutes: no order, so the run ends at once."""
    return load_config(None, "combine-50k", {
        "strategies": [{"name": "ema-MES", "kind": "ema_cross", "instruments": ["MES"],
                        "params": {"fast": 500, "slow": 1000, "bar_s": 1}}],
        "runtime": {"data_dir": str(data_dir), "run_dir": str(run_dir), "speed": "max",
                    "metrics_port": None, "ops_port": None}})


def one_second_bars(trades) -> list[tuple]:
    """(start, open, high, low, close, volume) per second with prints, computed here from the prints."""
    by_second: dict[int, list[TradeTick]] = collections.defaultdict(list)
    for t in trades:
        by_second[t.ts_ns // NS].append(t)
    return [(s * NS, g[0].price, max(t.price for t in g), min(t.price for t in g), g[-1].price,
             sum(t.size for t in g)) for s, g in sorted(by_second.items())]


def test_paper_mode_on_recordings_builds_one_second_bars(store, tmp_path):
    trades, _ = real_ticks()
    ticks_dir = tmp_path / "ticks"
    record(trades, ticks_dir)
    assert is_recording_dir(ticks_dir, ("MES",)) and not is_recording_dir(DATA, ("MES",))
    cfg = one_second_config(ticks_dir, tmp_path)
    node = Node(cfg, MODES["paper"], store=store, alerter=SlackAlerter(None, context={"mode": "paper"}))
    assert isinstance(node.data, RecordedData) and node.days == ["2024-07-02"]
    assert RECORDER not in node.factories() and node.topics()[quotes_topic("MES")] == ()  # a replay records nothing
    bars: list[Bar] = []
    lock = threading.Lock()

    def tap(dest, msg):
        if dest == bars_topic("MES") and isinstance(msg, Bar):
            with lock:
                bars.append(msg)
    node.directory.send_hook = tap
    node.start()
    try:
        assert node.data_done.wait(60), "the replay of the recording did not end"
        node.wait_drained()
        node.shutdown("end of data")
    finally:
        node.stop()
    one = [(b.start_ns, b.open, b.high, b.low, b.close, b.volume) for b in bars if b.period_s == 1]
    expected = one_second_bars(trades)
    assert len(expected) == 44                      # 120 prints in 44 distinct seconds
    assert one == expected[:-1]                     # the last second's bar is still open at the end of data
    assert one[0] == (dt_to_ns(dt.datetime(2024, 7, 1, 23, 58, 1, tzinfo=dt.timezone.utc)), Decimal("5528.75"),
                      Decimal("5528.75"), Decimal("5528.75"), Decimal("5528.75"), 2)
    assert all(b.end_ns - b.start_ns == NS for b in bars if b.period_s == 1)
    assert node.feed_handler.sent == 120            # every recorded print replayed


def test_backtest_on_a_recording_folder_from_the_command_line(tmp_path):
    """``--data`` on a recording folder (no bar file): the prints replayed as recorded, one day."""
    trades, _ = real_ticks()
    record(trades, tmp_path / "ticks")
    cfg = tmp_path / "ema1s.yaml"
    cfg.write_text("strategies:\n  - name: ema-MES\n    kind: ema_cross\n    instruments: [MES]\n"
                   "    params: {fast: 3, slow: 5, bar_s: 1}\n")
    out = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--mode", "backtest", "--config", str(cfg),
                          "--data", str(tmp_path / "ticks"), "--run-dir", str(tmp_path / "run"), "--no-report"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    assert "=== session summary (backtest)" in out.stdout and "2024-07-02" in out.stdout


def test_open_recordings_warms_up_on_the_first_day_and_names_what_is_missing(tmp_path):
    trades, _ = real_ticks()
    day2 = [TradeTick(t.instrument, t.ts_ns + 24 * 3600 * NS, t.price, t.size, t.seq) for t in trades]
    record(trades + day2, tmp_path)
    source = open_recordings(tmp_path, ("MES",))
    assert source.trading_days() == [dt.date(2024, 7, 3)]
    assert source.warmup_trades("MES") == trades and list(source.events()) == day2
    assert list(source.events(after_ns=day2[59].ts_ns)) == day2[60:]
    with pytest.raises(ValueError, match="no recorded trades of MNQ"):
        open_recordings(tmp_path, ("MES", "MNQ"))
    with pytest.raises(ValueError, match="no recorded trading day"):
        open_recordings(tmp_path, ("MES",), start=dt.date(2024, 8, 1))
