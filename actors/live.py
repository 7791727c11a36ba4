"""Live mode: the paper-mode supervision tree over the ProjectX Gateway (TopstepX or the sandbox).

What differs from paper mode (:class:`actors.runner.PaperSystem`, whose tree is reused):

- **broker** actor: :class:`LiveBrokerHandler` over :class:`infra.projectx.broker.ProjectXBroker`.
  The broker's hub-driven events (fills, status changes) go into the broker actor's own mailbox
  (``directory.tell(BROKER, ev)``) and from there to the router; order calls run on the actor's
  request pool and post their results to the same mailbox (:class:`LiveBrokerHandler`). ``on_reconcile_needed`` sends a ``ReconcileRequest`` to the
  reconciler, which reads the gateway's REST truth through ``broker.snapshot``.
- **feed** actor: :class:`LiveFeed`, fed by a :class:`infra.projectx.hubs.MarketHub` (quotes and
  trades of the resolved front-month contracts) through :class:`actors.feed.FeedCore` validation.
  It starts with warm-up bars from ``History/retrieveBars`` (2-minute bars from the previous
  trading day's open up to now).
- **clock**: a 1-second wall-clock timer sends :class:`WallClock` to the feed, which emits a
  ``ClockTick`` with ``ts = last feed event ts + wall time elapsed since it`` whenever that enters
  a new minute; the 15:10 CT flatten therefore fires even when data is quiet, on real live data as
  on the sandbox's historical replay time.
- **arming**: live mode starts UNARMED unless ``projectx.armed`` (``--arm``). While unarmed, risk
  holds ``unarmed`` (HALTED for strategies: every strategy order is denied, visible in
  ``{ns}:risk`` ``holds`` and in the summary's denials). Risk's own protective closes of an existing
  position (15:10 CT flatten, loss-limit liquidation, shutdown) still go out. The operator arms and
  disarms with ``redis-cli SET {ns}:ops:armed 1`` / ``0`` (polled every second). Disarming cancels
  the strategies' working orders and stops new ones; it does **not** flatten open positions.
- **emergency flatten** (supervision escalation, failed orderly shutdown) calls
  ``ProjectXBroker.flatten`` directly (REST only, no actor).

Timestamps are epoch ns UTC throughout; the trading calendar is America/Chicago.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from actors.execution import BrokerHandler, StoreIds, WriteAheadError
from actors.feed import MINUTE_NS, FeedCore
from actors.runner import PaperSystem, warmup_out
from domain.calendar import SessionCalendar, ns_to_ct, trading_day
from domain.handler import BROKER, CLOCK_TOPIC, FEED, RECONCILER, RISK, ROUTER, WATCHDOG, Out, RejectedMessage
from domain.messages import (CancelOrder, ClockTick, Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderRejected,
                             QuoteTick, ReconcileRequest, ReconcileResult, RiskState, TradeTick)
from domain.orders import OrderStatus
from domain.risk import RiskManager
from infra.projectx import errors as pxe
from infra.projectx.broker import ProjectXBroker
from infra.projectx.hubs import MarketHub
from infra.projectx.mapping import GatewayAccount
from infra.projectx.rest import ProjectXClient
from infra.replay import BarRow, bar_to_ticks

EXIT_OK, EXIT_CONFIG, EXIT_ESCALATED, EXIT_GATEWAY = 0, 2, 3, 4
"""Exit codes of live mode (as documented in ``supervisor.py``)."""
UNARMED_HOLD = "unarmed"
BAR_S = 120
"""Warm-up bar length, seconds (2-minute bars: what the recorded data and the sandbox provide)."""


class LiveStartupError(Exception):
    """Live mode cannot start. ``code`` is the process exit code (2 config/credentials/account/contract,
    4 gateway unreachable). The message never contains credentials."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SetArmed:
    """Arm (orders may reach the gateway) or disarm (strategy orders cancelled and denied)."""

    armed: bool
    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class WallClock:
    """Timer message to the live feed (sent every second of wall time)."""


# --------------------------------------------------------------------------- handlers

