"""The order router: the one path every order, cancel and venue event takes.

Order path: strategy -> risk -> **router** -> broker (the venue) -> router -> risk + owner.
The router has the order's record written before the order is sent (through the write-ahead
port, or itself), records each fill once per trade id, mirrors status changes, writes the trades
CSV and forwards venue events to risk and to the order's owner (the actor named by
``strategy_id``). With ``store=None`` (backtest) nothing is mirrored; the logic is the same.
"""

from __future__ import annotations

from typing import Any

from domain.handler import BROKER, RECONCILED_TOPIC, RISK, Out, RejectedMessage
from domain.messages import (CancelOrder, Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderRejected,
                             OrderSubmitted, ReconcileResult)
from domain.orders import OrderStatus
from domain.ports import StateStore, TradeRecorder, WriteAheadQueue

_STATUS = {OrderSubmitted: OrderStatus.SUBMITTED, OrderAccepted: OrderStatus.ACCEPTED,
           OrderRejected: OrderStatus.REJECTED, OrderCancelled: OrderStatus.CANCELLED}


class OrderRouter:
    """Router handler. ``purposes`` remembers each order's purpose for the trades CSV.

    With ``write_ahead`` a new order's record is written by the write-ahead queue (batched; the
    broker waits for it before sending); without it, but with ``store``, the router writes it
    itself before passing the order on."""

    def __init__(self, store: StateStore | None, trade_log: TradeRecorder | None,
                 write_ahead: WriteAheadQueue | None = None) -> None:
        self.store = store
        self.trade_log = trade_log
        self.write_ahead = write_ahead
        self.purposes: dict[str, str] = {}
        self.fills = 0
        self.orders_sent = 0

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, OrderIntent):
            if self.write_ahead is not None:
                self.write_ahead.put(msg, OrderStatus.SUBMITTED.value, msg.ts_ns)
            elif self.store is not None:
                self.store.save_order(msg, OrderStatus.SUBMITTED.value, ts_ns=msg.ts_ns)
            self.purposes[msg.client_order_id] = msg.purpose
            self.orders_sent += 1
            sub = OrderSubmitted(msg.client_order_id, msg.strategy_id, msg.ts_ns)
            return [(BROKER, msg)] + self._to_owner(sub)
        if isinstance(msg, CancelOrder):
            return [(BROKER, msg)]
        if isinstance(msg, Fill):
            if self.store is not None:
                if not self.store.record_fill_and_status(msg):
                    return []  # duplicate trade id: already counted
            self.fills += 1
            if self.trade_log is not None:
                self.trade_log.write(msg, self._purpose(msg.client_order_id))
            if msg.leaves_qty == 0:
                self.purposes.pop(msg.client_order_id, None)
            return self._to_owner(msg)
        if isinstance(msg, (OrderAccepted, OrderRejected, OrderCancelled)):
            if self.store is not None:
                extra = {"venue_order_id": msg.venue_order_id} if isinstance(msg, OrderAccepted) else {
                    "reason": getattr(msg, "reason", "")}
                self._status(msg, _STATUS[type(msg)].value, ts_ns=msg.ts_ns, **extra)
            if not isinstance(msg, OrderAccepted):
                self.purposes.pop(msg.client_order_id, None)
            return self._to_owner(msg)
        if isinstance(msg, ReconcileResult):
            return [(RECONCILED_TOPIC, msg)]  # via the router so it arrives after the corrective events
        raise RejectedMessage(f"router: unexpected message {type(msg).__name__}")

    def _purpose(self, client_order_id: str) -> str:
        """The order's purpose for the trades CSV: remembered since it was sent, else (an order
        from before a restart) read from its Redis record once; "" for an order not ours."""
        purpose = self.purposes.get(client_order_id)
        if purpose is None and self.store is not None:
            rec = self.store.load_order(client_order_id)
            purpose = rec["intent"].purpose if rec is not None else ""
            self.purposes[client_order_id] = purpose
        return purpose or ""

    def _status(self, ev: Any, status: str, **fields: Any) -> None:
        """Mirror an order's new status and journal the event in one round trip (an order that is
        not ours, such as an emergency flatten or a venue-side order, is journalled only)."""
        self.store.record_order_event(ev, status, **fields)

    @staticmethod
    def _to_owner(ev: Any) -> Out:
        out: Out = [(RISK, ev)]
        if ev.strategy_id != RISK:
            out.append((ev.strategy_id, ev))
        return out
