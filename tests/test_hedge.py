"""Cross-asset hedge (domain/strategies/hedge.py): the ratio and its clamps, contracts by notional
(rounded to whole micros, opposite sign), activation / hysteresis / min hold, the rebalance band,
the low-correlation halving and its alert, the order rules (marketable limits, one at a time,
timeout cancel, risk state), the snapshot round trip and the plug-in build. Pure domain code."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import numpy as np
import pytest

from domain.calendar import CT, SessionCalendar, dt_to_ns
from domain.handler import RISK, WATCHDOG, CounterIds, RejectedMessage
from domain.instruments import get_instrument
from domain.messages import (
    Alert,
    Bar,
    CancelOrder,
    ClockTick,
    ExposureUpdate,
    Fill,
    OrderCancelled,
    OrderDenied,
    OrderIntent,
    OrderType,
    RiskState,
    RiskStateChanged,
    Side,
    StrategyStatus,
    TradeTick,
    WarmupBars,
)
from domain.risk_rules import RiskLimits
from domain.strategies.base import Strategy, StrategyContext
from domain.strategies.hedge import (
    PLUGIN,
    HedgeConfig,
    HedgeManager,
    HedgeParams,
    hedge_contracts,
    hedge_ratio,
)

D = Decimal
NS = 1_000_000_000
MIN = 60 * NS
T0 = dt_to_ns(dt.datetime(2026, 4, 8, 10, 0, tzinfo=CT))  # Wednesday 10:00 CT: positions may be opened
MID, SPACING = 6700.0, 10.0  # the grid's mid and spacing: 1.5 spacings = 15 points


# ------------------------------------------------------------------ helpers
def make(**cfg) -> HedgeManager:
    return HedgeManager(HedgeConfig(**cfg), CounterIds())


def grid_status(ts: int = T0, mid: float = MID, spacing: float = SPACING) -> StrategyStatus:
    return StrategyStatus("grid-MES", "MES", ts, atr=8.0, spacing=spacing, grid_mid=mid)


def prices(h: HedgeManager, mes: str, mnq: str = "24600", ts: int = T0) -> None:
    assert h.handle(TradeTick("MES", ts, D(mes), 1)) == []
    assert h.handle(TradeTick("MNQ", ts, D(mnq), 1)) == []


def exposure(h: HedgeManager, mes: int, mnq: int = 0, ts: int = T0):
    return h.handle(ExposureUpdate((("MES", mes), ("MNQ", mnq)), ts))


def intents(out) -> list[OrderIntent]:
    got = [m for _, m in out if isinstance(m, OrderIntent)]
    assert all(d == RISK for d, m in out if isinstance(m, OrderIntent))  # risk is the only gate
    return got


def only_intent(out) -> OrderIntent:
    got = intents(out)
    assert len(got) == 1, out
    return got[0]


def fill(h: HedgeManager, i: OrderIntent, ts: int, qty: int | None = None, leaves: int = 0):
    q = i.qty if qty is None else qty
    return h.handle(Fill(i.client_order_id, i.strategy_id, f"T-{i.client_order_id}-{leaves}", i.instrument, i.side,
                         q, i.limit_price, D("0.61") * q, leaves, ts))


def hedged(h: HedgeManager, mes: int = 6, mes_price: str = "6685", ts: int = T0) -> OrderIntent:
    """Grid long ``mes`` MES at ``mes_price`` (1.5 spacings below the mid at 6685): the hedge opens,
    its order fills, and risk reports the new exposure. Returns the (filled) opening intent."""
    h.handle(grid_status(ts))
    prices(h, mes_price, ts=ts)
    i = only_intent(exposure(h, mes, ts=ts))
    assert fill(h, i, ts) == []
    assert exposure(h, mes, -i.qty if i.side is Side.SELL else i.qty, ts) == []  # already at target
    return i


def bar(sym: str, minute: int, close: str) -> Bar:
    s = T0 + minute * MIN
    c = D(close)
    return Bar(sym, 60, s, s + MIN, c, c, c, c, 100, s + MIN)


def minute(h: HedgeManager, m: int, mes: str, mnq: str):
    """Close one minute: the hedge leg's bar first, then the primary's (which drives the hedge)."""
    assert h.handle(bar("MNQ", m, mnq)) == []
    return h.handle(bar("MES", m, mes))


def test_timestamps_are_inside_a_session():
    assert SessionCalendar().can_open(T0) and SessionCalendar().can_open(T0 + 60 * MIN)


# ------------------------------------------------------------------ ratio
def test_hedge_ratio_is_corr_times_vol_ratio_inside_the_clamps():
    assert hedge_ratio(0.8, 0.012, 0.010) == pytest.approx(0.96)
    assert hedge_ratio(0.9, 0.01, 0.01) == pytest.approx(0.9)
    assert hedge_ratio(0.5, 0.03, 0.02, lo=0.1, hi=2.0) == pytest.approx(0.75)


def test_hedge_ratio_clamps_to_max_and_min():
    assert hedge_ratio(0.95, 0.02, 0.01) == 1.25  # 1.9 -> max_ratio
    assert hedge_ratio(0.3, 0.01, 0.01) == 0.5  # 0.3 -> min_ratio
    assert hedge_ratio(-0.9, 0.01, 0.01) == 0.5  # anti-correlated: still the floor, never a negative hedge
    assert hedge_ratio(0.95, 0.02, 0.01, lo=0.2, hi=1.5) == 1.5
    assert hedge_ratio(0.1, 0.01, 0.01, lo=0.2, hi=1.5) == 0.2
    assert hedge_ratio(0.5, 0.01, 0.01) == 0.5  # exactly at the floor


@pytest.mark.parametrize("vol_hedge", [0.0, -0.01, float("nan")])
def test_hedge_ratio_is_one_when_the_hedge_vol_is_zero_or_undefined(vol_hedge):
    assert hedge_ratio(0.9, 0.02, vol_hedge) == 1.0
    assert hedge_ratio(0.2, 0.0, vol_hedge, lo=0.5, hi=1.25) == 1.0


# ------------------------------------------------------------------ contracts
def test_contracts_convert_notionals_by_point_value_docstring_example():
    # 6 MES long at 6,700 = 6 x $33,500; one MNQ at 24,600 = $49,200; h = 0.9 -> 3.68 -> 4 MNQ short
    assert hedge_contracts(6, 0.9, D("6700"), D("24600"), "MES", "MNQ") == -4
    assert hedge_contracts(-6, 0.9, D("6700"), D("24600"), "MES", "MNQ") == 4  # short grid: long hedge
    assert hedge_contracts(0, 0.9, D("6700"), D("24600"), "MES", "MNQ") == 0
    # the same in minis (both point values x 10): the same count
    assert hedge_contracts(6, 0.9, D("6700"), D("24600"), "ES", "NQ") == -4
    # 1 ES ($50/pt) against MNQ ($2/pt): 335,000 / 49,200 = 6.81 -> 7 MNQ
    assert hedge_contracts(1, 1.0, D("6700"), D("24600"), "ES", "MNQ") == -7
    # 20 MES at h = 1.25: 20 x 1.25 x 33,500 / 49,200 = 17.02 -> 17
    assert hedge_contracts(20, 1.25, D("6700"), D("24600"), "MES", "MNQ") == -17


@pytest.mark.parametrize("q, expected", [
    (1, 0),    # 0.5 -> 0
    (3, -2),   # 1.5 -> 2
    (5, -2),   # 2.5 -> 2
    (7, -4),   # 3.5 -> 4
    (-3, 2),   # -1.5 -> -2, mirrored
    (-5, 2),   # -2.5 -> -2, mirrored
    (2, -1),
    (4, -2),   # 2.0 is not a tie: whole contracts stay whole
])
def test_contracts_half_cases_round_to_even_symmetrically(q, expected):
    """MES at 6,000 ($30,000) against MNQ at 15,000 ($30,000): notional ratio exactly 1, so q x 0.5
    lands on exact halves. ``round`` is Python's: ties go to the even count, the same for a long
    and a short grid."""
    assert hedge_contracts(q, 0.5, D("6000"), D("15000"), "MES", "MNQ") == expected
    assert hedge_contracts(-q, 0.5, D("6000"), D("15000"), "MES", "MNQ") == -expected


def test_contracts_round_to_nearest_away_from_ties():
    # 6 x 33,425 / 49,200 = 4.076 -> 4; 7 -> 4.756 -> 5
    assert hedge_contracts(6, 1.0, D("6685"), D("24600"), "MES", "MNQ") == -4
    assert hedge_contracts(7, 1.0, D("6685"), D("24600"), "MES", "MNQ") == -5


# ------------------------------------------------------------------ activation
def test_activation_exactly_at_the_threshold_and_not_below():
    h = make()
    h.handle(grid_status())
    prices(h, "6686")  # 1.4 spacings below the mid
    assert exposure(h, 6) == [] and not h.active and h.target(T0) == 0
    prices(h, "6685")  # exactly 1.5
    i = only_intent(exposure(h, 6))
    assert h.active and h.activations == 1
    assert (i.instrument, i.side, i.qty, i.reduce_only, i.purpose) == ("MNQ", Side.SELL, 4, False, "hedge-open")


def test_activation_on_the_short_side_buys_the_hedge():
    h = make()
    h.handle(grid_status())
    prices(h, "6714")  # 1.4 above
    assert exposure(h, -6) == []
    prices(h, "6715")  # 1.5 above, grid short 6: 6 x 33,575 / 49,200 = 4.09 -> 4 MNQ long
    i = only_intent(exposure(h, -6))
    assert (i.side, i.qty) == (Side.BUY, 4)


def test_no_hedge_without_inventory_grid_levels_or_prices():
    h = make()
    prices(h, "6600")  # far from any mid, but the grid has not said where its mid is
    assert exposure(h, 6) == [] and not h.active
    h.handle(StrategyStatus("grid-MES", "MES", T0, spacing=0.0, grid_mid=MID))  # spacing 0: ignored
    assert exposure(h, 6) == [] and h.mid is None
    h.handle(StrategyStatus("grid-MNQ", "MNQ", T0, spacing=SPACING, grid_mid=MID))  # another instrument's grid
    assert exposure(h, 6) == [] and h.mid is None
    h.handle(grid_status())
    assert exposure(h, 0) == [] and not h.active  # flat primary: nothing to hedge
    assert intents(exposure(h, 6))  # all known now


def test_hysteresis_between_deactivation_and_activation_thresholds():
    h = make(min_hold_s=0)
    opened = hedged(h)
    assert opened.qty == 4
    for p in ("6688", "6690"):  # 1.2 and exactly 1.0 spacings: still hedged, no churn
        prices(h, p)
        assert exposure(h, 6, -4) == [] and h.active
    prices(h, "6691")  # 0.9 < 1.0: close the hedge
    close = only_intent(exposure(h, 6, -4))
    assert (close.side, close.qty, close.reduce_only, close.purpose) == (Side.BUY, 4, True, "hedge-reduce")
    assert not h.active
    fill(h, close, T0)
    assert exposure(h, 6, 0) == []
    prices(h, "6688")  # 1.2 again, now from below the activation threshold: stays unhedged
    assert exposure(h, 6, 0) == [] and not h.active
    prices(h, "6685")
    assert only_intent(exposure(h, 6, 0)).side is Side.SELL and h.activations == 2


def test_min_hold_keeps_the_hedge_until_it_elapsed():
    h = make()  # min_hold_s = 600
    hedged(h, ts=T0)
    prices(h, "6695", ts=T0 + 599 * NS)  # back at 0.5 spacings, 599 s after the activation
    assert exposure(h, 6, -4, ts=T0 + 599 * NS) == [] and h.active
    close = only_intent(exposure(h, 6, -4, ts=T0 + 600 * NS))
    assert (close.side, close.qty, close.reduce_only) == (Side.BUY, 4, True) and not h.active


def test_a_flat_primary_ends_the_hedge_at_once_despite_min_hold():
    h = make()
    hedged(h, ts=T0)
    close = only_intent(exposure(h, 0, -4, ts=T0 + 10 * NS))
    assert (close.side, close.qty, close.reduce_only, close.purpose) == (Side.BUY, 4, True, "hedge-reduce")
    assert not h.active


def test_flatten_time_closes_the_hedge():
    h = make()
    hedged(h, ts=T0)
    late = dt_to_ns(dt.datetime(2026, 4, 8, 15, 6, tzinfo=CT))  # after 15:05 CT: no new positions
    assert not SessionCalendar().can_open(late)
    close = only_intent(exposure(h, 6, -4, ts=late))
    assert (close.side, close.qty, close.reduce_only) == (Side.BUY, 4, True)


# ------------------------------------------------------------------ rebalance band
def test_rebalance_band_resizes_only_beyond_one_contract():
    h = make()  # rebalance_band = 1
    hedged(h)  # 6 MES -> -4 MNQ
    assert h.target(T0) == -4
    assert exposure(h, 7, -4) == [] and h.target(T0) == -5  # 1 short of target: inside the band
    assert exposure(h, 4, -4) == [] and h.target(T0) == -3  # 1 over: inside the band
    more = only_intent(exposure(h, 9, -4))  # -6: 2 short of target
    assert (more.side, more.qty, more.reduce_only, more.purpose) == (Side.SELL, 2, False, "hedge-open")
    fill(h, more, T0)
    less = only_intent(exposure(h, 3, -6))  # -2: 4 over
    assert (less.side, less.qty, less.reduce_only, less.purpose) == (Side.BUY, 4, True, "hedge-reduce")


def test_rebalance_band_zero_resizes_every_contract():
    h = make(rebalance_band=0)
    hedged(h)
    i = only_intent(exposure(h, 7, -4))
    assert (i.side, i.qty) == (Side.SELL, 1)


def test_the_band_never_keeps_a_hedge_that_should_be_closed():
    h = make(min_hold_s=0)
    hedged(h, mes=1, mes_price="6685")  # 1 MES -> 0.68 -> -1 MNQ
    prices(h, "6700")
    close = only_intent(exposure(h, 1, -1))
    assert (close.side, close.qty, close.reduce_only) == (Side.BUY, 1, True)


# ------------------------------------------------------------------ orders
def test_intents_are_marketable_limits_on_the_hedge_micro_in_whole_contracts():
    h = make()
    h.handle(grid_status())
    prices(h, "6685", "24600")
    sell = only_intent(exposure(h, 6))
    spec = get_instrument("MNQ")
    assert sell.order_type is OrderType.LIMIT and sell.stop_price is None
    assert sell.instrument == "MNQ" and spec.is_micro
    assert isinstance(sell.qty, int) and sell.qty == 4
    assert sell.limit_price == D("24599.50")  # last - 2 ticks of 0.25: crosses the spread
    spec.to_ticks(sell.limit_price)  # on the tick grid (raises otherwise)
    assert (sell.client_order_id, sell.strategy_id, sell.ts_ns) == ("hedge-1-1", "hedge", T0)

    b = make(aggressive_ticks=4)
    b.handle(grid_status())
    prices(b, "6715", "24600")
    buy = only_intent(exposure(b, -6))
    assert buy.side is Side.BUY and buy.limit_price == D("24601.00")  # last + 4 ticks


def test_one_hedge_order_at_a_time_until_it_is_done():
    h = make()
    h.handle(grid_status())
    prices(h, "6685")
    first = only_intent(exposure(h, 6))
    assert exposure(h, 9) == []  # target moved, but an order is working
    assert fill(h, first, T0, qty=2, leaves=2) == []
    assert exposure(h, 6, -2) == []  # partly filled: still working
    fill(h, first, T0, qty=2, leaves=0)
    assert exposure(h, 6, -4) == []  # done and at target
    second = only_intent(exposure(h, 9, -4))
    assert h.handle(OrderDenied(second.client_order_id, "hedge", "per trade risk", T0)) == []
    third = only_intent(exposure(h, 9, -4))  # a denied order is no longer working
    assert third.client_order_id != second.client_order_id and third.qty == 2


def test_unfilled_order_is_cancelled_after_the_timeout_then_re_evaluated():
    h = make()  # order_timeout_s = 60
    h.handle(grid_status())
    prices(h, "6685")
    i = only_intent(exposure(h, 6, ts=T0))
    assert h.handle(ClockTick(T0 + 59 * NS)) == []
    cancel = h.handle(ClockTick(T0 + 60 * NS))
    assert cancel == [(RISK, CancelOrder(i.client_order_id, "hedge", T0 + 60 * NS, "hedge order timeout"))]
    assert h.handle(ClockTick(T0 + 61 * NS)) == []  # not re-sent every tick
    again = h.handle(ClockTick(T0 + 120 * NS))  # still not confirmed a minute later: once more
    assert [type(m) for _, m in again] == [CancelOrder]
    assert exposure(h, 6, ts=T0 + 121 * NS) == []  # still working until the cancel is confirmed
    assert h.handle(OrderCancelled(i.client_order_id, "hedge", T0 + 122 * NS, "hedge order timeout")) == []
    retry = only_intent(exposure(h, 6, ts=T0 + 123 * NS))
    assert retry.client_order_id == "hedge-1-2" and (retry.side, retry.qty) == (Side.SELL, 4)


def test_a_primary_bar_also_expires_the_working_order():
    h = make()
    h.handle(grid_status())
    prices(h, "6685")
    i = only_intent(exposure(h, 6, ts=T0))
    out = h.handle(bar("MES", 0, "6685"))  # closes at T0 + 60 s
    assert (RISK, CancelOrder(i.client_order_id, "hedge", T0 + MIN, "hedge order timeout")) in out
    assert not intents(out)


# ------------------------------------------------------------------ risk state
def test_halted_risk_sends_no_intent_and_the_hedge_follows_once_active():
    h = make()
    h.handle(grid_status())
    prices(h, "6685")
    assert h.handle(RiskStateChanged(RiskState.HALTED, "kill switch", T0)) == []
    assert exposure(h, 6) == []
    assert h.working == {}  # nothing held back as working: re-evaluated on the next trigger
    h.handle(RiskStateChanged(RiskState.ACTIVE, "resumed", T0))
    assert only_intent(exposure(h, 6)).qty == 4


def test_halted_risk_does_not_even_reduce():
    h = make()
    hedged(h)
    h.handle(RiskStateChanged(RiskState.HALTED, "reconcile mismatch", T0))
    assert exposure(h, 0, -4) == []  # HALTED: cancels only (the risk actor flattens)


def test_reducing_risk_allows_only_reduce_only_hedge_orders():
    h = make()
    h.handle(RiskStateChanged(RiskState.REDUCING, "daily loss cap", T0))
    h.handle(grid_status())
    prices(h, "6685")
    assert exposure(h, 6) == []  # would open a hedge
    h.handle(RiskStateChanged(RiskState.ACTIVE, "new session", T0))
    i = only_intent(exposure(h, 6))
    fill(h, i, T0)
    h.handle(RiskStateChanged(RiskState.REDUCING, "daily loss cap", T0))
    assert exposure(h, 9, -4) == []  # would grow the hedge to -6
    less = only_intent(exposure(h, 3, -4))  # shrinking it to -2 is allowed
    assert (less.side, less.qty, less.reduce_only) == (Side.BUY, 2, True)


# ------------------------------------------------------------------ correlation
def test_ratio_is_estimated_from_aligned_one_minute_log_returns():
    h = make(window=5)
    mes = ["6700", "6710", "6702", "6712", "6705", "6709", "6699"]
    mnq = ["24600", "24640", "24605", "24650", "24630", "24640", "24590"]
    out = []
    for m, (p, q) in enumerate(zip(mes, mnq)):
        out = minute(h, m, p, q)
    rp = np.diff(np.log([float(x) for x in mes]))[-5:]
    rq = np.diff(np.log([float(x) for x in mnq]))[-5:]
    rho = np.corrcoef(rp, rq)[0, 1]
    expected = min(1.25, max(0.5, rho * rp.std(ddof=1) / rq.std(ddof=1)))
    assert h.corr.count == 5 and h.corr.value == pytest.approx(rho, rel=1e-9)
    assert h.ratio == pytest.approx(expected, rel=1e-9) and 0.5 < h.ratio < 1.25
    status = [m for d, m in out if d == WATCHDOG]  # telemetry: the watchdog's metrics read it
    assert len(status) == 1 and status[0].instrument == "MNQ" and status[0].strategy_id == "hedge"
    assert status[0].hedge_ratio == pytest.approx(expected) and status[0].correlation == pytest.approx(rho)


def test_without_a_watchdog_the_hedge_sends_no_telemetry_and_decides_the_same():
    """``telemetry=False`` (the backtest, which runs no watchdog): no ``StrategyStatus`` to the
    watchdog, and every other message of the same minutes is the same."""
    outs = {}
    for telemetry in (True, False):
        h = HedgeManager(HedgeConfig(window=5), CounterIds(), telemetry=telemetry)
        h.handle(grid_status())
        outs[telemetry] = []
        for i, (p, q) in enumerate(zip(["6700", "6710", "6702", "6690"], ["24600", "24640", "24605", "24560"])):
            prices(h, p, q, T0 + i * MIN)
            outs[telemetry] += minute(h, i, p, q)
        prices(h, "6680", "24500", T0 + 4 * MIN)  # 2 spacings from the mid: the hedge activates
        outs[telemetry] += exposure(h, 4, ts=T0 + 4 * MIN) + minute(h, 4, "6680", "24500")
    watched = [m for d, m in outs[True] if d == WATCHDOG and isinstance(m, StrategyStatus)]
    assert len(watched) == 5 and not any(d == WATCHDOG and isinstance(m, StrategyStatus) for d, m in outs[False])
    assert intents(outs[False]) and intents(outs[False])[0].instrument == "MNQ"
    assert [(d, m) for d, m in outs[True] if not (d == WATCHDOG and isinstance(m, StrategyStatus))] == outs[False]


def test_returns_pair_only_within_the_same_minute_and_other_periods_are_ignored():
    h = make(window=2)
    minute(h, 0, "6700", "24600")
    minute(h, 1, "6710", "24640")
    assert h.corr.count == 1
    h.handle(bar("MES", 2, "6705"))  # MNQ has no bar for minute 2
    h.handle(bar("MNQ", 3, "24620"))  # ... and MES none for minute 3
    assert h.corr.count == 1
    five = Bar("MNQ", 300, T0, T0 + 5 * MIN, D("1"), D("1"), D("1"), D("1"), 1, T0 + 5 * MIN)
    assert h.handle(five) == [] and h.last_close["MNQ"] == D("24620")  # a 5-min bar is not a 1-min return
    minute(h, 4, "6715", "24660")
    assert h.corr.count == 2


def alternating(h: HedgeManager, start: int, n: int, in_phase: bool):
    """``n`` minutes of MES 6700/6710 alternating, MNQ 24600/24640 with it (rho -> +1) or against it
    (rho -> -1). Returns the primary bars' outputs, one list per minute."""
    outs = []
    for m in range(start, start + n):
        up = m % 2 == 1
        outs.append(minute(h, m, "6710" if up else "6700", "24640" if up == in_phase else "24600"))
    return outs


