"""The HMM regime + VWAP strategy (domain/strategies/regime_vwap.py, docs/strategies/regime.md):
each signal branch on hand-made bars, the filters, sizing, the managed OCO bracket, risk's view of
the bracket, and backtests on the bundled data (with the bundled model, data/models/)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from domain.calendar import SessionCalendar
from domain.handler import RISK, ROUTER, WATCHDOG, CounterIds
from domain.indicators import EMA
from domain.messages import (Bar, CancelOrder, ExposureUpdate, Fill, OrderCancelled, OrderDenied, OrderSubmitted, OrderIntent, OrderType, Side,
                             WarmupBars)
from domain.risk import RiskManager
from domain.risk_rules import RiskLimits
from domain.strategies import load_plugin
from domain.strategies.base import StrategyContext
from domain.strategies.regime_vwap import RegimeVwapParams, RegimeVwapStrategy

ROOT = Path(__file__).resolve().parent.parent
ET = ZoneInfo("America/New_York")
NS = 1_000_000_000
D = Decimal
LIMITS = RiskLimits(starting_balance=50_000, mll_amount=2_000, max_contracts_minis=5, daily_loss_cap=400)
PLUGIN = load_plugin("regime_vwap")


def _ts(h: int, m: int, day: int = 8) -> int:
    return int(dt.datetime(2026, 4, day, h, m, tzinfo=ET).timestamp()) * NS


def _bar(start_ns: int, o, h, lo, c, vol=100, period=60) -> Bar:
    return Bar("MNQ", period, start_ns, start_ns + period * NS, D(str(o)), D(str(h)), D(str(lo)), D(str(c)), vol,
               start_ns + period * NS)


def _strategy(**params) -> RegimeVwapStrategy:
    p = RegimeVwapParams(**params)
    s = PLUGIN.build(StrategyContext("regime-MNQ", ("MNQ",), CounterIds(), SessionCalendar(), LIMITS), p)
    assert isinstance(s, RegimeVwapStrategy)
    return s


def _session(s: RegimeVwapStrategy, closes: list[float], start=(9, 30)) -> int:
    """Feed 1-minute bars from ``start`` ET with these closes (range +/-1 point); returns the next bar's start."""
    t = _ts(*start)
    for c in closes:
        s.handle(_bar(t, c, c + 1, c - 1, c))
        t += 60 * NS
    return t


def _bias(s: RegimeVwapStrategy, ema: float, close: float) -> None:
    """Set the 30-minute EMA to ``ema`` and the last 30-minute close to ``close``."""
    s.macro = EMA(1)
    s.macro.update(ema)
    s.macro_close = close


def _intents(out) -> list[OrderIntent]:
    return [m for d, m in out if d == RISK and isinstance(m, OrderIntent)]


def test_bull_pullback_to_vwap_goes_long_unless_the_macro_bias_is_bear():
    s = _strategy()
    t = _session(s, [20000.0] * 25)
    s.regime = "bull"
    bar = _bar(t, 19999.0, 20002.0, 19998.0, 20001.5)  # dips to VWAP, closes up
    assert s.signal(bar) == (1, 8, 14, "bull_pullback")
    _bias(s, 20000.0, 19900.0)  # close 0.5 % below the 30-min EMA: bear bias
    assert s.bias == "bear" and s.signal(bar) is None and s.counters["bias_blocked"] == 1
    s.regime = "strong_bull"
    _bias(s, 20000.0, 20000.0)
    assert s.signal(bar) == (1, 10, 18, "strong_bull_pullback")


def test_bear_rally_fade_goes_short_unless_the_bias_is_bull():
    s = _strategy()
    t = _session(s, [20000.0] * 25)
    s.regime = "bear"
    bar = _bar(t, 20001.0, 20002.0, 19997.0, 19998.0)  # rallies to VWAP, closes down
    assert s.signal(bar) == (-1, 8, 14, "bear_rally_fade")
    _bias(s, 20000.0, 20100.0)
    assert s.bias == "bull" and s.signal(bar) is None


