"""HMM regime + session VWAP strategy (seed 002, /work/shared/seeds/002_2613e4c741f6e65a.txt
sections 2.5-2.8; restated with our choices in docs/strategies/regime.md).

Per bar, for the one instrument it trades (MNQ by default), all times America/New_York (ET) as in
the seed, sessions and the flat time from :mod:`domain.calendar` (America/Chicago):

- **Regime** (5-minute bars): the seed's features (:class:`domain.regime.features.FeatureBuilder`)
  -> the causal forward filter of the trained HMM (:class:`domain.regime.filter.ForwardFilter`,
  one O(states^2) update per bar; never hmmlearn's forward-backward) -> the label of the most
  probable state (``strong_bull``, ``bull``, ``neutral``, ``bear``, ``crash``).
- **Macro bias** (30-minute bars): EMA(``macro_ema_bars``) of closes; ``bull`` if the last close is
  above ``EMA x (1 + macro_band_pct/100)``, ``bear`` below ``EMA x (1 - band)``, else ``neutral``.
- **VWAP** (1-minute bars): session VWAP of the typical price anchored at ``session_open_et``
  (09:30 ET); the band width is the population std of the last ``band_window`` typical prices of
  the session (seed config ``vwap.std_dev_window: 20``); bands = VWAP +/- std.
- **Signals** on each closed 1-minute bar (seed 2.5, symmetric), entries only while flat:
  strong_bull / bull: low <= VWAP and a bullish bar -> long unless the bias is bear;
  neutral: band width (2 std) >= ``min_neutral_range_points``, close below the lower band on a
  bullish bar -> long, above the upper band on a bearish bar -> short, target capped at the
  distance to VWAP; bear: high >= VWAP and a bearish bar -> short unless the bias is bull;
  crash: lower wick > 60 % of the range -> long (exhaustion bounce). Stop ticks per regime,
  target ticks = round(stop x ``rrr``).
- **Filters** (seed 2.6, 2.7): no entry within ``blackout_before_min`` / ``blackout_after_min``
  of a ``high_impact_times_et`` time; size = max(1, floor(base x regime multiplier x VIX
  multiplier)), the VIX multiplier 0.5 when the previous day's VIX close (a daily file, or a fixed
  value) is above ``vix_threshold``; no entry after ``max_consecutive_losses`` losing trades in a
  day or once the strategy's own day P&L is at or below minus the smaller of ``daily_loss_limit``
  and the profile's daily loss cap; entries only between ``session_open_et`` and
  ``last_entry_et`` and inside risk's trading window.
- **Orders**: the entry is a market order with its stop and target. ``brackets: native`` (default):
  the entry carries a :class:`domain.messages.Bracket` and the venue places both legs when it fills
  (ProjectX ``stopLossBracket`` / ``takeProfitBracket``; the simulated venue the same), one OCO
  pair the venue itself settles. If the venue refuses native brackets (a ProjectX account in
  Position Brackets mode), the strategy says so (a warning alert) and manages the bracket itself
  from then on. ``brackets: managed``, or after that refusal: when the entry fills, a protective
  stop (STOP) and a target (LIMIT) go out together as a managed OCO (purposes ``bracket-stop`` /
  ``bracket-target``, both reduce-only), and when one fills the strategy cancels the other. Either
  way a protective order that risk denies or the venue rejects, or native legs not confirmed
  within ``native_leg_timeout_s`` of the entry's fill, are replaced by a market exit (the legs
  cancelled first), so no position is left without its stop.

Money in dollars, prices in points, sizes in contracts, times epoch ns UTC.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import gzip
import math
from collections import deque
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator

from domain.calendar import SessionCalendar, trading_day
from domain.handler import IdGenerator, Out, RejectedMessage
from domain.indicators import EMA, SessionVWAP
from domain.instruments import INSTRUMENTS, get_instrument
from domain.messages import (Bar, RiskState, WarmupBars)
from domain.risk_rules import RiskLimits
from domain.strategies.base import STRICT, OwnPosition, StrategyContext, StrategyPlugin
from domain.strategies.bracket import BracketTrader

ROOT = Path(__file__).resolve().parents[2]
ET = ZoneInfo("America/New_York")
REGIMES = ("strong_bull", "bull", "neutral", "bear", "crash")
Regime = Literal["strong_bull", "bull", "neutral", "bear", "crash"]
_SEEN_TRADES = 64


def _hhmm(v: str) -> str:
    h, m = v.split(":")
    if not (0 <= int(h) < 24 and 0 <= int(m) < 60):
        raise ValueError(f"{v!r} is not a HH:MM time")
    return f"{int(h):02d}:{int(m):02d}"


class RegimeVwapParams(BaseModel):
    """The ``params:`` section of a ``regime_vwap`` entry (defaults: seed 002 section 3).

    ``model``: the trained model's folder (``scripts/train_regime.py``), relative to the repository
    root unless absolute. ``labels``: optional override ``{state index: label}`` of the model's
    labels. ``vix``: a number (the VIX level to assume) or a daily CSV path
    (``DATE,...,CLOSE``; default the bundled excerpt ``data/vix/VIX_daily.csv.gz``).
    """

    model_config = STRICT

    model: str = "data/models/regime-mnq-5min"
    labels: dict[int, Regime] | None = None
    base_size: Annotated[int, Field(ge=1, le=100)] = 1
    rrr: Annotated[float, Field(gt=0, le=20, allow_inf_nan=False)] = 1.8
    stops: dict[Regime, Annotated[int, Field(ge=1, le=400)]] = Field(
        default_factory=lambda: {"strong_bull": 10, "bull": 8, "neutral": 6, "bear": 8, "crash": 6})
    size_multipliers: dict[Regime, Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)]] = Field(
        default_factory=lambda: {"strong_bull": 1.0, "bull": 1.0, "neutral": 0.75, "bear": 1.0, "crash": 0.5})
    min_neutral_range_points: Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)] = 8.0
    neutral_needs_neutral_bias: bool = False
    """Decision point 8: mean reversion only when the macro bias is neutral (seed: no restriction)."""
    regime_bar_s: Literal[300] = 300
    macro_bar_s: Literal[1800, 3600] = 1800
    macro_ema_bars: Annotated[int, Field(ge=1, le=1000)] = 20
    macro_band_pct: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.1
    band_window: Annotated[int, Field(ge=2, le=1000)] = 20
    session_open_et: str = "09:30"
    last_entry_et: str = "15:45"
    high_impact_times_et: tuple[str, ...] = ("08:30", "10:00", "14:00", "14:30")
    blackout_before_min: Annotated[int, Field(ge=0, le=240)] = 5
    blackout_after_min: Annotated[int, Field(ge=0, le=240)] = 10
    vix: float | str = "data/vix/VIX_daily.csv.gz"
    vix_threshold: Annotated[float, Field(gt=0, le=200, allow_inf_nan=False)] = 30.0
    vix_multiplier: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    vix_unknown_multiplier: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    """Size multiplier when no VIX close is known for the previous 5 days (the careful side)."""
    brackets: Literal["native", "managed"] = "native"
    """Decision point 9: the venue's own OCO bracket on the entry, or one the strategy manages."""
    native_leg_timeout_s: Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)] = 5.0
    """Event-time seconds after the entry's fill within which both native legs must be confirmed."""
    max_consecutive_losses: Annotated[int, Field(ge=1, le=100)] = 3
    daily_loss_limit: Annotated[Decimal, Field(gt=0, le=1_000_000, allow_inf_nan=False)] = Decimal(750)

    @field_validator("session_open_et", "last_entry_et")
    @classmethod
    def _time(cls, v: str) -> str:
        return _hhmm(v)

    @field_validator("high_impact_times_et")
    @classmethod
    def _times(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_hhmm(t) for t in v)