def test_low_correlation_halves_the_hedge_with_one_alert_then_recovers():
    # min_ratio = max_ratio = 1.0 pins h, so the target changes by the halving only
    h = make(window=5, low_corr_minutes=3, min_ratio=1.0, max_ratio=1.0)
    h.handle(grid_status())
    prices(h, "6685")  # ticks set the last prices; the bars below drive the correlation only
    alternating(h, 0, 6, in_phase=True)
    assert h.corr.value == pytest.approx(1.0) and h.ratio == 1.0
    hedged(h)
    assert h.target(T0) == -4

    outs, rhos = [], []
    for m in range(6, 20):
        outs += alternating(h, m, 1, in_phase=False)
        rhos.append(h.corr.value)
    first_low = next(k for k, r in enumerate(rhos) if r < 0.6)
    assert all(r < 0.6 for r in rhos[first_low:])
    alerts = [(k, d, m) for k, out in enumerate(outs) for d, m in out if isinstance(m, Alert)]
    assert len(alerts) == 1  # once, not every low minute
    k, dest, alert = alerts[0]
    assert k == first_low + 3  # 3 minutes after rho first fell below 0.6
    assert dest == WATCHDOG and alert.level == "warning" and alert.key == "hedge-low-correlation"
    assert "hedge halved" in alert.text and alert.ts_ns == T0 + (6 + k + 1) * MIN
    assert all(not intents(o) for o in outs[:k])  # full hedge kept until then
    halve = only_intent(outs[k])  # -4 x 0.5 = 6 x 0.5 x 33,425 / 49,200 = 2.04 -> -2
    assert (halve.side, halve.qty, halve.reduce_only) == (Side.BUY, 2, True)
    assert h.low_corr and h.target(T0) == -2
    fill(h, halve, T0 + 20 * MIN)
    assert exposure(h, 6, -2, ts=T0 + 20 * MIN) == []

    outs = []
    for m in range(20, 30):
        outs.append(alternating(h, m, 1, in_phase=True)[0])
        if not h.low_corr:
            break
    assert h.corr.value >= 0.6 and not h.low_corr
    assert not any(isinstance(m, Alert) for o in outs for _, m in o)  # recovery raises no alert
    back = only_intent(outs[-1])
    assert (back.side, back.qty, back.purpose) == (Side.SELL, 2, "hedge-open") and h.target(T0) == -4