class LiveRiskManager(RiskManager):
    """:class:`RiskManager` with the ``unarmed`` hold, switched by :class:`SetArmed`."""

    def set_armed(self, armed: bool, reason: str) -> Out:
        """Release the hold, or set it (HALTED) and cancel every working strategy order."""
        if armed:
            return self._set_hold(UNARMED_HOLD, None, f"armed ({reason})")
        out = self._set_hold(UNARMED_HOLD, RiskState.HALTED, f"unarmed ({reason})")
        for o in self.book.working():
            if o.intent.strategy_id != self.strategy_id:
                out.append((ROUTER, CancelOrder(o.intent.client_order_id, o.intent.strategy_id, self.now_ns,
                                                "disarmed")))
        return out

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, SetArmed):
            if isinstance(msg.ts_ns, int) and msg.ts_ns > self.now_ns:
                self.now_ns = msg.ts_ns
            return self.set_armed(msg.armed, msg.reason)
        return super().handle(msg)


@dataclass(frozen=True, slots=True)
class VenueCallDone:
    """The events of an order call made on the broker's request pool (``OrderAccepted`` /
    ``OrderRejected`` / held fills of a place, ``OrderCancelled`` of a cancel), posted back into the
    broker actor's mailbox, which forwards them to the router."""

    events: tuple


