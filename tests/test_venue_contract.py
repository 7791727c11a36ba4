"""The venue contract suite: the same scenarios against both adapters of :class:`domain.ports.ExecutionVenue`.

- ``simulated``: :class:`infra.venues.simulated.SimulatedVenue` (a :class:`PaperBroker` mirrored in a
  real Redis, the ``store`` fixture), 1 tick of slippage on market and stop orders, limits fill
  when traded through. The market is our ticks (``venue.on_tick``); every call answers at once.
- ``projectx``: :class:`infra.projectx.broker.ProjectXBroker` over the sandbox gateway
  (``infra/sandbox``, docs/sandbox.md) in manual mode on 127.0.0.1: real REST and SignalR user hub.
  The gateway matches orders itself (no slippage, limits fill when traded through); fills and
  status changes arrive through the event sink.

Each scenario is one test taking a :class:`Driver` (parametrized ``simulated`` / ``projectx``) and
asserts only what the port promises. The driver hides how the market is made to trade, how events
are collected (the call's returned events first, then what the sink delivered meanwhile: the broker
actor's mailbox order) and how faults are injected. A scenario that cannot apply to a venue skips
with the reason.

Units: prices in points (``Decimal``), quantities in contracts, times in epoch ns UTC.
"""

from __future__ import annotations

import itertools
import queue
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from actors.core import wait_until

from domain.messages import (Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderModified, OrderRejected,
                             OrderType, Side, TradeTick)
from domain.ports import ExecutionVenue
from infra.projectx.broker import ProjectXBroker
from infra.projectx.rest import ProjectXClient
from infra.sandbox.exchange import EventAction
from infra.sandbox.server import SandboxConfig, SandboxGateway
from infra.sandbox.wire import iso
from infra.venues.simulated import SimulatedVenue

INSTRUMENT = "MES"
TICK = Decimal("0.25")
BASE = Decimal("6600.00")
ACCOUNT = 1001  # the sandbox's practice account
HUB_OPTIONS = {"keepalive_s": 0.2, "silence_timeout_s": 1.0, "connect_timeout_s": 3.0,
               "reconnect_delays_s": (0.05, 0.1)}
"""User hub timings for tests (as tests/test_projectx_hubs.py ``FAST``)."""
ANSWER_DELAY_S = 0.02
"""The sandbox writes every REST answer this late, a stand-in for the network round trip that
loopback lacks: the user-hub events of a place or modify (a fill...) then reach the broker before
the call's answer, as they often do live, and the broker must keep them in order."""


def px(ticks: int) -> Decimal:
    """``BASE`` moved by ``ticks`` ticks (points)."""
    return BASE + ticks * TICK


