"""Execution handlers: order router, paper venue and reconciler.

Order path: strategy -> risk -> **router** -> **broker** (the venue) -> router -> risk + owner.

- The router writes every order to the Redis mirror *before* it sends it (the store call returns
  only after Redis acknowledged the MULTI/EXEC), records fills once per trade id, mirrors status
  changes, writes the trades CSV, and forwards venue events to risk and to the order's owner
  (the actor named by ``strategy_id``).
- The paper venue hosts :class:`infra.paper_broker.PaperBroker` behind a lock (so the emergency
  flatten can use it without the actors) and mirrors its snapshot after every change.
- The reconciler compares our mirror with the venue (startup, restart, gaps): fills we missed are
  replayed through the router, orders the venue does not have are closed, orders we do not know
  are cancelled (policy ``cancel``; ``adopt`` keeps them), and the positions must then match, else
  risk stays HALTED and an alert goes out.

With ``store=None`` (backtest) nothing is mirrored; the logic is the same.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from decimal import Decimal
from typing import Any, Callable

from loguru import logger

from domain.handler import BROKER, RECONCILED_TOPIC, RISK, ROUTER, WATCHDOG, Out, RejectedMessage
from domain.messages import (Alert, BrokerSnapshot, CancelOrder, Fill, OrderAccepted, OrderCancelled, OrderIntent,
                             OrderRejected, OrderSubmitted, QuoteTick, ReconcileRequest, ReconcileResult, TradeTick)
from domain.orders import OrderStatus
from infra.paper_broker import PaperBroker
from infra.trade_log import TradeLog

_STATUS = {OrderSubmitted: OrderStatus.SUBMITTED, OrderAccepted: OrderStatus.ACCEPTED,
           OrderRejected: OrderStatus.REJECTED, OrderCancelled: OrderStatus.CANCELLED}


class StoreIds:
    """Client order ids ``{strategy_id}-{incarnation}-{seq}``, unique for ever within the namespace,
    also across restarts: ``seq`` comes from blocks of ``block`` numbers reserved with one Redis
    INCRBY (numbers of a block unused at a crash are simply never used). Thread-safe.

    A round trip per id would sit in the decision path: a grid rebuild names ten orders at once.
    """

    def __init__(self, store: Any, incarnation: int, block: int = 64) -> None:
        self.store = store
        self.incarnation = incarnation
        self.block = block
        self._next = self._end = 0
        self._lock = threading.Lock()

    def next_id(self, strategy_id: str) -> str:
        with self._lock:
            if self._next >= self._end:
                self._end = int(self.store.client.incrby(self.store.key("seq", "orders"), self.block)) + 1
                self._next = self._end - self.block
            seq = self._next
            self._next += 1
        return f"{strategy_id}-{self.incarnation}-{seq}"


class WriteAheadError(RuntimeError):
    """An order's write-ahead to Redis failed or timed out: the order must not be sent."""


