"""ProjectXBroker: the :class:`domain.ports.ExecutionVenue` port over the ProjectX REST API and user hub.

- **submit** places the order with ``customTag`` = client order id and returns at once:
  ``[OrderAccepted]`` on success, ``[OrderRejected(reason)]`` on a business rejection or when the
  request provably never got processed (HTTP 429, connection refused), ``[]`` on an ambiguous
  outcome (timeout, 5xx, Pending/Unknown code): the order stays pending and the reconciler decides
  (docs/reference/projectx-gateway.md#ambiguous-outcomes; NautilusTrader's ambiguous outcomes,
  docs/reference/reference-designs.md#nautilustrader). Success is never inferred from a returned
  ``orderId`` (docs/reference/projectx-gateway.md#brackets: a rejection can carry one).
- **fills and status changes** come from the user hub (GatewayUserOrder/Trade). They are handled
  on one worker thread (``px-broker-events``) and pushed into the event sink as domain events:
  de-duplicated by trade id, mapped to our client order ids through ``customTag`` (learned from
  place responses, order events, and ``Order/searchById`` when a fill arrives for an order not yet
  seen), and kept in order: events for an order whose place call is still in flight are held back
  and returned by ``submit`` right after its ``OrderAccepted``.
- **modify** sends ``Order/modify`` (absolute size / prices) for the venue order id and returns
  ``[OrderModified]`` once the gateway confirmed; hub events of that order arriving meanwhile are
  held and returned after it (a modify that makes the order marketable fills at once). A refused
  modify returns no event and leaves the order as it was (never an ``OrderRejected``, which would
  end the order).
- **snapshot** is REST truth for the reconciler: working orders from ``Order/v2/query`` (statuses
  1, 6, 7, 8, all pages), positions from ``Position/searchOpen``, fills from ``Trade/search`` over
  ``fills_lookback_s``, mapped to client ids via the orders' ``customTag``. Its three parts are
  also read alone: :meth:`ProjectXBroker.open_orders`, :meth:`~ProjectXBroker.positions`,
  :meth:`~ProjectXBroker.fills_since`.
- **flatten** cancels every working order and ``closeContract``s every open position using only
  REST (no actor, no hub needed), then checks the account is flat.
- **on_reconcile_needed(reason)** is called (from hub/worker threads) whenever the venue's state may
  have moved without us seeing it: user hub reconnect or logout, an ambiguous place, a voided fill,
  a fill for an order we did not place, a rejection for an order that then traded.

Order ids: untagged venue orders (placed by hand, or bracket children of someone else) appear as
``px-<orderId>`` with strategy ``external``; the fills of a ``closeContract`` issued by
:meth:`ProjectXBroker.flatten` are reported as ``emergency-<instrument>-<ts_ns>``/``emergency``
(like the paper venue's flatten).
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Mapping

from loguru import logger

from domain.instruments import get_instrument
from domain.messages import (BrokerSnapshot, Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderModified,
                             OrderRejected, PositionSnapshot, QuoteTick, TradeTick)
from domain.orders import bracket_parent
from domain.ports import EventSink
from infra.projectx import errors as pxe
from infra.projectx import mapping
from infra.projectx.hubs import UserHub
from infra.projectx.mapping import (EXTERNAL_STRATEGY, GatewayOrder, GatewayPosition, GatewayTrade, GwOrderStatus,
                                    GwOrderType)
from infra.projectx.rest import ProjectXClient

EMERGENCY_STRATEGY = "emergency"
"""Strategy id of the fills of :meth:`ProjectXBroker.flatten`'s position closes."""


