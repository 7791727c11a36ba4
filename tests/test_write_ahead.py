"""Order write-ahead (batched, off the router's thread) and the live broker's request pool,
against a real redis-server and the real paper venue."""

from __future__ import annotations

import queue
import threading
from decimal import Decimal

import pytest

from actors.core import wait_until
from domain.execution.router import OrderRouter
from domain.ports import WriteAheadError
from infra.persistence import WriteAhead
from infra.projectx.venue_handler import ProjectXVenueHandler, VenueCallDone
from infra.venues.handler import VenueHandler
from infra.venues.simulated import SimulatedVenue
from domain.handler import BROKER, ROUTER
from domain.messages import (CancelOrder, OrderAccepted, OrderIntent, OrderRejected, OrderType, Side,
                             TradeTick)
from infra.state_store import StateStore

D = Decimal


def _intent(i: int, price: str = "5000.00") -> OrderIntent:
    return OrderIntent(f"grid-MES-1-{i}", "grid-MES", "MES", Side.BUY, 1, OrderType.LIMIT, 1_000 + i,
                       limit_price=D(price))


def test_router_hands_orders_over_and_the_broker_sends_them_only_once_written(store: StateStore) -> None:
    """Ten orders of one decision: the router does not wait for Redis; the broker's wait returns
    once each order's record is there, and the ten took fewer MULTI/EXECs than orders."""
    wa = WriteAhead(store)
    router = OrderRouter(store, None, wa)
    gate = threading.Lock()
    gate.acquire()
    real = store.save_new_orders

    def held_then_saved(orders):  # the first write waits until all ten are queued: one batch after it
        with gate:
            return real(orders)

    store.save_new_orders = held_then_saved  # type: ignore[method-assign]
    outs = [router.handle(_intent(i)) for i in range(10)]
    assert all(out[0] == (BROKER, _intent(i)) for i, out in enumerate(outs))
    assert store.load_order("grid-MES-1-9") is None  # not written yet, and the router went on
    gate.release()
    broker = VenueHandler(SimulatedVenue(None), wa)
    events = [e for i in range(10) for _, e in broker.handle(_intent(i))]
    assert [type(e) for e in events] == [OrderAccepted] * 10
    assert all(store.load_order(f"grid-MES-1-{i}")["status"] == "SUBMITTED" for i in range(10))
    assert wa.orders == 10 and wa.batches <= 2, (wa.orders, wa.batches)


def test_an_order_whose_write_failed_is_rejected_not_sent(redis_url: str) -> None:
    dead = StateStore.from_url("redis://127.0.0.1:1/0", "test:dead")  # nothing listens on port 1
    wa = WriteAhead(dead)
    OrderRouter(dead, None, wa).handle(_intent(1))
    venue = SimulatedVenue(None)
    out = VenueHandler(venue, wa).handle(_intent(1))
    assert len(out) == 1 and isinstance(out[0][1], OrderRejected) and "write-ahead failed" in out[0][1].reason
    assert venue.broker.working_orders() == []  # never reached the venue


def _held_writes(store: StateStore) -> threading.Lock:
    """Make ``store.save_new_orders`` wait until the returned (held) lock is released."""
    gate = threading.Lock()
    gate.acquire()
    real = store.save_new_orders

    def held_then_saved(orders):
        with gate:
            return real(orders)

    store.save_new_orders = held_then_saved  # type: ignore[method-assign]
    return gate


