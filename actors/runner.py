"""Running a session: backtest (deterministic dispatcher) and paper (supervised actors).

Both end with a :class:`SessionSummary`: trades, gross and net P&L, fees, max drawdown, MLL
headroom, the rule checks (MLL floor never touched, flat by 15:10 CT, contract limit never
exceeded) and actor restarts.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from loguru import logger

from actors.core import ActorLoop, Directory, ask, wait_until
from actors.execution import PaperVenue, StoreIds, WriteAhead
from actors.feed import FeedCore, ReplayFeed, warmup_messages
from actors.supervision import ActorSpec, Supervisor, SupervisionTree
from actors.system import Dispatcher, WriteBehind, build_factories, persist_hook, topics
from actors.watchdog import Watchdog, WatchdogCheck
from domain.calendar import ns_to_ct
from domain.handler import (BROKER, FEED, HEDGE, RECONCILER, RISK, ROUTER, WATCHDOG, CounterIds, bar_builder,
                            grid_strategy)
from domain.messages import Alert, ReconcileRequest, Shutdown
from infra.replay import ReplaySource, bar_to_ticks

DATA_FILES = {"MES": "ES_2min.csv.gz", "MNQ": "NQ_2min.csv.gz"}
"""Bundled/shared file per instrument: ES and NQ prices stand for MES and MNQ."""


@dataclass
class SessionSummary:
    """End-of-run report. Money in dollars."""

    mode: str
    days: list[str]
    fills: int = 0
    grid_entries: int = 0
    grid_take_profits: int = 0
    hedge_activations: int = 0
    gross_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    net_pnl: Decimal = Decimal(0)
    max_drawdown: Decimal = Decimal(0)
    mll_floor: Decimal = Decimal(0)
    min_mll_headroom: Decimal | None = None
    max_contracts_minis: Decimal = Decimal(0)
    contract_limit: Decimal = Decimal(0)
    flat_violations: int = 0
    mll_touched: bool = False
    breaches: list = field(default_factory=list)
    denials: int = 0
    restarts: dict = field(default_factory=dict)
    rejected_inputs: dict = field(default_factory=dict)
    open_positions: dict | None = field(default_factory=dict)  # None: could not be read
    trades_csv: str = ""
    events: int = 0
    seconds: float = 0.0
    exit_reason: str = "end of data"

    @property
    def rules_ok(self) -> bool:
        return (not self.mll_touched and self.flat_violations == 0
                and self.max_contracts_minis <= self.contract_limit)

    def render(self) -> str:
        ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
        lines = [
            f"=== session summary ({self.mode}) {self.days[0] if self.days else ''} .. {self.days[-1] if self.days else ''} ===",
            f"exit: {self.exit_reason}",
            f"fills: {self.fills}  (grid entries {self.grid_entries}, take-profits {self.grid_take_profits}, "
            f"hedge activations {self.hedge_activations})",
            f"gross P&L: ${self.gross_pnl:,.2f}   fees: ${self.fees:,.2f}   net P&L: ${self.net_pnl:,.2f}",
            f"max drawdown: ${self.max_drawdown:,.2f}   MLL floor: ${self.mll_floor:,.2f}   "
            f"min MLL headroom: ${(self.min_mll_headroom or Decimal(0)):,.2f}",
            f"rule check - MLL floor never touched: {ok(not self.mll_touched)}",
            f"rule check - flat by 15:10 CT every day: {ok(self.flat_violations == 0)}",
            f"rule check - contract limit never exceeded: {ok(self.max_contracts_minis <= self.contract_limit)} "
            f"(max {self.max_contracts_minis} of {self.contract_limit} mini-equivalents)",
            f"guardrail breaches: {len(self.breaches)} {[b[1] for b in self.breaches]}  risk denials: {self.denials}",
            f"open positions at exit: "
            f"{'UNKNOWN (risk not readable; check the venue)' if self.open_positions is None else self.open_positions or 'none'}",
            f"actor restarts: {self.restarts or 'none'}",
            f"rejected inputs: {self.rejected_inputs or 'none'}",
            f"trades csv: {self.trades_csv}",
            f"events: {self.events}  wall time: {self.seconds:.2f}s",
        ]
        return "\n".join(lines)


def fill_summary(s: SessionSummary, risk: Any, grid: Any, hedge: Any, limit: Decimal) -> None:
    """Copy the figures of the risk, grid and hedge handlers into ``s``."""
    pf = risk.portfolio
    s.gross_pnl = pf.realized
    s.fees = pf.fees
    s.net_pnl = risk.ledger.balance - risk.limits.starting_balance + risk.unrealized()
    s.max_drawdown = risk.max_drawdown
    s.mll_floor = risk.ledger.floor
    s.min_mll_headroom = risk.min_headroom
    s.max_contracts_minis = risk.max_contracts_seen
    s.contract_limit = limit
    s.flat_violations = len(risk.flat_violations)
    s.mll_touched = any(b[1] == "mll" for b in risk.breaches)
    s.breaches = list(risk.breaches)
    s.denials = risk.denials
    s.open_positions = pf.net_positions()
    if grid is not None:
        s.grid_entries = grid.stats["entries_filled"]
        s.grid_take_profits = grid.stats["tps_filled"]
    if hedge is not None:
        s.hedge_activations = hedge.activations


def open_source(cfg: Any) -> ReplaySource:
    """The replay source for ``cfg.runtime``. Without ``start``, the first trading day of the data
    only warms the indicators up and trading starts on the second."""
    data = Path(cfg.runtime.data_dir)
    files = {}
    for sym in (cfg.grid.instrument, cfg.hedge.instrument):
        name = DATA_FILES.get(sym)
        if name is None:
            raise ValueError(f"no bundled data file for {sym}; bundled: {sorted(DATA_FILES)}")
        path = data / name
        if not path.exists():
            raise FileNotFoundError(f"market data file not found: {path}")
        files[sym] = path
    start = cfg.runtime.start
    if start is None:
        days = ReplaySource(files, warmup_days=0).trading_days()
        start = days[1] if len(days) > 1 else None
    return ReplaySource(files, start=start, end=cfg.runtime.end, warmup_days=1)


def warmups(source: ReplaySource, cfg: Any, ts_ns: int):
    """Warm-up messages from the replay source's warm-up days (see :func:`warmup_out`)."""
    ticks = {sym: [t for row in source.warmup_bars(sym) for t in bar_to_ticks(row)] for sym in source.instruments}
    return warmup_out(ticks, cfg, ts_ns)


