"""Prometheus metrics of the trader, on a private registry (never the process-global one).

All names start with ``tsx_``. Money is dollars, prices/distances are instrument points,
exposure is contracts (signed, + long). Gauges (``Metrics`` attribute = metric name minus
``tsx_``)::

    pnl_realized_dollars, pnl_unrealized_dollars, pnl_net_dollars (day, after fees),
    fees_dollars, drawdown_dollars, mll_headroom_dollars, mll_floor_dollars, equity_dollars,
    exposure_contracts{instrument}, exposure_1atr_dollars, open_orders,
    atr_points{instrument}, hedge_ratio, correlation, grid_spacing_points{instrument},
    risk_state (0 ACTIVE, 1 REDUCING, 2 HALTED), inbox_depth{actor}

Counters (exposed with the ``_total`` suffix)::

    actor_restarts_total{actor}, rejected_inputs_total{reason}, fills_total{instrument},
    orders_total{outcome}

Per strategy, seed 001's names (``../shared/seeds/001_712eca7d3b1742ed.txt``, "Prometheus
Metrics") with a ``strategy`` label, made to follow Prometheus's naming rules
(https://prometheus.io/docs/practices/naming/: base units in the name, ``_total`` only on
counters)::

    seed name              metric here
    strategy_pnl_total     strategy_pnl_dollars{strategy, component="realized"|"unrealized"|"fees"|"total"}
    strategy_pnl_daily     strategy_pnl_daily_dollars{strategy}
    strategy_drawdown      strategy_drawdown_dollars{strategy}
    strategy_exposure      strategy_exposure_contracts{strategy, instrument}   (0 when flat)
    strategy_orders_open   strategy_orders_open{strategy}
    strategy_atr           strategy_atr_points{strategy, instrument}
    strategy_correlation   strategy_correlation{strategy}
    strategy_hedge_ratio   strategy_hedge_ratio{strategy}

Latency histograms (seconds, wall clock; :class:`LatencyProbe`)::

    tsx_tick_to_decision_seconds   market data (or a fill) reaching the node -> the strategy's intent
    tsx_order_round_trip_seconds   the router sending an order -> the venue's first answer
"""

from __future__ import annotations

