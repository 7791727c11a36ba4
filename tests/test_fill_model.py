"""The fill model a trader can trust (infra/paper_broker.py, infra/feeds.py FeedCore, infra/replay.py):

- a backtest and a paper run at ``--speed max`` on the same data make the same fills, byte for byte;
- no order fills at a price from before it reached the venue, nor on another instrument's print,
  nor at a price older than ``max_price_age_s``: the hedge included;
- a close on an instrument that does not trade waits for its next print;
- the intra-bar path is a reported choice: both paths' nets are in every backtest summary.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from domain.messages import OrderIntent, OrderType, Side, TradeTick
from infra.paper_broker import PaperBroker
from infra.replay import BarRow, bar_path
from infra.venues.simulated import SimulatedVenue

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
D = Decimal


PROFILE = "combine-150k"
"""A profile whose caps leave the grid room to trade on the bundled days (about 200 fills)."""


def _cfg(tmp_path: Path, **runtime):
    return load_config(None, PROFILE, {"runtime": {"data_dir": str(DEMO), "run_dir": str(tmp_path), **runtime}})


def test_backtest_and_paper_at_max_speed_make_the_same_fills(tmp_path, redis_url):
    """Same data, same handlers: the backtest's dispatcher and the paper actors (the replay feed on
    the decision loop, in lock step) give byte-identical trade logs."""
    Node(_cfg(tmp_path), MODES["backtest"], trades_csv=tmp_path / "backtest.csv").run_backtest(both_paths=False)
    ns = f"test:eq:{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "REDIS_URL": redis_url}
    for k in ("PROJECTX_USERNAME", "PROJECTX_API_KEY", "SLACK_WEBHOOK_URL"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper", "--speed", "max",
                           "--profile", PROFILE,
                           "--namespace", ns, "--run-dir", str(tmp_path / "paper"), "--metrics-port", "0", "--ops-port", "0",
                           "--trades-csv", str(tmp_path / "paper.csv")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    backtest = (tmp_path / "backtest.csv").read_bytes()
    assert backtest.count(b"\n") > 100  # three days of grid and hedge trading, not an empty log
    assert (tmp_path / "paper.csv").read_bytes() == backtest


def test_no_fill_before_arrival_or_on_another_instruments_print(tmp_path, monkeypatch):
    """Every fill of a backtest (grid, hedge, risk's flatten) is at the time of a replayed print of
    its own instrument, after the order reached the venue; a market or aggressive order fills at
    that print (+/- one tick of slippage), a resting limit at its limit inside the print."""
    arrived: dict[str, tuple[int, OrderIntent]] = {}
    real = SimulatedVenue.submit

    def submit(self, intent, ts_ns):
        arrived[intent.client_order_id] = (ts_ns, intent)
        return real(self, intent, ts_ns)
    monkeypatch.setattr(SimulatedVenue, "submit", submit)
    node = Node(_cfg(tmp_path), MODES["backtest"], trades_csv=tmp_path / "t.csv")
    fills_ts: list[int] = []
    real_fill = PaperBroker._fill

    def record(self, w, price, ts_ns, *cap):
        fills_ts.append(ts_ns)
        return real_fill(self, w, price, ts_ns, *cap)
    monkeypatch.setattr(PaperBroker, "_fill", record)
    node.run_backtest(both_paths=False)
    prints = {(t.instrument, t.ts_ns): t.price for t in node.data.events()}
    fills = node.trade_log.fills()
    assert len(fills) == len(fills_ts) and {f.strategy_id for f in fills} >= {"grid-MES", "hedge"}
    tick = D("0.25")
    for f, ts in zip(fills, fills_ts):
        arrival, intent = arrived[f.client_order_id]
        assert ts > arrival, f"{f.client_order_id} filled at {ts}, not after it arrived at {arrival}"
        print_price = prints.get((f.instrument, ts))
        assert print_price is not None, f"{f.client_order_id} filled with no {f.instrument} print at {ts}"
        if intent.order_type is OrderType.LIMIT and f.price == intent.limit_price:
            assert (print_price <= f.price) if f.side is Side.BUY else (print_price >= f.price)
        else:
            assert abs(f.price - print_price) <= tick, (f, print_price)


def _order(side: Side, kind: OrderType, coid: str, limit: Decimal | None = None) -> OrderIntent:
    return OrderIntent(coid, "risk", "MNQ", side, 1, kind, 0, limit_price=limit, reduce_only=True,
                       purpose="flatten: test")


def test_a_close_on_an_instrument_that_does_not_trade_waits_for_its_next_print():
    """The 15:10 CT flatten of an instrument with no print (e.g. MNQ overnight in the recorded data)
    does not fill at the last price hours old: it waits and fills at the next print."""
    b = PaperBroker(slippage_ticks=1, max_price_age_ns=5 * 10**9)
    b.submit(_order(Side.BUY, OrderType.MARKET, "open"), 1)
    b.on_trade(TradeTick("MNQ", 2, D("24600.00"), 1, 1))
    assert b.position("MNQ") == 1
    five_hours = 5 * 3600 * 10**9
    close = _order(Side.SELL, OrderType.MARKET, "close")
    assert [type(e).__name__ for e in b.submit(close, 2 + five_hours)] == ["OrderAccepted"]
    assert b.on_trade(TradeTick("MES", 3 + five_hours, D("6600.00"), 1, 1)) == []  # another instrument
    assert b.position("MNQ") == 1 and b.working_orders() == [close]
    [f] = b.on_trade(TradeTick("MNQ", 4 + five_hours, D("24450.00"), 1, 2))
    assert f.price == D("24449.75") and b.position("MNQ") == 0  # the next print, one tick of slippage
    # a limit that was marketable against a print older than max_price_age_s rests instead
    b.on_trade(TradeTick("MNQ", 10**9, D("24450.00"), 1, 3))
    aged = _order(Side.SELL, OrderType.LIMIT, "aged", limit=D("24440.00"))
    b.submit(aged, 10**9 + 6 * 10**9)
    assert b.on_trade(TradeTick("MNQ", 10**9 + 7 * 10**9, D("24440.00"), 1, 4)) == []  # not through it
    [f] = b.on_trade(TradeTick("MNQ", 10**9 + 8 * 10**9, D("24440.25"), 1, 5))
    assert f.price == D("24440.00")


def test_the_emergency_flatten_never_invents_a_price(store):
    venue = SimulatedVenue(store, slippage_ticks=1, max_price_age_s=5)
    venue.on_tick(TradeTick("MNQ", 1, D("24600.00"), 1, 1))
    venue.submit(_order(Side.BUY, OrderType.MARKET, "open"), 1)
    venue.on_tick(TradeTick("MNQ", 2, D("24600.00"), 1, 2))
    events = venue.flatten(10**13)
    assert not [e for e in events if type(e).__name__ == "Fill"]
    assert venue.positions()["MNQ"].qty == 1
    [f] = venue.on_tick(TradeTick("MNQ", 10**13 + 1, D("24500.00"), 1, 3))
    assert f.price == D("24499.75") and venue.positions() == {}


@pytest.mark.parametrize("close, position, expected", [
    ("up", 0, "OLHC"), ("down", 0, "OHLC"),                         # adaptive: the bar's direction last
])
def test_adaptive_path(close, position, expected):
    row = BarRow("MES", 0, 120, D(100), D(104), D(98), D(103) if close == "up" else D(99), 10)
    assert _letters(row, bar_path(row, "adaptive", position)) == expected


@pytest.mark.parametrize("close, position, expected", [
    ("up", 2, "OLHC"), ("down", 2, "OLHC"),      # long: the extreme against it (the low) first
    ("up", -1, "OHLC"), ("down", -1, "OHLC"),    # short: the high first
    ("up", 0, "OHLC"), ("down", 0, "OLHC"),      # flat: the reverse of adaptive
])
def test_adverse_path(close, position, expected):
    row = BarRow("MES", 0, 120, D(100), D(104), D(98), D(103) if close == "up" else D(99), 10)
    assert _letters(row, bar_path(row, "adverse", position)) == expected


def _letters(row: BarRow, path: tuple) -> str:
    names = {row.open: "O", row.high: "H", row.low: "L"}
    return "".join(names.get(p, "C") for p in path)


def test_every_backtest_reports_its_net_under_both_bar_paths(tmp_path):
    s = Node(_cfg(tmp_path), MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest()
    assert list(s.path_nets) == ["adaptive", "adverse"] and s.path_nets["adaptive"] == s.net_pnl
    assert s.path_nets["adverse"] != s.net_pnl  # the guess moves the result on this data
    assert "net P&L by intra-bar path: adaptive $" in s.render()
    adverse = Node(_cfg(tmp_path, bar_path="adverse"), MODES["backtest"], trades_csv=tmp_path / "a.csv").run_backtest()
    assert list(adverse.path_nets) == ["adverse", "adaptive"]
    assert adverse.net_pnl == s.path_nets["adverse"] and adverse.path_nets["adaptive"] == s.net_pnl


def test_a_timestamps_prints_reach_the_venue_before_any_strategy_reacts():
    """FeedCore.route_batch: every instrument's print of the timestamp to the venue first, then the
    clock, then the ticks for bars and risk."""
    from infra.feeds import FeedCore
    t = 1_775_660_400_000_000_000
    out = FeedCore().route_batch([TradeTick("MES", t, D("6600.00"), 1, 1), TradeTick("MNQ", t, D("24600.00"), 1, 1)])
    assert [d for d, _ in out] == ["prints.MES", "prints.MNQ", "clock", "ticks.MES", "ticks.MNQ"]


DATABENTO_1M = next((p / "databento_es_nq_samples" / "ES_NQ_U4_ohlcv-1m_2024-07-01T23-40Z_2024-07-02T00-10Z.csv"
                     for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")) if p.exists()), None)


@pytest.mark.skipif(DATABENTO_1M is None or not DATABENTO_1M.exists(), reason="shared Databento sample not found")
def test_finer_bars_in_the_folder_give_the_path(tmp_path):
    """With ES_1min/NQ_1min files beside (or instead of) the 2-minute ones, the replay uses them:
    four prints 15 s apart per 1-minute bar. Real ES/NQ 1-minute bars (Databento sample), written in
    the recorded files' format (US/Eastern wall-clock time, symbol column)."""
    import csv
    import gzip
    from zoneinfo import ZoneInfo

    from infra.feeds import open_replay
    et = ZoneInfo("America/New_York")
    rows: dict[str, list] = {"ES": [], "NQ": []}
    with DATABENTO_1M.open() as fh:
        for r in csv.DictReader(fh):
            root = r["symbol"][:2]
            when = dt.datetime.fromisoformat(r["ts_event"]).astimezone(et).strftime("%Y-%m-%d %H:%M:%S")
            rows[root].append([when, r["open"], r["high"], r["low"], r["close"], r["volume"], root])
    for root, data in rows.items():
        with gzip.open(tmp_path / f"{root}_1min.csv.gz", "wt", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["datetime", "open", "high", "low", "close", "volume", "symbol"])
            w.writerows(data)
    source = open_replay(tmp_path, ("MES", "MNQ"))
    assert {r.period_s for sym in source.instruments for r in source.bars(sym)} == {60}
    es = [t for t in source.events() if t.instrument == "MES"][:4]
    assert [t.ts_ns - es[0].ts_ns for t in es] == [0, 15 * 10**9, 30 * 10**9, 45 * 10**9]
    cfg = load_config(None, PROFILE, {"runtime": {"data_dir": str(tmp_path), "run_dir": str(tmp_path)}})
    s = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest()
    assert s.events == sum(4 * len(source.bars(sym)) for sym in source.instruments) and s.rules_ok