def warmup_out(ticks: dict[str, list], cfg: Any, ts_ns: int):
    """``WarmupBars`` (1- and 15-minute) from historical ticks per instrument, for the grid (primary
    instrument) and the hedge (both instruments); ``ts_ns`` is the messages' time, epoch ns UTC."""
    p = cfg.grid.instrument

    def dests(sym: str) -> list[str]:
        d = [HEDGE] if cfg.hedge.enabled else []
        return ([grid_strategy(p)] + d) if sym == p else d
    return warmup_messages(ticks, (60, 900), dests, ts_ns)


def first_ts(source: ReplaySource) -> int:
    return min(source.bars(s)[0].start_ns for s in source.instruments if source.bars(s))


# --------------------------------------------------------------------------- backtest

def run_backtest(cfg: Any, trades_csv: Path | None = None) -> SessionSummary:
    """Deterministic backtest over ``cfg.runtime`` data; writes the trades CSV and returns the summary."""
    from infra.trade_log import TradeLog
    t0 = time.perf_counter()
    source = open_source(cfg)
    days = [d.isoformat() for d in source.trading_days()]
    if trades_csv is None:
        trades_csv = Path(cfg.runtime.run_dir) / "trades" / f"backtest_{days[0]}_{days[-1]}.csv"
    trades_csv.parent.mkdir(parents=True, exist_ok=True)
    trades_csv.unlink(missing_ok=True)
    log = TradeLog(trades_csv)
    start_ns = first_ts(source)
    venue = PaperVenue(None, cfg.runtime.slippage_ticks, cfg.runtime.fill_on_touch)
    factories = build_factories(cfg, CounterIds(), venue, None, log, start_ns, reconcile_on_start=False)
    handlers = {name: make() for name, make in factories.items()}
    handlers[RISK].emit_account_status = False  # no watchdog in a backtest
    disp = Dispatcher(handlers, topics(cfg))
    disp.send(warmups(source, cfg, start_ns))
    disp.drain()
    core = FeedCore()
    n = 0
    for tick in source.events():
        disp.send(core.route(tick))
        disp.drain()
        n += 1
    disp.send([(RISK, Shutdown("end of data", core.last_ts))])
    disp.drain()
    s = SessionSummary("backtest", days)
    fill_summary(s, handlers[RISK], handlers.get(grid_strategy(cfg.grid.instrument)), handlers.get(HEDGE),
                 cfg.profile.max_contracts_minis)
    s.fills = handlers[ROUTER].fills
    s.rejected_inputs = dict(core.rejected)
    s.trades_csv = str(trades_csv)
    s.events = n
    s.seconds = time.perf_counter() - t0
    return s