class _SplitCallVenue(SimulatedVenue):
    """A simulated venue with the live path's split place call: ``begin_submit`` records the thread
    it runs on and whether the order's record was in Redis by then."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(None)
        self.record_store = store
        self.begun: list[tuple[str, str, bool]] = []

    def begin_submit(self, intent: OrderIntent, ts_ns: int):
        written = self.record_store.load_order(intent.client_order_id) is not None
        self.begun.append((intent.client_order_id, threading.current_thread().name, written))
        return lambda: self.submit(intent, ts_ns)


def test_the_venue_adapter_sends_a_place_only_once_its_record_is_written(store: StateStore) -> None:
    """The write-ahead thread only writes; the adapter's own sender thread sends each place, in
    decision order, once the record is in Redis."""
    venue = _SplitCallVenue(store)
    venue.on_tick(TradeTick("MES", 1, D("5001.00"), 1))
    mailbox: queue.Queue = queue.Queue()
    wa = WriteAhead(store)
    gate = _held_writes(store)
    router = OrderRouter(store, None, wa)
    broker = ProjectXVenueHandler(venue, post=mailbox.put, workers=2, write_ahead=wa)
    for i in range(3):
        router.handle(_intent(i))
        assert broker.handle(_intent(i)) == []
    assert venue.begun == []  # nothing written yet: nothing sent
    gate.release()
    accepted = []
    while len(accepted) < 3:
        accepted += [e.client_order_id for _, e in broker.handle(mailbox.get(timeout=5))]
    assert venue.begun == [(f"grid-MES-1-{i}", "px-send", True) for i in range(3)]
    assert sorted(accepted) == [f"grid-MES-1-{i}" for i in range(3)]
    broker.close()


def test_an_order_whose_write_failed_or_came_too_late_is_never_sent(store: StateStore) -> None:
    dead = StateStore.from_url("redis://127.0.0.1:1/0", "test:dead")  # nothing listens on port 1
    failed = WriteAhead(dead)
    OrderRouter(dead, None, failed).handle(_intent(1))
    with pytest.raises(WriteAheadError, match="not written to Redis"):
        failed.wait("grid-MES-1-1")
    wa = WriteAhead(store)
    gate = _held_writes(store)
    OrderRouter(store, None, wa).handle(_intent(2))
    with pytest.raises(WriteAheadError, match="within 0.2 s"):
        wa.wait("grid-MES-1-2", timeout_s=0.2)  # the adapter rejects the order and never sends it
    gate.release()
    assert wait_until(lambda: wa.orders == 1, timeout=3)
    wa.wait("never-queued")  # an order never queued here: nothing to wait for


def test_live_broker_pool_answers_through_the_mailbox_and_a_cancel_follows_its_place(store: StateStore) -> None:
    venue = SimulatedVenue(None)
    venue.on_tick(TradeTick("MES", 1, D("5001.00"), 1))
    mailbox: queue.Queue = queue.Queue()
    wa = WriteAhead(store)
    router = OrderRouter(store, None, wa)
    broker = ProjectXVenueHandler(venue, post=mailbox.put, workers=4, write_ahead=wa)
    for i in range(6):
        router.handle(_intent(i))
        assert broker.handle(_intent(i)) == []  # answered later, through the mailbox
    assert broker.handle(CancelOrder("grid-MES-1-5", "grid-MES", 2_000, "rebuild")) == []
    answers: list = []
    while len(answers) < 7:
        done = mailbox.get(timeout=5)
        assert isinstance(done, VenueCallDone)
        answers += [e for _, e in broker.handle(done) if _ == ROUTER]
    kinds = [(type(e).__name__, e.client_order_id) for e in answers]
    assert sorted(c for k, c in kinds if k == "OrderAccepted") == sorted(f"grid-MES-1-{i}" for i in range(6))
    assert kinds.index(("OrderCancelled", "grid-MES-1-5")) > kinds.index(("OrderAccepted", "grid-MES-1-5"))
    assert sorted(o.client_order_id for o in venue.broker.working_orders()) == [f"grid-MES-1-{i}" for i in range(5)]


def test_a_fill_of_an_order_sent_before_a_restart_keeps_its_purpose_in_the_trades_csv(store: StateStore) -> None:
    """The router remembers purposes in memory; a restarted router reads the order's record."""
    from domain.messages import Fill
    from infra.trade_log import TradeLog
    tp = OrderIntent("grid-MES-1-7", "grid-MES", "MES", Side.SELL, 1, OrderType.LIMIT, 1_000,
                     limit_price=D("5010.00"), reduce_only=True, purpose="grid-tp")
    OrderRouter(store, None).handle(tp)  # written, sent ... and the process restarts
    log = TradeLog(None)
    restarted = OrderRouter(store, log)
    fill = Fill("grid-MES-1-7", "grid-MES", "T7", "MES", Side.SELL, 1, D("5010.00"), D("0.37"), 0, 2_000)
    assert restarted.handle(fill)
    import csv
    import io
    row = list(csv.DictReader(io.StringIO(log.text())))[-1]
    assert (row["client_order_id"], row["purpose"]) == ("grid-MES-1-7", "grid-tp")


def test_closing_the_live_broker_finishes_calls_in_flight_then_its_threads_exit(store: StateStore) -> None:
    """What the actor does when it stops or crashes (``HandlerActor`` calls ``close()``): nothing
    handed to the pool is dropped, and the pool's threads do not outlive the handler."""
    venue = SimulatedVenue(None)
    venue.on_tick(TradeTick("MES", 1, D("5001.00"), 1))
    mailbox: queue.Queue = queue.Queue()
    before = set(threading.enumerate())
    broker = ProjectXVenueHandler(venue, post=mailbox.put, workers=2)
    for i in range(5):
        assert broker.handle(_intent(i)) == []
    pool_threads = [t for t in set(threading.enumerate()) - before if t.name.startswith("px-orders")]
    broker.close()
    answers = [e for _ in range(5) for _, e in broker.handle(mailbox.get(timeout=5))]
    assert sorted(e.client_order_id for e in answers if isinstance(e, OrderAccepted)) == \
        [f"grid-MES-1-{i}" for i in range(5)]
    for t in pool_threads:
        t.join(timeout=5)
    assert pool_threads and not any(t.is_alive() for t in pool_threads)


def test_the_live_broker_starts_all_its_pool_threads_before_the_first_order() -> None:
    """A thread pool starts its threads one per call: the first decision's orders would start
    them on their own path."""
    before = set(threading.enumerate())
    broker = ProjectXVenueHandler(SimulatedVenue(None), post=lambda ev: None, workers=3)

    def started() -> list[threading.Thread]:
        return [t for t in set(threading.enumerate()) - before if t.name.startswith("px-orders")]

    assert wait_until(lambda: len(started()) == 3, timeout=5)
    broker.close()
    for t in started():
        t.join(timeout=5)
