"""EMA fast/slow cross (default 10/30 on 2-minute bar closes): the peer benchmark's reference
strategy, and the third plug-in of the strategy interface (:mod:`domain.strategies.base`).

Rules (restated with the peer engines' exact semantics in docs/strategies/ema_cross.md):

- Inputs: closed :class:`~domain.messages.Bar` of ``bar_s`` seconds (default 120) of the one
  instrument it trades; bars of other periods or instruments are ignored. Closes are ``Decimal``
  points, converted to ``float`` for the averages (signals, not money).
- EMA: ``alpha = 2 / (n + 1)``, ``EMA_t = EMA_{t-1} + alpha x (close_t - EMA_{t-1})``
  (https://en.wikipedia.org/wiki/Moving_average#Exponential_moving_average). Seeding, param
  ``seed``: ``"sma"`` (default) starts the recursion from the simple average of the first ``n``
  closes, as TA-Lib's EMA (https://ta-lib.org/functions/, "EMA"; the seed is the SMA of the first
  period values) and backtrader do; ``"first"`` starts it from the first close, as NautilusTrader
  and pandas ``ewm(span=n, adjust=False)`` do. Either way an EMA is *ready* after ``n`` closes.
- Cross: on each closed bar where the slow EMA is ready, ``s = sign(fast - slow)``; ``s == 0``
  keeps the previous sign (a touch is not a cross). A cross is a change of ``s`` from one non-zero
  sign to the other; the first ready bar only establishes the sign. A cross sets the target
  position to ``+qty`` (fast above) or ``-qty`` (fast below) contracts; before the first cross the
  target is 0 (flat).
- Orders: one ``MARKET`` :class:`~domain.messages.OrderIntent` of ``|target - position|``
  contracts to :data:`domain.handler.RISK` (``2 x qty`` when reversing), ``ts_ns`` = the bar's
  close time. One order at a time: while one is working nothing new is sent. On every bar (not
  only a cross bar) a strategy with no working order whose position differs from a non-zero
  target sends the difference again, so an order that risk denied, the venue rejected or someone
  cancelled is re-sent on the next bar while the EMA state still says long/short.
- Nothing is sent outside the trading window (:meth:`SessionCalendar.can_open`: 17:00 CT to
  15:10 CT minus the flatten margin, America/Chicago) or while risk is not ACTIVE
  (:class:`~domain.messages.RiskStateChanged`). The EMAs and the cross state still follow every
  bar, so the position is brought to the target on the first bar inside the window.
- Position: only from its own :class:`~domain.messages.Fill` messages (signed contracts, de-duplicated
  by ``trade_id``); never assumed from an order. Risk's own flatten orders (15:10 CT, kill switches)
  are not the strategy's, so an :class:`~domain.messages.ExposureUpdate` with the account flat in
  this instrument while the strategy holds a position and has no working order sets its position
  to 0 (counted as ``flattened``). This assumes no other strategy trades the same instrument on
  the account.
- :class:`~domain.messages.WarmupBars` seed the EMAs and the sign only: they never set a target or
  send an order.

Timestamps are epoch ns UTC; sessions are America/Chicago (:mod:`domain.calendar`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from domain.calendar import SessionCalendar
from domain.handler import RISK, IdGenerator, Out, RejectedMessage
from domain.instruments import INSTRUMENTS
from domain.messages import (
    Bar,
    ClockTick,
    ExposureUpdate,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderIntent,
    OrderRejected,
    OrderSubmitted,
    OrderType,
    RiskState,
    RiskStateChanged,
    Side,
    StrategyStatus,
    TradeTick,
    WarmupBars,
)
from domain.risk_rules import RiskLimits
from domain.strategies.base import STRICT, OwnPosition, StrategyContext, StrategyPlugin

Seed = Literal["first", "sma"]

_SEEN_TRADES = 64
"""How many recent own trade ids the strategy remembers (a fill delivered twice is applied once)."""


class EmaCrossParams(BaseModel):
    """The ``params:`` section of an ``ema_cross`` entry (docs/strategies/ema_cross.md).

    Attributes:
        fast: fast EMA length, bars (10).
        slow: slow EMA length, bars (30); must be above ``fast``.
        qty: contracts held after a cross (1); a reversal order is ``2 x qty``.
        bar_s: bar period, seconds (120, the peers' 2-minute bars); the node's bar builder makes
            bars of this period for the strategy.
        seed: ``"sma"`` (TA-Lib / backtrader, default) or ``"first"`` (NautilusTrader / pandas).

    Bounds (refused at load beyond them): ``fast``/``slow`` at most 10,000 bars, ``qty`` at most
    1000 contracts (risk's contract cap applies anyway), ``bar_s`` at most a day (86,400 s).
    """

    model_config = STRICT

    fast: Annotated[int, Field(ge=1, le=10_000)] = 10
    slow: Annotated[int, Field(ge=2, le=10_000)] = 30
    qty: Annotated[int, Field(ge=1, le=1000)] = 1
    bar_s: Annotated[int, Field(gt=0, le=86_400)] = 120
    seed: Seed = "sma"

    @model_validator(mode="after")
    def _fast_below_slow(self) -> EmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast: {self.fast} must be below slow ({self.slow}); "
                             "the fast EMA is the shorter one")
        return self


class SeededEMA:
    """EMA with ``alpha = 2/(n+1)`` and a choice of seed (units of the input, here points).

    ``seed="sma"``: no value until ``n`` inputs; the ``n``-th value is their simple average, then
    the recursion (TA-Lib, backtrader). ``seed="first"``: the first input is the value, then the
    recursion (NautilusTrader, pandas ``ewm(span=n, adjust=False)``, :class:`domain.indicators.EMA`).
    Both are :attr:`ready` after ``n`` inputs.

    Args:
        n: length in inputs, >= 1.
        seed: ``"sma"`` or ``"first"``.
    """

    def __init__(self, n: int, seed: Seed = "sma") -> None:
        if int(n) < 1:
            raise ValueError(f"EMA period must be >= 1, got {n}")
        if seed not in ("sma", "first"):
            raise ValueError(f"EMA seed must be 'sma' or 'first', got {seed!r}")
        self.n = int(n)
        self.seed: Seed = seed
        self.alpha = 2.0 / (self.n + 1)
        self.value: float | None = None
        self.count = 0
        self._sum = 0.0  # sum of the inputs while seeding with the SMA

    def update(self, x: float) -> float | None:
        """Feed one input; returns the EMA (None while an SMA seed is still filling)."""
        self.count += 1
        if self.seed == "sma" and self.count <= self.n:
            self._sum += x
            if self.count == self.n:
                self.value = self._sum / self.n
        elif self.value is None:
            self.value = x
        else:
            self.value = self.value + self.alpha * (x - self.value)
        return self.value

    @property
    def ready(self) -> bool:
        """True once ``n`` inputs were fed."""
        return self.count >= self.n

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state (floats round-trip exactly through JSON)."""
        return {"n": self.n, "seed": self.seed, "value": self.value, "count": self.count, "sum": self._sum}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> SeededEMA:
        """Rebuild from :meth:`snapshot` output."""
        obj = cls(int(d["n"]), d.get("seed", "sma"))
        obj.value = None if d.get("value") is None else float(d["value"])
        obj.count = int(d.get("count", 0))
        obj._sum = float(d.get("sum", 0.0))
        return obj


class EmaCrossStrategy:
    """EMA cross handler for one instrument. ``handle(msg) -> Out``; see the module docstring.

    Args:
        instrument: the traded symbol (e.g. ``"MES"``).
        strategy_id: actor name and client order id prefix.
        params: :class:`EmaCrossParams`.
        ids: client order id source.
        calendar: session rules (trading window, America/Chicago).

    Attributes:
        position: own signed position, contracts (from own fills).
        target: signed contracts the EMA state asks for (0 until the first cross).
        sign: last non-zero sign of ``fast - slow`` (0 until the slow EMA is ready).
        working: the working order ``{"coid", "side", "qty", "filled"}`` or None.
    """

    def __init__(self, instrument: str, strategy_id: str, params: EmaCrossParams, ids: IdGenerator,
                 calendar: SessionCalendar | None = None) -> None:
        self.instrument = instrument
        self.strategy_id = strategy_id
        self.p = params
        self.ids = ids
        self.calendar = calendar or SessionCalendar()
        self.fast = SeededEMA(params.fast, params.seed)
        self.slow = SeededEMA(params.slow, params.seed)
        self.sign = 0
        self.target = 0
        self.last_cross_ns = 0
        self.last_bar_start_ns = -1
        self.book = OwnPosition(strategy_id, instrument, _SEEN_TRADES)
        self.working: dict[str, Any] | None = None
        self.risk_state = RiskState.ACTIVE
        self.counters: dict[str, int] = {"crosses": 0, "orders": 0, "fills": 0, "denied": 0, "rejected": 0,
                                         "cancelled": 0, "flattened": 0}

    @property
    def position(self) -> int:
        """Own signed position, contracts (:class:`OwnPosition`)."""
        return self.book.qty

    # ------------------------------------------------------------------ dispatch
    def handle(self, msg: Any) -> Out:
        if isinstance(msg, Bar):
            return self._on_bar(msg)
        if isinstance(msg, Fill):
            return self._on_fill(msg)
        if isinstance(msg, (OrderDenied, OrderRejected, OrderCancelled)):
            return self._on_order_gone(msg)
        if isinstance(msg, ExposureUpdate):
            return self._on_exposure(msg)
        if isinstance(msg, RiskStateChanged):
            self.risk_state = msg.state
            return []
        if isinstance(msg, WarmupBars):
            if msg.instrument == self.instrument and msg.period_s == self.p.bar_s:
                for bar in msg.bars:
                    self._update(bar, live=False)
            return []
        if isinstance(msg, (TradeTick, ClockTick, OrderSubmitted, OrderAccepted, StrategyStatus)):
            return []
        raise RejectedMessage(f"{self.strategy_id}: unexpected message {type(msg).__name__}")

    # ------------------------------------------------------------------ signal
    def _update(self, bar: Bar, live: bool) -> bool:
        """Feed one bar of our period and instrument; returns True if it was new (not a repeat).
        A live bar whose sign flips sets the target; a warm-up bar only moves the sign."""
        if bar.start_ns <= self.last_bar_start_ns:
            return False  # delivered again (warm-up overlap, replay resumed behind): already counted
        self.last_bar_start_ns = bar.start_ns
        close = float(bar.close)
        self.fast.update(close)
        self.slow.update(close)
        if not (self.fast.ready and self.slow.ready):
            return True
        diff = self.fast.value - self.slow.value  # type: ignore[operator]
        s = 1 if diff > 0 else -1 if diff < 0 else 0
        if s == 0 or s == self.sign:
            return True
        crossed = self.sign != 0
        self.sign = s
        if crossed and live:
            self.target = s * self.p.qty
            self.last_cross_ns = bar.ts_ns or bar.end_ns
            self.counters["crosses"] += 1
        return True

    def _on_bar(self, bar: Bar) -> Out:
        if bar.instrument != self.instrument or bar.period_s != self.p.bar_s:
            return []
        if not self._update(bar, live=True):
            return []
        return self._trade_to_target(bar.ts_ns or bar.end_ns)

    @property
    def ready(self) -> bool:
        """The slow EMA has ``slow`` closes (the fast one then has them too)."""
        return self.slow.ready

    def _can_place(self, ts_ns: int) -> bool:
        return (self.ready and self.working is None and self.risk_state is RiskState.ACTIVE
                and self.calendar.can_open(ts_ns))

    def _trade_to_target(self, ts_ns: int) -> Out:
        delta = self.target - self.position
        if self.target == 0 or delta == 0 or not self._can_place(ts_ns):
            return []
        if self.position == 0:
            purpose = "ema-entry"
        elif (self.position > 0) != (self.target > 0):
            purpose = "ema-reverse"
        else:
            purpose = "ema-adjust"  # same side, other size (a partial fill, a changed qty)
        side = Side.for_qty(delta)
        intent = OrderIntent(client_order_id=self.ids.next_id(self.strategy_id), strategy_id=self.strategy_id,
                             instrument=self.instrument, side=side, qty=abs(delta), order_type=OrderType.MARKET,
                             ts_ns=ts_ns, purpose=purpose)
        self.working = {"coid": intent.client_order_id, "side": side.value, "qty": abs(delta), "filled": 0}
        self.counters["orders"] += 1
        return [(RISK, intent)]

    # ------------------------------------------------------------------ order events
    def _on_fill(self, fill: Fill) -> Out:
        if not self.book.apply(fill):
            return []  # not ours, or delivered again (reconciliation after a restart or a gap)
        self.counters["fills"] += 1
        w = self.working
        if w is not None and w["coid"] == fill.client_order_id:
            w["filled"] += fill.qty
            if fill.leaves_qty == 0 or w["filled"] >= w["qty"]:
                self.working = None
        return []

    def _on_order_gone(self, msg: Any) -> Out:
        if self.working is None or self.working["coid"] != msg.client_order_id:
            return []
        self.working = None
        key = {OrderDenied: "denied", OrderRejected: "rejected", OrderCancelled: "cancelled"}[type(msg)]
        self.counters[key] += 1
        return []  # re-evaluated on the next bar

    def _on_exposure(self, msg: ExposureUpdate) -> Out:
        if self.book.flattened_by_risk(msg, orders_working=self.working is not None):
            self.counters["flattened"] += 1
        return []

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict:
        """JSON-safe state: EMAs, cross state, position, working order, recent trade ids, counters."""
        return {
            "fast": self.fast.snapshot(), "slow": self.slow.snapshot(),
            "sign": self.sign, "target": self.target, "last_cross_ns": self.last_cross_ns,
            "last_bar_start_ns": self.last_bar_start_ns, **self.book.snapshot(),
            "working": dict(self.working) if self.working is not None else None,
            "stats": dict(self.counters),
        }

    def restore(self, d: dict) -> None:
        """Load a :meth:`snapshot`. The working order is re-validated by reconciliation afterwards."""
        self.fast = SeededEMA.restore(d["fast"])
        self.slow = SeededEMA.restore(d["slow"])
        self.sign = int(d.get("sign", 0))
        self.target = int(d.get("target", 0))
        self.last_cross_ns = int(d.get("last_cross_ns", 0))
        self.last_bar_start_ns = int(d.get("last_bar_start_ns", -1))
        self.book.restore(d)
        w = d.get("working")
        self.working = ({"coid": str(w["coid"]), "side": str(w["side"]), "qty": int(w["qty"]),
                         "filled": int(w.get("filled", 0))} if w else None)
        self.counters.update({k: int(v) for k, v in d.get("stats", {}).items()})

    @staticmethod
    def held_orders(snapshot: dict) -> dict[str, int]:
        """``{client order id: contracts filled}`` of the working order in a :meth:`snapshot`."""
        w = snapshot.get("working")
        return {str(w["coid"]): int(w.get("filled", 0))} if w else {}

    def forget_orders(self, client_order_ids: list[str]) -> None:
        """Drop the restored working order if it never reached the router."""
        if self.working is not None and self.working["coid"] in client_order_ids:
            self.working = None

    def stats(self) -> dict[str, int]:
        """Crosses (live), orders sent, own fills applied, denials / rejections / cancels, and
        positions found flattened by risk."""
        return dict(self.counters)


def build(ctx: StrategyContext, p: EmaCrossParams) -> EmaCrossStrategy:
    """The EMA cross on ``ctx.instruments[0]``."""
    return EmaCrossStrategy(ctx.instruments[0], ctx.strategy_id, p, ctx.ids, ctx.calendar)


def _check(p: EmaCrossParams, instruments: tuple[str, ...], limits: RiskLimits) -> None:
    spec = INSTRUMENTS.get(instruments[0])
    if spec is not None and p.qty * spec.mini_equivalent > limits.max_contracts_minis:
        raise ValueError(f"qty: {p.qty} {instruments[0]} is {p.qty * spec.mini_equivalent} minis, above "
                         f"profile.max_contracts_minis {limits.max_contracts_minis} (every entry would be denied)")


PLUGIN = StrategyPlugin(kind="ema_cross", params=EmaCrossParams, build=build, instruments=(1, 1),
                        bar_periods=lambda p: (p.bar_s,), wants_ticks=False, wants_clock=False,
                        # the strategy reads only bar_s bars; a fixed tuple cannot follow bar_s, so
                        # the default period is warmed up (docs/strategies/ema_cross.md)
                        warmup_periods=lambda p: (p.bar_s,),
                        held_orders=EmaCrossStrategy.held_orders, check=_check, summary=("crosses", "fills"))
