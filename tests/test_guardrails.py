"""Guardrails that hold (sweep guard, per-day P&L) and the current Topstep rules (personal DLL,
consistency, MLL trailing mode, limits above the MLL). Rules: docs/risk.md."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import ConfigError, load_config
from domain.calendar import CT, SessionCalendar, dt_to_ns
from domain.handler import ROUTER, CounterIds
from domain.instruments import get_instrument
from domain.messages import (Fill, OrderDenied, OrderIntent, OrderSubmitted, OrderType, RiskState, Side,
                             StrategyStatus, TradeTick)
from domain.report import SessionSummary
from domain.risk import RiskManager
from domain.risk_rules import (AccountLedger, Action, RiskLimits, WorkingOrder, check_sweep, consistency_met,
                               effective_target, evaluate_account, loss_headroom, sweep_distance, sweep_loss,
                               target_reached)
from infra.trade_log import TradeLog

D = Decimal
ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 4, 8)
TS = dt_to_ns(dt.datetime(2026, 4, 8, 10, 0, tzinfo=CT))


def limits(**kw) -> RiskLimits:
    """50K Combine numbers with only the rules a test names switched on."""
    base = dict(starting_balance=D(50000), mll_amount=D(2000), max_contracts_minis=D(5), profit_target=D(3000))
    base.update(kw)
    return RiskLimits(**base)


def risk_manager(lim: RiskLimits) -> RiskManager:
    return RiskManager(lim, CounterIds(), SessionCalendar(300), TS)


def buy(coid: str, qty: int, price: str, strategy="grid-MES", sym="MES") -> OrderIntent:
    return OrderIntent(coid, strategy, sym, Side.BUY, qty, OrderType.LIMIT, TS, limit_price=D(price))


def fill(coid: str, trade: str, side: Side, qty: int, price: str, strategy="grid-MES", sym="MES", ts=TS) -> Fill:
    return Fill(coid, strategy, trade, sym, side, qty, D(price), D("0.61") * qty, 0, ts)


# ------------------------------------------------------------------ sweep guard
SWEEP = dict(daily_loss_cap=D(400), sweep_atr_multiple=D(1), sweep_min_ticks=40)


def test_sweep_distance_is_atr_multiple_with_a_tick_and_percent_floor():
    lim = limits(**SWEEP)
    assert sweep_distance("MES", {"MES": 8.0}, lim) == D(10)      # 40 ticks x 0.25 > 1 x ATR 8
    assert sweep_distance("MES", {"MES": 14.1}, lim) == D("14.25")  # 1 x ATR, rounded up to a tick
    assert sweep_distance("MNQ", {}, lim) == D(10)                # no ATR: the tick floor
    pct = limits(daily_loss_cap=D(400), sweep_min_pct=D("0.5"))
    assert sweep_distance("ES", {}, pct, D(6600)) == D(33)


def test_sweep_loss_counts_every_working_entry_on_a_side_and_a_hedge_offsets():
    lim = limits(**SWEEP)
    orders = [WorkingOrder("MES", 2, "LIMIT", D(4995)), WorkingOrder("MES", 2, "LIMIT", D(4990)),
              WorkingOrder("MES", -2, "LIMIT", D(5010))]  # the sell above does not fill in a fall
    loss, way = sweep_loss({"MES": 1}, orders, {"MES": D(5000)}, {"MES": 8.0}, lim)
    # fall to X = 4990 - 10 = 4980: long 1 loses 20 pt, the buys 15 and 10 pt, each 2 x $5/pt;
    # fees 0.61 x (4 filled + 5 to close)
    assert way == "down" and loss == 1 * 20 * 5 + 2 * 15 * 5 + 2 * 10 * 5 + D("0.61") * 9
    hedged, _ = sweep_loss({"MES": 1, "MNQ": -1}, orders, {"MES": D(5000), "MNQ": D(20000)}, {"MES": 8.0}, lim)
    assert hedged < loss  # the short MNQ gains 10 pt x $2 in the same fall


def _sweep_loss_by_definition(positions, orders, marks, atr, lim):
    """``sweep_loss`` as its docstring writes it: per instrument and direction the fills, the
    farthest, X beyond it, the P&L of the position and of each fill to X, the fees."""
    def fill(o, mark, down):
        if o.price is None or o.order_type == "MARKET":
            return mark
        falls = (o.signed_qty > 0) == (o.order_type == "LIMIT")
        if falls == down:
            return min(o.price, mark) if down else max(o.price, mark)
        return mark if ((o.price >= mark) if falls else (o.price <= mark)) else None

    totals = {"down": D(0), "up": D(0)}
    for sym in set(positions) | {o.instrument for o in orders}:
        mine = [o for o in orders if o.instrument == sym]
        mark = marks.get(sym)
        if mark is None:
            priced = [o.price for o in mine if o.price is not None]
            if not priced:
                continue
            mark = priced[0]
        spec = get_instrument(sym)
        p = positions.get(sym, 0)
        dist = sweep_distance(sym, atr, lim, mark)
        for way, down in (("down", True), ("up", False)):
            fills = [(o.signed_qty, f) for o in mine if (f := fill(o, mark, down)) is not None]
            if not fills and not p:
                continue
            far = min([mark] + [f for _, f in fills]) if down else max([mark] + [f for _, f in fills])
            x = far - dist if down else far + dist
            pnl = p * (x - mark) + sum((q * (x - f) for q, f in fills), D(0))
            final = p + sum(q for q, _ in fills)
            totals[way] += -pnl * spec.point_value + spec.fee_per_side * (sum(abs(q) for q, _ in fills) + abs(final))
    way = max(totals, key=lambda k: totals[k])
    return max(totals[way], D(0)), way


def test_check_sweep_decides_as_its_definition_on_random_books():
    """check_sweep computes the sweep loss with and without the order in one pass, and sweep_loss
    both directions in one pass over the orders; on 2,000 random books (positions, working limits
    and stops, marks or none, ATR or none, a day's losses) both give the definition's figures, and
    check_sweep denies exactly when the definition does: loss with the order > headroom and > loss
    without."""
    import random
    rng = random.Random(19)
    syms = ("MES", "MNQ", "ES")
    denied = 0
    for _ in range(2000):
        lim = limits(daily_loss_cap=D(rng.choice([200, 400, 900])), sweep_atr_multiple=D(rng.choice(["1", "3"])),
                     sweep_min_ticks=rng.choice([None, 40]))
        led = AccountLedger(lim, DAY, "RTH")
        led.on_realized(D(-rng.randrange(0, 300)), D("1.22"), True)
        base = {s: D(rng.randrange(4000, 6000)) for s in syms}
        marks = {s: base[s] for s in syms if rng.random() < 0.8}
        atr = {s: rng.choice([2.5, 8.0, 14.1]) for s in syms if rng.random() < 0.7}
        positions = {s: rng.randint(-3, 3) for s in syms if rng.random() < 0.5}

        def order(sym, around):
            kind = rng.choice(["LIMIT", "LIMIT", "STOP", "MARKET"])
            px = None if kind == "MARKET" else around + D(rng.randrange(-80, 81)) / 4
            return WorkingOrder(sym, rng.choice([-2, -1, 1, 2]), kind, px)

        working = [order(s, base[s]) for s in (rng.choice(syms) for _ in range(rng.randrange(0, 8)))]
        new = order(sym := rng.choice(syms), base[sym])
        unreal = D(rng.randrange(-200, 200))
        after, way = sweep_loss(positions, [*working, new], marks, atr, lim)
        before, _ = sweep_loss(positions, working, marks, atr, lim)
        assert (after, way) == _sweep_loss_by_definition(positions, [*working, new], marks, atr, lim)
        assert before == _sweep_loss_by_definition(positions, working, marks, atr, lim)[0]
        room, _rule = loss_headroom(led, unreal)
        reason = check_sweep(new, positions, working, marks, atr, led, unreal)
        assert (reason is not None) == (after > room and after > before)
        if reason:
            denied += 1
            assert f"move {way} " in reason and f"${after.quantize(D('0.01'))} >" in reason
    assert 200 < denied < 1800  # both outcomes are exercised


def test_sweep_guard_withholds_the_entries_one_move_would_take_past_the_daily_cap():
    """Five grid buys 5 points apart, 2 MES each, ATR 8 -> S = 10 pt. Two levels lose $254.88 if
    price falls through both to 10 pt below the lower; a third would make it $454.88 > $400: risk
    withholds levels 3-5. The move through everything then ends the day above -cap."""
    risk = risk_manager(limits(**SWEEP))
    risk.handle(StrategyStatus("grid-MES", "MES", TS, atr=8.0))
    risk.handle(TradeTick("MES", TS, D(5000), 1))
    prices = ["4995", "4990", "4985", "4980", "4975"]
    outs = [risk.handle(buy(f"g{i}", 2, p)) for i, p in enumerate(prices)]
    routed = [o for o in outs if o and o[0][0] == ROUTER]
    denied = [o[0][1] for o in outs if o and isinstance(o[0][1], OrderDenied)]
    assert len(routed) == 2 and len(denied) == 3
    assert all(d.reason.startswith("sweep_guard:") and "daily_loss_cap" in d.reason for d in denied)
    # the one move: both working buys fill, price ends 10 pt below the lower one
    for i, p in enumerate(prices[:2]):
        risk.handle(OrderSubmitted(f"g{i}", "grid-MES", TS))
        risk.handle(fill(f"g{i}", f"T{i}", Side.BUY, 2, p))
    risk.handle(TradeTick("MES", TS + 1, D(4980), 1))
    day = risk.ledger.day_pnl(risk.unrealized())
    assert day == -(D(250) + D("0.61") * 4) and day > -400
    assert not risk.breaches  # the cap was not reached

    # without the guard all five pass, and the same kind of move loses 2.5x the cap
    off = risk_manager(limits(daily_loss_cap=D(400)))
    off.handle(TradeTick("MES", TS, D(5000), 1))
    assert all(off.handle(buy(f"g{i}", 2, p))[0][0] == ROUTER for i, p in enumerate(prices))


def test_sweep_guard_uses_what_the_day_has_already_lost_and_lets_reducing_orders_pass():
    risk = risk_manager(limits(**SWEEP))
    risk.handle(StrategyStatus("grid-MES", "MES", TS, atr=8.0))
    risk.handle(TradeTick("MES", TS, D(5000), 1))
    risk.handle(buy("a", 2, "5000"))
    risk.handle(OrderSubmitted("a", "grid-MES", TS))
    risk.handle(fill("a", "T1", Side.BUY, 2, "5000"))
    risk.handle(TradeTick("MES", TS + 1, D(4975), 1))  # -$250 open (+ fees): $147.56 left
    out = risk.handle(buy("b", 1, "4970"))  # 1 x (5 + 10) x 5 + 2 x 15 x 5 ... > left
    assert isinstance(out[0][1], OrderDenied) and out[0][1].reason.startswith("sweep_guard:")
    sell = OrderIntent("c", "grid-MES", "MES", Side.SELL, 2, OrderType.LIMIT, TS + 2, limit_price=D(4980))
    assert risk.handle(sell)[0][0] == ROUTER  # a close is never withheld


def test_backtest_on_demo_data_keeps_every_day_within_110_percent_of_the_cap(tmp_path):
    from actors.node import Node
    from actors.tree import MODES
    cfg = load_config(None, "combine-50k", {"runtime": {"data_dir": str(ROOT / "data/demo"), "run_dir": str(tmp_path)}})
    s = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest()
    assert s.traded_days, "the backtest must trade"
    cap = cfg.profile.daily_loss_cap
    assert all(pnl >= -cap * D("1.10") for _, pnl, _ in s.traded_days), s.day_pnls
    assert not s.mll_touched
    # the trades CSV's running day_pnl ends each day at risk's per-day figure
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    last = {r["trading_day"]: D(r["day_pnl"]) for r in rows}
    assert last == {d: p for d, p, n in s.day_pnls if n}
    assert "daily loss cap $400.00" in s.render() and "Combine passed:" in s.render()


# ------------------------------------------------------------------ per-day P&L
def test_risk_keeps_net_pnl_per_trading_day_rolled_at_17_ct():
    risk = risk_manager(limits())
    risk.handle(buy("a", 1, "5000"))
    risk.handle(OrderSubmitted("a", "grid-MES", TS))
    risk.handle(fill("a", "T1", Side.BUY, 1, "5000"))
    close = OrderIntent("b", "grid-MES", "MES", Side.SELL, 1, OrderType.LIMIT, TS, limit_price=D(5010))
    risk.handle(close)
    risk.handle(OrderSubmitted("b", "grid-MES", TS))
    risk.handle(fill("b", "T2", Side.SELL, 1, "5010"))
    next_day = dt_to_ns(dt.datetime(2026, 4, 8, 17, 1, tzinfo=CT))
    risk.handle(TradeTick("MES", next_day, D(5010), 1))
    assert risk.day_history == [("2026-04-08", D(50) - D("1.22"), 2)]
    assert risk.day_table()[-1] == ("2026-04-09", D(0), 0)
    restored = risk_manager(limits())
    restored.restore(risk.snapshot())
    assert restored.day_history == risk.day_history


def test_trade_log_day_pnl_runs_per_day_and_continues_after_a_restart(tmp_path):
    path = tmp_path / "t.csv"
    log = TradeLog(path)
    log.write(fill("a", "T1", Side.BUY, 1, "5000"), "grid-entry")
    log.write(fill("b", "T2", Side.SELL, 1, "5010"), "grid-tp")
    again = TradeLog(path)  # a restart reads the file back
    nxt = dt_to_ns(dt.datetime(2026, 4, 8, 17, 5, tzinfo=CT))
    again.write(fill("c", "T3", Side.BUY, 1, "5000", ts=nxt), "grid-entry")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["day_pnl"] for r in rows] == ["-0.61", "48.78", "-0.61"]
    assert [r["trading_day"] for r in rows] == ["2026-04-08", "2026-04-08", "2026-04-09"]


# ------------------------------------------------------------------ consistency
def test_consistency_raises_the_target_instead_of_failing():
    lim = limits(consistency_share=D("0.55"))
    led = AccountLedger(lim, DAY, "RTH")
    led.on_realized(D(1800), D(0), True)
    led.roll_day(DAY + dt.timedelta(days=1), "ETH")
    led.on_realized(D(1300), D(0), True)  # total 3,100 >= 3,000 but the best day is 58 %
    assert led.best_day == D(1800)
    assert effective_target(led) == D(1800) / D("0.55")  # $3,272.73
    assert not consistency_met(led) and not target_reached(led)
    led.roll_day(DAY + dt.timedelta(days=2), "ETH")
    led.on_realized(D(-100), D(0), True)  # a losing day does not lower the best day
    assert not target_reached(led) and led.best_day == D(1800)
    led.on_realized(D(300), D(0), True)  # total 3,300 >= 3,272.73: passed
    assert consistency_met(led) and target_reached(led)
    # without the rule the plain target applies
    plain = AccountLedger(limits(), DAY, "RTH")
    plain.on_realized(D(3000), D(0), True)
    assert target_reached(plain) and effective_target(plain) == D(3000)


def test_today_counts_as_a_candidate_best_day():
    led = AccountLedger(limits(consistency_share=D("0.55")), DAY, "RTH")
    led.on_realized(D(3100), D(0), True)  # one day of 3,100: 100 % of the profit
    assert not target_reached(led) and effective_target(led) == D(3100) / D("0.55")


def test_summary_shows_combine_passed_and_the_two_layers():
    risk = risk_manager(limits(consistency_share=D("0.55"), daily_loss_cap=D(400)))
    risk.ledger.on_realized(D(1800), D(0), True)
    risk.ledger.roll_day(DAY + dt.timedelta(days=1), "ETH")
    risk.ledger.on_realized(D(1300), D(0), True)
    s = SessionSummary("backtest", ["2026-04-08"])
    s.fill_from_risk(risk, D(5))
    text = s.render()
    assert "Combine passed: NO" in text and "raised from $3,000.00 by consistency" in text
    assert "consistency: best day $1,800.00 <= 55% of profit: not met" in text
    assert text.index("Topstep rules") < text.index("rule check - MLL") < text.index("our guardrails")
    risk.ledger.on_realized(D(200), D(0), True)
    s2 = SessionSummary("backtest", ["2026-04-08"])
    s2.fill_from_risk(risk, D(5))
    assert "Combine passed: YES" in s2.render()


# ------------------------------------------------------------------ personal DLL
def test_personal_dll_fixed_vs_trailing_thresholds():
    fixed = AccountLedger(limits(personal_dll=D(500), personal_dll_action="liquidate"), DAY, "RTH")
    trail = AccountLedger(limits(personal_dll=D(500), personal_dll_mode="trailing",
                                 personal_dll_action="liquidate"), DAY, "RTH")
    for led in (fixed, trail):
        assert not [b for b in evaluate_account(led, D(1200)) if b.rule == "personal_dll"]  # peak 51,200
    # back to 50,700: the trailing limit (51,200 - 500) acts, the fixed one (49,500) does not
    assert [b.rule for b in evaluate_account(trail, D(700))] == ["personal_dll"]
    assert evaluate_account(fixed, D(700)) == []
    assert [b.rule for b in evaluate_account(fixed, D(-500))] == ["personal_dll"]
    # trailing on realized gains: open profit does not raise it, a realized one does
    real = AccountLedger(limits(personal_dll=D(500), personal_dll_mode="trailing", personal_dll_trail="realized",
                                personal_dll_action="liquidate"), DAY, "RTH")
    evaluate_account(real, D(1200))
    assert evaluate_account(real, D(700)) == []
    real.on_realized(D(1200), D(0), True)
    assert [b.rule for b in evaluate_account(real, D(-500))] == ["personal_dll"]


@pytest.mark.parametrize("action,state,flattens,halts", [
    ("none", RiskState.ACTIVE, False, False),
    ("liquidate", RiskState.ACTIVE, True, False),
    ("liquidate_and_block", RiskState.HALTED, True, True),
])
def test_personal_dll_actions(action, state, flattens, halts):
    risk = risk_manager(limits(personal_dll=D(300), personal_dll_action=action))
    risk.handle(buy("a", 2, "5000"))
    risk.handle(OrderSubmitted("a", "grid-MES", TS))
    risk.handle(fill("a", "T1", Side.BUY, 2, "5000"))
    out = risk.handle(TradeTick("MES", TS + 1, D(4969), 1))  # -$310 open, -$311.22 net
    closes = [m for _, m in out if isinstance(m, OrderIntent) and m.reduce_only]
    assert [b[1] for b in risk.breaches] == ["personal_dll"]
    assert bool(closes) is flattens and risk.state is state
    expected = {"none": Action.NOTIFY, "liquidate": Action.FLATTEN_ONCE, "liquidate_and_block": Action.FLATTEN_HALT_DAY}
    assert evaluate_account(AccountLedger(risk.limits, DAY, "RTH"), D(-300))[0].action is expected[action]
    # it acts once a day: a lower mark does not act again
    risk.handle(TradeTick("MES", TS + 2, D(4960), 1))
    assert len(risk.breaches) == 1
    if closes:
        risk.handle(OrderSubmitted(closes[0].client_order_id, "risk", TS + 3))
        risk.handle(fill(closes[0].client_order_id, "T2", Side.SELL, 2, "4960", strategy="risk", ts=TS + 3))
    entry = risk.handle(buy("z", 1, "4950"))
    assert (isinstance(entry[0][1], OrderDenied) and "HALTED" in entry[0][1].reason) is halts


# ------------------------------------------------------------------ MLL trailing mode
def test_mll_end_of_day_vs_intraday_trailing():
    eod = AccountLedger(limits(), DAY, "RTH")
    intra = AccountLedger(limits(mll_trailing="intraday"), DAY, "RTH")
    for led in (eod, intra):
        evaluate_account(led, D(1000))  # equity 51,000 intraday
    assert eod.floor == D(48000) and intra.floor == D(49000)
    # a give-back to 49,000 fails the intraday-trailing account only
    assert evaluate_account(eod, D(-1000)) == []
    assert [b.rule for b in evaluate_account(intra, D(-1000))] == ["mll"]
    # end of day: the EOD floor trails the closing balance
    eod.on_realized(D(500), D(0), True)
    eod.roll_day(DAY + dt.timedelta(days=1), "ETH")
    assert eod.floor == D(48500)
    # both lock at the starting balance
    evaluate_account(intra, D(5000))
    assert intra.floor == D(50000)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("field,value", [("daily_loss_cap", 5000), ("personal_dll", 2500),
                                         ("trailing_kill_switch", 2001), ("session_loss_cap", 3000)])
def test_a_personal_limit_above_the_mll_is_rejected(field, value):
    with pytest.raises(ConfigError) as e:
        load_config(None, "combine-50k", {"profile": {field: value}})
    assert e.value.field == f"profile.{field}" and "mll_amount 2000" in str(e.value)


def test_new_profile_options_load_and_reach_the_limits():
    cfg = load_config(None, "combine-50k", {"profile": {"personal_dll": 500, "personal_dll_mode": "trailing",
                                                        "personal_dll_action": "liquidate_and_block",
                                                        "mll_trailing": "intraday", "consistency_share": "0.5"}})
    lim = cfg.profile.limits()
    assert (lim.personal_dll, lim.personal_dll_mode, lim.personal_dll_action) == (D(500), "trailing",
                                                                                   "liquidate_and_block")
    assert lim.mll_trailing == "intraday" and lim.consistency_share == D("0.5")
    with pytest.raises(ConfigError) as e:
        load_config(None, "combine-50k", {"profile": {"personal_dll_action": "flatten"}})
    assert e.value.field.startswith("profile.personal_dll_action")
    default = load_config(None, "combine-50k").profile
    assert default.consistency_share == D("0.55") and default.mll_trailing == "eod"
    assert default.personal_dll is None and default.personal_dll_action == "none"
    assert dataclasses.replace(default.limits()).sweep_guard
