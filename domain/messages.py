"""Immutable message types: the only thing actors exchange.

Conventions (all messages):
- frozen, slotted dataclasses; containers are tuples, never lists (pykka does not copy messages);
  each class's ``__init__`` stores its fields through their slots (:func:`slot_init`);
- ``ts_ns``: the *event* time, integer nanoseconds since the Unix epoch, UTC. Convert to exchange
  time with :mod:`domain.calendar` (America/Chicago);
- prices are ``Decimal`` points on the instrument's tick grid; quantities are ``int`` contracts
  (always positive; direction is carried by :class:`Side`); money is ``Decimal`` dollars;
- identity: market data is identified by ``(instrument, ts_ns, seq)``; orders by their
  ``client_order_id`` (unique per account, also sent to the venue as ``customTag``); fills by the
  venue ``trade_id`` (duplicates are ignored everywhere).

:mod:`domain.codec` turns every message into a JSON-safe dict and back (Redis event stream).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class Side(enum.Enum):
    """Order / fill side. ``sign`` is +1 for BUY and -1 for SELL."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY

    @staticmethod
    def for_qty(signed_qty: int) -> "Side":
        """BUY for a positive signed quantity, SELL otherwise."""
        return Side.BUY if signed_qty > 0 else Side.SELL


class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"


class RiskState(enum.Enum):
    """Trading state published by the risk actor (Nautilus semantics).

    ACTIVE: everything allowed. REDUCING: only orders that shrink a position. HALTED: cancels only.
    """

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


# --------------------------------------------------------------------------- market data

@dataclass(frozen=True, slots=True)
class TradeTick:
    """One trade print. ``size`` in contracts; ``seq`` orders prints with equal ``ts_ns``."""

    instrument: str
    ts_ns: int
    price: Decimal
    size: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class QuoteTick:
    """Top of book. A valid quote has 0 < bid < ask."""

    instrument: str
    ts_ns: int
    bid: Decimal
    ask: Decimal
    bid_size: int = 0
    ask_size: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Bar:
    """A closed time bar covering ``[start_ns, end_ns)``; ``period_s`` seconds long; ``volume`` in contracts."""

    instrument: str
    period_s: int
    start_ns: int
    end_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    ts_ns: int = 0  # when the bar was closed (event time of the closing trigger)


@dataclass(frozen=True, slots=True)
class WarmupBars:
    """Historical bars to seed indicators before live data; strategies never trade on them."""

    instrument: str
    period_s: int
    bars: tuple[Bar, ...]
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ClockTick:
    """Timer tick, sent once per new minute of event time: by :class:`infra.feeds.FeedCore` on the
    first trade tick of a minute, and live also by :class:`infra.feeds.LiveFeed` on a quote or on
    its 1-second wall timer (so it comes when the market is quiet). Drives time rules."""

    ts_ns: int


# --------------------------------------------------------------------------- orders

@dataclass(frozen=True, slots=True)
class Bracket:
    """A native bracket on an entry: the venue itself places a protective stop ``stop_ticks`` and a
    target ``target_ticks`` away from the entry's fill price (ticks > 0, against / with the
    entry's side), as one OCO pair, when the entry fills (ProjectX ``stopLossBracket`` /
    ``takeProfitBracket``, docs/reference/projectx-gateway.md "Order placement"). The legs' client
    order ids are the entry's plus ``-SL`` / ``-TP`` (:func:`domain.orders.bracket_leg_ids`)."""

    stop_ticks: int
    target_ticks: int


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A request to place an order. Strategy/hedge -> risk -> router -> broker.

    ``purpose`` is free text for logs and the trade CSV (``grid-entry``, ``grid-tp``, ``hedge``,
    ``flatten``). ``limit_price`` is required for LIMIT, ``stop_price`` for STOP.
    ``reduce_only`` orders are allowed while risk is REDUCING. ``bracket`` (an entry only): the
    venue places the protective stop and target itself when the entry fills (:class:`Bracket`).
    """

    client_order_id: str
    strategy_id: str
    instrument: str
    side: Side
    qty: int
    order_type: OrderType
    ts_ns: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    purpose: str = ""
    bracket: Bracket | None = None


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel a working order by client order id. Always allowed, whatever the risk state."""

    client_order_id: str
    strategy_id: str
    ts_ns: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderDenied:
    """Risk refused an intent; it never reached the broker."""

    client_order_id: str
    strategy_id: str
    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class OrderSubmitted:
    """The router has persisted the order and sent it to the broker."""

    client_order_id: str
    strategy_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    """The venue acknowledged the order; it is working under ``venue_order_id``.

    ``intent`` is set when the venue placed the order itself, a native bracket's leg
    (:class:`Bracket`): the order as it works (side, size, price), which nobody sent before."""

    client_order_id: str
    strategy_id: str
    venue_order_id: str
    ts_ns: int
    intent: OrderIntent | None = None


