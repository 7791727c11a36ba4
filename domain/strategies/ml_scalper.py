"""ML scalper (seed 003, /work/shared/seeds/003_42bd756451187795.txt; docs/strategies/scalper.md):
a small PyTorch classifier over bar features decides long / short / flat on each closed bar.

Per closed bar of ``bar_s`` seconds (the seed's 1 s needs recorded ticks; the bundled data has
2-minute bars, so the default is 120 s) of its one instrument:

1. features, O(1) (:class:`domain.scalper.features.FeatureBuilder`, the same code as training),
   and, for a model trained on a tick recording, the top of the book at the bar's close
   (:class:`domain.scalper.quote_features.QuoteFeatureBuilder` over ``quotes.<instrument>``);
2. the model's direction and confidence (:meth:`domain.scalper.model.ScalperModel.predict`,
   ``torch.inference_mode()``, one thread);
3. the seed's signal generator, with Topstep's rules first (risk must be ACTIVE and the calendar
   open for a new position; risk's own 15:10 CT flatten wins over the seed's 16:25 ET):

   - flat: LONG_ENTRY / SHORT_ENTRY when the confidence is at least ``min_confidence`` (0.65);
   - long (short): REVERSE_TO_SHORT (REVERSE_TO_LONG) above ``reverse_confidence`` (0.75) on the
     opposite direction: the target is cancelled, the position closes at market with its stop
     still working, the stop is cancelled when the close fills and the new entry goes out then
     (one decision: the position is never without a stop; the new entry's bracket comes with it);
     EXIT_LONG (EXIT_SHORT) on the opposite direction at ``min_confidence`` or more; a time-out
     exit after ``max_hold_bars`` bars (the labels' horizon: the model was trained to judge that
     long);
   - FLATTEN is risk's (loss limits, 15:10 CT): risk cancels and closes, the strategy sees it in
     its exposure.
4. orders: a market entry with its stop and target (:class:`domain.strategies.bracket.BracketTrader`:
   native OCO brackets, managed ones when the account refuses them).

Sizes in contracts, prices in points, times epoch ns UTC; the session window is America/New_York
as the seed writes it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, Field, field_validator

from domain.calendar import SessionCalendar, trading_day
from domain.handler import WATCHDOG, IdGenerator, Out, RejectedMessage
from domain.instruments import get_instrument
from domain.messages import Alert, Bar, Fill, ModelUpdate, OrderCancelled, QuoteTick, RiskState, WarmupBars
from domain.risk_rules import RiskLimits
from domain.strategies.base import STRICT, OwnPosition, StrategyContext, StrategyPlugin
from domain.strategies.bracket import BracketTrader

ROOT = Path(__file__).resolve().parents[2]
ET = ZoneInfo("America/New_York")
SIGNALS = ("LONG_ENTRY", "SHORT_ENTRY", "EXIT_LONG", "EXIT_SHORT", "REVERSE_TO_LONG", "REVERSE_TO_SHORT")


def _hhmm(v: str) -> str:
    dt.datetime.strptime(v, "%H:%M")
    return v


class MlScalperParams(BaseModel):
    """The ``params:`` of an ``ml_scalper`` entry (defaults: seed 003 "Configuration", Topstep first).

    ``stop_ticks`` / ``target_ticks`` / ``max_hold_bars`` default to the model's label barriers
    (``model.json`` ``labels``), so the strategy trades the bet the model was trained to judge."""

    model_config = STRICT

    model: str = "data/models/scalper-mes-2min"
    bar_s: Literal[1, 5, 10, 15, 30, 60, 120, 300] = 120
    min_confidence: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.65
    reverse_confidence: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.75
    size: Annotated[int, Field(ge=1, le=50)] = 1
    stop_ticks: Annotated[int, Field(ge=1, le=400)] | None = None
    target_ticks: Annotated[int, Field(ge=1, le=400)] | None = None
    max_hold_bars: Annotated[int, Field(ge=1, le=1000)] | None = None
    session_start_et: str = "09:30"
    last_entry_et: str = "16:00"
    brackets: Literal["native", "managed"] = "native"
    native_leg_timeout_s: Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)] = 5.0

    @field_validator("session_start_et", "last_entry_et")
    @classmethod
    def _time(cls, v: str) -> str:
        return _hhmm(v)


class MlScalperStrategy(BracketTrader):
    """The scalper's handler for one instrument; ``handle(msg) -> Out`` (module docstring).

    Args:
        instrument: the traded symbol (MES by default in config/scalper.yaml).
        strategy_id: actor name and client order id prefix.
        params: :class:`MlScalperParams`.
        ids, calendar: client order ids; session rules (America/Chicago).
        model: the loaded :class:`domain.scalper.model.ScalperModel`.
    """

    def __init__(self, instrument: str, strategy_id: str, params: MlScalperParams, ids: IdGenerator,
                 calendar: SessionCalendar, model: Any) -> None:
        from domain.scalper.features import FeatureBuilder
        self.instrument = instrument
        self.spec = get_instrument(instrument)
        self.strategy_id = strategy_id
        self.p = params
        self.ids = ids
        self.calendar = calendar
        self.model = model
        labels = model.meta.get("labels", {})
        self.stop_ticks = params.stop_ticks or int(labels.get("stop_ticks", 8))
        self.target_ticks = params.target_ticks or int(labels.get("take_ticks", 8))
        self.max_hold = params.max_hold_bars or int(labels.get("horizon_bars", 10))
        self.features = FeatureBuilder()
        from domain.scalper.quote_features import QUOTE_FEATURES, QuoteFeatureBuilder
        self.quotes: Any = None
        """:class:`domain.scalper.quote_features.QuoteFeatureBuilder` when the model was trained with
        quote features (its feature list ends with them), else None (quotes are ignored)."""
        if tuple(getattr(model, "features", ())[-len(QUOTE_FEATURES):]) == QUOTE_FEATURES:
            self.quotes = QuoteFeatureBuilder(self.spec.tick_size)
        self.book = OwnPosition(strategy_id, instrument, 64)
        self.trade: dict[str, Any] | None = None
        self.native_ok = params.brackets == "native"
        self.risk_state = RiskState.ACTIVE
        self.reverse_to = 0  # a reversal's new direction, opened when the close fills
        self.day = ""
        self.day_pnl = Decimal(0)
        self.counters: dict[str, int] = {**{s.lower(): 0 for s in SIGNALS}, "entries": 0, "stops": 0, "targets": 0,
                                         "exits": 0, "timeouts": 0, "denied": 0, "flattened": 0, "legs_missing": 0,
                                         "predictions": 0, "wins": 0, "losses": 0, "reloads": 0}
        self.inference_ns: list[int] = []  # the last predictions' times (benchmark, stats)

    # ------------------------------------------------------------------ dispatch
    def handle(self, msg: Any) -> Out:
        if isinstance(msg, Bar):
            return self._on_bar(msg)
        if isinstance(msg, WarmupBars):
            if msg.instrument == self.instrument and msg.period_s == self.p.bar_s:
                for bar in msg.bars:
                    self.features.update(bar)
            return []
        if isinstance(msg, ModelUpdate):
            return self._on_model(msg)
        if isinstance(msg, QuoteTick):
            if self.quotes is not None and msg.instrument == self.instrument:
                self.quotes.on_quote(msg)
            return []
        out = self.bracket_event(msg)
        if out is None:
            raise RejectedMessage(f"{self.strategy_id}: unexpected message {type(msg).__name__}")
        if isinstance(msg, (Fill, OrderCancelled)) and self.reverse_to and self.trade is None and self.book.qty == 0:
            # the reversal's trade is over (its close filled and every other order of it is gone):
            # the new side now, with its own bracket, if entries are still allowed
            direction, self.reverse_to = self.reverse_to, 0
            if self._can_enter(msg.ts_ns):
                out += self._enter(direction, msg.ts_ns, "REVERSE_TO_LONG" if direction > 0 else "REVERSE_TO_SHORT")
        return out

    def _on_model(self, msg: ModelUpdate) -> Out:
        """A retrained model from the node: used from the next bar on (the features and the trade
        in progress stay); one with other features is refused (the loader checks them too)."""
        if msg.identifier == self.model.identifier:
            return []
        if tuple(getattr(msg.model, "features", ())) != tuple(getattr(self.model, "features", ())):
            return [(WATCHDOG, Alert("warning", f"{self.strategy_id}-model", f"{self.strategy_id}: model "
                                     f"{msg.identifier[:12]} refused: other features", msg.ts_ns))]
        old, self.model = self.model.identifier, msg.model
        self.counters["reloads"] += 1
        return [(WATCHDOG, Alert("info", f"{self.strategy_id}-model", f"{self.strategy_id}: model reloaded "
                                 f"({old[:12]} -> {msg.identifier[:12]})", msg.ts_ns))]

    # ------------------------------------------------------------------ decisions
    def predict(self, x: Any) -> tuple[int, float]:
        """The model's ``(direction, confidence)``; times the call (``inference_ns``)."""
        t0 = time.perf_counter_ns()
        out = self.model.predict(x)
        self.inference_ns.append(time.perf_counter_ns() - t0)
        if len(self.inference_ns) > 10_000:
            del self.inference_ns[:5_000]
        self.counters["predictions"] += 1
        return out

    def signal(self, direction: int, confidence: float, ts: int) -> str | None:
        """Seed 003's signal generator for the current position (module docstring); None = hold."""
        pos = self.book.qty
        if pos == 0:
            if self.trade is not None or direction == 0 or confidence < self.p.min_confidence or not self._can_enter(ts):
                return None
            return "LONG_ENTRY" if direction > 0 else "SHORT_ENTRY"
        if direction == 0 or (direction > 0) == (pos > 0) or confidence < self.p.min_confidence:
            return None
        if confidence > self.p.reverse_confidence and self._can_enter(ts):
            return "REVERSE_TO_LONG" if direction > 0 else "REVERSE_TO_SHORT"
        return "EXIT_SHORT" if pos < 0 else "EXIT_LONG"

    def _can_enter(self, ts: int) -> bool:
        local = dt.datetime.fromtimestamp(ts / 1e9, ET).strftime("%H:%M")
        return (self.risk_state is RiskState.ACTIVE and self.calendar.can_open(ts)
                and self.p.session_start_et <= local < self.p.last_entry_et)

    def _on_bar(self, bar: Bar) -> Out:
        if bar.instrument != self.instrument or bar.period_s != self.p.bar_s:
            return []
        ts = bar.ts_ns or bar.end_ns
        day = trading_day(ts).isoformat()
        if day != self.day:
            self.day, self.day_pnl = day, Decimal(0)
        x = self.features.update(bar)
        if self.quotes is not None:  # the book at the bar's end; no decision before the first quote
            q = self.quotes.at_bar(bar)
            x = None if x is None or q is None else np.concatenate((x, q))
        t = self.trade
        if t is not None and t["filled"] and self.book.qty != 0:
            t["bars"] = t.get("bars", 0) + 1
            if t["bars"] >= self.max_hold:
                self.counters["timeouts"] += 1
                return self.exit_now(ts, f"time-out after {t['bars']} bars")
        if x is None:
            return []
        direction, confidence = self.predict(x)
        sig = self.signal(direction, confidence, ts)
        if sig is None:
            return []
        self.counters[sig.lower()] += 1
        if sig in ("LONG_ENTRY", "SHORT_ENTRY"):
            return self._enter(direction, ts, sig, confidence, bar.close)
        if sig.startswith("REVERSE"):
            self.reverse_to = direction  # the stop works until the close fills: never without a stop
            if self.trade is not None:
                self.trade["reversing"] = True
            return self.exit_now(ts, f"{sig} (confidence {confidence:.2f}, price {bar.close})", keep_stop=True)
        return self.exit_now(ts, f"{sig} (confidence {confidence:.2f}, price {bar.close})")

    def _enter(self, direction: int, ts: int, sig: str, confidence: float | None = None,
               price: Decimal | None = None) -> Out:
        """The entry of ``sig``; its purpose carries ``signal=<sig>; conf=<c>; price=<bar close, points>``
        (conf and price: the bar's decision; a reversal's second leg has neither), which the per-day
        session log reads (infra/session_files.py)."""
        tag = (f"; signal={sig}" + (f"; conf={confidence:.2f}" if confidence is not None else "")
               + (f"; price={price}" if price is not None else ""))
        return self.open_trade(direction, self.p.size, self.stop_ticks, self.target_ticks, ts, "scalper-entry",
                               tag=tag, exit_prefix="scalper-exit", bars=0)

    def _on_trade_closed(self, t: dict[str, Any], pnl: Decimal) -> None:
        self.day_pnl += pnl
        self.counters["wins" if pnl > 0 else "losses"] += 1
        if not t.get("reversing"):
            self.reverse_to = 0  # closed some other way (risk's flatten, a stop): no reversal pending

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict:
        """JSON-safe state: features, the trade in progress, the pending reversal, counters."""
        return {"features": self.features.snapshot(), "quotes": self.quotes.snapshot() if self.quotes else None,
                **self.book.snapshot(),
                "trade": dict(self.trade) if self.trade else None, "reverse_to": self.reverse_to, "day": self.day,
                "day_pnl": str(self.day_pnl), "native_ok": self.native_ok, "stats": dict(self.counters),
                "model_id": self.model.identifier}

    def restore(self, d: dict) -> None:
        """Load a :meth:`snapshot`; working orders are brought up to date by reconciliation."""
        self.features = type(self.features).restore(d["features"])
        if self.quotes is not None and d.get("quotes") is not None:
            self.quotes = type(self.quotes).restore(self.spec.tick_size, d["quotes"])
        self.book.restore(d)
        self.trade = dict(d["trade"]) if d.get("trade") else None
        self.reverse_to = int(d.get("reverse_to", 0))
        self.day = d.get("day", "")
        self.day_pnl = Decimal(d.get("day_pnl", "0"))
        self.native_ok = bool(d.get("native_ok", True)) and self.p.brackets == "native"
        self.counters.update({k: int(v) for k, v in d.get("stats", {}).items()})

    def stats(self) -> dict[str, int]:
        """Signals by type, entries, stops / targets / exits / time-outs filled, wins, losses."""
        return dict(self.counters)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