def _utc(ts_ns: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ts_ns // 1000)


def _done(events: list) -> Callable[[], list]:
    """A ``result()`` of :meth:`ProjectXBroker.begin_submit` / ``begin_cancel`` settled without a call."""
    return lambda: events


@dataclass(slots=True)
class _Order:
    """What the broker knows about one venue order (ours or adopted)."""

    coid: str
    strategy_id: str
    instrument: str
    size: int
    venue_id: int | None = None
    inflight: bool = False  # Order/place not answered yet: hold hub events back
    accepted: bool = False  # OrderAccepted delivered
    terminal: bool = False  # cancelled / rejected / expired delivered, or fully filled
    base_filled: int = 0  # fill volume from before we knew the order (adopted), not in ``trades``
    trades: dict[int, int] = field(default_factory=dict)  # trade id -> contracts, each counted once
    status: GatewayOrder | None = None  # latest order update seen while in flight
    held: list[Fill] = field(default_factory=list)  # fills seen while in flight
    cancelling: bool = False  # an Order/cancel of it is in flight: a second one is not sent
    modifying: bool = False  # an Order/modify of it is in flight: hub events wait in ``deferred``
    deferred: list[Any] = field(default_factory=list)  # GatewayOrder / GatewayTrade seen while modifying

    @property
    def filled(self) -> int:
        """Contracts filled so far."""
        return self.base_filled + sum(self.trades.values())


CANCEL_ATTEMPTS = 3
"""Tries of a strategy's cancel that the gateway refused unprocessed (see :meth:`ProjectXBroker.cancel`)."""

STALE_CHECK_AFTER_S = 1.0
"""A cancel refused because the gateway no longer has the order working (``Order/cancel`` code 3
``Rejected``, or no working order with our tag) while our book still has it open asks for a
reconciliation this many seconds later, if the user hub has not settled the order by then (see
:meth:`ProjectXBroker.cancel`)."""

_RECLOSE_AFTER_S = 2.0
"""An emergency flatten closes a position again if it still shows this long after its accepted
close (an order that filled after its cancel reopened it)."""


class _Backoff:
    """Pause between the rounds of an emergency flatten: 0.2 s, or the gateway's ``Retry-After``
    after an HTTP 429, doubling after each refused call up to 2 s; never past ``deadline``
    (``time.monotonic`` seconds)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.delay = 0.2
        self.retry_after: float | None = None

    @staticmethod
    def retryable(e: pxe.ProjectXError) -> bool:
        """True for a call the gateway refused without processing it for a passing reason (HTTP
        429, connection refused): it can be sent again."""
        return isinstance(e, pxe.RateLimited) or (isinstance(e, pxe.RequestNotSent) and e.code is None)

    def note(self, e: pxe.ProjectXError) -> None:
        if self.retryable(e):
            self.delay = min(self.delay * 2, 2.0)
            if isinstance(e, pxe.RateLimited) and e.retry_after_s is not None:
                self.retry_after = e.retry_after_s

    def sleep(self) -> None:
        wait = self.retry_after if self.retry_after is not None else self.delay
        self.retry_after = None
        time.sleep(max(0.0, min(wait, self.deadline - time.monotonic())))


class ProjectXBroker:
    """Broker over one ProjectX account. Thread-safe.

    Args:
        client: the REST client (shared; thread-safe).
        account_id: the ProjectX account id (int).
        contracts: our instrument -> gateway contract id (``{"MES": "CON.F.US.MES.M26"}``), resolved
            beforehand with :meth:`ProjectXClient.resolve_front_month`. Tick sizes come from
            :mod:`domain.instruments`.
        hub_url: user hub host (``https://rtc.topstepx.com``); None runs without a hub (fills are then
            only learned through :meth:`snapshot`, e.g. for a flatten-only tool).
        on_reconcile_needed: ``f(reason)`` called when a REST reconciliation is due (see module doc).
        fills_lookback_s: how far back :meth:`snapshot` reads fills (seconds before its ``ts_ns``).
        flatten_verify_s: how long :meth:`flatten` keeps trying (and checking) until the account shows
            neither a position nor a working order, seconds (30: long enough to ride out a 429 storm of
            that length; giving up sooner could leave a position open).
        hub_options: extra keyword arguments for :class:`UserHub` (timeouts).

    Attributes:
        last_ts: the latest venue event time seen (ns UTC), or the last submit time.
        matches_ticks: False: the gateway matches orders itself (our market data is not needed).
        stats: counters (``ambiguous``, ``rejected``, ``unknown_fills``, ``modify_refused``...).
    """

    matches_ticks = False

    def __init__(self, client: ProjectXClient, account_id: int, contracts: Mapping[str, str], *,
                 hub_url: str | None = None, on_reconcile_needed: Callable[[str], None] | None = None,
                 fills_lookback_s: float = 24 * 3600.0, flatten_verify_s: float = 30.0,
                 hub_options: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self.account_id = account_id
        self.contracts = dict(contracts)
        self._instrument_of = {cid: inst for inst, cid in self.contracts.items()}
        for inst in self.contracts:
            get_instrument(inst)
        self._on_reconcile = on_reconcile_needed
        self._lookback_ns = int(fills_lookback_s * 1e9)
        self._verify_s = flatten_verify_s
        self._lock = threading.RLock()
        self._orders: dict[str, _Order] = {}
        self._by_venue: dict[int, str] = {}
        self._seen_trades: set[int] = set()  # trade ids delivered as Fill events
        self._closing: dict[str, tuple[str, float]] = {}  # contract id -> (emergency coid, monotonic expiry)
        self._stale: set[str] = set()  # orders whose cancel found them not working: checked soon (_check_stale)
        self._sink: EventSink | None = None
        self._undelivered: list[Any] = []
        self._events: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self.last_ts = 0
        self.stats: dict[str, int] = {}
        self.hub = None if hub_url is None else UserHub(
            hub_url, client.token, account_id, on_order=lambda o: self._events.put(o),
            on_position=lambda p: None, on_trade=lambda t: self._events.put(t),
            on_logout=lambda: self._reconcile("user hub logout"), on_state=self._hub_state, **dict(hub_options or {}))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the event worker and connect the user hub (returns at once)."""
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="px-broker-events", daemon=True)
                self._worker.start()
        if self.hub is not None:
            self.hub.start()

    def connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the user hub's connection; True when connected (or
        when there is no hub: events then come from REST reads only)."""
        return self.hub is None or self.hub.wait_connected(timeout_s)

    def stop(self) -> None:
        """Disconnect the hub and stop the worker (pending hub events are processed first)."""
        if self.hub is not None:
            self.hub.stop()
        worker = self._worker
        if worker is not None:
            self._events.put(None)
            worker.join(5.0)
            self._worker = None

    def set_event_sink(self, sink: EventSink | None) -> None:
        """Where hub-driven events go (called from the worker thread). Events produced before a sink
        was set are delivered to it now. Deliver them into the broker actor's own mailbox so they
        are ordered after the synchronous result of any call in progress."""
        with self._lock:
            self._sink = sink
            pending, self._undelivered = self._undelivered, []
        self._emit(pending)

    # ------------------------------------------------------------------ Broker protocol

    def submit(self, intent: OrderIntent, ts_ns: int) -> list:
        """Place ``intent`` (``customTag`` = its client order id). See the module docstring for the
        outcomes; never retried here."""
        return self.begin_submit(intent, ts_ns)()

    def begin_submit(self, intent: OrderIntent, ts_ns: int) -> Callable[[], list]:
        """:meth:`submit` in two halves: the ``Order/place`` request is written now when that needs no
        wait (``ProjectXClient.begin_place_order``); the returned ``result()`` reads the answer and
        returns :meth:`submit`'s events. A thread can so send a decision's orders back to back and
        read the answers on others (:class:`infra.projectx.venue_handler.ProjectXVenueHandler`). Call
        ``result()`` once."""
        self._advance(ts_ns)
        coid, sid = intent.client_order_id, intent.strategy_id
        contract_id = self.contracts.get(intent.instrument)
        if contract_id is None:
            return _done([OrderRejected(coid, sid, f"no ProjectX contract configured for {intent.instrument}", ts_ns)])
        try:
            args = mapping.place_args(intent, tick_size=get_instrument(intent.instrument).tick_size)
        except (ValueError, ArithmeticError) as e:  # ArithmeticError: a price such as 1E+999 (no quotient)
            return _done([OrderRejected(coid, sid, f"invalid order: {e}", ts_ns)])
        with self._lock:
            if coid in self._orders:
                return _done([OrderRejected(coid, sid, "duplicate client order id", ts_ns)])
            entry = self._orders[coid] = _Order(coid, sid, intent.instrument, intent.qty, inflight=True)
        sent = self.client.begin_place_order(self.account_id, contract_id, **args)
        return lambda: self._placed(entry, sent, ts_ns)

    def _placed(self, entry: _Order, sent: Callable[[], int], ts_ns: int) -> list:
        """The second half of :meth:`begin_submit`: read the place answer, settle the order."""
        coid, sid = entry.coid, entry.strategy_id
        try:
            order_id: int | None = sent()
            failure: pxe.ProjectXError | None = None
        except pxe.ProjectXError as e:
            order_id, failure = None, e
        with self._lock:
            entry.inflight = False
            held, entry.held = entry.held, []
            if failure is None or (isinstance(failure, pxe.AmbiguousOutcome) and entry.venue_id is not None):
                if failure is not None:
                    logger.warning("ProjectX: place {} outcome unknown ({}), but the user hub already reported "
                                   "order {}: accepted", coid, failure, entry.venue_id)
                self._bind(entry, order_id if order_id is not None else entry.venue_id)
                entry.accepted = True
                out: list = [OrderAccepted(coid, sid, str(entry.venue_id), ts_ns), *held]
                if entry.status is not None:
                    out += self._status_events(entry, entry.status)
                return out
            if isinstance(failure, pxe.AmbiguousOutcome):
                self._count("ambiguous")
                logger.warning("ProjectX: place {} outcome unknown ({}); left pending for reconciliation",
                               coid, failure)
            else:
                entry.terminal = True
                self._count("rejected")
                logger.warning("ProjectX: place {} rejected: {}", coid, failure)
        if isinstance(failure, pxe.AmbiguousOutcome):
            self._reconcile(f"ambiguous place of {coid}")
            return []
        if held:
            self._reconcile(f"{coid} was rejected but traded")
        reason = f"{failure.code_name}: {failure.message}".rstrip(": ")
        if isinstance(failure, pxe.RequestNotSent):
            reason = f"not placed ({reason})"
        return [OrderRejected(coid, sid, reason, ts_ns), *held]

    def cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> list:
        """Cancel by venue order id (looked up over REST when not known). Returns ``[OrderCancelled]``
        when the gateway confirmed, ``[]`` otherwise (not found, ambiguous, refused: logged; the
        reconciler settles it). A cancel refused unprocessed (HTTP 429, connection refused) is sent
        again, up to :data:`CANCEL_ATTEMPTS` tries, after ``Retry-After`` or 0.25 / 0.5 s (at most
        2 s): a strategy does not ask twice, and an entry left working would double its level.
        A cancel refused because the order is no longer working (code 3 ``Rejected``: filled or
        cancelled already; or no working order with our tag) is normal when a fill races the
        cancel, and the user hub then settles the order; if it has not within
        :data:`STALE_CHECK_AFTER_S`, a reconciliation is requested (one for all such orders of that
        second), so that risk's book, whose flatten waits for every working order to settle, does
        not keep a dead order working. Orders not ours (``px-<id>``) are cancelled without an event.

        Sent at most once at a time: a cancel of an order already settled here (filled, cancelled,
        rejected) or with a cancel in flight is not sent (``[]``, counted in
        ``stats["cancel_coalesced"]``); the one in flight answers for both. A strategy, risk's
        flatten and a second flatten often ask for the same order within milliseconds, and each
        repeat would be a REST call against the 200 / 60 s limit
        (docs/decisions/0012-one-cancel-per-order-at-a-time.md). If the cancel in flight fails, the
        order stays open and the next cancel asked goes."""
        return self.begin_cancel(client_order_id, ts_ns, reason)()

    def begin_cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> Callable[[], list]:
        """:meth:`cancel` in two halves, as :meth:`begin_submit`: when the venue order id is known the
        ``Order/cancel`` request is written now (if that needs no wait); the returned ``result()``
        reads the answer (sending again and looking the order up over REST as :meth:`cancel` does)
        and returns :meth:`cancel`'s events. Call ``result()`` once."""
        self._advance(ts_ns)
        with self._lock:
            entry = self._orders.get(client_order_id)
            if entry is not None and entry.terminal and entry.venue_id is None:
                # Known never to have reached the gateway (place refused: its OrderRejected is already
                # out). No REST lookup (Order/v2/query, with retries): under a 429 storm it would block
                # the broker actor ~1 s per cancel while strategies cancel their just-rejected orders,
                # and stall every order behind them.
                logger.info("ProjectX: cancel {}: the order was never placed (rejected)", client_order_id)
                return _done([])
            if entry is not None and (entry.terminal or entry.cancelling):
                # its fill or cancel is out already, or the cancel in flight answers for this one too
                self._count("cancel_coalesced")
                logger.debug("ProjectX: cancel {} not sent: {}", client_order_id,
                             "already settled" if entry.terminal else "a cancel is in flight")
                return _done([])
            if entry is not None:
                entry.cancelling = True
            venue_id = None if entry is None else entry.venue_id

        def settled() -> None:  # this cancel is over, whatever its outcome: the next one may go
            if entry is not None:
                with self._lock:
                    entry.cancelling = False
        try:
            sent = None if venue_id is None else self.client.begin_cancel_order(self.account_id, venue_id)
        except BaseException:
            settled()
            raise

        def result() -> list:
            try:
                return self._cancelled(client_order_id, entry if venue_id is not None else None, sent, ts_ns, reason)
            finally:
                settled()
        return result

    def _cancelled(self, client_order_id: str, entry: _Order | None, sent: Callable[[], None] | None, ts_ns: int,
                   reason: str) -> list:
        """The second half of :meth:`begin_cancel`: ``sent`` is the written request's ``result()``
        (None: look the order up and cancel it now)."""
        if entry is None:
            entry = self._find_working(client_order_id)
        if entry is None or entry.venue_id is None:
            logger.warning("ProjectX: cancel {}: no working venue order with that tag", client_order_id)
            self._check_stale(client_order_id)
            return []
        for attempt in range(1, CANCEL_ATTEMPTS + 1):
            try:
                if sent is not None:  # the first try, written by begin_cancel
                    result, sent = sent, None
                    result()
                else:
                    self.client.cancel_order(self.account_id, entry.venue_id)
                break
            except pxe.ProjectXError as e:
                if _Backoff.retryable(e) and attempt < CANCEL_ATTEMPTS:
                    # refused unprocessed (HTTP 429, connection refused): sending it again is safe,
                    # and the strategy counts on its cancel (it does not ask twice)
                    wait = min(e.retry_after_s if isinstance(e, pxe.RateLimited) and e.retry_after_s is not None
                               else 0.25 * 2 ** (attempt - 1), 2.0)
                    logger.warning("ProjectX: cancel {} refused ({}), sending it again in {:.2f}s ({}/{})",
                                   client_order_id, e.code_name, wait, attempt, CANCEL_ATTEMPTS - 1)
                    time.sleep(wait)
                    continue
                logger.warning("ProjectX: cancel {} (order {}) failed: {}", client_order_id, entry.venue_id, e)
                if isinstance(e, (pxe.AmbiguousOutcome, pxe.OrderNotFound)):
                    self._reconcile(f"cancel of {client_order_id}: {e.code_name}")
                elif isinstance(e, pxe.Rejected):
                    self._check_stale(client_order_id)
                return []
        with self._lock:
            if entry.terminal or entry.strategy_id == EXTERNAL_STRATEGY:
                entry.terminal = True
                return []
            entry.terminal = True
        return [OrderCancelled(client_order_id, entry.strategy_id, ts_ns, reason)]

    def _check_stale(self, client_order_id: str) -> None:
        """In :data:`STALE_CHECK_AFTER_S`, request a reconciliation if ``client_order_id`` is still
        open for us (not terminal here: no fill or status from the user hub settled it). Calls of the
        same second share one timer and one request."""
        with self._lock:
            entry = self._orders.get(client_order_id)
            if entry is not None and entry.terminal:
                return
            first = not self._stale
            self._stale.add(client_order_id)
        if not first:
            return

        def check() -> None:
            with self._lock:
                coids, self._stale = self._stale, set()
                still = sorted(c for c in coids if (e := self._orders.get(c)) is None or not e.terminal)
            if still:
                self._reconcile(f"cancel refused, no longer working at the gateway: {', '.join(still)}")
        timer = threading.Timer(STALE_CHECK_AFTER_S, check)
        timer.daemon = True
        timer.start()

    def modify(self, client_order_id: str, ts_ns: int, *, qty: int | None = None,
               limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> list:
        """Change a working order with ``Order/modify`` (:meth:`ProjectXClient.modify_order`;
        docs/reference/projectx-gateway.md#working-orders-modify-and-cancel): absolute values,
        ``None`` = unchanged; only the given fields are sent.

        Args:
            client_order_id: our id (``customTag``); the venue order id is the one learned from the
                place answer or the hub, else looked up over REST (``Order/v2/query``).
            ts_ns: event time, epoch ns UTC (stamps the ``OrderModified``).
            qty: new total size in contracts, an int >= 1 and above what has filled so far.
            limit_price / stop_price: new price in points on the instrument's tick grid (the gateway
                takes a limit price on limit orders only, a stop price on stop orders only).

        Returns ``[OrderModified]`` (the fields given) when the gateway confirmed, followed by the
        events of that order the user hub reported while the call was in flight (a modify that
        makes the order marketable fills at once: its ``Fill`` comes after the ``OrderModified``).

        Returns no ``OrderModified`` and leaves the order as it was (our book and the gateway's)
        when: the order is not working here (unknown at the gateway, filled, cancelled, rejected,
        or its place is still in flight), nothing is to change, a value is invalid (checked before
        sending), or the gateway refused (``Order/modify`` codes 2 OrderNotFound, 3 Rejected, 6
        AccountRejected, 7 ContractNotFound; HTTP 429 / 4xx / connection refused: ``RequestNotSent``;
        docs/projectx.md "Error mapping"). Never an ``OrderRejected``: that is terminal for an order
        that is still working. A gateway refusal is logged and counted (``stats["modify_refused"]``);
        an unknown outcome (timeout, 5xx, codes 4 Pending / 5 UnknownError: ``AmbiguousOutcome``) and
        OrderNotFound also request a reconciliation. Never retried; never raises ProjectXError.
        """
        self._advance(ts_ns)
        if qty is None and limit_price is None and stop_price is None:
            return []
        with self._lock:
            entry = self._orders.get(client_order_id)
            if entry is not None and (entry.terminal or entry.inflight or entry.modifying):
                logger.info("ProjectX: modify {} not sent: {}", client_order_id,
                            "not working" if entry.terminal else "a place or modify of it is in flight")
                return []
        if entry is None or entry.venue_id is None:
            entry = self._find_working(client_order_id)
            if entry is None or entry.venue_id is None:
                logger.warning("ProjectX: modify {}: no working venue order with that tag", client_order_id)
                return []
        invalid = self._modify_invalid(entry, qty, limit_price, stop_price)
        with self._lock:
            if invalid is None and (entry.terminal or entry.modifying):
                invalid = "not working"
            if invalid is not None:
                self._count("modify_refused")
                logger.warning("ProjectX: modify {} not sent: {}", client_order_id, invalid)
                return []
            entry.modifying = True
        failure: pxe.ProjectXError | None = None
        try:
            self.client.modify_order(self.account_id, entry.venue_id, size=qty, limit_price=limit_price,
                                     stop_price=stop_price)
        except pxe.ProjectXError as e:
            failure = e
        except BaseException:
            self._emit(self._modified(entry, None))  # not ours to swallow; the held events still go out
            raise
        out = self._modified(entry, None if failure is not None else
                             OrderModified(client_order_id, entry.strategy_id, ts_ns, qty, limit_price, stop_price))
        if failure is not None:
            self._count("modify_refused")
            logger.warning("ProjectX: modify {} (order {}) failed: {}", client_order_id, entry.venue_id, failure)
            if isinstance(failure, (pxe.AmbiguousOutcome, pxe.OrderNotFound)):
                self._reconcile(f"modify of {client_order_id}: {failure.code_name}")
        return out

    def _modify_invalid(self, entry: _Order, qty: Any, limit_price: Any, stop_price: Any) -> str | None:
        """Why a modify must not be sent (None: it may)."""
        if entry.strategy_id == EXTERNAL_STRATEGY:
            return "not one of our orders"
        if qty is not None and (not isinstance(qty, int) or isinstance(qty, bool) or qty < 1):
            return f"qty {qty!r} is not an int >= 1"
        if qty is not None and qty <= entry.filled:
            return f"qty {qty} is not above the {entry.filled} contracts already filled"
        try:
            tick = get_instrument(entry.instrument).tick_size
        except (KeyError, ValueError):
            tick = None
        for name, price in (("limit price", limit_price), ("stop price", stop_price)):
            if price is None:
                continue
            try:
                ok = isinstance(price, Decimal) and price.is_finite() and price > 0 and \
                    (tick is None or price % tick == 0)
            except ArithmeticError:  # e.g. 1E+999: the quotient does not fit the decimal context
                ok = False
            if not ok:
                return f"{name} {price!r} is not a positive price on the {tick} tick grid"
        return None

    def _modified(self, entry: _Order, done: OrderModified | None) -> list:
        """End a modify of ``entry``: ``done`` (None: it did not happen), then the events of the hub
        items held back meanwhile, counted against the size the order has now."""
        with self._lock:
            entry.modifying = False
            items, entry.deferred = entry.deferred, []
            if done is None:
                return self._replay(entry, items)
            if done.qty is not None:
                entry.size = done.qty
            return [done, *self._replay(entry, items)]

    def _replay(self, entry: _Order, items: list[Any]) -> list:
        """The events of hub items held back while ``entry`` was being modified (lock held)."""
        out: list = []
        for item in items:
            if isinstance(item, GatewayTrade):
                if item.id not in self._seen_trades:
                    out.append(self._fill(entry, item))
            else:
                out += self._status_events(entry, item)
        return out

    def placing(self, client_order_id: str) -> bool | None:
        """True while the ``Order/place`` of that order is in flight, False once it was answered (or
        the order was adopted from a snapshot), None if this broker never saw the order. Used by the
        live reconciler so that it does not judge an order whose placement a snapshot may not show."""
        with self._lock:
            entry = self._orders.get(client_order_id)
            return None if entry is None else entry.inflight

    def on_tick(self, tick: TradeTick | QuoteTick) -> list:
        """The venue matches orders itself: nothing to do."""
        return []

    def open_orders(self) -> list[OrderIntent]:
        """Working orders at the gateway (``Order/v2/query``, statuses 1 Open, 6 Pending, 7
        PendingCancellation, 8 Suspended, all pages) as intents, oldest first: ``qty`` = the order's
        current size in contracts and its current price in points (after any modify), our client
        order id from ``customTag`` (``px-<orderId>`` / strategy ``external`` for orders not ours),
        ``ts_ns`` = creation time (epoch ns UTC), ``purpose`` ``venue``. Teaches the broker the
        orders it returns, as :meth:`snapshot`. Raises ProjectXError / MalformedPayload."""
        working = self.client.query_orders(self.account_id)
        with self._lock:
            return list(self._intents(working, {o.id: self._adopt(o) for o in working}))

    def positions(self) -> dict[str, PositionSnapshot]:
        """Open positions by instrument (``Position/searchOpen``): ``qty`` signed contracts (+ long),
        ``avg_price`` points, ``ts_ns`` the position's creation time (epoch ns UTC). A contract not
        in ``contracts`` is keyed by its contract id. Raises ProjectXError / MalformedPayload."""
        return {p.instrument: p for p in self._positions(self.client.open_positions(self.account_id))}

    def fills_since(self, ts_ns: int) -> list[Fill]:
        """The account's fills created at or after ``ts_ns`` (epoch ns UTC), oldest first, from
        ``Trade/search`` (voided trades left out), mapped to client order ids through their orders'
        ``customTag`` (``Order/search`` over the same window, ``Order/searchById`` for older orders;
        orders not ours as ``px-<orderId>`` / ``external``), as in :meth:`snapshot`: ``qty``
        contracts, ``price`` points, ``fee`` dollars, ``leaves_qty`` what the order had left after
        that fill, ``trade_id`` the gateway's trade id. The hub may still push a fill returned here:
        consumers de-duplicate by ``trade_id``. Raises ProjectXError / MalformedPayload."""
        _, fills = self._read_fills(ts_ns, [])
        return [f for f in fills if f.ts_ns >= ts_ns]

    def snapshot(self, ts_ns: int) -> BrokerSnapshot:
        """The venue's truth at ``ts_ns`` (see the module docstring): :meth:`open_orders`,
        :meth:`positions` (stamped with their creation time) and :meth:`fills_since` ``ts_ns -
        fills_lookback_s`` in one. Also teaches the broker every order it returns (so later fills and
        cancels map, and fills count toward ``leaves_qty``); it emits nothing. Raises ProjectXError /
        MalformedPayload (the reconciliation must then fail)."""
        working = self.client.query_orders(self.account_id)
        entries, fills = self._read_fills(ts_ns - self._lookback_ns, working)
        positions = self.client.open_positions(self.account_id)
        with self._lock:
            intents = self._intents(working, entries)
        return BrokerSnapshot(intents, self._positions(positions), fills, ts_ns)

    def _read_fills(self, since_ns: int, working: list[GatewayOrder]) -> tuple[dict[int, _Order], tuple[Fill, ...]]:
        """Fills from ``since_ns`` (``Trade/search``, not voided) and the entries of their orders and
        of ``working``, adopted with the fill volume from before the window (``base_filled``)."""
        since = _utc(since_ns)
        recent = self.client.search_orders(self.account_id, since)
        trades = [t for t in self.client.search_trades(self.account_id, since) if not t.voided]
        orders = {o.id: o for o in recent}
        orders.update((o.id, o) for o in working)
        for oid in {t.order_id for t in trades} - orders.keys():
            try:
                orders[oid] = self.client.order_by_id(self.account_id, oid)
            except pxe.OrderNotFound:
                logger.warning("ProjectX: fill of unknown order {} in Trade/search", oid)
        in_window: dict[int, int] = {}
        for t in trades:
            in_window[t.order_id] = in_window.get(t.order_id, 0) + t.size
        with self._lock:
            entries = {oid: self._adopt(o, base_filled=max(o.fill_volume - in_window.get(oid, 0), 0))
                       for oid, o in orders.items()}
            for t in trades:
                if t.order_id in entries:
                    entries[t.order_id].trades[t.id] = t.size
            return entries, self._snapshot_fills(trades, orders, entries)

    def _intents(self, working: list[GatewayOrder], entries: Mapping[int, _Order]) -> tuple[OrderIntent, ...]:
        """``working`` as intents under their entries' client order ids (lock held). A native bracket
        leg still Suspended (its entry has not filled; it has no price and cannot fill) is left out."""
        return tuple(mapping.order_to_intent(o, client_order_id=entries[o.id].coid,
                                             strategy_id=entries[o.id].strategy_id,
                                             instrument=entries[o.id].instrument) for o in working
                     if o.status != GwOrderStatus.SUSPENDED)

    def _positions(self, positions: list[GatewayPosition]) -> tuple[PositionSnapshot, ...]:
        """Non-flat gateway positions as domain snapshots."""
        return tuple(mapping.position_snapshot(p, instrument=self._instrument(p.contract_id))
                     for p in positions if p.size)

    def flatten(self, ts_ns: int) -> list:
        """Emergency: cancel every working order, close every position at market (``closeContract``),
        then check until the account shows neither, for at most ``flatten_verify_s`` seconds. Uses
        REST only. Returns the cancellations of our orders; the closing fills arrive through the hub
        as ``emergency-<instrument>-<ts_ns>``.

        A call the gateway refused unprocessed (HTTP 429, connection refused: ``RequestNotSent``)
        is sent again, after ``Retry-After`` or a backoff of 0.2 s doubling to 2 s, until the
        deadline: a 429 storm must not leave a position open. Each round re-lists working orders
        and positions, so an order whose cancel failed otherwise is cancelled again, and a position
        still open 2 s after its accepted close is closed again. Never raises
        (failures are logged; not flat at the deadline: critical log and a reconciliation request).
        """
        self._advance(ts_ns)
        events: list = []
        deadline = time.monotonic() + self._verify_s
        closed: dict[str, float] = {}  # contract id -> when its close was accepted (monotonic s)
        backoff = _Backoff(deadline)
        while True:
            working = self._flatten_read(lambda: self.client.query_orders(self.account_id), "list working orders")
            for o in working or []:
                with self._lock:
                    entry = self._adopt(o)
                try:
                    self.client.cancel_order(self.account_id, o.id)
                except pxe.ProjectXError as e:
                    (logger.warning if backoff.retryable(e) else logger.error)(
                        "ProjectX flatten: cancel of order {} failed: {}", o.id, e)
                    backoff.note(e)
                    continue
                with self._lock:
                    if not entry.terminal and entry.strategy_id != EXTERNAL_STRATEGY:
                        events.append(OrderCancelled(entry.coid, entry.strategy_id, ts_ns, "flatten"))
                    entry.terminal = True
            open_pos = self._flatten_read(lambda: [p for p in self.client.open_positions(self.account_id) if p.size],
                                          "list positions")
            if open_pos == [] and working == []:
                return events
            for p in open_pos or []:
                if time.monotonic() - closed.get(p.contract_id, -_RECLOSE_AFTER_S) < _RECLOSE_AFTER_S:
                    continue  # its close is on its way; two closes in flight could reverse it
                closed[p.contract_id] = time.monotonic()
                with self._lock:
                    self._closing[p.contract_id] = (f"emergency-{self._instrument(p.contract_id)}-{ts_ns}",
                                                    time.monotonic() + 60.0)
                try:
                    self.client.close_position(self.account_id, p.contract_id)
                except pxe.PositionNotFound:
                    pass
                except pxe.ProjectXError as e:
                    (logger.warning if backoff.retryable(e) else logger.error)(
                        "ProjectX flatten: close of {} failed: {}", p.contract_id, e)
                    backoff.note(e)
                    closed.pop(p.contract_id, None)
            if time.monotonic() >= deadline:
                logger.critical("ProjectX flatten: account {} still not flat after {}s: positions {}, working orders {}",
                                self.account_id, self._verify_s,
                                [(p.contract_id, p.type.name, p.size) for p in open_pos or []],
                                [o.id for o in working or []])
                self._reconcile("flatten did not complete")
                return events
            backoff.sleep()

    def _flatten_read(self, read: Callable[[], list], what: str) -> list | None:
        """One read of the flatten loop (the client already retried it); None when it failed."""
        try:
            return read()
        except pxe.ProjectXError as e:
            logger.error("ProjectX flatten: cannot {}: {}", what, e)
            return None

    # ------------------------------------------------------------------ hub events (worker thread)

    def _work(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            try:
                if isinstance(item, GatewayTrade):
                    self._on_trade(item)
                else:
                    self._on_order(item)
            except Exception:
                self._count("event_errors")
                logger.exception("ProjectX broker: failed to handle {!r:.300}", item)

    def _on_order(self, o: GatewayOrder) -> None:
        self._advance(o.updated_ns)
        with self._lock:
            entry = self._lookup(o)
            if entry is None:
                if o.working:
                    logger.warning("ProjectX: venue order {} ({}) is not ours", o.id, o.contract_id)
                return
            if entry.inflight:
                entry.status = o
                return
            if entry.modifying:
                entry.deferred.append(o)
                return
            events = self._status_events(entry, o)
        self._emit(events)

    def _on_trade(self, t: GatewayTrade) -> None:
        self._advance(t.ts_ns)
        if t.voided:
            self._count("voided_fills")
            self._reconcile(f"voided fill {t.id}")
            return
        with self._lock:
            if t.id in self._seen_trades:
                return
            entry = self._entry_by_venue(t.order_id)
        if entry is None:
            try:
                order: GatewayOrder | None = self.client.order_by_id(self.account_id, t.order_id)
            except pxe.ProjectXError as e:
                logger.warning("ProjectX: fill {} of order {}: order lookup failed: {}", t.id, t.order_id, e)
                order = None
            with self._lock:  # a newly adopted order's earlier fills: its fill volume without this one
                entry = None if order is None else self._lookup(order, max(order.fill_volume - t.size, 0))
        if entry is None or entry.strategy_id == EXTERNAL_STRATEGY:
            self._count("unknown_fills")
            self._reconcile(f"fill {t.id} of order {t.order_id} we did not place")
            return
        with self._lock:
            if t.id in self._seen_trades:
                return
            if entry.modifying:  # counted once the modify settled the order's size
                entry.deferred.append(t)
                return
            late = entry.terminal and not entry.accepted  # reported rejected, yet it trades
            fill = self._fill(entry, t)
            if entry.inflight:
                entry.held.append(fill)
                return
        if late:
            self._reconcile(f"{entry.coid} traded after it was reported rejected")
        self._emit([fill])

    # ------------------------------------------------------------------ internals (callers hold the lock)

    def _fill(self, entry: _Order, t: GatewayTrade) -> Fill:
        self._seen_trades.add(t.id)
        entry.trades[t.id] = t.size
        leaves = max(entry.size - entry.filled, 0)
        if leaves == 0:
            entry.terminal = True
        return mapping.fill_from_trade(t, client_order_id=entry.coid, strategy_id=entry.strategy_id,
                                       instrument=self._instrument(t.contract_id, entry.instrument),
                                       leaves_qty=leaves)

    def _status_events(self, entry: _Order, o: GatewayOrder) -> list:
        if entry.strategy_id == EXTERNAL_STRATEGY:
            return []
        if bracket_parent(entry.coid) is not None and o.working:
            # a native bracket leg: Suspended (no price) until its entry fills, then Open with its
            # price (the router gives it the entry's purpose tags)
            leg = mapping.bracket_leg_intent(o, client_order_id=entry.coid, strategy_id=entry.strategy_id,
                                             instrument=entry.instrument)
            if leg is None or entry.accepted or entry.terminal:
                return []
            entry.accepted = True
            return [OrderAccepted(entry.coid, entry.strategy_id, str(o.id), o.updated_ns, leg)]
        ev = mapping.order_event(o, client_order_id=entry.coid, strategy_id=entry.strategy_id)
        if ev is None or entry.terminal:
            return []
        if isinstance(ev, OrderAccepted):
            if entry.accepted:
                return []
            entry.accepted = True
        else:
            entry.terminal = True
        return [ev]

    def _bind(self, entry: _Order, venue_id: int | None) -> None:
        if venue_id is not None:
            entry.venue_id = venue_id
            self._by_venue[venue_id] = entry.coid

    def _entry_by_venue(self, venue_id: int) -> _Order | None:
        coid = self._by_venue.get(venue_id)
        return self._orders.get(coid) if coid is not None else None

    def _lookup(self, o: GatewayOrder, base_filled: int = 0) -> _Order | None:
        """The entry for a venue order: known by id, by our tag, or adopted (tagged orders from an
        earlier run, the closing order of a flatten). None for untagged orders that are not ours."""
        entry = self._entry_by_venue(o.id)
        if entry is not None:
            return entry
        if o.custom_tag is None and self._closing_coid(o) is None:
            return None
        return self._adopt(o, base_filled)

    def _closing_coid(self, o: GatewayOrder) -> str | None:
        """The emergency client order id if ``o`` is the market order of a recent closeContract."""
        coid, expiry = self._closing.get(o.contract_id, ("", 0.0))
        if o.custom_tag is None and o.type == GwOrderType.MARKET and time.monotonic() < expiry:
            return coid
        return None

    def _adopt(self, o: GatewayOrder, base_filled: int = 0) -> _Order:
        """Find or create the entry for ``o`` (a new one counts ``base_filled`` contracts as already filled)."""
        entry = self._entry_by_venue(o.id)
        if entry is None and o.custom_tag is not None:
            entry = self._orders.get(o.custom_tag)
        if entry is None:
            closing = self._closing_coid(o)
            if o.custom_tag is not None:
                coid, sid = o.custom_tag, mapping.strategy_id_of(o.custom_tag)
            elif closing is not None:
                coid, sid = closing, EMERGENCY_STRATEGY
                del self._closing[o.contract_id]
            else:
                coid, sid = f"px-{o.id}", EXTERNAL_STRATEGY
            entry = _Order(coid, sid, self._instrument(o.contract_id), o.size, base_filled=base_filled,
                           accepted=not o.working and o.status != GwOrderStatus.NONE, terminal=not o.working)
            self._orders[coid] = entry
        self._bind(entry, o.id)
        return entry

    def _snapshot_fills(self, trades: list[GatewayTrade], orders: Mapping[int, GatewayOrder],
                        entries: Mapping[int, _Order]) -> tuple[Fill, ...]:
        """Fills with ``leaves_qty`` = size - fillVolume + the volume of the order's later fills.
        Side-effect free for event delivery: a fill returned here may still be pushed by the hub
        (the router de-duplicates by trade id)."""
        later: dict[int, int] = {}
        out: list[Fill] = []
        for t in reversed(trades):  # newest first, to know what came after each fill
            o, entry = orders.get(t.order_id), entries.get(t.order_id)
            if o is None or entry is None:
                continue
            leaves = o.size - o.fill_volume + later.get(t.order_id, 0)
            later[t.order_id] = later.get(t.order_id, 0) + t.size
            out.append(mapping.fill_from_trade(t, client_order_id=entry.coid, strategy_id=entry.strategy_id,
                                               instrument=self._instrument(t.contract_id, entry.instrument),
                                               leaves_qty=leaves))
        return tuple(reversed(out))

    # ------------------------------------------------------------------ small helpers

    def _find_working(self, client_order_id: str) -> _Order | None:
        try:
            working = self.client.query_orders(self.account_id)
        except pxe.ProjectXError as e:
            logger.warning("ProjectX: cannot look up {}: {}", client_order_id, e)
            return None
        with self._lock:
            for o in working:
                entry = self._adopt(o)
                if entry.coid == client_order_id:
                    return entry
        return None

    def _instrument(self, contract_id: str, default: str | None = None) -> str:
        return self._instrument_of.get(contract_id, default or contract_id)

    def _advance(self, ts_ns: int) -> None:
        if ts_ns > self.last_ts:
            self.last_ts = ts_ns

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _emit(self, events: list) -> None:
        if not events:
            return
        with self._lock:
            sink = self._sink
            if sink is None:
                self._undelivered.extend(events)
                return
        for ev in events:
            try:
                sink(ev)
            except Exception:
                logger.exception("ProjectX broker: event sink failed for {}", ev)

    def _reconcile(self, reason: str) -> None:
        logger.warning("ProjectX: reconciliation needed: {}", reason)
        if self._on_reconcile is not None:
            try:
                self._on_reconcile(reason)
            except Exception:
                logger.exception("ProjectX broker: on_reconcile_needed failed")

    def _hub_state(self, state: str) -> None:
        if state == "reconnected":
            self._reconcile("user hub reconnected (events may have been missed)")
        elif state == "disconnected":
            logger.warning("ProjectX: user hub disconnected")