@dataclass(frozen=True, slots=True)
class OrderRejected:
    """The venue refused the order (terminal)."""

    client_order_id: str
    strategy_id: str
    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """The order is no longer working (terminal); ``reason`` says who cancelled it."""

    client_order_id: str
    strategy_id: str
    ts_ns: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderModified:
    """The venue changed a working order's size or price (absolute, points); ``None`` = unchanged.
    The order keeps its client order id and stays working."""

    client_order_id: str
    strategy_id: str
    ts_ns: int
    qty: int | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution. ``leaves_qty`` is what remains working after it (0 = order filled).

    ``trade_id`` is the venue's execution id and the de-duplication key. ``fee`` is the
    commission for this fill, dollars (fee per side x qty).
    """

    client_order_id: str
    strategy_id: str
    trade_id: str
    instrument: str
    side: Side
    qty: int
    price: Decimal
    fee: Decimal
    leaves_qty: int
    ts_ns: int
    venue_order_id: str = ""


ORDER_EVENTS = (OrderSubmitted, OrderAccepted, OrderRejected, OrderCancelled, Fill)
"""Types that move an order through its state machine (see :mod:`domain.orders`)."""


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """Net position of one instrument as the broker reports it (reconciliation input)."""

    instrument: str
    qty: int  # signed contracts, + long
    avg_price: Decimal
    ts_ns: int


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """What the broker says is true: working orders (client ids), positions and recent fills."""

    working: tuple[OrderIntent, ...]
    positions: tuple[PositionSnapshot, ...]
    fills: tuple[Fill, ...]
    ts_ns: int


# --------------------------------------------------------------------------- risk & state

@dataclass(frozen=True, slots=True)
class RiskStateChanged:
    """Risk moved to ``state``; ``reason`` names the rule or operator action."""

    state: RiskState
    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ExposureUpdate:
    """Net positions after a fill, published by risk to the hedge and the strategies.

    ``positions`` is a tuple of ``(instrument, signed qty)`` pairs.
    """

    positions: tuple[tuple[str, int], ...]
    ts_ns: int

    def qty(self, instrument: str) -> int:
        for sym, q in self.positions:
            if sym == instrument:
                return q
        return 0


@dataclass(frozen=True, slots=True)
class StrategyStatus:
    """Strategy telemetry for metrics: grid mid, spacing (points), ATR (points), hedge ratio."""

    strategy_id: str
    instrument: str
    ts_ns: int
    atr: float = 0.0
    spacing: float = 0.0
    grid_mid: float = 0.0
    hedge_ratio: float = 0.0
    correlation: float = 0.0


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """Account telemetry from risk (each minute of event time): dollars unless stated.

    ``exposure_1atr`` is the net 1-ATR dollar exposure (docs/risk.md); ``positions`` are
    ``(instrument, signed qty)`` pairs.
    """

    ts_ns: int
    state: RiskState
    balance: Decimal
    equity: Decimal
    unrealized: Decimal
    day_pnl: Decimal
    mll_floor: Decimal
    headroom: Decimal
    drawdown: Decimal
    realized: Decimal
    fees: Decimal
    open_orders: int
    positions: tuple[tuple[str, int], ...]
    exposure_1atr: Decimal
    strategies: tuple[Any, ...] = ()
    """Each strategy's :class:`domain.strategy_books.StrategyFigures` (its P&L, drawdown, positions)."""
    orders_by_strategy: tuple[tuple[str, int], ...] = ()
    """Working orders per strategy id."""