def test_neutral_mean_reversion_needs_a_wide_band_and_caps_the_target_at_vwap():
    s = _strategy()
    t = _session(s, [20000.0] * 25)  # flat session: the band is ~0 wide
    s.regime = "neutral"
    assert s.signal(_bar(t, 19990.0, 19996.0, 19989.0, 19995.0)) is None  # range too tight
    s2 = _strategy()
    closes = [20000.0 + (10 if i % 2 else -10) for i in range(25)]  # +/-10 points: std ~10
    t = _session(s2, closes)
    s2.regime = "neutral"
    vw, sd = s2.vwap.value, s2.band_std()
    assert sd is not None and 2 * sd >= 8
    low_close = vw - sd - 2
    sig = s2.signal(_bar(t, low_close - 1, low_close + 1, low_close - 2, low_close))  # below the band, bullish
    assert sig is not None and sig[0] == 1 and sig[3] == "neutral_mean_rev_long"
    assert sig[2] == min(round(6 * 1.8), int((vw - low_close) / 0.25))
    high_close = vw + sd + 0.5
    sig = s2.signal(_bar(t, high_close + 0.5, high_close + 1, high_close - 1, high_close))  # above, bearish
    assert sig is not None and sig[0] == -1 and sig[2] == min(11, int((high_close - vw) / 0.25))
    s3 = _strategy(neutral_needs_neutral_bias=True)
    _session(s3, closes)
    s3.regime = "neutral"
    _bias(s3, 20000.0, 20100.0)
    assert s3.signal(_bar(t, low_close - 1, low_close + 1, low_close - 2, low_close)) is None


def test_crash_exhaustion_bounce_needs_a_long_lower_wick():
    s = _strategy()
    t = _session(s, [20000.0] * 25)
    s.regime = "crash"
    assert s.signal(_bar(t, 19990.0, 19992.0, 19980.0, 19991.0)) == (1, 6, 11, "crash_exhaustion_bounce")
    assert s.signal(_bar(t, 19990.0, 19992.0, 19980.0, 19984.0)) is None  # wick 40 %


def test_news_blackout_and_the_entry_window():
    s = _strategy()
    assert s.in_blackout(_ts(8, 26)) and s.in_blackout(_ts(8, 39)) and not s.in_blackout(_ts(8, 40))
    assert s.in_blackout(_ts(13, 55)) and s.in_blackout(_ts(14, 35)) and not s.in_blackout(_ts(11, 0))
    t = _session(s, [20000.0] * 30)  # 09:30..09:59
    s.regime = "bull"
    t_blackout = _ts(10, 2)
    out = s.handle(_bar(t_blackout, 19999.0, 20002.0, 19998.0, 20001.5))
    assert _intents(out) == [] and s.counters["blackout"] == 1
    out = s.handle(_bar(_ts(10, 30), 19999.0, 20002.0, 19998.0, 20001.5))
    assert [(i.side, i.qty, i.order_type) for i in _intents(out)] == [(Side.BUY, 1, OrderType.MARKET)]
    assert t < t_blackout


def test_size_follows_the_regime_and_vix_multipliers():
    calm, fear = _strategy(vix=15.0, base_size=4), _strategy(vix=35.0, base_size=4)
    day = _ts(10, 0)
    assert [calm.size(r, day) for r in ("bull", "neutral", "crash")] == [4, 3, 2]
    assert [fear.size(r, day) for r in ("bull", "neutral", "crash")] == [2, 1, 1]
    filed = _strategy(base_size=4)  # the bundled VIX file: 2026-03-23 closed 26.15, 2026-03-09 25.50...
    assert filed.vix_multiplier(_ts(10, 0, day=24)) == 1.0
    assert filed.vix_multiplier(int(dt.datetime(2030, 1, 2, tzinfo=ET).timestamp()) * NS) == 0.5  # unknown


def _fill(intent: OrderIntent, price: str, tid: str, ts: int) -> Fill:
    return Fill(intent.client_order_id, intent.strategy_id, tid, intent.instrument, intent.side, intent.qty,
                D(price), D("0.37") * intent.qty, 0, ts)


def _long_with_bracket() -> tuple[RegimeVwapStrategy, int, OrderIntent, OrderIntent]:
    """A bull-regime strategy whose 10:30 ET pullback entry filled long 1 at 20002: returns it,
    the entry bar's start time and the bracket's stop and target intents (``brackets: managed``;
    native brackets: tests/test_native_brackets.py)."""
    s = _strategy(brackets="managed")
    _session(s, [20000.0] * 40)
    s.regime = "bull"
    t = _ts(10, 30)
    entry, = _intents(s.handle(_bar(t, 19999.0, 20002.0, 19998.0, 20001.5)))
    stop, target = _intents(s.handle(_fill(entry, "20002.00", "T1", t + 61 * NS)))
    return s, t, stop, target