@functools.lru_cache(maxsize=4)
def _load(folder: str, _mtime: int) -> Any:
    """The model at ``folder`` (cached per path and modification time: config check, build, sweeps)."""
    import torch

    from domain.scalper.features import FEATURES
    from domain.scalper.model import load_model
    from domain.scalper.quote_features import QUOTE_FEATURES
    torch.set_num_threads(1)  # inference inside the actor: one thread, batch 1
    trained = tuple(json.loads((Path(folder) / "model.json").read_text()).get("features", ()))
    # the bar features, or the bar features and then the quote features (the loader checks the rest)
    return load_model(Path(folder), FEATURES + QUOTE_FEATURES if trained == FEATURES + QUOTE_FEATURES else FEATURES)


def _model(p: MlScalperParams) -> Any:
    """The model at ``p.model`` as on disk now. Cached per modification time of ``model.json``,
    which :func:`domain.scalper.model.save_model` writes last: a change is seen once both files
    are written."""
    folder = _resolve(p.model)
    meta = folder / "model.json"
    return _load(str(folder), meta.stat().st_mtime_ns if meta.exists() else 0)


def build(ctx: StrategyContext, p: MlScalperParams) -> MlScalperStrategy:
    return MlScalperStrategy(ctx.instruments[0], ctx.strategy_id, p, ctx.ids, ctx.calendar, _model(p))


def _check(p: MlScalperParams, instruments: tuple[str, ...], limits: RiskLimits) -> None:
    try:
        model = _model(p)
    except FileNotFoundError as e:
        raise ValueError(f"model: {e}") from None
    except ValueError as e:  # domain.scalper.model.ModelMismatch
        raise ValueError(f"model: {e}") from None
    trained = model.meta.get("instrument")
    if trained and trained != instruments[0]:
        raise ValueError(f"instruments: the model was trained on {trained}, not {instruments[0]}")
    if p.reverse_confidence < p.min_confidence:
        raise ValueError("reverse_confidence: must be at least min_confidence")


PLUGIN = StrategyPlugin(kind="ml_scalper", params=MlScalperParams, build=build,
                        bar_periods=lambda p: (p.bar_s,), warmup_periods=lambda p: (p.bar_s,), wants_quotes=True,
                        held_orders=MlScalperStrategy.held_orders, check=_check,
                        summary=("predictions", "entries", "stops", "targets", "exits", "timeouts", "wins", "losses"),
                        reload=_model)