# --------------------------------------------------------------------------- control & ops

@dataclass(frozen=True, slots=True)
class Flatten:
    """Cancel every working order and close every position (reduce-only market orders)."""

    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop opening new positions (risk goes REDUCING); working exits stay."""

    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Resume:
    """Undo a :class:`Pause` (risk returns to ACTIVE if no rule holds it)."""

    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class SetArmed:
    """Live trading armed (strategy orders may reach the venue) or disarmed (risk holds
    ``unarmed``: strategy orders cancelled and denied; open positions are not flattened)."""

    armed: bool
    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """The node found a strategy's trained model changed on disk and loaded it (checked against the
    strategy's feature list by the loader): ``model`` replaces the one in use, ``identifier`` is the
    new files' hash. In-process only (never journalled)."""

    strategy_id: str
    model: Any
    identifier: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class OperatorCommand:
    """An operator's command, journalled in the ``{ns}:events`` stream: ``command`` one of pause,
    resume, flatten, arm, disarm; ``who`` the operator as given (HTTP ``X-Operator`` header or the
    redis-cli entry); ``source`` ``http`` or ``redis``; ``result`` what the node did with it."""

    command: str
    who: str
    source: str
    result: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Orderly stop: cancel working orders, flatten, persist."""

    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness signal from actor ``actor`` (its ``seq``-th)."""

    actor: str
    ts_ns: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Alert:
    """An operator alert. ``key`` de-duplicates repeats; ``level`` is info/warning/critical;
    ``action`` what the system did about it ("" when nothing)."""

    level: str
    key: str
    text: str
    ts_ns: int
    action: str = ""


@dataclass(frozen=True, slots=True)
class ReconcileRequest:
    """Ask the reconciler to compare our state with the broker's now. With ``reuse_last`` the
    reconciler answers with its last result instead when it has one (a late listener asking "was
    the start-up reconciliation done?" must not start a second one: orders placed since then are
    on their way to the venue, and a snapshot taken now would see them as stale)."""

    reason: str
    ts_ns: int
    reuse_last: bool = False


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """Outcome of a reconciliation. ``ok`` False keeps risk HALTED. ``final`` False: a mismatch that
    will be checked again in a moment (fills in flight); risk halts but does not alert yet."""

    ok: bool
    detail: str
    ts_ns: int
    final: bool = True


def slot_init(cls: type) -> type:
    """Give a frozen slotted dataclass an ``__init__`` that stores each field with its slot's
    descriptor (``member_descriptor.__set__``) instead of ``object.__setattr__``, which the
    generated one calls per field to get past the frozen ``__setattr__``. Same parameters,
    defaults and result, and the instance stays frozen (``__setattr__`` still raises); about
    half the cost of building a message (a backtest builds one per trade print,
    docs/decisions/0020-backtest-shortcuts.md). Also for other value objects built in bulk
    (``infra.replay.BarRow``, ``domain.risk_rules.WorkingOrder`` and ``OrderCheck``). Only for classes without ``__post_init__``, default factories,
    keyword-only or ``init=False`` fields (checked: ``TypeError``)."""
    fields = dataclasses.fields(cls)
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not (params.frozen and "__slots__" in cls.__dict__) or hasattr(cls, "__post_init__") or any(
            not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING for f in fields):
        raise TypeError(f"{cls.__name__}: not a plain frozen slotted dataclass")
    ns: dict[str, Any] = {}
    args, body = [], []
    for i, f in enumerate(fields):
        ns[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            ns[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
        body.append(f"    _set{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(args)}):\n" + ("\n".join(body) or "    pass"), ns)  # noqa: S102
    init = ns["__init__"]
    init.__qualname__, init.__module__ = f"{cls.__qualname__}.__init__", cls.__module__
    init.__annotations__ = {**cls.__init__.__annotations__}  # type: ignore[misc]
    cls.__init__ = init  # type: ignore[misc]
    return cls


MESSAGE_TYPES: tuple[type, ...] = tuple(
    slot_init(v) for v in list(globals().values()) if isinstance(v, type) and dataclasses.is_dataclass(v))
"""Every message class of this module (each with :func:`slot_init`'s ``__init__``)."""