def test_low_correlation_for_less_than_the_window_does_not_halve():
    h = make(window=5, low_corr_minutes=15)
    alternating(h, 0, 6, in_phase=True)
    outs = alternating(h, 6, 10, in_phase=False)
    assert h.corr.value < 0.6 and h.low_corr_since is not None and not h.low_corr
    assert not any(isinstance(m, Alert) for o in outs for _, m in o)


# ------------------------------------------------------------------ persistence
def test_snapshot_restore_round_trip():
    cfg = HedgeConfig(window=5)
    h = HedgeManager(cfg, CounterIds())
    alternating(h, 0, 7, in_phase=True)
    h.handle(grid_status())
    prices(h, "6685")
    working = only_intent(exposure(h, 6, ts=T0 + 8 * MIN))
    snap = h.snapshot()
    wire = json.loads(json.dumps(snap))  # JSON-safe: what the mirror stores
    assert wire == snap

    r = HedgeManager(cfg, CounterIds(incarnation=2))
    r.restore(wire)
    assert r.snapshot() == snap
    assert (r.active, r.activated_ns, r.activations, r.ratio) == (True, T0 + 8 * MIN, 1, h.ratio)
    assert (r.mid, r.spacing) == (D("6700.0"), D("10.0"))
    assert r.corr.value == h.corr.value and r.corr.count == 5
    assert PLUGIN.held_orders(wire) == {working.client_order_id: 0}
    # the restored working order still blocks a second one and is cancelled on its timeout
    prices(r, "6685")
    assert exposure(r, 6, ts=T0 + 8 * MIN) == []
    assert r.handle(ClockTick(T0 + 9 * MIN)) == [
        (RISK, CancelOrder(working.client_order_id, "hedge", T0 + 9 * MIN, "hedge order timeout"))]
    # the correlation continues bit for bit
    for m in (h, r):
        m.handle(bar("MNQ", 7, "24655"))
        m.handle(bar("MES", 7, "6713"))
    assert r.corr.value == h.corr.value and r.ratio == h.ratio
    # an order that never reached the router is forgotten
    r.forget_orders([working.client_order_id])
    assert r.working == {} and r.stats() == {"activations": 1}