def test_the_entry_fill_places_a_managed_oco_and_one_exit_cancels_the_other():
    s, t, stop, target = _long_with_bracket()
    assert (stop.order_type, stop.side, stop.stop_price, stop.reduce_only, stop.purpose) == \
        (OrderType.STOP, Side.SELL, D("20000.00"), True, "bracket-stop; regime=bull")
    assert (target.order_type, target.limit_price, target.purpose) == (OrderType.LIMIT, D("20005.50"),
                                                                       "bracket-target; regime=bull")
    out = s.handle(_fill(stop, "20000.00", "T2", t + 90 * NS))
    assert [(type(m), m.client_order_id) for _, m in out] == [(CancelOrder, target.client_order_id)]
    assert s.trade is not None  # the trade ends once its target's cancel is confirmed (a race could fill it)
    s.handle(OrderCancelled(target.client_order_id, "regime-MNQ", t + 91 * NS, "oco: sibling filled"))
    assert s.trade is None and s.losses_in_row == 1 and s.counters["stops"] == 1
    # (20000 - 20002) x $2 x 1 - fees 2 x 0.37
    assert s.day_pnl == D("-4.74")


def test_a_refused_protective_order_is_replaced_by_a_market_exit():
    s, t, stop, target = _long_with_bracket()
    out = s.handle(OrderDenied(stop.client_order_id, "regime-MNQ", "test", t + 62 * NS))
    kinds = [(type(m).__name__, getattr(m, "order_type", None)) for _, m in out]
    assert kinds == [("Alert", None), ("CancelOrder", None), ("OrderIntent", OrderType.MARKET)]
    (to, alert), (_, cancel), (_, exit_) = out
    assert (to, alert.level, alert.key, alert.action) == (WATCHDOG, "warning", "regime-MNQ-protection-refused",
                                                          "exit at market")
    assert stop.client_order_id in alert.text
    assert cancel.client_order_id == target.client_order_id and exit_.reduce_only


def test_risk_takes_both_exits_of_a_bracket_but_not_for_a_flat_position():
    risk = RiskManager(LIMITS, CounterIds(), SessionCalendar(), _ts(10, 0))
    t = _ts(10, 30)
    buy = OrderIntent("e1", "regime-MNQ", "MNQ", Side.BUY, 1, OrderType.MARKET, t, purpose="regime-entry")
    assert [d for d, _ in risk.handle(buy)] == [ROUTER]
    risk.handle(OrderSubmitted("e1", "regime-MNQ", t))
    risk.handle(_fill(buy, "20000.00", "T1", t + NS))
    stop = OrderIntent("s1", "regime-MNQ", "MNQ", Side.SELL, 1, OrderType.STOP, t + 2 * NS,
                       stop_price=D("19998.00"), reduce_only=True, purpose="bracket-stop; regime=bull")
    target = OrderIntent("t1", "regime-MNQ", "MNQ", Side.SELL, 1, OrderType.LIMIT, t + 2 * NS,
                         limit_price=D("20003.50"), reduce_only=True, purpose="bracket-target")
    assert [d for d, _ in risk.handle(stop)] == [ROUTER]
    assert [d for d, _ in risk.handle(target)] == [ROUTER]
    # any other close beside them is judged without them: it still may not flip the position
    extra = OrderIntent("x1", "regime-MNQ", "MNQ", Side.SELL, 2, OrderType.MARKET, t + 3 * NS, reduce_only=True,
                        purpose="regime-exit")
    assert isinstance(risk.handle(extra)[-1][1], OrderDenied)
    flat = RiskManager(LIMITS, CounterIds(), SessionCalendar(), _ts(10, 0))
    lonely = OrderIntent("s2", "regime-MNQ", "MNQ", Side.SELL, 1, OrderType.STOP, t, stop_price=D("19998.00"),
                         reduce_only=True, purpose="bracket-stop")
    assert isinstance(flat.handle(lonely)[-1][1], OrderDenied)


def test_the_regime_comes_from_five_minute_bars_through_the_causal_filter():
    s = _strategy()
    t = _ts(4, 0)
    bars = [_bar(t + i * 300 * NS, 20000 + i, 20002 + i, 19999 + i, 20001 + i, vol=500 + 10 * i, period=300)
            for i in range(40)]
    s.handle(WarmupBars("MNQ", 300, tuple(bars[:30]), t))
    assert s.regime in ("strong_bull", "bull", "neutral", "bear", "crash")
    probs = list(s.filter.probs)
    s2 = _strategy()
    for b in bars[:30]:
        s2.handle(b)
    assert list(s2.filter.probs) == probs  # warm-up bars and live bars feed the filter alike
    snap = s.snapshot()
    s3 = _strategy()
    s3.restore(snap)
    for b in bars[30:]:
        s.handle(b)
        s3.handle(b)
    assert list(s3.filter.probs) == list(s.filter.probs) and s3.regime == s.regime


def _backtest(tmp_path, profile="combine-150k"):
    cfg = load_config(ROOT / "config/regime.yaml", profile, {"runtime": {"run_dir": str(tmp_path)}})
    return Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest(both_paths=False)


