"""The sandbox venue: accounts, orders (with OCO brackets), positions and half-trades in gateway shapes.

Matching is :class:`infra.paper_broker.PaperBroker` (one per account) with ``slippage_ticks=0``
and ``fill_on_touch=False`` and ``fill_on_arrival=True`` (an exchange has a standing book): full fills only; a resting limit fills at its limit when a print
trades *through* it; a stop triggers on a print at or beyond it and fills at that print; a market
order fills at the last trade price (or, before the first tick of the replay, at the next print);
a marketable order fills on arrival at the last price. Positions and per-fill realized P&L come
from :class:`domain.portfolio.Portfolio` (FIFO, exact Decimal). Fees per fill are the instrument's
``fee_per_side`` x size (dollars); balance = starting balance + realized P&L - fees.

Gateway semantics modelled (``docs/reference/projectx-gateway.md``, sections "REST endpoints" to
"Error codes"):

- Order types 1 Limit, 2 Market, 4 Stop; side 0 buy / 1 sell; statuses 1 Open, 2 Filled,
  3 Cancelled, 5 Rejected (a bracket leg whose price is invalid), 8 Suspended. Types 3, 5, 6, 7
  are refused (OrderRejected).
- ``customTag`` is unique per account (a duplicate is refused; bracket legs reserve
  ``<tag>-SL`` / ``<tag>-TP``).
- Brackets (``stopLossBracket`` / ``takeProfitBracket`` = ``{ticks, type}``, signed ticks from the
  entry fill: long SL < 0 < TP, short TP < 0 < SL; type 4 Stop or 1 Limit): each leg is created
  at once as status 8 Suspended without a price, ``parentOrderId`` = the entry; on the entry fill
  it becomes status 1 with the absolute price ``fill + ticks x tickSize``. The legs are OCO: when
  one fills the other is cancelled; cancelling the entry cancels its suspended legs. The TP's
  ``linkedOrderId`` is the SL. A leg that is cancelled by the client leaves its sibling alone.
- Only front-month (``activeContract``) contracts trade; orders elsewhere are ContractNotActive.
- Cancel is refused on non-simulated accounts (``Live accounts not supported``), as is a partial
  close; place, modify and a full close are allowed everywhere.
- Modify changes size / limitPrice / stopPrice of an Open order (fields left out stay unchanged);
  the order loses its time priority and may fill at once if now marketable.

Every command returns the :class:`UserEvent` list the user hub must push, in order.
Times are the sandbox clock (epoch ns UTC, the replay time); prices Decimal points.
Thread-safe: every public method holds one re-entrant lock.
"""

from __future__ import annotations

import enum
import functools
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from domain.messages import Fill, OrderIntent, OrderRejected, Side, TradeTick
from domain.messages import OrderType as PaperOrderType
from domain.portfolio import Portfolio
from infra.paper_broker import PaperBroker
from infra.sandbox.contracts import Contract, ContractCatalog
from infra.sandbox.errors import GatewayError, Reason
from infra.sandbox.wire import iso


class OrderStatus(enum.IntEnum):
    NONE = 0
    OPEN = 1
    FILLED = 2
    CANCELLED = 3
    EXPIRED = 4
    REJECTED = 5
    PENDING = 6
    PENDING_CANCELLATION = 7
    SUSPENDED = 8


WORKING = frozenset({OrderStatus.OPEN, OrderStatus.PENDING, OrderStatus.PENDING_CANCELLATION, OrderStatus.SUSPENDED})


class OrderType(enum.IntEnum):
    UNKNOWN = 0
    LIMIT = 1
    MARKET = 2
    STOP_LIMIT = 3
    STOP = 4
    TRAILING_STOP = 5
    JOIN_BID = 6
    JOIN_ASK = 7


_PAPER_TYPE = {OrderType.LIMIT: PaperOrderType.LIMIT, OrderType.MARKET: PaperOrderType.MARKET,
               OrderType.STOP: PaperOrderType.STOP}
_SIDES = {0: Side.BUY, 1: Side.SELL}


