"""Recorded market data for the sandbox: the replay tick stream, bar history and quote state.

Data: ``ES_2min.csv.gz`` / ``NQ_2min.csv.gz`` in the data folder (the format of
``data/demo``; loaded with :func:`infra.replay.load_bar_csv`). Each recorded series prices two
contracts (:data:`infra.sandbox.contracts.SERIES_OF`): ES -> MES and EP, NQ -> MNQ and ENQ.

Replay: the bars of the streamed trading days are replayed as 4 trade ticks each
(:func:`infra.replay.bar_to_ticks`: O-L-H-C for an up bar, O-H-L-C for a down bar, at +0, +1/4,
+1/2, +3/4 of the period, sizes summing to the bar volume), all series merged by
``(ts_ns, instrument, seq)``. Tick ``instrument`` is the micro symbol of the series (``MES``).

History (``History/retrieveBars``): aggregated from the recorded bars, never past the sandbox
clock ``now_ns``: a bar is served only once every recorded bar in it has closed
(``end <= now``) and its nominal period is over; with ``includePartialBar`` the forming bar is
added, built from the closed bars plus the ticks of the current bar already replayed.

- Units: 1 Second, 2 Minute, 3 Hour with any ``unitNumber`` whose length is a whole multiple of
  the recorded period (2 minutes): buckets are aligned on the epoch (UTC). A length that is not a
  multiple (e.g. 5 minutes) is served approximately: every recorded bar counts wholly in the
  bucket where it *starts*. Shorter than the recorded period (1 minute, seconds) ->
  UNIT_NUMBER_INVALID (the sandbox does not invent intra-bar data).
- 4 Day, 5 Week, 6 Month (``unitNumber`` 1 only): by CME trading day (America/Chicago, 17:00 CT
  boundary), the ISO week of the trading day, the calendar month of the trading day; the bar
  starts at the first session's 17:00 CT open and ends at 16:00 CT of the last trading day.
- 7 Tick, 0 and anything else -> UNIT_INVALID.
- ``t`` is the bucket start (open time); bars are returned newest first, at most ``limit``
  (1..20000, else LIMIT_INVALID), the latest ones kept; ``startTime <= t <= endTime``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

from domain.calendar import CLOSE_TIME, CT, NS, dt_to_ns, session_open, trading_day
from domain.messages import TradeTick
from infra.replay import SYMBOL_MAP, BarRow, bar_to_ticks, load_bar_csv
from infra.sandbox.errors import GatewayError, Reason
from infra.sandbox.wire import iso

SERIES_FILES: dict[str, str] = {"ES": "ES_2min.csv.gz", "NQ": "NQ_2min.csv.gz"}
"""Recorded series root -> file name in the data folder."""

MAX_BARS = 20_000
"""Most bars one ``retrieveBars`` request may ask for (gateway documentation)."""

_UNIT_SECONDS = {1: 1, 2: 60, 3: 3600}
_DAY_NS = 86_400 * NS
_LOOKBACK_NS = 32 * _DAY_NS  # covers the longest bucket (a month) around a requested window


def _close_ns(day: dt.date) -> int:
    return dt_to_ns(dt.datetime.combine(day, CLOSE_TIME, tzinfo=CT))


def _weekday_on_or_after(day: dt.date) -> dt.date:
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _weekday_on_or_before(day: dt.date) -> dt.date:
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _bucketer(unit: Any, unit_number: Any, period_s: int) -> Callable[[int], tuple[int, int]]:
    """bar start ns -> (bucket start ns, nominal bucket end ns). Raises GatewayError."""
    if not isinstance(unit, int) or isinstance(unit, bool) or unit not in (*_UNIT_SECONDS, 4, 5, 6):
        raise GatewayError(Reason.UNIT_INVALID, f"Unit {unit!r} is not supported by the sandbox.")
    if not isinstance(unit_number, int) or isinstance(unit_number, bool) or unit_number < 1:
        raise GatewayError(Reason.UNIT_NUMBER_INVALID, f"Invalid unitNumber {unit_number!r}.")
    if unit in _UNIT_SECONDS:
        seconds = unit_number * _UNIT_SECONDS[unit]
        if seconds < period_s:
            raise GatewayError(Reason.UNIT_NUMBER_INVALID,
                               f"Bars shorter than the recorded {period_s} s period are not available.")
        size = seconds * NS

        def by_time(start_ns: int) -> tuple[int, int]:
            s = start_ns // size * size
            return s, s + size
        return by_time
    if unit_number != 1:
        raise GatewayError(Reason.UNIT_NUMBER_INVALID, "Day, week and month bars need unitNumber 1.")

    def by_calendar(start_ns: int) -> tuple[int, int]:
        day = trading_day(start_ns)
        if unit == 4:
            first, last = day, day
        elif unit == 5:
            first = day - dt.timedelta(days=day.weekday())
            last = first + dt.timedelta(days=4)
        else:
            first = _weekday_on_or_after(day.replace(day=1))
            next_month = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            last = _weekday_on_or_before(next_month - dt.timedelta(days=1))
        return dt_to_ns(session_open(first)), _close_ns(last)
    return by_calendar


@dataclass(slots=True)
class _Agg:
    """A bar being aggregated (prices in points, volume in contracts)."""

    t: int
    o: Decimal
    h: Decimal
    low: Decimal
    c: Decimal
    v: int

    def add(self, _open: Decimal, h: Decimal, low: Decimal, c: Decimal, v: int) -> None:
        """Extend with a later bar (its open does not change the aggregate's open)."""
        self.h, self.low, self.c, self.v = max(self.h, h), min(self.low, low), c, self.v + v

    def to_json(self) -> dict[str, Any]:
        return {"t": iso(self.t), "o": self.o, "h": self.h, "l": self.low, "c": self.c, "v": self.v}


def _played(row: BarRow, now_ns: int) -> tuple[Decimal, Decimal, Decimal, Decimal, int] | None:
    """OHLCV of the ticks of ``row`` replayed by ``now_ns`` (None if none yet)."""
    ticks = [t for t in bar_to_ticks(row) if t.ts_ns <= now_ns]
    if not ticks:
        return None
    prices = [t.price for t in ticks]
    return prices[0], max(prices), min(prices), prices[-1], sum(t.size for t in ticks)


class MarketData:
    """The recorded series of a data folder, split into history days and streamed days.

    Args:
        data_dir: folder with ``ES_2min.csv.gz`` and/or ``NQ_2min.csv.gz``.
        start: first trading day to stream (America/Chicago); None = the 2nd trading day in the data.
        end: last trading day to stream (inclusive); None = to the end of the data.

    Raises:
        FileNotFoundError: neither file exists.
        ValueError: a file lacks required columns, ``start`` is None and the data has fewer than
            two trading days, or no data lies in ``[start, end]``.
    """

    def __init__(self, data_dir: Path, start: dt.date | None = None, end: dt.date | None = None) -> None:
        self.rows: dict[str, list[BarRow]] = {}
        """Recorded bars per series (``"ES"``), ascending; the instrument of each row is the micro."""
        for series, name in SERIES_FILES.items():
            path = Path(data_dir) / name
            if path.exists():
                self.rows[series], _rejects = load_bar_csv(path, instrument=SYMBOL_MAP[series])
        if not self.rows:
            raise FileNotFoundError(f"no {' or '.join(SERIES_FILES.values())} in {data_dir}")
        days = sorted({trading_day(r.start_ns) for rows in self.rows.values() for r in rows})
        if start is None:
            if len(days) < 2:
                raise ValueError(f"{data_dir}: need two trading days (history + replay) when no start is given")
            start = days[1]
        streamed = [d for d in days if d >= start and (end is None or d <= end)]
        if not streamed:
            raise ValueError(f"{data_dir}: no data between {start} and {end or 'the end'}")
        self.start_day, self.end_day = streamed[0], streamed[-1]
        self._first_index: dict[str, int] = {}
        self._last_index: dict[str, int] = {}
        for series, rows in self.rows.items():
            days_of = [trading_day(r.start_ns) for r in rows]
            self._first_index[series] = bisect.bisect_left(days_of, self.start_day)
            self._last_index[series] = bisect.bisect_right(days_of, self.end_day)
        streamed_rows = [r for s, rows in self.rows.items()
                         for r in rows[self._first_index[s]:self._last_index[s]]]
        self.first_tick_ns = min(r.start_ns for r in streamed_rows)
        """Time of the first streamed tick (epoch ns UTC)."""
        self.end_ns = max(r.end_ns for r in streamed_rows)
        """End of the last streamed bar (epoch ns UTC): the clock after the replay."""

    @property
    def series(self) -> set[str]:
        """Recorded series present (``{"ES", "NQ"}``)."""
        return set(self.rows)

    def ticks(self) -> Iterator[TradeTick]:
        """The streamed days as trade ticks, all series merged by ``(ts_ns, instrument, seq)``."""
        def one(series: str) -> Iterator[TradeTick]:
            rows = self.rows[series]
            for i in range(self._first_index[series], self._last_index[series]):
                yield from bar_to_ticks(rows[i], 4 * i)
        return heapq.merge(*(one(s) for s in sorted(self.rows)), key=lambda t: (t.ts_ns, t.instrument, t.seq))

    def prior_close(self, series: str) -> Decimal | None:
        """Close of the last bar before the streamed days (None if there is none)."""
        i = self._first_index.get(series, 0)
        return self.rows[series][i - 1].close if i > 0 else None

    def bars(self, series: str, *, unit: Any, unit_number: Any, start_ns: int, end_ns: int, now_ns: int,
             include_partial: bool, limit: Any) -> list[dict[str, Any]]:
        """Aggregated bars of ``series`` (gateway ``Bar`` dicts, newest first); see the module docstring.

        Raises GatewayError UNIT_INVALID / UNIT_NUMBER_INVALID / LIMIT_INVALID.
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_BARS:
            raise GatewayError(Reason.LIMIT_INVALID, f"limit must be between 1 and {MAX_BARS}.")
        rows = self.rows.get(series, [])
        bucket = _bucketer(unit, unit_number, rows[0].period_s if rows else 120)
        lo = bisect.bisect_left(rows, start_ns - _LOOKBACK_NS, key=lambda r: r.start_ns)
        hi = bisect.bisect_right(rows, min(end_ns, now_ns) + _LOOKBACK_NS, key=lambda r: r.start_ns)
        groups: dict[int, tuple[int, list[BarRow]]] = {}
        for row in rows[lo:hi]:
            b_start, b_end = bucket(row.start_ns)
            groups.setdefault(b_start, (b_end, []))[1].append(row)
        out: list[_Agg] = []
        for b_start, (b_end, members) in groups.items():
            if not start_ns <= b_start <= end_ns:
                continue
            if now_ns >= max(b_end, members[-1].end_ns):
                parts = [(r.open, r.high, r.low, r.close, r.volume) for r in members]
            elif include_partial:
                parts = [p for p in ((r.open, r.high, r.low, r.close, r.volume) if r.end_ns <= now_ns
                                     else _played(r, now_ns) for r in members) if p is not None]
            else:
                continue
            if not parts:
                continue
            agg = _Agg(b_start, *parts[0])
            for p in parts[1:]:
                agg.add(*p)
            out.append(agg)
        return [a.to_json() for a in reversed(out[-limit:])]


class QuoteState:
    """Running session statistics of one series for ``GatewayQuote`` payloads.

    ``open/high/low/volume`` cover the current trading day (America/Chicago, reset at the 17:00 CT
    open); ``change`` = last - previous trading day's last price (the close of the history data
    before the first streamed day); ``changePercent`` = change / that close x 100, 4 decimals.
    ``bestBid``/``bestAsk`` are the last price -/+ one tick (the recorded data has no book).
    The aggressor ``type`` of a trade (0 Buy, 1 Sell) is an uptick/downtick rule; a repeated price
    keeps the previous side.
    """

    def __init__(self, prior_close: Decimal | None, tick_size: Decimal) -> None:
        self.tick_size = tick_size
        self._prev_day_close = prior_close
        self._day: dt.date | None = None
        self.open = self.high = self.low = self.last = Decimal(0)
        self.volume = 0
        self.side = 0

    def update(self, tick: TradeTick) -> None:
        """Fold in one replayed trade tick."""
        day = trading_day(tick.ts_ns)
        if day != self._day:
            if self._day is not None:
                self._prev_day_close = self.last
            self._day, self.open, self.high, self.low, self.volume = day, tick.price, tick.price, tick.price, 0
        elif tick.price != self.last:
            self.side = 0 if tick.price > self.last else 1
        self.high, self.low = max(self.high, tick.price), min(self.low, tick.price)
        self.last = tick.price
        self.volume += tick.size

    def quote(self, symbol_id: str, symbol_name: str, ts_ns: int) -> dict[str, Any]:
        """The ``GatewayQuote`` payload (second argument of the event)."""
        base = self._prev_day_close or self.open
        change = self.last - base
        when = iso(ts_ns)
        return {"symbol": symbol_id, "symbolName": symbol_name, "lastPrice": self.last,
                "bestBid": self.last - self.tick_size, "bestAsk": self.last + self.tick_size,
                "change": change, "changePercent": (change * 100 / base).quantize(Decimal("0.0001")),
                "open": self.open, "high": self.high, "low": self.low, "volume": self.volume,
                "lastUpdated": when, "timestamp": when}

    def trade(self, symbol_id: str, contract_id: str, tick: TradeTick) -> dict[str, Any]:
        """One ``GatewayTrade`` item (the event carries a list of these)."""
        return {"symbolId": symbol_id, "contractId": contract_id, "price": tick.price, "timestamp": iso(tick.ts_ns),
                "type": self.side, "volume": tick.size}
