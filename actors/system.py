"""Wiring: the handlers, their topics, the supervision tree (paper) and the deterministic
single-threaded dispatcher (backtest). Both modes build the *same* handlers with
:func:`build_handlers`; only the hosting differs.

Supervision tree (paper mode; docs/architecture.md)::

    root (rest_for_one, 2 restarts / 60 s -> escalate: emergency flatten, exit 3)
    |- infra       (one_for_one, 5/60): broker, watchdog
    |- execution   (one_for_all, 3/60): risk, router, reconciler   (restart = HALTED until reconciled)
    |- strategies  (one_for_one, 5/60): grid-<primary>, hedge
    '- marketdata  (rest_for_one, 5/60): bars-<primary>, bars-<hedge>, feed
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any, Callable

from loguru import logger

from actors.execution import BrokerHandler, OrderRouter, PaperVenue, Reconciler, WriteAhead
from actors.feed import BarBuilderHandler
from domain.calendar import SessionCalendar
from domain.grid import GridConfig, GridStrategy
from domain.handler import (BROKER, CLOCK_TOPIC, EXPOSURE_TOPIC, FEED, HEDGE, RECONCILED_TOPIC, RECONCILER, RISK,
                            RISK_STATE_TOPIC, ROUTER, STATUS_TOPIC, WATCHDOG, IdGenerator, Out, RejectedMessage, bar_builder,
                            bars_topic, grid_strategy, ticks_topic)
from domain.hedge import HedgeConfig, HedgeManager
from domain.messages import OrderIntent
from domain.portfolio import Portfolio
from domain.risk import RiskManager

ORDER_OUTPUTS = (OrderIntent,)
"""Outputs after which a strategy's snapshot is written before they are sent: a restarted strategy
must hold every order the router may have sent, or it places its level again next to the one still
working at the venue. Everything else a strategy mirrors may lag (written behind): a cancel it
asked for is asked again on its next rebuild, and what it missed of its orders' fills and cancels
the reconciler sends it again after a restart (``Reconciler.owner_view``)."""

ACK_EVENTS = frozenset({"OrderSubmitted", "OrderAccepted"})
"""Order acknowledgements: the grid and the hedge record an order when they decide it, so these
change nothing they mirror."""

TRADE_EVENTS_PERSIST = ("Fill", "OrderAccepted", "OrderCancelled", "OrderRejected", "OrderDenied", "OrderSubmitted",
                        "Bar", "RiskStateChanged", "ExposureUpdate", "ReconcileResult", "Flatten", "Shutdown",
                        "ClockTick")


def grid_config(cfg: Any) -> GridConfig:
    g = cfg.grid
    return GridConfig(levels_each_side=g.levels_each_side, atr_period=g.atr_period, atr_bar_s=g.atr_bar_s,
                      atr_multiplier=g.atr_multiplier, take_profit_atr=g.take_profit_atr,
                      risk_per_lot=float(g.risk_per_lot), pyramid_alpha=g.pyramid_alpha, max_lot=g.max_lot,
                      min_spacing_ticks=g.min_spacing_ticks, rebuild_shift_spacings=g.rebuild_shift_spacings,
                      surge_ratio=g.surge_ratio, surge_lot_factor=g.surge_lot_factor,
                      surge_spacing_factor=g.surge_spacing_factor, surge_ema_bars=g.surge_ema_bars,
                      mid_bar_s=min(60, g.recalc_interval_s))


def hedge_config(cfg: Any) -> HedgeConfig:
    h = cfg.hedge
    return HedgeConfig(primary=cfg.grid.instrument, hedge=h.instrument, activation_spacings=h.activation_spacings,
                       min_ratio=h.min_ratio, max_ratio=h.max_ratio, window=h.window, bar_s=h.bar_s,
                       low_corr=h.low_corr, low_corr_minutes=int(h.low_corr_minutes), low_corr_factor=h.low_corr_factor,
                       rebalance_band=h.rebalance_band, min_hold_s=h.min_hold_s)


def topics(cfg: Any, venue_matches_ticks: bool = True) -> dict[str, tuple[str, ...]]:
    """Topic -> subscribers. The hedge reads both instruments' bars (with ticks passed through).
    ``venue_matches_ticks``: the broker hosts a venue that fills orders from our ticks (paper,
    backtest); a real venue (ProjectX) matches on its own and gets none."""
    p, hsym = cfg.grid.instrument, cfg.hedge.instrument
    strategies = (grid_strategy(p),) + ((HEDGE,) if cfg.hedge.enabled else ())
    venue = (BROKER,) if venue_matches_ticks else ()
    t = {
        ticks_topic(p): venue + (bar_builder(p), RISK),
        ticks_topic(hsym): venue + (bar_builder(hsym), RISK),
        bars_topic(p): strategies,
        bars_topic(hsym): (HEDGE,) if cfg.hedge.enabled else (),
        CLOCK_TOPIC: (bar_builder(p), bar_builder(hsym), RISK) + strategies + (WATCHDOG,),
        RISK_STATE_TOPIC: strategies + (WATCHDOG,),
        EXPOSURE_TOPIC: strategies + (WATCHDOG,),
        STATUS_TOPIC: (RISK, WATCHDOG) + ((HEDGE,) if cfg.hedge.enabled else ()),
        RECONCILED_TOPIC: (RISK, FEED),
    }
    return t


def build_factories(cfg: Any, ids: IdGenerator, venue: PaperVenue, store: Any | None, trade_log: Any,
                    start_ns: int, reconcile_on_start: bool,
                    write_ahead: WriteAhead | None = None,
                    writer: WriteBehind | None = None) -> dict[str, Callable[[], Any]]:
    """Handler factories by actor name. Each factory restores mirrored state when ``store`` has it.
    ``write_ahead`` (with ``store``) takes the router's order writes off its thread. ``writer``: the
    :class:`WriteBehind` that :func:`persist_hook` hands risk's mirror to; a (re)started risk actor
    waits for it before it restores, so it never restores a mirror older than its predecessor."""
    cal = SessionCalendar(cfg.profile.flat_margin_s)
    p, hsym = cfg.grid.instrument, cfg.hedge.instrument
    limits = cfg.profile.limits()

    def make_risk() -> RiskManager:
        r = RiskManager(limits, ids, cal, start_ns, halted_until_reconciled=reconcile_on_start)
        if store is not None:
            if writer is not None and not writer.flush():
                logger.warning("risk: the Redis writer did not finish within 5 s; restoring the mirror as it is "
                               "(the reconciler replays any fill it lacks)")
            saved = store.load_strategy(RISK)
            if saved:
                r.restore(saved)
            from domain.orders import OrderStatus
            for coid, rec in store.load_working_orders().items():
                if coid not in r.book:
                    r.book.add(rec["intent"], OrderStatus.ACCEPTED if rec.get("venue_order_id") else OrderStatus.SUBMITTED)
        return r

    first_grid = True

    def make_grid() -> GridStrategy:
        nonlocal first_grid
        g = GridStrategy(p, grid_strategy(p), grid_config(cfg), ids, cal)
        saved = store.load_strategy(g.strategy_id) if store is not None else None
        if saved:
            g.restore(saved)
            if first_grid:
                # process start: nothing is in flight, so a slot whose order the router never
                # journalled died with the old process before reaching the venue (a later restart
                # of the actor skips this: its newest intents may still be on their way)
                lost = [c for c in g.slots if store.load_order(c) is None]
                for c in lost:
                    del g.slots[c]
                if lost:
                    logger.info("{}: {} restored order(s) never reached the router, dropped: {}", g.strategy_id,
                                len(lost), lost)
        first_grid = False
        return g

    def make_hedge() -> HedgeManager:
        h = HedgeManager(hedge_config(cfg), ids, cal)
        saved = store.load_strategy(HEDGE) if store is not None else None
        if saved:
            h.restore(saved)
        return h

    def risk_view() -> tuple[dict[str, int], set[str] | None, int]:
        """Positions, applied trade ids and the time at or before which every fill was applied
        (ids not kept), from one read of risk's mirrored snapshot."""
        saved = store.load_strategy(RISK) if store is not None else None
        if not saved:
            return {}, set(), 0
        pf = Portfolio.from_dict(saved["portfolio"])
        return pf.net_positions(), set(pf.seen_trade_ids), pf.seen_floor_ns

    def owner_view() -> dict[str, tuple[str, int]]:
        """Orders the strategies' mirrored snapshots hold as working, with the filled quantity
        each has seen (the hedge pops an order only when it is done: 0)."""
        view: dict[str, tuple[str, int]] = {}
        grid = store.load_strategy(grid_strategy(p)) if store is not None else None
        for coid, filled in GridStrategy.held_orders(grid or {}).items():
            view[coid] = (grid_strategy(p), filled)
        hedge = store.load_strategy(HEDGE) if store is not None and cfg.hedge.enabled else None
        for coid in ((hedge or {}).get("working") or {}):
            view[coid] = (HEDGE, 0)
        return view

    f: dict[str, Callable[[], Any]] = {
        BROKER: lambda: BrokerHandler(venue, write_ahead),
        RISK: make_risk,
        ROUTER: lambda: OrderRouter(store, trade_log, write_ahead),
        RECONCILER: lambda: Reconciler(store, venue.snapshot, risk_view, owner_view=owner_view),
        grid_strategy(p): make_grid,
        bar_builder(p): lambda: BarBuilderHandler(p),
        bar_builder(hsym): lambda: BarBuilderHandler(hsym),
    }
    if cfg.hedge.enabled:
        f[HEDGE] = make_hedge
    return f


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
    so that a restarted strategy knows every order the router may have sent (a kill -9 inside the
    write-behind window once left the grid stacking orders on one level after the restart);
    otherwise it is encoded and written by ``writer`` when given (acknowledgements write nothing:
    they change no strategy state). What a lagging snapshot misses of fills and cancels, the
    reconciler sends the restarted strategy again.
    Snapshots carry a sequence number: an older one never overwrites a newer one. Risk's mirror (its
    snapshot, counters and positions) is one MULTI/EXEC, so it is never seen half-written. With
    ``writer`` it is queued there with no linger: written as soon as the writer's thread runs, off
    the decision path, and a burst of fills writes only the newest mirror (measured:
    docs/architecture.md, "The broker first, and risk's mirror off the decision path"). It may so
    lag the actor by the write in progress; what that costs is covered: the router journals every
    fill before risk sees it, the reconciler sends risk a journalled fill its mirror lacks (and
    counts it in the expected position), and a restarted risk actor waits for the writer before it
    restores (:func:`build_factories`). Without ``writer`` it is written at once. A message that changed
    nothing risk mirrors but its clock (an order accepted, a quiet minute) writes nothing; the
    restored clock is taken from the venue anyway. A restarted risk actor (a new handler) always
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


class Dispatcher:
    """Single-threaded FIFO dispatcher for backtests: same handlers, same routing, no threads.

    Deterministic: messages are delivered in the order they were produced; ties cannot occur.
    """

    def __init__(self, handlers: dict[str, Any], topic_map: dict[str, tuple[str, ...]]) -> None:
        self.handlers = handlers
        self.topics = topic_map
        self.queue: deque[tuple[str, Any]] = deque()
        self.dead_letters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.delivered = 0

    def send(self, out: Out) -> None:
        for dest, msg in out:
            for name in self.topics.get(dest, (dest,)):
                self.queue.append((name, msg))

    def drain(self) -> None:
        q, handlers = self.queue, self.handlers
        while q:
            name, msg = q.popleft()
            h = handlers.get(name)
            if h is None:
                self.dead_letters[name] += 1
                continue
            self.delivered += 1
            try:
                out = h.handle(msg)
            except RejectedMessage as exc:
                self.rejected[f"{name}:{type(msg).__name__}"] += 1
                logger.debug("{} rejected {}: {}", name, type(msg).__name__, exc)
                continue
            if out:
                self.send(out)
