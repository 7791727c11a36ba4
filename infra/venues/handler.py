"""The broker actor's handler: one venue adapter hosted as an actor.

:class:`VenueHandler` serves any :class:`domain.ports.ExecutionVenue` whose calls answer at once
(the simulated venue); :class:`infra.projectx.venue_handler.ProjectXVenueHandler` extends it with
the gateway's split calls and request pool; :class:`IdlePrintsDeferred` is the backtest's, over a
simulated venue with nothing mirrored.
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


class IdlePrintsDeferred(VenueHandler):
    """The backtest's :class:`VenueHandler` over a :class:`infra.venues.simulated.SimulatedVenue`
    whose state is not mirrored (``store`` None): prints that arrive while no order is working are
    kept, the latest of each instrument, and handed to the venue, in the order they arrived, just
    before its next message or at :meth:`flush`.

    Why it is the same venue: with no working order a print only moves the venue's clock and last
    prices (:meth:`infra.paper_broker.PaperBroker.on_trade`: nothing to match, nothing returned),
    and the feed delivers prints in the venue's key order (ts_ns, instrument, seq), so the latest
    print of each instrument leaves the clock, the last prices and their times as every print
    would. The feed has validated the prints (``domain.validation``), so the venue's own checks,
    which only count bad prints, have nothing to count. Nothing else reads the venue between two
    of its messages in a backtest (the dispatcher is single-threaded; the reconciler's snapshot
    holds orders, positions and fills). ``tests/test_fast_paths.py`` compares runs with and without.
    """

    def __init__(self, venue: Any, write_ahead: Any | None = None) -> None:
        super().__init__(venue, write_ahead)
        if getattr(venue, "store", None) is not None:
            raise ValueError("IdlePrintsDeferred: the venue is mirrored; a deferred print would leave the mirror behind")
        self._broker = venue.broker
        self._pending: dict[str, TradeTick] = {}

    def handle(self, msg: Any) -> Out:
        if type(msg) is TradeTick and not self._broker.has_working:
            pending = self._pending
            pending.pop(msg.instrument, None)  # the dict keeps the order the latest prints arrived in
            pending[msg.instrument] = msg
            return []
        if self._pending:
            self.flush()
        return super().handle(msg)

    def flush(self) -> None:
        """Hand the kept prints to the venue (they fill nothing: no order was working)."""
        pending = list(self._pending.values())
        self._pending.clear()
        for tick in pending:
            self.venue.on_tick(tick)
