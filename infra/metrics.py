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
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from wsgiref.simple_server import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (prometheus scrapes every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass

from domain.messages import RiskState, StrategyStatus

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

    # ------------------------------------------------------------------ helpers

    def set_risk_state(self, state: RiskState | str) -> None:
        """Set ``tsx_risk_state`` from a :class:`RiskState` (or its name). ValueError if unknown."""
        self.risk_state.set(RISK_STATE_VALUES[RiskState(state)])

    def observe_strategy_status(self, status: StrategyStatus) -> None:
        """Update ATR and grid spacing of ``status.instrument``; hedge ratio and correlation
        only when non-zero (0.0 is :class:`StrategyStatus`'s "not provided" default)."""
        self.atr_points.labels(instrument=status.instrument).set(status.atr)
        self.grid_spacing_points.labels(instrument=status.instrument).set(status.spacing)
        if status.hedge_ratio:
            self.hedge_ratio.set(status.hedge_ratio)
        if status.correlation:
            self.correlation.set(status.correlation)

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