def test_restore_of_an_empty_manager():
    h = make()
    r = make()
    r.restore(json.loads(json.dumps(h.snapshot())))
    assert r.snapshot() == h.snapshot() and r.mid is None and r.spacing is None and not r.active


def test_low_correlation_halving_survives_a_restart():
    cfg = HedgeConfig(window=5, low_corr_minutes=3, min_ratio=1.0, max_ratio=1.0)
    h = HedgeManager(cfg, CounterIds())
    alternating(h, 0, 6, in_phase=True)
    alternating(h, 6, 10, in_phase=False)
    assert h.low_corr
    ts = T0 + 16 * MIN
    h.handle(grid_status(ts))
    prices(h, "6685", ts=ts)
    assert exposure(h, 6, -2, ts=ts) == [] and h.target(ts) == -2  # 6 MES, halved hedge in place

    r = HedgeManager(cfg, CounterIds(incarnation=2))
    r.restore(json.loads(json.dumps(h.snapshot())))
    assert r.corr.value < 0.6  # the restored correlation is still low ...
    r.handle(grid_status(ts))
    prices(r, "6685", ts=ts)
    # ... so the halved hedge should be kept (the restored manager sells 2 more MNQ: target -4)
    assert exposure(r, 6, -2, ts=ts) == [] and r.target(ts) == -2


