"""The broker interface shared by the paper venue and the ProjectX gateway adapter.

The order router and the reconciler talk to a venue only through :class:`Broker`; the broker
actor (:class:`actors.execution.BrokerHandler`) hosts one. Two implementations:

- :class:`actors.execution.PaperVenue`: simulated fills (:class:`infra.paper_broker.PaperBroker`),
  every event returned synchronously from the call that caused it;
- :class:`infra.projectx.broker.ProjectXBroker`: TopstepX over REST + the SignalR user hub. A place
  returns at once (accepted, rejected, or nothing when the outcome is ambiguous); fills and later
  status changes arrive asynchronously from the user hub and are pushed into the event sink.

Event types are the domain's (:mod:`domain.messages`): ``OrderAccepted``, ``OrderRejected``,
``OrderCancelled`` and ``Fill``, keyed by client order id (on ProjectX the ``customTag``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from domain.messages import BrokerSnapshot, OrderIntent, QuoteTick, TradeTick

EventSink = Callable[[Any], None]
"""Receives one asynchronous venue event (``Fill``, ``OrderCancelled``...). Must be thread-safe."""


@runtime_checkable
class Broker(Protocol):
    """What the router and the reconciler need from a venue.

    ``last_ts`` (int ns, UTC) is the venue's notion of now: the last tick it saw (paper) or the
    last event time (ProjectX); a late intent is timestamped ``max(intent.ts_ns, last_ts)``.
    """

    last_ts: int

    def set_event_sink(self, sink: EventSink | None) -> None:
        """Where asynchronous events go (the paper venue has none and ignores it)."""

    def submit(self, intent: OrderIntent, ts_ns: int) -> list:
        """Place an order. Returns the events known at once (accepted/rejected/fills). An empty
        list means the outcome is not known yet (ProjectX: ambiguous, wait for reconciliation).
        Never retried blindly by the implementation."""

    def cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> list:
        """Cancel a working order; returns the events known at once (may be empty)."""

    def on_tick(self, tick: TradeTick | QuoteTick) -> list:
        """Market data seen by the broker actor; the paper venue matches resting orders here."""

    def snapshot(self, ts_ns: int) -> BrokerSnapshot:
        """The venue's truth for reconciliation: working orders, positions, recent fills."""

    def flatten(self, ts_ns: int) -> list:
        """Emergency path that must not depend on any actor: cancel all, close all at market."""