# --------------------------------------------------------------------------- paper

class PaperSystem:
    """The supervised actor system for paper mode (also used by tests and the benchmark).

    :class:`actors.live.LiveSystem` reuses the tree with another venue and feed: it overrides
    :meth:`_factories`, :meth:`_make_feed` and :meth:`_venue_flat` and calls :meth:`_wire`.

    Args:
        cfg: :class:`config.settings.AppConfig`.
        store: :class:`infra.state_store.StateStore` (the Redis mirror).
        alerter: ``send(Alert)``; metrics: :class:`infra.metrics.Metrics` or None.
        speed: replay speed factor (``inf`` = as fast as possible).
    """

    mode = "paper"
    venue_matches_ticks = True
    """The paper venue fills orders from the ticks: the broker subscribes to them (:func:`topics`)."""
    feed_on_loop = False
    """The replay feed paces itself by sleeping in its handler, so it keeps a thread of its own
    instead of sharing the decision path's :class:`actors.core.ActorLoop`."""
    broker_first = False
    """The broker in the loop's urgent lane (:class:`actors.core.ActorLoop`): an order the router
    passed on is sent before the loop goes on with the rest of a burst. Off in paper mode: the
    paper broker also matches every tick, and ticks must not overtake the intents ahead of them,
    which would change the simulated fills."""

    def __init__(self, cfg: Any, store: Any, alerter: Any, metrics: Any | None = None,
                 speed: float | None = None) -> None:
        from infra.trade_log import TradeLog
        self.cfg = cfg
        self.store = store
        self.alerter = alerter
        self.metrics = metrics
        self.source = open_source(cfg)
        self.days = [d.isoformat() for d in self.source.trading_days()]
        sp = cfg.runtime.speed if speed is None else speed
        self.speed = float("inf") if sp == "max" else float(sp)
        self.incarnation = store.new_incarnation()
        self.ids = StoreIds(store, self.incarnation)
        self.writer = WriteBehind()
        self.venue = PaperVenue(store, cfg.runtime.slippage_ticks, cfg.runtime.fill_on_touch, self.writer)
        self.resumed = self.venue.last_key is not None
        trades = Path(cfg.runtime.run_dir) / "trades" / f"paper_{cfg.runtime.namespace.replace(':', '_')}_{self.days[0]}.csv"
        self.trade_log = TradeLog(trades)
        self.start_ns = self.venue.last_ts or first_ts(self.source)
        self._wire()

    def _wire(self) -> None:
        """Directory, topics, run flags and the supervision tree (after venue, ids, trade log, start_ns)."""
        self.directory = Directory()
        self.write_ahead = WriteAhead(self.store)  # the router's order writes, batched (execution.py)
        if getattr(self, "writer", None) is None:  # LiveSystem has no paper venue to hand it to first
            self.writer = WriteBehind()
        for topic, names in topics(self.cfg, self.venue_matches_ticks).items():
            self.directory.subscribe(topic, *names)
        self.done = threading.Event()
        self.data_done = threading.Event()
        self.escalation: str | None = None
        self.feed_handler: Any = None
        self.tree = self._build_tree()

    def _factories(self) -> dict[str, Any]:
        return build_factories(self.cfg, self.ids, self.venue, self.store, self.trade_log, self.start_ns,
                               reconcile_on_start=True, write_ahead=self.write_ahead, writer=self.writer)

    def _make_feed(self) -> ReplayFeed:
        after_key = self.venue.last_key
        events = self.source.events(after_ns=self.venue.last_ts if after_key else None)
        warm = [] if after_key else warmups(self.source, self.cfg, self.start_ns)
        first = self.feed_handler is None  # a restarted feed gets no new reconciliation to wait for
        self.feed_handler = ReplayFeed(events, self.speed, warm, self.data_done.set, backlog=self._backlog,
                                       wait_reconciled=first, start_ts_ns=self.venue.last_ts or self.start_ns)
        return self.feed_handler

    def _venue_flat(self) -> bool:
        """True when the venue has no position and no working order."""
        return not self.venue.broker.positions() and not self.venue.broker.working_orders()

    def _build_tree(self) -> SupervisionTree:
        cfg, store = self.cfg, self.store
        factories = self._factories()
        after = persist_hook(store, self.writer)
        # the decision path on one thread (actors.core.ActorLoop): bars, strategies, risk, router,
        # broker, and the feed unless it blocks; the reconciler and the watchdog have their own
        self.actor_loop = loop = ActorLoop("decision")
        spec = lambda name, **kw: ActorSpec(name, factories[name], {"after": after, "loop": loop, **kw})  # noqa: E731
        p, h = cfg.grid.instrument, cfg.hedge.instrument

        def make_watchdog() -> Watchdog:
            expected = set(factories) | {FEED, WATCHDOG}
            return Watchdog(self.alerter, self.metrics, self.directory.inbox_depths,
                            lambda: set(self.directory.names()), expected,
                            lambda: dict(self.tree.restarts), lambda: not self.done.is_set(),
                            cfg.runtime.stale_data_s)

        infra = Supervisor("infra", "one_for_one", 5, 60, [
            ActorSpec(BROKER, factories[BROKER], {"loop": loop, "urgent": self.broker_first}),
            ActorSpec(WATCHDOG, make_watchdog)])
        execution = Supervisor("execution", "one_for_all", 3, 60, [
            spec(RISK), spec(ROUTER),
            ActorSpec(RECONCILER, factories[RECONCILER],
                      {"on_started": lambda r: [(RECONCILER, ReconcileRequest("actor start", self.venue.last_ts))]})])
        strat_children = [spec(grid_strategy(p))] + ([spec(HEDGE)] if cfg.hedge.enabled else [])
        strategies = Supervisor("strategies", "one_for_one", 5, 60, strat_children)
        marketdata = Supervisor("marketdata", "rest_for_one", 5, 60, [
            ActorSpec(bar_builder(p), factories[bar_builder(p)], {"loop": loop}),
            ActorSpec(bar_builder(h), factories[bar_builder(h)], {"loop": loop}),
            ActorSpec(FEED, self._make_feed, {"on_started": lambda f: f.start(),
                                              "loop": loop if self.feed_on_loop else None})])
        root = Supervisor("root", "rest_for_one", 2, 60, [infra, execution, strategies, marketdata])
        return SupervisionTree(root, self.directory, self._escalate)

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        # Everything loaded so far (modules, the replay data, warm-up bars) lives for the whole
        # session: move it out of the cyclic GC's reach, so that a full collection walks only what
        # the session creates (a full walk of it all paused every actor for ~20-25 ms).
        gc.collect()
        gc.freeze()
        self.store.save_meta(mode=self.mode, config_hash=self.cfg.config_hash(), started_ns=time.time_ns(),
                             incarnation=self.incarnation)
        self.tree.start()
        self._timer = threading.Thread(target=self._tick_watchdog, name="watchdog-timer", daemon=True)
        self._timer.start()

    def _tick_watchdog(self) -> None:
        while not self.done.is_set() and not self.escalation:
            time.sleep(self.cfg.runtime.heartbeat_s)
            self.directory.tell(WATCHDOG, WatchdogCheck(time.time_ns()))

    def _escalate(self, reason: str) -> None:
        """Top of the tree gave up: flatten without the failed actors, record, alert, stop."""
        self.escalation = reason
        ts = self.venue.last_ts
        events = self.venue.flatten(ts)
        logger.critical("ESCALATION: {} - emergency flatten sent {} venue events", reason, len(events))
        try:
            self.store.client.hset(self.store.key("meta"), mapping={"escalation": reason, "escalated_ns": str(time.time_ns())})
        except Exception:  # the record must not stop the flatten path
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

    def risk_query(self, fn: Any, timeout: float = 5.0) -> Any:
        return ask(self.directory, RISK, fn, timeout)

    def shutdown(self, reason: str, timeout: float = 20.0) -> None:
        """Orderly stop: feed paused, cancel working orders and flatten through risk, persist, stop actors."""
        feed = self.directory.ref(FEED)
        if feed is not None:
            try:
                feed.stop(block=True, timeout=5)
            except Exception:
                pass
        if not self.escalation:
            self.directory.tell(RISK, Shutdown(reason, self.venue.last_ts))
            flat = wait_until(self._venue_flat, timeout=timeout, interval=0.05)
            if not flat:
                logger.error("not flat after {}s through risk ({}): emergency flatten at the venue", timeout,
                             self._not_flat_detail())
                for ev in self.venue.flatten(self.venue.last_ts):
                    self.directory.tell(ROUTER, ev)  # journal the emergency fills like any other
                self.wait_drained(timeout=5)
            wait_until(lambda: self._risk_flat(), timeout=5, interval=0.05)
        self.writer.flush()

    def _not_flat_detail(self) -> str:
        """What risk still holds open (its open orders and net positions), for the log."""
        try:
            orders, positions = self.risk_query(
                lambda r: (sorted(f"{o.client_order_id} {o.status.value}" for o in r.book.open_orders()),
                           r.portfolio.net_positions()), timeout=1)
        except Exception as e:  # noqa: BLE001 - a log line must not stop the flatten path
            return f"risk not readable: {e!r}"
        return f"risk open orders {orders}, positions {positions}"

    def _risk_flat(self) -> bool:
        """Risk's book holds no position and no open order. False when risk cannot be asked (busy
        past 1 s, restarting): an unreadable book is not a flat one, so the shutdown then waits and,
        at its timeout, flattens at the venue (it used to count as flat, which could let a shutdown
        end with positions open)."""
        try:
            return bool(self.risk_query(lambda r: r.is_flat, timeout=1))
        except Exception as e:  # noqa: BLE001 - any failure to read means "not known to be flat"
            logger.debug("risk's book not readable for the flat check: {!r}", e)
            return False

    def summary(self, reason: str, seconds: float) -> SessionSummary:
        s = SessionSummary(self.mode, self.days)
        try:
            snap = self.risk_query(lambda r: r, timeout=5)
            grid = ask(self.directory, grid_strategy(self.cfg.grid.instrument), lambda g: g, 5)
            hedge = ask(self.directory, HEDGE, lambda h: h, 5) if self.cfg.hedge.enabled else None
            fill_summary(s, snap, grid, hedge, self.cfg.profile.max_contracts_minis)
            s.fills = ask(self.directory, ROUTER, lambda r: r.fills, 5)
        except Exception as exc:
            logger.error("summary incomplete: {!r}", exc)
            s.open_positions = None  # never report "none" for what could not be read
        s.restarts = dict(self.tree.restarts)
        if self.feed_handler is not None:
            s.rejected_inputs = dict(self.feed_handler.core.rejected)
            s.events = self.feed_handler.sent
        s.trades_csv = str(self.trade_log.path)
        s.seconds = seconds
        s.exit_reason = reason
        return s

    def stop(self) -> None:
        self.done.set()
        self.tree.stop()
        self.actor_loop.close()
        self.writer.flush()


