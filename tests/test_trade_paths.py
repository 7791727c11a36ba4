"""Recorded trades replace the intra-bar path guess (issue 18, item 3).

Data: tests/data/databento_es/ (Databento GLBX.MDP3 ESU4/NQU4 1-minute bars and ESU4 trades of
2024-07-01 23:40-00:10 UTC; provenance in its README.md). The trades cover 23:58:01-00:01:52 UTC:
four ES bars are reproduced exactly by them; the 23:40-23:57 and 00:02-00:09 bars are not reached.
"""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from infra.feeds import open_replay
from infra.replay import ReplaySource, bar_path, bar_to_ticks, load_databento_trades

DATA = Path(__file__).parent / "data" / "databento_es"


def _covered(source: ReplaySource, ticks, inst: str = "MES"):
    """{bar start: ticks of that bar} for the bars of ``inst``."""
    out: dict[int, list] = {}
    bars = source.bars(inst)
    for t in ticks:
        if t.instrument != inst:
            continue
        row = next(r for r in bars if r.start_ns <= t.ts_ns < r.end_ns)
        out.setdefault(row.start_ns, []).append(t)
    return out


def test_bars_reproduced_by_trades_replay_as_those_trades_under_both_paths():
    source = open_replay(DATA, ("MES", "MNQ"))
    assert source.trade_paths == {"bars from trades": 4}
    trades, rejects = load_databento_trades(DATA / "ES_trades.csv.gz")
    assert not rejects
    for path, held in (("adaptive", 0), ("adverse", 1), ("adverse", -1)):
        by_bar = _covered(source, source.events(path=path, position=lambda _i, h=held: h))
        replayed = [t for ticks in by_bar.values() if len(ticks) != 4 for t in ticks]
        # every recorded print, at its own time, price and size, in order
        assert [(t.ts_ns, t.price, t.size) for t in replayed] == [(t.ts_ns, t.price, t.size) for t in trades]
    # the bars the trades do not reach keep the four-point path of the chosen mode
    first = source.bars("MES")[0]
    ticks = _covered(source, source.events(path="adverse", position=lambda _i: -1))[first.start_ns]
    assert [t.price for t in ticks] == list(bar_path(first, "adverse", -1))
    assert [t.seq for t in ticks] == [t.seq for t in bar_to_ticks(first, ticks[0].seq)]


def test_a_bar_the_recording_covers_in_part_keeps_its_path(tmp_path):
    rows = list(csv.DictReader(gzip.open(DATA / "ES_trades.csv.gz", "rt")))
    with gzip.open(tmp_path / "trades.csv.gz", "wt", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[1:])  # the first print of the 23:58 bar is missing: that bar no longer adds up
    source = ReplaySource({"MES": DATA / "ES_1min.csv.gz"}, warmup_days=0,
                          trade_files={"MES": tmp_path / "trades.csv.gz"})
    assert source.trade_paths == {"bars from trades": 3, "bars not matched by trades": 1}
    by_bar = _covered(source, source.events())
    bar = next(r for r in source.bars("MES") if r.start_ns == source.bars("MES")[0].start_ns + 18 * 60 * 10**9)
    assert bar.volume == 18  # the 23:58 UTC bar
    assert [t.price for t in by_bar[bar.start_ns]] == list(bar_path(bar))
    others = [r for r in rows if not r["ts_event"].startswith("2024-07-01 23:58")]
    assert sum(len(v) for v in by_bar.values() if len(v) != 4) == len(others)


def test_prints_of_another_contract_in_the_trade_file_are_counted_not_replayed(tmp_path):
    rows = list(csv.DictReader(gzip.open(DATA / "ES_trades.csv.gz", "rt")))
    rows[5] = {**rows[5], "symbol": "NQU4", "price": "20000.25"}
    with open(tmp_path / "ES_trades.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for name in ("ES_1min.csv.gz", "NQ_1min.csv.gz"):
        shutil.copy(DATA / name, tmp_path / name)
    source = open_replay(tmp_path, ("MES", "MNQ"))
    assert source.rejects["trades_of_another_instrument"] == 1
    # the ES bar that print belonged to no longer adds up to its volume: it keeps the path
    assert source.trade_paths == {"bars from trades": 3, "bars not matched by trades": 1}


def test_a_resume_inside_a_recorded_bar_continues_after_the_last_print_processed():
    source = open_replay(DATA, ("MES",))
    trades, _ = load_databento_trades(DATA / "ES_trades.csv.gz")
    after = trades[9].ts_ns
    first = next(t for t in source.events(after_ns=after))
    assert (first.ts_ns, first.price, first.size) == (trades[10].ts_ns, trades[10].price, trades[10].size)


def test_backtest_summary_says_how_many_bars_came_from_trades(tmp_path):
    cfg = load_config(None, "combine-50k", {"runtime": {"data_dir": str(DATA), "run_dir": str(tmp_path)}})
    s = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest()
    assert s.trade_paths == {"bars replayed": 60, "bars from trades": 4}
    assert "bars replayed from recorded trades (the same under both paths): 4 of 60" in s.render()
    assert s.events == 60 * 4 - 4 * 4 + 120
