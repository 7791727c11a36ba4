"""Order state machine keyed by client order id.

An :class:`Order` is a fold over order events (:data:`domain.messages.ORDER_EVENTS` plus
``OrderDenied``) with an explicit transition table; an illegal transition raises
:class:`InvalidTransition`. A fill whose ``trade_id`` was already applied is ignored (returns
False): venues and reconnects replay fills, and counting one twice would double a position.

States (Nautilus naming)::

    INITIALIZED --denied--> DENIED
    INITIALIZED --submitted--> SUBMITTED --accepted--> ACCEPTED
    SUBMITTED/ACCEPTED/PARTIALLY_FILLED --fill--> PARTIALLY_FILLED | FILLED
    SUBMITTED/ACCEPTED/PARTIALLY_FILLED --cancelled--> CANCELLED
    SUBMITTED --rejected--> REJECTED

A fill may arrive before the acknowledgement (venues race), so SUBMITTED accepts fills.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterator

from domain.messages import (Fill, OrderAccepted, OrderCancelled, OrderDenied, OrderIntent, OrderRejected,
                             OrderSubmitted, OrderType, Side)

BRACKET_LEG_SUFFIXES = ("-SL", "-TP")
"""A native bracket's legs carry the entry's client order id plus these (ProjectX names them so:
docs/reference/projectx-gateway.md, "Order placement", bracket children)."""


def bracket_leg_ids(entry_client_order_id: str) -> tuple[str, str]:
    """``(stop leg id, target leg id)`` of a native bracket on ``entry_client_order_id``."""
    return entry_client_order_id + "-SL", entry_client_order_id + "-TP"


def bracket_parent(client_order_id: str) -> str | None:
    """The entry's client order id if ``client_order_id`` names a native bracket leg, else None."""
    if client_order_id.endswith(BRACKET_LEG_SUFFIXES) and len(client_order_id) > 3:
        return client_order_id[:-3]
    return None


def leg_purpose(order_type: OrderType, entry_purpose: str) -> str:
    """A leg's purpose: ``bracket-stop`` (a STOP leg) / ``bracket-target`` (LIMIT) plus the entry's
    tags (what follows its first ``;``, e.g. ``; regime=crash``), which the report and the slippage
    option read (domain/risk.py ``BRACKET_EXITS`` knows both names)."""
    kind = "bracket-stop" if order_type is OrderType.STOP else "bracket-target"
    _, sep, tags = entry_purpose.partition(";")
    return kind + (sep + tags if sep else "")


def bracket_legs(entry: OrderIntent, fill_price: Decimal, tick_size: Decimal) -> tuple[OrderIntent, OrderIntent]:
    """The two legs a venue places when a bracketed entry fills at ``fill_price`` (points): a STOP
    ``bracket.stop_ticks`` ticks against the entry and a LIMIT ``bracket.target_ticks`` ticks in its
    favour, both reduce-only, for the entry's size, timestamped at the entry's intent time (the
    venue stamps its events). Raises ValueError if ``entry`` has no bracket."""
    b = entry.bracket
    if b is None:
        raise ValueError(f"{entry.client_order_id}: no bracket")
    d = entry.side.sign
    exit_side = Side.SELL if d > 0 else Side.BUY
    stop_id, target_id = bracket_leg_ids(entry.client_order_id)
    common = dict(strategy_id=entry.strategy_id, instrument=entry.instrument, side=exit_side, qty=entry.qty,
                  ts_ns=entry.ts_ns, reduce_only=True)
    stop = OrderIntent(client_order_id=stop_id, order_type=OrderType.STOP,
                       stop_price=fill_price - d * b.stop_ticks * tick_size,
                       purpose=leg_purpose(OrderType.STOP, entry.purpose), **common)
    target = OrderIntent(client_order_id=target_id, order_type=OrderType.LIMIT,
                         limit_price=fill_price + d * b.target_ticks * tick_size,
                         purpose=leg_purpose(OrderType.LIMIT, entry.purpose), **common)
    return stop, target