def run_paper(cfg: Any, fresh: bool = False) -> int:
    """Paper session with Redis (``REDIS_URL`` or embedded). Returns the process exit code."""
    from infra.alerts import SlackAlerter
    from infra.embedded_redis import EmbeddedRedis
    from infra.metrics import Metrics
    from infra.state_store import StateStore

    t0 = time.perf_counter()
    url = cfg.runtime.redis_url or os.environ.get("REDIS_URL")
    embedded = None
    if not url:
        embedded = EmbeddedRedis(Path(cfg.runtime.run_dir) / "redis")
        url = embedded.ensure_running()
        logger.info("embedded redis-server at {} (data in {})", url, embedded.data_dir if hasattr(embedded, "data_dir") else "run/redis")
    store = StateStore.from_url(url, cfg.runtime.namespace)
    if fresh:
        store.flush()
    meta = store.load_meta()
    if meta.get("finished") == "1" and not fresh:
        logger.info("previous session in {} finished; starting fresh (use a new --namespace to keep it)", cfg.runtime.namespace)
        store.flush()
    metrics = Metrics()
    if cfg.runtime.metrics_port is not None:
        try:
            port = metrics.start_http_server(cfg.runtime.metrics_port)
            logger.info("prometheus metrics on http://127.0.0.1:{}/metrics", port)
        except OSError as exc:
            logger.warning("metrics endpoint not started: {}", exc)
    alerter = SlackAlerter(os.environ.get("SLACK_WEBHOOK_URL"))
    system = PaperSystem(cfg, store, alerter, metrics)
    logger.info("paper session {} .. {} at speed {} ({}), namespace {}", system.days[0], system.days[-1],
                cfg.runtime.speed, "resuming" if system.resumed else "fresh start", cfg.runtime.namespace)
    stop_reason: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop_reason.append(signal.Signals(signum).name)
        system.done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    system.start()
    last_log = time.monotonic()
    while not system.done.wait(0.2):
        if system.data_done.is_set():
            system.wait_drained()
            system.done.set()
            break
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            ts = system.venue.last_ts
            logger.info("replay at {} CT, {} ticks", ns_to_ct(ts).strftime("%Y-%m-%d %H:%M") if ts else "-",
                        system.feed_handler.sent if system.feed_handler else 0)
    reason = system.escalation or (stop_reason[0] if stop_reason else "end of data")
    system.shutdown(reason)
    summary = system.summary(reason, time.perf_counter() - t0)
    if not system.escalation and not stop_reason:
        store.client.hset(store.key("meta"), "finished", "1")
    system.stop()
    print(summary.render())
    if embedded is not None and not stop_reason and not system.escalation:
        embedded.stop()
    return 3 if system.escalation else 0