class EventAction(enum.IntEnum):
    """``action`` of the ``{action, data}`` envelope (observed meaning: create / update / delete)."""

    CREATE = 0
    UPDATE = 1
    DELETE = 2


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """A trading account served by the sandbox (balance in dollars)."""

    id: int
    name: str
    balance: Decimal
    simulated: bool
    can_trade: bool = True
    is_visible: bool = True
    auto_oco: bool = True
    """The platform's bracket mode: Auto OCO Brackets (native brackets accepted) or, False,
    Position Brackets (a place with brackets is rejected, code 2, yet returns an ``orderId``)."""
    margin_contracts: int | None = None
    """The most contracts one order may have on the account's margin (None: no limit): a larger
    ``Order/place`` is refused with code 3 InsufficientFunds (docs/projectx-gateway.md section 4),
    as the gateway refuses an order the account cannot margin. A test knob; the real rule (margin
    per contract, the position held) is not modelled."""


DEFAULT_ACCOUNTS: tuple[AccountSpec, ...] = (
    AccountSpec(1001, "PRAC-50K-SANDBOX", Decimal(50000), simulated=True),
    AccountSpec(1002, "FUNDED-50K-SANDBOX", Decimal(50000), simulated=False),
)


@dataclass(frozen=True, slots=True)
class UserEvent:
    """One user-hub event: ``kind`` is ``account`` / ``order`` / ``position`` / ``trade``
    (``GatewayUserAccount`` ...), ``data`` the gateway payload (Decimals), ``action`` its envelope action."""

    account_id: int
    kind: str
    data: dict[str, Any]
    action: EventAction


@dataclass(slots=True)
class _Bracket:
    ticks: int
    type: OrderType
    tag: str  # "SL" / "TP"


@dataclass(slots=True)
class _Order:
    id: int
    account_id: int
    contract: Contract
    type: OrderType
    side: int
    size: int
    status: OrderStatus
    created_ns: int
    updated_ns: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    fill_volume: int = 0
    filled_price: Decimal | None = None
    custom_tag: str | None = None
    parent_id: int | None = None
    linked_id: int | None = None
    bracket: _Bracket | None = None  # set on a bracket leg: its offset from the entry fill
    children: list[int] = field(default_factory=list)  # bracket legs of an entry (SL first)
    paper_id: str = ""  # client order id inside the PaperBroker while working
    revision: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "accountId": self.account_id, "contractId": self.contract.id,
                "symbolId": self.contract.symbol_id, "creationTimestamp": iso(self.created_ns),
                "updateTimestamp": iso(self.updated_ns), "status": int(self.status), "type": int(self.type),
                "side": self.side, "size": self.size, "limitPrice": self.limit_price, "stopPrice": self.stop_price,
                "fillVolume": self.fill_volume, "filledPrice": self.filled_price, "customTag": self.custom_tag,
                "parentOrderId": self.parent_id, "linkedOrderId": self.linked_id}


@dataclass(slots=True)
class _Position:
    id: int
    created_ns: int


class _Account:
    def __init__(self, spec: AccountSpec) -> None:
        self.spec = spec
        self.balance = spec.balance
        self.broker = PaperBroker(slippage_ticks=0, fill_on_touch=False, id_prefix=f"A{spec.id}", fill_on_arrival=True)
        self.portfolio = Portfolio()
        self.orders: dict[int, _Order] = {}
        self.by_paper_id: dict[str, int] = {}
        self.tags: set[str] = set()
        self.trades: list[tuple[int, dict[str, Any]]] = []  # (creation ns, HalfTrade)
        self.positions: dict[str, _Position] = {}  # contract id -> open position identity

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {"id": s.id, "name": s.name, "balance": self.balance, "canTrade": s.can_trade,
                "isVisible": s.is_visible, "simulated": s.simulated}


