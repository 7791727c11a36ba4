"""Gateway JSON <-> typed gateway models <-> domain messages. Pure functions: no I/O, no clock.

Two layers:

1. ``parse_*`` validate one gateway JSON object (REST payload item or hub event argument) into a
   frozen model (:class:`GatewayOrder`, :class:`GatewayTrade`...). Prices become ``Decimal``
   (REST bodies are decoded with ``parse_float=Decimal``; hub floats go through ``str`` so ``6650.25``
   stays ``6650.25``), timestamps become epoch ns UTC. Anything missing, non-finite, negative or of
   the wrong type raises :class:`~infra.projectx.errors.MalformedPayload` with a short ``reason``
   (the hubs count and drop those; REST callers see the exception). So does a number whose
   magnitude exceeds :data:`MAX_NUMBER` (``out_of_range:<key>``: a price of ``1e308`` is not a
   price, and Decimal arithmetic on it would overflow), a numeric text longer than
   :data:`MAX_TEXT` characters, a string field longer than :data:`MAX_TEXT` and an unparsable or
   out-of-range timestamp (``bad_timestamp:<key>``). No other exception type leaves a parser or
   mapper for any JSON input.
2. domain mapping: quotes/prints -> :class:`QuoteTick`/:class:`TradeTick`, HalfTrade ->
   :class:`Fill`, order -> status event, position -> :class:`PositionSnapshot`,
   :class:`OrderIntent` -> ``Order/place`` arguments.

Field names and enums: ``docs/reference/projectx-gateway.md``, sections "Models", "Order placement",
"Enums" and "Hubs" (cited below by section name).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping  # not typing.Mapping: its isinstance check is 2x slower (every hub payload)
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.messages import (Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderRejected, OrderType,
                             PositionSnapshot, QuoteTick, Side, TradeTick)
from domain.orders import bracket_parent, leg_purpose
from infra.projectx.errors import MalformedPayload
from infra.replay import parse_utc_ns


class GwOrderType(enum.IntEnum):
    """OrderType ("Enums")."""

    UNKNOWN = 0
    LIMIT = 1
    MARKET = 2
    STOP_LIMIT = 3
    STOP = 4
    TRAILING_STOP = 5
    JOIN_BID = 6
    JOIN_ASK = 7


class GwSide(enum.IntEnum):
    """OrderSide ("Enums"): 0 Bid = buy, 1 Ask = sell."""

    BID = 0
    ASK = 1


class GwOrderStatus(enum.IntEnum):
    """OrderStatus ("Enums"; 7 and 8 from Swagger/community)."""

    NONE = 0
    OPEN = 1
    FILLED = 2
    CANCELLED = 3
    EXPIRED = 4
    REJECTED = 5
    PENDING = 6
    PENDING_CANCELLATION = 7
    SUSPENDED = 8


WORKING_STATUSES: tuple[int, ...] = (GwOrderStatus.OPEN, GwOrderStatus.PENDING, GwOrderStatus.PENDING_CANCELLATION,
                                     GwOrderStatus.SUSPENDED)
"""Statuses of orders that can still fill: 1, 6, 7, 8 ("Enums")."""


class GwPositionType(enum.IntEnum):
    """PositionType ("Enums")."""

    UNDEFINED = 0
    LONG = 1
    SHORT = 2


class BarUnit(enum.IntEnum):
    """AggregateBarUnit for ``History/retrieveBars`` ("History bars"); seconds per unit in :data:`UNIT_SECONDS`."""

    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4
    WEEK = 5
    MONTH = 6


UNIT_SECONDS: Mapping[BarUnit, int] = {BarUnit.SECOND: 1, BarUnit.MINUTE: 60, BarUnit.HOUR: 3600,
                                       BarUnit.DAY: 86_400, BarUnit.WEEK: 7 * 86_400, BarUnit.MONTH: 31 * 86_400}
"""Upper bound of one unit in seconds (a month counts as 31 days), used to size history pages."""

_TO_GW_TYPE = {OrderType.LIMIT: GwOrderType.LIMIT, OrderType.MARKET: GwOrderType.MARKET,
               OrderType.STOP: GwOrderType.STOP}
_TO_GW_SIDE = {Side.BUY: GwSide.BID, Side.SELL: GwSide.ASK}
_FROM_GW_SIDE = {GwSide.BID: Side.BUY, GwSide.ASK: Side.SELL}

EXTERNAL_STRATEGY = "external"
"""``strategy_id`` given to venue orders/fills whose ``customTag`` is not one of our client order ids."""


# --------------------------------------------------------------------------- field validation

MAX_NUMBER = Decimal(10) ** 15
"""Largest magnitude of any gateway number (prices, sizes, ids, dollars): far above every real
value (ids are 32/64-bit, balances below 1e12 dollars), far below where Decimal arithmetic overflows."""

MAX_TEXT = 256
"""Longest numeric text or string field accepted (ids, names, contract ids, tags are short)."""

MAX_TS_NS = 2 ** 63 - 1
"""Latest timestamp accepted, epoch ns (int64, year 2262)."""

def _field(obj: Mapping[str, Any], key: str) -> Any:
    if not isinstance(obj, Mapping):
        raise MalformedPayload("not_an_object", type(obj).__name__)
    value = obj.get(key)
    if value is None:
        raise MalformedPayload(f"missing:{key}")
    return value


def to_decimal(value: Any, key: str = "value") -> Decimal:
    """JSON number (Decimal, int, float) or numeric string -> finite Decimal. Floats go through
    ``str`` (shortest round-trip text), so ``6650.25`` becomes ``Decimal('6650.25')`` exactly.
    Raises MalformedPayload (``bad_number:key`` / ``nan:key``)."""
    if isinstance(value, bool):
        raise MalformedPayload(f"bad_number:{key}", repr(value))
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, str) and len(value) > MAX_TEXT:
        raise MalformedPayload(f"bad_number:{key}", f"text of {len(value)} characters")
    elif isinstance(value, (int, float, str)):
        try:
            d = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):  # ValueError: an int beyond the str conversion limit
            raise MalformedPayload(f"bad_number:{key}", _short(value)) from None
    else:
        raise MalformedPayload(f"bad_number:{key}", _short(value))
    if not d.is_finite():
        raise MalformedPayload(f"nan:{key}", _short(value))
    if abs(d) > MAX_NUMBER:
        raise MalformedPayload(f"out_of_range:{key}", _short(value))
    return d


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages and logs stay short)."""
    try:
        r = repr(value)
    except Exception:  # noqa: BLE001 - a repr must not raise out of a parser
        r = f"<{type(value).__name__}>"
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _dec(obj: Mapping[str, Any], key: str, *, positive: bool = False) -> Decimal:
    d = to_decimal(_field(obj, key), key)
    if d < 0 or (positive and d == 0):
        raise MalformedPayload(f"{'non_positive' if positive else 'negative'}:{key}", str(d))
    return d