def test_warmup_bars_per_instrument_seed_the_correlation():
    h = make(window=5)
    mes = tuple(bar("MES", m, "6710" if m % 2 else "6700") for m in range(8))
    mnq = tuple(bar("MNQ", m, "24640" if m % 2 else "24600") for m in range(8))
    assert h.handle(WarmupBars("MES", 60, mes, T0)) == []
    assert h.handle(WarmupBars("MNQ", 60, mnq, T0)) == []
    assert h.corr.count == 5 and h.corr.value == pytest.approx(1.0)


def test_warmup_bars_never_trade():
    h = make(window=5)
    h.handle(grid_status())
    assert exposure(h, 6) == []  # no prices yet
    bars = tuple(b for m in range(8) for b in (bar("MNQ", m, "24600"), bar("MES", m, "6600")))
    assert h.handle(WarmupBars("MES", 60, bars, T0)) == []  # far from the mid with inventory, still nothing
    assert h.working == {}


# ------------------------------------------------------------------ plug-in
LIMITS = RiskLimits(starting_balance=D(50000), mll_amount=D(2000), max_contracts_minis=D(5))


def test_build_from_plugin_takes_strategy_id_and_instruments_from_the_context():
    ctx = StrategyContext("hedge-es", ("MES", "MNQ"), CounterIds(incarnation=3), SessionCalendar(), LIMITS)
    params = PLUGIN.params(activation_spacings=2.0, rebalance_band=0, min_hold_s=120, window=30)
    h = PLUGIN.build(ctx, params)
    assert isinstance(h, HedgeManager) and isinstance(h, Strategy)
    assert h.strategy_id == "hedge-es" and h.calendar is ctx.calendar and h.ids is ctx.ids
    assert (h.cfg.primary, h.cfg.hedge) == ("MES", "MNQ")
    assert (h.cfg.activation_spacings, h.cfg.rebalance_band, h.cfg.min_hold_s, h.cfg.window) == (2.0, 0, 120, 30)
    h.handle(grid_status())
    prices(h, "6685")
    assert exposure(h, 6) == []  # 1.5 spacings is below this entry's 2.0
    prices(h, "6680")
    i = only_intent(exposure(h, 6))
    assert (i.client_order_id, i.strategy_id) == ("hedge-es-3-1", "hedge-es")
    assert PLUGIN.kind == "hedge" and PLUGIN.instruments == (2, 2) and PLUGIN.wants_status
    assert PLUGIN.summary == ("activations",)


