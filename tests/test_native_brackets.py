"""Native (venue-side) OCO brackets, issue 20 item 6 (docs/strategies/regime.md, "Orders"): the
simulated venue places both legs on the entry's fill and settles the OCO itself, also across a
snapshot / restore; the regime strategy sends bracketed entries, learns its legs, exits at market
if they are not confirmed, and falls back to a managed bracket when the venue refuses native ones;
the router and risk track the legs; the ProjectX mapping signs the ticks; the sandbox in Position
Brackets mode refuses them as the gateway does."""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import pytest

from domain.execution.router import OrderRouter
from domain.handler import RISK, ROUTER, WATCHDOG, CounterIds
from domain.calendar import SessionCalendar
from domain.messages import (Alert, Bracket, CancelOrder, Fill, Flatten, OrderAccepted, OrderCancelled,
                             OrderIntent, OrderRejected, OrderSubmitted, OrderType, Side, TradeTick)
from domain.orders import bracket_leg_ids, bracket_legs, bracket_parent
from domain.risk import RiskManager
from infra.paper_broker import PaperBroker
from infra.projectx.mapping import place_args, strategy_id_of
from tests.test_regime_strategy import LIMITS, NS, _bar, _fill, _intents, _session, _strategy, _ts

D = Decimal
TICK = D("0.25")


def _entry(coid: str = "regime-MNQ-1-1", side: Side = Side.BUY, ts: int = 0) -> OrderIntent:
    return OrderIntent(coid, "regime-MNQ", "MNQ", side, 1, OrderType.MARKET, ts,
                       purpose="regime-entry bull_pullback; regime=bull", bracket=Bracket(8, 14))


def test_leg_ids_prices_and_purposes_follow_the_entry():
    stop, target = bracket_legs(_entry(), D("20000.00"), TICK)
    assert (stop.client_order_id, target.client_order_id) == bracket_leg_ids("regime-MNQ-1-1")
    assert (stop.order_type, stop.side, stop.stop_price, stop.reduce_only) == (OrderType.STOP, Side.SELL,
                                                                               D("19998.00"), True)
    assert (target.order_type, target.limit_price, target.purpose) == (OrderType.LIMIT, D("20003.50"),
                                                                       "bracket-target; regime=bull")
    short_stop, short_target = bracket_legs(_entry(side=Side.SELL), D("20000.00"), TICK)
    assert (short_stop.side, short_stop.stop_price, short_target.limit_price) == (Side.BUY, D("20002.00"),
                                                                                  D("19996.50"))
    assert bracket_parent(stop.client_order_id) == "regime-MNQ-1-1" and bracket_parent("regime-MNQ-1-1") is None
    assert strategy_id_of(stop.client_order_id) == "regime-MNQ"


def test_the_simulated_venue_places_the_legs_on_the_fill_and_one_fill_cancels_the_other():
    b = PaperBroker(slippage_ticks=1)
    t = _ts(10, 30)
    b.on_trade(TradeTick("MNQ", t, D("20000.00"), 1))
    assert [type(e) for e in b.submit(_entry(ts=t), t)] == [OrderAccepted]  # fills on the next print
    fill, stop_acc, target_acc = b.on_trade(TradeTick("MNQ", t + NS, D("20000.00"), 1, 1))
    assert isinstance(fill, Fill) and fill.price == D("20000.25")  # + 1 tick slippage
    assert (stop_acc.intent.stop_price, target_acc.intent.limit_price) == (D("19998.25"), D("20003.75"))
    assert {o.client_order_id for o in b.working_orders()} == set(bracket_leg_ids("regime-MNQ-1-1"))
    # the snapshot keeps the pair: the restored venue still cancels the sibling
    b = PaperBroker.restore(b.snapshot())
    events = b.on_trade(TradeTick("MNQ", t + 2 * NS, D("20004.00"), 1, 2))  # trades through the target
    assert [(type(e).__name__, e.client_order_id) for e in events] == [
        ("Fill", "regime-MNQ-1-1-TP"), ("OrderCancelled", "regime-MNQ-1-1-SL")]
    assert events[1].reason == "oco: regime-MNQ-1-1-TP filled"
    assert b.working_orders() == [] and b.position("MNQ") == 0
    # a gap through both legs on one print fills only one of them
    b.submit(_entry("regime-MNQ-1-2", ts=t + 3 * NS), t + 3 * NS)
    b.on_trade(TradeTick("MNQ", t + 4 * NS, D("20004.00"), 1, 3))
    assert [type(e) for e in b.on_trade(TradeTick("MNQ", t + 5 * NS, D("19990.00"), 1, 4))] == [Fill, OrderCancelled]
    assert b.position("MNQ") == 0


