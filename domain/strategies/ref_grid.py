"""The peer benchmark's reference grid (an order-management load, not a sensible strategy), as a
strategy plug-in (:mod:`domain.strategies.base`).

Rules (restated, with the peer engines' exact semantics and where we differ, in
docs/strategies/ref_grid.md):

- Inputs: closed :class:`~domain.messages.Bar` of ``bar_s`` seconds (default 120) of the one
  instrument it trades; other periods and instruments are ignored. Prices are ``Decimal`` points.
- ATR: Wilder ATR(``atr_period``, 14) on those bars (:class:`domain.indicators.WilderATR`, points).
  Nothing happens before the first bar on which it is ready.
- On every bar close with a ready ATR: if there is no grid yet, or ``|close - mid| > spacing``,
  the grid *re-centres*: every resting grid order is cancelled, ``mid = close`` and
  ``spacing = max(1 tick, round_to_tick(atr_multiplier x ATR))`` (points, ``atr_multiplier`` 0.45).
- Then, for k = 1..``levels`` (5), one-lot BUY limits at ``mid - k x spacing`` and one-lot SELL
  limits at ``mid + k x spacing``, good till cancelled. A level with a resting order of the current
  grid is kept; a level whose order filled (or was denied, rejected or cancelled) is placed again.
  A level is placed only if its price is strictly below (buy) / above (sell) the close, so no order
  is marketable when placed.
- Cap (contracts), checked level by level from k = 1 outwards, stopping the side at the first
  level that would break it: ``position + resting buys <= +levels`` and
  ``position - resting sells >= -levels``. Orders whose cancel is in flight are not counted (the
  peers drop them at once), so a fill of such an order can briefly take the position past the cap.
- Position: only from its own :class:`~domain.messages.Fill` messages (signed contracts,
  de-duplicated by ``trade_id``). An :class:`~domain.messages.ExposureUpdate` with the account flat
  in this instrument while the strategy holds a position and has no order working sets the position
  to 0 (risk's own flatten; counted as ``flattened``). This assumes no other strategy trades the
  same instrument on the account.
- Not in the peers (our account-level rules apply to every plug-in): nothing is placed while risk
  is not ACTIVE (:class:`~domain.messages.RiskStateChanged`) or outside the trading window
  (:meth:`SessionCalendar.can_open`, America/Chicago); there every resting order is cancelled. The
  ATR, mid and spacing still follow every bar, so re-centres depend on closes and ATR only.
- :class:`~domain.messages.WarmupBars` seed the ATR only; they never set a grid or send an order.

Timestamps are epoch ns UTC; sessions are America/Chicago (:mod:`domain.calendar`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field

from domain.calendar import SessionCalendar
from domain.handler import RISK, IdGenerator, Out, RejectedMessage
from domain.indicators import WilderATR
from domain.instruments import get_instrument
from domain.messages import (
    Bar,
    CancelOrder,
    ClockTick,
    ExposureUpdate,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderIntent,
    OrderModified,
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
from domain.strategies.base import STRICT, OwnPosition, StrategyContext, StrategyPlugin

_SEEN_TRADES = 256
"""How many recent own trade ids the strategy remembers (a fill delivered twice is applied once)."""

PURPOSE = {Side.BUY: "ref-grid-buy", Side.SELL: "ref-grid-sell"}


class RefGridParams(BaseModel):
    """The ``params:`` section of a ``ref_grid`` entry (docs/strategies/ref_grid.md).

    Attributes:
        levels: one-lot limits each side (5); also the position cap, contracts (1..20).
        atr_period: Wilder ATR length, bars (14; 1..1000).
        atr_multiplier: spacing = this x ATR, rounded to the tick, at least one tick (0.45; > 0,
            <= 10, finite).
        bar_s: bar period, seconds (120, the peers' 2-minute bars; at most a day).
    """

    model_config = STRICT

    levels: Annotated[int, Field(ge=1, le=20)] = 5
    atr_period: Annotated[int, Field(ge=1, le=1000)] = 14
    atr_multiplier: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.45
    bar_s: Annotated[int, Field(gt=0, le=86_400)] = 120


class RefGridStrategy:
    """Reference grid handler for one instrument. ``handle(msg) -> Out``; see the module docstring.

    Args:
        instrument: the traded symbol (e.g. ``"MES"``).
        strategy_id: actor name and client order id prefix.
        params: :class:`RefGridParams`.
        ids: client order id source.
        calendar: session rules (trading window, America/Chicago).

    Attributes:
        position: own signed position, contracts (from own fills).
        mid: grid mid, points (None before the first re-centre).
        spacing: grid spacing, points (None before the first re-centre).
        orders: working orders by client order id: ``{"side": "BUY"|"SELL", "level": k,
            "price": str points, "filled": contracts, "cancelling": bool}``.
    """

    def __init__(self, instrument: str, strategy_id: str, params: RefGridParams, ids: IdGenerator,
                 calendar: SessionCalendar | None = None) -> None:
        self.instrument = instrument
        self.spec = get_instrument(instrument)
        self.strategy_id = strategy_id
        self.p = params
        self.ids = ids
        self.calendar = calendar or SessionCalendar()
        self.atr = WilderATR(params.atr_period)
        self.mid: Decimal | None = None
        self.spacing: Decimal | None = None
        self.last_bar_start_ns = -1
        self.book = OwnPosition(strategy_id, instrument, _SEEN_TRADES)
        self.orders: dict[str, dict[str, Any]] = {}
        self.risk_state = RiskState.ACTIVE
        self.counters: dict[str, int] = {"recentres": 0, "orders": 0, "fills": 0, "cancels": 0, "denied": 0,
                                         "rejected": 0, "cancelled": 0, "flattened": 0}

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
            if msg.state is not RiskState.ACTIVE:
                return self._cancel_all(msg.ts_ns, f"risk {msg.state.value}")
            return []
        if isinstance(msg, WarmupBars):
            if msg.instrument == self.instrument and msg.period_s == self.p.bar_s:
                for bar in msg.bars:
                    self._update_atr(bar)
            return []
        if isinstance(msg, ClockTick):
            if not self.calendar.can_open(msg.ts_ns):
                return self._cancel_all(msg.ts_ns, "outside trading window")
            return []
        if isinstance(msg, (TradeTick, OrderSubmitted, OrderAccepted, OrderModified, StrategyStatus)):
            return []
        raise RejectedMessage(f"{self.strategy_id}: unexpected message {type(msg).__name__}")

    # ------------------------------------------------------------------ bars
    def _update_atr(self, bar: Bar) -> bool:
        """Feed one bar of our period and instrument to the ATR; False if it is a repeat."""
        if bar.start_ns <= self.last_bar_start_ns:
            return False  # delivered again (warm-up overlap, replay resumed behind): already counted
        self.last_bar_start_ns = bar.start_ns
        self.atr.update(bar.high, bar.low, bar.close)
        return True

    @property
    def ready(self) -> bool:
        """The ATR has ``atr_period`` true ranges."""
        return self.atr.ready

    def _on_bar(self, bar: Bar) -> Out:
        if bar.instrument != self.instrument or bar.period_s != self.p.bar_s:
            return []
        if not self._update_atr(bar) or not self.ready:
            return []
        ts_ns = bar.ts_ns or bar.end_ns
        close = bar.close
        out: Out = []
        if self.mid is None or self.spacing is None or abs(close - self.mid) > self.spacing:
            out += self._cancel_all(ts_ns, "re-centre")
            self.mid = close
            self.spacing = max(self.spec.tick_size,
                               self.spec.round_to_tick(self.p.atr_multiplier * (self.atr.value or 0.0)))
            self.counters["recentres"] += 1
        if not self._can_place(ts_ns):
            return out + self._cancel_all(ts_ns, "outside trading window" if self.risk_state is RiskState.ACTIVE
                                          else f"risk {self.risk_state.value}")
        return out + self._place_levels(close, ts_ns)

    def _can_place(self, ts_ns: int) -> bool:
        return self.risk_state is RiskState.ACTIVE and self.calendar.can_open(ts_ns)

    # ------------------------------------------------------------------ orders
    def _live(self, side: str) -> dict[int, str]:
        """``{level: client order id}`` of the resting orders of the current grid on ``side``."""
        return {o["level"]: c for c, o in self.orders.items() if o["side"] == side and not o["cancelling"]}

    def _place_levels(self, close: Decimal, ts_ns: int) -> Out:
        assert self.mid is not None and self.spacing is not None
        out: Out = []
        for side in (Side.BUY, Side.SELL):
            live = self._live(side.value)
            n_live = len(live)
            for k in range(1, self.p.levels + 1):
                if k in live:
                    continue
                if side is Side.BUY and self.position + n_live >= self.p.levels:
                    break
                if side is Side.SELL and self.position - n_live <= -self.p.levels:
                    break
                price = self.mid - k * self.spacing if side is Side.BUY else self.mid + k * self.spacing
                if (side is Side.BUY and price >= close) or (side is Side.SELL and price <= close) or price <= 0:
                    continue
                coid = self.ids.next_id(self.strategy_id)
                out.append((RISK, OrderIntent(client_order_id=coid, strategy_id=self.strategy_id,
                                              instrument=self.instrument, side=side, qty=1,
                                              order_type=OrderType.LIMIT, ts_ns=ts_ns, limit_price=price,
                                              purpose=PURPOSE[side])))
                self.orders[coid] = {"side": side.value, "level": k, "price": str(price), "filled": 0,
                                     "cancelling": False}
                n_live += 1
                self.counters["orders"] += 1
        return out

    def _cancel_all(self, ts_ns: int, reason: str) -> Out:
        out: Out = []
        for coid, o in self.orders.items():
            if not o["cancelling"]:
                o["cancelling"] = True
                out.append((RISK, CancelOrder(coid, self.strategy_id, ts_ns, reason)))
                self.counters["cancels"] += 1
        return out

    # ------------------------------------------------------------------ order events
    def _on_fill(self, fill: Fill) -> Out:
        if not self.book.apply(fill):
            return []  # not ours, or delivered again (reconciliation after a restart or a gap)
        self.counters["fills"] += 1
        o = self.orders.get(fill.client_order_id)
        if o is not None:
            o["filled"] += fill.qty
            if fill.leaves_qty == 0 or o["filled"] >= 1:
                del self.orders[fill.client_order_id]  # the level is free: placed again on the next bar
        return []

    def _on_order_gone(self, msg: Any) -> Out:
        if self.orders.pop(msg.client_order_id, None) is None:
            return []
        key = {OrderDenied: "denied", OrderRejected: "rejected", OrderCancelled: "cancelled"}[type(msg)]
        self.counters[key] += 1
        return []  # the level is free: placed again on the next bar

    def _on_exposure(self, msg: ExposureUpdate) -> Out:
        if self.book.flattened_by_risk(msg, orders_working=bool(self.orders)):
            self.counters["flattened"] += 1
        return []

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict:
        """JSON-safe state: ATR, grid, position, working orders, recent trade ids, counters."""
        return {
            "atr": self.atr.snapshot(),
            "mid": str(self.mid) if self.mid is not None else None,
            "spacing": str(self.spacing) if self.spacing is not None else None,
            "last_bar_start_ns": self.last_bar_start_ns, **self.book.snapshot(),
            "orders": {c: dict(o) for c, o in self.orders.items()},
            "stats": dict(self.counters),
        }

    def restore(self, d: dict) -> None:
        """Load a :meth:`snapshot`. Working orders are re-validated by reconciliation afterwards."""
        self.atr = WilderATR.restore(d["atr"])
        self.mid = Decimal(d["mid"]) if d.get("mid") else None
        self.spacing = Decimal(d["spacing"]) if d.get("spacing") else None
        self.last_bar_start_ns = int(d.get("last_bar_start_ns", -1))
        self.book.restore(d)
        self.orders = {str(c): {"side": str(o["side"]), "level": int(o["level"]), "price": str(o["price"]),
                                "filled": int(o.get("filled", 0)), "cancelling": bool(o.get("cancelling", False))}
                       for c, o in (d.get("orders") or {}).items()}
        self.counters.update({k: int(v) for k, v in d.get("stats", {}).items()})

    @staticmethod
    def held_orders(snapshot: dict) -> dict[str, int]:
        """``{client order id: contracts filled}`` of the working orders in a :meth:`snapshot`."""
        return {str(c): int(o.get("filled", 0)) for c, o in (snapshot.get("orders") or {}).items()}

    def forget_orders(self, client_order_ids: list[str]) -> None:
        """Drop restored orders that never reached the router."""
        for c in client_order_ids:
            self.orders.pop(c, None)

    def stats(self) -> dict[str, int]:
        """Re-centres, orders sent, cancels sent, own fills applied, denials / rejections / cancels
        confirmed, and positions found flattened by risk."""
        return dict(self.counters)


def build(ctx: StrategyContext, p: RefGridParams) -> RefGridStrategy:
    """The reference grid on ``ctx.instruments[0]``."""
    return RefGridStrategy(ctx.instruments[0], ctx.strategy_id, p, ctx.ids, ctx.calendar)


PLUGIN = StrategyPlugin(kind="ref_grid", params=RefGridParams, build=build, instruments=(1, 1),
                        bar_periods=lambda p: (p.bar_s,), wants_ticks=False,
                        warmup_periods=lambda p: (p.bar_s,),
                        held_orders=RefGridStrategy.held_orders, summary=("recentres", "fills"))