class OrderStatus(enum.Enum):
    INITIALIZED = "INITIALIZED"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    DENIED = "DENIED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_working(self) -> bool:
        """Could still fill: submitted, accepted or partially filled."""
        return self in WORKING


TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.DENIED})
WORKING = frozenset({OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})

_S = OrderStatus
_TRANSITIONS: dict[tuple[OrderStatus, type], frozenset[OrderStatus]] = {
    (_S.INITIALIZED, OrderDenied): frozenset({_S.DENIED}),
    (_S.INITIALIZED, OrderSubmitted): frozenset({_S.SUBMITTED}),
    (_S.SUBMITTED, OrderAccepted): frozenset({_S.ACCEPTED}),
    (_S.SUBMITTED, OrderRejected): frozenset({_S.REJECTED}),
    (_S.SUBMITTED, OrderCancelled): frozenset({_S.CANCELLED}),
    (_S.SUBMITTED, Fill): frozenset({_S.PARTIALLY_FILLED, _S.FILLED}),
    (_S.ACCEPTED, Fill): frozenset({_S.PARTIALLY_FILLED, _S.FILLED}),
    (_S.ACCEPTED, OrderCancelled): frozenset({_S.CANCELLED}),
    (_S.PARTIALLY_FILLED, Fill): frozenset({_S.PARTIALLY_FILLED, _S.FILLED}),
    (_S.PARTIALLY_FILLED, OrderCancelled): frozenset({_S.CANCELLED}),
    # a late acknowledgement after a fill is harmless
    (_S.PARTIALLY_FILLED, OrderAccepted): frozenset({_S.PARTIALLY_FILLED}),
    (_S.FILLED, OrderAccepted): frozenset({_S.FILLED}),
}


class InvalidTransition(ValueError):
    """An event that the order's current status does not allow (e.g. a fill after a cancel)."""


@dataclass(slots=True)
class Order:
    """One order's life. ``filled_qty`` contracts; ``avg_fill_price`` points (exact Decimal)."""

    intent: OrderIntent
    status: OrderStatus = OrderStatus.INITIALIZED
    venue_order_id: str = ""
    filled_qty: int = 0
    fill_notional: Decimal = Decimal(0)  # sum(price * qty) of fills, points x contracts
    reason: str = ""
    trade_ids: set[str] = field(default_factory=set)

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    @property
    def leaves_qty(self) -> int:
        return self.intent.qty - self.filled_qty

    @property
    def avg_fill_price(self) -> Decimal | None:
        return self.fill_notional / self.filled_qty if self.filled_qty else None

    def apply(self, event: object) -> bool:
        """Apply an order event. Returns False for a duplicate fill (ignored).

        Raises:
            InvalidTransition: the event is not allowed in the current status, or a fill
                over-fills the order.
        """
        if isinstance(event, Fill) and event.trade_id in self.trade_ids:
            return False
        allowed = _TRANSITIONS.get((self.status, type(event)))
        if allowed is None:
            raise InvalidTransition(f"{self.client_order_id}: {type(event).__name__} not allowed in {self.status.value}")
        if isinstance(event, Fill):
            if event.qty <= 0 or self.filled_qty + event.qty > self.intent.qty:
                raise InvalidTransition(f"{self.client_order_id}: fill of {event.qty} over-fills {self.filled_qty}/{self.intent.qty}")
            self.trade_ids.add(event.trade_id)
            self.filled_qty += event.qty
            self.fill_notional += event.price * event.qty
            self.status = OrderStatus.FILLED if self.filled_qty == self.intent.qty else OrderStatus.PARTIALLY_FILLED
            if event.venue_order_id and not self.venue_order_id:
                self.venue_order_id = event.venue_order_id
            return True
        (new,) = allowed
        self.status = new
        if isinstance(event, OrderAccepted):
            self.venue_order_id = event.venue_order_id
        elif isinstance(event, (OrderRejected, OrderDenied)):
            self.reason = event.reason
        elif isinstance(event, OrderCancelled):
            self.reason = event.reason
        return True