def _opt_dec(obj: Mapping[str, Any], key: str, *, positive: bool = False) -> Decimal | None:
    return None if obj.get(key) is None else _dec(obj, key, positive=positive)


def _int(obj: Mapping[str, Any], key: str, *, minimum: int | None = 0) -> int:
    value = _field(obj, key)
    if isinstance(value, bool):
        raise MalformedPayload(f"bad_int:{key}", repr(value))
    d = to_decimal(value, key)
    if d != d.to_integral_value():
        raise MalformedPayload(f"bad_int:{key}", _short(value))
    if minimum is not None and d < minimum:
        raise MalformedPayload(f"negative:{key}" if minimum == 0 else f"out_of_range:{key}", str(d))
    return int(d)


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = _field(obj, key)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MalformedPayload(f"bad_string:{key}", _short(value))
    if isinstance(value, int) and abs(value) > MAX_NUMBER:
        raise MalformedPayload(f"out_of_range:{key}", _short(value))
    text = str(value)
    if text == "" or len(text) > MAX_TEXT:
        raise MalformedPayload(f"bad_string:{key}", _short(value))
    return text


def _bool(obj: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    value = obj.get(key, default) if isinstance(obj, Mapping) else None
    if not isinstance(value, bool):
        raise MalformedPayload(f"missing:{key}" if value is None else f"bad_bool:{key}", _short(value))
    return value


def _enum(obj: Mapping[str, Any], key: str, enum_cls: type[enum.IntEnum]) -> Any:
    raw = _int(obj, key, minimum=None)
    try:
        return enum_cls(raw)
    except ValueError:
        raise MalformedPayload(f"unknown_enum:{key}", str(raw)) from None


def _ts(obj: Mapping[str, Any], key: str) -> int:
    value = _field(obj, key)
    try:
        ns = parse_utc_ns(value) if isinstance(value, str) and len(value) <= MAX_TEXT else None
    except (ValueError, OverflowError):
        ns = None
    if ns is None or not 0 <= ns <= MAX_TS_NS:
        raise MalformedPayload(f"bad_timestamp:{key}", _short(value))
    return ns


def _on_tick(price: Decimal, tick_size: Decimal, key: str) -> Decimal:
    if price <= 0:
        raise MalformedPayload(f"non_positive:{key}", str(price))
    try:
        off = price % tick_size != 0
    except ArithmeticError:  # beyond Decimal precision: cannot be on any tick grid we trade
        off = True
    if off:
        raise MalformedPayload(f"off_tick:{key}", f"{price} not a multiple of {tick_size}")
    return price


# --------------------------------------------------------------------------- gateway models

@dataclass(frozen=True, slots=True)
class GatewayContract:
    """A contract ("Models": Contract). ``tick_size`` points; ``tick_value`` dollars per tick per contract."""

    id: str
    name: str
    description: str
    tick_size: Decimal
    tick_value: Decimal
    active: bool
    symbol_id: str

    @property
    def root(self) -> str:
        """The product root of ``symbol_id`` (``F.US.EP`` -> ``EP``)."""
        return self.symbol_id.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class GatewayAccount:
    """A trading account ("Models": TradingAccount); ``balance`` dollars; ``simulated`` = Practice/sim."""

    id: int
    name: str
    balance: Decimal
    can_trade: bool
    is_visible: bool
    simulated: bool


@dataclass(frozen=True, slots=True)
class GatewayBar:
    """One history bar ("History bars"). ``ts_ns`` is the bar's ``t`` (taken as the bar *start*; whether
    the gateway labels bars by open or close is unconfirmed), epoch ns UTC. Prices Decimal points,
    ``volume`` contracts."""

    ts_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int


@dataclass(frozen=True, slots=True)
class GatewayOrder:
    """An order ("Models": Order; "User hub": GatewayUserOrder). Prices Decimal points or None; sizes contracts;
    ``custom_tag`` is our client order id when we placed it; timestamps epoch ns UTC."""

    id: int
    account_id: int | None
    contract_id: str
    status: GwOrderStatus
    type: GwOrderType
    side: GwSide
    size: int
    fill_volume: int
    limit_price: Decimal | None
    stop_price: Decimal | None
    filled_price: Decimal | None
    custom_tag: str | None
    created_ns: int
    updated_ns: int

    @property
    def working(self) -> bool:
        """Can still fill (statuses 1, 6, 7, 8)."""
        return self.status in WORKING_STATUSES


@dataclass(frozen=True, slots=True)
class GatewayPosition:
    """An open position ("Models": Position). ``size`` contracts (always >= 0, direction in ``type``);
    ``average_price`` Decimal points. A closed position arrives as ``type 0, size 0`` on the hub."""

    id: int | None
    account_id: int | None
    contract_id: str
    type: GwPositionType
    size: int
    average_price: Decimal
    created_ns: int | None


@dataclass(frozen=True, slots=True)
class GatewayTrade:
    """A fill ("Models": HalfTrade). ``price`` points; ``fees`` dollars for this fill; ``pnl`` dollars
    or None (an opening half-turn); ``size`` contracts; ``voided`` trades were busted."""

    id: int
    account_id: int | None
    contract_id: str
    ts_ns: int
    price: Decimal
    pnl: Decimal | None
    fees: Decimal
    side: GwSide
    size: int
    voided: bool
    order_id: int


@dataclass(frozen=True, slots=True)
class DepthEntry:
    """One GatewayDepth item ("Market hub"): DomType ``type`` (6 = Reset: clear the book), price points,
    ``volume``/``current_volume`` contracts (their difference is undocumented)."""

    ts_ns: int
    type: int
    price: Decimal
    volume: int
    current_volume: int


def parse_contract(obj: Mapping[str, Any]) -> GatewayContract:
    """``Contract`` JSON -> :class:`GatewayContract`. Raises MalformedPayload."""
    return GatewayContract(id=_str(obj, "id"), name=_str(obj, "name"), description=str(obj.get("description") or ""),
                           tick_size=_dec(obj, "tickSize", positive=True),
                           tick_value=_dec(obj, "tickValue", positive=True),
                           active=_bool(obj, "activeContract"), symbol_id=_str(obj, "symbolId"))


def parse_account(obj: Mapping[str, Any]) -> GatewayAccount:
    """``TradingAccount`` / GatewayUserAccount JSON -> :class:`GatewayAccount`. Raises MalformedPayload."""
    return GatewayAccount(id=_int(obj, "id"), name=_str(obj, "name"),
                          balance=to_decimal(_field(obj, "balance"), "balance"), can_trade=_bool(obj, "canTrade"),
                          is_visible=_bool(obj, "isVisible", True), simulated=_bool(obj, "simulated"))


def parse_bar(obj: Mapping[str, Any]) -> GatewayBar:
    """``Bar`` JSON (``t, o, h, l, c, v``) -> :class:`GatewayBar`; checks ``low <= open, close <= high``.
    Raises MalformedPayload."""
    o, h, lo, c = (_dec(obj, k, positive=True) for k in ("o", "h", "l", "c"))
    if not (lo <= o <= h and lo <= c <= h):
        raise MalformedPayload("inconsistent_ohlc", f"o={o} h={h} l={lo} c={c}")
    return GatewayBar(ts_ns=_ts(obj, "t"), open=o, high=h, low=lo, close=c, volume=_int(obj, "v"))


def parse_order(obj: Mapping[str, Any]) -> GatewayOrder:
    """``Order`` / GatewayUserOrder JSON -> :class:`GatewayOrder`. Raises MalformedPayload."""
    created = _ts(obj, "creationTimestamp")
    tag = obj.get("customTag")
    return GatewayOrder(
        id=_int(obj, "id"), account_id=_int(obj, "accountId") if obj.get("accountId") is not None else None,
        contract_id=_str(obj, "contractId"), status=_enum(obj, "status", GwOrderStatus),
        type=_enum(obj, "type", GwOrderType), side=_enum(obj, "side", GwSide), size=_int(obj, "size"),
        fill_volume=_int(obj, "fillVolume") if obj.get("fillVolume") is not None else 0,
        limit_price=_opt_dec(obj, "limitPrice", positive=True), stop_price=_opt_dec(obj, "stopPrice", positive=True),
        filled_price=_opt_dec(obj, "filledPrice", positive=True),
        custom_tag=str(tag) if tag not in (None, "") else None, created_ns=created,
        updated_ns=_ts(obj, "updateTimestamp") if obj.get("updateTimestamp") else created)


def parse_position(obj: Mapping[str, Any]) -> GatewayPosition:
    """``Position`` / GatewayUserPosition JSON -> :class:`GatewayPosition`. Raises MalformedPayload."""
    return GatewayPosition(
        id=_int(obj, "id") if obj.get("id") is not None else None,
        account_id=_int(obj, "accountId") if obj.get("accountId") is not None else None,
        contract_id=_str(obj, "contractId"), type=_enum(obj, "type", GwPositionType), size=_int(obj, "size"),
        average_price=_dec(obj, "averagePrice") if obj.get("averagePrice") is not None else Decimal(0),
        created_ns=_ts(obj, "creationTimestamp") if obj.get("creationTimestamp") else None)


def parse_trade(obj: Mapping[str, Any]) -> GatewayTrade:
    """``HalfTrade`` / GatewayUserTrade JSON -> :class:`GatewayTrade` (size >= 1). Raises MalformedPayload."""
    return GatewayTrade(
        id=_int(obj, "id"), account_id=_int(obj, "accountId") if obj.get("accountId") is not None else None,
        contract_id=_str(obj, "contractId"), ts_ns=_ts(obj, "creationTimestamp"),
        price=_dec(obj, "price", positive=True),
        pnl=to_decimal(obj["profitAndLoss"], "profitAndLoss") if obj.get("profitAndLoss") is not None else None,
        fees=_dec(obj, "fees") if obj.get("fees") is not None else Decimal(0),
        side=_enum(obj, "side", GwSide), size=_int(obj, "size", minimum=1),
        voided=_bool(obj, "voided", False), order_id=_int(obj, "orderId"))


def parse_depth(obj: Mapping[str, Any]) -> DepthEntry:
    """One GatewayDepth item -> :class:`DepthEntry`. Raises MalformedPayload."""
    return DepthEntry(ts_ns=_ts(obj, "timestamp"), type=_int(obj, "type"), price=_dec(obj, "price"),
                      volume=_int(obj, "volume"),
                      current_volume=_int(obj, "currentVolume") if obj.get("currentVolume") is not None else 0)


def unwrap(payload: Any) -> tuple[int | None, Any]:
    """User-hub payloads sometimes come as ``{"action": n, "data": {...}}`` ("Observed but undocumented",
    meaning of ``action`` unconfirmed). Returns ``(action, data)``; ``(None, payload)`` if not wrapped."""
    if isinstance(payload, Mapping) and "data" in payload and "action" in payload and \
            isinstance(payload["data"], (Mapping, list)):
        action = payload["action"]
        return (action if isinstance(action, int) and not isinstance(action, bool) else None), payload["data"]
    return None, payload


# --------------------------------------------------------------------------- market data -> domain

def quote_to_tick(instrument: str, tick_size: Decimal, data: Mapping[str, Any], *, seq: int,
                  prev: QuoteTick | None = None) -> QuoteTick:
    """GatewayQuote -> :class:`QuoteTick` (sizes 0: the gateway sends none).

    Quotes may be partial (snapshot vs delta is unconfirmed, "Market hub" and "Unconfirmed"): a
    missing ``bestBid`` or ``bestAsk`` is taken from ``prev``. ``ts_ns`` from ``timestamp`` (else
    ``lastUpdated``).
    Raises MalformedPayload: missing side without ``prev``, non-finite/non-positive/off-tick price,
    crossed or locked book (``bid >= ask``), bad timestamp.
    """
    if not isinstance(data, Mapping):
        raise MalformedPayload("not_an_object", type(data).__name__)
    bid = _dec(data, "bestBid") if data.get("bestBid") is not None else (prev.bid if prev else None)
    ask = _dec(data, "bestAsk") if data.get("bestAsk") is not None else (prev.ask if prev else None)
    if bid is None or ask is None:
        raise MalformedPayload("missing:bestBid" if bid is None else "missing:bestAsk")
    _on_tick(bid, tick_size, "bestBid")
    _on_tick(ask, tick_size, "bestAsk")
    if bid >= ask:
        raise MalformedPayload("crossed", f"bid {bid} >= ask {ask}")
    ts = _ts(data, "timestamp" if data.get("timestamp") else "lastUpdated")
    return QuoteTick(instrument, ts, bid, ask, 0, 0, seq)


def trade_print_to_tick(instrument: str, tick_size: Decimal, item: Mapping[str, Any], *, seq: int) -> TradeTick:
    """One GatewayTrade item (``price, volume, timestamp``) -> :class:`TradeTick`.
    Raises MalformedPayload (missing/NaN/off-tick price, volume < 1, bad timestamp)."""
    price = _on_tick(_dec(item, "price", positive=True), tick_size, "price")
    return TradeTick(instrument, _ts(item, "timestamp"), price, _int(item, "volume", minimum=1), seq)


# --------------------------------------------------------------------------- orders / fills -> domain

def strategy_id_of(client_order_id: str) -> str:
    """Our ids are ``{strategy_id}-{incarnation}-{seq}``: drop the last two ``-`` parts
    (``grid-MES-3-17`` -> ``grid-MES``). Anything else belongs to :data:`EXTERNAL_STRATEGY`."""
    parent = bracket_parent(client_order_id)  # a native bracket leg (``<entry id>-SL``) is its entry's
    parts = (parent or client_order_id).rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else EXTERNAL_STRATEGY


def fill_from_trade(trade: GatewayTrade, *, client_order_id: str, strategy_id: str, instrument: str,
                    leaves_qty: int) -> Fill:
    """HalfTrade -> :class:`Fill`: ``trade_id = str(id)``, ``fee`` = the trade's ``fees`` (dollars,
    whole fill), ``leaves_qty`` as computed by the caller from the order, ``venue_order_id = str(orderId)``."""
    return Fill(client_order_id=client_order_id, strategy_id=strategy_id, trade_id=str(trade.id),
                instrument=instrument, side=_FROM_GW_SIDE[trade.side], qty=trade.size, price=trade.price,
                fee=trade.fees, leaves_qty=max(leaves_qty, 0), ts_ns=trade.ts_ns, venue_order_id=str(trade.order_id))


def order_event(order: GatewayOrder, *, client_order_id: str,
                strategy_id: str) -> OrderAccepted | OrderCancelled | OrderRejected | None:
    """The domain status event an order update implies: working -> :class:`OrderAccepted`, Cancelled ->
    :class:`OrderCancelled` ("cancelled at venue"), Expired -> :class:`OrderCancelled` ("expired"),
    Rejected -> :class:`OrderRejected`; Filled/None -> None (fills come from trades)."""
    ts = order.updated_ns
    if order.working:
        return OrderAccepted(client_order_id, strategy_id, str(order.id), ts)
    if order.status == GwOrderStatus.CANCELLED:
        return OrderCancelled(client_order_id, strategy_id, ts, "cancelled at venue")
    if order.status == GwOrderStatus.EXPIRED:
        return OrderCancelled(client_order_id, strategy_id, ts, "expired at venue")
    if order.status == GwOrderStatus.REJECTED:
        return OrderRejected(client_order_id, strategy_id, "rejected at venue", ts)
    return None


def order_to_intent(order: GatewayOrder, *, client_order_id: str, strategy_id: str, instrument: str) -> OrderIntent:
    """A venue order as the :class:`OrderIntent` the reconciler compares (``qty`` = the order's size).
    Types without a domain equivalent map by their price: a stop price -> STOP, a limit price -> LIMIT."""
    if order.type in (GwOrderType.LIMIT, GwOrderType.JOIN_BID, GwOrderType.JOIN_ASK) or \
            (order.stop_price is None and order.limit_price is not None):
        otype = OrderType.LIMIT
    elif order.stop_price is not None:
        otype = OrderType.STOP
    else:
        otype = OrderType.MARKET
    return OrderIntent(client_order_id=client_order_id, strategy_id=strategy_id, instrument=instrument,
                       side=_FROM_GW_SIDE[order.side], qty=order.size, order_type=otype, ts_ns=order.created_ns,
                       limit_price=order.limit_price if otype is OrderType.LIMIT else None,
                       stop_price=order.stop_price if otype is OrderType.STOP else None,
                       purpose="venue")


def position_snapshot(pos: GatewayPosition, *, instrument: str) -> PositionSnapshot:
    """Position -> :class:`PositionSnapshot` with ``qty`` signed by ``type`` (Long +, Short -).
    ``type 0`` is only valid with ``size 0`` (a closed position): an unknown type is never guessed.
    Raises MalformedPayload."""
    if pos.type == GwPositionType.LONG:
        qty = pos.size
    elif pos.type == GwPositionType.SHORT:
        qty = -pos.size
    elif pos.size == 0:
        qty = 0
    else:
        raise MalformedPayload("unknown_enum:type", f"position type 0 with size {pos.size}")
    return PositionSnapshot(instrument, qty, pos.average_price, pos.created_ns or 0)


def place_args(intent: OrderIntent, *, tick_size: Decimal) -> dict[str, Any]:
    """:class:`OrderIntent` -> keyword arguments of :meth:`infra.projectx.rest.ProjectXClient.place_order`
    ("Order placement"): ``order_type`` 1 Limit / 2 Market / 4 Stop, ``side`` 0 buy / 1 sell, ``size``
    contracts, the price the type needs (Decimal points; the client turns it into a JSON number at
    the boundary), ``custom_tag`` = the client order id, and ``risk_reducing`` = ``intent.reduce_only``
    (not sent: such an order may use the rate-limit slots that new entries leave free). A native
    bracket (``intent.bracket``) becomes ``stop_loss_bracket`` (type 4 Stop) and
    ``take_profit_bracket`` (type 1 Limit) in signed ticks from the fill: a buy's stop negative and
    target positive, a sell's the reverse (docs/reference/projectx-gateway.md, "Order placement").
    Raises ValueError: qty < 1, the needed price missing, non-positive or off the tick grid."""
    if intent.qty < 1:
        raise ValueError(f"{intent.client_order_id}: qty {intent.qty} < 1")
    args: dict[str, Any] = {"order_type": int(_TO_GW_TYPE[intent.order_type]), "side": int(_TO_GW_SIDE[intent.side]),
                            "size": intent.qty, "custom_tag": intent.client_order_id,
                            "risk_reducing": intent.reduce_only}
    needed = {OrderType.LIMIT: ("limit_price", intent.limit_price),
              OrderType.STOP: ("stop_price", intent.stop_price)}.get(intent.order_type)
    if needed is not None:
        name, price = needed
        if price is None:
            raise ValueError(f"{intent.client_order_id}: {intent.order_type.value} order without {name}")
        if not price.is_finite() or price <= 0 or price % tick_size != 0:
            raise ValueError(f"{intent.client_order_id}: {name} {price} is not a positive price on the "
                             f"{tick_size} tick grid")
        args[name] = price
    if intent.bracket is not None:
        d = intent.side.sign
        args["stop_loss_bracket"] = {"ticks": -d * intent.bracket.stop_ticks, "type": int(GwOrderType.STOP)}
        args["take_profit_bracket"] = {"ticks": d * intent.bracket.target_ticks, "type": int(GwOrderType.LIMIT)}
    return args


def bracket_leg_intent(order: GatewayOrder, *, client_order_id: str, strategy_id: str,
                       instrument: str) -> OrderIntent | None:
    """A native bracket leg that is working with its price (status Open, after the entry filled) as
    the intent it works as: reduce-only, purpose ``bracket-stop`` / ``bracket-target`` (the router
    adds the entry's tags: :func:`domain.orders.leg_purpose`). None while it is Suspended without a
    price."""
    if order.status != GwOrderStatus.OPEN or (order.stop_price is None and order.limit_price is None):
        return None
    intent = order_to_intent(order, client_order_id=client_order_id, strategy_id=strategy_id, instrument=instrument)
    return dataclasses.replace(intent, reduce_only=True, purpose=leg_purpose(intent.order_type, ""))