import threading
from typing import Any

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from wsgiref.simple_server import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (prometheus scrapes every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass

from domain.messages import (AccountStatus, Fill, OrderAccepted, OrderIntent, OrderRejected, QuoteTick, RiskState,
                             StrategyStatus, TradeTick)

RISK_STATE_VALUES = {RiskState.ACTIVE: 0, RiskState.REDUCING: 1, RiskState.HALTED: 2}
"""Numeric encoding of :class:`RiskState` in the ``tsx_risk_state`` gauge."""


class Metrics:
    """Holds every ``tsx_`` metric, registered on ``registry`` (a fresh one if None).

    Update the attributes directly (``m.open_orders.set(3)``,
    ``m.fills_total.labels(instrument="MNQ").inc()``) or via the helpers. Thread-safe
    (prometheus-client metrics are).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._server: Any = None
        self._thread: threading.Thread | None = None

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"tsx_{name}", doc, labels, registry=self.registry)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(f"tsx_{name}", doc, labels, registry=self.registry)

        self.pnl_realized_dollars = gauge("pnl_realized_dollars", "Realized PnL today, dollars")
        self.pnl_unrealized_dollars = gauge("pnl_unrealized_dollars",
                                            "Unrealized PnL of open positions, dollars")
        self.pnl_net_dollars = gauge("pnl_net_dollars",
                                     "Day PnL after fees (realized + unrealized - fees), dollars")
        self.fees_dollars = gauge("fees_dollars", "Commissions paid today, dollars")
        self.drawdown_dollars = gauge("drawdown_dollars", "Drawdown from the equity high, dollars")
        self.mll_headroom_dollars = gauge("mll_headroom_dollars",
                                          "Distance from equity to the maximum loss limit floor, dollars")
        self.mll_floor_dollars = gauge("mll_floor_dollars", "Maximum loss limit floor, dollars")
        self.equity_dollars = gauge("equity_dollars", "Account equity, dollars")
        self.exposure_contracts = gauge("exposure_contracts", "Net position, signed contracts",
                                        ("instrument",))
        self.exposure_1atr_dollars = gauge("exposure_1atr_dollars",
                                           "Dollar move of the book for a 1-ATR adverse move")
        self.open_orders = gauge("open_orders", "Working orders")
        self.atr_points = gauge("atr_points", "ATR, instrument points", ("instrument",))
        self.hedge_ratio = gauge("hedge_ratio", "Current hedge ratio")
        self.correlation = gauge("correlation", "Rolling correlation of hedged legs")
        self.grid_spacing_points = gauge("grid_spacing_points", "Grid spacing, instrument points",
                                         ("instrument",))
        self.risk_state = gauge("risk_state", "Risk state: 0 ACTIVE, 1 REDUCING, 2 HALTED")
        self.inbox_depth = gauge("inbox_depth", "Messages waiting in an actor inbox", ("actor",))
        self.actor_restarts_total = counter("actor_restarts_total", "Actor restarts",
                                            ("actor",))
        self.rejected_inputs_total = counter("rejected_inputs_total",
                                             "Inputs rejected by validation", ("reason",))
        self.fills_total = counter("fills_total", "Fills applied", ("instrument",))
        self.orders_total = counter("orders_total", "Orders by outcome "
                                    "(submitted/accepted/rejected/denied/cancelled/filled)",
                                    ("outcome",))

        def sgauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, ("strategy",) + labels, registry=self.registry)

        self.strategy_pnl_dollars = sgauge("strategy_pnl_dollars", "Strategy session P&L by component "
                                           "(realized, unrealized, fees, total after fees), dollars", ("component",))
        self.strategy_pnl_daily_dollars = sgauge("strategy_pnl_daily_dollars",
                                                 "Strategy P&L since the trading day's start, after fees, dollars")
        self.strategy_drawdown_dollars = sgauge("strategy_drawdown_dollars",
                                                "Strategy drawdown from its highest session P&L, dollars")
        self.strategy_exposure_contracts = sgauge("strategy_exposure_contracts",
                                                  "Strategy net position, signed contracts (0 when flat)", ("instrument",))
        self.strategy_orders_open = sgauge("strategy_orders_open", "Strategy working orders")
        self.strategy_atr_points = sgauge("strategy_atr_points", "Strategy ATR, instrument points", ("instrument",))
        self.strategy_correlation = sgauge("strategy_correlation", "Rolling correlation of the hedged legs")
        self.strategy_hedge_ratio = sgauge("strategy_hedge_ratio", "Current hedge ratio")
        buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
        self.tick_to_decision_seconds = Histogram(
            "tsx_tick_to_decision_seconds", "Wall time from market data (or a fill) reaching the node "
            "to the strategy's order intent", buckets=buckets, registry=self.registry)
        self.order_round_trip_seconds = Histogram(
            "tsx_order_round_trip_seconds", "Wall time from the router sending an order to the venue's "
            "first answer (accepted, rejected or filled)", buckets=buckets, registry=self.registry)

    # ------------------------------------------------------------------ helpers

    def set_risk_state(self, state: RiskState | str) -> None:
        """Set ``tsx_risk_state`` from a :class:`RiskState` (or its name). ValueError if unknown."""
        self.risk_state.set(RISK_STATE_VALUES[RiskState(state)])

    def observe_strategy_status(self, status: StrategyStatus) -> None:
        """Update ATR and grid spacing of ``status.instrument`` (account-wide and per strategy);
        hedge ratio and correlation only when non-zero (0.0 is :class:`StrategyStatus`'s "not
        provided" default)."""
        self.atr_points.labels(instrument=status.instrument).set(status.atr)
        self.grid_spacing_points.labels(instrument=status.instrument).set(status.spacing)
        sid = status.strategy_id
        self.strategy_atr_points.labels(strategy=sid, instrument=status.instrument).set(status.atr)
        if status.hedge_ratio:
            self.hedge_ratio.set(status.hedge_ratio)
            self.strategy_hedge_ratio.labels(strategy=sid).set(status.hedge_ratio)
        if status.correlation:
            self.correlation.set(status.correlation)
            self.strategy_correlation.labels(strategy=sid).set(status.correlation)

    def observe_strategies(self, status: AccountStatus) -> None:
        """The ``strategy_*`` P&L, drawdown, exposure and open-order gauges from risk's
        :class:`AccountStatus` (its ``strategies`` figures). An instrument a strategy has traded
        and is flat in reads 0."""
        for f in status.strategies:
            for component, value in (("realized", f.realized), ("unrealized", f.unrealized), ("fees", f.fees),
                                     ("total", f.total)):
                self.strategy_pnl_dollars.labels(strategy=f.strategy, component=component).set(float(value))
            self.strategy_pnl_daily_dollars.labels(strategy=f.strategy).set(float(f.day_pnl))
            self.strategy_drawdown_dollars.labels(strategy=f.strategy).set(float(f.drawdown))
            for sym, qty in f.positions:
                self.strategy_exposure_contracts.labels(strategy=f.strategy, instrument=sym).set(qty)
        for sid, n in status.orders_by_strategy:
            self.strategy_orders_open.labels(strategy=sid).set(n)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ HTTP endpoint

    def start_http_server(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``GET /metrics`` on ``addr:port`` from a daemon thread (prometheus_client's WSGI
        app and threading server); any other path answers 404, so a scraper or a person probing
        ``/ops/flatten`` is not told "200 OK".

        ``port`` 0 picks a free port. Returns the bound port. Raises ``RuntimeError`` if
        already serving, ``OSError`` if the port is taken.
        """
        if self._server is not None:
            raise RuntimeError("metrics HTTP server already running")
        app = make_wsgi_app(self.registry)

        def only_metrics(environ: dict, start_response: Any) -> list[bytes]:
            if environ.get("PATH_INFO", "") not in ("/metrics", "/metrics/"):
                start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"not found: this port serves /metrics only\n"]
            return app(environ, start_response)

        server = make_server(addr, port, only_metrics, ThreadingWSGIServer, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return int(server.server_port)

    def stop_http_server(self) -> None:
        """Stop the HTTP endpoint (no-op if not started)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None


class LatencyProbe:
    """``Directory.send_hook`` that feeds the two latency histograms (wall clock, seconds):

    - tick to decision: a strategy's :class:`OrderIntent` to risk, timed from the last market
      data message (trade or quote) of its instrument told to any actor at the same event time
      (the intent's ``ts_ns``); an intent decided later (a timer) is not counted.
    - order round trip: the router's :class:`OrderIntent` to the broker, until the first
      ``OrderAccepted`` / ``OrderRejected`` / ``Fill`` of that client order id reaches the router.

    Called on every message the node's actors tell each other: a few dict operations.
    """

    MAX_PENDING = 10_000

    def __init__(self, metrics: Metrics, risk: str = "risk", broker: str = "broker", router: str = "router") -> None:
        self.metrics = metrics
        self.risk, self.broker, self.router = risk, broker, router
        self._md: dict[str, tuple[int, float]] = {}  # instrument -> (event ts, perf_counter)
        self._orders: dict[str, float] = {}

    def __call__(self, dest: str, msg: object) -> None:
        t = type(msg)
        if t is TradeTick or t is QuoteTick:
            last = self._md.get(msg.instrument)  # type: ignore[attr-defined]
            if last is None or last[0] != msg.ts_ns:  # type: ignore[attr-defined]
                self._md[msg.instrument] = (msg.ts_ns, time.perf_counter())  # type: ignore[attr-defined]
        elif t is OrderIntent:
            if dest == self.risk and msg.strategy_id != self.risk:  # type: ignore[attr-defined]
                seen = self._md.get(msg.instrument)  # type: ignore[attr-defined]
                if seen is not None and seen[0] == msg.ts_ns:  # type: ignore[attr-defined]
                    self.metrics.tick_to_decision_seconds.observe(time.perf_counter() - seen[1])
            elif dest == self.broker and len(self._orders) < self.MAX_PENDING:
                self._orders[msg.client_order_id] = time.perf_counter()  # type: ignore[attr-defined]
        elif (t is OrderAccepted or t is OrderRejected or t is Fill) and dest == self.router:
            sent = self._orders.pop(msg.client_order_id, None)  # type: ignore[attr-defined]
            if sent is not None:
                self.metrics.order_round_trip_seconds.observe(time.perf_counter() - sent)