class LiveBrokerHandler(BrokerHandler):
    """Broker actor over :class:`ProjectXBroker`: orders and cancels in; the venue's asynchronous
    events (posted into this mailbox by the broker's event sink) out to the router. Ticks are
    ignored (the gateway matches orders itself).

    With ``post`` (a function that tells this actor a message), each ``Order/place`` and
    ``Order/cancel`` is made in two halves (``ProjectXBroker.begin_submit`` / ``begin_cancel``):

    - the request is written as soon as it may be, without waiting for any answer: a place by the
      write-ahead thread right after the MULTI/EXEC that wrote the order's record
      (:meth:`WriteAhead.when_written`: never before), a cancel by this actor's thread. The orders
      of one decision (a grid rebuild: nine cancels, ten places) so leave back to back, and none
      waits for the answer to another; with a pool that made whole calls, the fifth order waited
      for the first answer (a network round trip to the real gateway);
    - the answer is read on a pool of ``workers`` threads, and comes back as :class:`VenueCallDone`.

    A call that cannot be written without waiting (no idle warm connection, no rate-limit slot, a
    token refresh due, a venue order id still to look up) is made whole on the pool instead.
    Ordering rules kept: a cancel waits for the answer of its own order's place (it needs the venue
    order id); each call is sent once (no retry of order-changing calls, as before); an order whose
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
            return []  # not subscribed in live mode (LiveSystem.venue_matches_ticks); harmless if sent
        if self._pool is not None and isinstance(msg, OrderIntent):
            send = self._first_half("submit", msg, max(msg.ts_ns, self.venue.last_ts))
            if self.write_ahead is not None:  # sent by the write-ahead thread once the record is written
                outcome = self.write_ahead.when_written(msg.client_order_id, lambda: self._begin(send))
            else:
                result = self._begin(send)
                outcome = lambda: result  # noqa: E731
            fut = self._pool.submit(self._call, lambda: self._placed(msg, outcome))
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
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _placed(self, intent: OrderIntent, outcome: Any) -> list:
        """On a pool thread: wait until the place was sent (or its write-ahead failed: rejected),
        then read the answer."""
        try:
            result = outcome()
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


class LoggedReconciler:
    """The reconciler handler, logging every result (a live operator wants to see each one).

    A reconciliation whose gateway snapshot fails (HTTP 429 storm, 5xx, transport failure, expired
    session, malformed payload: :class:`infra.projectx.errors.ProjectXError` / ``MalformedPayload``)
    does not crash the actor: it is logged (``reconciliation deferred``) and retried by ``retry(reason,
    delay_s)`` with a backoff (1, 2, 4 ... ``RETRY_MAX_S`` s; one retry pending at a time, later
    requests meanwhile coalesce into it). From the ``FAIL_AFTER``-th consecutive failure on, a
    ``ReconcileResult(ok=False)`` goes to the router, so risk HALTs (and alerts) until a retry matches.

    Fix (fault tests, tests/test_live_faults.py): before, the exception escaped the handler, so a
    429 burst during the reconciliation that follows a user-hub reconnect crashed the reconciler 4
    times in a second, exceeded the ``execution`` supervisor's intensity and escalated to an
    emergency flatten (which itself failed under the same 429s and left a position open, exit 3).
    """

    FAIL_AFTER = 3
    RETRY_MAX_S = 10.0
    MISMATCH_RECHECKS = 3
    """A position mismatch is re-checked this many times, 1, 2, 4 s apart, before it is left to the
    operator: a snapshot taken while fills are between the gateway and our journal (an order placed
    during the snapshot that filled at once) mismatches for a moment. Risk stays HALTED meanwhile."""

    def __init__(self, inner: Any, retry: Any | None = None, unsettled: Any | None = None) -> None:
        self.inner = inner
        self.retry = retry
        self.failures = 0
        self.mismatches = 0
        self.retry_pending = threading.Event()
        self.visible: set[str] | None = None
        if unsettled is not None and getattr(inner, "store", None) is not None:
            self._guard_race(unsettled)

    def _guard_race(self, unsettled: Any) -> None:
        """Do not judge orders that the gateway snapshot cannot show yet.

        The reconciler takes the gateway snapshot first and loads the mirror's working orders after
        it, while the broker actor keeps placing orders. An order mirrored (or placed) meanwhile is
        absent from the snapshot and was closed as "not working at venue"; its ``OrderAccepted`` then
        crashed risk (``InvalidTransition: OrderAccepted not allowed in CANCELLED``, restart of the
        execution subtree, and an order at the gateway the mirror no longer knew). Fix: the mirror's
        working set is read just before the snapshot (B) and just after it (A). Orders of A not in B,
        and orders of B whose place call was unsettled then (``unsettled(coid)``: in flight, or of this
        run and not yet at the broker), count as working at the venue for this check (so they are
        neither closed nor taken for unknown venue orders); orders mirrored after A are hidden from the
        reconciler (the snapshot cannot contain them either). The next reconciliation judges them.
        """
        inner, store, snap = self.inner, self.inner.store, self.inner.venue_snapshot

        def venue_snapshot(ts_ns: int) -> Any:
            before = store.load_working_orders()
            pending = {c for c in before if unsettled(c)}
            result = snap(ts_ns)
            after = store.load_working_orders()
            self.visible = set(after)
            pending |= after.keys() - before.keys()
            shown = {o.client_order_id for o in result.working}
            extra = tuple(after[c]["intent"] for c in sorted(pending) if c in after and c not in shown)
            if extra:
                logger.info("reconciliation: {} order(s) placed during the snapshot counted as working: {}",
                            len(extra), [i.client_order_id for i in extra])
                result = dataclasses.replace(result, working=tuple(result.working) + extra)
            return result

        inner.venue_snapshot = venue_snapshot
        inner.store = _VisibleStore(store, self)

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, ReconcileRequest) and msg.reason.startswith(RETRY_PREFIX):
            self.retry_pending.clear()
        elif isinstance(msg, ReconcileRequest) and self.retry_pending.is_set():
            logger.info("reconciliation {}: coalesced into the pending retry", msg.reason)
            return []
        try:
            out = self.inner.handle(msg)
        except (pxe.ProjectXError, pxe.MalformedPayload) as e:
            if self.retry is None or not isinstance(msg, ReconcileRequest):
                raise
            self.failures += 1
            delay = min(self.RETRY_MAX_S, 2.0 ** (self.failures - 1))
            reason = msg.reason.removeprefix(RETRY_PREFIX)
            logger.warning("reconciliation deferred ({}): gateway snapshot failed: {}; retry {} in {:.0f}s",
                           reason, e, self.failures, delay)
            self.retry_pending.set()
            self.retry(RETRY_PREFIX + reason, delay)
            if self.failures < self.FAIL_AFTER:
                return []
            detail = f"{reason}: gateway snapshot failed {self.failures} times in a row ({e})"
            logger.error("reconciliation FAILED: {}", detail)
            return [(ROUTER, ReconcileResult(False, detail, msg.ts_ns))]
        self.failures = 0
        r = self.inner.last_result
        if r is not None and isinstance(msg, ReconcileRequest) and not msg.reuse_last:
            if r.ok:
                logger.info("reconciliation ok: {}", r.detail)
                self.mismatches = 0
            elif self.retry is not None and self.mismatches < self.MISMATCH_RECHECKS:
                # a snapshot taken while fills are between the gateway and us (or whose REST reads
                # straddle a fill) differs for a moment: halt, say so, look again before alerting
                self.mismatches += 1
                delay = 2.0 ** (self.mismatches - 1)
                logger.warning("reconciliation: positions differ (check {} of {}; fills may still be on their "
                               "way), re-checking in {:.0f}s, risk HALTED meanwhile: {}", self.mismatches,
                               self.MISMATCH_RECHECKS + 1, delay, r.detail)
                self.retry_pending.set()
                self.retry(RETRY_PREFIX + msg.reason.removeprefix(RETRY_PREFIX), delay)
                pending = dataclasses.replace(r, final=False)
                out = [(d, pending if m is r else m) for d, m in out
                       if not (d == WATCHDOG and getattr(m, "key", "") == "position-mismatch")]
            else:
                logger.error("reconciliation MISMATCH: {}", r.detail)
        return out


class _VisibleStore:
    """The state store as the reconciler sees it: ``load_working_orders`` without the orders mirrored
    after the last snapshot's second read (see :meth:`LoggedReconciler._guard_race`)."""

    def __init__(self, store: Any, owner: LoggedReconciler) -> None:
        self._store, self._owner = store, owner

    def load_working_orders(self) -> dict[str, dict[str, Any]]:
        working = self._store.load_working_orders()
        visible = self._owner.visible
        return working if visible is None else {c: r for c, r in working.items() if c in visible}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


