"""Risk rules, one test per rule, with hand-computed numbers (docs/risk.md)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from domain.calendar import CT, dt_to_ns
from domain.messages import RiskState
from domain.risk_rules import (
    AccountLedger,
    Action,
    Breach,
    OrderCheck,
    RiskLimits,
    check_order,
    evaluate_account,
    is_reducing,
    mini_equivalents,
    mll_floor,
    net_atr_exposure,
    open_risk,
    session_key,
    sub_session_of,
    target_reached,
    worst_action,
)

DAY1 = dt.date(2025, 3, 3)  # Monday
DAY2 = dt.date(2025, 3, 4)
DAY3 = dt.date(2025, 3, 5)
DAY4 = dt.date(2025, 3, 6)

# A 50K Combine with only the Topstep rules (guardrails off unless a test turns them on).
BASE = dict(starting_balance=D(50000), mll_amount=D(2000), max_contracts_minis=D(5))


def limits(**kw) -> RiskLimits:
    return RiskLimits(**{**BASE, **kw})


def ledger(**kw) -> AccountLedger:
    return AccountLedger(limits(**kw), DAY1, "ETH")


def rules(breaches: list[Breach]) -> list[str]:
    return [b.rule for b in breaches]


# --------------------------------------------------------------------------- MLL


def test_mll_floor_formula():
    assert mll_floor(D(50000), D(2000), D(50000)) == D(48000)
    assert mll_floor(D(50000), D(2000), D(50500)) == D(48500)
    assert mll_floor(D(50000), D(2000), D(52500)) == D(50000)  # locked at the starting balance
    assert mll_floor(D(50000), D(2000), D(55000)) == D(50000)
    assert mll_floor(D(50000), D(2000), D(49000)) == D(48000)  # never below start - MLL


def test_mll_official_example_breach_on_equity_including_unrealized():
    """HC 8284204 (https://help.topstep.com/en/articles/8284204): floor $48,000, an open loss takes equity to $47,750 -> liquidated and failed,
    even though the exit later fills at $48,050. The decision is made on the real-time equity
    (balance + unrealized), not on where the exit fills."""
    led = ledger()
    assert led.floor == D(48000)  # fresh 50K Combine
    breaches = evaluate_account(led, unrealized=D(-2250))  # equity 47,750
    assert rules(breaches) == ["mll"]
    assert breaches[0].action is Action.LIQUIDATE
    assert "47750" in breaches[0].detail and "48000" in breaches[0].detail
    assert led.headroom(D(-2250)) == D(-250)
    led.failed = True  # the handler records the failure
    # The exit fills at 48,050 (realized -1,950): equity is above the floor, but the account failed.
    led.on_realized(D(-1950), D(0), closed_trade=True)
    assert led.balance == D(48050)
    again = evaluate_account(led, D(0))
    assert rules(again) == ["mll"] and again[0].action is Action.LIQUIDATE

    # The same exit without the intraday touch: equity 48,050 alone does not breach.
    other = ledger()
    other.on_realized(D(-1950), D(0), closed_trade=True)
    assert evaluate_account(other, D(0)) == []
    # Touching the floor exactly is a breach (<=), one cent above is not.
    assert rules(evaluate_account(ledger(), D(-2000))) == ["mll"]
    assert evaluate_account(ledger(), D("-1999.99")) == []


def test_mll_fees_count():
    led = ledger()
    led.on_realized(D(-1990), D("10.00"), closed_trade=True)  # balance 48,000.00
    assert rules(evaluate_account(led, D(0))) == ["mll"]


def test_mll_trails_end_of_day_and_locks():
    """docs/reference/topstep-rules.md#maximum-loss-limit: +500 day 1 -> 48,500; -500 day 2 -> stays
    48,500; EOD 52,500 -> 50,000 locked."""
    led = ledger()
    led.on_realized(D(500), D(0), closed_trade=True)
    assert led.floor == D(48000)  # not intraday
    led.roll_day(DAY2, "ETH")
    assert led.max_eod_balance == D(50500) and led.floor == D(48500)
    led.on_realized(D(-500), D(0), closed_trade=True)
    led.roll_day(DAY3, "ETH")
    assert led.balance == D(50000) and led.floor == D(48500)  # never moves down
    led.on_realized(D(2500), D(0), closed_trade=True)
    led.roll_day(DAY4, "ETH")
    assert led.balance == D(52500) and led.floor == D(50000)  # locked at the starting balance
    led.on_realized(D(2500), D(0), closed_trade=True)
    led.roll_day(dt.date(2025, 3, 7), "ETH")
    assert led.max_eod_balance == D(55000) and led.floor == D(50000)  # stays locked


def test_mll_floor_not_moved_intraday():
    led = ledger()
    led.on_realized(D(3000), D(0), closed_trade=True)
    assert evaluate_account(led, D(1000)) == []  # equity 54,000 intraday
    assert led.floor == D(48000) and led.max_eod_balance == D(50000)
    # A round trip back down the same day is measured against the old floor.
    led.on_realized(D(-3000), D(0), closed_trade=True)
    assert led.floor == D(48000)


def test_roll_day_is_idempotent():
    led = ledger()
    led.on_realized(D(500), D(0), closed_trade=True)
    led.roll_day(DAY2, "ETH")
    led.on_realized(D(1000), D(0), closed_trade=True)  # intraday, day 2
    led.roll_day(DAY2, "RTH")  # repeated (e.g. after a restart): only the sub-session changes
    assert led.max_eod_balance == D(50500) and led.floor == D(48500)
    assert led.sub_session == "RTH" and led.day_realized == D(1000)


# --------------------------------------------------------------------------- DLL and daily cap


def test_dll_flatten_halt_day():
    led = ledger(dll=D(1000))
    led.on_realized(D(-600), D("10.00"), closed_trade=True)
    assert led.day_pnl(D(-390)) == D(-1000)
    b = evaluate_account(led, D(-390))
    assert rules(b) == ["dll"] and b[0].action is Action.FLATTEN_HALT_DAY
    assert evaluate_account(led, D("-389.99")) == []
    # A new trading day clears it (not an account failure).
    led.roll_day(DAY2, "ETH")
    assert evaluate_account(led, D(0)) == [] and not led.failed


def test_no_dll_when_profile_has_none():
    led = ledger()
    assert evaluate_account(led, D(-1500)) == []  # -1,500 on the day, equity 48,500 > floor


def test_daily_loss_cap_includes_unrealized_and_fees():
    led = ledger(daily_loss_cap=D(400))
    led.on_realized(D(-250), D("2.44"), closed_trade=True)  # day -252.44
    assert evaluate_account(led, D("-147.55")) == []  # -399.99
    b = evaluate_account(led, D("-147.56"))  # -400.00
    assert rules(b) == ["daily_loss_cap"] and b[0].action is Action.FLATTEN_HALT_DAY
    assert b[0].action.risk_state is RiskState.HALTED and b[0].action.flatten
    # Yesterday's losses do not count today.
    led.roll_day(DAY2, "ETH")
    assert led.day_pnl(D(0)) == D(0)
    assert evaluate_account(led, D(-399)) == []


# --------------------------------------------------------------------------- trailing kill switch


def test_trailing_kill_switch_from_high_water_mark():
    led = ledger(trailing_kill_switch=D(1600))
    assert led.high_water_mark() == D(50000)
    led.on_realized(D(1000), D(0), closed_trade=True)
    led.roll_day(DAY2, "ETH")  # EOD balance 51,000
    assert led.high_water_mark() == D(51000)
    assert evaluate_account(led, D(500)) == []  # intraday equity peak 51,500
    assert led.intraday_peak_equity == D(51500) and led.high_water_mark() == D(51500)
    assert evaluate_account(led, D("-1099.99")) == []  # equity 49,900.01 > 51,500 - 1,600
    b = evaluate_account(led, D(-1100))  # equity 49,900
    assert rules(b) == ["trailing_kill_switch"] and b[0].action is Action.FLATTEN_HALT_DAY
    assert "49900" in b[0].detail and "51500" in b[0].detail
    # Next day: the previous intraday peak is gone, the EOD high (51,000) remains.
    led.roll_day(DAY3, "ETH")
    assert led.high_water_mark() == D(51000)


def test_trailing_kill_switch_hwm_never_below_start():
    led = ledger(trailing_kill_switch=D(1600))
    led.on_realized(D(-1000), D(0), closed_trade=True)
    led.roll_day(DAY2, "ETH")
    assert led.high_water_mark() == D(50000)
    assert rules(evaluate_account(led, D(-600))) == ["trailing_kill_switch"]  # 48,400 = 50,000 - 1,600


# --------------------------------------------------------------------------- session cap


def test_session_loss_cap_per_sub_session():
    led = ledger(session_loss_cap=D(200))
    led.on_realized(D(-150), D(0), closed_trade=True)  # ETH -150
    assert evaluate_account(led, D(0)) == []
    b = evaluate_account(led, D(-50))  # ETH -200 incl. unrealized
    assert rules(b) == ["session_loss_cap"] and b[0].action is Action.FLATTEN_REDUCE_SESSION
    assert b[0].action.risk_state is RiskState.REDUCING and "ETH" in b[0].detail
    led.roll_sub_session("RTH")  # 08:30 CT: a fresh budget
    assert evaluate_account(led, D(0)) == []
    led.on_realized(D(-150), D(0), closed_trade=True)  # RTH -150, day -300
    assert evaluate_account(led, D(0)) == []
    led.on_realized(D(-40), D(10), closed_trade=True)  # RTH -200 after fees
    b = evaluate_account(led, D(0))
    assert rules(b) == ["session_loss_cap"] and "RTH" in b[0].detail


def test_session_cap_carried_position_attribution():
    led = ledger(session_loss_cap=D(200))
    # An open position is -150 at 08:30; passing it to roll_sub_session charges it to ETH.
    led.roll_sub_session("RTH", unrealized=D(-150))
    assert led.sub_session_pnl(D(-150)) == D(0)
    assert evaluate_account(led, D(-349)) == []  # RTH -199
    assert rules(evaluate_account(led, D(-350))) == ["session_loss_cap"]


def test_sub_session_of_and_session_key():
    def ns(y, m, d, hh, mm):
        return dt_to_ns(dt.datetime(y, m, d, hh, mm, tzinfo=CT))

    assert sub_session_of(ns(2025, 3, 3, 2, 0)) == "ETH"
    assert sub_session_of(ns(2025, 3, 3, 8, 29)) == "ETH"
    assert sub_session_of(ns(2025, 3, 3, 8, 30)) == "RTH"
    assert sub_session_of(ns(2025, 3, 3, 15, 9)) == "RTH"
    assert sub_session_of(ns(2025, 3, 3, 17, 0)) == "ETH"
    assert sub_session_of(ns(2025, 3, 2, 18, 0)) == "ETH"  # Sunday evening
    assert session_key(ns(2025, 3, 3, 17, 0)) == (dt.date(2025, 3, 4), "ETH")
    assert session_key(ns(2025, 3, 3, 9, 0)) == (dt.date(2025, 3, 3), "RTH")


# --------------------------------------------------------------------------- consecutive losses


def test_consecutive_losses_reset_by_a_win():
    led = ledger(consecutive_loss_limit=5)
    for _ in range(4):
        led.on_realized(D(0), D("0.61"), closed_trade=False)  # opening fill: not a trade result
        led.on_realized(D(-10), D("0.61"), closed_trade=True)
    assert led.consecutive_losses == 4 and evaluate_account(led, D(0)) == []
    led.on_realized(D("0.01"), D("1.22"), closed_trade=True)  # a winner (fees ignored) resets
    assert led.consecutive_losses == 0
    led.on_realized(D(0), D("1.22"), closed_trade=True)  # scratch: unchanged
    for _ in range(5):
        led.on_realized(D(-10), D(0), closed_trade=True)
    b = evaluate_account(led, D(0))
    assert rules(b) == ["consecutive_losses"] and b[0].action is Action.REDUCE_DAY
    assert not b[0].action.flatten and b[0].action.risk_state is RiskState.REDUCING
    led.roll_day(DAY2, "ETH")  # rest of the trading day only
    assert led.consecutive_losses == 0 and evaluate_account(led, D(0)) == []


def test_breach_order_mll_first_and_worst_action():
    led = ledger(dll=D(1000), daily_loss_cap=D(400), trailing_kill_switch=D(1600),
                 session_loss_cap=D(200), consecutive_loss_limit=1)
    led.on_realized(D(-100), D(0), closed_trade=True)
    b = evaluate_account(led, D(-2000))
    assert rules(b) == ["mll", "dll", "daily_loss_cap", "trailing_kill_switch", "session_loss_cap",
                        "consecutive_losses"]
    assert worst_action(b) is Action.LIQUIDATE
    assert worst_action([]) is None


def test_profit_target():
    led = ledger(profit_target=D(3000))
    led.on_realized(D(2900), D(0), closed_trade=True)
    assert not target_reached(led) and target_reached(led, D(100))


# --------------------------------------------------------------------------- order checks

NO_ATR: dict[str, float] = {}


def test_max_contracts_micros_count_ten_to_one():
    lim = limits()
    assert check_order(OrderCheck("MES", 50, False), {}, {}, NO_ATR, lim) is None
    r = check_order(OrderCheck("MES", 51, False), {}, {}, NO_ATR, lim)
    assert r is not None and r.startswith("max_contracts") and "5.1" in r
    assert check_order(OrderCheck("MES", 10, False), {"ES": 4}, {}, NO_ATR, lim) is None  # 4 ES + 10 MES = 5
    assert check_order(OrderCheck("MES", -11, False), {"ES": 4}, {}, NO_ATR, lim).startswith("max_contracts")
    assert check_order(OrderCheck("ES", 1, False), {"ES": 4}, {}, NO_ATR, lim) is None
    assert check_order(OrderCheck("ES", -6, False), {}, {}, NO_ATR, lim).startswith("max_contracts")
    assert mini_equivalents({"ES": 4, "MES": -10}) == D(5)


def test_max_contracts_worst_case_with_working_orders():
    lim = limits()
    # Long 30 MES with 20 more working buys: one more buy could make 51 MES.
    assert check_order(OrderCheck("MES", 1, False), {"MES": 30}, {"MES": (20, 0)}, NO_ATR, lim).startswith(
        "max_contracts")
    assert check_order(OrderCheck("MES", 1, False), {"MES": 29}, {"MES": (20, 0)}, NO_ATR, lim) is None
    # Working sells do not add to a buy's side: flat with 45 sells working, a 6-lot buy is fine ...
    assert check_order(OrderCheck("MES", 6, False), {}, {"MES": (0, 45)}, NO_ATR, lim) is None
    # ... but a 6-lot sell would make 51 short.
    assert check_order(OrderCheck("MES", -6, False), {}, {"MES": (0, 45)}, NO_ATR, lim).startswith("max_contracts")
    # Working orders in another instrument count: 4 ES buys working + 11 MES > 5 minis.
    assert check_order(OrderCheck("MES", 10, False), {}, {"ES": (4, 0)}, NO_ATR, lim) is None
    assert check_order(OrderCheck("MES", 11, False), {}, {"ES": (4, 0)}, NO_ATR, lim).startswith("max_contracts")


def test_per_trade_risk():
    lim = limits(max_contracts_minis=D(100), per_trade_risk=D(150))
    atr = {"MES": 10.0}  # 1 MES x $5/pt x 10 pt = $50
    assert check_order(OrderCheck("MES", 3, False), {}, {}, atr, lim) is None  # $150
    r = check_order(OrderCheck("MES", -4, False), {}, {}, atr, lim)  # $200
    assert r is not None and r.startswith("per_trade_risk") and "200" in r
    # Missing ATR: the ATR-based checks are skipped.
    assert check_order(OrderCheck("MES", 4, False), {}, {}, NO_ATR, lim) is None
    assert check_order(OrderCheck("MES", 4, False), {}, {}, {"MES": float("nan")}, lim) is None


def test_open_risk_cap_gross_after_fill():
    lim = limits(max_contracts_minis=D(100), open_risk_cap=D(300))
    atr = {"MES": 10.0, "MNQ": 40.0}  # MES $50/contract, MNQ 2 x 40 = $80/contract
    assert open_risk({"MES": 3, "MNQ": -1}, atr) == D(230)
    assert check_order(OrderCheck("MES", 3, False), {"MES": 3}, {}, atr, lim) is None  # 6 x 50 = 300
    r = check_order(OrderCheck("MES", 4, False), {"MES": 3}, {}, atr, lim)  # 350
    assert r is not None and r.startswith("open_risk_cap") and "350" in r
    # Gross: a hedge leg adds open risk even though it nets out (3 x 50 + 2 x 80 = 310).
    assert check_order(OrderCheck("MNQ", -2, False), {"MES": 3}, {}, atr, lim).startswith("open_risk_cap")
    # A flip that shrinks gross risk is allowed even above the cap (ATR grew): +8 -> -2.
    assert check_order(OrderCheck("MES", -10, False), {"MES": 8}, {}, atr, lim) is None


def test_net_exposure_cap_hedge_nets_out():
    lim = limits(max_contracts_minis=D(100), net_exposure_cap=D(1200))
    atr = {"MES": 10.0, "MNQ": 40.0}
    pos = {"MES": 20}  # 20 x 5 x 10 = $1,000
    assert net_atr_exposure(pos, atr) == D(1000)
    r = check_order(OrderCheck("MES", 5, False), pos, {}, atr, lim)  # 1,250
    assert r is not None and r.startswith("net_exposure_cap") and "1250" in r
    assert check_order(OrderCheck("MES", 4, False), pos, {}, atr, lim) is None  # 1,200
    # A short MNQ hedge nets out: 1,000 - 6 x 2 x 40 = 520 ...
    assert check_order(OrderCheck("MNQ", -6, False), pos, {}, atr, lim) is None
    hedged = {"MES": 20, "MNQ": -6}
    assert net_atr_exposure(hedged, atr) == D(520)
    # ... which makes room for more MES: 1,250 - 480 = 770.
    assert check_order(OrderCheck("MES", 5, False), hedged, {}, atr, lim) is None
    # An order that reduces net exposure passes even while the book is above the cap.
    over = {"MES": 30}  # 1,500
    assert check_order(OrderCheck("MNQ", -2, False), over, {}, atr, lim) is None  # 1,340
    # Over-hedging past the cap on the other side is denied: 1,000 - 30 x 80 = -1,400.
    assert check_order(OrderCheck("MNQ", -30, False), pos, {}, atr, lim).startswith("net_exposure_cap")


def test_reducing_orders_always_pass():
    lim = limits(max_contracts_minis=D(1), per_trade_risk=D(1), open_risk_cap=D(1), net_exposure_cap=D(1))
    atr = {"MES": 10.0}
    pos = {"MES": 60}  # far above every limit
    assert check_order(OrderCheck("MES", -10, True), pos, {"MES": (5, 40)}, atr, lim) is None
    assert check_order(OrderCheck("MES", -60, False), pos, {}, atr, lim) is None  # to flat
    assert check_order(OrderCheck("MES", -61, False), pos, {}, atr, lim) is not None  # a flip is not reducing
    r = check_order(OrderCheck("MES", 1, True), pos, {}, atr, lim)  # reduce_only that would add
    assert r is not None and r.startswith("reduce_only")
    assert is_reducing(5, -5) and is_reducing(-3, 1)
    assert not is_reducing(0, -1) and not is_reducing(5, 1) and not is_reducing(5, -6) and not is_reducing(5, 0)


def test_check_order_rejects_unknown_instrument_and_zero_qty():
    lim = limits()
    assert check_order(OrderCheck("XYZ", 1, False), {}, {}, NO_ATR, lim).startswith("unknown_instrument")
    assert check_order(OrderCheck("MES", 0, False), {}, {}, NO_ATR, lim).startswith("invalid_order")


# --------------------------------------------------------------------------- persistence, limits


def test_ledger_round_trip():
    lim = limits(daily_loss_cap=D(400))
    led = AccountLedger(lim, DAY1, "ETH")
    led.on_realized(D("512.50"), D("1.22"), closed_trade=True)
    led.roll_day(DAY2, "ETH")
    led.roll_sub_session("RTH", unrealized=D("-6.25"))
    led.on_realized(D("-31.25"), D("0.61"), closed_trade=True)
    led.mark(D("18.75"))
    led.failed = True
    d = led.to_dict()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())
    back = AccountLedger.from_dict(lim, d)
    assert back == led and back.to_dict() == d
    assert back.balance == D("479.42") + D(50000) and back.floor == D("48511.28")
    assert back.trading_day == DAY2 and back.sub_session == "RTH" and back.failed
    assert back.consecutive_losses == 1
    with pytest.raises(ValueError):
        AccountLedger.from_dict(lim, {k: v for k, v in d.items() if k != "balance"})


def test_risk_limits_validation():
    assert limits(dll=1000).dll == D(1000)  # ints are converted
    with pytest.raises(TypeError):
        limits(daily_loss_cap=400.0)  # no floats in money
    with pytest.raises(ValueError):
        limits(session_loss_cap=D(0))
    with pytest.raises(ValueError):
        limits(consecutive_loss_limit=0)
    with pytest.raises(ValueError):
        AccountLedger(limits(), DAY1, "NIGHT")