class WriteAhead:
    """Orders written to Redis before they are sent, batched, off the router's thread.

    The router hands each new order over (:meth:`put`) and goes on with its next message; one
    thread writes every order queued in the meantime with one MULTI/EXEC
    (:meth:`StateStore.save_new_orders`), so the ten orders of a grid rebuild cost about one round
    trip instead of ten in a row. The broker calls :meth:`wait` before it sends an order to the
    venue: an order reaches the venue only once Redis has acknowledged it, as before, and a kill
    in between leaves an order in Redis that the venue does not have (reconciliation closes it),
    never the reverse. Thread-safe.

    Args:
        store: the :class:`infra.state_store.StateStore`.
        max_batch: at most this many orders per MULTI/EXEC.
    """

    def __init__(self, store: Any, max_batch: int = 64) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.orders = 0

    def put(self, intent: OrderIntent, status: str, ts_ns: int) -> None:
        """Queue ``intent``'s order record (status ``status``, updated at ``ts_ns``)."""
        fut: Future = Future()
        with self._lock:
            self._pending[intent.client_order_id] = fut
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="write-ahead", daemon=True)
                self._thread.start()
        self._queue.put((intent, status, ts_ns, fut))

    def wait(self, client_order_id: str, timeout_s: float = 5.0) -> None:
        """Return once the order's record is in Redis (at once for an order never queued here,
        e.g. one whose wait already returned). Raises :class:`WriteAheadError` if the write failed
        or did not finish within ``timeout_s`` seconds."""
        self.when_written(client_order_id, lambda: None, timeout_s)()

    def when_written(self, client_order_id: str, send: Callable[[], Any], timeout_s: float = 5.0) -> Callable[[], Any]:
        """Run ``send()`` as soon as the order's record is in Redis: on this object's thread right
        after the MULTI/EXEC that wrote it (the orders of one batch are then sent back to back, with
        no thread hand-over in between), or at once, in the caller's thread, for an order not queued
        here. Returns ``outcome()``, for any thread: it waits (up to ``timeout_s`` seconds in all)
        and returns what ``send()`` returned, re-raises what it raised, or raises
        :class:`WriteAheadError` if the write failed or had not finished in time; ``send`` then
        never runs (the same guarantee as :meth:`wait`: nothing reaches the venue unwritten)."""
        with self._lock:
            fut = self._pending.pop(client_order_id, None)
        once = _SendOnce(client_order_id, send)
        if fut is None:
            once.run()
        else:
            fut.add_done_callback(lambda f: once.fail(f.exception()) if f.exception() is not None else once.run())
        return lambda: once.outcome(timeout_s)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.store.save_new_orders([(i, st, ts) for i, st, ts, _ in batch])
            except Exception as e:  # noqa: BLE001 - reported to every waiting sender
                logger.error("write-ahead of {} order(s) failed: {!r}", len(batch), e)
                for *_, fut in batch:
                    fut.set_exception(e)
                continue
            self.batches += 1
            self.orders += len(batch)
            for *_, fut in batch:
                fut.set_result(None)


class _SendOnce:
    """The send of one order behind its write-ahead (:meth:`WriteAhead.when_written`): runs at most
    once, and never after its waiter gave up on the write."""

    def __init__(self, client_order_id: str, send: Callable[[], Any]) -> None:
        self._coid = client_order_id
        self._send = send
        self._lock = threading.Lock()
        self._started = False
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def _claim(self) -> bool:
        with self._lock:
            started, self._started = self._started, True
        return not started

    def run(self) -> None:
        """The record is written: send (unless the waiter gave up already)."""
        if not self._claim():
            return
        try:
            self._value = self._send()
        except BaseException as e:  # noqa: BLE001 - handed to the waiter
            self._error = e
        finally:
            self._done.set()

    def fail(self, error: BaseException) -> None:
        """The write failed: the order is not sent."""
        if self._claim():
            self._error = WriteAheadError(f"order {self._coid} not written to Redis: {error!r}")
            self._done.set()

    def outcome(self, timeout_s: float) -> Any:
        if not self._done.wait(timeout_s) and self._claim():
            self._error = WriteAheadError(f"order {self._coid} not written to Redis within {timeout_s:g} s")
            self._done.set()
        self._done.wait()  # a send already started finishes
        if self._error is not None:
            raise self._error
        return self._value