def _locked(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: "Exchange", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def _valid_price(price: Any, contract: Contract) -> bool:
    if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
        return False
    try:
        return price % contract.tick_size == 0
    except ArithmeticError:  # e.g. 1E+999: the quotient does not fit the decimal context
        return False


def _reject(message: str) -> GatewayError:
    return GatewayError(Reason.ORDER_REJECTED, message)


def _price(value: Any) -> Decimal | None:
    """A JSON number (int or Decimal) as Decimal; None stays None; anything else raises."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise _reject("Invalid price.")
    return Decimal(value)


class Exchange:
    """Accounts and their orders, positions and trades (see the module docstring).

    Args:
        catalog: the listed contracts.
        clock: the sandbox clock, epoch ns UTC (replay time).
        accounts: the accounts to serve.
    """

    def __init__(self, catalog: ContractCatalog, clock: Callable[[], int],
                 accounts: tuple[AccountSpec, ...] = DEFAULT_ACCOUNTS) -> None:
        self._catalog = catalog
        self._clock = clock
        self._accounts = {a.id: _Account(a) for a in accounts}
        self._lock = threading.RLock()
        self._next_order_id = 100_000_001
        self._next_trade_id = 500_000_001
        self._next_position_id = 700_000_001

    # ------------------------------------------------------------------ queries

    @_locked
    def account_list(self) -> list[dict[str, Any]]:
        """Every account (``TradingAccount`` dicts); all are active."""
        return [a.to_json() for a in self._accounts.values()]

    @_locked
    def account(self, account_id: Any) -> dict[str, Any]:
        """One ``TradingAccount``. Raises GatewayError ACCOUNT_NOT_FOUND."""
        return self._account(account_id).to_json()

    @_locked
    def orders(self, account_id: Any, start_ns: int | None = None, end_ns: int | None = None) -> list[dict[str, Any]]:
        """Orders created in ``[start_ns, end_ns]`` (None = unbounded), by id. Raises ACCOUNT_NOT_FOUND."""
        return [o.to_json() for o in self._account(account_id).orders.values()
                if (start_ns is None or o.created_ns >= start_ns) and (end_ns is None or o.created_ns <= end_ns)]

    @_locked
    def working_orders(self, account_id: Any, statuses: frozenset[OrderStatus] = WORKING) -> list[dict[str, Any]]:
        """Orders whose status is in ``statuses`` (default: all working ones, Suspended included)."""
        return [o.to_json() for o in self._account(account_id).orders.values() if o.status in statuses]

    @_locked
    def order(self, account_id: Any, order_id: Any) -> dict[str, Any]:
        """One ``Order``. Raises ACCOUNT_NOT_FOUND or ORDER_NOT_FOUND."""
        return self._order(self._account(account_id), order_id).to_json()

    @_locked
    def query_orders(self, account_id: Any, *, statuses: set[int] | None, contract_id: str | None,
                     created_after: int | None, created_before: int | None, sort_by_id: bool,
                     descending: bool) -> list[dict[str, Any]]:
        """The ``Order/v2/query`` filter and sort (creation time, ties by id; or id). Raises ACCOUNT_NOT_FOUND."""
        hits = [o for o in self._account(account_id).orders.values()
                if (statuses is None or int(o.status) in statuses)
                and (contract_id is None or o.contract.id == contract_id)
                and (created_after is None or o.created_ns >= created_after)
                and (created_before is None or o.created_ns <= created_before)]
        hits.sort(key=(lambda o: o.id) if sort_by_id else (lambda o: (o.created_ns, o.id)), reverse=descending)
        return [o.to_json() for o in hits]

    @_locked
    def positions(self, account_id: Any) -> list[dict[str, Any]]:
        """Open ``Position`` rows, one per contract. Raises ACCOUNT_NOT_FOUND."""
        acct = self._account(account_id)
        return [self._position_json(acct, c, acct.positions[c.id])
                for c in self._catalog.all() if c.id in acct.positions]

    @_locked
    def trades(self, account_id: Any, start_ns: int | None = None, end_ns: int | None = None) -> list[dict[str, Any]]:
        """``HalfTrade`` fills created in ``[start_ns, end_ns]``, oldest first. Raises ACCOUNT_NOT_FOUND."""
        return [dict(t) for ts, t in self._account(account_id).trades
                if (start_ns is None or ts >= start_ns) and (end_ns is None or ts <= end_ns)]

    # ------------------------------------------------------------------ commands

    @_locked
    def place(self, account_id: Any, contract_id: Any, type_: Any, side: Any, size: Any, *,
              limit_price: Any = None, stop_price: Any = None, trail_price: Any = None, custom_tag: Any = None,
              stop_loss: Any = None, take_profit: Any = None) -> tuple[int, list[UserEvent]]:
        """``Order/place``. Returns ``(orderId, events)``.

        Raises GatewayError: ACCOUNT_NOT_FOUND, CONTRACT_NOT_FOUND, CONTRACT_NOT_ACTIVE, ORDER_REJECTED
        (unsupported type, bad side/size/price, duplicate customTag, bad bracket), INSUFFICIENT_FUNDS
        (a size above the account's ``margin_contracts``).
        """
        acct = self._account(account_id)
        contract = self._tradable(contract_id)
        if not isinstance(type_, int) or isinstance(type_, bool) or type_ not in _PAPER_TYPE:
            raise _reject(f"Order type {type_!r} is not supported by the sandbox (1 Limit, 2 Market, 4 Stop).")
        type_ = OrderType(type_)
        if side not in _SIDES or isinstance(side, bool):
            raise _reject(f"Invalid side {side!r}.")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise _reject(f"Invalid size {size!r}.")
        if acct.spec.margin_contracts is not None and size > acct.spec.margin_contracts:
            raise GatewayError(Reason.INSUFFICIENT_FUNDS, f"Insufficient funds: the account's margin carries at most "
                               f"{acct.spec.margin_contracts} contracts, the order has {size}.")
        limit, stop = _price(limit_price), _price(stop_price)
        if _price(trail_price) is not None:
            raise _reject("Trailing stops are not supported by the sandbox.")
        if type_ is OrderType.LIMIT and not _valid_price(limit, contract):
            raise _reject("Invalid limit price. Price is not aligned to tick size or missing.")
        if type_ is OrderType.STOP and not _valid_price(stop, contract):
            raise _reject("Invalid stop price. Price is not aligned to tick size or missing.")
        brackets = [b for b in (self._bracket(stop_loss, "SL", side), self._bracket(take_profit, "TP", side)) if b]
        if brackets and not acct.spec.auto_oco:
            self._next_order_id += 1  # the gateway still hands out an order id (docs/sandbox.md "Brackets")
            raise GatewayError(Reason.ORDER_REJECTED, "Brackets cannot be used with Position Brackets. "
                               "You must enable Auto OCO Brackets.", payload=self._next_order_id - 1)
        tag = custom_tag if isinstance(custom_tag, str) and custom_tag else None
        if custom_tag is not None and not isinstance(custom_tag, str):
            raise _reject("customTag must be a string.")
        if tag is not None:
            wanted = [tag] + [f"{tag}-{b.tag}" for b in brackets]
            taken = [t for t in wanted if t in acct.tags]
            if taken:
                raise _reject(f"Custom tag '{taken[0]}' is already in use on this account; customTag must be unique.")
            acct.tags.update(wanted)
        now = self._clock()
        order = self._new_order(acct, contract, type_, side, size, now, tag,
                                limit_price=limit if type_ is OrderType.LIMIT else None,
                                stop_price=stop if type_ is OrderType.STOP else None)
        events = [self._order_event(order)]
        for b in brackets:
            leg = self._new_order(acct, contract, b.type, 1 - side, size, now, f"{tag}-{b.tag}" if tag else None,
                                  status=OrderStatus.SUSPENDED)
            leg.parent_id, leg.bracket = order.id, b
            order.children.append(leg.id)
            events.append(self._order_event(leg))
        if len(order.children) == 2:
            acct.orders[order.children[1]].linked_id = order.children[0]
        events.extend(self._submit(acct, order, now))
        return order.id, events

    @_locked
    def modify(self, account_id: Any, order_id: Any, *, size: Any = None, limit_price: Any = None,
               stop_price: Any = None, trail_price: Any = None) -> list[UserEvent]:
        """``Order/modify`` of an Open order; omitted (null) fields are unchanged.

        Raises GatewayError ACCOUNT_NOT_FOUND, ORDER_NOT_FOUND, ORDER_REJECTED (not Open, bad value,
        a price that does not apply to the order type, a trailPrice).
        """
        acct = self._account(account_id)
        order = self._order(acct, order_id)
        if order.status is not OrderStatus.OPEN:
            raise _reject(f"Order {order.id} cannot be modified in status {order.status.name}.")
        limit, stop = _price(limit_price), _price(stop_price)
        if _price(trail_price) is not None:
            raise _reject("Trailing stops are not supported by the sandbox.")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise _reject(f"Invalid size {size!r}.")
        if limit is not None and (order.type is not OrderType.LIMIT or not _valid_price(limit, order.contract)):
            raise _reject("Invalid limit price for this order.")
        if stop is not None and (order.type is not OrderType.STOP or not _valid_price(stop, order.contract)):
            raise _reject("Invalid stop price for this order.")
        now = self._clock()
        acct.broker.cancel(order.paper_id, now, "modify")
        order.size = size if size is not None else order.size
        order.limit_price = limit if limit is not None else order.limit_price
        order.stop_price = stop if stop is not None else order.stop_price
        order.updated_ns = now
        return [self._order_event(order)] + self._submit(acct, order, now)

    @_locked
    def cancel(self, account_id: Any, order_id: Any) -> list[UserEvent]:
        """``Order/cancel`` of an Open or Suspended order (an entry takes its suspended legs along).

        Raises GatewayError ACCOUNT_NOT_FOUND, ACCOUNT_REJECTED (not simulated), ORDER_NOT_FOUND,
        ORDER_REJECTED (the order is not working).
        """
        acct = self._account(account_id)
        if not acct.spec.simulated:
            raise GatewayError(Reason.ACCOUNT_REJECTED, "Live accounts not supported")
        order = self._order(acct, order_id)
        if order.status not in WORKING:
            raise _reject(f"Order {order.id} is not working (status {order.status.name}).")
        now = self._clock()
        events = self._cancel(acct, order, now)
        for child_id in order.children:
            child = acct.orders[child_id]
            if child.status is OrderStatus.SUSPENDED:
                events += self._cancel(acct, child, now)
        return events

    @_locked
    def close_position(self, account_id: Any, contract_id: Any, size: int | None = None) -> list[UserEvent]:
        """``Position/closeContract`` (``size`` None) or ``partialCloseContract``: a market order
        against the position, no customTag.

        Raises GatewayError ACCOUNT_NOT_FOUND, CONTRACT_NOT_FOUND, CONTRACT_NOT_ACTIVE,
        POSITION_NOT_FOUND, ACCOUNT_REJECTED (partial close on a live account), INVALID_CLOSE_SIZE
        (not 1..position size), NO_PRICE (no trade seen yet).
        """
        acct = self._account(account_id)
        contract = self._tradable(contract_id)
        qty = acct.portfolio.qty(contract.instrument)
        if qty == 0:
            raise GatewayError(Reason.POSITION_NOT_FOUND, f"No open position in {contract.id}.")
        if size is not None:
            if not acct.spec.simulated:
                raise GatewayError(Reason.ACCOUNT_REJECTED, "Live accounts not supported")
            if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= abs(qty):
                raise GatewayError(Reason.INVALID_CLOSE_SIZE,
                                   f"Invalid close size {size!r} for a position of {abs(qty)}.")
        if acct.broker.last_price(contract.instrument) is None:
            raise GatewayError(Reason.NO_PRICE, None)
        now = self._clock()
        order = self._new_order(acct, contract, OrderType.MARKET, 1 if qty > 0 else 0,
                                size if size is not None else abs(qty), now, None)
        return [self._order_event(order)] + self._submit(acct, order, now)

    @_locked
    def on_trade(self, tick: TradeTick) -> list[UserEvent]:
        """A replayed trade print of ``tick.instrument``: fill what it reaches, in every account."""
        events: list[UserEvent] = []
        for acct in self._accounts.values():
            for fill in acct.broker.on_trade(tick):
                events += self._on_fill(acct, fill)
        return events

    # ------------------------------------------------------------------ internals

    def _account(self, account_id: Any) -> _Account:
        acct = self._accounts.get(account_id) if isinstance(account_id, int) else None
        if acct is None:
            raise GatewayError(Reason.ACCOUNT_NOT_FOUND, f"Account {account_id!r} not found.")
        return acct

    def _order(self, acct: _Account, order_id: Any) -> _Order:
        order = acct.orders.get(order_id) if isinstance(order_id, int) else None
        if order is None:
            raise GatewayError(Reason.ORDER_NOT_FOUND, f"Order {order_id!r} not found.")
        return order

    def _tradable(self, contract_id: Any) -> Contract:
        contract = self._catalog.by_id(contract_id)
        if contract is None:
            raise GatewayError(Reason.CONTRACT_NOT_FOUND, f"Contract {contract_id!r} not found.")
        if not contract.active:
            raise GatewayError(Reason.CONTRACT_NOT_ACTIVE, f"Contract {contract.id} is not active in the sandbox.")
        return contract

    @staticmethod
    def _bracket(value: Any, tag: str, side: int) -> _Bracket | None:
        if value is None:
            return None
        ticks = value.get("ticks") if isinstance(value, dict) else None
        type_ = value.get("type") if isinstance(value, dict) else None
        if not isinstance(ticks, int) or isinstance(ticks, bool) or ticks == 0:
            raise _reject(f"Invalid {tag} bracket: ticks must be a non-zero integer.")
        if not isinstance(type_, int) or isinstance(type_, bool) or type_ not in (OrderType.LIMIT, OrderType.STOP):
            raise _reject(f"Invalid {tag} bracket: type must be 1 (Limit) or 4 (Stop).")
        # signed ticks: a long's SL is below (-) and its TP above (+); a short's the reverse.
        below = (tag == "SL") == (side == 0)
        if (ticks < 0) != below:
            raise _reject(f"Invalid {tag} bracket: ticks must be {'negative' if below else 'positive'} "
                          f"for a {'buy' if side == 0 else 'sell'} entry.")
        return _Bracket(ticks, OrderType(type_), tag)

    def _new_order(self, acct: _Account, contract: Contract, type_: OrderType, side: int, size: int, now: int,
                   tag: str | None, *, limit_price: Decimal | None = None, stop_price: Decimal | None = None,
                   status: OrderStatus = OrderStatus.OPEN) -> _Order:
        order = _Order(self._next_order_id, acct.spec.id, contract, type_, side, size, status, now, now,
                       limit_price=limit_price, stop_price=stop_price, custom_tag=tag)
        self._next_order_id += 1
        acct.orders[order.id] = order
        return order

    def _submit(self, acct: _Account, order: _Order, now: int) -> list[UserEvent]:
        """Hand a (new or modified) Open order to the matching engine; events of an immediate fill
        or a rejection follow."""
        order.revision += 1
        order.paper_id = f"{order.id}.{order.revision}"
        acct.by_paper_id[order.paper_id] = order.id
        intent = OrderIntent(order.paper_id, "sandbox", order.contract.instrument, _SIDES[order.side], order.size,
                             _PAPER_TYPE[order.type], now, limit_price=order.limit_price, stop_price=order.stop_price)
        events: list[UserEvent] = []
        for msg in acct.broker.submit(intent, now):
            if isinstance(msg, Fill):
                events += self._on_fill(acct, msg)
            elif isinstance(msg, OrderRejected):
                order.status, order.updated_ns = OrderStatus.REJECTED, now
                events.append(self._order_event(order))
        return events

    def _cancel(self, acct: _Account, order: _Order, now: int) -> list[UserEvent]:
        acct.broker.cancel(order.paper_id, now)
        order.status, order.updated_ns = OrderStatus.CANCELLED, now
        return [self._order_event(order)]

    def _on_fill(self, acct: _Account, fill: Fill) -> list[UserEvent]:
        order = acct.orders[acct.by_paper_id[fill.client_order_id]]
        contract = order.contract
        order.status, order.updated_ns = OrderStatus.FILLED, fill.ts_ns
        order.fill_volume, order.filled_price = fill.qty, fill.price
        before = acct.portfolio.qty(fill.instrument)
        effect = acct.portfolio.apply_fill(fill)
        assert effect is not None  # PaperBroker trade ids are unique
        trade = {"id": self._next_trade_id, "accountId": acct.spec.id, "contractId": contract.id,
                 "creationTimestamp": iso(fill.ts_ns), "price": fill.price,
                 "profitAndLoss": effect.realized if effect.closed else None, "fees": fill.fee,
                 "commissions": Decimal(0), "side": order.side, "size": fill.qty, "voided": False,
                 "orderId": order.id}
        self._next_trade_id += 1
        acct.trades.append((fill.ts_ns, trade))
        after = effect.position
        previous = acct.positions.get(contract.id)
        if after == 0:
            acct.positions.pop(contract.id, None)
        elif before == 0 or (before > 0) != (after > 0):
            acct.positions[contract.id] = _Position(self._next_position_id, fill.ts_ns)
            self._next_position_id += 1
        acct.balance += effect.realized - fill.fee
        events = [self._order_event(order), UserEvent(acct.spec.id, "trade", dict(trade), EventAction.CREATE)]
        ident = acct.positions.get(contract.id, previous)
        assert ident is not None  # a fill either opens a position or changes an open one
        events.append(UserEvent(acct.spec.id, "position", self._position_json(acct, contract, ident),
                                EventAction.DELETE if after == 0 else EventAction.UPDATE))
        events.append(UserEvent(acct.spec.id, "account", acct.to_json(), EventAction.UPDATE))
        for child_id in order.children:  # entry filled: activate its bracket legs
            events += self._activate(acct, acct.orders[child_id], fill)
        if order.parent_id is not None:  # a bracket leg filled: cancel the other leg (OCO)
            for sibling_id in acct.orders[order.parent_id].children:
                sibling = acct.orders[sibling_id]
                if sibling is not order and sibling.status in WORKING:
                    events += self._cancel(acct, sibling, fill.ts_ns)
        return events

    def _activate(self, acct: _Account, leg: _Order, entry_fill: Fill) -> list[UserEvent]:
        if leg.status is not OrderStatus.SUSPENDED or leg.bracket is None:
            return []
        price = entry_fill.price + leg.bracket.ticks * leg.contract.tick_size
        leg.size = entry_fill.qty  # the entry may have been resized by a modify
        if leg.type is OrderType.LIMIT:
            leg.limit_price = price
        else:
            leg.stop_price = price
        leg.status, leg.updated_ns = OrderStatus.OPEN, entry_fill.ts_ns
        return [self._order_event(leg)] + self._submit(acct, leg, entry_fill.ts_ns)

    @staticmethod
    def _position_json(acct: _Account, contract: Contract, ident: _Position) -> dict[str, Any]:
        """The ``Position`` row of ``contract``; a flat one (just closed) is ``type 0, size 0``."""
        pos = acct.portfolio.positions.get(contract.instrument)
        qty = pos.qty if pos else 0
        return {"id": ident.id, "accountId": acct.spec.id, "contractId": contract.id,
                "contractDisplayName": contract.name, "creationTimestamp": iso(ident.created_ns),
                "type": 0 if qty == 0 else (1 if qty > 0 else 2), "size": abs(qty),
                "averagePrice": pos.avg_price if pos and qty else Decimal(0)}

    @staticmethod
    def _order_event(order: _Order) -> UserEvent:
        terminal = order.status not in WORKING
        return UserEvent(order.account_id, "order", order.to_json(),
                         EventAction.DELETE if terminal else EventAction.UPDATE)