def test_a_bad_bracket_is_rejected():
    b = PaperBroker()
    bad = OrderIntent("x", "s", "MNQ", Side.BUY, 1, OrderType.MARKET, 0, bracket=Bracket(0, 4))
    [rej] = b.submit(bad, 0)
    assert isinstance(rej, OrderRejected) and "bracket" in rej.reason


def _bull_entry():
    """A bull-regime strategy (native brackets) that has just sent its 10:30 ET pullback entry."""
    s = _strategy()
    _session(s, [20000.0] * 40)
    s.regime = "bull"
    t = _ts(10, 30)
    entry, = _intents(s.handle(_bar(t, 19999.0, 20002.0, 19998.0, 20001.5)))
    return s, t, entry


def _native_long():
    """A bull-regime strategy (native brackets) whose 10:30 ET entry filled long 1 at 20002."""
    s, t, entry = _bull_entry()
    assert entry.bracket == Bracket(8, 14)
    assert s.handle(_fill(entry, "20002.00", "T1", t + 61 * NS)) == []  # the venue places the legs
    return s, t, entry


def test_the_strategy_learns_its_legs_and_leaves_the_sibling_to_the_venue():
    s, t, entry = _native_long()
    stop, target = bracket_legs(entry, D("20002.00"), TICK)
    for leg in (stop, target):
        s.handle(OrderAccepted(leg.client_order_id, "regime-MNQ", "v", t + 61 * NS, leg))
    assert (s.trade["stop"], s.trade["target"]) == (stop.client_order_id, target.client_order_id)
    assert s.handle(TradeTick("MNQ", t + 3600 * NS, D("20001.00"), 1)) == []  # confirmed: no timeout
    out = s.handle(_fill(stop, "20000.00", "T2", t + 90 * NS))
    assert out == [] and s.trade is None and s.counters["stops"] == 1  # no CancelOrder of the target
    assert s.snapshot()["native_ok"] is True


def test_legs_not_confirmed_in_time_are_cancelled_and_the_position_exits_at_market():
    s, t, entry = _native_long()
    assert s.handle(TradeTick("MNQ", t + 62 * NS, D("20001.00"), 1)) == []  # 1 s: still waiting
    out = s.handle(TradeTick("MNQ", t + 67 * NS, D("20001.00"), 1))  # 6 s > native_leg_timeout_s 5
    cancels = [m.client_order_id for _, m in out if isinstance(m, CancelOrder)]
    exits = _intents(out)
    assert cancels == list(bracket_leg_ids(entry.client_order_id))
    assert [(e.order_type, e.side, e.reduce_only) for e in exits] == [(OrderType.MARKET, Side.SELL, True)]
    assert s.counters["legs_missing"] == 1


def test_a_venue_in_position_brackets_mode_turns_the_strategy_to_a_managed_bracket():
    s, t, entry = _bull_entry()
    out = s.handle(OrderRejected(entry.client_order_id, "regime-MNQ",
                                 "OrderRejected: Brackets cannot be used with Position Brackets. "
                                 "You must enable Auto OCO Brackets.", t + 61 * NS))
    assert [(d, type(m)) for d, m in out] == [(WATCHDOG, Alert)] and s.trade is None and not s.native_ok
    s2 = _strategy()
    s2.restore(s.snapshot())
    assert not s2.native_ok  # remembered across a restart
    again, = _intents(s.handle(_bar(t + 60 * NS, 19999.0, 20002.0, 19998.0, 20001.5)))
    assert again.bracket is None
    stop, target = _intents(s.handle(_fill(again, "20002.00", "T1", t + 121 * NS)))
    assert (stop.order_type, target.order_type) == (OrderType.STOP, OrderType.LIMIT)