class OrderRouter:
    """Router handler. ``purposes`` remembers each order's purpose for the trades CSV.

    With ``write_ahead`` a new order's Redis record is written by :class:`WriteAhead` (batched;
    the broker waits for it before sending); without it, but with ``store``, the router writes it
    itself before passing the order on."""

    def __init__(self, store: Any | None, trade_log: TradeLog | None, write_ahead: WriteAhead | None = None) -> None:
        self.store = store
        self.trade_log = trade_log
        self.write_ahead = write_ahead
        self.purposes: dict[str, str] = {}
        self.fills = 0
        self.orders_sent = 0

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, OrderIntent):
            if self.write_ahead is not None:
                self.write_ahead.put(msg, OrderStatus.SUBMITTED.value, msg.ts_ns)
            elif self.store is not None:
                self.store.save_order(msg, OrderStatus.SUBMITTED.value, ts_ns=msg.ts_ns)
            self.purposes[msg.client_order_id] = msg.purpose
            self.orders_sent += 1
            sub = OrderSubmitted(msg.client_order_id, msg.strategy_id, msg.ts_ns)
            return [(BROKER, msg)] + self._to_owner(sub)
        if isinstance(msg, CancelOrder):
            return [(BROKER, msg)]
        if isinstance(msg, Fill):
            if self.store is not None:
                if not self.store.record_fill_and_status(msg):
                    return []  # duplicate trade id: already counted
            self.fills += 1
            if self.trade_log is not None:
                self.trade_log.write(msg, self._purpose(msg.client_order_id))
            if msg.leaves_qty == 0:
                self.purposes.pop(msg.client_order_id, None)
            return self._to_owner(msg)
        if isinstance(msg, (OrderAccepted, OrderRejected, OrderCancelled)):
            if self.store is not None:
                extra = {"venue_order_id": msg.venue_order_id} if isinstance(msg, OrderAccepted) else {
                    "reason": getattr(msg, "reason", "")}
                self._status(msg, _STATUS[type(msg)].value, ts_ns=msg.ts_ns, **extra)
            if not isinstance(msg, OrderAccepted):
                self.purposes.pop(msg.client_order_id, None)
            return self._to_owner(msg)
        if isinstance(msg, ReconcileResult):
            return [(RECONCILED_TOPIC, msg)]  # via the router so it arrives after the corrective events
        raise RejectedMessage(f"router: unexpected message {type(msg).__name__}")

    def _purpose(self, client_order_id: str) -> str:
        """The order's purpose for the trades CSV: remembered since it was sent, else (an order
        from before a restart) read from its Redis record once; "" for an order not ours."""
        purpose = self.purposes.get(client_order_id)
        if purpose is None and self.store is not None:
            rec = self.store.load_order(client_order_id)
            purpose = rec["intent"].purpose if rec is not None else ""
            self.purposes[client_order_id] = purpose
        return purpose or ""

    def _status(self, ev: Any, status: str, **fields: Any) -> None:
        """Mirror an order's new status and journal the event in one round trip (an order that is
        not ours, such as an emergency flatten or a venue-side order, is journalled only)."""
        self.store.record_order_event(ev, status, **fields)

    @staticmethod
    def _to_owner(ev: Any) -> Out:
        out: Out = [(RISK, ev)]
        if ev.strategy_id != RISK:
            out.append((ev.strategy_id, ev))
        return out