RETRY_PREFIX = "retry: "
"""Reason prefix of the reconciliation retries scheduled by :class:`LoggedReconciler`."""


class LiveFeed:
    """Live feed handler: hub ticks through :class:`FeedCore`, plus the wall-clock ``ClockTick``.

    Trades are validated and routed like replayed ones. Quotes are validated and advance the
    clock only (the strategies trade on prints; no handler downstream takes quotes).

    Args:
        warmup: ``(destination, WarmupBars)`` pairs sent when the actor starts.
        anchor_ns: event time to start the clock from (end of the last history bar), epoch ns UTC.
    """

    LOG_FIRST = 20

    def __init__(self, warmup: Out, anchor_ns: int) -> None:
        self.core = FeedCore()
        self.warmup = warmup
        self.last_ts = anchor_ns
        self.last_mono = time.monotonic_ns()
        self.sent = 0
        self.quotes = 0

    def start(self) -> Out:
        return list(self.warmup)

    def now_ns(self) -> int:
        """Last feed event time plus the wall time elapsed since it arrived, epoch ns UTC."""
        return self.last_ts + (time.monotonic_ns() - self.last_mono)

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, TradeTick):
            out = self.core.route(msg)
            if out:
                self._anchor(msg.ts_ns)
                self.sent += 1
            return out
        if isinstance(msg, QuoteTick):
            reason = self.core.validator.check_quote(msg)
            if reason:
                n = self.core.rejected[reason]
                if n <= self.LOG_FIRST:
                    logger.warning("feed rejected quote {} at ts_ns {}: {} ({} so far)", msg.instrument, msg.ts_ns,
                                   reason, n)
                return []
            self.quotes += 1
            self._anchor(msg.ts_ns)
            return self._clock(msg.ts_ns)
        if isinstance(msg, WallClock):
            return self._clock(self.now_ns())
        if isinstance(msg, ReconcileResult):
            return []  # the market does not wait for us: live data flows from the start
        raise RejectedMessage(f"feed: unexpected message {type(msg).__name__}")

    def _anchor(self, ts_ns: int) -> None:
        if ts_ns >= self.last_ts:
            self.last_ts, self.last_mono = ts_ns, time.monotonic_ns()

    def _clock(self, ts_ns: int) -> Out:
        minute = ts_ns // MINUTE_NS
        if self.core.minute is not None and minute <= self.core.minute:
            return []
        self.core.minute = minute
        return [(CLOCK_TOPIC, ClockTick(ts_ns))]


# --------------------------------------------------------------------------- gateway checks