def wait(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` seconds passed (its last value)."""
    return wait_until(cond, timeout=timeout, interval=0.01)


# --------------------------------------------------------------------------- drivers

class Driver:
    """What a scenario needs from one venue: the venue, the market, the events, the faults.

    Attributes:
        name: the pytest id (``simulated`` / ``projectx``).
        venue: the :class:`ExecutionVenue` under test (a new one after :meth:`restart`, and after
            :meth:`lose_connection` on the simulated venue, whose recovery is a restart).
        slippage_ticks: ticks a market or stop fill may be worse than the print that triggered it.
        fills_on_arrival: a marketable order fills as it arrives, at the last print (the gateway:
            an exchange with a standing book); False: on the next print after it arrived (the
            simulated venue: never at a price from before the decision, infra/paper_broker.py).
        events: every venue event seen, in the order a broker actor would handle them.
        t0: event time at the start of the test (for ``fills_since``).
    """

    name = ""
    slippage_ticks = 0
    fills_on_arrival = True

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._seq = itertools.count(1)
        self.venue: Any = None
        self.t0 = 0
        self.reconciliations: list[str] = []
        """Reconciliation requests of the venue (``on_reconcile_needed``)."""

    def after_arrival(self, price: Decimal) -> None:
        """The print a marketable order waits for on a venue that does not fill on arrival (the
        market trades on at ``price``); nothing where it filled as it arrived."""
        if not self.fills_on_arrival:
            self.trade(price)

    # -- the clock and orders

    def now(self) -> int:
        """The venue's event time now (epoch ns UTC)."""
        raise NotImplementedError

    def intent(self, side: Side, otype: OrderType = OrderType.LIMIT, qty: int = 1, limit: Decimal | None = None,
               stop: Decimal | None = None, instrument: str = INSTRUMENT, coid: str | None = None) -> OrderIntent:
        """A new order of strategy ``grid-MES`` with a fresh client order id ``grid-MES-1-<n>``."""
        return OrderIntent(coid or f"grid-MES-1-{next(self._seq)}", "grid-MES", instrument, side, qty, otype,
                           self.now(), limit_price=limit, stop_price=stop)

    def _call(self, fn: Callable[[], list]) -> list:
        """Run a venue call; its returned events first, then what the sink delivered meanwhile."""
        out = fn()
        self.events.extend(out)
        self._drain()
        return out

    def _drain(self) -> None:
        while True:
            try:
                self.events.append(self._inbox.get_nowait())
            except queue.Empty:
                return

    def submit(self, intent: OrderIntent, *, duplicate: bool = False, disorder: bool = False) -> list:
        """Place ``intent``; the returned events. ``duplicate`` / ``disorder``: the venue's events
        about it are delivered twice / out of order, where the venue has such events."""
        return self._call(lambda: self.venue.submit(intent, self.now()))

    def cancel(self, coid: str) -> list:
        return self._call(lambda: self.venue.cancel(coid, self.now()))

    def modify(self, coid: str, **changes: Any) -> list:
        return self._call(lambda: self.venue.modify(coid, self.now(), **changes))

    # -- the market

    def trade(self, price: Decimal, size: int = 1, *, duplicate: bool = False, disorder: bool = False) -> None:
        """The market prints ``size`` contracts at ``price``. ``duplicate``: the venue's input or
        events about it arrive twice; ``disorder``: out of order (see the subclasses)."""
        raise NotImplementedError

    def partial_fill(self, accepted: OrderAccepted, price: Decimal, sizes: list[int]) -> None:
        """The order fills in parts of ``sizes`` contracts at ``price`` (skips where impossible)."""
        raise NotImplementedError

    # -- faults

    def lose_connection(self, during: Callable[[], None]) -> None:
        """Lose the venue's connection, run ``during`` meanwhile, recover (see the subclasses)."""
        raise NotImplementedError

    def restart(self) -> None:
        """Replace :attr:`venue` by a new adapter that knows only what the venue itself keeps (our
        process restarted); its events keep flowing into :attr:`events`."""
        raise NotImplementedError

    # -- observing

    def settle(self) -> None:
        """Return once every event the venue has produced so far is in :attr:`events`."""
        self._drain()

    def wait_for(self, cond: Callable[[], bool], timeout: float = 3.0) -> bool:
        """Collect events until ``cond()`` holds (True) or ``timeout`` seconds passed."""
        def check() -> bool:
            self._drain()
            return cond()
        return wait(check, timeout)

    def of(self, kind: type, coid: str | None = None) -> list[Any]:
        """Events of ``kind`` (for ``coid``) seen so far."""
        return [e for e in self.events if isinstance(e, kind) and (coid is None or e.client_order_id == coid)]

    def for_order(self, coid: str) -> list[str]:
        """Type names of the events of one order, in order."""
        return [type(e).__name__ for e in self.events if getattr(e, "client_order_id", None) == coid]

    def close(self) -> None:
        """Release what the driver started."""


class SimulatedDriver(Driver):
    """The simulated venue: the market is our ticks, every event is returned by the call."""

    name = "simulated"
    slippage_ticks = 1
    fills_on_arrival = False

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        self.venue = SimulatedVenue(store, slippage_ticks=self.slippage_ticks, fill_on_touch=False)
        self._ts = 1_775_656_800_000_000_000  # 2026-04-08 14:00 UTC
        self._tick_seq = itertools.count(1)
        self._late: list[TradeTick] = []
        self.t0 = self._ts

    def now(self) -> int:
        return self._ts

    def _tick(self, price: Decimal, size: int) -> TradeTick:
        self._ts += 1_000_000
        return TradeTick(INSTRUMENT, self._ts, price, size, next(self._tick_seq))

    def trade(self, price: Decimal, size: int = 1, *, duplicate: bool = False, disorder: bool = False) -> None:
        """``on_tick`` with a new print. ``duplicate``: the same tick is delivered once more at the
        next :meth:`settle` (a replay resuming behind the venue), when orders placed since could be
        crossed by it. ``disorder``: first a print at ``price`` stamped before the last tick
        processed (a late tick), which must be ignored (asserted here), then the print in order.
        The venue answers synchronously, so only its input can be out of order."""
        if disorder:
            late = TradeTick(INSTRUMENT, self._ts - 500_000, price, size, 0)
            assert self._call(lambda: self.venue.on_tick(late)) == [], "a late tick was matched"
        tick = self._tick(price, size)
        self._call(lambda: self.venue.on_tick(tick))
        if duplicate:
            self._late.append(tick)

    def settle(self) -> None:
        """Deliver the duplicated ticks (see :meth:`trade`); nothing else is pending, ever."""
        late, self._late = self._late, []
        for tick in late:
            self._call(lambda tick=tick: self.venue.on_tick(tick))
        super().settle()

    def partial_fill(self, accepted: OrderAccepted, price: Decimal, sizes: list[int]) -> None:
        """Prints of ``sizes`` contracts trading through ``price`` with the venue's opt-in partial
        fills on (``runtime.partial_fills``: a fill is at most the print's size); off by default."""
        [order] = [o for o in self.venue.open_orders() if o.client_order_id == accepted.client_order_id]
        through = price - TICK if order.side is Side.BUY else price + TICK
        self.venue.broker.partial_fills = True
        try:
            for size in sizes:
                self.trade(through, size)
        finally:
            self.venue.broker.partial_fills = False

    def lose_connection(self, during: Callable[[], None]) -> None:
        """The simulated venue has no connection: its loss is a process restart. ``during`` runs on
        the old venue, then a new :class:`SimulatedVenue` is restored from the same state store."""
        during()
        self.restart()

    def restart(self) -> None:
        """A new :class:`SimulatedVenue` restored from the same state store (Redis)."""
        self.venue = SimulatedVenue(self.store, slippage_ticks=self.slippage_ticks, fill_on_touch=False)


class ProjectXDriver(Driver):
    """ProjectXBroker over the sandbox gateway (manual mode, fresh per test)."""

    name = "projectx"
    slippage_ticks = 0

    def __init__(self) -> None:
        super().__init__()
        self.gw = SandboxGateway(SandboxConfig(speed=0, port=0, ping_interval_s=0.2, client_timeout_s=2.0,
                                               answer_delay_s=ANSWER_DELAY_S))
        self.gw.start()
        self.client = ProjectXClient(self.gw.base_url, "sandbox", "sandbox-key", backoff_base_s=0.01)
        self.contract = self.client.resolve_front_month(INSTRUMENT).id
        self.brokers: list[ProjectXBroker] = []
        self.restart()
        self.t0 = self.gw.now_ns()
        self._synthetic = itertools.count(590_000_001)  # ids the sandbox never issues (its trades: 500000001+)
        self._drop_at_next_print = False

    def now(self) -> int:
        return self.gw.now_ns()

    def restart(self) -> None:
        """Stop the broker (if any) and start a new one on the same account: it knows our orders
        only from the gateway (REST, ``customTag``) and the user hub."""
        if self.brokers:
            self.brokers[-1].stop()
        self.venue = ProjectXBroker(self.client, ACCOUNT, {INSTRUMENT: self.contract}, hub_url=self.gw.base_url,
                                    on_reconcile_needed=self.reconciliations.append, hub_options=HUB_OPTIONS,
                                    flatten_verify_s=3.0)
        self.brokers.append(self.venue)
        self.venue.set_event_sink(self._inbox.put)
        self.venue.start()
        assert self.venue.hub.wait_connected(5)

    def submit(self, intent: OrderIntent, *, duplicate: bool = False, disorder: bool = False) -> list:
        """``duplicate``: the user-hub events of the place (order Open, and for a marketable order
        order Filled, trade, position, account) are each delivered twice; ``disorder``: those 5
        are delivered in reverse (the fill before the order's accept), racing the REST answer."""
        if duplicate:
            self.gw.faults.duplicate_events(5)
        if disorder:
            self.gw.faults.reorder_events(5)
        return super().submit(intent)

    def trade(self, price: Decimal, size: int = 1, *, duplicate: bool = False, disorder: bool = False) -> None:
        """The sandbox's exchange trades at ``price``. ``duplicate``: the fill's 4 user events
        (order Filled, trade, position, account) are each delivered twice; ``disorder``: reversed
        (the trade before the order's Filled status)."""
        if duplicate:
            self.gw.faults.duplicate_events(4)
        if disorder:
            self.gw.faults.reorder_events(4)
        drop, self._drop_at_next_print = self._drop_at_next_print, False
        self.gw.print_trade(INSTRUMENT, price, size, next(self._seq), drop_user_hub=drop)

    def partial_fill(self, accepted: OrderAccepted, price: Decimal, sizes: list[int]) -> None:
        """The sandbox's exchange never fills partially (docs/sandbox.md, "Not modelled"), so the
        half-trades are pushed over the real user hub as the gateway sends them (one
        ``GatewayUserTrade`` per part, ids outside the sandbox's range); the sandbox's own book
        does not see them (its REST searches do not show these fills)."""
        for size in sizes:
            ts = (self.gw.now_ns() // 1000 + 1000) * 1000
            self.gw.publish_user_event(ACCOUNT, "trade", {
                "id": next(self._synthetic), "accountId": ACCOUNT, "contractId": self.contract,
                "creationTimestamp": iso(ts), "price": price, "profitAndLoss": None, "fees": Decimal("0.61") * size,
                "commissions": Decimal(0), "side": 0, "size": size, "voided": False,
                "orderId": int(accepted.venue_order_id)}, EventAction.CREATE, clock_ns=ts)

    def lose_connection(self, during: Callable[[], None]) -> None:
        """Abort the user hub's socket (the sandbox's ``drop_connections`` fault) and run ``during``
        in the gap: a print in ``during`` aborts the socket in the same loop turn as its fills
        (``SandboxGateway.print_trade``), otherwise the socket is aborted after ``during``. Returns once the
        hub is back and has asked for a reconciliation."""
        connects = self.venue.hub.connects
        self._drop_at_next_print = True
        during()
        if self._drop_at_next_print:  # ``during`` printed nothing
            self._drop_at_next_print = False
            self.gw.faults.drop_connections(hub="user")
        assert wait(lambda: self.venue.hub.connects > connects and self.venue.hub.connected, 5)
        assert wait(lambda: any("reconnected" in r for r in self.reconciliations))

    def settle(self) -> None:
        """A barrier through the user hub: push a status event of an order that is not ours (the
        broker ignores it, but takes its time as its ``last_ts``) and wait until the broker's event
        worker reached it; the hub and the worker keep order, so every earlier event is handled."""
        marker = (max(self.venue.last_ts, self.gw.now_ns()) // 1000 + 1) * 1000
        self.gw.publish_user_event(ACCOUNT, "order", {
            "id": 199_999_999, "accountId": ACCOUNT, "contractId": self.contract, "creationTimestamp": iso(marker),
            "updateTimestamp": iso(marker), "status": 3, "type": 1, "side": 0, "size": 1, "limitPrice": BASE,
            "fillVolume": 0, "customTag": None}, EventAction.DELETE)
        assert wait(lambda: self.venue.last_ts >= marker), "the user hub barrier was not reached"
        armed = self.gw.faults.state()
        assert armed["duplicate_events"] == armed["reorder_events"] == 0, f"faults left unused: {armed}"
        super().settle()

    def close(self) -> None:
        for broker in self.brokers:
            broker.stop()
        self.client.close()
        self.gw.stop()


@pytest.fixture(params=["simulated", "projectx"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    d: Driver = SimulatedDriver(request.getfixturevalue("store")) if request.param == "simulated" else ProjectXDriver()
    try:
        yield d
    finally:
        d.close()


# --------------------------------------------------------------------------- scenarios

def working(d: Driver) -> dict[str, OrderIntent]:
    """The venue's open orders by client order id."""
    return {o.client_order_id: o for o in d.venue.open_orders()}


def position(d: Driver) -> int:
    p = d.venue.positions().get(INSTRUMENT)
    return p.qty if p else 0


def test_both_adapters_implement_the_port(driver):
    assert isinstance(driver.venue, ExecutionVenue)
    assert driver.venue.matches_ticks is (driver.name == "simulated")


def test_limit_order_rests_then_fills_when_the_market_trades_through(driver):
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, limit=px(-4))
    out = d.submit(buy)
    assert [type(e) for e in out] == [OrderAccepted]
    assert working(d)[buy.client_order_id].limit_price == px(-4)
    d.trade(px(-4))  # a print at the limit does not fill (both venues fill when traded through)
    d.settle()
    assert d.of(Fill) == [] and buy.client_order_id in working(d)
    d.trade(px(-5))
    assert d.wait_for(lambda: d.of(Fill))
    d.settle()
    [fill] = d.of(Fill)
    assert (fill.client_order_id, fill.side, fill.qty, fill.price, fill.leaves_qty) == \
        (buy.client_order_id, Side.BUY, 1, px(-4), 0)
    assert fill.venue_order_id == out[0].venue_order_id
    assert working(d) == {}
    assert d.venue.positions()[INSTRUMENT].qty == 1 and d.venue.positions()[INSTRUMENT].avg_price == px(-4)
    assert [f.trade_id for f in d.venue.fills_since(d.t0)] == [fill.trade_id]


def test_market_order_fills_at_the_printed_price_within_slippage(driver):
    d = driver
    d.trade(px(2))
    slip = d.slippage_ticks * TICK
    buy, sell = d.intent(Side.BUY, OrderType.MARKET, qty=2), d.intent(Side.SELL, OrderType.MARKET, qty=1)
    assert isinstance(d.submit(buy)[0], OrderAccepted)
    assert isinstance(d.submit(sell)[0], OrderAccepted)
    d.after_arrival(px(2))
    assert d.wait_for(lambda: len(d.of(Fill)) == 2)
    d.settle()
    [b] = d.of(Fill, buy.client_order_id)
    [s] = d.of(Fill, sell.client_order_id)
    assert px(2) <= b.price <= px(2) + slip and (b.qty, b.leaves_qty) == (2, 0)
    assert px(2) - slip <= s.price <= px(2) and (s.qty, s.leaves_qty) == (1, 0)
    assert position(d) == 1 and working(d) == {}


def test_stop_order_triggers_at_or_beyond_its_price(driver):
    d = driver
    d.trade(BASE)
    stop = d.intent(Side.BUY, OrderType.STOP, qty=1, stop=px(4))
    assert isinstance(d.submit(stop)[0], OrderAccepted)
    assert working(d)[stop.client_order_id].stop_price == px(4)
    d.trade(px(3))
    d.settle()
    assert d.of(Fill) == []
    d.trade(px(5))  # through the stop
    assert d.wait_for(lambda: d.of(Fill))
    [fill] = d.of(Fill)
    assert px(5) <= fill.price <= px(5) + d.slippage_ticks * TICK and fill.leaves_qty == 0
    assert working(d) == {} and position(d) == 1


def test_cancel_of_a_working_order_and_of_unknown_or_finished_ones(driver):
    d = driver
    d.trade(BASE)
    rest = d.intent(Side.SELL, limit=px(8))
    d.submit(rest)
    d.cancel(rest.client_order_id)
    d.settle()
    assert d.for_order(rest.client_order_id) == ["OrderAccepted", "OrderCancelled"]  # returned or via the sink, once
    assert working(d) == {}
    assert d.cancel(rest.client_order_id) == []  # already cancelled
    assert d.cancel("grid-MES-1-999") == []  # never placed
    filled = d.intent(Side.BUY, OrderType.MARKET)
    d.submit(filled)
    d.after_arrival(BASE)
    assert d.wait_for(lambda: d.of(Fill, filled.client_order_id))
    assert d.cancel(filled.client_order_id) == []  # filled
    d.settle()
    assert d.of(OrderCancelled) == d.of(OrderCancelled, rest.client_order_id)
    d.trade(px(9))  # nothing cancelled fills
    d.settle()
    assert len(d.of(Fill)) == 1 and position(d) == 1


def test_modify_price_then_fill_at_the_new_price(driver):
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, limit=px(-8))
    d.submit(buy)
    out = d.modify(buy.client_order_id, limit_price=px(-4))
    assert [type(e) for e in out] == [OrderModified]
    assert (out[0].client_order_id, out[0].limit_price, out[0].qty, out[0].stop_price) == \
        (buy.client_order_id, px(-4), None, None)
    assert working(d)[buy.client_order_id].limit_price == px(-4)
    d.trade(px(-5))  # would not reach the old limit
    assert d.wait_for(lambda: d.of(Fill))
    d.settle()
    [fill] = d.of(Fill)
    assert (fill.client_order_id, fill.price, fill.qty, fill.leaves_qty) == (buy.client_order_id, px(-4), 1, 0)
    assert d.for_order(buy.client_order_id) == ["OrderAccepted", "OrderModified", "Fill"]
    assert d.modify(buy.client_order_id, limit_price=px(-6)) == []  # filled: nothing to modify


def test_modify_qty_then_fill_the_new_size(driver):
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, qty=1, limit=px(-4))
    d.submit(buy)
    out = d.modify(buy.client_order_id, qty=3)
    assert [(type(e), e.qty) for e in out] == [(OrderModified, 3)]
    assert working(d)[buy.client_order_id].qty == 3
    d.trade(px(-5), size=3)
    assert d.wait_for(lambda: d.of(Fill))
    d.settle()
    [fill] = d.of(Fill)
    assert (fill.qty, fill.price, fill.leaves_qty) == (3, px(-4), 0)
    assert position(d) == 3


def test_modify_that_makes_the_order_marketable_fills_at_once(driver):
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, limit=px(-4))
    d.submit(buy)
    out = d.modify(buy.client_order_id, limit_price=px(1))
    assert isinstance(out[0], OrderModified)
    d.after_arrival(BASE)
    assert d.wait_for(lambda: d.of(Fill))
    d.settle()
    [fill] = d.of(Fill)
    # marketable: the last print (gateway) or the next one (simulated), never worse than the limit
    assert BASE <= fill.price <= min(BASE + d.slippage_ticks * TICK, px(1))
    assert d.for_order(buy.client_order_id) == ["OrderAccepted", "OrderModified", "Fill"]


def test_modify_down_to_a_marketable_size_fills_the_new_size(driver):
    """Size and price changed at once so that the order fills at once: the fill counts against the
    new size (nothing left). ProjectX: the fill's hub event usually arrives before the modify's
    answer (``ANSWER_DELAY_S``); the broker holds it until the answer settled the size."""
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, qty=3, limit=px(-4))
    d.submit(buy)
    out = d.modify(buy.client_order_id, qty=1, limit_price=px(1))
    assert (type(out[0]), out[0].qty, out[0].limit_price) == (OrderModified, 1, px(1))
    d.after_arrival(BASE)
    assert d.wait_for(lambda: d.of(Fill))
    d.settle()
    [fill] = d.of(Fill)
    assert (fill.qty, fill.leaves_qty) == (1, 0) and BASE <= fill.price <= px(1)
    assert d.for_order(buy.client_order_id) == ["OrderAccepted", "OrderModified", "Fill"]
    assert working(d) == {} and position(d) == 1
    assert d.cancel(buy.client_order_id) == []  # filled


def test_a_modified_order_survives_a_restart(driver):
    """After a restart the venue shows the order as modified and fills it at its new size and
    price, under its client order id. Simulated: restored from Redis. ProjectX: a new broker learns
    the order from the gateway (``Order/v2/query``, ``customTag``)."""
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, qty=1, limit=px(-8))
    d.submit(buy)
    assert [type(e) for e in d.modify(buy.client_order_id, qty=2, limit_price=px(-4))] == [OrderModified]
    d.restart()
    o = working(d)[buy.client_order_id]
    assert (o.strategy_id, o.side, o.order_type, o.qty, o.limit_price) == ("grid-MES", Side.BUY, OrderType.LIMIT, 2,
                                                                          px(-4))
    d.trade(px(-5), size=2)
    assert d.wait_for(lambda: d.of(Fill))
    d.settle()
    [fill] = d.of(Fill)
    assert (fill.client_order_id, fill.strategy_id, fill.qty, fill.price, fill.leaves_qty) == \
        (buy.client_order_id, "grid-MES", 2, px(-4), 0)
    assert working(d) == {} and position(d) == 2


def test_a_refused_modify_leaves_the_order_working_unchanged(driver):
    """A modify the venue refuses gives no event at all (not an OrderRejected, which would end an
    order that is still working), and the order keeps its size and price. ProjectX: the invalid
    values are refused before sending, a limit price on a stop order by the gateway (Order/modify
    code 3)."""
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, qty=2, limit=px(-4))
    stop = d.intent(Side.SELL, OrderType.STOP, stop=px(-10))
    d.submit(buy)
    d.submit(stop)
    before = working(d)
    assert d.modify(buy.client_order_id, limit_price=Decimal("6599.1")) == []  # off the tick grid
    assert d.modify(buy.client_order_id, qty=0) == []
    assert d.modify(buy.client_order_id) == []  # nothing to change
    assert d.modify(stop.client_order_id, limit_price=px(-12)) == []  # a limit price on a stop order
    assert d.modify("grid-MES-1-999", qty=2) == []  # unknown
    d.settle()
    assert working(d) == before
    assert d.of(OrderModified) == [] and d.of(OrderRejected) == [] and d.of(OrderCancelled) == []
    d.trade(px(-5), size=2)
    assert d.wait_for(lambda: d.of(Fill))
    assert [(f.client_order_id, f.qty, f.price) for f in d.of(Fill)] == [(buy.client_order_id, 2, px(-4))]


def test_partial_fills_count_down_leaves_qty(driver):
    d = driver
    d.trade(BASE)
    buy = d.intent(Side.BUY, qty=2, limit=px(-4))
    [accepted] = d.submit(buy)
    d.partial_fill(accepted, px(-4), [1, 1])
    assert d.wait_for(lambda: len(d.of(Fill)) == 2)
    d.settle()
    assert [(f.qty, f.leaves_qty, f.price) for f in d.of(Fill)] == [(1, 1, px(-4)), (1, 0, px(-4))]
    assert d.for_order(buy.client_order_id) == ["OrderAccepted", "Fill", "Fill"]
    assert d.cancel(buy.client_order_id) == []  # filled


def test_one_move_crossing_several_resting_limits_fills_all_of_them(driver):
    d = driver
    d.trade(BASE)
    buys = [d.intent(Side.BUY, limit=px(-k)) for k in (1, 2, 3)]
    far = d.intent(Side.BUY, limit=px(-6))
    sell = d.intent(Side.SELL, limit=px(5))
    for o in (*buys, far, sell):
        assert isinstance(d.submit(o)[0], OrderAccepted)
    d.trade(px(-4), size=3)
    assert d.wait_for(lambda: len(d.of(Fill)) == 3)
    d.settle()
    assert sorted((f.client_order_id, f.price) for f in d.of(Fill)) == \
        sorted((o.client_order_id, o.limit_price) for o in buys)
    assert set(working(d)) == {far.client_order_id, sell.client_order_id}
    assert d.venue.positions()[INSTRUMENT].qty == 3
    assert d.venue.positions()[INSTRUMENT].avg_price == px(-2)


def test_duplicate_events_are_not_counted_twice(driver):
    """What is delivered twice counts once. Simulated: a print is delivered again later, after the
    market moved back and a new order rests where that print would fill it (ticks at or before
    the last processed one are ignored). ProjectX: the sandbox delivers each user-hub event of a
    fill, and of a market order's place, twice (fault ``duplicate_events``); the broker
    de-duplicates by trade id and by order state."""
    d = driver
    d.trade(BASE)
    rest = d.intent(Side.BUY, qty=2, limit=px(-4))
    d.submit(rest)
    d.trade(px(-5), size=2, duplicate=True)
    assert d.wait_for(lambda: d.of(Fill))
    d.trade(BASE)
    again = d.intent(Side.BUY, limit=px(-4))  # the px(-5) print, if applied again, would fill it
    market = d.intent(Side.SELL, OrderType.MARKET)
    d.submit(again)
    d.submit(market, duplicate=True)
    d.after_arrival(BASE)
    assert d.wait_for(lambda: len(d.of(Fill)) == 2)
    d.settle()  # every duplicate is in
    assert sorted(f.client_order_id for f in d.of(Fill)) == sorted([rest.client_order_id, market.client_order_id])
    assert len(d.of(OrderAccepted)) == 3
    assert list(working(d)) == [again.client_order_id]
    assert position(d) == 1
    assert len(d.venue.fills_since(d.t0)) == 2


def test_out_of_order_events_give_one_consistent_history(driver):
    """Simulated: it answers every call synchronously, so its events cannot overtake each other;
    what can come late is its input, a tick older than the last one processed, which it must
    ignore. ProjectX: the sandbox reverses the user-hub events of a fill (fault
    ``reorder_events``): the trade arrives before the order's Filled status, and for a market order
    before the hub's own report of the accept, racing the REST answer of the place."""
    d = driver
    d.trade(BASE)
    rest = d.intent(Side.BUY, limit=px(-4))
    d.submit(rest)
    d.trade(px(-5), disorder=True)
    assert d.wait_for(lambda: d.of(Fill))
    market = d.intent(Side.SELL, OrderType.MARKET)
    d.submit(market, disorder=True)
    d.after_arrival(px(-5))
    assert d.wait_for(lambda: len(d.of(Fill)) == 2)
    d.settle()
    for o in (rest, market):
        assert d.for_order(o.client_order_id) == ["OrderAccepted", "Fill"]
    assert working(d) == {} and position(d) == 0
    assert [f.client_order_id for f in d.venue.fills_since(d.t0)] == [rest.client_order_id, market.client_order_id]


@pytest.mark.parametrize("case", ["off-tick limit", "unknown instrument", "qty 0", "stop without price",
                                  "duplicate id"])
def test_invalid_orders_are_rejected_and_nothing_works(driver, case):
    d = driver
    d.trade(BASE)
    first = d.intent(Side.BUY, limit=px(-8))
    d.submit(first)
    bad = {"off-tick limit": lambda: d.intent(Side.BUY, limit=Decimal("6599.10")),
           "unknown instrument": lambda: d.intent(Side.BUY, OrderType.MARKET, instrument="XYZ"),
           "qty 0": lambda: d.intent(Side.BUY, OrderType.MARKET, qty=0),
           "stop without price": lambda: d.intent(Side.BUY, OrderType.STOP),
           "duplicate id": lambda: d.intent(Side.SELL, OrderType.MARKET, coid=first.client_order_id)}[case]()
    out = d.submit(bad)
    assert [type(e) for e in out] == [OrderRejected] and out[0].client_order_id == bad.client_order_id
    assert out[0].reason
    d.trade(px(-12))  # would have filled a market or stop order
    d.settle()
    fills = d.of(Fill)
    assert [f.client_order_id for f in fills] == [first.client_order_id]  # only the valid one filled
    assert working(d) == {} and position(d) == 1


def test_reconnect_and_reconciliation(driver):
    """A fill while the venue's connection is down is known after recovery. ProjectX: the user hub
    is dropped (sandbox fault), the order fills meanwhile (its hub events are lost: nothing is
    replayed after a gap), the hub reconnects and asks for a reconciliation; REST shows the fill.
    Simulated: no connection to lose (``on_reconcile_needed`` does not apply); its recovery is a
    restart, a new venue restored from the same Redis, which shows the same orders, position and
    fills and goes on matching."""
    d = driver
    d.trade(BASE)
    gone = d.intent(Side.BUY, limit=px(-4))
    stays = d.intent(Side.SELL, qty=2, limit=px(8))
    d.submit(gone)
    d.submit(stays)
    before = d.venue
    d.lose_connection(lambda: d.trade(px(-5)))
    if d.name == "projectx":
        assert d.venue is before and any("reconnected" in r for r in d.reconciliations)
        d.settle()
        assert d.of(Fill) == []  # the hub never delivered it: the gap
    else:
        assert d.venue is not before
    assert working(d) == {stays.client_order_id: working(d)[stays.client_order_id]}
    assert (working(d)[stays.client_order_id].qty, working(d)[stays.client_order_id].limit_price) == (2, px(8))
    assert d.venue.positions()[INSTRUMENT].qty == 1
    [fill] = d.venue.fills_since(d.t0)
    assert (fill.client_order_id, fill.strategy_id, fill.qty, fill.price, fill.leaves_qty) == \
        (gone.client_order_id, "grid-MES", 1, px(-4), 0)
    snap = d.venue.snapshot(d.now())
    assert [o.client_order_id for o in snap.working] == [stays.client_order_id]
    assert [(p.instrument, p.qty) for p in snap.positions] == [(INSTRUMENT, 1)]
    assert [f.trade_id for f in snap.fills] == [fill.trade_id]
    # after recovery, events flow again
    d.trade(px(9), size=2)
    assert d.wait_for(lambda: d.of(Fill, stays.client_order_id))
    d.settle()
    assert [(f.qty, f.price) for f in d.of(Fill, stays.client_order_id)] == [(2, px(8))]
    assert position(d) == -1 and working(d) == {}
