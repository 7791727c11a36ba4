"""Volatility-adaptive grid strategy (docs/reference/strategy-seeds.md, one instance per instrument).

Formulas (docs/reference/strategy-seeds.md, with the choices documented in
docs/strategies/grid-and-hedge.md):

- spacing = ATR(14, Wilder, 15-min bars) x ``atr_multiplier`` (0.45), rounded to the tick grid and
  at least ``min_spacing_ticks``; under a volatility surge x ``surge_spacing_factor``.
- grid mid = session VWAP (anchored at the 17:00 CT trading-day start, from 1-min bars), or the
  last trade until VWAP exists.
- levels: ``levels_each_side`` passive limit entries each side: BUY at mid - n x spacing,
  SELL at mid + n x spacing, n = 1..levels. An entry that would be marketable (buy at or above
  the last trade, sell at or below it) is skipped for now.
- lot sizer (docs/reference/strategy-seeds.md#lot-sizer, corrected): base_lot = round(R /
  (ATR_points x point_value)), at least 1. The seed writes ``ATR_points * tick_value``; dollars per
  contract per ATR is ATR x *point value* (the seed's formula overstates lots by 4x on MES). Level
  n gets base_lot x (1 + alpha x (n-1)) (pyramiding), capped at ``max_lot`` and at floor(R / (ATR x
  point_value)) so that no leg's 1-ATR risk exceeds R (= the profile's per_trade_risk,
  docs/reference/strategy-seeds.md#guardrails); halved (at least 1) in a surge. The cap wins over
  pyramiding (docs/strategies/grid-and-hedge.md, "Grid").
- take-profit: each filled entry gets an opposite passive limit at fill price +/- ``take_profit_atr``
  x ATR (seed: profit per leg = 0.5 x ATR). When the take-profit fills, the level is free and its
  entry is placed again (recycled, as the Hummingbot grid executor does).
- rebuild: on each 1-min bar (the seed's 60 s recalculation), if the mid moved by at least
  ``rebuild_shift_spacings`` x spacing, or the spacing changed by 25 % or more, working entries are
  cancelled and placed again around the new mid (docs/decisions/0011-grid-rebuild-cancels-first.md).
  Take-profits of filled inventory stay working.
- volatility surge: ATR above ``surge_ratio`` x its slow EMA (``surge_ema_bars`` 15-min bars).
- one entry per side at a time awaits risk's verdict: the nearest open level of each side is
  proposed, and the next level out on that side only when risk passed it (the router's
  ``OrderSubmitted``). An entry level that risk denied, and the open levels beyond it on the same
  side (they carry at least as much risk, so they count as denied without being asked), are not
  proposed again for ``denial_backoff_s`` (60 s, the seed's recalculation interval), doubled on
  each further denial of that level in a row up to ``denial_backoff_max_s`` (900 s, one ATR bar),
  unless a fill changes the position first (which resets it). Risk's caps mostly change with the
  position; re-proposing a capped level every minute only produces denials
  (docs/strategies/grid-and-hedge.md, "Grid"; docs/decisions/0023-grid-asks-one-level-per-side.md).
- nothing new is placed outside the trading window (domain.calendar), when risk is not ACTIVE,
  or before ATR is ready; warm-up bars only seed indicators.

The handler owns only its orders (strategy id = actor name). Risk flattens positions itself; the
strategy forgets inventory whose orders risk cancelled.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field

from domain.calendar import SessionCalendar, trading_day
from domain.handler import RISK, STATUS_TOPIC, IdGenerator, Out, RejectedMessage
from domain.indicators import EMA, SessionVWAP, WilderATR
from domain.instruments import get_instrument
from domain.messages import (Bar, ClockTick, ExposureUpdate, Fill, OrderAccepted, OrderCancelled, OrderDenied,
                             OrderIntent, OrderRejected, OrderSubmitted, OrderType, RiskState, RiskStateChanged,
                             Side, StrategyStatus, TradeTick, WarmupBars, CancelOrder)
from domain.risk_rules import RiskLimits
from domain.strategies.base import STRICT, StrategyContext, StrategyPlugin

PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]


class GridParams(BaseModel):
    """The grid's ``params:`` section (defaults: docs/reference/strategy-seeds.md#parameters; our own
    choices: docs/strategies/grid-and-hedge.md, "Grid").

    Every number is bounded: floats finite (``.inf`` / ``.nan`` refused) and every field below an
    upper bound far outside any sensible setting (e.g. ``atr_multiplier`` <= 10: a spacing of ten
    ATRs puts no level within a day's range), so a typo such as ``1e300`` is refused at load
    instead of overflowing the spacing or lot arithmetic of the running actor.
    """

    model_config = STRICT

    levels_each_side: Annotated[int, Field(ge=1, le=20)] = 5
    atr_period: Annotated[int, Field(ge=1, le=1000)] = 14
    atr_bar_s: Annotated[int, Field(ge=1, le=86_400)] = 900
    atr_multiplier: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.45
    take_profit_atr: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.5
    """Take-profit distance per leg = take_profit_atr x ATR (points)."""
    risk_per_lot: Annotated[Decimal, Field(gt=0, le=1_000_000, allow_inf_nan=False)] = Decimal(150)
    """R, dollars of 1-ATR risk per base lot."""
    pyramid_alpha: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.2
    max_lot: Annotated[int, Field(ge=1, le=1000)] = 3
    min_spacing_ticks: Annotated[int, Field(ge=1, le=100_000)] = 4
    rebuild_shift_spacings: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.0
    surge_ratio: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.5
    """ATR above surge_ratio x its slow EMA = volatility surge."""
    surge_lot_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    surge_spacing_factor: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 1.5
    surge_ema_bars: Annotated[int, Field(ge=1, le=10_000)] = 20
    recalc_interval_s: Annotated[int, Field(ge=1, le=86_400)] = 60


@dataclass(frozen=True)
class GridConfig:
    """Grid parameters as the handler uses them (built from :class:`GridParams` by :func:`build`)."""

    levels_each_side: int = 5
    atr_period: int = 14
    atr_bar_s: int = 900
    atr_multiplier: float = 0.45
    take_profit_atr: float = 0.5
    risk_per_lot: float = 150.0
    pyramid_alpha: float = 0.2
    max_lot: int = 3
    min_spacing_ticks: int = 4
    rebuild_shift_spacings: float = 1.0
    surge_ratio: float = 1.5
    surge_lot_factor: float = 0.5
    surge_spacing_factor: float = 1.5
    surge_ema_bars: int = 20
    mid_bar_s: int = 60
    denial_backoff_s: int = 60
    denial_backoff_max_s: int = 900


@dataclass
class Slot:
    """A working grid order: an entry at ``level`` (negative = buy side) or its take-profit."""

    kind: str  # "entry" | "tp"
    level: int
    side: Side
    qty: int
    price: Decimal
    filled: int = 0
    trade_ids: list[str] = field(default_factory=list)  # fills applied (a fill delivered twice is ignored)


class GridStrategy:
    """Grid handler for one instrument. ``handle(msg) -> Out``; state snapshot via ``snapshot()``.

    Args:
        instrument: e.g. ``"MES"``.
        strategy_id: our actor name, prefix of every client order id.
        config: :class:`GridConfig`.
        ids: client order id source.
        calendar: session rules (flatten margin).
    """

    def __init__(self, instrument: str, strategy_id: str, config: GridConfig, ids: IdGenerator,
                 calendar: SessionCalendar | None = None) -> None:
        self.instrument = instrument
        self.spec = get_instrument(instrument)
        self.strategy_id = strategy_id
        self.cfg = config
        self.ids = ids
        self.calendar = calendar or SessionCalendar()
        self.atr = WilderATR(config.atr_period)
        self.atr_slow = EMA(config.surge_ema_bars)
        self.vwap = SessionVWAP()
        self.vwap_day: dt.date | None = None  # trading day the VWAP is anchored to
        self.last: Decimal | None = None
        self.last_tick_ns = 0  # time of the trade behind ``last`` when it came from a tick
        self.risk_state = RiskState.ACTIVE
        self.position = 0
        self.mid: Decimal | None = None
        self.spacing: Decimal | None = None
        self.surge = False
        self.slots: dict[str, Slot] = {}  # client order id -> working slot
        self.pending_cancel: set[str] = set()
        self.unconfirmed: set[str] = set()  # entries sent to risk without its verdict yet (at most one per side)
        self.denied_until: dict[int, int] = {}  # level -> ts_ns before which it is not proposed again
        self.denied_streak: dict[int, int] = {}  # level -> denials in a row since the last fill
        self.counters = {"entries_filled": 0, "tps_filled": 0, "rebuilds": 0, "denied": 0}
        self._last_status: tuple[float, float, float] | None = None  # last StrategyStatus values sent
        self._shift = Decimal(str(config.rebuild_shift_spacings))
        self._sides = tuple(pair for n in range(1, config.levels_each_side + 1)
                            for pair in ((n, -n, Side.BUY), (n, n, Side.SELL)))  # (n, level, side), nearest first
        self._spacing_for: tuple[float | None, float | None, Decimal] | None = None
        """(ATR, slow ATR, spacing): :meth:`_target_spacing` of the last inputs (they change once
        per ATR bar, the spacing is asked on every mid bar)."""

    # ------------------------------------------------------------------ dispatch
    def handle(self, msg: Any) -> Out:
        # the message types in the order of how often they come (prints, bars, the clock, denials)
        if isinstance(msg, TradeTick):
            return self._on_tick(msg)
        if isinstance(msg, Bar):
            return self._on_bar(msg)
        if isinstance(msg, ClockTick):
            return self._on_time(msg.ts_ns)
        if isinstance(msg, OrderDenied):
            return self._on_order_gone(msg)
        if isinstance(msg, Fill):
            return self._on_fill(msg)
        if isinstance(msg, (OrderCancelled, OrderRejected)):
            return self._on_order_gone(msg)
        if isinstance(msg, OrderSubmitted):
            return self._on_submitted(msg)
        if isinstance(msg, OrderAccepted):
            return []
        if isinstance(msg, RiskStateChanged):
            return self._on_risk_state(msg)
        if isinstance(msg, ExposureUpdate):
            self.position = msg.qty(self.instrument)
            if self.position == 0:
                # inventory closed by risk (flatten): take-profits of it are moot
                return self._cancel(lambda s: s.kind == "tp", msg.ts_ns, "position flat")
            return []
        if isinstance(msg, WarmupBars):
            for bar in msg.bars:
                self._update_indicators(bar)
            return []
        raise RejectedMessage(f"{self.strategy_id}: unexpected message {type(msg).__name__}")

    # ------------------------------------------------------------------ indicators
    def _update_indicators(self, bar: Bar) -> None:
        if bar.instrument != self.instrument:
            return
        if bar.period_s == self.cfg.atr_bar_s:
            atr = self.atr.update(float(bar.high), float(bar.low), float(bar.close))
            if atr is not None:
                self.atr_slow.update(atr)
        if bar.period_s == self.cfg.mid_bar_s:
            day = trading_day(bar.start_ns)
            if day != self.vwap_day:
                self.vwap.reset()
                self.vwap_day = day
            self.vwap.update_bar(float(bar.high), float(bar.low), float(bar.close), bar.volume)
            if bar.end_ns > self.last_tick_ns:
                # a bar arrives after the tick that closed it: its close must not replace a newer
                # trade, or an entry is judged passive against a stale price and fills on arrival
                self.last = bar.close

    @property
    def ready(self) -> bool:
        return self.atr.value is not None

    def _target_spacing(self) -> Decimal:
        atr = self.atr.value or 0.0
        slow = self.atr_slow.value
        self.surge = bool(slow and atr > self.cfg.surge_ratio * slow)
        last = self._spacing_for
        if last is not None and last[0] == atr and last[1] == slow:
            return last[2]
        raw = atr * self.cfg.atr_multiplier * (self.cfg.surge_spacing_factor if self.surge else 1.0)
        spacing = max(self.spec.round_to_tick(raw), self.spec.tick_size * self.cfg.min_spacing_ticks)
        self._spacing_for = (atr, slow, spacing)
        return spacing

    def _target_mid(self) -> Decimal | None:
        if self.vwap.value is not None:
            return self.spec.round_to_tick(self.vwap.value)
        return self.last

    def lot_for_level(self, n: int) -> int:
        """Contracts for level ``n`` (1 = nearest the mid), per the sizer formula above."""
        atr = self.atr.value or 0.0
        dollar_vol = atr * float(self.spec.point_value)
        base = max(1, round(self.cfg.risk_per_lot / dollar_vol)) if dollar_vol > 0 else 1
        lot = int(round(base * (1 + self.cfg.pyramid_alpha * (n - 1))))
        if self.surge:
            lot = int(lot * self.cfg.surge_lot_factor)
        # no leg may risk more than R over one ATR (risk's per_trade_risk = R): the seed's rounding
        # and pyramiding would otherwise size legs that risk denies on every attempt
        cap = int(self.cfg.risk_per_lot // dollar_vol) if dollar_vol > 0 else self.cfg.max_lot
        return max(1, min(lot, cap, self.cfg.max_lot))

    # ------------------------------------------------------------------ events
    def _can_place(self, ts_ns: int) -> bool:
        return self._placing() and self.calendar.can_open(ts_ns)

    def _placing(self) -> bool:
        """:meth:`_can_place` but the trading window: warm, risk ACTIVE and a last price."""
        return self.ready and self.risk_state is RiskState.ACTIVE and self.last is not None

    def _on_tick(self, tick: TradeTick) -> Out:
        if tick.instrument != self.instrument:
            return []
        self.last = tick.price
        self.last_tick_ns = tick.ts_ns
        if self.mid is None and self._can_place(tick.ts_ns):
            return self._rebuild(tick.ts_ns)
        return []

    def _on_bar(self, bar: Bar) -> Out:
        self._update_indicators(bar)
        if bar.instrument != self.instrument or bar.period_s != self.cfg.mid_bar_s:
            return []
        ts = bar.ts_ns or bar.end_ns
        if not self.calendar.can_open(ts):
            return self._on_time(ts)  # the flatten window: entries go, nothing is placed
        if not self._placing():
            return []
        mid, spacing = self._target_mid(), self._target_spacing()
        if self.mid is None or self.spacing is None or mid is None:
            return self._rebuild(bar.ts_ns)
        shifted = abs(mid - self.mid) >= self.spacing * self._shift
        respaced = abs(spacing - self.spacing) >= self.spacing / 4
        if shifted or respaced:
            return self._rebuild(bar.ts_ns)
        # the status first: risk checks the entries that follow with this bar's ATR
        return self._status(bar.ts_ns) + self._place_missing(bar.ts_ns)

    def _on_time(self, ts_ns: int) -> Out:
        if not self.calendar.can_open(ts_ns):
            # flatten window: our entries go; risk flattens inventory and cancels take-profits
            out = self._cancel(lambda s: s.kind == "entry", ts_ns, "outside trading window")
            self.mid = None
            return out
        return []

    def _on_risk_state(self, msg: RiskStateChanged) -> Out:
        self.risk_state = msg.state
        if msg.state is not RiskState.ACTIVE:
            self.mid = None
            return self._cancel(lambda s: s.kind == "entry", msg.ts_ns, f"risk {msg.state.value}")
        return []

    def _on_fill(self, fill: Fill) -> Out:
        self.denied_until.clear()  # the position changed: what risk denied may pass now
        self.denied_streak.clear()
        slot = self.slots.get(fill.client_order_id)
        if slot is None or fill.trade_id in slot.trade_ids:
            return []  # not ours any more, or delivered again (reconciliation after a restart or gap)
        slot.trade_ids.append(fill.trade_id)
        slot.filled += fill.qty
        if fill.leaves_qty == 0 or slot.filled >= slot.qty:
            del self.slots[fill.client_order_id]
            self.pending_cancel.discard(fill.client_order_id)
        if slot.kind == "entry":
            self.counters["entries_filled"] += 1
            return self._take_profit(slot, fill)
        self.counters["tps_filled"] += 1
        if self.mid is not None and self._can_place(fill.ts_ns):
            return self._place_missing(fill.ts_ns)
        return []

    def _on_submitted(self, msg: OrderSubmitted) -> Out:
        """Risk passed an order (the router submits it): an entry's side may ask for its next level."""
        if msg.client_order_id in self.unconfirmed:
            self.unconfirmed.discard(msg.client_order_id)
            if self.mid is not None and self._can_place(msg.ts_ns):
                return self._place_missing(msg.ts_ns)
        return []

    def _on_order_gone(self, msg: Any) -> Out:
        slot = self.slots.pop(msg.client_order_id, None)
        if self.unconfirmed:
            self.unconfirmed.discard(msg.client_order_id)
        self.pending_cancel.discard(msg.client_order_id)
        if slot is not None and isinstance(msg, OrderDenied):
            self.counters["denied"] += 1
            if slot.kind == "entry":
                # risk said no: do not ask again on every event. The open levels farther out on the
                # same side carry at least as much risk and were not asked (one entry per side awaits
                # a verdict): they count as denied too, each its own streak longer
                ts = msg.ts_ns
                sign = 1 if slot.level > 0 else -1
                open_ = {lvl for _n, lvl, _s, _p in self._open_levels(ts)} if self.mid is not None else set()
                until = 0
                for n in range(abs(slot.level), self.cfg.levels_each_side + 1):
                    lvl = sign * n
                    if lvl == slot.level or lvl in open_:
                        streak = self.denied_streak[lvl] = self.denied_streak.get(lvl, 0) + 1
                        wait_s = min(self.cfg.denial_backoff_s * 2 ** (streak - 1), self.cfg.denial_backoff_max_s)
                        until = max(until, ts + wait_s * 1_000_000_000)
                    self.denied_until[lvl] = max(self.denied_until.get(lvl, 0), until)
        return []

    # ------------------------------------------------------------------ orders
    def _intent(self, side: Side, qty: int, price: Decimal, ts_ns: int, purpose: str, reduce_only: bool = False) -> OrderIntent:
        return OrderIntent(client_order_id=self.ids.next_id(self.strategy_id), strategy_id=self.strategy_id,
                           instrument=self.instrument, side=side, qty=qty, order_type=OrderType.LIMIT,
                           ts_ns=ts_ns, limit_price=price, reduce_only=reduce_only, purpose=purpose)

    def _take_profit(self, entry: Slot, fill: Fill) -> Out:
        atr = Decimal(str(self.atr.value or 0.0))
        dist = max(self.spec.round_to_tick(atr * Decimal(str(self.cfg.take_profit_atr))), self.spec.tick_size)
        price = fill.price + dist if fill.side is Side.BUY else fill.price - dist
        intent = self._intent(fill.side.opposite, fill.qty, price, fill.ts_ns, "grid-tp", reduce_only=True)
        self.slots[intent.client_order_id] = Slot("tp", entry.level, intent.side, fill.qty, price)
        return [(RISK, intent)]

    def _cancel(self, which, ts_ns: int, reason: str) -> Out:
        out: Out = []
        for coid, slot in self.slots.items():
            if which(slot) and coid not in self.pending_cancel:
                self.pending_cancel.add(coid)
                out.append((RISK, CancelOrder(coid, self.strategy_id, ts_ns, reason)))
        return out

    def _rebuild(self, ts_ns: int) -> Out:
        mid = self._target_mid()
        if mid is None:
            return []
        out = self._cancel(lambda s: s.kind == "entry", ts_ns, "grid rebuild")
        self.mid, self.spacing = mid, self._target_spacing()
        self.counters["rebuilds"] += 1
        return out + self._status(ts_ns) + self._place_missing(ts_ns)

    def _open_levels(self, ts_ns: int):
        """``(n, level, side, price)`` of each level of the current grid that an entry may go to
        now, nearest the mid first: no working order of its own (an entry being cancelled does
        not count), not waiting after a denial, and passive (a buy below the last trade, a sell
        above it). Needs a mid, a spacing and a last price."""
        assert self.mid is not None and self.spacing is not None and self.last is not None
        busy = {s.level for c, s in self.slots.items() if c not in self.pending_cancel or s.kind == "tp"}
        mid, spacing, last, denied_until = self.mid, self.spacing, self.last, self.denied_until
        for n, level, side in self._sides:
            if level in busy or (denied_until and ts_ns < denied_until.get(level, 0)):
                continue
            price = mid + spacing * level
            if price <= 0 or (side is Side.BUY and price >= last) or (side is Side.SELL and price <= last):
                continue
            yield n, level, side, price

    def _place_missing(self, ts_ns: int) -> Out:
        """Propose an entry on the nearest open level of each side (:meth:`_open_levels`) whose
        last entry has risk's verdict: the next one follows when risk passes this one
        (``OrderSubmitted``), so a denial stops the side before its farther levels are asked."""
        waiting = {slot.level > 0 for c in self.unconfirmed  # sides (True: sell) awaiting a verdict
                   if (slot := self.slots.get(c)) is not None and c not in self.pending_cancel}
        out: Out = []
        for n, level, side, price in self._open_levels(ts_ns):
            if (level > 0) in waiting:
                continue
            intent = self._intent(side, self.lot_for_level(n), price, ts_ns, "grid-entry")
            self.slots[intent.client_order_id] = Slot("entry", level, side, intent.qty, price)
            self.unconfirmed.add(intent.client_order_id)
            waiting.add(level > 0)
            out.append((RISK, intent))
        return out

    def _status(self, ts_ns: int) -> Out:
        """``StrategyStatus`` (ATR, spacing, grid mid) when one of them changed since the last one
        sent: three actors subscribe, and an unchanged status would only wake them."""
        values = (self.atr.value or 0.0, float(self.spacing or 0), float(self.mid or 0))
        if values == self._last_status:
            return []
        self._last_status = values
        return [(STATUS_TOPIC, StrategyStatus(self.strategy_id, self.instrument, ts_ns, atr=values[0],
                                              spacing=values[1], grid_mid=values[2]))]

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict:
        """JSON-safe state for the Redis mirror (indicators, grid, working slots)."""
        return {
            "atr": self.atr.snapshot(), "atr_slow": self.atr_slow.snapshot(), "vwap": self.vwap.snapshot(),
            "vwap_day": self.vwap_day.isoformat() if self.vwap_day else "", "last": str(self.last) if self.last is not None else None,
            "position": self.position, "mid": str(self.mid) if self.mid is not None else None,
            "spacing": str(self.spacing) if self.spacing is not None else None,
            "last_tick_ns": self.last_tick_ns,
            "slots": {c: [s.kind, s.level, s.side.value, s.qty, str(s.price), s.filled, list(s.trade_ids)]
                      for c, s in self.slots.items()},
            "stats": dict(self.counters),
        }

    @staticmethod
    def held_orders(snapshot: dict) -> dict[str, int]:
        """``{client order id: contracts filled}`` of the working slots in a :meth:`snapshot`
        (what the reconciler compares with the venue after a restart)."""
        return {coid: int(v[5]) for coid, v in (snapshot.get("slots") or {}).items()}

    def restore(self, d: dict) -> None:
        """Load a :meth:`snapshot`. Working slots are re-validated by reconciliation afterwards."""
        self.atr = WilderATR.restore(d["atr"])
        self.atr_slow = EMA.restore(d["atr_slow"])
        self.vwap = SessionVWAP.restore(d["vwap"])
        self.vwap_day = dt.date.fromisoformat(d["vwap_day"]) if d.get("vwap_day") else None
        self.last = Decimal(d["last"]) if d.get("last") else None
        self.position = int(d.get("position", 0))
        self.mid = Decimal(d["mid"]) if d.get("mid") else None
        self.spacing = Decimal(d["spacing"]) if d.get("spacing") else None
        self.last_tick_ns = int(d.get("last_tick_ns", 0))
        self.slots = {c: Slot(v[0], int(v[1]), Side(v[2]), int(v[3]), Decimal(v[4]), int(v[5]), list(v[6] if len(v) > 6 else []))
                      for c, v in d.get("slots", {}).items()}
        self.counters.update(d.get("stats", {}))

    def forget_orders(self, client_order_ids: list[str]) -> None:
        """Drop restored slots whose orders never reached the router."""
        for c in client_order_ids:
            self.slots.pop(c, None)

    def stats(self) -> dict[str, int]:
        """Entries and take-profits filled, rebuilds, denials."""
        return dict(self.counters)


def build(ctx: StrategyContext, p: GridParams) -> GridStrategy:
    """The grid on ``ctx.instruments[0]``."""
    cfg = GridConfig(levels_each_side=p.levels_each_side, atr_period=p.atr_period, atr_bar_s=p.atr_bar_s,
                     atr_multiplier=p.atr_multiplier, take_profit_atr=p.take_profit_atr,
                     risk_per_lot=float(p.risk_per_lot), pyramid_alpha=p.pyramid_alpha, max_lot=p.max_lot,
                     min_spacing_ticks=p.min_spacing_ticks, rebuild_shift_spacings=p.rebuild_shift_spacings,
                     surge_ratio=p.surge_ratio, surge_lot_factor=p.surge_lot_factor,
                     surge_spacing_factor=p.surge_spacing_factor, surge_ema_bars=p.surge_ema_bars,
                     mid_bar_s=min(60, p.recalc_interval_s))
    return GridStrategy(ctx.instruments[0], ctx.strategy_id, cfg, ctx.ids, ctx.calendar)


def _check(p: GridParams, instruments: tuple[str, ...], limits: RiskLimits) -> None:
    ptr = limits.per_trade_risk
    if ptr is not None and p.risk_per_lot > ptr:
        raise ValueError(f"risk_per_lot: {p.risk_per_lot} exceeds profile.per_trade_risk {ptr} "
                         "(a base lot would be denied by the per-trade risk check)")


PLUGIN = StrategyPlugin(kind="grid", params=GridParams, build=build, instruments=(1, 1),
                        bar_periods=lambda p: (p.atr_bar_s, min(60, p.recalc_interval_s)),
                        held_orders=GridStrategy.held_orders, check=_check,
                        summary=("entries_filled", "tps_filled"))
