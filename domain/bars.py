"""Time-bar aggregation from trade (or quote) ticks. Pure and deterministic.

Bars are aligned to multiples of the period since the Unix epoch (UTC). America/Chicago offsets
are whole hours, so 1/5/15-minute bars also align with Chicago wall-clock minutes. A bar covers
``[start_ns, end_ns)`` with ``start_ns = ts_ns - ts_ns % period_ns``.

Closing rules:
- a tick with ``ts_ns >= end_ns`` of the open bar closes it first (``Bar.ts_ns`` = the tick's
  time), then starts a new bar;
- :meth:`BarAggregator.on_time` closes every open bar whose ``end_ns <= ts_ns`` (timer-driven close
  for live data; ``Bar.ts_ns`` = that time);
- periods without ticks produce no bar (no forward fill).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable

from domain.handler import Out, RejectedMessage, bars_topic
from domain.instruments import get_instrument
from domain.messages import Bar, ClockTick, QuoteTick, TradeTick, WarmupBars

NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class _Building:
    """Mutable state of the bar being built for one period."""

    start_ns: int
    end_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    def to_bar(self, instrument: str, period_s: int, ts_ns: int) -> Bar:
        return Bar(instrument, period_s, self.start_ns, self.end_ns, self.open, self.high, self.low,
                   self.close, self.volume, ts_ns)

    def to_dict(self) -> dict[str, Any]:
        return {"start_ns": self.start_ns, "end_ns": self.end_ns, "open": str(self.open),
                "high": str(self.high), "low": str(self.low), "close": str(self.close), "volume": self.volume}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "_Building":
        return _Building(int(d["start_ns"]), int(d["end_ns"]), Decimal(d["open"]), Decimal(d["high"]),
                         Decimal(d["low"]), Decimal(d["close"]), int(d["volume"]))


NO_OPEN_BAR = 2**63 - 1
"""``BarAggregator``'s soonest bar end when no bar is open (ns): no clock time closes anything."""