def connect(cfg: Any, username: str, api_key: str) -> tuple[ProjectXClient, GatewayAccount, dict[str, str]]:
    """Log in, pick the account and resolve the front-month contracts.

    Returns: (client, account, {instrument: contract id}).
    Raises LiveStartupError: authentication refused, unknown account, account that cannot trade,
        funded account without ``confirm_funded``, contract not resolvable (code 2); gateway
        unreachable or any other gateway error (code 4).
    """
    px = cfg.projectx
    client = ProjectXClient(px.base_url, username, api_key, read_attempts=2, backoff_max_s=2.0)
    try:
        try:
            client.token()
            accounts = client.accounts()
        except pxe.AuthenticationFailed as e:
            raise LiveStartupError(f"ProjectX login refused for user {username!r} at {px.base_url}: "
                                   f"{e.code or e}; check PROJECTX_USERNAME / PROJECTX_API_KEY") from None
        except (pxe.RequestNotSent, pxe.TransportFailure) as e:
            raise LiveStartupError(f"ProjectX gateway {px.base_url} unreachable: {e}", EXIT_GATEWAY) from None
        wanted = px.account
        match = [a for a in accounts if str(a.id) == wanted or a.name == wanted]
        if not match:
            known = ", ".join(f"{a.id} {a.name}" for a in accounts) or "none"
            raise LiveStartupError(f"projectx.account: no active account {wanted!r}; available: {known}")
        account = match[0]
        kind = "practice" if account.simulated else "FUNDED"
        if not account.can_trade:
            raise LiveStartupError(f"projectx.account: account {account.id} {account.name} cannot trade "
                                   "(canTrade false)")
        if not account.simulated and not px.confirm_funded:
            raise LiveStartupError(f"projectx.account: {account.id} {account.name} is a funded account "
                                   "(simulated: false); refusing to trade it without --confirm-funded")
        contracts: dict[str, str] = {}
        for inst in dict.fromkeys((cfg.grid.instrument, cfg.hedge.instrument)):
            try:
                contracts[inst] = client.resolve_front_month(inst).id
            except pxe.ContractResolutionError as e:
                raise LiveStartupError(f"contract for {inst}: {e}") from None
        logger.info("ProjectX: account {} {} ({}), contracts {}", account.id, account.name, kind, contracts)
        return client, account, contracts
    except pxe.ProjectXError as e:  # anything else the gateway answered at startup
        client.close()
        raise LiveStartupError(f"ProjectX gateway {px.base_url}: {e}", EXIT_GATEWAY) from None
    except BaseException:
        client.close()
        raise