def load_vix(path: Path) -> dict[str, float]:
    """``{ISO date: close}`` from a daily VIX CSV (``DATE`` and ``CLOSE`` columns; ``.gz`` read as
    gzip). Rows without a number are skipped. Raises OSError / ValueError (no such columns)."""
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, float] = {}
    with opener(path, "rt", newline="") as f:
        rows = csv.DictReader(f)
        if not rows.fieldnames or "DATE" not in rows.fieldnames or "CLOSE" not in rows.fieldnames:
            raise ValueError(f"{path}: a VIX file needs DATE and CLOSE columns, found {rows.fieldnames}")
        for r in rows:
            try:
                v = float(r["CLOSE"])
            except (TypeError, ValueError):
                continue
            if math.isfinite(v) and v > 0:
                out[r["DATE"][:10]] = v
    return out


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


class RegimeVwapStrategy(BracketTrader):
    """Regime + VWAP handler for one instrument; ``handle(msg) -> Out`` (module docstring).

    Args:
        instrument: the traded symbol (MNQ by default in config/regime.yaml).
        strategy_id: actor name and client order id prefix.
        params: :class:`RegimeVwapParams`.
        ids: client order id source.
        calendar: session rules (trading window, America/Chicago).
        limits: the account's risk limits (the daily loss cap bounds ``daily_loss_limit``).
        model: the loaded :class:`domain.regime.model.RegimeModel`.
        vix: ``{ISO date: VIX close}`` or a fixed level.
    """

    def __init__(self, instrument: str, strategy_id: str, params: RegimeVwapParams, ids: IdGenerator,
                 calendar: SessionCalendar, limits: RiskLimits, model: Any, vix: dict[str, float] | float) -> None:
        from domain.regime.features import FeatureBuilder
        from domain.regime.filter import ForwardFilter
        self.instrument = instrument
        self.spec = get_instrument(instrument)
        self.strategy_id = strategy_id
        self.p = params
        self.ids = ids
        self.calendar = calendar
        self.model = model
        self.labels = dict(enumerate(model.labels))
        if params.labels:
            self.labels.update(params.labels)
        self.features = FeatureBuilder(tuple(model.features))
        self.filter = ForwardFilter(model)
        self.regime: str | None = None
        self.macro = EMA(params.macro_ema_bars)
        self.macro_close: float | None = None
        self.vwap = SessionVWAP()
        self.tps: deque[float] = deque(maxlen=params.band_window)
        self.session: str = ""
        self.vix = vix
        cap = limits.daily_loss_cap
        self.day_limit = min(params.daily_loss_limit, cap) if cap is not None else params.daily_loss_limit
        self.book = OwnPosition(strategy_id, instrument, _SEEN_TRADES)
        self.risk_state = RiskState.ACTIVE
        # the trade in progress: entry / stop / target order ids, plan and fills
        self.trade: dict[str, Any] | None = None
        self.native_ok = params.brackets == "native"  # False once the venue refused native brackets
        self.day = ""
        self.day_pnl = Decimal(0)
        self.losses_in_row = 0
        self.counters: dict[str, int] = {"signals": 0, "entries": 0, "stops": 0, "targets": 0, "exits": 0,
                                         "denied": 0, "blackout": 0, "bias_blocked": 0,
                                         "flattened": 0, "legs_missing": 0}
        self.by_regime: dict[str, list] = {}  # regime -> [trades, wins, net $]

    # ------------------------------------------------------------------ dispatch
    def handle(self, msg: Any) -> Out:
        if isinstance(msg, Bar):
            return self._on_bar(msg)
        if isinstance(msg, WarmupBars):
            if msg.instrument == self.instrument:
                for bar in msg.bars:
                    self._update_indicators(bar)
            return []
        out = self.bracket_event(msg)
        if out is not None:
            return out
        raise RejectedMessage(f"{self.strategy_id}: unexpected message {type(msg).__name__}")

    # ------------------------------------------------------------------ indicators
    def _update_indicators(self, bar: Bar) -> None:
        if bar.instrument != self.instrument:
            return
        if bar.period_s == self.p.regime_bar_s:
            x = self.features.update(bar)
            if x is not None:
                probs = self.filter.update(x)
                self.regime = self.labels.get(int(max(range(len(probs)), key=lambda i: probs[i])))
        elif bar.period_s == self.p.macro_bar_s:
            self.macro.update(float(bar.close))
            self.macro_close = float(bar.close)
        elif bar.period_s == 60:
            local = dt.datetime.fromtimestamp(bar.start_ns / 1e9, ET)
            key = local.date().isoformat() if local.strftime("%H:%M") >= self.p.session_open_et else \
                (local.date() - dt.timedelta(days=1)).isoformat()
            if key != self.session:  # the session (VWAP anchor) starts at session_open_et, ET
                self.session = key
                self.vwap.reset()
                self.tps.clear()
            tp = (float(bar.high) + float(bar.low) + float(bar.close)) / 3.0
            self.vwap.update(tp, bar.volume)
            self.tps.append(tp)

    def indicator_series(self, bars: list[Bar]) -> list[tuple[int, str | None, float | None, float | None,
                                                              float | None]]:
        """Feed ``bars`` (1-, 5- and 30-minute bars of the instrument, any order) through this
        strategy's own indicators in order of their close, and return at each 1-minute close
        ``(end_ns, regime, VWAP, lower band, upper band)`` (points; bands None until the window
        is full). For charts (infra/reporting.py); sends no order."""
        out = []
        for bar in sorted(bars, key=lambda b: (b.end_ns, b.period_s)):
            self._update_indicators(bar)
            if bar.period_s == 60 and bar.instrument == self.instrument:
                vw, sd = self.vwap.value, self.band_std()
                out.append((bar.end_ns, self.regime, vw, vw - sd if vw is not None and sd is not None else None,
                            vw + sd if vw is not None and sd is not None else None))
        return out

    @property
    def bias(self) -> str:
        """Macro bias from the 30-minute EMA: ``bull`` / ``bear`` / ``neutral`` (seed 2.6)."""
        ema, close = self.macro.value, self.macro_close
        if ema is None or close is None:
            return "neutral"
        band = self.p.macro_band_pct / 100
        return "bull" if close > ema * (1 + band) else "bear" if close < ema * (1 - band) else "neutral"

    def band_std(self) -> float | None:
        """Population std of the session's last ``band_window`` typical prices (points), None
        until the window is full."""
        if len(self.tps) < self.p.band_window:
            return None
        m = sum(self.tps) / len(self.tps)
        return math.sqrt(sum((t - m) ** 2 for t in self.tps) / len(self.tps))

    # ------------------------------------------------------------------ signal
    def signal(self, bar: Bar) -> tuple[int, int, int, str] | None:
        """The seed's signal on a closed 1-minute bar: ``(direction +1/-1, stop ticks, target
        ticks, reason)`` or None. Uses the current regime, VWAP, band and bias."""
        regime, vw, sd = self.regime, self.vwap.value, self.band_std()
        if regime not in REGIMES or vw is None:
            return None
        o, h, lo, c = float(bar.open), float(bar.high), float(bar.low), float(bar.close)
        stop = self.p.stops[regime]
        target = round(stop * self.p.rrr)
        bias = self.bias
        if regime in ("strong_bull", "bull"):
            if lo <= vw and c > o:
                if bias == "bear":
                    self.counters["bias_blocked"] += 1
                    return None
                return 1, stop, target, f"{regime}_pullback"
        elif regime == "neutral":
            if sd is None or 2 * sd < self.p.min_neutral_range_points:
                return None
            if self.p.neutral_needs_neutral_bias and bias != "neutral":
                self.counters["bias_blocked"] += 1
                return None
            tick = float(self.spec.tick_size)
            to_vwap = max(1, int(abs(vw - c) / tick))
            if c < vw - sd and c > o:
                return 1, stop, min(target, to_vwap), "neutral_mean_rev_long"
            if c > vw + sd and c < o:
                return -1, stop, min(target, to_vwap), "neutral_mean_rev_short"
        elif regime == "bear":
            if h >= vw and c < o:
                if bias == "bull":
                    self.counters["bias_blocked"] += 1
                    return None
                return -1, stop, target, "bear_rally_fade"
        elif regime == "crash":
            rng = h - lo
            if rng > 0 and (c - lo) / rng > 0.6:
                return 1, stop, target, "crash_exhaustion_bounce"
        return None

    def in_blackout(self, ts_ns: int) -> bool:
        """Within ``blackout_before_min`` before / ``blackout_after_min`` after a high-impact time (ET)."""
        local = dt.datetime.fromtimestamp(ts_ns / 1e9, ET)
        minute = local.hour * 60 + local.minute
        for t in self.p.high_impact_times_et:
            hh, mm = t.split(":")
            event = int(hh) * 60 + int(mm)
            if event - self.p.blackout_before_min <= minute < event + self.p.blackout_after_min:
                return True
        return False

    def vix_multiplier(self, ts_ns: int) -> float:
        """0.5 (``vix_multiplier``) when the previous trading day's VIX close is above the
        threshold, 1.0 below; ``vix_unknown_multiplier`` when no close of the 5 days before is known."""
        if isinstance(self.vix, (int, float)):
            level: float | None = float(self.vix)
        else:
            day = dt.datetime.fromtimestamp(ts_ns / 1e9, ET).date()
            level = next((self.vix[d.isoformat()] for d in (day - dt.timedelta(days=k) for k in range(1, 6))
                          if d.isoformat() in self.vix), None)
        if level is None:
            return self.p.vix_unknown_multiplier
        return self.p.vix_multiplier if level > self.p.vix_threshold else 1.0

    def size(self, regime: str, ts_ns: int) -> int:
        """Contracts: ``max(1, floor(base x regime multiplier x VIX multiplier))`` (seed 2.7)."""
        return max(1, math.floor(self.p.base_size * self.p.size_multipliers[regime] * self.vix_multiplier(ts_ns)))

    # ------------------------------------------------------------------ bars
    def _on_bar(self, bar: Bar) -> Out:
        if bar.instrument != self.instrument:
            return []
        self._update_indicators(bar)
        if bar.period_s != 60:
            return []
        ts = bar.ts_ns or bar.end_ns
        day = trading_day(ts).isoformat()
        if day != self.day:
            self.day, self.day_pnl, self.losses_in_row = day, Decimal(0), 0
        if self.trade is not None or self.book.qty != 0 or not self._can_enter(ts):
            return []
        sig = self.signal(bar)
        if sig is None:
            return []
        self.counters["signals"] += 1
        if self.in_blackout(ts):
            self.counters["blackout"] += 1
            return []
        direction, stop, target, reason = sig
        regime = self.regime or ""
        qty = self.size(regime, ts)
        return self.open_trade(direction, qty, stop, target, ts, f"regime-entry {reason}", tag=f"; regime={regime}",
                               exit_prefix="regime-exit", regime=regime, reason=reason)

    def _can_enter(self, ts: int) -> bool:
        local = dt.datetime.fromtimestamp(ts / 1e9, ET).strftime("%H:%M")
        return (self.regime is not None and self.risk_state is RiskState.ACTIVE and self.calendar.can_open(ts)
                and self.p.session_open_et <= local < self.p.last_entry_et
                and self.losses_in_row < self.p.max_consecutive_losses and self.day_pnl > -self.day_limit)

    def _on_trade_closed(self, t: dict[str, Any], pnl: Decimal) -> None:
        """The trade is over: day P&L, losing streak and the per-regime table."""
        self.day_pnl += pnl
        self.losses_in_row = self.losses_in_row + 1 if pnl < 0 else 0
        row = self.by_regime.setdefault(t["regime"], [0, 0, "0"])
        row[0] += 1
        row[1] += 1 if pnl > 0 else 0
        row[2] = str(Decimal(row[2]) + pnl)

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict:
        """JSON-safe state: features, filter, indicators, the trade in progress, day counters."""
        return {"features": self.features.snapshot(), "filter": self.filter.snapshot(), "regime": self.regime,
                "macro": self.macro.snapshot(), "macro_close": self.macro_close, "vwap": self.vwap.snapshot(),
                "tps": list(self.tps), "session": self.session, **self.book.snapshot(),
                "trade": dict(self.trade) if self.trade else None, "day": self.day, "day_pnl": str(self.day_pnl),
                "losses_in_row": self.losses_in_row, "stats": dict(self.counters), "native_ok": self.native_ok,
                "by_regime": {k: list(v) for k, v in self.by_regime.items()}}

    def restore(self, d: dict) -> None:
        """Load a :meth:`snapshot`; working orders are brought up to date by reconciliation."""
        self.features = type(self.features).restore(d["features"])
        self.filter.restore(d["filter"])
        self.regime = d.get("regime")
        self.macro = EMA.restore(d["macro"])
        self.macro_close = d.get("macro_close")
        self.vwap = SessionVWAP.restore(d["vwap"])
        self.tps = deque((float(x) for x in d.get("tps", [])), maxlen=self.p.band_window)
        self.session = d.get("session", "")
        self.book.restore(d)
        self.trade = dict(d["trade"]) if d.get("trade") else None
        self.day = d.get("day", "")
        self.day_pnl = Decimal(d.get("day_pnl", "0"))
        self.losses_in_row = int(d.get("losses_in_row", 0))
        self.native_ok = bool(d.get("native_ok", self.p.brackets == "native")) and self.p.brackets == "native"
        self.counters.update({k: int(v) for k, v in d.get("stats", {}).items()})
        self.by_regime = {k: list(v) for k, v in d.get("by_regime", {}).items()}

    def stats(self) -> dict[str, int]:
        """Signals, entries, stops / targets / market exits filled, denials, blackout skips, bias blocks."""
        return dict(self.counters)


