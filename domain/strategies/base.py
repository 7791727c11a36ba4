"""The strategy plug-in interface.

A strategy is a pure handler (``handle(msg) -> Out``, no I/O, no threads, no wall clock) that the
node hosts as its own actor under the ``strategies`` supervisor, addressed by its name (which is
also its ``strategy_id``, the prefix of every client order id it makes).

Inputs it may receive (it subscribes through its :class:`StrategyPlugin` declaration):

- ``Bar`` and ``TradeTick`` of the instruments it reads (topic ``bars.<instrument>``), ``WarmupBars``
  once at start (history, for indicators only);
- its own order events: ``OrderSubmitted``, ``OrderAccepted``, ``OrderRejected``, ``OrderCancelled``,
  ``OrderDenied`` (risk refused), ``Fill``;
- ``RiskStateChanged`` (ACTIVE / REDUCING / HALTED), ``ExposureUpdate`` (the account's net
  positions), ``ClockTick`` (each minute of event time);
- ``StrategyStatus`` of the other strategies when :attr:`StrategyPlugin.wants_status` (the hedge
  reads the grid's mid and spacing).

Outputs: ``OrderIntent`` and ``CancelOrder`` to ``risk`` (the only gate; every intent is checked
account-wide across all strategies), optionally ``StrategyStatus`` on the ``status`` topic and
``Alert`` to the watchdog.

Persistence: ``snapshot() -> dict`` (JSON-safe) after state-changing messages, ``restore(dict)``
on a restart; what a lagging snapshot misses of its orders' fills and cancels the reconciler
sends again (``held_orders`` tells it which orders the snapshot holds). docs/strategies/README.md
shows how to add one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from domain.calendar import SessionCalendar
from domain.handler import IdGenerator, Out
from domain.messages import ExposureUpdate, Fill
from domain.risk_rules import RiskLimits

STRICT = ConfigDict(extra="forbid", frozen=True)
"""Model config of every strategy's params: unknown keys are errors, values immutable."""


@runtime_checkable
class Strategy(Protocol):
    """What the node needs from a strategy handler."""

    strategy_id: str

    def handle(self, msg: Any) -> Out:
        """Consume one message; return ``(destination, message)`` pairs to send."""

    def snapshot(self) -> dict:
        """JSON-safe state for the mirror; fresh containers of immutable values."""

    def restore(self, d: dict) -> None:
        """Load a :meth:`snapshot`."""

    def forget_orders(self, client_order_ids: list[str]) -> None:
        """Drop restored orders that never reached the router (they died with the old process)."""

    def stats(self) -> dict[str, int]:
        """Counters for the session summary (e.g. ``{"entries_filled": 65}``)."""


@dataclass(frozen=True)
class StrategyContext:
    """What the node gives a strategy when it builds one.

    Attributes:
        strategy_id: the strategy's name (actor name and client order id prefix).
        instruments: the instruments it reads, in the order its plug-in defines (e.g. the hedge:
            primary, then hedge instrument).
        ids: client order id source (``{strategy_id}-{incarnation}-{seq}``).
        calendar: session rules (America/Chicago; flat margin before 15:10 CT).
        limits: the account's risk limits (sizing caps, e.g. ``per_trade_risk``).
        telemetry: a watchdog hears this node (paper and live): send the telemetry that only the
            watchdog reads (e.g. the hedge's ``StrategyStatus`` with its ratio and correlation,
            for the metrics). False in the backtest, which runs no watchdog.
    """

    strategy_id: str
    instruments: tuple[str, ...]
    ids: IdGenerator
    calendar: SessionCalendar
    limits: RiskLimits
    telemetry: bool = True


DEFAULT_BAR_PERIODS_S = (60, 300, 900)
"""Bar periods (1, 5 and 15 minutes) for a plug-in that does not declare its own
(:attr:`StrategyPlugin.bar_periods`)."""