def history_warmup(client: ProjectXClient, contracts: dict[str, str], cfg: Any) -> tuple[Out, int]:
    """Warm-up messages from ``History/retrieveBars`` and the gateway's current time.

    Finds the last closed trading day from daily bars (the last 400 calendar days), then reads the
    2-minute bars from that day's open up to now and turns them into ``WarmupBars`` like paper
    mode (:func:`actors.runner.warmup_out`). Returns (messages, anchor) where anchor is the end of
    the latest 2-minute bar (epoch ns UTC): the gateway's "now" as far as history shows it (the
    sandbox's clock is its replay time, not the wall clock). Raises ProjectXError.
    """
    now = dt.datetime.now(dt.timezone.utc)
    ticks: dict[str, list[TradeTick]] = {}
    anchor = 0
    for inst, cid in contracts.items():
        days = client.retrieve_bars(cid, now - dt.timedelta(days=400), now, unit=4, unit_number=1)
        if not days:
            logger.warning("ProjectX: no daily history for {} ({}); no warm-up", inst, cid)
            continue
        last_day = trading_day(days[-1].ts_ns + 12 * 3600 * 10**9)
        start = dt.datetime.fromtimestamp(days[-1].ts_ns / 1e9, dt.timezone.utc) - dt.timedelta(days=1)
        bars = client.retrieve_bars(cid, start, min(now, start + dt.timedelta(days=5)), unit=2, unit_number=BAR_S // 60)
        rows = [BarRow(inst, b.ts_ns, BAR_S, b.open, b.high, b.low, b.close, b.volume) for b in bars
                if trading_day(b.ts_ns) >= last_day]
        ticks[inst] = [t for row in rows for t in bar_to_ticks(row)]
        if rows:
            anchor = max(anchor, rows[-1].end_ns)
        logger.info("ProjectX: warm-up {} with {} 2-minute bars from trading day {}", inst, len(rows), last_day)
    if not anchor:
        anchor = time.time_ns()
    return warmup_out(ticks, cfg, anchor), anchor


# --------------------------------------------------------------------------- system

class LiveSystem(PaperSystem):
    """The supervised actor system over one ProjectX account (see the module docstring).

    Args:
        cfg: :class:`config.settings.AppConfig` (``projectx`` section used).
        store, alerter, metrics: as :class:`PaperSystem`.
        client: a logged-in :class:`ProjectXClient`; account: the checked account;
        contracts: our instrument -> gateway contract id.
    """

    mode = "live"
    venue_matches_ticks = False  # the gateway matches on its own: no ticks to the broker actor
    feed_on_loop = True  # hub callbacks post to the live feed, which never blocks: it shares the loop
    broker_first = True  # orders and cancels sent before the loop's other waiting messages (no ticks here)

    def __init__(self, cfg: Any, store: Any, alerter: Any, metrics: Any | None, client: ProjectXClient,
                 account: GatewayAccount, contracts: dict[str, str]) -> None:
        from infra.trade_log import TradeLog
        self.cfg, self.store, self.alerter, self.metrics = cfg, store, alerter, metrics
        self.client, self.account, self.contracts = client, account, contracts
        self.armed = threading.Event()
        if cfg.projectx.armed:
            self.armed.set()
        self.incarnation = store.new_incarnation()
        self.ids = StoreIds(store, self.incarnation)
        hubs = cfg.projectx.hubs_url
        self.venue = ProjectXBroker(client, account.id, contracts, hub_url=hubs,
                                    on_reconcile_needed=self._reconcile_needed)
        self._venue_checked_at = float("-inf")  # monotonic s of the last REST flat check (_venue_flat)
        self._venue_seen = "gateway not asked yet"  # what that check found (for the log)
        client.keep_warm(LiveBrokerHandler.WARM_CONNECTIONS)  # an order never waits for a TCP/TLS handshake
        self.warmup, self.start_ns = history_warmup(client, contracts, cfg)
        self.venue.last_ts = max(self.venue.last_ts, self.start_ns)
        self.days = [trading_day(self.start_ns).isoformat()]
        self.resumed = store.load_strategy(RISK) is not None
        name = f"live_{cfg.runtime.namespace.replace(':', '_')}_{self.days[0]}.csv"
        trades = Path(cfg.runtime.run_dir) / "trades" / name
        self.trade_log = TradeLog(trades)
        self.market = MarketHub(hubs, client.token, on_quote=self._on_tick, on_trade=self._on_tick,
                                on_state=lambda s: logger.warning("ProjectX market hub {}", s))
        self._wire()

    # ------------------------------------------------------------------ tree hooks
    def _factories(self) -> dict[str, Any]:
        f = super()._factories()
        cfg, store = self.cfg, self.store
        cal = SessionCalendar(cfg.profile.flat_margin_s)

        def make_risk() -> LiveRiskManager:
            r = LiveRiskManager(cfg.profile.limits(), self.ids, cal, self.start_ns, halted_until_reconciled=True)
            saved = store.load_strategy(RISK)
            if saved:
                r.restore(saved)
            for coid, rec in store.load_working_orders().items():
                if coid not in r.book:
                    status = OrderStatus.ACCEPTED if rec.get("venue_order_id") else OrderStatus.SUBMITTED
                    r.book.add(rec["intent"], status)
            r.set_armed(self.armed.is_set(), "start")  # state stays HALTED until reconciled: nothing to publish
            return r

        f[RISK] = make_risk
        f[BROKER] = lambda: LiveBrokerHandler(self.venue, post=lambda ev: self.directory.tell(BROKER, ev),
                                              write_ahead=self.write_ahead)
        make_reconciler = f[RECONCILER]
        f[RECONCILER] = lambda: LoggedReconciler(make_reconciler(), self._retry_reconcile, self._unsettled)
        return f

    def _make_feed(self) -> LiveFeed:
        anchor = self.feed_handler.last_ts if self.feed_handler is not None else self.start_ns
        warm = self.warmup if self.feed_handler is None else []  # a restarted feed does not re-warm
        self.feed_handler = LiveFeed(warm, anchor)
        return self.feed_handler

    VENUE_FLAT_POLL_S = 1.0
    """The shutdown's flat check (polled every 50 ms) asks the gateway at most this often, seconds.
    While the venue lags risk's book (a close in flight, an order not ours still working), asking
    each time (2 REST calls) would fill the client's rate window (180 / 60 s) within 5 s, and the
    emergency flatten that follows would then wait for slots."""

    def _venue_flat(self) -> bool:
        """Risk's book flat, then confirmed by the gateway (REST: working orders and positions, at
        most once per :attr:`VENUE_FLAT_POLL_S`)."""
        if not self._risk_flat():
            return False
        now = time.monotonic()
        if now - self._venue_checked_at < self.VENUE_FLAT_POLL_S:
            return False
        self._venue_checked_at = now
        try:
            orders = self.client.query_orders(self.account.id)
            positions = [p for p in self.client.open_positions(self.account.id) if p.size]
        except pxe.ProjectXError as e:
            logger.warning("flat check failed: {}", e)
            return False
        self._venue_seen = (f"gateway working orders {sorted(str(o.custom_tag or o.id) for o in orders)}, "
                            f"positions {[(p.contract_id, p.size) for p in positions]}")
        if orders or positions:
            return False
        logger.info("flat check: risk's book flat, and the gateway shows no working order and no position")
        return True

    def _not_flat_detail(self) -> str:
        return f"{super()._not_flat_detail()}; last check: {self._venue_seen}"

    # ------------------------------------------------------------------ inputs
    def _on_tick(self, tick: Any) -> None:
        self.directory.tell(FEED, tick)

    def now_ns(self) -> int:
        """The live event clock (see :class:`LiveFeed`), epoch ns UTC."""
        feed = self.feed_handler
        return feed.now_ns() if feed is not None else self.start_ns

    def _reconcile_needed(self, reason: str) -> None:
        self.directory.tell(RECONCILER, ReconcileRequest(reason, self.now_ns()))

    def _unsettled(self, coid: str) -> bool:
        """True if a gateway snapshot may not show ``coid`` yet: its place call is in flight, or it is
        an order of this run (``{strategy}-{incarnation}-{seq}``) still on its way to the broker."""
        state = self.venue.placing(coid)
        if state is not None:
            return state
        parts = coid.rsplit("-", 2)
        return len(parts) == 3 and parts[1] == str(self.incarnation)

    def _retry_reconcile(self, reason: str, delay_s: float) -> None:
        """Ask the reconciler again in ``delay_s`` (a daemon timer; nothing once the system is done)."""
        def fire() -> None:
            if self.done.is_set():
                return
            try:
                self.directory.tell(RECONCILER, ReconcileRequest(reason, self.now_ns()))
            except Exception as e:  # reconciler between incarnations: its start reconciles anyway
                logger.warning("reconciliation retry ({}) not delivered: {}", reason, e)
        t = threading.Timer(delay_s, fire)
        t.daemon = True
        t.start()

    # ------------------------------------------------------------------ arming
    def set_armed(self, armed: bool, reason: str) -> None:
        """Arm or disarm (see the module docstring); records ``armed`` in ``{ns}:meta``."""
        if armed == self.armed.is_set():
            return
        if armed:
            self.armed.set()
        else:
            self.armed.clear()
        logger.warning("live trading {} ({})", "ARMED" if armed else "DISARMED", reason)
        self.store.client.hset(self.store.key("meta"), "armed", "1" if armed else "0")
        self.directory.tell(RISK, SetArmed(armed, reason, self.now_ns()))

    def _poll_ops(self) -> None:
        try:
            raw = self.store.client.get(self.store.key("ops", "armed"))
        except Exception as e:  # Redis trouble must not stop the clock
            logger.warning("cannot read the ops armed flag: {}", e)
            return
        if raw in ("1", b"1"):
            self.set_armed(True, "ops:armed = 1")
        elif raw in ("0", b"0"):
            self.set_armed(False, "ops:armed = 0")

    def _clock_loop(self) -> None:
        while not self.done.wait(1.0):
            self.directory.tell(FEED, WallClock())
            self._poll_ops()

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Connect the user hub, start the tree (HALTED until reconciled), then market data and the timer."""
        armed = self.armed.is_set()
        self.store.client.set(self.store.key("ops", "armed"), "1" if armed else "0")
        self.venue.set_event_sink(lambda ev: self.directory.tell(BROKER, ev))
        self.venue.start()
        if self.venue.hub is not None and not self.venue.hub.wait_connected(15.0):
            logger.warning("ProjectX user hub not connected after 15 s; continuing (reconcile covers the gap)")
        super().start()
        self.store.client.hset(self.store.key("meta"), mapping={"armed": "1" if armed else "0",
                                                                "account": str(self.account.id)})
        logger.warning("live trading on account {} {}: {}", self.account.id, self.account.name,
                       "ARMED" if armed else f"UNARMED (arm: redis-cli SET {self.store.key('ops', 'armed')} 1)")
        for inst, cid in self.contracts.items():
            self.market.subscribe(cid, inst)
        self.market.start()
        threading.Thread(target=self._clock_loop, name="live-timer", daemon=True).start()

    def summary(self, reason: str, seconds: float) -> Any:
        """The session summary over the trading days from the start to now."""
        self.days = sorted({self.days[0], trading_day(self.now_ns()).isoformat()})
        return super().summary(reason, seconds)

    def stop(self) -> None:
        self.done.set()
        self.market.stop()
        self.tree.stop()
        self.actor_loop.close()
        self.venue.stop()
        self.client.close()


def run_live(cfg: Any, username: str, api_key: str) -> int:
    """Live session until SIGINT/SIGTERM or escalation. Returns the process exit code (module constants)."""
    from infra.alerts import SlackAlerter
    from infra.embedded_redis import EmbeddedRedis
    from infra.metrics import Metrics
    from infra.state_store import StateStore

    t0 = time.perf_counter()
    client, account, contracts = connect(cfg, username, api_key)
    url = cfg.runtime.redis_url or os.environ.get("REDIS_URL")
    if not url:
        url = EmbeddedRedis(Path(cfg.runtime.run_dir) / "redis").ensure_running()
        logger.info("embedded redis-server at {}", url)
    store = StateStore.from_url(url, cfg.runtime.namespace)
    metrics = Metrics()
    if cfg.runtime.metrics_port is not None:
        try:
            port = metrics.start_http_server(cfg.runtime.metrics_port)
            logger.info("prometheus metrics on http://127.0.0.1:{}/metrics", port)
        except OSError as exc:
            logger.warning("metrics endpoint not started: {}", exc)
    try:
        system = LiveSystem(cfg, store, SlackAlerter(os.environ.get("SLACK_WEBHOOK_URL")), metrics, client, account,
                            contracts)
    except pxe.ProjectXError as e:
        client.close()
        raise LiveStartupError(f"history warm-up failed: {e}", EXIT_GATEWAY) from None
    return serve(system, t0, "live", lambda: "armed" if system.armed.is_set() else "unarmed")


def serve(system: Any, t0: float, label: str, state: Any = lambda: "") -> int:
    """Run a system on live data until SIGINT/SIGTERM or escalation, then stop in order (cancel,
    flatten through risk, persist), print the session summary and return the exit code.

    Args:
        system: a started-to-be :class:`LiveSystem` or :class:`actors.paper_live.LiveDataPaperSystem`.
        t0: ``time.perf_counter()`` at the session start (for the summary's wall time).
        label: progress-log prefix; state: ``f() -> str`` extra progress text.
    """
    stop_reason: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop_reason.append(signal.Signals(signum).name)
        system.done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    system.start()
    last_log = time.monotonic()
    while not system.done.wait(0.5):
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            feed = system.feed_handler
            logger.info("{} at {} CT, {} trades {} quotes {}", label,
                        ns_to_ct(system.now_ns()).strftime("%Y-%m-%d %H:%M:%S"),
                        feed.sent if feed else 0, feed.quotes if feed else 0, state())
    reason = system.escalation or (stop_reason[0] if stop_reason else "stopped")
    system.shutdown(reason)
    summary = system.summary(reason, time.perf_counter() - t0)
    system.stop()
    print(summary.render())
    return EXIT_ESCALATED if system.escalation else EXIT_OK
