"""The order router: the one path every order, cancel and venue event takes.

Order path: strategy -> risk -> **router** -> broker (the venue) -> router -> risk + owner.
The router has the order's record written before the order is sent (through the write-ahead
port, or itself), records each fill once per trade id, mirrors status changes, writes the trades
CSV and forwards venue events to risk and to the order's owner (the actor named by
``strategy_id``). With ``store=None`` (backtest) nothing is mirrored; the logic is the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from domain.handler import BROKER, RECONCILED_TOPIC, RISK, Out, RejectedMessage
from domain.messages import (CancelOrder, Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderRejected,
                             OrderSubmitted, ReconcileResult)
from domain.orders import OrderStatus, bracket_leg_ids, bracket_parent, leg_purpose
from domain.ports import SessionJournal, StateStore, TradeRecorder, WriteAheadQueue

_STATUS = {OrderSubmitted: OrderStatus.SUBMITTED, OrderAccepted: OrderStatus.ACCEPTED,
           OrderRejected: OrderStatus.REJECTED, OrderCancelled: OrderStatus.CANCELLED}


class OrderRouter:
    """Router handler. ``purposes`` remembers each order's purpose for the trades CSV.

    With ``write_ahead`` a new order's record is written by the write-ahead queue (batched; the
    broker waits for it before sending); without it, but with ``store``, the router writes it
    itself before passing the order on.

    A native bracket's legs never pass through here as intents: the venue places them when the
    entry fills and reports them as ``OrderAccepted`` with the leg's intent. The router gives each
    leg its entry's purpose tags, records it (status ACCEPTED) and tells risk and the owner, as
    for any order.

    ``journal`` (optional): the per-day session files, told every order, fill, rejection and
    cancellation the router passes on (:class:`domain.ports.SessionJournal`)."""

    def __init__(self, store: StateStore | None, trade_log: TradeRecorder | None,
                 write_ahead: WriteAheadQueue | None = None, journal: SessionJournal | None = None) -> None:
        self.store = store
        self.trade_log = trade_log
        self.write_ahead = write_ahead
        self.journal = journal
        self.purposes: dict[str, str] = {}
        self.bracketed: dict[str, str] = {}  # entry with a native bracket -> its purpose, until its legs come
        self.fills = 0
        self.orders_sent = 0

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, OrderIntent):
            if self.write_ahead is not None:
                self.write_ahead.put(msg, OrderStatus.SUBMITTED.value, msg.ts_ns)
            elif self.store is not None:
                self.store.save_order(msg, OrderStatus.SUBMITTED.value, ts_ns=msg.ts_ns)
            self.purposes[msg.client_order_id] = msg.purpose
            if msg.bracket is not None:
                self.bracketed[msg.client_order_id] = msg.purpose
            self.orders_sent += 1
            if self.journal is not None:
                self.journal.order(msg, msg.ts_ns)
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
            if self.journal is not None:
                self.journal.fill(msg, self._purpose(msg.client_order_id))
            if msg.leaves_qty == 0:
                self.purposes.pop(msg.client_order_id, None)
            return self._to_owner(msg)
        if isinstance(msg, OrderAccepted) and msg.intent is not None:
            return self._placed_by_venue(msg)
        if isinstance(msg, (OrderAccepted, OrderRejected, OrderCancelled)):
            if not isinstance(msg, OrderAccepted):
                self.bracketed.pop(msg.client_order_id, None)
                if self.journal is not None:
                    self.journal.order_event(msg)
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

    def _placed_by_venue(self, msg: OrderAccepted) -> Out:
        """A native bracket leg the venue placed: its entry's tags, its record, risk and owner told."""
        intent = msg.intent
        assert intent is not None
        parent = bracket_parent(msg.client_order_id)
        if parent is not None:
            entry_purpose = self.bracketed.get(parent)
            if entry_purpose is None:
                entry_purpose = self._purpose(parent)
                self.purposes.pop(parent, None)
            intent = dataclasses.replace(intent, purpose=leg_purpose(intent.order_type, entry_purpose))
            msg = dataclasses.replace(msg, intent=intent)
            stop_id, target_id = bracket_leg_ids(parent)
            if (target_id if msg.client_order_id == stop_id else stop_id) in self.purposes:
                self.bracketed.pop(parent, None)  # both legs are known now
        self.purposes[msg.client_order_id] = intent.purpose
        if self.journal is not None:
            self.journal.order(intent, msg.ts_ns)
        if self.store is not None:
            self.store.save_order(intent, OrderStatus.ACCEPTED.value, ts_ns=msg.ts_ns, venue_order_id=msg.venue_order_id)
        return self._to_owner(msg)

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
