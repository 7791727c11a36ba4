"""The bulk routed stream (infra/bulk_replay.py) is the per-tick path's, message for message.

Data: data/demo (four sessions of the real ES/NQ 2-minute bars, data/demo/README.md),
tests/data/spike_2026-03-23 (the +139.5-point ES bar, many continuous-path prints) and
tests/data/databento_es (bars replaced by recorded trades); provenance in their READMEs and in
tests/test_continuous_path.py. The synthetic files below are written to test edge cases.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from infra.bulk_replay import bulk_routed
from infra.feeds import ReplayData, Routed, open_replay
from infra.replay import ReplaySource

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
SPIKE = Path(__file__).parent / "data" / "spike_2026-03-23"
DATABENTO = Path(__file__).parent / "data" / "databento_es"


def _scalar(source: ReplaySource, step_bp):
    """The per-tick path: ``FeedCore.route_batch`` over ``ReplaySource.events``."""
    routed = Routed(source.events(path="adaptive", step_bp=step_bp))
    return routed, list(routed.batches)


def _spelled(batches):
    """Every message as (destination, type, repr): equal Decimals spelled differently differ."""
    return [[(dest, type(m).__name__, repr(m)) for dest, m in out] for out in batches]


@pytest.mark.parametrize("data,instruments", [(DEMO, ("MES", "MNQ")), (SPIKE, ("MES", "MNQ")), (DEMO, ("MNQ",))])
@pytest.mark.parametrize("step_bp", [4.0, None, 1.0])
def test_bulk_stream_equals_the_per_tick_path(data, instruments, step_bp):
    source = open_replay(data, instruments)
    routed, batches = _scalar(source, step_bp)
    bulk = bulk_routed(source, step_bp)
    assert bulk is not None
    fast = Routed(None, bulk)
    got = list(fast.batches)
    assert _spelled(got) == _spelled(batches)
    assert (fast.ticks, fast.core.last_ts, fast.core.minute) == (routed.ticks, routed.core.last_ts, routed.core.minute)
    assert not routed.core.rejected  # the case the bulk path claims: every print accepted
    if step_bp == 1.0:
        assert fast.ticks > 4 * source.bar_count  # continuous-path prints were made


def _bar_file(path: Path, rows: list[tuple[str, str, str, str, str, int]]) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("datetime,open,high,low,close,volume,symbol\n")
        for when, o, h, lo, c, v in rows:
            f.write(f"{when},{o},{h},{lo},{c},{v},ES\n")
    return path


def _day(date: str, closes: list[str], volumes: list[int], jump_at: int | None = None) -> list:
    """2-minute bars from 09:30 ET; bar ``jump_at`` opens 15 % higher (a data hole past the band)."""
    rows, price = [], None
    for i, (c, v) in enumerate(zip(closes, volumes)):
        hh, mm = divmod(9 * 60 + 30 + 2 * i, 60)
        o = c if price is None else price
        if i == jump_at:
            o = c = f"{float(c) * 1.15:.2f}"
        hi, lo = max(float(o), float(c)) + 2.5, min(float(o), float(c)) - 2.5
        rows.append((f"{date} {hh:02d}:{mm:02d}:00", o, f"{hi:.2f}", f"{lo:.2f}", c, v))
        price = c
    return rows


def test_small_volumes_and_long_moves_replay_as_the_per_tick_path(tmp_path):
    closes = ["5000.00", "5000.25", "4990.00", "5012.50", "5012.50", "4950.75", "4951.00"]
    volumes = [0, 1, 2, 3, 4, 7, 12_345]
    _bar_file(tmp_path / "ES_2min.csv.gz", _day("2026-04-06", closes, volumes) + _day("2026-04-07", closes, volumes))
    source = open_replay(tmp_path, ("MES",))
    for step_bp in (4.0, 0.5, None):
        _routed, batches = _scalar(source, step_bp)
        assert _spelled(list(Routed(None, bulk_routed(source, step_bp)).batches)) == _spelled(batches)


def test_a_print_the_validator_rejects_sends_the_replay_down_the_per_tick_path(tmp_path):
    closes = ["5000.00"] * 6
    _bar_file(tmp_path / "ES_2min.csv.gz",
              _day("2026-04-06", closes, [100] * 6) + _day("2026-04-07", closes, [100] * 6, jump_at=3))
    source = open_replay(tmp_path, ("MES",))
    assert bulk_routed(source, 4.0) is None
    routed = ReplayData(source, step_bp=4.0).routed()
    list(routed.batches)
    assert routed.core.rejected["price_band"] > 0  # counted by the validator, as before


def test_bars_replaced_by_recorded_trades_take_the_per_tick_path():
    source = open_replay(DATABENTO, ("MES", "MNQ"))
    assert source.trade_paths["bars from trades"] == 4
    assert bulk_routed(source, 4.0) is None


def test_backtest_on_the_bulk_stream_equals_the_per_tick_stream(tmp_path, monkeypatch):
    """The whole backtest (default config, bundled data): the same trade log, byte for byte."""
    logs = {}
    for name in ("bulk", "per-tick"):
        if name == "per-tick":
            monkeypatch.setattr("infra.feeds.bulk_routed", lambda *_a, **_k: None)
        cfg = load_config(None, "combine-50k", {"runtime": {"data_dir": str(DEMO), "run_dir": str(tmp_path / name)}})
        s = Node(cfg, MODES["backtest"], trades_csv=tmp_path / f"{name}.csv").run_backtest(both_paths=False)
        logs[name] = ((tmp_path / f"{name}.csv").read_bytes(), s.fills, s.net_pnl, s.events)
    assert logs["bulk"] == logs["per-tick"]
    assert logs["bulk"][1] > 0
