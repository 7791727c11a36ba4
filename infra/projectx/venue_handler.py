"""The ProjectX venue hosted as the broker actor: split order calls and a request pool.

:class:`ProjectXVenueHandler` writes each ``Order/place`` as soon as the order's record is stored
and each ``Order/cancel`` at once, and reads the answers on a pool of threads, which post them back
into the broker actor's mailbox (:class:`VenueCallDone`). Design record:
docs/decisions/0010-orders-written-back-to-back.md.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from loguru import logger

from domain.handler import ROUTER, Out
from domain.messages import CancelOrder, Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderRejected, QuoteTick, TradeTick
from domain.ports import WriteAheadError
from infra.venues.handler import VenueHandler

@dataclass(frozen=True, slots=True)
class VenueCallDone:
    """The events of an order call made on the broker's request pool (``OrderAccepted`` /
    ``OrderRejected`` / held fills of a place, ``OrderCancelled`` of a cancel), posted back into the
    broker actor's mailbox, which forwards them to the router."""

    events: tuple


class ProjectXVenueHandler(VenueHandler):
    """Broker actor over :class:`ProjectXBroker`: orders and cancels in; the venue's asynchronous
    events (posted into this mailbox by the broker's event sink) out to the router. Ticks are
    ignored (the gateway matches orders itself).

    With ``post`` (a function that tells this actor a message), each ``Order/place`` and
    ``Order/cancel`` is made in two halves (``ProjectXBroker.begin_submit`` / ``begin_cancel``):

    - the request is written as soon as it may be, without waiting for any answer: a place by
      this adapter's sender thread as soon as the order's record is stored (never before: it waits
      on the write-ahead queue, in decision order), a cancel by this actor's thread. The orders
      of one decision (a grid rebuild: nine cancels, ten places) so leave back to back, and none
      waits for the answer to another; a pool making whole calls would hold the fifth order until
      the first answer, one network round trip to the real gateway
      (docs/decisions/0010-orders-written-back-to-back.md);
    - the answer is read on a pool of ``workers`` threads, and comes back as :class:`VenueCallDone`.

    A call that cannot be written without waiting (no idle warm connection, no rate-limit slot, a
    token refresh due, a venue order id still to look up) is made whole on the pool instead.
    Ordering rules kept: a cancel waits for the answer of its own order's place (it needs the venue
    order id); each call is sent once (order-changing calls are never retried); an order whose
    write-ahead failed or took over 5 s is rejected and never sent. A place answer and a user-hub
    fill of the same order can reach the router in either order: the router's mirror never moves a
    terminal order back (``StateStore``), risk accepts a late acknowledgement, strategies ignore it.
    Without ``post``, calls are made whole in the actor thread one after the other.
    """

    VENUE_EVENTS = (Fill, OrderAccepted, OrderRejected, OrderCancelled)
    WORKERS = 8
    """Pool threads: they read the answers of calls already written, and make the calls that could
    not be written at once (no idle connection, no rate-limit slot, a token refresh due) or wait
    for something (a cancel waiting for its order's place)."""
    WARM_CONNECTIONS = 16
    """REST connections kept open for order calls (:meth:`ProjectXClient.keep_warm`): a call is
    written at once only on an idle open connection, and a grid rebuild has up to ten places and
    nine cancels in flight together (with 12, two calls of a three-day benchmark had to wait)."""

    def __init__(self, venue: Any, post: Any | None = None, workers: int = WORKERS, write_ahead: Any | None = None) -> None:
        super().__init__(venue, write_ahead)
        self._post = post
        self._pool = (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="px-orders")
                      if post is not None and workers > 1 else None)
        self._placing: dict[str, Future] = {}
        self._sends: queue.SimpleQueue | None = None
        if self._pool is not None and write_ahead is not None:
            self._sends = queue.SimpleQueue()
            threading.Thread(target=self._send_loop, name="px-send", daemon=True).start()
        if self._pool is not None:
            # start every thread now (the pool starts them one per call otherwise, on the first
            # decision's order path): each waits until all are up, so each call starts a new one
            ready = threading.Barrier(workers)
            for _ in range(workers):
                self._pool.submit(ready.wait, 5.0)

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, VenueCallDone):
            return [(ROUTER, e) for e in msg.events]
        if isinstance(msg, self.VENUE_EVENTS):
            return [(ROUTER, msg)]
        if isinstance(msg, (TradeTick, QuoteTick)):
            return []  # not subscribed (the gateway matches on its own: matches_ticks False); harmless if sent
        if self._pool is not None and isinstance(msg, OrderIntent):
            send = self._first_half("submit", msg, max(msg.ts_ns, self.venue.last_ts))
            sent: Future = Future()
            if self._sends is not None:
                self._sends.put((msg.client_order_id, send, sent))  # sent once its record is stored
            else:
                sent.set_result(self._begin(send))
            fut = self._pool.submit(self._call, lambda: self._placed(msg, sent))
            self._placing[msg.client_order_id] = fut
            fut.add_done_callback(lambda _f, c=msg.client_order_id: self._placing.pop(c, None))
            return []
        if self._pool is not None and isinstance(msg, CancelOrder):
            placing = self._placing.get(msg.client_order_id)
            ts = max(msg.ts_ns, self.venue.last_ts)
            reason = msg.reason or "cancelled"
            if placing is not None and not placing.done():
                def cancel() -> list:
                    placing.result()  # submitted to the pool before this task: running or done
                    return self.venue.cancel(msg.client_order_id, ts, reason)

                self._pool.submit(self._call, cancel)
                return []
            result = self._begin(self._first_half("cancel", msg.client_order_id, ts, reason))
            if result is not None:
                self._pool.submit(self._call, result)
            return []
        return super().handle(msg)

    def close(self) -> None:
        """Called by the actor when it stops or crashes (:class:`actors.core.HandlerActor`): the pool
        takes no new calls and its threads exit once idle. Calls already handed to it still run
        and post their results (the restarted actor, registered under the same name, receives them),
        so a place or cancel in flight is never dropped."""
        if self._sends is not None:
            self._sends.put(None)  # after the places already queued: each is still sent
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _send_loop(self) -> None:
        """The sender thread: each place in decision order, once the write-ahead queue has stored
        its record (the orders of one batch are stored together, so they then leave back to back).
        An order whose record failed or took over 5 s is not sent; its waiter rejects it."""
        assert self._sends is not None and self.write_ahead is not None
        while True:
            item = self._sends.get()
            if item is None:
                return
            coid, send, sent = item
            try:
                self.write_ahead.wait(coid)
            except WriteAheadError as e:
                sent.set_exception(e)
                continue
            sent.set_result(self._begin(send))

    def _placed(self, intent: OrderIntent, sent: Future) -> list:
        """On a pool thread: wait until the place was sent (or its write-ahead failed: rejected),
        then read the answer."""
        try:
            result = sent.result()
        except WriteAheadError as e:
            return [self.not_written(intent, e)]
        return [] if result is None else result()

    def _first_half(self, call: str, *args: Any) -> Any:
        """``venue.begin_<call>(*args)`` as a function of no arguments; for a venue without the
        two-halves form (a paper venue in tests), the whole ``venue.<call>(*args)`` is the second
        half, made on the pool."""
        begin = getattr(self.venue, f"begin_{call}", None)
        whole = getattr(self.venue, call)
        return (lambda: begin(*args)) if begin is not None else (lambda: lambda: whole(*args))

    @staticmethod
    def _begin(begin: Any) -> Any:
        """Run a venue call's first half here (it writes the request if that needs no wait); its
        ``result()``, or None after an unexpected error (logged; the reconciler settles the order)."""
        try:
            return begin()
        except Exception as e:  # noqa: BLE001 - the broker's calls do not raise; keep the actor alive
            logger.exception("ProjectX order call failed unexpectedly: {}", e)
            return None

    def _call(self, fn: Any) -> None:
        """Run one venue call on a pool thread and post its events (the broker's calls do not
        raise; anything unexpected is logged and the reconciler settles the order)."""
        try:
            events = fn()
        except Exception as e:  # noqa: BLE001 - a pool thread has no one else to report to
            logger.exception("ProjectX order call failed unexpectedly: {}", e)
            return
        if events:
            self._post(VenueCallDone(tuple(events)))