def _mtime(path: Path) -> int:
    """Newest modification time (ns) of a file, or of the files in a folder; 0 when missing."""
    try:
        files = [f for f in path.iterdir() if f.is_file()] if path.is_dir() else [path]
        return max((f.stat().st_mtime_ns for f in files), default=0)
    except OSError:
        return 0


@functools.lru_cache(maxsize=8)
def _load_files(model: Path, _model_mtime: int, vix: Path | float, _vix_mtime: int
                ) -> tuple[Any, dict[str, float] | float]:
    """The model and the VIX closes, read once per (path, modification time): config validation,
    the strategy's build, the report's chart and every run of a sweep worker share them (the model
    is immutable; the VIX mapping is only read)."""
    from domain.regime.model import load
    return load(model), vix if isinstance(vix, float) else load_vix(vix)


def _load(p: RegimeVwapParams) -> tuple[Any, dict[str, float] | float]:
    model = _resolve(p.model)
    vix: Path | float = float(p.vix) if isinstance(p.vix, (int, float)) else _resolve(p.vix)
    return _load_files(model, _mtime(model), vix, 0 if isinstance(vix, float) else _mtime(vix))


def build(ctx: StrategyContext, p: RegimeVwapParams) -> RegimeVwapStrategy:
    """The strategy on ``ctx.instruments[0]`` with the model and VIX file of ``p``."""
    model, vix = _load(p)
    return RegimeVwapStrategy(ctx.instruments[0], ctx.strategy_id, p, ctx.ids, ctx.calendar, ctx.limits, model, vix)


def _check(p: RegimeVwapParams, instruments: tuple[str, ...], limits: RiskLimits) -> None:
    try:
        model, _ = _load(p)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"model: cannot load the regime model or VIX file: {e}") from None
    missing = [lab for lab in REGIMES if lab not in set(model.labels) | set((p.labels or {}).values())]
    if missing:
        raise ValueError(f"labels: the model labels no state {missing}; set labels: {{index: label}}")
    spec = INSTRUMENTS.get(instruments[0])
    if spec is not None and p.base_size * spec.mini_equivalent > limits.max_contracts_minis:
        raise ValueError(f"base_size: {p.base_size} {instruments[0]} exceeds profile.max_contracts_minis")


PLUGIN = StrategyPlugin(kind="regime_vwap", params=RegimeVwapParams, build=build, instruments=(1, 1),
                        bar_periods=lambda p: (60, p.regime_bar_s, p.macro_bar_s),
                        warmup_periods=lambda p: (60, p.regime_bar_s, p.macro_bar_s),
                        held_orders=RegimeVwapStrategy.held_orders, check=_check,
                        summary=("entries", "stops", "targets"))