def test_a_backtest_on_the_bundled_days_trades_brackets_and_ends_flat(tmp_path):
    s = _backtest(tmp_path)
    r = next(x for x in s.strategies if x.name == "regime-MNQ")
    assert r.stats["entries"] > 0 and s.rules_ok and s.open_positions == {}
    rows = [line.split(",") for line in (tmp_path / "t.csv").read_text().splitlines()[1:]]
    entries = [x for x in rows if x[10].startswith("regime-entry")]
    exits = [x for x in rows if x[10].startswith(("bracket-stop", "bracket-target", "regime-exit", "flatten"))]
    assert len(entries) == len(exits) > 0  # every entry closed by exactly one exit: no orphan, no double close
    assert r.stats["stops"] + r.stats["targets"] + r.stats["exits"] + r.stats["flattened"] == len(entries)


def test_the_same_config_runs_with_the_grid_under_one_account(tmp_path):
    cfg = load_config(ROOT / "config/examples/grid-and-regime.yaml", "combine-150k",
                      {"runtime": {"run_dir": str(tmp_path)}})
    assert cfg.instruments() == ("MES", "MNQ")
    s = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest(both_paths=False)
    assert {r.name for r in s.strategies} == {"grid-MES", "regime-MNQ"} and s.rules_ok
    assert sum(r.net_pnl for r in s.strategies) == s.net_pnl


def test_exposure_flat_after_a_risk_flatten_closes_the_trade():
    s, t, stop, target = _long_with_bracket()
    from domain.messages import OrderCancelled
    for o in (stop, target):  # risk's flatten cancels the bracket first
        s.handle(OrderCancelled(o.client_order_id, "regime-MNQ", t + 70 * NS, "flatten"))
    s.handle(ExposureUpdate((), t + 71 * NS))
    assert s.trade is None and s.book.qty == 0 and s.counters["flattened"] == 1