def test_plugin_defaults_and_validation():
    p = HedgeParams()
    assert (p.activation_spacings, p.min_ratio, p.max_ratio, p.window, p.low_corr, p.low_corr_minutes,
            p.low_corr_factor, p.rebalance_band, p.min_hold_s) == (1.5, 0.5, 1.25, 100, 0.6, 15.0, 0.5, 1, 600)
    with pytest.raises(ValueError, match="min_ratio"):
        HedgeParams(min_ratio=1.5, max_ratio=1.0)
    with pytest.raises(ValueError):
        HedgeParams(surprise=1)  # unknown keys are errors
    with pytest.raises(ValueError, match="must differ"):
        PLUGIN.check(HedgeParams(), ("MES", "MES"), LIMITS)
    PLUGIN.check(HedgeParams(), ("MES", "MNQ"), LIMITS)


def test_build_keeps_fractional_low_corr_minutes():
    ctx = StrategyContext("hedge", ("MES", "MNQ"), CounterIds(), SessionCalendar(), LIMITS)
    h = PLUGIN.build(ctx, HedgeParams(low_corr_minutes=1.5))
    assert h.cfg.low_corr_minutes == 1.5


@pytest.mark.parametrize("msg", ["hello", Alert("info", "k", "t", T0)])
def test_unexpected_message_is_rejected_without_changing_state(msg):
    h = make()
    hedged(h)
    before = h.snapshot()
    with pytest.raises(RejectedMessage, match="hedge: unexpected message"):
        h.handle(msg)
    assert h.snapshot() == before