@dataclass(frozen=True)
class StrategyPlugin:
    """A strategy kind: its validated params, how to build it and what it subscribes to.

    Each module ``domain/strategies/<kind>.py`` defines ``PLUGIN = StrategyPlugin(...)``; the config
    names the kind (``strategies: [{name, kind, instruments, params}]``).

    Attributes:
        kind: the module name.
        params: the pydantic model of its ``params:`` section (use :data:`STRICT`).
        build: ``build(ctx, params) -> Strategy``.
        instruments: (min, max) number of instruments an entry names.
        wants_status: subscribe to every ``StrategyStatus`` (the hedge).
        wants_ticks: it reads the ``TradeTick`` of its instruments; False for a strategy that
            decides on bars only (its bar builder then forwards no prints: a backtest delivers a
            quarter fewer messages).
        wants_clock: it reads the ``ClockTick`` (a minute of event time began); False for a
            strategy whose every decision comes from bars, fills and risk states (it is then not
            subscribed to the clock: two deliveries fewer per bar of 2-minute data).
        wants_quotes: it reads the validated ``QuoteTick`` of its instruments (topic
            ``quotes.<instrument>``: live data, and a replay of recordings that hold quotes).
        bar_periods: ``f(params) -> seconds``: every bar period it reads; the bar builder of an
            instrument makes the union over the strategies that trade it (default
            :data:`DEFAULT_BAR_PERIODS_S`).
        warmup_periods: ``f(params) -> seconds``: bar periods of the ``WarmupBars`` it gets at start.
        held_orders: ``f(snapshot) -> {client order id: contracts filled}`` of the orders a
            snapshot holds as working (the reconciler brings them up to date after a restart).
        check: ``f(params, instruments, limits) -> None``; raises ``ValueError("<field>: why")``
            for a combination the params alone cannot judge (e.g. sizing above the profile's
            per-trade risk).
        summary: labels of :meth:`Strategy.stats` counters shown in the session summary.
        reload: ``f(params) -> model`` for a strategy that reads a trained model: the model as on
            disk now (the same object while its files are unchanged; raises if they cannot be
            loaded). The node checks it each heartbeat and sends a changed one to the strategy as
            :class:`domain.messages.ModelUpdate` (a retrained model without a restart).
    """

    kind: str
    params: type[BaseModel]
    build: Callable[[StrategyContext, Any], Strategy]
    instruments: tuple[int, int] = (1, 1)
    wants_status: bool = False
    wants_ticks: bool = True
    wants_clock: bool = True
    wants_quotes: bool = False
    bar_periods: Callable[[Any], tuple[int, ...]] = lambda params: DEFAULT_BAR_PERIODS_S
    warmup_periods: Callable[[Any], tuple[int, ...]] = lambda params: (60, 900)
    held_orders: Callable[[dict], dict[str, int]] = lambda snapshot: {}
    check: Callable[[Any, tuple[str, ...], RiskLimits], None] | None = None
    summary: tuple[str, ...] = ()
    reload: Callable[[Any], Any] | None = None


class OwnPosition:
    """A single-instrument strategy's position, folded from its own fills.

    A fill is applied once (the latest ``keep`` trade ids are remembered: reconciliation after a
    restart or a gap may deliver one again). Risk's own orders (the 15:10 CT flatten, loss-limit
    liquidations) are not the strategy's, so it learns of them from the account's
    ``ExposureUpdate``: the account flat in the instrument while the strategy holds a position and
    has no order working means risk flattened it. That assumes no other strategy trades the same
    instrument on the account.

    Args:
        strategy_id: whose fills count; instrument: the one traded; keep: trade ids remembered.
    Attributes:
        qty: signed contracts (+ long).
    """

    def __init__(self, strategy_id: str, instrument: str, keep: int) -> None:
        self.strategy_id = strategy_id
        self.instrument = instrument
        self.keep = keep
        self.qty = 0
        self.seen_trades: list[str] = []

    def apply(self, fill: Fill) -> bool:
        """Fold ``fill`` in; False (nothing changed) for another strategy's or instrument's fill or
        a trade id already applied."""
        if fill.strategy_id != self.strategy_id or fill.instrument != self.instrument:
            return False
        if fill.trade_id in self.seen_trades:
            return False
        self.seen_trades.append(fill.trade_id)
        del self.seen_trades[:-self.keep]
        self.qty += fill.side.sign * fill.qty
        return True

    def flattened_by_risk(self, msg: ExposureUpdate, orders_working: bool) -> bool:
        """True (and the position set to 0) when ``msg`` shows risk closed it (see the class)."""
        if self.qty != 0 and not orders_working and msg.qty(self.instrument) == 0:
            self.qty = 0
            return True
        return False

    def snapshot(self) -> dict:
        """``{"position", "seen_trades"}``, JSON-safe."""
        return {"position": self.qty, "seen_trades": list(self.seen_trades)}

    def restore(self, d: dict) -> None:
        """Load the keys of :meth:`snapshot` from a strategy's snapshot ``d``."""
        self.qty = int(d.get("position", 0))
        self.seen_trades = [str(t) for t in d.get("seen_trades", [])][-self.keep:]
