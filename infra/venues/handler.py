"""The broker actor's handler: one venue adapter hosted as an actor.

:class:`VenueHandler` serves any :class:`domain.ports.ExecutionVenue` whose calls answer at once
(the simulated venue); :class:`infra.projectx.venue_handler.ProjectXVenueHandler` extends it with
the gateway's split calls and request pool.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from domain.handler import ROUTER, Out, RejectedMessage
from domain.messages import CancelOrder, OrderIntent, OrderRejected, QuoteTick, TradeTick
from domain.ports import WriteAheadError


class VenueHandler:
    """Broker actor handler over an :class:`domain.ports.ExecutionVenue` whose calls answer at once:
    orders and cancels in, venue events out to the router, ticks matched. With ``write_ahead``
    (a :class:`domain.ports.WriteAheadQueue`), an order goes to the venue only after its record
    was stored; a failed write rejects it (``write-ahead failed``)."""

    def __init__(self, venue: Any, write_ahead: Any | None = None) -> None:
        self.venue = venue
        self.write_ahead = write_ahead

    def durable(self, intent: OrderIntent) -> OrderRejected | None:
        """None once ``intent`` may be sent (its record is in Redis), else its rejection."""
        if self.write_ahead is None:
            return None
        try:
            self.write_ahead.wait(intent.client_order_id)
        except WriteAheadError as e:
            return self.not_written(intent, e)
        return None

    def not_written(self, intent: OrderIntent, error: WriteAheadError) -> OrderRejected:
        """The rejection of an order whose write-ahead failed (logged): it was not sent."""
        logger.error("{}: not sent", error)
        return OrderRejected(intent.client_order_id, intent.strategy_id, f"write-ahead failed: {error}",
                             max(intent.ts_ns, self.venue.last_ts))

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, (TradeTick, QuoteTick)):
            fills = self.venue.on_tick(msg)
            return [(ROUTER, f) for f in fills] if fills else []
        if isinstance(msg, OrderIntent):
            refused = self.durable(msg)
            if refused is not None:
                return [(ROUTER, refused)]
            # the venue's clock is the last tick it saw: a late intent is timestamped at arrival
            return [(ROUTER, e) for e in self.venue.submit(msg, max(msg.ts_ns, self.venue.last_ts))]
        if isinstance(msg, CancelOrder):
            return [(ROUTER, e) for e in self.venue.cancel(msg.client_order_id, max(msg.ts_ns, self.venue.last_ts),
                                                           msg.reason or "cancelled")]
        raise RejectedMessage(f"broker: unexpected message {type(msg).__name__}")