def test_backtest_and_paper_at_max_speed_make_the_same_regime_fills(tmp_path, redis_url):
    """Backtest = paper for this strategy too: the same fills, byte for byte, on the bundled days."""
    import os
    import subprocess
    import sys
    import uuid
    _backtest(tmp_path)
    env = {**os.environ, "REDIS_URL": redis_url}
    for k in ("PROJECTX_USERNAME", "PROJECTX_API_KEY", "SLACK_WEBHOOK_URL"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper", "--speed", "max",
                           "--profile", "combine-150k", "--config", str(ROOT / "config/regime.yaml"),
                           "--namespace", f"test:regime:{uuid.uuid4().hex[:6]}", "--run-dir", str(tmp_path / "paper"),
                           "--metrics-port", "0", "--ops-port", "0", "--trades-csv", str(tmp_path / "paper.csv")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    backtest = (tmp_path / "t.csv").read_bytes()
    assert backtest.count(b"\n") > 4
    assert (tmp_path / "paper.csv").read_bytes() == backtest


def test_kill9_with_a_bracket_working_then_resume_leaves_no_orphan_and_no_naked_position(redis_url, tmp_path):
    """kill -9 while the strategy holds a position with its stop and target working; the restart
    (same Redis) must keep managing that bracket: every entry is closed by exactly one exit, no
    stop or target ever opens a position, and nothing is left working or open at the end."""
    import csv
    import uuid

    from tests.live_support import assert_each_entry_closed_once, kill9_with_bracket_then_resume
    store = kill9_with_bracket_then_resume(ROOT / "config/regime.yaml", "combine-150k", redis_url, tmp_path,
                                           f"test:regk:{uuid.uuid4().hex[:6]}")
    assert_each_entry_closed_once(store, "regime-entry")
    rows = list(csv.DictReader(next((tmp_path / "trades").glob("*.csv")).open()))
    assert len({r["trade_id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("auto_oco", [True, False], ids=["auto-oco-native", "position-brackets-managed"])
def test_live_on_the_sandbox_places_each_bracket_and_leaves_no_orphan(auto_oco, redis_url, tmp_path):
    """Live mode against the sandbox gateway (REST + hubs, replaying 2026-04-08 at 1000x).

    Auto OCO Brackets account: every entry goes out with ``stopLossBracket`` / ``takeProfitBracket``
    and the gateway's legs settle as OCO (one filled, the other cancelled). Position Brackets
    account: the first bracketed entry is refused, and the strategy then places its stops (type 4)
    and targets (type 1) itself. Either way, at the end the gateway has no working order and no
    position, and no customTag was placed twice."""
    import uuid
    from collections import Counter

    from infra.sandbox.exchange import AccountSpec
    from tests.live_support import placed_tags, replay_gateway, start_live, stop_supervisor, supervisor_env, wait_for
    gw = replay_gateway(accounts=(AccountSpec(1001, "PRAC-50K-SANDBOX", D(50000), simulated=True, auto_oco=auto_oco),))
    ns = f"test:regl:{uuid.uuid4().hex[:6]}"
    p = start_live(gw.base_url, tmp_path, ns, "--account", "1001", "--arm", "--config",
                   str(ROOT / "config/regime.yaml"), env=supervisor_env(redis_url))

    def bodies() -> list[dict]:
        return [b for _, b in gw.orders_received if (b.get("customTag") or "").startswith("regime-MNQ")]

    def settled_legs() -> int:  # bracket legs filled or cancelled at the gateway
        return sum(1 for o in gw.orders(1001) if (o.get("customTag") or "").endswith(("-SL", "-TP"))
                   and o["status"] in (2, 3))

    def traded() -> bool:
        if auto_oco:
            return settled_legs() >= 4
        b = bodies()
        return min(sum(1 for x in b if x.get("type") == 4), sum(1 for x in b if x.get("type") == 1)) >= 2

    try:
        ok = wait_for(traded, 150, p)
    finally:
        out = stop_supervisor(p)
        gw.stop()
    assert ok, (placed_tags(gw), out[-4000:])
    assert p.returncode == 0, out[-4000:]
    assert "open positions at exit: none" in out, out[-3000:]
    assert gw.positions(1001) == [] and gw.open_orders(1001) == [], gw.open_orders(1001)
    assert not [t for t, n in Counter(placed_tags(gw)).items() if n > 1], "a customTag was placed twice"
    bracketed = [b for b in bodies() if "stopLossBracket" in b]
    if auto_oco:
        assert bracketed and all(b["stopLossBracket"]["type"] == 4 and b["takeProfitBracket"]["type"] == 1
                                 for b in bracketed)
        assert not [b for b in bodies() if b.get("type") == 4]  # no stop placed by the strategy
    else:
        assert len(bracketed) == 1 and "Position Brackets" in out  # refused once; managed from then on


def test_walk_forward_retrains_the_model_per_window_and_reports_by_regime(tmp_path):
    """scripts/walk_forward_regime.py on the bundled days (1 training day, 1 test day):
    a model per window, the seed table in and out of sample, and the out-of-sample P&L by regime."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("wfr", ROOT / "scripts/walk_forward_regime.py")
    wfr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wfr)
    assert wfr.main(["--data", str(ROOT / "data/demo"), "--train", "1", "--test", "1", "--states", "3",
                     "--out", str(tmp_path / "three")]) == 2  # three states cannot carry the seed's five regimes
    assert wfr.main(["--data", str(ROOT / "data/demo"), "--train", "1", "--test", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "walk_forward_regime.md").read_text()
    assert text.count("## Window ") == 2 and text.count("=== BACKTEST RESULTS ===") == 4
    assert "| regime | trades | win rate | net $ |" in text
    from domain.regime.model import load
    m1, m2 = load(tmp_path / "window1"), load(tmp_path / "window2")
    assert sorted(m1.labels) == sorted(m2.labels) == sorted(("strong_bull", "bull", "neutral", "bear", "crash"))


def test_the_venue_slips_crash_regime_orders_three_ticks():
    """Seed 2.9's slippage model as a venue option: ``slippage_by_tag={"regime=crash": 3}``."""
    from domain.messages import TradeTick
    from infra.paper_broker import PaperBroker
    broker = PaperBroker(slippage_ticks=1, slippage_by_tag={"regime=crash": 3})
    t = _ts(10, 30)
    broker.on_trade(TradeTick("MNQ", t, D("20000.00"), 5))
    crash = OrderIntent("c1", "regime-MNQ", "MNQ", Side.BUY, 1, OrderType.MARKET, t + 1,
                        purpose="regime-entry crash_exhaustion_bounce; regime=crash")
    bull = OrderIntent("b1", "regime-MNQ", "MNQ", Side.SELL, 1, OrderType.MARKET, t + 1,
                       purpose="regime-entry bull_pullback; regime=bull")
    broker.submit(crash, t + 1)
    broker.submit(bull, t + 1)
    fills = {f.client_order_id: f.price for f in broker.on_trade(TradeTick("MNQ", t + 2, D("20001.00"), 5))}
    assert fills == {"c1": D("20001.75"), "b1": D("20000.75")}
    assert PaperBroker.restore(broker.snapshot()).slippage_by_tag == {"regime=crash": 3}