def test_router_and_risk_track_the_legs_the_venue_placed():
    t = _ts(10, 30)
    risk = RiskManager(LIMITS, CounterIds(), SessionCalendar(), _ts(10, 0))
    router = OrderRouter(None, None)
    entry = _entry(ts=t)
    assert [d for d, _ in risk.handle(entry)] == [ROUTER]
    router.handle(entry)
    risk.handle(OrderSubmitted(entry.client_order_id, "regime-MNQ", t))
    fill = _fill(entry, "20000.00", "T1", t + NS)
    router.handle(fill)
    risk.handle(fill)
    stop, target = bracket_legs(entry, D("20000.00"), TICK)
    bare = OrderIntent(stop.client_order_id, "regime-MNQ", "MNQ", Side.SELL, 1, OrderType.STOP, t,
                       stop_price=stop.stop_price, reduce_only=True, purpose="bracket-stop")  # as ProjectX reports it
    out = router.handle(OrderAccepted(stop.client_order_id, "regime-MNQ", "9", t + NS, bare))
    assert [d for d, _ in out] == [RISK, "regime-MNQ"]
    assert out[0][1].intent.purpose == "bracket-stop; regime=bull"  # the entry's tags
    for _, m in out[:1]:
        risk.handle(m)
    risk.handle(OrderAccepted(target.client_order_id, "regime-MNQ", "10", t + NS, target))
    assert {o.client_order_id for o in risk.book.working("MNQ")} == set(bracket_leg_ids(entry.client_order_id))
    risk.handle(OrderCancelled(target.client_order_id, "regime-MNQ", t + 2 * NS, "oco"))
    assert [o.client_order_id for o in risk.book.working("MNQ")] == [stop.client_order_id]


def _flatten_on_a_bracketed_fill():
    """Risk with a native-bracket entry that just filled long 1 at 20000 (legs not reported yet),
    and a flatten started on that fill (as a loss cap breached by the fill starts it)."""
    t = _ts(10, 30)
    risk = RiskManager(LIMITS, CounterIds(), SessionCalendar(), _ts(10, 0))
    entry = _entry(ts=t)
    risk.handle(entry)
    risk.handle(OrderSubmitted(entry.client_order_id, "regime-MNQ", t))
    risk.handle(_fill(entry, "20000.00", "T1", t + NS))
    return risk, entry, t + NS, risk.handle(Flatten("session_loss_cap", t + NS))


def _closes(out):
    return [m for d, m in out if d == ROUTER and isinstance(m, OrderIntent)]


def test_a_flatten_waits_for_the_legs_the_venue_is_placing_before_it_closes():
    """The venue places the legs with the fill and reports them after it: a close sent before
    they are reported and cancelled could fill beside a leg and leave the account short."""
    risk, entry, ts, out = _flatten_on_a_bracketed_fill()
    assert not _closes(out)
    stop, target = bracket_legs(entry, D("20000.00"), TICK)
    cancels = [m.client_order_id for leg in (stop, target)
               for d, m in risk.handle(OrderAccepted(leg.client_order_id, "regime-MNQ", "9", ts, leg))
               if isinstance(m, CancelOrder)]
    assert cancels == [stop.client_order_id, target.client_order_id]
    assert not _closes(risk.handle(OrderCancelled(stop.client_order_id, "regime-MNQ", ts, "flatten")))
    close = _closes(risk.handle(OrderCancelled(target.client_order_id, "regime-MNQ", ts, "flatten")))
    assert [(c.side, c.qty, c.reduce_only) for c in close] == [(Side.SELL, 1, True)]


def test_legs_never_reported_are_awaited_for_five_seconds_then_the_position_is_closed():
    risk, _entry_, ts, out = _flatten_on_a_bracketed_fill()
    assert not _closes(out)
    assert not _closes(risk.handle(TradeTick("MNQ", ts + 4 * NS, D("19999.00"), 1)))
    late = risk.handle(TradeTick("MNQ", ts + 6 * NS, D("19999.00"), 1))
    assert [(c.side, c.qty) for c in _closes(late)] == [(Side.SELL, 1)]
    alerts = [m for d, m in late if isinstance(m, Alert)]
    assert {a.key for a in alerts} == {"risk-legs-missing"} and len(alerts) == 2 and not risk.legs_due


