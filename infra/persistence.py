"""Persistence threads: order records written ahead of their send, snapshots written behind, and
client order ids from reserved blocks. They persist; they never talk to a venue.

- :class:`WriteAhead`: the router queues each new order's record; one thread writes every order
  queued meanwhile in one MULTI/EXEC. The venue adapter sends an order only once its record is in
  Redis (:meth:`WriteAhead.wait`), so a crash in between leaves an order in Redis that the venue
  does not have (reconciliation closes it), never the reverse.
- :class:`WriteBehind`: strategy, risk and simulated-venue snapshots, coalesced per key, written
  one at a time off the decision path; :func:`persist_hook` decides what is written when.
- :class:`StoreIds`: client order ids ``{strategy_id}-{incarnation}-{seq}`` from INCRBY blocks.

Design records (docs/decisions/): 0004-orders-written-ahead-in-batches.md,
0003-snapshots-written-behind.md, 0005-strategy-snapshot-before-its-orders.md and
0006-client-order-ids-from-reserved-blocks.md.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from loguru import logger

from domain.handler import Out
from domain.messages import OrderIntent
from domain.ports import WriteAheadError
from domain.risk import RiskManager

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
                self._end = self.store.reserve_order_seqs(self.block) + 1
                self._next = self._end - self.block
            seq = self._next
            self._next += 1
        return f"{strategy_id}-{self.incarnation}-{seq}"


class WriteAhead:
    """Orders written to Redis before they are sent, batched, off the router's thread.

    The router hands each new order over (:meth:`put`) and goes on with its next message; one
    thread writes every order queued in the meantime with one MULTI/EXEC
    (:meth:`StateStore.save_new_orders`), so the ten orders of a grid rebuild cost about one round
    trip instead of ten in a row. The broker calls :meth:`wait` before it sends an order to the
    venue: an order reaches the venue only once Redis has acknowledged it, and a kill
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
        or did not finish within ``timeout_s`` seconds: the order must then not be sent."""
        with self._lock:
            fut = self._pending.pop(client_order_id, None)
        if fut is None:
            return
        try:
            fut.result(timeout_s)
        except FutureTimeout:
            raise WriteAheadError(f"order {client_order_id} not written to Redis within {timeout_s:g} s") from None
        except Exception as e:  # noqa: BLE001 - the write's own failure
            raise WriteAheadError(f"order {client_order_id} not written to Redis: {e!r}") from None

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


ORDER_OUTPUTS = (OrderIntent,)
"""Outputs after which a strategy's snapshot is written before they are sent: a restarted strategy
must hold every order the router may have sent, or it places its level again next to the one still
working at the venue. Everything else a strategy mirrors may lag (written behind): a cancel it
asked for is asked again on its next rebuild, and what it missed of its orders' fills and cancels
the reconciler sends it again after a restart (``Reconciler.owner_view``;
docs/decisions/0005-strategy-snapshot-before-its-orders.md)."""

ACK_EVENTS = frozenset({"OrderSubmitted", "OrderAccepted"})
"""Order acknowledgements: the grid and the hedge record an order when they decide it, so these
change nothing they mirror."""

TRADE_EVENTS_PERSIST = ("Fill", "OrderAccepted", "OrderCancelled", "OrderRejected", "OrderDenied", "OrderSubmitted",
                        "Bar", "RiskStateChanged", "ExposureUpdate", "ReconcileResult", "Flatten", "Shutdown",
                        "ClockTick")


class WriteBehind:
    """One background thread that applies Redis snapshot writes, the latest per key (coalescing).

    Actors hand over a snapshot and go on with their next message: the JSON encoding and the
    Redis round trip run here, ``linger_s`` seconds after the first write of a key was queued, so
    that a burst (a minute close delivers up to six bars and a clock tick to the hedge) costs one
    encode and one write, after the burst, instead of one per message inside the tick-to-decision
    path. Order writes and the fill journal are NOT deferred: the router writes them synchronously
    before acting. A strategy snapshot may lag its actor by up to ``linger_s`` plus one write at a
    crash; risk's mirror, queued with no linger (:func:`persist_hook`), by the write in progress.
    Writes run one at a time in this one thread, so a key is never overwritten by an older value.

    Args:
        linger_s: default delay between the first ``put`` of a key and its write, seconds (0 = at once).
    """

    def __init__(self, linger_s: float = 0.05) -> None:
        self.linger_s = linger_s
        self._pending: dict[str, Callable[[], None]] = {}
        self._due: dict[str, float] = {}
        self._cv = threading.Condition()
        self._busy = False
        self._hurry = False
        self._thread = threading.Thread(target=self._run, name="redis-write-behind", daemon=True)
        self._thread.start()

    def put(self, key: str, write: Callable[[], None], linger_s: float | None = None) -> None:
        """Queue ``write`` for ``key``, replacing a pending write of the same key (which keeps its
        due time, so a key written on every message is still written every ``linger_s``).
        ``linger_s``: this key's delay, seconds (default: the writer's)."""
        with self._cv:
            self._pending[key] = write
            if key not in self._due:
                self._due[key] = time.monotonic() + (self.linger_s if linger_s is None else linger_s)
                self._cv.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Write everything queued now (no lingering) and wait until done. False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._hurry = True
            self._cv.notify_all()
            try:
                while self._pending or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cv.wait(left)
            finally:
                self._hurry = False
        return True

    def _take_due(self) -> dict[str, Callable[[], None]]:
        """Under the lock: wait for the first due write(s) and take them out of the queue."""
        while True:
            if self._pending:
                now = time.monotonic()
                first = min(self._due.values())
                if self._hurry or first <= now:
                    keys = list(self._pending) if self._hurry else [k for k, d in self._due.items() if d <= now]
                    batch = {k: self._pending.pop(k) for k in keys}
                    for k in keys:
                        del self._due[k]
                    return batch
                self._cv.wait(first - now)
            else:
                self._cv.wait()

    def _run(self) -> None:
        while True:
            with self._cv:
                batch = self._take_due()
                self._busy = True
            for key, write in batch.items():
                try:
                    write()
                except Exception:  # a failed mirror write must not kill the writer; the next one retries
                    logger.exception("redis write-behind failed for {}", key)
            with self._cv:
                self._busy = False
                self._cv.notify_all()


def persist_hook(store: Any | None, writer: WriteBehind | None = None) -> Callable[[Any, Any, Out], None] | None:
    """After-message hook ``after(handler, msg, out)``, run before ``out`` is sent: mirror a
    handler's snapshot after state-changing messages (not ticks).

    The snapshot is taken in the actor's thread, consistent with the message just handled (every
    ``snapshot()`` returns fresh containers of immutable values, so it may be encoded elsewhere).
    A strategy's snapshot is written at once when ``out`` holds new orders (:data:`ORDER_OUTPUTS`),
    so that a restarted strategy knows every order the router may have sent; otherwise it would
    place entries again on levels it already holds
    (docs/decisions/0005-strategy-snapshot-before-its-orders.md). After any other message it is
    encoded and written by ``writer`` when given (acknowledgements write nothing: they change no
    strategy state). What a lagging snapshot misses of fills and cancels, the reconciler sends the
    restarted strategy again.
    Snapshots carry a sequence number: an older one never overwrites a newer one. Risk's mirror (its
    snapshot, counters and positions) is one MULTI/EXEC, so it is never seen half-written. With
    ``writer`` it is queued there with no linger: written as soon as the writer's thread runs, off
    the decision path, and a burst of fills writes only the newest mirror
    (docs/decisions/0003-snapshots-written-behind.md). It may so lag the actor by the write in
    progress; what that costs is covered: the router journals every fill before risk sees it, the
    reconciler sends risk a journalled fill its mirror lacks (and counts it in the expected
    position), and a restarted risk actor waits for the writer before it restores (``make_risk`` in
    :meth:`actors.node.Node.factories`). Without ``writer`` it is written at once. A message that
    changed nothing risk mirrors but its clock (an order accepted, a quiet minute) writes nothing;
    the restored clock is taken from the venue anyway. A restarted risk actor (a new handler) always
    writes its first snapshot.
    """
    if store is None:
        return None
    last_risk: dict[str, Any] = {}
    write_lock = threading.Lock()
    seqs: dict[str, int] = {}     # strategy id -> sequence number of its newest snapshot taken
    written: dict[str, int] = {}  # strategy id -> sequence number of the snapshot in Redis

    def save(name: str, snap: dict, seq: int) -> None:
        """Write ``snap`` unless a newer snapshot of ``name`` is already in Redis."""
        text = store.encode(snap)  # outside the lock: an actor's own write never waits on another's encoding
        with write_lock:
            if written.get(name, 0) >= seq:
                return
            store.save_strategy(name, text)
            written[name] = seq

    def after(handler: Any, msg: Any, out: Out = ()) -> None:
        kind = type(msg).__name__
        if kind not in TRADE_EVENTS_PERSIST or not hasattr(handler, "snapshot"):
            return
        name = getattr(handler, "strategy_id", None)
        if name is None:
            return
        if isinstance(handler, RiskManager):
            fingerprint = handler.mirror_fingerprint()
            if last_risk.get("handler") is handler and fingerprint == last_risk.get("fingerprint"):
                return  # e.g. an order accepted, a clock tick: nothing mirrored changed
            last_risk.update(handler=handler, fingerprint=fingerprint)
            snap = handler.snapshot()
            risk = {**handler.ledger.to_dict(), "state": handler.state.value, "holds": ";".join(handler.holds)}
            positions = {k: p.to_dict() for k, p in handler.portfolio.positions.items()}
            if writer is None:
                store.save_risk_mirror(name, store.encode(snap), risk, positions)
            else:  # fresh containers of immutable values: encoded on the writer's thread
                writer.put(name, lambda: store.save_risk_mirror(name, store.encode(snap), risk, positions), linger_s=0.0)
            return
        if kind in ACK_EVENTS and not out:
            return  # a strategy's state does not change on an acknowledgement (its slot exists already)
        snap = handler.snapshot()
        seq = seqs[name] = seqs.get(name, 0) + 1
        if writer is None or any(isinstance(m, ORDER_OUTPUTS) for _, m in out):
            save(name, snap, seq)  # its orders must not lag the journal: written before they are sent
        else:
            writer.put(name, lambda: save(name, snap, seq))
    return after
