"""The ports: protocols the core (handlers, the node) depends on. Every adapter lives in ``infra/``.

| port | adapters |
|---|---|
| :class:`ExecutionVenue` | :class:`infra.venues.simulated.SimulatedVenue`, :class:`infra.projectx.broker.ProjectXBroker` |
| :class:`MarketDataSource` | :class:`infra.feeds.ReplayData`, :class:`infra.feeds.HubData` |
| :class:`StateStore` | :class:`infra.state_store.StateStore` (Redis) |
| :class:`WriteAheadQueue` | :class:`infra.persistence.WriteAhead` |
| :class:`TradeRecorder` | :class:`infra.trade_log.TradeLog` |
| :class:`Clock` | the node's event clock (simulated: the last event time; wall: last event + wall time since) |

One port is driven from outside instead: :class:`OperatorDesk`, what an operator may ask of a
running node, implemented by :class:`actors.ops.OpsDesk` and served over HTTP by
:class:`infra.ops_api.OpsServer` (so the adapter needs no import of the host).

One contract test suite runs the same scenarios against both venue adapters
(``tests/test_venue_contract.py``), as hummingbot's connector conformance tests do
(docs/reference/reference-designs.md). Units: prices in points (``Decimal``), quantities in
contracts, times in epoch ns UTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Protocol, runtime_checkable

from domain.messages import BrokerSnapshot, Fill, OrderIntent, PositionSnapshot, QuoteTick, TradeTick

EventSink = Callable[[Any], None]
"""Receives one asynchronous venue event (``Fill``, ``OrderCancelled``...). Must be thread-safe."""


class WriteAheadError(RuntimeError):
    """An order's record could not be written to the state store in time: the order must not be sent."""