class BarAggregator:
    """Builds time bars of several periods for one instrument.

    Args:
        instrument: symbol (``"MES"``); ticks of other instruments are ignored.
        periods_s: bar lengths in seconds (positive); kept sorted ascending, duplicates removed.
        source: ``"trades"`` (OHLC from trade prices, volume = sum of sizes in contracts) or
            ``"quotes"`` (OHLC from the mid ``(bid+ask)/2`` rounded to the instrument tick,
            volume 0). Only the matching ``on_trade``/``on_quote`` builds bars; the other one
            returns ``[]``.

    Every ``on_*`` method returns the closed bars ordered by period ascending.
    Ticks older than the start of a period's open bar (out of order) are dropped for that period
    and counted in ``dropped_late``; validate data upstream (:mod:`domain.validation`).
    """

    def __init__(self, instrument: str, periods_s: tuple[int, ...] = (60, 300, 900), source: str = "trades") -> None:
        if source not in ("trades", "quotes"):
            raise ValueError(f"source must be 'trades' or 'quotes', got {source!r}")
        periods = tuple(sorted({int(p) for p in periods_s}))
        if not periods or periods[0] <= 0:
            raise ValueError(f"periods_s must be positive seconds, got {periods_s!r}")
        self.instrument = instrument
        self.periods_s = periods
        self.source = source
        self._spec = get_instrument(instrument) if source == "quotes" else None
        self._open: dict[int, _Building] = {}
        self._ends_from = 0  # no open bar ends before this (a lower bound; exact after on_time)
        self.dropped_late = 0

    # ----------------------------------------------------------------- inputs

    def on_trade(self, tick: TradeTick) -> list[Bar]:
        """Add one trade print; returns the bars it closed (possibly empty)."""
        if self.source != "trades" or tick.instrument != self.instrument:
            return []
        return self._add(tick.ts_ns, tick.price, int(tick.size))

    def on_quote(self, q: QuoteTick) -> list[Bar]:
        """Add one quote (only when ``source == "quotes"``); price = mid rounded to tick, volume 0."""
        if self.source != "quotes" or q.instrument != self.instrument:
            return []
        assert self._spec is not None
        mid = self._spec.round_to_tick((q.bid + q.ask) / 2)
        return self._add(q.ts_ns, mid, 0)

    def on_time(self, ts_ns: int) -> list[Bar]:
        """Close every open bar whose ``end_ns <= ts_ns``; each closed bar gets ``ts_ns``."""
        if ts_ns < self._ends_from:
            return []  # the clock ticks every minute; a bar ends once per period
        out: list[Bar] = []
        open_ = self._open
        ends_from = NO_OPEN_BAR  # the soonest end of the bars left open
        for p in self.periods_s:
            b = open_.get(p)
            if b is None:
                continue
            if b.end_ns <= ts_ns:
                out.append(b.to_bar(self.instrument, p, ts_ns))
                del open_[p]
            elif b.end_ns < ends_from:
                ends_from = b.end_ns
        self._ends_from = ends_from
        return out

    def flush(self, ts_ns: int | None = None) -> list[Bar]:
        """Close every open bar regardless of time (end of data).

        ``Bar.ts_ns`` = ``ts_ns`` if given, else each bar's own ``end_ns``.
        """
        out: list[Bar] = []
        for p in self.periods_s:
            b = self._open.pop(p, None)
            if b is not None:
                out.append(b.to_bar(self.instrument, p, b.end_ns if ts_ns is None else ts_ns))
        return out

    def partial(self, period_s: int) -> Bar | None:
        """The bar still being built for ``period_s`` (``ts_ns`` = 0), or None."""
        b = self._open.get(period_s)
        return None if b is None else b.to_bar(self.instrument, period_s, 0)

    # ----------------------------------------------------------------- core

    def _add(self, ts_ns: int, price: Decimal, size: int) -> list[Bar]:
        out: list[Bar] = []
        for p in self.periods_s:
            b = self._open.get(p)
            if b is not None:
                if ts_ns >= b.end_ns:
                    out.append(b.to_bar(self.instrument, p, ts_ns))
                    b = None
                elif ts_ns < b.start_ns:
                    self.dropped_late += 1
                    continue
                else:  # the print joins the open bar
                    if price > b.high:
                        b.high = price
                    if price < b.low:
                        b.low = price
                    b.close = price
                    b.volume += size
                    continue
            period_ns = p * NS_PER_S
            start = ts_ns - ts_ns % period_ns
            self._open[p] = _Building(start, start + period_ns, price, price, price, price, size)
            if start + period_ns < self._ends_from:
                self._ends_from = start + period_ns
        return out

    # ----------------------------------------------------------------- state

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state (Decimals as strings)."""
        return {"instrument": self.instrument, "periods_s": list(self.periods_s), "source": self.source,
                "dropped_late": self.dropped_late,
                "open": {str(p): b.to_dict() for p, b in self._open.items()}}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> "BarAggregator":
        """Rebuild from :meth:`snapshot` output (exact)."""
        obj = cls(d["instrument"], tuple(int(p) for p in d["periods_s"]), d.get("source", "trades"))
        obj.dropped_late = int(d.get("dropped_late", 0))
        obj._open = {int(p): _Building.from_dict(b) for p, b in d.get("open", {}).items()}
        obj._ends_from = min((b.end_ns for b in obj._open.values()), default=NO_OPEN_BAR)
        return obj


def aggregate_bars(ticks: Iterable[TradeTick], period_s: int) -> list[Bar]:
    """Build ``period_s`` bars from time-ordered trade ticks (warm-up history).

    The instrument is taken from the first tick (other instruments are ignored). Identical to
    feeding every tick to :meth:`BarAggregator.on_trade` then :meth:`BarAggregator.flush` (the
    last bar's ``ts_ns`` is its ``end_ns``).
    """
    agg: BarAggregator | None = None
    out: list[Bar] = []
    for t in ticks:
        if agg is None:
            agg = BarAggregator(t.instrument, (period_s,), "trades")
        out.extend(agg.on_trade(t))
    if agg is not None:
        out.extend(agg.flush())
    return out


def warmup_messages(ticks_by_instrument: dict[str, list[TradeTick]], periods: tuple[int, ...],
                    dests: Callable[[str], list[str]], ts_ns: int) -> Out:
    """WarmupBars per instrument and period from historical ticks, built with the same aggregator as live bars."""
    out: Out = []
    for sym, ticks in ticks_by_instrument.items():
        for period in periods:
            bars = tuple(aggregate_bars(ticks, period))
            if bars:
                for d in dests(sym):
                    out.append((d, WarmupBars(sym, period, bars, ts_ns)))
    return out


class BarBuilderHandler:
    """Ticks -> bars for one instrument; with ``forward_ticks`` each tick is passed on to the
    ``bars.<instrument>`` subscribers too, after the bars it closed.

    Args:
        instrument: our symbol.
        periods_s: bar periods made, seconds (the union of what the instrument's strategies read,
            :attr:`domain.strategies.base.StrategyPlugin.bar_periods`).
        forward_ticks: pass prints on (False when no subscriber reads them).
    """

    def __init__(self, instrument: str, periods_s: tuple[int, ...] = (60, 300, 900),
                 forward_ticks: bool = True) -> None:
        self.instrument = instrument
        self.agg = BarAggregator(instrument, periods_s)
        self.topic = bars_topic(instrument)
        self.forward_ticks = forward_ticks

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, TradeTick):
            bars = self.agg.on_trade(msg)
            out: Out = [(self.topic, b) for b in bars] if bars else []
            if self.forward_ticks:
                out.append((self.topic, msg))
            return out
        if isinstance(msg, ClockTick):
            bars = self.agg.on_time(msg.ts_ns)
            return [(self.topic, b) for b in bars] if bars else []
        raise RejectedMessage(f"bar builder: unexpected message {type(msg).__name__}")