class PaperVenue:
    """:class:`infra.broker.Broker` implementation. Thread-safe paper venue: a :class:`PaperBroker` plus its Redis mirror.

    Both the broker actor and the emergency flatten (which must not depend on actors) use it.
    Ticks at or before the last processed one are ignored, so a replay that resumes slightly
    behind the venue never fills an order twice.
    """

    BLOB = "paper_broker"
    CLOCK_BLOB = "paper_broker_clock"

    def __init__(self, store: Any | None, slippage_ticks: int = 1, fill_on_touch: bool = False,
                 writer: Any | None = None) -> None:
        self.store = store
        self.writer = writer  # actors.system.WriteBehind for the once-a-minute clock record, or None
        self.lock = threading.RLock()
        saved = store.load_blob(self.BLOB) if store is not None else None
        if saved:
            fills, seen = store.load_blob_history(self.BLOB)
            self.broker = PaperBroker.restore(saved["broker"], fills, seen)
            self.last_ts = int(saved.get("last_ts", 0))
            self.last_key = tuple(saved["last_key"]) if saved.get("last_key") else None
            clock = store.load_blob(self.CLOCK_BLOB) or {}
            if clock.get("last_key") and (self.last_key is None or tuple(clock["last_key"]) > self.last_key):
                # ticks without fills after the last full save: how far matching got, last prices
                self.last_key, self.last_ts = tuple(clock["last_key"]), int(clock["last_ts"])
                self.broker.set_last_prices({k: Decimal(v) for k, v in clock.get("last", {}).items()})
        else:
            self.broker = PaperBroker(slippage_ticks=slippage_ticks, fill_on_touch=fill_on_touch)
            self.last_ts = 0
            self.last_key: tuple | None = None
        self._saved_minute = -1
        # a snapshot written whole (older versions) has its history re-written to the log at the first save
        self._saved_history = (0, 0) if saved and "fills" in saved["broker"] else self.broker.history_counts()

    def set_event_sink(self, sink: Any) -> None:
        """The paper venue answers every call synchronously; it has no asynchronous events."""

    def _save(self) -> None:
        """Mirror the venue: its small state whole, its fills and order ids by what is new."""
        if self.store is not None:
            new_fills, new_seen = self.broker.history_since(*self._saved_history)
            self.store.save_blob_incremental(
                self.BLOB, {"broker": self.broker.snapshot(history=False), "last_ts": self.last_ts,
                            "last_key": list(self.last_key) if self.last_key else None}, new_fills, new_seen)
            self._saved_history = self.broker.history_counts()

    def submit(self, intent: OrderIntent, ts_ns: int) -> list:
        with self.lock:
            out = self.broker.submit(intent, ts_ns)
            self._save()
            return out

    def cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> list:
        with self.lock:
            out = self.broker.cancel(client_order_id, ts_ns, reason)
            if out:
                self._save()
            return out

    def on_tick(self, tick: TradeTick | QuoteTick) -> list:
        """Match resting orders against a print or quote. Ticks ordered at or before the last one
        processed (key: ts_ns, instrument, seq; the replay's merge order) are ignored."""
        key = (tick.ts_ns, tick.instrument, tick.seq)
        with self.lock:
            if self.last_key is not None and key <= self.last_key:
                return []
            self.last_key = key
            self.last_ts = tick.ts_ns
            fills = self.broker.on_trade(tick) if isinstance(tick, TradeTick) else self.broker.on_quote(tick)
            minute = tick.ts_ns // 60_000_000_000
            if fills:
                self._save()
            elif minute != self._saved_minute and self.store is not None:
                # once a minute, only the matching position and last prices (small): the full
                # snapshot (every fill of the session) is written when orders or fills change
                self._saved_minute = minute
                clock = {"last_ts": self.last_ts, "last_key": list(self.last_key),
                         "last": {k: str(v) for k, v in self.broker.last_prices().items()}}
                write = lambda: self.store.save_blob(self.CLOCK_BLOB, clock)  # noqa: E731
                self.writer.put(self.CLOCK_BLOB, write) if self.writer is not None else write()
            return fills

    def snapshot(self, ts_ns: int) -> BrokerSnapshot:
        with self.lock:
            return self.broker.broker_snapshot(ts_ns)

    def flatten(self, ts_ns: int) -> list:
        """Emergency path: cancel everything and close every position at market, under the lock."""
        from domain.messages import OrderType, Side
        with self.lock:
            events = self.broker.cancel_all(ts_ns)
            for sym, pos in self.broker.positions().items():
                intent = OrderIntent(client_order_id=f"emergency-{sym}-{ts_ns}", strategy_id="emergency",
                                     instrument=sym, side=Side.for_qty(-pos.qty), qty=abs(pos.qty),
                                     order_type=OrderType.MARKET, ts_ns=ts_ns, reduce_only=True,
                                     purpose="emergency flatten")
                events += self.broker.submit(intent, ts_ns)
            self._save()
            return events