class OrderBook:
    """All orders by client order id, with the working subset. Not thread-safe (one owner).

    Queries about open orders scan only the orders not yet seen terminal (``_live``), so their
    cost does not grow with the history of terminal orders kept for duplicate detection.
    """

    def __init__(self) -> None:
        self._orders: dict[str, Order] = {}
        self._live: dict[str, Order] = {}

    def _open(self) -> list[Order]:
        """Non-terminal orders in insertion order; orders found terminal are dropped from the index."""
        done = [k for k, o in self._live.items() if o.status.is_terminal]
        for k in done:
            del self._live[k]
        return list(self._live.values())

    def add(self, intent: OrderIntent, status: OrderStatus = OrderStatus.INITIALIZED) -> Order:
        """Track a new order. Raises ValueError on a duplicate client order id."""
        if intent.client_order_id in self._orders:
            raise ValueError(f"duplicate client order id {intent.client_order_id}")
        order = Order(intent, status)
        self._orders[intent.client_order_id] = order
        self._live[intent.client_order_id] = order
        return order

    def get(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def __contains__(self, client_order_id: str) -> bool:
        return client_order_id in self._orders

    def __iter__(self) -> Iterator[Order]:
        return iter(self._orders.values())

    def __len__(self) -> int:
        return len(self._orders)

    def apply(self, event: object) -> bool:
        """Apply an event to its order; False if the order is unknown or the fill a duplicate."""
        order = self._orders.get(getattr(event, "client_order_id", ""))
        if order is None:
            return False
        return order.apply(event)

    def working(self, instrument: str | None = None) -> list[Order]:
        """Orders that could still fill, in insertion order."""
        return [o for o in self._open()
                if o.status.is_working and (instrument is None or o.intent.instrument == instrument)]

    def open_orders(self, instrument: str | None = None) -> list[Order]:
        """Working orders plus approved ones not yet acknowledged as submitted (INITIALIZED):
        what could still fill. Use this, not :meth:`working`, to decide whether to send more."""
        return [o for o in self._open() if instrument is None or o.intent.instrument == instrument]

    def working_qty(self, instrument: str) -> tuple[int, int]:
        """(buy contracts, sell contracts) still working on ``instrument``, incl. not-yet-acked orders."""
        buy = sell = 0
        for o in self._open():
            if o.intent.instrument == instrument:
                if o.intent.side.sign > 0:
                    buy += o.leaves_qty
                else:
                    sell += o.leaves_qty
        return buy, sell

    def working_qty_map(self) -> dict[str, tuple[int, int]]:
        """``{instrument: (buy, sell)}`` as :meth:`working_qty` gives, for every instrument with at
        least one working order (one pass over the open orders)."""
        qty: dict[str, list[int]] = {}
        has_working: set[str] = set()
        for o in self._open():
            sym = o.intent.instrument
            q = qty.setdefault(sym, [0, 0])
            q[0 if o.intent.side.sign > 0 else 1] += o.leaves_qty
            if o.status.is_working:
                has_working.add(sym)
        return {sym: (q[0], q[1]) for sym, q in qty.items() if sym in has_working}

    def prune_terminal(self, keep: int = 1000) -> None:
        """Forget the oldest terminal orders beyond ``keep`` (bounded memory over long runs).

        Amortized: nothing happens until the book holds half as many terminal orders again as
        ``keep``, so the scan runs once per ``keep / 2`` terminal orders, not on every event.
        """
        if len(self._orders) - len(self._live) <= keep + keep // 2:
            return
        terminal = [k for k, o in self._orders.items() if o.status.is_terminal]
        for k in terminal[:-keep] if len(terminal) > keep else ():
            del self._orders[k]