@pytest.mark.parametrize("side,stop_ticks,target_ticks", [(Side.BUY, -8, 14), (Side.SELL, 8, -14)])
def test_projectx_place_args_sign_the_bracket_ticks(side, stop_ticks, target_ticks):
    args = place_args(_entry(side=side), tick_size=TICK)
    assert args["stop_loss_bracket"] == {"ticks": stop_ticks, "type": 4}
    assert args["take_profit_bracket"] == {"ticks": target_ticks, "type": 1}


# --------------------------------------------------------------------------- ProjectX on the sandbox

def _bracketed(coid: str, ts: int, otype: OrderType = OrderType.MARKET, limit: str | None = None,
               ticks: tuple[int, int] = (1, 1)) -> OrderIntent:
    return OrderIntent(coid, "regime-MES", "MES", Side.BUY, 1, otype, ts, limit_price=D(limit) if limit else None,
                       purpose="regime-entry bull_pullback; regime=bull", bracket=Bracket(*ticks))


def test_projectx_native_bracket_legs_arrive_with_prices_and_settle_as_oco_on_the_sandbox():
    from tests.test_projectx_broker import Harness, wait_for
    h = Harness()
    try:
        # a resting bracketed entry: its legs are Suspended, without a price, and not reported
        far = _bracketed("regime-MES-1-1", h.gw.now_ns(), OrderType.LIMIT, "1000.00")
        h.submit(far)
        time.sleep(0.3)
        assert [e.client_order_id for e in h.of(OrderAccepted)] == ["regime-MES-1-1"]
        assert [o.client_order_id for o in h.broker.snapshot(h.gw.now_ns()).working] == ["regime-MES-1-1"]
        h.broker.cancel("regime-MES-1-1", h.gw.now_ns())
        # a market entry fills at once; both legs then work with absolute prices
        entry = _bracketed("regime-MES-1-2", h.gw.now_ns())
        h.submit(entry)
        assert wait_for(lambda: len([e for e in h.of(OrderAccepted) if e.intent is not None]) == 2)
        [fill] = h.of(Fill, "regime-MES-1-2")
        legs = {e.client_order_id: e.intent for e in h.of(OrderAccepted) if e.intent is not None}
        stop, target = legs["regime-MES-1-2-SL"], legs["regime-MES-1-2-TP"]
        assert (stop.order_type, stop.side, stop.stop_price, stop.reduce_only, stop.strategy_id) == \
            (OrderType.STOP, Side.SELL, fill.price - TICK, True, "regime-MES")
        assert (target.order_type, target.limit_price) == (OrderType.LIMIT, fill.price + TICK)
        snap = h.broker.snapshot(h.gw.now_ns())
        assert {o.client_order_id for o in snap.working} == set(legs), (snap, h.gw.open_orders(1001), h.events)
        # the market moves: one leg fills and the gateway cancels the other
        for _ in range(3000):
            if h.of(Fill, stop.client_order_id) or h.of(Fill, target.client_order_id):
                break
            h.gw.advance(1)
            time.sleep(0.002)
        # both legs settled: one filled, the other's cancel reported (not any two cancels: the
        # first entry's own cancel counts among them, so that wait could end before the sibling's)
        assert wait_for(lambda: all(h.of(Fill, c) or h.of(OrderCancelled, c) for c in legs))
        filled = [c for c in legs if h.of(Fill, c)]
        cancelled = [c for c in legs if h.of(OrderCancelled, c)]
        assert len(filled) == 1 and cancelled == [c for c in legs if c not in filled]
        assert h.gw.positions(1001) == [] and h.gw.open_orders(1001) == []
    finally:
        h.close()


def test_projectx_in_position_brackets_mode_rejects_the_bracket_though_an_order_id_comes_back():
    from infra.sandbox.exchange import AccountSpec
    from tests.test_projectx_broker import Harness
    h = Harness(accounts=(AccountSpec(1001, "PRAC-50K-POSITION-BRACKETS", D(50000), simulated=True, auto_oco=False),))
    try:
        [rejected] = h.submit(_bracketed("regime-MES-1-1", h.gw.now_ns()))
        assert isinstance(rejected, OrderRejected) and "Auto OCO" in rejected.reason
        assert h.gw.positions(1001) == [] and h.gw.open_orders(1001) == []
        plain = dataclasses.replace(_bracketed("regime-MES-1-2", h.gw.now_ns()), bracket=None)
        assert isinstance(h.submit(plain)[0], OrderAccepted)  # unbracketed orders still go
    finally:
        h.close()