class BrokerHandler:
    """Broker actor handler over a :class:`PaperVenue`: orders in, venue events out to the router.
    With ``write_ahead``, an order goes to the venue only after its Redis record was written
    (:meth:`WriteAhead.wait`); a failed write rejects it (``write-ahead failed``)."""

    def __init__(self, venue: PaperVenue, write_ahead: WriteAhead | None = None) -> None:
        self.venue = venue
        self.write_ahead = write_ahead

    def durable(self, intent: OrderIntent) -> OrderRejected | None:
        """None once ``intent`` may be sent (its record is in Redis), else its rejection."""
        if self.write_ahead is None:
            return None
        try:
            self.write_ahead.wait(intent.client_order_id)
        except WriteAheadError as e:
            return self.not_written(intent, e)
        return None

    def not_written(self, intent: OrderIntent, error: WriteAheadError) -> OrderRejected:
        """The rejection of an order whose write-ahead failed (logged): it was not sent."""
        logger.error("{}: not sent", error)
        return OrderRejected(intent.client_order_id, intent.strategy_id, f"write-ahead failed: {error}",
                             max(intent.ts_ns, self.venue.last_ts))

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, (TradeTick, QuoteTick)):
            return [(ROUTER, f) for f in self.venue.on_tick(msg)]
        if isinstance(msg, OrderIntent):
            refused = self.durable(msg)
            if refused is not None:
                return [(ROUTER, refused)]
            # the venue's clock is the last tick it saw: a late intent is timestamped at arrival
            return [(ROUTER, e) for e in self.venue.submit(msg, max(msg.ts_ns, self.venue.last_ts))]
        if isinstance(msg, CancelOrder):
            return [(ROUTER, e) for e in self.venue.cancel(msg.client_order_id, max(msg.ts_ns, self.venue.last_ts),
                                                           msg.reason or "cancelled")]
        raise RejectedMessage(f"broker: unexpected message {type(msg).__name__}")