@runtime_checkable
class ExecutionVenue(Protocol):
    """Where orders go. Events are the domain's (:mod:`domain.messages`): ``OrderAccepted``,
    ``OrderRejected``, ``OrderCancelled``, ``OrderModified`` and ``Fill``, keyed by client order id
    (on ProjectX it travels as ``customTag``).

    A call returns the events known at once. The simulated venue knows everything at once; on
    ProjectX a place returns accepted, rejected or nothing (ambiguous: reconciliation settles it),
    and fills and later status changes arrive asynchronously through the event sink.

    Attributes:
        last_ts: the venue's notion of now, epoch ns UTC: the last tick it matched (simulated) or
            the last event time (ProjectX). A late intent is timestamped ``max(intent.ts_ns, last_ts)``.
        matches_ticks: True when the venue fills orders from our market data (the broker actor is
            then subscribed to the ticks); False when it matches on its own.
    """

    last_ts: int
    matches_ticks: bool

    def start(self) -> None:
        """Connect what the venue needs (ProjectX: the user hub); returns at once."""

    def connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the venue's event stream; True once connected."""

    def stop(self) -> None:
        """Disconnect; calls after this are not guaranteed."""

    def set_event_sink(self, sink: EventSink | None) -> None:
        """Where asynchronous events go (the simulated venue has none and ignores it)."""

    def submit(self, intent: OrderIntent, ts_ns: int) -> list:
        """Place an order. Never retried blindly by the implementation."""

    def cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> list:
        """Cancel a working order; an order not working is answered with no event."""

    def modify(self, client_order_id: str, ts_ns: int, *, qty: int | None = None,
               limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> list:
        """Change a working order's size or price (absolute, points): ``[OrderModified]`` (plus a
        ``Fill`` if the change makes it marketable) on success; ``[]`` when refused, not working or
        nothing to change, and the order stays as it was (as the gateway leaves it after an
        ``Order/modify`` error); never ``OrderRejected``, which would end a working order."""

    def on_tick(self, tick: TradeTick | QuoteTick) -> list:
        """Market data for a venue that matches on it (simulated); ignored otherwise."""

    def open_orders(self) -> list[OrderIntent]:
        """Working orders as their current intents (size and price after any modify)."""

    def positions(self) -> dict[str, PositionSnapshot]:
        """Open positions by instrument."""

    def fills_since(self, ts_ns: int) -> list[Fill]:
        """Fills at or after ``ts_ns``, oldest first."""

    def snapshot(self, ts_ns: int) -> BrokerSnapshot:
        """The venue's truth for reconciliation: working orders, positions, recent fills."""

    def flatten(self, ts_ns: int) -> list:
        """Emergency path that must not depend on any actor: cancel all, close all at market."""


@runtime_checkable
class SplitOrderCalls(Protocol):
    """The live path's order calls in two halves (ProjectX): the first half writes the request at
    once when it can (no wait for an answer), the second half reads the answer. A venue without
    them is called whole (:meth:`ExecutionVenue.submit`)."""

    def begin_submit(self, intent: OrderIntent, ts_ns: int) -> Callable[[], list]:
        """Write the ``Order/place`` request; returns ``result() -> events``."""

    def begin_cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> Callable[[], list]:
        """Write the ``Order/cancel`` request; returns ``result() -> events``."""

    def placing(self, client_order_id: str) -> bool | None:
        """True while the order's place call is in flight, False once answered, None if unknown."""


@runtime_checkable
class MarketDataSource(Protocol):
    """Where ticks come from: a file replay or the ProjectX market hub. The node hosts its
    :meth:`make_handler` as the ``feed`` actor."""

    instruments: tuple[str, ...]
    blocks: bool
    """True when the feed handler sleeps (a paced replay): it then needs a thread of its own."""

    def start_ns(self) -> int:
        """Event time the session starts from, epoch ns UTC."""

    def trading_days(self) -> list[str]:
        """Trading days the source covers so far (ISO dates, America/Chicago)."""

    def warmup_ticks(self) -> dict[str, list[TradeTick]]:
        """History before the session, as ticks per instrument (indicator warm-up only)."""

    def make_handler(self, warmup: list, after_ns: int | None, restarted: bool, backlog: Callable[[], int],
                     on_done: Callable[[], None], start_ts_ns: int) -> Any:
        """The feed actor's handler (``start() -> Out``, ``handle(msg) -> Out``, ``now_ns()``), built
        on every (re)start: ``warmup`` messages to send first, resume after ``after_ns`` (a replay),
        ``backlog() -> int`` the deepest consumer inbox (a replay's backpressure), ``on_done`` when
        the data ends, ``start_ts_ns`` its clock's start."""

    def start(self, post: Callable[[Any], None]) -> None:
        """Begin delivering; ``post(msg)`` tells the feed actor (hub ticks, wall-clock timer)."""

    def stop(self) -> None:
        """Stop delivering."""


class WriteAheadQueue(Protocol):
    """Order records written before the order is sent (:class:`infra.persistence.WriteAhead`)."""

    def put(self, intent: OrderIntent, status: str, ts_ns: int) -> None:
        """Queue the record of a new order."""

    def wait(self, client_order_id: str, timeout_s: float = 5.0) -> None:
        """Return once the record is stored; raises :class:`WriteAheadError` otherwise."""


class TradeRecorder(Protocol):
    """The per-session trades CSV (:class:`infra.trade_log.TradeLog`)."""

    def write(self, fill: Fill, purpose: str = "") -> None:
        """Append one fill."""


class SessionJournal(Protocol):
    """The per-day session files (:class:`infra.session_files.SessionFiles`): the router tells it
    every order it passes on (a native bracket's legs when the venue places them), every fill with
    its order's purpose, and every rejection and cancellation. It must not raise."""

    def order(self, intent: OrderIntent, ts_ns: int) -> None:
        """An order on its way to the venue (or placed by it), at ``ts_ns`` (epoch ns UTC)."""

    def fill(self, fill: Fill, purpose: str = "") -> None:
        """A fill, recorded once per trade id."""

    def order_event(self, event: Any) -> None:
        """An ``OrderRejected`` or ``OrderCancelled``."""


class StateStore(Protocol):
    """The typed state store the core uses (:class:`infra.state_store.StateStore`, Redis).

    Key schema and durability: the adapter's module docstring and docs/architecture.md.
    """

    def save_order(self, intent: OrderIntent, status: str, *, ts_ns: int = 0, **fields: Any) -> None: ...
    def save_new_orders(self, orders: list[tuple[OrderIntent, str, int]]) -> None: ...
    def record_order_event(self, event: Any, status: str, **fields: Any) -> bool: ...
    def record_fill_and_status(self, fill: Fill) -> bool: ...
    def load_order(self, client_order_id: str) -> dict[str, Any] | None: ...
    def load_working_orders(self) -> dict[str, dict[str, Any]]: ...
    def fill_seen(self, trade_id: str) -> bool: ...
    def save_strategy(self, strategy_id: str, state: dict[str, Any] | str) -> None: ...
    def load_strategy(self, strategy_id: str) -> dict[str, Any] | None: ...
    def save_risk_mirror(self, strategy_id: str, snapshot_json: str, counters: dict[str, Any],
                         positions: dict[str, dict[str, Any]]) -> None: ...
    def encode(self, state: dict[str, Any]) -> str: ...
    def save_blob(self, name: str, data: dict[str, Any]) -> None: ...
    def load_blob(self, name: str) -> dict[str, Any] | None: ...
    def reserve_order_seqs(self, block: int) -> int: ...
    def update_meta(self, **fields: Any) -> None: ...
    def load_meta(self) -> dict[str, str]: ...
    def get_flag(self, name: str) -> str | None: ...
    def set_flag(self, name: str, value: str) -> None: ...
    def pop_ops_command(self) -> str | None: ...


class Clock(Protocol):
    """The node's notion of now, epoch ns UTC (simulated: the last event; wall: last event + wall time since)."""

    def now_ns(self) -> int: ...


COMMANDS = ("pause", "resume", "flatten", "arm", "disarm", "report")
"""The operator commands (docs/operations.md): ``POST /ops/<command>``, or ``RPUSH {ns}:ops:commands``."""


class CommandRefused(ValueError):
    """The command is unknown or does not apply in this mode (e.g. ``arm`` in paper mode)."""


class OperatorDesk(Protocol):
    """What an operator may ask of a running node (implemented by :class:`actors.ops.OpsDesk`).
    Both methods block briefly (they ask the actors) and are safe from any thread."""

    def command(self, name: str, who: str, source: str) -> str:
        """Carry out command ``name`` (one of :data:`COMMANDS`) for operator ``who`` coming from
        ``source`` (``"http"`` / ``"redis"``); returns what was done.

        Raises:
            CommandRefused: unknown command, or one that does not apply in this mode.
        """

    def status(self) -> dict[str, Any]:
        """The node's status document (JSON-safe; money as strings of dollars), as
        ``GET /ops/status`` serves it."""
