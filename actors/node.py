"""The trading node: one composition for every mode.

A mode (:data:`actors.tree.MODES`) names the market data source, the execution venue, the clock
and the host; the node builds the adapters it names, one set of handlers (:meth:`Node.factories`:
risk, router, broker, reconciler, one actor per configured strategy, one bar builder per
instrument, the feed, the watchdog) and hosts them either on the deterministic
:class:`actors.dispatcher.Dispatcher` (backtest) or under the supervision tree of
:data:`actors.tree.TREE`. There is one start-up path (:meth:`Node.start`), one shutdown path
(:meth:`Node.shutdown`: cancel, flatten through risk, persist) and one session loop (:func:`run`).

Timestamps are epoch ns UTC; trading days and sessions America/Chicago.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from loguru import logger

from actors.core import ActorLoop, Directory, ask, wait_until
from actors.dispatcher import Dispatcher
from actors.supervision import ActorSpec, Supervisor, SupervisionTree
from actors.tree import DECISION_LOOP, MODES, OWN_THREAD, TREE, Child, ModeSpec, Sup
from actors.ops import OpsDesk
from domain.bars import BarBuilderHandler, aggregate_bars
from domain.calendar import SessionCalendar, ns_to_ct, trading_day
from domain.execution.reconciler import Reconciler, plain_view
from domain.execution.router import OrderRouter
from domain.handler import (BROKER, CLOCK_TOPIC, EXPOSURE_TOPIC, FEED, RECONCILED_TOPIC, RECONCILER, RISK,
                            RISK_STATE_TOPIC, ROUTER, STATUS_TOPIC, WATCHDOG, CounterIds, Out, bar_builder, bars_topic,
                            prints_topic, quotes_topic, ticks_topic)
from domain.messages import Alert, ModelUpdate, ReconcileRequest, SetArmed, Shutdown, WarmupBars
from domain.orders import OrderStatus
from domain.portfolio import Portfolio
from domain.report import SessionSummary
from domain.risk import RiskManager
from domain.strategies.base import StrategyContext
from infra.alerts import log_alert
from infra.feeds import HubData, ReplayData, open_replay
from infra.tick_recorder import RECORDER, FlushTicks, RecordedData, TickRecorder, is_recording_dir, open_recordings
from infra.persistence import StoreIds, WriteAhead, WriteBehind, persist_hook
from infra.trade_log import TradeLog
from infra.venues.handler import IdlePrintsDeferred, VenueHandler
from infra.venues.simulated import SimulatedVenue
from infra.watchdog import Watchdog, WatchdogCheck

EXIT_OK, EXIT_ESCALATED = 0, 3


@dataclass(frozen=True)
class Gateway:
    """A logged-in ProjectX session (:mod:`infra.projectx.session`): the client, the account
    (None when only market data is used) and our instrument -> contract id."""

    client: Any
    account: Any
    contracts: dict[str, str]


class Node:
    """The handlers of one trading account, their host and their adapters.

    Args:
        cfg: :class:`config.settings.AppConfig`.
        spec: the mode (:data:`actors.tree.MODES`).
        store: the :class:`domain.ports.StateStore` (None: nothing mirrored, the backtest).
        alerter: ``send(Alert)`` (the watchdog's Slack or log alerter); metrics: :class:`infra.metrics.Metrics`.
        gateway: the ProjectX session when the mode's data or venue is ProjectX.
        speed: replay speed factor (``inf`` = as fast as the actors go); default ``cfg.runtime.speed``.
        trades_csv: the trades CSV path (default ``{run_dir}/trades/{mode}_...csv``).
        bar_path: a replay's intra-bar path (default ``cfg.runtime.bar_path``).
        keep_trades: False keeps the trades CSV in memory (a backtest's second bar path).
        memo_data: keep the routed replay in this process for the next backtest of the same data
            (:meth:`infra.feeds.ReplayData.routed`; sweep workers).
        session_dir: the folder of the per-day session files (:mod:`infra.session_files`;
            :func:`run` passes ``{log_dir}/<backtest | namespace>`` when ``runtime.session_files``);
            None writes none.
    Raises:
        ProjectXError: the history warm-up failed (hub data).
        ValueError, FileNotFoundError: replay data missing for a configured instrument.
    """

    def __init__(self, cfg: Any, spec: ModeSpec, *, store: Any | None = None, alerter: Any | None = None,
                 metrics: Any | None = None, gateway: Gateway | None = None, speed: float | None = None,
                 trades_csv: Path | None = None, bar_path: str | None = None, keep_trades: bool = True,
                 memo_data: bool = False, session_dir: Path | None = None) -> None:
        self.cfg, self.spec, self.store = cfg, spec, store
        self.alerter, self.metrics, self.gateway = alerter, metrics, gateway
        self.entries = cfg.enabled_strategies()
        self.instruments = cfg.instruments()
        self.calendar = SessionCalendar(cfg.profile.flat_margin_s)
        self.incarnation = store.new_incarnation() if store is not None else 1
        self.ids = StoreIds(store, self.incarnation) if store is not None else CounterIds()
        actors = spec.host == "actors"
        self.writer = WriteBehind() if actors and store is not None else None
        self.write_ahead = WriteAhead(store) if actors and store is not None else None
        self.armed = threading.Event()
        if spec.arming and cfg.projectx.armed:
            self.armed.set()

        if spec.data == "replay":
            sp = cfg.runtime.speed if speed is None else speed
            self.speed = float("inf") if sp == "max" else float(sp)
            if is_recording_dir(Path(cfg.runtime.data_dir), self.instruments):  # recorded ticks, no bar file
                quotes = any(e.plugin().wants_quotes for e in self.entries)  # replayed only for a reader
                self.data: Any = RecordedData(open_recordings(Path(cfg.runtime.data_dir), self.instruments,
                                                              cfg.runtime.start, cfg.runtime.end, quotes=quotes),
                                              self.speed, memo_data)
            else:
                self.data = ReplayData(open_replay(Path(cfg.runtime.data_dir), self.instruments, cfg.runtime.start,
                                                   cfg.runtime.end), self.speed, bar_path or cfg.runtime.bar_path,
                                       self._venue_position, cfg.runtime.path_step_bp, memo=memo_data)
        else:
            assert gateway is not None, "hub data needs a ProjectX gateway session"
            self.speed = 1.0
            self.data = HubData(gateway.client, gateway.contracts, cfg.projectx.hubs_url)
        self.record_dir: Path | None = None
        """Where the tick recorder writes (hub data with ``runtime.record_ticks``), else None."""
        if spec.data == "projectx-hub" and cfg.runtime.record_ticks:
            self.record_dir = Path(cfg.runtime.record_ticks_dir or Path(cfg.runtime.run_dir) / "ticks")

        if spec.venue == "simulated":
            self.venue: Any = SimulatedVenue(store, cfg.runtime.slippage_ticks, cfg.runtime.fill_on_touch, self.writer,
                                             cfg.runtime.max_price_age_s, cfg.runtime.slippage_by_tag,
                                             cfg.runtime.partial_fills)
            self.resumed = self.venue.last_ts > 0
        else:
            from infra.projectx.broker import ProjectXBroker
            from infra.projectx.venue_handler import ProjectXVenueHandler
            assert gateway is not None and gateway.account is not None, "the ProjectX venue needs an account"
            self.venue = ProjectXBroker(gateway.client, gateway.account.id, gateway.contracts,
                                        hub_url=cfg.projectx.hubs_url, on_reconcile_needed=self._reconcile_needed)
            gateway.client.keep_warm(ProjectXVenueHandler.WARM_CONNECTIONS)  # no handshake on the order path
            self.resumed = store is not None and store.load_strategy(RISK) is not None

        if spec.clock == "wall":
            self.start_ns = max(self.data.start_ns(), self.venue.last_ts)
            self.venue.last_ts = self.start_ns
        else:
            self.start_ns = self.venue.last_ts or self.data.start_ns()
        self.days = self.data.trading_days()
        if trades_csv is None:
            ns = cfg.runtime.namespace.replace(":", "_")
            name = (f"backtest_{self.days[0]}_{self.days[-1]}.csv" if not actors
                    else f"{spec.shown}_{ns}_{self.days[0]}.csv")
            trades_csv = Path(cfg.runtime.run_dir) / "trades" / name
        if not keep_trades:
            self.trade_log = TradeLog(None)
        else:
            if not actors or not self.resumed:  # a fresh session starts a fresh log; a resumed one appends
                trades_csv.parent.mkdir(parents=True, exist_ok=True)
                trades_csv.unlink(missing_ok=True)
            self.trade_log = TradeLog(trades_csv, buffered=not actors)  # a backtest writes it at the end
        self.session_files: Any = None
        if session_dir is not None:
            from infra.session_files import SessionFiles
            fresh = not actors or not self.resumed
            self.session_files = SessionFiles(session_dir, [e.name for e in self.entries], spec.shown, fresh=fresh)
            if not fresh:  # a resumed session: trades opened before the restart close with their entry
                self.session_files.prime(self.trade_log.records())
        self._final_risk: Any = None  # a backtest's risk handler at its end (the session files' denials)

        self.directory = Directory()
        self.done = threading.Event()
        self.data_done = threading.Event()
        self.escalation: str | None = None
        self.feed_handler: Any = None
        self._restored: set[str] = set()
        self._tree_up = threading.Event()  # every actor of the tree registered (:meth:`start`)
        self.ops = OpsDesk(self)
        self._model_ids: dict[str, str] = {}  # strategy -> identifier of the model it was last sent
        self._model_errors: dict[str, str] = {}
        self._restarts_reported: dict[str, int] = {}  # shared by every watchdog incarnation
        self._venue_checked_at = float("-inf")
        self._venue_seen = "venue not asked yet"
        self.tree: SupervisionTree | None = None
        self.actor_loop: ActorLoop | None = None

    def _venue_position(self, instrument: str) -> int:
        """Signed contracts the venue holds in ``instrument`` (the ``adverse`` bar path reads it)."""
        p = self.venue.positions().get(instrument)
        return p.qty if p is not None else 0

    # ------------------------------------------------------------------ handlers
    def topics(self) -> dict[str, tuple[str, ...]]:
        """Topic -> subscriber names. Subscribers are listed in config order: the dispatcher
        delivers in that order, so the backtest is deterministic. A venue that matches on our data
        gets the prints first (``prints.<SYM>``, :class:`infra.feeds.FeedCore`)."""
        strategies = tuple(e.name for e in self.entries)
        watchdog = (WATCHDOG,) if self.spec.watchdog else ()  # the backtest has none: no dead letters
        venue = (BROKER,) if self.venue.matches_ticks else ()
        builders = tuple(bar_builder(sym) for sym in self.instruments)
        t: dict[str, tuple[str, ...]] = {}
        for sym in self.instruments:
            t[prints_topic(sym)] = venue
            t[ticks_topic(sym)] = (bar_builder(sym), RISK) + ((RECORDER,) if self.record_dir is not None else ())
            t[quotes_topic(sym)] = (((RECORDER,) if self.record_dir is not None else ())
                                    + tuple(e.name for e in self.entries if sym in e.instruments and e.plugin().wants_quotes))
            t[bars_topic(sym)] = tuple(e.name for e in self.entries if sym in e.instruments)
        t[CLOCK_TOPIC] = builders + (RISK,) + tuple(e.name for e in self.entries if e.plugin().wants_clock) + watchdog
        t[RISK_STATE_TOPIC] = strategies + watchdog
        t[EXPOSURE_TOPIC] = strategies + watchdog
        t[STATUS_TOPIC] = (RISK,) + watchdog + tuple(e.name for e in self.entries if e.plugin().wants_status)
        t[RECONCILED_TOPIC] = (RISK, FEED)
        return t

    def factories(self) -> dict[str, Callable[[], Any]]:
        """Handler factories by actor name, for both hosts. Each factory restores mirrored state
        when the store has it; a restarted risk waits for the writer first, so it never restores
        a mirror older than its predecessor's state."""
        store, spec = self.store, self.spec
        limits = self.cfg.profile.limits()
        f: dict[str, Callable[[], Any]] = {}

        def make_risk() -> RiskManager:
            r = RiskManager(limits, self.ids, self.calendar, self.start_ns,
                            halted_until_reconciled=spec.host == "actors", telemetry=spec.watchdog)
            if store is not None:
                if self.writer is not None and not self.writer.flush():
                    logger.warning("risk: the Redis writer did not finish within 5 s; restoring the mirror as it is "
                                   "(the reconciler replays any fill it lacks)")
                saved = store.load_strategy(RISK)
                if saved:
                    r.restore(saved)
                for coid, rec in store.load_working_orders().items():
                    if coid not in r.book:
                        r.book.add(rec["intent"], OrderStatus.ACCEPTED if rec.get("venue_order_id")
                                   else OrderStatus.SUBMITTED)
            if spec.arming:
                r.set_armed(self.armed.is_set(), "start")  # HALTED until reconciled: nothing to publish
            return r

        f[RISK] = make_risk
        f[ROUTER] = lambda: OrderRouter(store, self.trade_log, self.write_ahead, self.session_files)
        f[BROKER] = self._make_broker
        f[RECONCILER] = self._make_reconciler
        for e in self.entries:
            f[e.name] = self._strategy_factory(e)
        for sym in self.instruments:  # the bars and prints the instrument's strategies read
            readers = [e for e in self.entries if sym in e.instruments]
            periods = tuple(sorted({p for e in readers for p in e.plugin().bar_periods(e.params)}))
            ticks = any(e.plugin().wants_ticks for e in readers)
            f[bar_builder(sym)] = lambda sym=sym, periods=periods, ticks=ticks: BarBuilderHandler(sym, periods, ticks)
        if self.record_dir is not None:
            f[RECORDER] = lambda: TickRecorder(self.record_dir)
        return f

    def _strategy_factory(self, entry: Any) -> Callable[[], Any]:
        plugin = entry.plugin()
        ctx = StrategyContext(entry.name, entry.instruments, self.ids, self.calendar, self.cfg.profile.limits(),
                              telemetry=self.spec.watchdog)
        store = self.store
        first = True

        def make() -> Any:
            nonlocal first
            s = plugin.build(ctx, entry.params)
            saved = store.load_strategy(entry.name) if store is not None else None
            if saved:
                s.restore(saved)
                if first:
                    self._restored.add(entry.name)
                    # process start: nothing is in flight, so an order the router never journalled
                    # died with the old process before reaching the venue (a later restart of the
                    # actor skips this: its newest intents may still be on their way)
                    lost = [c for c in plugin.held_orders(saved) if store.load_order(c) is None]
                    s.forget_orders(lost)
                    if lost:
                        logger.info("{}: {} restored order(s) never reached the router, dropped: {}", entry.name,
                                    len(lost), lost)
            first = False
            return s
        return make

    def _make_broker(self) -> Any:
        if self.spec.venue == "projectx":
            from infra.projectx.venue_handler import ProjectXVenueHandler
            return ProjectXVenueHandler(self.venue, post=lambda ev: self.directory.tell(BROKER, ev),
                                        write_ahead=self.write_ahead)
        if self.spec.host == "dispatcher" and self.venue.store is None:
            return IdlePrintsDeferred(self.venue, self.write_ahead)
        return VenueHandler(self.venue, self.write_ahead)

    def _make_reconciler(self) -> Any:
        store = self.store
        if self.spec.venue == "projectx":
            from infra.projectx.reconcile import GatewayReconciler, guarded_view
            view = guarded_view(store, self.venue.snapshot, self._unsettled)
            return GatewayReconciler(Reconciler(store, view, self._risk_view, owner_view=self._owner_view),
                                     self._retry_reconcile)
        return Reconciler(store, plain_view(self.venue.snapshot, store), self._risk_view, owner_view=self._owner_view)

    def _risk_view(self) -> tuple[dict[str, int], set[str] | None, int]:
        """Positions, applied trade ids and the time at or before which every fill was applied
        (ids not kept), from one read of risk's mirrored snapshot."""
        saved = self.store.load_strategy(RISK) if self.store is not None else None
        if not saved:
            return {}, set(), 0
        pf = Portfolio.from_dict(saved["portfolio"])
        return pf.net_positions(), set(pf.seen_trade_ids), pf.seen_floor_ns

    def _owner_view(self) -> dict[str, tuple[str, int]]:
        """Orders the strategies' mirrored snapshots hold as working, with the contracts filled
        each has seen."""
        view: dict[str, tuple[str, int]] = {}
        if self.store is None:
            return view
        for e in self.entries:
            snap = self.store.load_strategy(e.name) or {}
            for coid, filled in e.plugin().held_orders(snap).items():
                view[coid] = (e.name, filled)
        return view

    def warmup_out(self) -> Out:
        """``WarmupBars`` from the data source's history, per instrument and bar period, for every
        strategy that reads the instrument and was not restored from the mirror (restored
        indicators already hold that history)."""
        ticks = self.data.warmup_ticks()
        out: Out = []
        for sym, sym_ticks in ticks.items():
            readers = [e for e in self.entries if sym in e.instruments and e.name not in self._restored]
            periods = sorted({p for e in readers for p in e.plugin().warmup_periods(e.params)})
            for period in periods:
                bars = tuple(aggregate_bars(sym_ticks, period))
                if not bars:
                    continue
                for e in readers:
                    if period in e.plugin().warmup_periods(e.params):
                        out.append((e.name, WarmupBars(sym, period, bars, self.start_ns)))
        return out

    def _make_feed(self) -> Any:
        prev = self.feed_handler
        restarted = prev is not None
        self.feed_handler = self.data.make_handler(
            warmup=[] if restarted else self.warmup_out(), after_ns=self.venue.last_ts or None,
            restarted=restarted, backlog=self._backlog, on_done=self.data_done.set,
            start_ts_ns=prev.now_ns() if restarted else (self.venue.last_ts or self.start_ns))
        return self.feed_handler

    def _make_watchdog(self, names: set[str]) -> Watchdog:
        assert self.tree is not None
        tree = self.tree
        return Watchdog(self.alerter, self.metrics, self.directory.inbox_depths, lambda: set(self.directory.names()),
                        names, lambda: dict(tree.restarts), lambda: not self.done.is_set(),
                        self.cfg.runtime.stale_data_s, restarts_reported=self._restarts_reported)

    # ------------------------------------------------------------------ backtest host
    def run_backtest(self, both_paths: bool = True) -> SessionSummary:
        """Every tick through the handlers on one thread, then the summary (deterministic). With
        ``both_paths`` the data is replayed once more under the other intra-bar path (trades kept in
        memory) and the summary gives the net under each (``SessionSummary.path_nets``)."""
        t0 = time.perf_counter()
        s = self._dispatch()
        if both_paths and isinstance(self.data, ReplayData) and getattr(self.data, "bar_paths", True):
            other = "adverse" if self.data.path == "adaptive" else "adaptive"
            alt = Node(self.cfg, self.spec, trades_csv=self.trade_log.path, bar_path=other, keep_trades=False)
            s.path_nets = {self.data.path: s.net_pnl, other: alt._dispatch(log_alerts=False).net_pnl}
            s.trade_paths = {"bars replayed": self.data.source.bar_count, **self.data.source.trade_paths}
        s.seconds = time.perf_counter() - t0
        if self.session_files is not None:
            self.write_session_files(s, self._final_risk)
        return s

    def _dispatch(self, log_alerts: bool = True) -> SessionSummary:
        """One backtest run on the dispatcher: a timestamp's ticks at a time, as the paper feed sends
        them. With ``log_alerts`` the alerts the handlers send (to a watchdog a backtest has not)
        are logged with their event time (:func:`infra.alerts.log_alert`); the second bar path's
        are not (its net is the one figure it reports)."""
        handlers = {name: make() for name, make in self.factories().items()}
        disp = Dispatcher(handlers, self.topics(), on_alert=log_alert if log_alerts else None)  # no watchdog here
        disp.send(self.warmup_out())
        disp.drain()
        routed = self.data.routed()
        for sym in self.instruments:  # pure functions of the feed: a kept stream replays their output
            name = bar_builder(sym)
            h = handlers[name]  # kept per configuration: a sweep may vary the periods its strategies read
            disp.replace(name, routed.memo_handler((name, h.agg.periods_s, h.forward_ticks), h))
        run = disp.run
        frozen = not gc.get_freeze_count()
        if frozen:  # what exists now lives for the run: the collector skips it (docs/decisions/0007)
            gc.freeze()
        try:
            for out in routed.batches:
                run(out)
        finally:
            if frozen:
                gc.unfreeze()
        if isinstance(handlers.get(BROKER), IdlePrintsDeferred):
            handlers[BROKER].flush()  # the venue as every print left it
        disp.send([(RISK, Shutdown("end of data", routed.core.last_ts))])
        disp.drain()
        self.trade_log.flush()
        s = self._summary(handlers[RISK], {e.name: handlers[e.name].stats() for e in self.entries})
        if self.session_files is not None:
            self._final_risk = handlers[RISK]
        s.rejected_inputs = {**self.data.rejected_rows(), **dict(routed.core.rejected)}
        s.events = routed.ticks
        return s

    # ------------------------------------------------------------------ actor host
    def build_tree(self) -> SupervisionTree:
        """The supervision tree of :data:`actors.tree.TREE` over :meth:`factories`."""
        factories = self.factories()
        after = persist_hook(self.store, self.writer)
        self.actor_loop = loop = ActorLoop("decision")
        for topic, names in self.topics().items():
            self.directory.subscribe(topic, *names)
        # The process's first reconciliation waits until every actor of the tree is registered
        # (:meth:`start`): it sends owners the fills and cancels their mirrored snapshots missed,
        # and a message to a strategy not started yet would be a dead letter (a restored bracket
        # would keep a stop whose target already filled). A reconciler restarted later starts one.
        started: dict[str, Callable[[Any], Out]] = {
            RECONCILER: lambda r: ([(RECONCILER, ReconcileRequest("actor start", self.venue.last_ts))]
                                   if self._tree_up.is_set() else []),
            FEED: lambda f: f.start(),
        }
        expected = set(factories) | {FEED, WATCHDOG}
        factories = {**factories, FEED: self._make_feed, WATCHDOG: lambda: self._make_watchdog(expected)}
        persisted = {RISK} | {e.name for e in self.entries}

        def actor(child: Child, name: str) -> ActorSpec:
            thread = (OWN_THREAD if self.data.blocks else DECISION_LOOP) if name == FEED else child.thread
            kw: dict[str, Any] = {}
            if thread == DECISION_LOOP:
                kw["loop"] = loop
                if name == BROKER and self.spec.broker_urgent:
                    kw["urgent"] = True
            if name in persisted:
                kw["after"] = after
            if name in started:
                kw["on_started"] = started[name]
            return ActorSpec(name, factories[name], kw, restart=child.restart, shutdown_s=child.shutdown_s)

        def build(sup: Sup) -> Supervisor:
            children: list[Any] = []
            for c in sup.children:
                if isinstance(c, Sup):
                    children.append(build(c))
                elif c.name == "strategy:*":
                    children += [actor(c, e.name) for e in self.entries]
                elif c.name == "bars:*":
                    children += [actor(c, bar_builder(sym)) for sym in self.instruments]
                elif c.name != RECORDER or RECORDER in factories:  # the recorder: only when it records
                    children.append(actor(c, c.name))
            return Supervisor(sup.name, sup.strategy, sup.intensity, sup.period_s, children)

        self.tree = SupervisionTree(build(TREE), self.directory, self._escalate)
        return self.tree

    def start(self) -> None:
        """Connect the venue, start the tree (risk HALTED until reconciled), then market data and
        the timer."""
        if self.tree is None:
            self.build_tree()
        assert self.tree is not None and self.store is not None
        try:  # the daily reports' plotting stack, loaded now: the session's memory stays flat
            from infra.reporting import warm_up_plotting
            warm_up_plotting()
        except Exception as e:  # noqa: BLE001 - a report problem must not stop trading
            logger.warning("plotting warm-up failed ({}); the first daily report loads it", e)
        # Everything loaded so far (modules, replay data, warm-up history) lives for the whole
        # session: out of the cyclic GC's reach, a full collection walks only what the session makes.
        gc.collect()
        gc.freeze()
        armed = self.armed.is_set()
        if self.spec.arming:
            self.store.set_flag("armed", "1" if armed else "0")  # a stale 1 never arms a new session
        self.venue.set_event_sink(lambda ev: self.directory.tell(BROKER, ev))
        self.venue.start()
        if not self.venue.connected(15.0):
            logger.warning("venue events not connected after 15 s; continuing (reconciliation covers the gap)")
        self.store.save_meta(mode=self.spec.shown, config_hash=self.cfg.config_hash(), started_ns=time.time_ns(),
                             incarnation=self.incarnation)
        self.tree.start()
        self._tree_up.set()
        self.directory.tell(RECONCILER, ReconcileRequest("actor start", self.venue.last_ts))
        if self.spec.arming:
            self.store.update_meta(armed="1" if armed else "0", account=str(self.gateway.account.id))
            acct = self.gateway.account
            logger.warning("live trading on account {} {}: {}", acct.id, acct.name, "ARMED" if armed
                           else f"UNARMED (arm: redis-cli SET {self.store.key('ops', 'armed')} 1)")
        self.data.start(lambda msg: self.directory.tell(FEED, msg))
        threading.Thread(target=self._timer, name="node-timer", daemon=True).start()

    def _timer(self) -> None:
        """Every ``heartbeat_s`` of wall time: the watchdog's check, the heartbeat key, and (live)
        the operator's arming flag."""
        while not self.done.wait(self.cfg.runtime.heartbeat_s) and not self.escalation:
            now = time.time_ns()
            self.directory.tell(WATCHDOG, WatchdogCheck(now))
            try:
                self.store.heartbeat("node", now, ttl_s=max(5, int(self.cfg.runtime.heartbeat_s * 5)))
            except Exception as e:  # noqa: BLE001 - Redis trouble must not stop the timer
                logger.warning("heartbeat not written: {}", e)
            if self.spec.arming:
                self._poll_ops()
            self.ops.poll_redis()
            self.ops.sample()
            self.ops.report_closed_days()
            self.check_models()
            if self.record_dir is not None:
                self.directory.tell(RECORDER, FlushTicks(now))

    def check_models(self) -> None:
        """Send each strategy whose plug-in reads a trained model (``StrategyPlugin.reload``) the
        model now on disk when it changed since the last check (the first check records it): a
        retrained model is used without a restart. A model that cannot be loaded (being written,
        other features: ``ModelMismatch``) is logged once and the strategy keeps its own."""
        for e in self.entries:
            reload = e.plugin().reload
            if reload is None:
                continue
            try:
                model = reload(e.params)
            except Exception as exc:  # noqa: BLE001 - a broken file must not stop the timer
                if self._model_errors.get(e.name) != str(exc):
                    self._model_errors[e.name] = str(exc)
                    logger.warning("{}: new model not loaded, the strategy keeps its own: {}", e.name, exc)
                continue
            self._model_errors.pop(e.name, None)
            ident = getattr(model, "identifier", "")
            if self._model_ids.setdefault(e.name, ident) != ident:
                self._model_ids[e.name] = ident
                logger.warning("{}: model changed on disk ({}), sent to the strategy", e.name, ident[:12])
                self.directory.tell(e.name, ModelUpdate(e.name, model, ident, self.now_ns()))

    def readiness(self) -> str | None:
        """None when the node can trade, else why not (``GET /health``): the actor tree not up
        yet, a supervision escalation, risk not answering or HALTED (its holds), the data ended."""
        if self.escalation:
            return f"escalated: {self.escalation}"
        if not self._tree_up.is_set():
            return "starting: the actor tree is not up yet"
        if self.data_done.is_set():
            return "replay finished"
        try:
            state, holds = self.risk_query(lambda r: (r.state.value, [why for _, why in r.holds.values()]), timeout=1)
        except Exception as e:  # noqa: BLE001 - a busy or restarting risk actor
            return f"risk not answering ({type(e).__name__})"
        return f"risk {state}: {'; '.join(holds)}" if state == "HALTED" else None

    def now_ns(self) -> int:
        """The event clock, epoch ns UTC: the feed's (replay: last tick; hub: last event + wall
        time since), or the start time before the feed runs."""
        feed = self.feed_handler
        return feed.now_ns() if feed is not None else self.start_ns

    def _escalate(self, reason: str) -> None:
        """The root of the tree gave up: flatten at the venue without the failed actors, record, alert, stop."""
        self.escalation = reason
        ts = self.venue.last_ts
        events = self.venue.flatten(ts)
        logger.critical("ESCALATION: {} - emergency flatten sent {} venue events", reason, len(events))
        try:
            self.store.update_meta(escalation=reason, escalated_ns=str(time.time_ns()))
        except Exception:  # noqa: BLE001 - the record must not stop the flatten path
            logger.exception("could not record escalation in redis")
        self.alerter.send(Alert("critical", "escalation", f"supervision escalation, emergency flatten: {reason}", ts))
        self.done.set()

    def _backlog(self) -> int:
        return max((d for n, d in self.directory.inbox_depths().items() if n != FEED), default=0)

    def wait_drained(self, timeout: float = 60.0) -> bool:
        """Wait until every inbox but the feed's is empty (twice in a row, 50 ms apart)."""
        def idle() -> bool:
            if self._backlog() > 0:
                return False
            time.sleep(0.05)
            return self._backlog() == 0
        return wait_until(idle, timeout=timeout, interval=0.05)

    def risk_query(self, fn: Callable[[Any], Any], timeout: float = 5.0) -> Any:
        return ask(self.directory, RISK, fn, timeout)

    # ------------------------------------------------------------------ live controls
    def set_armed(self, armed: bool, reason: str) -> None:
        """Arm or disarm live trading (README, "Arming"); records ``armed`` in ``{ns}:meta``."""
        if armed == self.armed.is_set():
            return
        if armed:
            self.armed.set()
        else:
            self.armed.clear()
        logger.warning("live trading {} ({})", "ARMED" if armed else "DISARMED", reason)
        self.store.update_meta(armed="1" if armed else "0")
        self.directory.tell(RISK, SetArmed(armed, reason, self.now_ns()))

    def _poll_ops(self) -> None:
        try:
            raw = self.store.get_flag("armed")
        except Exception as e:  # noqa: BLE001 - Redis trouble must not stop the clock
            logger.warning("cannot read the ops armed flag: {}", e)
            return
        if raw == "1":
            self.set_armed(True, "ops:armed = 1")
        elif raw == "0":
            self.set_armed(False, "ops:armed = 0")

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
        """Ask the reconciler again in ``delay_s`` (a daemon timer; nothing once the node is done)."""
        def fire() -> None:
            if self.done.is_set():
                return
            try:
                self.directory.tell(RECONCILER, ReconcileRequest(reason, self.now_ns()))
            except Exception as e:  # noqa: BLE001 - reconciler between incarnations: its start reconciles anyway
                logger.warning("reconciliation retry ({}) not delivered: {}", reason, e)
        t = threading.Timer(delay_s, fire)
        t.daemon = True
        t.start()

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, reason: str, timeout: float = 20.0) -> None:
        """Orderly stop: risk HALTs the strategies for good, cancels working orders and flattens,
        confirmed at the venue (else flattened there); then the feed stops and state is persisted.
        Market data flows on until then: a simulated venue fills the closes only on later prints
        (infra/paper_broker.py), and a replay that already ended has none to give."""
        if not self.escalation:
            self.directory.tell(RISK, Shutdown(reason, self.venue.last_ts))
            if not wait_until(self._flat, timeout=timeout, interval=0.05):
                logger.error("not flat after {}s through risk ({}): emergency flatten at the venue", timeout,
                             self._not_flat_detail())
                for ev in self.venue.flatten(self.venue.last_ts):
                    self.directory.tell(ROUTER, ev)  # journal the emergency fills like any other
                self.wait_drained(timeout=5)
            wait_until(self._risk_flat, timeout=5, interval=0.05)
        feed = self.directory.ref(FEED)
        if feed is not None:
            try:
                feed.stop(block=True, timeout=5)
            except Exception:  # noqa: BLE001 - a dead feed is a stopped feed
                pass
        if self.writer is not None:
            self.writer.flush()

    def _flat(self) -> bool:
        """Risk's book flat, then confirmed by the venue (read at most every
        ``spec.venue_read_interval_s``: ProjectX reads count against the rate limit)."""
        if not self._risk_flat():
            return False
        now = time.monotonic()
        if now - self._venue_checked_at < self.spec.venue_read_interval_s:
            return False
        self._venue_checked_at = now
        try:
            orders = self.venue.open_orders()
            positions = {k: p.qty for k, p in self.venue.positions().items() if p.qty}
        except Exception as e:  # noqa: BLE001 - any failed read means "not known to be flat"
            logger.warning("flat check failed: {}", e)
            return False
        self._venue_seen = (f"venue working orders {sorted(o.client_order_id for o in orders)}, "
                            f"positions {positions}")
        if orders or positions:
            return False
        logger.info("flat check: risk's book flat, and the venue shows no working order and no position")
        return True

    def _not_flat_detail(self) -> str:
        """What risk still holds open and what the venue showed last, for the log."""
        try:
            orders, positions = self.risk_query(
                lambda r: (sorted(f"{o.client_order_id} {o.status.value}" for o in r.book.open_orders()),
                           r.portfolio.net_positions()), timeout=1)
        except Exception as e:  # noqa: BLE001 - a log line must not stop the flatten path
            return f"risk not readable: {e!r}; last check: {self._venue_seen}"
        return f"risk open orders {orders}, positions {positions}; last check: {self._venue_seen}"

    def _risk_flat(self) -> bool:
        """Risk's book holds no position and no open order. False when risk cannot be asked (busy
        past 1 s, restarting): an unreadable book is not a flat one, so the shutdown then waits and,
        at its timeout, flattens at the venue."""
        try:
            return bool(self.risk_query(lambda r: r.is_flat, timeout=1))
        except Exception as e:  # noqa: BLE001 - any failure to read means "not known to be flat"
            logger.debug("risk's book not readable for the flat check: {!r}", e)
            return False

    def _summary(self, risk: Any, stats: dict[str, dict]) -> SessionSummary:
        """The summary from risk's book and the session's trades CSV (which a resumed session
        appends to, so its fills count every process of the session)."""
        s = SessionSummary(self.spec.shown, self.days)
        s.fill_from_risk(risk, self.cfg.profile.max_contracts_minis)
        rows = self.trade_log.records()
        fills = [r.fill for r in rows]
        s.fills = len(fills)
        s.add_strategies([(e.name, e.kind, e.instruments, stats.get(e.name, {})) for e in self.entries], fills,
                         {r.fill.trade_id: r.purpose for r in rows})
        s.trades_csv = str(self.trade_log.path)
        return s

    def summary(self, reason: str, seconds: float) -> SessionSummary:
        """The session summary from the running actors (risk, strategies, router)."""
        if self.spec.clock == "wall":
            self.days = sorted({self.days[0], trading_day(self.now_ns()).isoformat()})
        try:
            risk = self.risk_query(lambda r: r, timeout=5)
            stats = {e.name: ask(self.directory, e.name, lambda h: h.stats(), 5) for e in self.entries}
            s = self._summary(risk, stats)
        except Exception as exc:  # noqa: BLE001 - never report "none" for what could not be read
            logger.error("summary incomplete: {!r}", exc)
            s = SessionSummary(self.spec.shown, self.days, open_positions=None, trades_csv=str(self.trade_log.path))
        assert self.tree is not None
        s.restarts = dict(self.tree.restarts)
        s.rejected_inputs = self.data.rejected_rows()
        if self.feed_handler is not None:
            s.rejected_inputs.update(self.feed_handler.core.rejected)
            s.events = self.feed_handler.sent
        s.seconds = seconds
        s.exit_reason = reason
        return s

    def write_session_files(self, summary: SessionSummary, risk: Any = None) -> Path | None:
        """Shutdown's session report (seed 003 "Shutdown Sequence", step 5): the per-day files of every
        day of the session, with risk's denials per day (``risk``: its handler, else asked through
        the actor), and ``session_<first>_<last>.txt`` holding ``summary.render()``
        (:meth:`infra.session_files.SessionFiles.finish`). Returns that path; None without session
        files. Never raises for a risk that does not answer (the denials are then left out)."""
        if self.session_files is None:
            return None

        def denied(r: Any) -> list[tuple[int, str]]:
            return [(o.intent.ts_ns, o.intent.strategy_id) for o in r.book if o.status is OrderStatus.DENIED]
        try:
            rows = denied(risk) if risk is not None else self.risk_query(denied, timeout=5)
        except Exception as exc:  # noqa: BLE001 - the files are still written, without the denials
            logger.warning("session files: risk's denials not read: {!r}", exc)
            rows = []
        path = self.session_files.finish(summary.days or self.days, summary.render(), rows)
        logger.info("session files (trading_<day>.log, trades_<day>.csv, metrics_<day>.json) and report: {}", path)
        return path

    def stop(self) -> None:
        """Stop market data, every actor, the loop and the venue; flush what is queued."""
        self.done.set()
        self.data.stop()
        if self.tree is not None:
            self.tree.stop()
        if self.actor_loop is not None:
            self.actor_loop.close()
        if self.writer is not None:
            self.writer.flush()
        self.venue.stop()
        if self.gateway is not None:
            self.gateway.client.close()


# --------------------------------------------------------------------------- session

def open_store(cfg: Any) -> tuple[Any, Any]:
    """The state store: ``runtime.redis_url``, else ``$REDIS_URL``, else an embedded redis-server
    under ``{run_dir}/redis`` (reused after a crash). Returns (store, embedded server or None).

    The server is asked for PING (5 s connect and read timeout) before the store is returned.

    Raises:
        ConfigError: the URL is malformed or the server does not answer (field
            ``runtime.redis_url``; the message names the URL without its password), or the
            embedded server cannot start in ``{run_dir}/redis`` (field ``runtime.run_dir``:
            not writable, no binary).
    """
    from config.settings import ConfigError
    from infra.embedded_redis import EmbeddedRedis
    from infra.state_store import StateStore, StoreUnavailable

    url = cfg.runtime.redis_url or os.environ.get("REDIS_URL")
    source = "runtime.redis_url" if cfg.runtime.redis_url else "REDIS_URL"
    embedded = None
    if not url:
        redis_dir = Path(cfg.runtime.run_dir) / "redis"
        try:
            embedded = EmbeddedRedis(redis_dir)
            url = embedded.ensure_running()
        except (OSError, RuntimeError, ValueError) as e:
            raise ConfigError(f"runtime.run_dir: cannot start the embedded redis-server in {redis_dir}: "
                              f"{getattr(e, 'strerror', None) or e} (set REDIS_URL to use another Redis)",
                              field="runtime.run_dir") from None
        logger.info("embedded redis-server at {} (data in {})", url, embedded.data_dir)
        source = "runtime.run_dir"
    try:
        return StateStore.open(url, cfg.runtime.namespace), embedded
    except StoreUnavailable as e:
        field = "runtime.redis_url" if source != "runtime.run_dir" else source
        raise ConfigError(f"{field}: {e} (from {source})", field=field) from None


def open_gateway(cfg: Any, spec: ModeSpec, credentials: tuple[str, str] | None) -> Gateway | None:
    """The ProjectX session the mode needs (None for replay data on the simulated venue).

    Raises:
        LiveStartupError: login, account or contract refused (code 2), gateway failing (code 4).
    """
    if spec.venue != "projectx" and spec.data != "projectx-hub":
        return None
    from infra.projectx.session import connect, connect_market
    assert credentials is not None, "ProjectX modes need credentials"
    if spec.venue == "projectx":
        return Gateway(*connect(cfg, *credentials))
    client, contracts = connect_market(cfg, *credentials)
    return Gateway(client, None, contracts)


def start_ops_api(cfg: Any, node: "Node", metrics: Any) -> Any:
    """Serve the ops API (infra/ops_api.py) on ``runtime.ops_host:ops_port``; None when off or
    the port is taken (logged: the session runs on without it). Commands need ``OPS_TOKEN``."""
    from infra.ops_api import OpsServer
    if cfg.runtime.ops_port is None:
        return None
    token = os.environ.get("OPS_TOKEN") or None
    server = OpsServer(node.ops, node.readiness, token, metrics.registry)
    try:
        port = server.start(cfg.runtime.ops_port, cfg.runtime.ops_host)
    except OSError as exc:
        logger.warning("ops API not started: {}", exc)
        return None
    logger.info("compliance panel on http://{0}:{1}/  (ops API: /health, /ops/status; commands {2})",
                cfg.runtime.ops_host, port, "need OPS_TOKEN" if token else "off: OPS_TOKEN is not set")
    return server


def session_files_dir(cfg: Any, spec: ModeSpec) -> Path | None:
    """Where a session started by :func:`run` writes its per-day files
    (:func:`infra.session_files.session_dir`), None when ``runtime.session_files`` is off."""
    if not cfg.runtime.session_files:
        return None
    from infra.session_files import session_dir
    return session_dir(cfg.runtime.log_dir, spec.name, cfg.runtime.namespace)


def run(cfg: Any, mode: str, *, fresh: bool = False, credentials: tuple[str, str] | None = None,
        trades_csv: Path | None = None,
        after_backtest: Callable[[SessionSummary], None] | None = None) -> int:
    """One session in ``mode`` (:data:`actors.tree.MODES`), from start to summary.

    A replay ends at the end of its data; live data runs until SIGINT/SIGTERM. Either way the
    node stops in order (cancel, flatten, persist) and prints the summary. ``after_backtest`` is
    called with a backtest's summary once it is printed (supervisor.py writes the report there).

    Returns the exit code: 0 (end of data, SIGINT/SIGTERM), 3 (supervision escalation).
    Raises:
        LiveStartupError: a ProjectX mode could not start (its ``code`` is the exit code).
        ValueError, FileNotFoundError: bad data for a replay.
    """
    spec = MODES[mode]
    if spec.host == "dispatcher":
        summary = Node(cfg, spec, trades_csv=trades_csv, session_dir=session_files_dir(cfg, spec)).run_backtest()
        print(summary.render())
        if after_backtest is not None:
            after_backtest(summary)
        return EXIT_OK

    from infra.alerts import SlackAlerter
    from infra.metrics import LatencyProbe, Metrics
    from infra.sdnotify import notify
    from infra.projectx import errors as pxe
    from infra.projectx.session import EXIT_GATEWAY, LiveStartupError

    t0 = time.perf_counter()
    gateway = open_gateway(cfg, spec, credentials)
    store, embedded = open_store(cfg)
    if spec.data == "replay":
        if fresh:
            store.flush()
        elif store.load_meta().get("finished") == "1":
            logger.info("previous session in {} finished; starting fresh (use a new --namespace to keep it)",
                        cfg.runtime.namespace)
            store.flush()
    metrics = Metrics()
    if cfg.runtime.metrics_port is not None:
        try:
            port = metrics.start_http_server(cfg.runtime.metrics_port)
            logger.info("prometheus metrics on http://127.0.0.1:{}/metrics", port)
        except OSError as exc:
            logger.warning("metrics endpoint not started: {}", exc)
    try:
        account = (f"{gateway.account.name} ({gateway.account.id})" if gateway is not None and gateway.account is not None
                   else f"simulated {cfg.profile.name}")
        alerter = SlackAlerter(os.environ.get("SLACK_WEBHOOK_URL"), context={"mode": spec.name, "account": account})
        node = Node(cfg, spec, store=store, alerter=alerter,
                    metrics=metrics, gateway=gateway, trades_csv=trades_csv, session_dir=session_files_dir(cfg, spec))
    except pxe.ProjectXError as e:
        if gateway is not None:
            gateway.client.close()
        raise LiveStartupError(f"history warm-up failed: {e}", EXIT_GATEWAY) from None
    node.directory.send_hook = LatencyProbe(metrics, RISK, BROKER, ROUTER)
    ops = start_ops_api(cfg, node, metrics)
    source = (f"replay of {cfg.runtime.data_dir} at speed {cfg.runtime.speed}" if spec.data == "replay"
              else f"ProjectX market hub ({cfg.projectx.hubs_url})")
    logger.info("{} session {} .. {} ({}), market data: {}, venue: {}, namespace {}, strategies {}", spec.name,
                node.days[0], node.days[-1], "resuming" if node.resumed else "fresh start", source, spec.venue,
                cfg.runtime.namespace, ", ".join(f"{e.name} ({e.kind} {'/'.join(e.instruments)})" for e in node.entries))
    stop_reason: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop_reason.append(signal.Signals(signum).name)
        node.done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node.start()
    notify("READY=1")  # systemd Type=notify (infra/sdnotify.py); a no-op elsewhere
    last_log = time.monotonic()
    while not node.done.wait(0.2):
        if node.data_done.is_set():
            node.wait_drained()
            node.done.set()
            break
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            feed = node.feed_handler
            logger.info("{} at {} CT, {} trades, {} quotes{}", spec.name,
                        ns_to_ct(node.now_ns()).strftime("%Y-%m-%d %H:%M:%S"), feed.sent if feed else 0,
                        getattr(feed, "quotes", 0), (", armed" if node.armed.is_set() else ", unarmed")
                        if spec.arming else "")
    end_of_data = node.data_done.is_set() and not stop_reason and not node.escalation
    reason = node.escalation or (stop_reason[0] if stop_reason else "end of data" if end_of_data else "stopped")
    notify("STOPPING=1")
    node.shutdown(reason)
    summary = node.summary(reason, time.perf_counter() - t0)
    try:
        node.write_session_files(summary)
    except Exception as e:  # noqa: BLE001 - the summary still prints
        logger.error("session files not finished: {}", e)
    node.ops.report_closed_days()
    try:  # the last day, closed or not (a replay's data end, a SIGTERM)
        node.ops.report_day(None, alert=True)
    except Exception as e:  # noqa: BLE001 - the summary still prints
        logger.error("daily report of the last day not written: {}", e)
    if end_of_data:
        store.update_meta(finished="1")
    node.stop()
    if ops is not None:
        ops.stop()
    print(summary.render())
    if embedded is not None and not node.escalation:
        embedded.stop()  # its data stays in {run_dir}/redis; the next start reloads it
    return EXIT_ESCALATED if node.escalation else EXIT_OK