class Reconciler:
    """Reconciler handler. On :class:`ReconcileRequest` compares the mirror with the venue.

    Args:
        store: the Redis mirror (working orders, seen fills, risk positions).
        venue_snapshot: ``f(ts_ns) -> BrokerSnapshot`` (the venue's truth).
        risk_view: ``f() -> (positions, applied, applied_floor_ns)`` read from ONE mirrored risk
            snapshot (so they agree): ``positions`` {instrument: signed qty}, ``applied`` the set
            of trade ids that snapshot keeps (or None if unknown) and ``applied_floor_ns`` the
            time at or before which every fill was applied although its id is no longer kept
            (:meth:`domain.portfolio.Portfolio.to_dict`). A fill the router journalled but risk
            never applied (a kill between the two, or a snapshot still being written) is sent to
            risk again (risk ignores a trade id it already has); with ``applied`` None only fills
            missing from the journal are replayed.
        unknown_order_policy: ``"cancel"`` (default) or ``"adopt"`` for venue orders we never sent.
        owner_view: ``f() -> {client_order_id: (owner, filled_qty)}``, the orders each strategy's
            mirrored snapshot still holds as working and the quantity it has seen filled, or None.
            An owner that holds an order the venue filled further gets the order's journalled
            fills again (owners ignore a trade id they already applied); one the router already
            closed (journal status cancelled / rejected) and the venue no longer works gets the
            :class:`OrderCancelled` again. That covers a kill between the router's journal write
            and the owner's own snapshot: without it a restored grid keeps a filled entry as
            working (no take-profit, the level blocked) and the position it holds is unmanaged.
    """

    def __init__(self, store: Any | None, venue_snapshot: Callable[[int], BrokerSnapshot],
                 risk_view: Callable[[], tuple[dict[str, int], set[str] | None, int]],
                 unknown_order_policy: str = "cancel",
                 owner_view: Callable[[], dict[str, tuple[str, int]]] | None = None) -> None:
        if unknown_order_policy not in ("cancel", "adopt"):
            raise ValueError(f"unknown_order_policy must be 'cancel' or 'adopt', not {unknown_order_policy!r}")
        self.store = store
        self.venue_snapshot = venue_snapshot
        self.risk_view = risk_view
        self.owner_view = owner_view
        self.policy = unknown_order_policy
        self.runs = 0
        self.last_result: ReconcileResult | None = None

    def handle(self, msg: Any) -> Out:
        if not isinstance(msg, ReconcileRequest):
            raise RejectedMessage(f"reconciler: unexpected message {type(msg).__name__}")
        if msg.reuse_last and self.last_result is not None:
            return [(ROUTER, self.last_result)]
        self.runs += 1
        return self.reconcile(msg.ts_ns, msg.reason)

    def reconcile(self, ts_ns: int, reason: str) -> Out:
        # risk's side is read BEFORE the venue's: a fill landing in between is then in the venue
        # snapshot and counted as missed or unapplied, so the positions agree. Read after it (as
        # before), such a fill was in risk's position but not in the venue's, a false MISMATCH.
        risk_positions, applied, applied_floor_ns = self.risk_view()
        snap = self.venue_snapshot(ts_ns)
        ours = self.store.load_working_orders() if self.store is not None else {}
        venue_working = {o.client_order_id: o for o in snap.working}
        out: Out = []
        missed: list[Fill] = []
        unapplied: list[Fill] = []
        for f in snap.fills:
            if self.store is None:
                break
            if not (f.client_order_id in ours or self.store.load_order(f.client_order_id) is not None):
                continue
            if not self.store.fill_seen(f.trade_id):
                missed.append(f)  # the router never saw it: journal, trade log, risk and owner
            elif applied is not None and f.trade_id not in applied and f.ts_ns > applied_floor_ns:
                unapplied.append(f)  # journalled, but risk's mirrored position does not contain it
        out += [(ROUTER, f) for f in missed] + [(RISK, f) for f in unapplied]
        missed += unapplied
        filled_coids = {f.client_order_id for f in snap.fills if f.leaves_qty == 0}
        closed: set[str] = set()
        for coid, rec in ours.items():
            if coid in venue_working or coid in filled_coids:
                continue
            closed.add(coid)
            out.append((ROUTER, OrderCancelled(coid, rec["intent"].strategy_id, ts_ns, "reconcile: not working at venue")))
        owners_told = self._tell_owners(snap.fills, venue_working, filled_coids, closed, ts_ns, out)
        unknown = [o for coid, o in venue_working.items() if coid not in ours]
        if self.policy == "cancel":
            out += [(BROKER, CancelOrder(o.client_order_id, o.strategy_id, ts_ns, "reconcile: unknown order"))
                    for o in unknown]
        expected = dict(risk_positions)
        for f in missed:
            expected[f.instrument] = expected.get(f.instrument, 0) + f.side.sign * f.qty
        expected = {k: v for k, v in expected.items() if v}
        venue_pos = {p.instrument: p.qty for p in snap.positions if p.qty}
        ok = expected == venue_pos
        detail = (f"{reason}: {len(missed)} missed fills replayed ({len(unapplied)} to risk only), {len(closed)} stale orders closed, "
                  f"{owners_told} owner order(s) brought up to date, "
                  f"{len(unknown)} unknown venue orders {'cancelled' if self.policy == 'cancel' else 'adopted'}; "
                  f"positions ours={expected} venue={venue_pos}")
        result = ReconcileResult(ok, detail, ts_ns)
        self.last_result = result
        out.append((ROUTER, result))
        if not ok:
            out.append((WATCHDOG, Alert("critical", "position-mismatch", detail, ts_ns)))
        return out

    def _tell_owners(self, venue_fills: list[Fill], venue_working: dict, filled_coids: set[str], closed: set[str],
                     ts_ns: int, out: Out) -> int:
        """Append to ``out`` what each owner missed of its own orders (see ``owner_view``); returns
        the number of orders concerned. Everything sent is idempotent for the owner. Fills the
        journal does not have yet are left out: they reach the owner through the router."""
        if self.owner_view is None or self.store is None:
            return 0
        by_coid: dict[str, list[Fill]] = {}
        for f in venue_fills:
            by_coid.setdefault(f.client_order_id, []).append(f)
        told = 0
        for coid, (owner, known_filled) in sorted(self.owner_view().items()):
            fills = by_coid.get(coid, [])
            if sum(f.qty for f in fills) > known_filled:
                again = [f for f in fills if self.store.fill_seen(f.trade_id)]
                out += [(owner, f) for f in again]
                told += bool(again)
            elif coid not in venue_working and coid not in filled_coids and coid not in closed:
                rec = self.store.load_order(coid)
                if rec is not None and rec["status"] in ("CANCELLED", "REJECTED"):
                    out.append((owner, OrderCancelled(coid, owner, ts_ns, f"reconcile: {rec['status'].lower()} at venue")))
                    told += 1
        return told
