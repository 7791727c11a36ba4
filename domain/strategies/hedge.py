"""Cross-asset hedge of the grid inventory (docs/reference/strategy-seeds.md#hedge-ratio,
#hedge-activation and #correlation-breakdown).

- hedge ratio h = rho x sigma_p / sigma_h on 1-min log returns over ``window`` bars (minimum-
  variance hedge ratio, Hull; = OLS beta of primary on hedge returns), clamped to
  [``min_ratio``, ``max_ratio``] = [0.5, 1.25] against noisy estimates.
- h is a ratio of *returns*, so it applies to notionals: hedge contracts =
  - round(q_p x h x (price_p x point_value_p) / (price_h x point_value_h)). One MES at 6,700 is
  $33,500 of index; one MNQ at 24,600 is $49,200, so 6 MES long with h = 0.9 gives 4 MNQ short.
- activation: the primary holds inventory and its price is at least ``activation_spacings``
  (1.5) x grid spacing away from the grid mid (docs/reference/strategy-seeds.md#runtime-flow,
  step 4). Deactivation (our choice, the seed is silent): the price is back within 1.0 x spacing
  of the mid, or the primary is flat; the hedge is then closed. Between the two thresholds the
  hedge is kept (hysteresis, no churn).
- correlation guard: if rho stays below ``low_corr`` (0.6) for ``low_corr_minutes`` the hedge
  target is multiplied by ``low_corr_factor`` (0.5) and an alert is raised
  (docs/reference/strategy-seeds.md#correlation-breakdown).
- orders: marketable limits (last +/- ``aggressive_ticks``) so that no market order is used outside
  an emergency flatten (docs/reference/strategy-seeds.md#order-rules); one hedge order at a time;
  an unfilled one is cancelled after ``order_timeout_s`` and the target re-evaluated on the next
  bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from domain.calendar import SessionCalendar
from domain.handler import RISK, WATCHDOG, IdGenerator, Out, RejectedMessage
from domain.indicators import RollingCorrelation, log_return
from domain.instruments import get_instrument
from domain.messages import (Alert, Bar, CancelOrder, ClockTick, ExposureUpdate, Fill, OrderAccepted, OrderCancelled,
                             OrderDenied, OrderIntent, OrderRejected, OrderSubmitted, OrderType, RiskState,
                             RiskStateChanged, Side, StrategyStatus, TradeTick, WarmupBars)
from domain.strategies.base import STRICT, StrategyContext, StrategyPlugin

NS = 1_000_000_000


class HedgeParams(BaseModel):
    """The hedge's ``params:`` section (defaults: docs/reference/strategy-seeds.md#hedge-ratio to
    #correlation-breakdown; our own choices: docs/strategies/grid-and-hedge.md, "Hedge").
    The entry's ``instruments`` are ``[primary, hedge]``: the instrument whose net position is
    hedged (the grid's) and the one traded.

    Every number is bounded: floats finite (``.inf`` / ``.nan`` refused), ratios at most 10,
    ``low_corr_minutes`` at most a day (1440), ``window`` at most 10,000 bars, ``bar_s`` at most a
    day, so a typo is refused at load instead of crashing the running actor."""

    model_config = STRICT

    activation_spacings: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.5
    min_ratio: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.5
    max_ratio: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 1.25
    window: Annotated[int, Field(ge=2, le=10_000)] = 100
    bar_s: Annotated[int, Field(gt=0, le=86_400)] = 60
    low_corr: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 0.6
    low_corr_minutes: Annotated[float, Field(gt=0, le=1440, allow_inf_nan=False)] = 15.0
    low_corr_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    rebalance_band: Annotated[int, Field(ge=0, le=10)] = 1
    min_hold_s: Annotated[int, Field(ge=0, le=14400)] = 600

    @model_validator(mode="after")
    def _ratio_order(self) -> "HedgeParams":
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio: {self.min_ratio} is above max_ratio {self.max_ratio}")
        return self


@dataclass(frozen=True)
class HedgeConfig:
    """Hedge parameters as the handler uses them (built from :class:`HedgeParams` by :func:`build`)."""

    primary: str = "MES"
    hedge: str = "MNQ"
    activation_spacings: float = 1.5
    deactivation_spacings: float = 1.0
    min_ratio: float = 0.5
    max_ratio: float = 1.25
    window: int = 100
    bar_s: int = 60
    low_corr: float = 0.6
    low_corr_minutes: float = 15.0
    low_corr_factor: float = 0.5
    aggressive_ticks: int = 2
    order_timeout_s: int = 60
    rebalance_band: int = 1
    min_hold_s: int = 600


def hedge_ratio(corr: float, vol_primary: float, vol_hedge: float, lo: float = 0.5, hi: float = 1.25) -> float:
    """h = rho x sigma_p / sigma_h clamped to [lo, hi]; 1.0 when the hedge vol is 0
    (docs/reference/strategy-seeds.md#hedge-ratio)."""
    if vol_hedge <= 0 or math.isnan(vol_hedge):
        return 1.0
    return max(lo, min(hi, corr * vol_primary / vol_hedge))


def hedge_contracts(primary_qty: int, ratio: float, price_p: Decimal, price_h: Decimal, primary: str, hedge: str) -> int:
    """Signed hedge contracts for ``primary_qty`` (opposite sign), converting notionals by point value."""
    pv_p = get_instrument(primary).point_value
    pv_h = get_instrument(hedge).point_value
    notional_ratio = float(price_p * pv_p) / float(price_h * pv_h)
    return -int(round(primary_qty * ratio * notional_ratio))


class HedgeManager:
    """Hedge handler: keeps the hedge leg at its target. ``handle(msg) -> Out``.

    Args:
        config: :class:`HedgeConfig`.
        ids: client order id source.
        calendar: session rules.
        strategy_id: actor name and client order id prefix.
        telemetry: send the watchdog a ``StrategyStatus`` (hedge ratio, correlation) after each
            bar of the primary (:attr:`domain.strategies.base.StrategyContext.telemetry`).
    """

    def __init__(self, config: HedgeConfig, ids: IdGenerator, calendar: SessionCalendar | None = None,
                 strategy_id: str = "hedge", telemetry: bool = True) -> None:
        self.strategy_id = strategy_id
        self.telemetry = telemetry
        self.cfg = config
        # the activation and deactivation distances, spacings, as :meth:`target` compares them
        self._activation = Decimal(str(config.activation_spacings))
        self._deactivation = Decimal(str(config.deactivation_spacings))
        self._legs = (config.primary, config.hedge)
        self.ids = ids
        self.calendar = calendar or SessionCalendar()
        self.spec = get_instrument(config.hedge)
        self.corr = RollingCorrelation(config.window)
        self.last_close: dict[str, Decimal] = {}
        self.pending_ret: dict[str, tuple[int, float]] = {}
        self.last: dict[str, Decimal] = {}
        self.positions: dict[str, int] = {}
        self.mid: Decimal | None = None
        self.spacing: Decimal | None = None
        self.active = False
        self.ratio = 1.0
        self.low_corr_since: int | None = None
        self.low_corr = False
        self._warm: dict[str, list[Bar]] = {}  # warm-up bars of bar_s per leg, until both legs arrived
        self.risk_state = RiskState.ACTIVE
        self.working: dict[str, int] = {}  # client order id -> placement ts
        self.activations = 0
        self.activated_ns = 0

    # ------------------------------------------------------------------ dispatch
    def handle(self, msg: Any) -> Out:
        # the message types in the order of how often they come (prints, bars, the clock)
        if isinstance(msg, TradeTick):
            self.last[msg.instrument] = msg.price
            return []
        if isinstance(msg, Bar):
            return self._on_bar(msg)
        if isinstance(msg, ClockTick):
            return self._expire(msg.ts_ns)
        if isinstance(msg, WarmupBars):
            return self._on_warmup(msg)
        if isinstance(msg, StrategyStatus):
            if msg.instrument == self.cfg.primary and msg.spacing > 0:
                self.mid = Decimal(str(msg.grid_mid))
                self.spacing = Decimal(str(msg.spacing))
            return []
        if isinstance(msg, ExposureUpdate):
            self.positions = dict(msg.positions)
            return self._rebalance(msg.ts_ns)
        if isinstance(msg, Fill):
            if msg.leaves_qty == 0:
                self.working.pop(msg.client_order_id, None)
            return []
        if isinstance(msg, (OrderCancelled, OrderRejected, OrderDenied)):
            self.working.pop(msg.client_order_id, None)
            return []
        if isinstance(msg, (OrderSubmitted, OrderAccepted)):
            return []
        if isinstance(msg, RiskStateChanged):
            self.risk_state = msg.state
            return []
        raise RejectedMessage(f"hedge: unexpected message {type(msg).__name__}")

    # ------------------------------------------------------------------ estimation
    def _on_warmup(self, msg: WarmupBars) -> Out:
        """History seeds the correlation and the last prices, never an order. The node sends one
        ``WarmupBars`` per instrument and period; returns pair up only minute by minute, so the bars
        of both legs are kept until both arrived, then fed in time order."""
        for b in msg.bars:
            if b.period_s == self.cfg.bar_s and b.instrument in self._legs:
                self._warm.setdefault(b.instrument, []).append(b)
        legs = self._legs
        if all(sym in self._warm for sym in legs):
            for b in sorted((b for sym in legs for b in self._warm[sym]),
                            key=lambda b: (b.start_ns, legs.index(b.instrument))):
                self._update_corr(b)
            for sym in legs:
                self.last[sym] = self._warm[sym][-1].close  # the newest close, not the first
            self._warm.clear()
        return []

    def _update_corr(self, bar: Bar) -> None:
        if bar.period_s != self.cfg.bar_s or bar.instrument not in self._legs:
            return
        prev = self.last_close.get(bar.instrument)
        self.last_close[bar.instrument] = bar.close
        self.last.setdefault(bar.instrument, bar.close)
        if prev is None:
            return
        self.pending_ret[bar.instrument] = (bar.start_ns, log_return(float(prev), float(bar.close)))
        p = self.pending_ret.get(self.cfg.primary)
        h = self.pending_ret.get(self.cfg.hedge)
        if p and h and p[0] == h[0]:  # both legs have a return for the same minute
            self.corr.update(p[1], h[1])
            self.pending_ret.clear()
            if self.corr.value is not None:
                self.ratio = hedge_ratio(self.corr.value, self.corr.vol_a or 0.0, self.corr.vol_b or 0.0,
                                         self.cfg.min_ratio, self.cfg.max_ratio)

    def _on_bar(self, bar: Bar) -> Out:
        self._update_corr(bar)
        if bar.period_s != self.cfg.bar_s or bar.instrument != self.cfg.primary:
            return []
        out: Out = []
        rho = self.corr.value
        ts = bar.ts_ns or bar.end_ns
        if rho is not None and rho < self.cfg.low_corr:
            self.low_corr_since = self.low_corr_since or ts
            if not self.low_corr and ts - self.low_corr_since >= self.cfg.low_corr_minutes * 60 * NS:
                self.low_corr = True
                out.append((WATCHDOG, Alert("warning", "hedge-low-correlation",
                                            f"{self.cfg.primary}/{self.cfg.hedge} correlation {rho:.2f} < {self.cfg.low_corr} "
                                            f"for {self.cfg.low_corr_minutes} min: hedge halved", ts)))
        else:
            self.low_corr_since, self.low_corr = None, False
        out += self._expire(ts)
        out += self._rebalance(ts)
        # telemetry for the watchdog's metrics alone: the status topic's readers (risk, this
        # actor) read a grid's ATR, mid and spacing, which this status does not carry
        if self.telemetry:
            out.append((WATCHDOG, StrategyStatus(self.strategy_id, self.cfg.hedge, ts, hedge_ratio=self.ratio,
                                                 correlation=rho or 0.0)))
        return out

    # ------------------------------------------------------------------ hedging
    def target(self, ts_ns: int = 0) -> int:
        """Signed hedge contracts wanted at ``ts_ns`` (0 when inactive).

        Activation at ``activation_spacings`` from the grid mid
        (docs/reference/strategy-seeds.md#hedge-activation); deactivation only below
        ``deactivation_spacings`` (hysteresis) and not within ``min_hold_s`` of the activation (our
        anti-churn choice, docs/strategies/grid-and-hedge.md, "Hedge"); a flat grid ends the hedge
        at once.
        """
        q_p = self.positions.get(self.cfg.primary, 0)
        p_p, p_h = self.last.get(self.cfg.primary), self.last.get(self.cfg.hedge)
        if q_p == 0 or self.mid is None or not self.spacing or p_p is None or p_h is None:
            self.active = False
            return 0
        distance = abs(p_p - self.mid) / self.spacing
        if not self.active and distance >= self._activation:
            self.active = True
            self.activations += 1
            self.activated_ns = ts_ns
        elif (self.active and distance < self._deactivation
              and ts_ns - self.activated_ns >= self.cfg.min_hold_s * NS):
            self.active = False
        if not self.active:
            return 0
        ratio = self.ratio * (self.cfg.low_corr_factor if self.low_corr else 1.0)
        return hedge_contracts(q_p, ratio, p_p, p_h, self.cfg.primary, self.cfg.hedge)

    def _rebalance(self, ts_ns: int) -> Out:
        if self.working:
            return []
        have = self.positions.get(self.cfg.hedge, 0)
        can_open = self.calendar.can_open(ts_ns)
        want = self.target(ts_ns) if can_open else 0
        delta = want - have
        if delta == 0:
            return []
        same_way = have != 0 and (want == 0 or (want > 0) == (have > 0))
        if can_open and self.active and same_way and abs(delta) <= self.cfg.rebalance_band:
            return []  # while hedged, resize only beyond the band: a rounding flip costs fees, not risk
        reduces = abs(want) < abs(have) and (want == 0 or (want > 0) == (have > 0))
        if self.risk_state is RiskState.HALTED or (self.risk_state is RiskState.REDUCING and not reduces):
            return []
        last = self.last.get(self.cfg.hedge)
        if last is None:
            return []
        side = Side.for_qty(delta)
        price = last + side.sign * self.spec.tick_size * self.cfg.aggressive_ticks
        intent = OrderIntent(client_order_id=self.ids.next_id(self.strategy_id), strategy_id=self.strategy_id,
                             instrument=self.cfg.hedge, side=side, qty=abs(delta), order_type=OrderType.LIMIT,
                             ts_ns=ts_ns, limit_price=price, reduce_only=reduces,
                             purpose="hedge-open" if not reduces else "hedge-reduce")
        self.working[intent.client_order_id] = ts_ns
        return [(RISK, intent)]

    def _expire(self, ts_ns: int) -> Out:
        if not self.working:
            return []
        out: Out = []
        for coid, placed in list(self.working.items()):
            if ts_ns - placed >= self.cfg.order_timeout_s * NS:
                self.working[coid] = ts_ns  # do not re-send the cancel every tick
                out.append((RISK, CancelOrder(coid, self.strategy_id, ts_ns, "hedge order timeout")))
        return out

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict:
        return {"corr": self.corr.snapshot(), "last_close": {k: str(v) for k, v in self.last_close.items()},
                "active": self.active, "activated_ns": self.activated_ns, "ratio": self.ratio, "activations": self.activations,
                "working": dict(self.working), "mid": str(self.mid) if self.mid is not None else None,
                "spacing": str(self.spacing) if self.spacing is not None else None,
                "low_corr": self.low_corr, "low_corr_since": self.low_corr_since}

    def restore(self, d: dict) -> None:
        self.corr = RollingCorrelation.restore(d["corr"])
        self.last_close = {k: Decimal(v) for k, v in d.get("last_close", {}).items()}
        self.active = bool(d.get("active"))
        self.activated_ns = int(d.get("activated_ns", 0))
        self.ratio = float(d.get("ratio", 1.0))
        self.activations = int(d.get("activations", 0))
        self.working = {k: int(v) for k, v in d.get("working", {}).items()}
        self.mid = Decimal(d["mid"]) if d.get("mid") else None
        self.spacing = Decimal(d["spacing"]) if d.get("spacing") else None
        self.low_corr = bool(d.get("low_corr", False))
        self.low_corr_since = d.get("low_corr_since")

    def forget_orders(self, client_order_ids: list[str]) -> None:
        """Drop restored working orders that never reached the router."""
        for c in client_order_ids:
            self.working.pop(c, None)

    def stats(self) -> dict[str, int]:
        """Hedge activations."""
        return {"activations": self.activations}


def build(ctx: StrategyContext, p: HedgeParams) -> HedgeManager:
    """The hedge of ``ctx.instruments[0]``'s net position with ``ctx.instruments[1]``."""
    cfg = HedgeConfig(primary=ctx.instruments[0], hedge=ctx.instruments[1], activation_spacings=p.activation_spacings,
                      min_ratio=p.min_ratio, max_ratio=p.max_ratio, window=p.window, bar_s=p.bar_s,
                      low_corr=p.low_corr, low_corr_minutes=p.low_corr_minutes,
                      low_corr_factor=p.low_corr_factor, rebalance_band=p.rebalance_band, min_hold_s=p.min_hold_s)
    return HedgeManager(cfg, ctx.ids, ctx.calendar, strategy_id=ctx.strategy_id, telemetry=ctx.telemetry)


def _check(p: HedgeParams, instruments: tuple[str, ...], limits: Any) -> None:
    if instruments[0] == instruments[1]:
        raise ValueError(f"instruments: the hedge instrument {instruments[1]} must differ from the primary "
                         f"{instruments[0]}")


def _held(snapshot: dict) -> dict[str, int]:
    """A hedge order is held until done, so its filled quantity counts as 0."""
    return {coid: 0 for coid in (snapshot.get("working") or {})}


PLUGIN = StrategyPlugin(kind="hedge", params=HedgeParams, build=build, instruments=(2, 2), wants_status=True,
                        bar_periods=lambda p: (p.bar_s,), held_orders=_held, check=_check, summary=("activations",))
