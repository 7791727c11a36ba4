"""Watchdog handler: alerts, metrics, stale data, inbox depth and actor liveness.

Inputs: ``Alert`` (from any actor: sent to Slack, de-duplicated and rate-limited by
:class:`infra.alerts.SlackAlerter`), ``AccountStatus`` / ``StrategyStatus`` /
``RiskStateChanged`` / ``ExposureUpdate`` (metrics), ``ClockTick`` (market data is flowing) and
:class:`WatchdogCheck` (a wall-clock timer, every ``heartbeat_s``): then it samples inbox depths,
checks that every expected actor is registered, and that market data arrived within
``stale_data_s`` seconds of wall time while the feed runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from domain.handler import Out, RejectedMessage
from domain.messages import (AccountStatus, Alert, ClockTick, ExposureUpdate, RiskState, RiskStateChanged,
                             StrategyStatus)
from infra.sdnotify import notify


@dataclass(frozen=True, slots=True)
class WatchdogCheck:
    """Timer message for the watchdog (wall clock)."""

    ts_ns: int


class Watchdog:
    """Watchdog handler.

    Args:
        alerter: object with ``send(Alert) -> str``.
        metrics: :class:`infra.metrics.Metrics` or None.
        inbox_depths: ``f() -> {actor: depth}``.
        live_actors: ``f() -> set of registered names``; ``expected``: names that must be alive.
        restarts: ``f() -> {actor: restarts}`` from the supervision tree.
        feed_running: ``f() -> bool``; staleness is only checked while the feed runs.
        max_inbox: inbox depth above which an alert is raised.
        restarts_reported: ``{actor: restarts already reported}``, shared by every watchdog of one
            node (the node keeps it), so a restarted watchdog neither alerts nor counts an earlier
            restart again; None: this watchdog's own record.
    """

    def __init__(self, alerter: Any, metrics: Any | None, inbox_depths: Callable[[], dict[str, int]],
                 live_actors: Callable[[], set[str]], expected: set[str], restarts: Callable[[], dict[str, int]],
                 feed_running: Callable[[], bool], stale_data_s: float = 30.0, max_inbox: int = 5000,
                 wall: Callable[[], float] = time.monotonic,
                 restarts_reported: dict[str, int] | None = None) -> None:
        self.alerter = alerter
        self.metrics = metrics
        self.inbox_depths = inbox_depths
        self.live_actors = live_actors
        self.expected = expected
        self.restarts = restarts
        self.feed_running = feed_running
        self.stale_data_s = stale_data_s
        self.max_inbox = max_inbox
        self.wall = wall
        self.last_data = wall()
        self.alerts: list[Alert] = []
        self.restarts_reported: dict[str, int] = {} if restarts_reported is None else restarts_reported
        self.last_status: AccountStatus | None = None
        self._missing: set[str] = set()
        self._exposed: set[str] = set()  # instruments whose exposure gauge was set

    def _alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.alerter.send(alert)

    def handle(self, msg: Any) -> Out:
        m = self.metrics
        if isinstance(msg, Alert):
            self._alert(msg)
        elif isinstance(msg, ClockTick):
            self.last_data = self.wall()
        elif isinstance(msg, AccountStatus):
            self.last_status = msg
            if m is not None:
                m.pnl_realized_dollars.set(float(msg.realized))
                m.pnl_unrealized_dollars.set(float(msg.unrealized))
                m.pnl_net_dollars.set(float(msg.day_pnl))
                m.fees_dollars.set(float(msg.fees))
                m.drawdown_dollars.set(float(msg.drawdown))
                m.mll_headroom_dollars.set(float(msg.headroom))
                m.mll_floor_dollars.set(float(msg.mll_floor))
                m.equity_dollars.set(float(msg.equity))
                m.open_orders.set(msg.open_orders)
                m.exposure_1atr_dollars.set(float(msg.exposure_1atr))
                m.set_risk_state(msg.state)
                m.observe_strategies(msg)
        elif isinstance(msg, StrategyStatus):
            if m is not None:
                m.observe_strategy_status(msg)
        elif isinstance(msg, RiskStateChanged):
            if m is not None:
                m.set_risk_state(msg.state)
            if msg.state is not RiskState.ACTIVE:
                self._alert(Alert("warning", f"risk-state-{msg.state.value}", f"risk {msg.state.value}: {msg.reason}",
                                  msg.ts_ns))
        elif isinstance(msg, ExposureUpdate):
            if m is not None:
                now = dict(msg.positions)
                for sym in self._exposed - now.keys():  # flat now: the gauge must not keep the old size
                    m.exposure_contracts.labels(instrument=sym).set(0)
                for sym, q in now.items():
                    m.exposure_contracts.labels(instrument=sym).set(q)
                self._exposed = set(now)
        elif isinstance(msg, WatchdogCheck):
            self._check(msg.ts_ns)
        else:
            raise RejectedMessage(f"watchdog: unexpected message {type(msg).__name__}")
        return []

    def _check(self, ts_ns: int) -> None:
        depths = self.inbox_depths()
        for actor, depth in depths.items():
            if self.metrics is not None:
                self.metrics.inbox_depth.labels(actor=actor).set(depth)
            if depth > self.max_inbox:
                self._alert(Alert("warning", f"inbox-{actor}", f"{actor} inbox depth {depth} > {self.max_inbox}", ts_ns))
        missing = self.expected - self.live_actors()
        previously, self._missing = self._missing, missing
        missing = missing & previously  # missing on two checks in a row (not just restarting)
        if missing:
            self._alert(Alert("warning", "actors-down", f"actors not running: {sorted(missing)}", ts_ns))
        for actor, n in self.restarts().items():
            new = n - self.restarts_reported.get(actor, 0)
            if new > 0:
                self.restarts_reported[actor] = n
                if self.metrics is not None:
                    self.metrics.actor_restarts_total.labels(actor=actor).inc(new)
                self._alert(Alert("warning", f"restart-{actor}", f"{actor} restarted ({n} so far)", ts_ns))
        stale = self.feed_running() and self.wall() - self.last_data > self.stale_data_s
        if stale:
            self._alert(Alert("warning", "stale-data", f"no market data for {self.wall() - self.last_data:.0f}s", ts_ns))
        if not missing and not stale:
            notify("WATCHDOG=1")  # systemd's WatchdogSec (infra/sdnotify.py): this check found the tree healthy
