"""Wall-clock session rules under freezegun: the 15:10 CT flatten and the 17:00 CT trading-day roll.

Live, time-driven rules run on ``ClockTick(time.time_ns())`` (the live clock source); here the wall
clock is frozen and moved with freezegun, so the tests pin exactly which second the rules fire.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal as D

from freezegun import freeze_time

from config.settings import load_config
from domain.calendar import CT, SessionCalendar, trading_day
from domain.handler import ROUTER, CounterIds
from domain.messages import ClockTick, Fill, OrderAccepted, OrderIntent, OrderSubmitted, OrderType, RiskState, Side
from domain.risk import RiskManager


def _ct(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=CT)


def _risk_with_long_position(now: int) -> RiskManager:
    cfg = load_config(None, "combine-50k")
    risk = RiskManager(cfg.profile.limits(), CounterIds(), SessionCalendar(300), now)
    buy = OrderIntent("g1", "grid-MES", "MES", Side.BUY, 2, OrderType.LIMIT, now, limit_price=D("5000.00"))
    assert risk.handle(buy) == [(ROUTER, buy)]
    risk.handle(OrderSubmitted("g1", "grid-MES", now))
    risk.handle(OrderAccepted("g1", "grid-MES", "V1", now))
    risk.handle(Fill("g1", "grid-MES", "T1", "MES", Side.BUY, 2, D("5000.00"), D("1.22"), 0, now))
    assert risk.portfolio.qty("MES") == 2
    return risk


def _closes(out: list) -> list[OrderIntent]:
    return [m for d, m in out if d == ROUTER and isinstance(m, OrderIntent) and m.strategy_id == "risk"]


def test_flatten_fires_at_1505_ct_wall_clock_not_a_second_earlier():
    """Flat by 15:10 CT with the default 300 s margin: the flatten starts at 15:05:00 CT."""
    with freeze_time(_ct(2026, 4, 8, 15, 4, 58)) as frozen:
        risk = _risk_with_long_position(time.time_ns())
        frozen.tick(1)  # 15:04:59
        assert _closes(risk.handle(ClockTick(time.time_ns()))) == []
        assert risk.state is RiskState.ACTIVE
        frozen.tick(1)  # 15:05:00
        closes = _closes(risk.handle(ClockTick(time.time_ns())))
        assert [(c.instrument, c.side, c.qty, c.order_type, c.reduce_only) for c in closes] == [
            ("MES", Side.SELL, 2, OrderType.MARKET, True)]
        assert risk.state is RiskState.REDUCING and "flat-time" in risk.holds
        # a new entry is refused from now until the next session
        late = OrderIntent("g2", "grid-MES", "MES", Side.BUY, 1, OrderType.LIMIT, time.time_ns(),
                           limit_price=D("4999.00"))
        assert [type(m).__name__ for _, m in risk.handle(late)] == ["OrderDenied"]


def test_trading_day_rolls_at_1700_ct_and_resets_day_pnl():
    """16:59:59 CT belongs to the current trading day, 17:00:00 CT to the next (Tue -> Wed)."""
    with freeze_time(_ct(2026, 4, 7, 16, 59, 59)) as frozen:
        cfg = load_config(None, "combine-50k")
        risk = RiskManager(cfg.profile.limits(), CounterIds(), SessionCalendar(300), time.time_ns())
        risk.ledger.on_realized(D("-150.00"), D("0"), 1)
        risk.handle(ClockTick(time.time_ns()))
        assert risk.ledger.trading_day == dt.date(2026, 4, 7) == trading_day(time.time_ns())
        assert risk.ledger.day_pnl(D(0)) == D("-150.00")
        frozen.tick(1)  # 17:00:00 CT
        risk.handle(ClockTick(time.time_ns()))
        assert risk.ledger.trading_day == dt.date(2026, 4, 8) == trading_day(time.time_ns())
        assert risk.ledger.day_pnl(D(0)) == D(0)
        assert "flat-time" not in risk.holds and risk.state is RiskState.ACTIVE


def test_friday_close_rolls_to_monday_and_holiday_is_not_tradable():
    with freeze_time(_ct(2026, 4, 10, 17, 0, 0)):  # Friday 17:00 CT -> Monday's trading day
        assert trading_day(time.time_ns()) == dt.date(2026, 4, 13)
        assert not SessionCalendar(300).can_open(time.time_ns())  # weekend: market closed
    with freeze_time(_ct(2026, 4, 2, 19, 0, 0)):  # Thursday evening before Good Friday 2026-04-03
        assert trading_day(time.time_ns()) == dt.date(2026, 4, 3)
        assert not SessionCalendar(300).can_open(time.time_ns())
