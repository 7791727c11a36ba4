"""Replay of recorded market data as feed events (bars -> trade ticks, Databento trades/quotes).

Data sources (the bundled excerpt and its provenance: ``data/demo/README.md``; the 28-session set:
``docs/benchmarks.md``, "Backtest throughput"):

- Yahoo ES=F / NQ=F bar files (``datetime,open,high,low,close,volume,symbol``), timestamps naive
  US/Eastern wall-clock time, each bar labelled by its **start**; ``.csv`` or ``.csv.gz``.
- Databento GLBX.MDP3 CSV copies: trades and MBP-1 (top of book), timestamps UTC with nanoseconds.

Instrument mapping: the recorded ES and NQ prices stand for **MES and MNQ** (:data:`SYMBOL_MAP`):
the micro contracts track the same index at the same 0.25-point tick, only the dollar multiplier
differs, so a mini price series is a faithful micro price series.

Bar replay path (what the paper broker and the strategies see)
---------------------------------------------------------------
A bar carries no intra-bar order of prices, so each bar is replayed as **four trade ticks**:

- ``adaptive`` (default): bullish or flat bar (``close >= open``): ``open -> low -> high -> close``
  (assumed to dip first); bearish bar (``close < open``): ``open -> high -> low -> close``;
- ``adverse`` (``runtime.bar_path``): the extreme against the position held first (long: low
  first; short: high first; flat: the reverse of adaptive), so a loss rule meets the bar's worst
  price before its recovery. A backtest reports its net under both paths, so how much a result
  owes to this guess is visible (actors/node.py ``Node.run_backtest``);
- tick times: bar start + 0, period/4, period/2 and 3*period/4 (for a 2-minute bar: +0 s, +30 s,
  +60 s, +90 s), so every tick lies inside ``[start, start + period)``;
- sizes: ``volume // 4`` on each of the first three ticks, the remainder on the close tick, so the
  tick sizes sum to the bar volume exactly, except that **a print always has a size of at least
  one contract**: a share below 1 is raised to 1. A bar with volume 0 (Yahoo reports some) or
  1..3 therefore replays as size-1 ticks (4 or 3 + its volume contracts in all). Without this the
  feed validator rejects the size-0 prints and their real prices would be lost to the strategies
  and the paper venue; the extra volume is at most 4 contracts per such bar (VWAP effect nil).
- ``seq`` numbers ticks per instrument (4 x bar index + position in the bar) so that
  ``(instrument, ts_ns, seq)`` identifies every tick.

This path is a modelling assumption: a resting limit order that the bar's range touches is assumed
reached, and the order of high and low inside the bar is the documented guess above.

**Continuous path** (``runtime.path_step_bp``, default 4 bp): between two of those points price
is taken to move through the levels in between, as a liquid future trades, so a move longer than
``path_step_bp`` basis points of the bar's open (ES ~2.5, NQ ~10 points) is replayed as prints at
most that far apart, evenly spaced in time between the two points, each of size 1 (taken from
the point it leads to while that keeps at least 1), with the ``seq`` of that point. Without it a
decision taken at one point could only fill at the next, up to 30 s and a whole bar's range
later: a hedge sold at the bar's low filled at its high, and a loss cap crossed on the way to a
news bar's high was flattened only at the high (2026-03-23 07:04 ET, ES +139.5 points in one bar:
the 150K day ended at 191 % of its cap, docs/decisions/0018-continuous-intra-bar-path.md). A bar's
open is never interpolated from the previous close: a gap between bars (a data hole) stays a gap.

**Recorded trades replace the guess** where they exist: given a Databento trades file for an
instrument (``ReplaySource(trade_files=...)``; :func:`infra.feeds.open_replay` picks up
``ES_trades.csv[.gz]`` / ``NQ_trades.csv[.gz]`` beside the bar files), every bar whose trades
reproduce it exactly (open, high, low, close and volume) is replayed as those trades: real prices,
sizes and times, the same under both path modes. A bar the recording covers only in part keeps the
four-point path. The summary counts both (``SessionSummary.trade_paths``).

Bad input never crashes a loader: every dropped row is counted in a ``collections.Counter`` keyed
by reason, returned next to the rows (:attr:`ReplaySource.rejects` sums them over the files). Only
a missing file (``FileNotFoundError``) and a file that cannot be read as CSV at all raise: no
header or required columns missing, not gzip, truncated gzip, not UTF-8, a malformed CSV line
(:class:`BadDataFile`, a ``ValueError`` whose message names the file and the line).
"""

from __future__ import annotations

import bisect
import collections
import csv
import datetime as dt
import functools
import gzip
import heapq
import io
import operator
import re
import zlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

from domain.calendar import NS, trading_day
from domain.instruments import INSTRUMENTS, MONTH_CODES, get_instrument
from domain.messages import Bar, QuoteTick, TradeTick, slot_init
from domain.validation import plausible_range

SYMBOL_MAP: dict[str, str] = {"ES": "MES", "NQ": "MNQ"}
"""Recorded mini symbol -> the micro instrument it stands for (same index, same 0.25 tick)."""

BAR_COLUMNS = ("datetime", "open", "high", "low", "close", "volume", "symbol")
"""Columns of the Yahoo bar files (``symbol`` is optional when ``instrument`` is given)."""

TRADE_COLUMNS = ("ts_event", "symbol", "price", "size")
"""Required columns of a Databento trades CSV."""

QUOTE_COLUMNS = ("ts_event", "symbol", "bid_px", "ask_px", "bid_sz", "ask_sz")
"""Required columns of a Databento MBP-1 CSV."""


MAX_VOLUME = 10 ** 9
"""Largest bar volume / print size accepted, contracts (a day of ES trades about 2 million); a
larger one is dropped as ``volume_out_of_range``."""


class BadDataFile(ValueError):
    """A market data file that cannot be read as CSV: not gzip, truncated, not UTF-8, a malformed
    line, no header or required columns missing. The message names the file (and the line number,
    1 = the header, when the problem is at a line).

    Attributes:
        path: the file. line: the 1-based line number, or None for the whole file.
    """

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path, self.line = str(path), line
        where = f"{path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"market data file {where}: {problem}")


_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error)
"""What reading a corrupt ``.csv`` / ``.csv.gz`` raises (gzip.BadGzipFile is an OSError)."""


# --------------------------------------------------------------------------- bars

@slot_init  # a replay builds one per bar of a file
@dataclass(frozen=True, slots=True)
class BarRow:
    """One validated recorded bar.

    Attributes:
        instrument: our symbol (``"MES"``).
        start_ns: bar start, epoch ns UTC (the file's label, converted from local time).
        period_s: bar length in seconds (inferred per file).
        open, high, low, close: Decimal points, on the instrument's tick grid, low <= open/close <= high.
        volume: contracts (>= 0).
    """

    instrument: str
    start_ns: int
    period_s: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    @property
    def end_ns(self) -> int:
        """Exclusive bar end, epoch ns UTC."""
        return self.start_ns + self.period_s * NS

    def to_bar(self) -> Bar:
        """As a closed :class:`domain.messages.Bar` (``ts_ns`` = bar end), e.g. for warm-up."""
        return Bar(self.instrument, self.period_s, self.start_ns, self.end_ns, self.open, self.high,
                   self.low, self.close, self.volume, ts_ns=self.end_ns)


def _open_text(path: Path | str) -> io.TextIOBase:
    """Open a ``.csv`` or ``.csv.gz`` file as UTF-8 text. Raises FileNotFoundError."""
    p = Path(path)
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


def _require_columns(fieldnames: Iterable[str] | None, required: Iterable[str], path: Path | str) -> None:
    """Raise :class:`BadDataFile` (a ValueError) naming the file and the missing column(s)."""
    missing = [c for c in required if c not in (fieldnames or ())]
    if missing:
        raise BadDataFile(path, f"missing column(s) {', '.join(missing)} in the header (line 1)", 1)


def _unreadable(path: Path | str, error: BaseException, line: int) -> BadDataFile:
    """The :class:`BadDataFile` for a read failure after line ``line`` (1: the header) was read."""
    what = {EOFError: "truncated (compressed stream ends early)",
            gzip.BadGzipFile: "not a gzip file"}.get(type(error), f"unreadable ({type(error).__name__}: {error})")
    return BadDataFile(path, what, line + 1 if line > 1 else None)


def _read_rows(path: Path | str, required: Iterable[str]) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` of a CSV file, header checked. Every read failure becomes a
    :class:`BadDataFile` naming the file and line; FileNotFoundError passes through."""
    line = 1
    try:
        with _open_text(path) as fh:
            reader = csv.DictReader(fh)
            _require_columns(reader.fieldnames, required, path)
            for rec in reader:
                line = reader.line_num
                yield line, rec
    except (FileNotFoundError, BadDataFile):
        raise
    except _READ_ERRORS as e:
        raise _unreadable(path, e, line) from None


def local_to_ns(naive: dt.datetime, tz: ZoneInfo, fold: int = 0) -> int | None:
    """Naive wall-clock time in ``tz`` -> epoch ns UTC.

    ``fold`` picks the first (0) or second (1) occurrence of an ambiguous time (DST fall-back).
    Returns None for a time that does not exist in ``tz`` (DST spring-forward gap).
    """
    aware = naive.replace(tzinfo=tz, fold=fold)
    utc = aware.astimezone(dt.timezone.utc)
    if utc.astimezone(tz).replace(tzinfo=None) != naive:  # nonexistent local time
        return None
    return _aware_to_ns(utc)


def _aware_to_ns(t: dt.datetime) -> int:
    """Aware datetime -> epoch ns, exact (integer arithmetic, no float)."""
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


def _dec(text: str | None) -> Decimal | None:
    """Parse a decimal field; None for empty or unparsable text (NaN is returned as NaN)."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _int_field(text: str | None) -> int | str:
    """Parse a non-negative integral count ("705" or "705.0"), at most :data:`MAX_VOLUME`.
    Returns the int or a reject reason."""
    v = _dec(text)
    if v is None:
        return "missing_or_bad_number"
    if not v.is_finite():
        return "nan"
    if v < 0:
        return "negative_size"
    if v > MAX_VOLUME:
        return "volume_out_of_range"
    if v != v.to_integral_value():
        return "non_integral_size"
    return int(v)


def _check_prices(prices: Iterable[Decimal | None], tick: Decimal, instrument: str | None = None) -> str | None:
    """Reason a set of price fields is unusable (None if fine): ``missing_or_bad_number``,
    ``nan``, ``non_positive_price``, ``price_out_of_range`` (outside the instrument's plausible
    range, :func:`domain.validation.plausible_range`; ``1e30`` or ``2**70``), ``off_tick``.
    Never raises."""
    prices = tuple(prices)
    for p in prices:
        if p is None:
            return "missing_or_bad_number"
        if not p.is_finite():
            return "nan"
    for p in prices:
        if p <= 0:
            return "non_positive_price"
    if instrument is not None:
        lo, hi = plausible_range(instrument)
        if any(p < lo or p > hi for p in prices):
            return "price_out_of_range"
    for p in prices:
        try:
            if p % tick != 0:
                return "off_tick"
        except ArithmeticError:  # beyond Decimal precision (only without an instrument's range)
            return "price_out_of_range"
    return None


def _resolve_symbol(raw: str | None, micro: bool) -> str | None:
    """Yahoo/Databento symbol -> our instrument, or None if unknown.

    ``"ES"`` / ``"ES=F"`` / ``"ESU4"`` -> root ``ES`` -> ``MES`` when ``micro``.
    """
    if raw is None:
        return None
    s = raw.strip().upper()
    if s.endswith("=F"):
        s = s[:-2]
    root = s
    m = re.fullmatch(rf"([A-Z]+?)([{MONTH_CODES}])(\d{{1,2}})", s)
    if s not in INSTRUMENTS and m:
        root = m.group(1)
    if micro:
        root = SYMBOL_MAP.get(root, root)
    return root if root in INSTRUMENTS else None


@functools.lru_cache(maxsize=256)
def _symbol_matches(raw: str | None, instrument: str) -> bool:
    """True if a row's ``symbol`` text may stand for ``instrument``: empty (no symbol column, or
    blank), the instrument itself, or a recorded symbol mapped to it (``ES``/``ES=F``/``ESM6`` for
    ``MES`` via :data:`SYMBOL_MAP`, or for ``ES``)."""
    if raw is None or not raw.strip():
        return True
    return instrument in (_resolve_symbol(raw, micro=True), _resolve_symbol(raw, micro=False))


_EPOCH_NAIVE = dt.datetime(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _plain_hour_offset_ns(zone: ZoneInfo, hour: dt.datetime) -> int | None:
    """The UTC offset (ns) of every wall-clock time in the local ``hour`` (naive, on the hour) of
    ``zone``, or None when the hour holds a transition, an ambiguous or a nonexistent time (both
    folds at both ends of the hour agree otherwise)."""
    last = hour + dt.timedelta(minutes=59, seconds=59, microseconds=999_999)
    offsets = {zone.utcoffset(t.replace(fold=f)) for t in (hour, last) for f in (0, 1)}
    if len(offsets) != 1:
        return None
    off = offsets.pop()
    return (off.days * 86_400 + off.seconds) * NS + off.microseconds * 1000


def _bar_timestamp(text: str | None, zone: ZoneInfo) -> tuple[dt.datetime, int] | str:
    """A bar file's timestamp text -> (naive local time, epoch ns) or a reject reason
    (``bad_timestamp``, ``nonexistent_local_time``). Never raises. An hour without a DST
    transition converts by its cached UTC offset (:func:`_plain_hour_offset_ns`), any other
    through :func:`local_to_ns`; both give the same epoch ns."""
    try:
        naive = dt.datetime.fromisoformat((text or "").strip())
        if naive.tzinfo is not None:
            naive = naive.astimezone(zone).replace(tzinfo=None)
        off = _plain_hour_offset_ns(zone, naive.replace(minute=0, second=0, microsecond=0))
        if off is not None:
            d = naive - _EPOCH_NAIVE
            return naive, (d.days * 86_400 + d.seconds) * NS + d.microseconds * 1000 - off
        ts = local_to_ns(naive, zone)
    except (ValueError, OverflowError, OSError):
        return "bad_timestamp"
    if ts is None:
        return "nonexistent_local_time"
    return naive, ts


_BarRecord = tuple[int, str, Decimal, Decimal, Decimal, Decimal, int, "dt.datetime | str"]
"""A bar file row that passed the per-row checks: ``(epoch ns, instrument, open, high, low, close,
volume, naive local time or its ISO text)``."""


def _plain_price(p: Decimal | None, rng: tuple[Decimal, Decimal], tick: Decimal) -> bool:
    """A price no check of :func:`_check_prices` drops: finite, inside the positive plausible
    range ``rng`` (points) and on the ``tick`` grid."""
    return p is not None and p.is_finite() and 0 < rng[0] <= p <= rng[1] and not p % tick


def _bar_record(rec: dict, instrument: str | None, zone: ZoneInfo,
                ranges: dict[str, tuple[Decimal, Decimal]]) -> _BarRecord | str:
    """The per-row checks of :func:`load_bar_csv` on one ``csv.DictReader`` record (a missing
    field is None): the record, or the reason it is dropped (the first problem found, in the order
    :func:`load_bar_csv` lists)."""
    if instrument is not None:
        if not _symbol_matches(rec.get("symbol"), instrument):
            return "wrong_symbol"
        sym = instrument
    else:
        sym = _resolve_symbol(rec.get("symbol"), micro=True)
        if sym is None:
            return "unknown_instrument"
    tick = INSTRUMENTS[sym].tick_size
    o, h, lo, c = _dec(rec.get("open")), _dec(rec.get("high")), _dec(rec.get("low")), _dec(rec.get("close"))
    rng = ranges.get(sym)
    if rng is None:
        rng = ranges[sym] = plausible_range(sym)
    if not (_plain_price(o, rng, tick) and _plain_price(h, rng, tick) and _plain_price(lo, rng, tick)
            and _plain_price(c, rng, tick) and lo <= o <= h and lo <= c <= h):  # else find the reason
        reason = _check_prices((o, h, lo, c), tick, sym)
        if reason:
            return reason
    if h < lo:
        return "high_below_low"
    if not (lo <= o <= h and lo <= c <= h):
        return "open_close_outside_range"
    vol = _int_field(rec.get("volume"))
    if isinstance(vol, str):
        return vol
    when = _bar_timestamp(rec.get("datetime"), zone)
    if isinstance(when, str):
        return when
    return when[1], sym, o, h, lo, c, vol, when[0]


def _read_table(path: Path | str, required: Iterable[str]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV file, blank lines skipped (as ``csv.DictReader`` skips them);
    the same checks and errors as :func:`_read_rows`."""
    line = 1
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            _require_columns(header, required, path)
            rows = []
            for row in reader:
                if row:
                    line = reader.line_num
                    rows.append(row)
            return header, rows
    except (FileNotFoundError, BadDataFile):
        raise
    except _READ_ERRORS as e:
        raise _unreadable(path, e, line) from None


_PLAIN_TIME = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d")
"""Timestamps :func:`_table_records` converts in bulk; any other spelling is converted per row."""


class _PlainPrices(dict):
    """Price text -> its Decimal when no check of :func:`_check_prices` drops it
    (:func:`_plain_price`), else None; each distinct text is parsed on first lookup."""

    __slots__ = ("rng", "tick")

    def __init__(self, rng: tuple[Decimal, Decimal], tick: Decimal) -> None:
        super().__init__()
        self.rng, self.tick = rng, tick

    def __missing__(self, text: str) -> Decimal | None:
        p = _dec(text)
        p = self[text] = p if _plain_price(p, self.rng, self.tick) else None
        return p


def _table_records(header: list[str], rows: list[list[str]], instrument: str,
                   zone: ZoneInfo) -> Iterator[_BarRecord | str]:
    """:func:`_bar_record` of every row (:func:`_read_table`; a missing field is None, a column
    named twice takes its last field, as in ``csv.DictReader``), in file order.

    Each distinct text of a field is parsed and checked once (prices, volume, symbol); a row whose
    every field passes is made from those, and its timestamp converted in bulk when the text is
    ``YYYY-MM-DD HH:MM:SS`` and its local hour has one UTC offset (:func:`_plain_hour_offset_ns`),
    which is how :func:`_bar_timestamp` converts it. Every other row goes through
    :func:`_bar_record` itself, so it is dropped for the same reason."""
    import numpy as np

    pos = {name: i for i, name in enumerate(header)}
    prices = _PlainPrices(plausible_range(instrument), INSTRUMENTS[instrument].tick_size)
    volumes: dict[str, int | str] = {}
    symbols: dict[str, bool] = {}
    width = max(pos[c] for c in BAR_COLUMNS[:-1]) + 1
    i_sym = pos.get("symbol")
    i_time, i_vol = pos["datetime"], pos["volume"]
    i_px = [pos[c] for c in ("open", "high", "low", "close")]
    fast: list[tuple[Decimal, Decimal, Decimal, Decimal, int] | None] = []
    i_o, i_h, i_lo, i_c = i_px
    for row in rows:
        if len(row) < width or (i_sym is not None and i_sym >= len(row)):
            fast.append(None)
            continue
        if i_sym is not None:
            sym_ok = symbols.get(row[i_sym])
            if sym_ok is None:
                sym_ok = symbols[row[i_sym]] = _symbol_matches(row[i_sym], instrument)
            if not sym_ok:
                fast.append(None)
                continue
        o, h, lo, c = prices[row[i_o]], prices[row[i_h]], prices[row[i_lo]], prices[row[i_c]]
        vol = volumes.get(row[i_vol])
        if vol is None:
            vol = volumes[row[i_vol]] = _int_field(row[i_vol])
        if (o is None or h is None or lo is None or c is None or isinstance(vol, str)
                or not (lo <= o <= h and lo <= c <= h) or not _PLAIN_TIME.fullmatch(row[i_time])):
            fast.append(None)
            continue
        fast.append((o, h, lo, c, vol))
    texts = [row[i_time] if f is not None else "1970-01-01 00:00:00" for row, f in zip(rows, fast)]
    try:
        naive_ns = np.array(texts, dtype="datetime64[s]").astype(np.int64) * NS
    except ValueError:  # a plain-looking text that is no date (month 13): every row converted alone
        naive_ns = None
    offsets: dict[int, int | None] = {}
    hour_ns = 3600 * NS
    naive = naive_ns.tolist() if naive_ns is not None else None
    for k, (row, f) in enumerate(zip(rows, fast)):
        if f is not None and naive is not None:
            t = naive[k]
            hour = t // hour_ns
            off = offsets.get(hour, False)
            if off is False:
                off = offsets[hour] = _plain_hour_offset_ns(zone, _EPOCH_NAIVE + dt.timedelta(hours=hour))
            if off is not None:
                yield t - off, instrument, f[0], f[1], f[2], f[3], f[4], row[i_time]
                continue
        rec = {name: (row[i] if i < len(row) else None) for name, i in pos.items()}
        yield _bar_record(rec, instrument, zone, {})


def load_bar_csv(path: Path | str, instrument: str | None = None, tz: str = "America/New_York",
                 period_s: int | None = None) -> tuple[list[BarRow], collections.Counter]:
    """Load a Yahoo-style bar file (naive local timestamps labelled by bar start).

    Args:
        path: ``.csv`` or ``.csv.gz`` with columns :data:`BAR_COLUMNS`.
        instrument: our symbol for every row (e.g. ``"MES"``); a row whose ``symbol`` stands for
            another instrument (an ``NQ`` row in the ES file) is dropped as ``wrong_symbol``. If
            None, each row's ``symbol`` column is mapped (``ES`` -> ``MES``, ``NQ`` -> ``MNQ`` via
            :data:`SYMBOL_MAP`) and the first row's instrument is the file's.
        tz: IANA zone of the naive timestamps (Yahoo files: US/Eastern).
        period_s: bar length in seconds; None infers it as the most common positive difference
            between consecutive kept timestamps (ties -> the smaller).

    Returns:
        ``(rows, rejects)``: rows in time order, and a Counter of dropped rows by reason (every
        dropped row is counted once, under the first problem found, in this order):
        ``unknown_instrument``, ``wrong_symbol`` (the row's symbol is not ``instrument``),
        ``missing_or_bad_number``, ``nan``, ``non_positive_price``, ``price_out_of_range``
        (outside the instrument's plausible range, :func:`domain.validation.plausible_range`),
        ``off_tick``, ``high_below_low``, ``open_close_outside_range``, ``negative_size``,
        ``volume_out_of_range`` (above :data:`MAX_VOLUME`), ``non_integral_size``,
        ``bad_timestamp``, ``nonexistent_local_time``, ``symbol_mismatch`` (a second symbol in a
        file read without ``instrument``), ``duplicate_timestamp``, ``out_of_order``,
        ``short_interval`` (closer than one period to the previous bar), ``period_unknown``
        (fewer than two rows and no ``period_s``).

    Raises:
        FileNotFoundError: no such file.
        BadDataFile (a ValueError): not gzip, truncated gzip, not UTF-8, malformed CSV, required
            columns missing; the message names the file and the line.
        UnknownInstrumentError: ``instrument`` is given but unknown.
    """
    zone = ZoneInfo(tz)
    if instrument is not None:
        get_instrument(instrument)
    rejects: collections.Counter = collections.Counter()
    ranges: dict[str, tuple[Decimal, Decimal]] = {}
    parsed: list[tuple[int, str, Decimal, Decimal, Decimal, Decimal, int]] = []
    file_symbol: str | None = None
    required = BAR_COLUMNS if instrument is None else BAR_COLUMNS[:-1]
    if instrument is not None:  # distinct texts parsed once, timestamps in bulk
        records: Iterable[_BarRecord | str] = _table_records(*_read_table(path, required), instrument, zone)
    else:
        records = (_bar_record(rec, instrument, zone, ranges) for _line, rec in _read_rows(path, required))
    for rec in records:
        if isinstance(rec, str):
            rejects[rec] += 1
            continue
        ts, sym, o, h, lo, c, vol, when = rec
        if parsed and ts <= parsed[-1][0]:
            # DST fall-back: the repeated hour is the second occurrence of the local time.
            naive = when if isinstance(when, dt.datetime) else dt.datetime.fromisoformat(when)
            ts2 = local_to_ns(naive, zone, fold=1)
            if ts2 is not None and ts2 > parsed[-1][0]:
                ts = ts2
        if file_symbol is None:
            file_symbol = sym
        elif sym != file_symbol:
            rejects["symbol_mismatch"] += 1
            continue
        if parsed and ts == parsed[-1][0]:
            rejects["duplicate_timestamp"] += 1
            continue
        if parsed and ts < parsed[-1][0]:
            rejects["out_of_order"] += 1
            continue
        parsed.append((ts, sym, o, h, lo, c, vol))

    if period_s is None:
        diffs = collections.Counter(b[0] - a[0] for a, b in zip(parsed, parsed[1:]))
        if not diffs:
            if parsed:
                rejects["period_unknown"] += len(parsed)
            return [], rejects
        best = max(diffs.values())
        period_s = min(d for d, n in diffs.items() if n == best) // NS
    period_ns = period_s * NS
    rows: list[BarRow] = []
    for ts, sym, o, h, lo, c, vol in parsed:
        if rows and ts - rows[-1].start_ns < period_ns:
            rejects["short_interval"] += 1
            continue
        rows.append(BarRow(sym, ts, period_s, o, h, lo, c, vol))
    return rows, rejects


BAR_PATHS = ("adaptive", "adverse")
"""The intra-bar paths :func:`bar_path` knows (module docstring)."""


def bar_path(row: BarRow, mode: str = "adaptive", position: int = 0) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """The four replay prices of a bar.

    ``adaptive``: O-L-H-C if ``close >= open`` else O-H-L-C (the bar's direction comes last).
    ``adverse``: the extreme against ``position`` (signed contracts held when the bar opens) first:
    long -> O-L-H-C, short -> O-H-L-C (the deepest drawdown of the bar comes before its recovery,
    so a loss limit or a stop meets the worst price first); flat -> the reverse of ``adaptive``
    (the bar's direction first).
    Raises ValueError for an unknown mode.
    """
    if mode not in BAR_PATHS:
        raise ValueError(f"unknown bar path {mode!r}; use one of {BAR_PATHS}")
    adaptive_low_first = row.close >= row.open
    if mode == "adaptive":
        low_first = adaptive_low_first
    else:
        low_first = position > 0 if position else not adaptive_low_first
    if low_first:
        return row.open, row.low, row.high, row.close
    return row.open, row.high, row.low, row.close


@functools.lru_cache(maxsize=65536)
def path_step(price: Decimal, step_bp: float, tick: Decimal) -> Decimal:
    """The longest move between two replayed prints of a bar: ``step_bp`` basis points of
    ``price``, rounded down to the tick grid, at least one tick (points). Memoised (a session
    opens its bars at a few hundred prices)."""
    step = (price * Decimal(str(step_bp)) / 10_000 // tick) * tick
    return max(step, tick)


def bar_to_ticks(row: BarRow, seq_start: int = 0, path: tuple[Decimal, ...] | None = None,
                 step_bp: float | None = None) -> list[TradeTick]:
    """Replay one bar as trade ticks (see the module docstring for the path, times and sizes).

    Args:
        row: the bar.
        seq_start: ``seq`` of the first path point; the others get ``seq_start + 1 .. + 3``.
        path: the four prices (:func:`bar_path`); default the ``adaptive`` path.
        step_bp: when given, a move between two path points longer than :func:`path_step` (basis
            points of the open) is replayed as prints at most that far apart, spread evenly in time
            between the two points (module docstring, "Continuous path"); None = the four points only.
    Returns: the 4 path points with ``ts_ns`` = start + k * period / 4 (k = 0..3, integer ns),
        sizes summing to ``row.volume`` (each at least 1 contract, see the module docstring), and
        with ``step_bp`` the prints in between (size 1 each, taken from the point they lead to
        while it keeps at least 1; ``seq`` of that point).
    """
    period_ns = row.period_s * NS
    base = row.volume // 4
    first = base if base > 0 else 1
    sizes = [first, first, first, max(1, row.volume - 3 * base)]
    prices = path or bar_path(row)
    start = row.start_ns
    times = (start, start + period_ns // 4, start + 2 * period_ns // 4, start + 3 * period_ns // 4)
    inst = row.instrument
    if step_bp is not None:
        tick = INSTRUMENTS[inst].tick_size if inst in INSTRUMENTS else Decimal("0.25")
        step = path_step(row.open, step_bp, tick)
        p0, p1, p2, p3 = prices
        if abs(p1 - p0) > step or abs(p2 - p1) > step or abs(p3 - p2) > step:
            return _stepped_ticks(inst, times, prices, sizes, seq_start, tick, int(step / tick))
    return [TradeTick(inst, times[0], prices[0], sizes[0], seq_start),
            TradeTick(inst, times[1], prices[1], sizes[1], seq_start + 1),
            TradeTick(inst, times[2], prices[2], sizes[2], seq_start + 2),
            TradeTick(inst, times[3], prices[3], sizes[3], seq_start + 3)]


def _stepped_ticks(inst: str, times: tuple[int, ...], prices: tuple[Decimal, ...], sizes: list[int], seq_start: int,
                   tick: Decimal, step_ticks: int) -> list[TradeTick]:
    """:func:`bar_to_ticks` of a bar with a move longer than ``step_ticks`` ticks between two of its
    path points: the four points with the prints in between."""
    out = [TradeTick(inst, times[0], prices[0], sizes[0], seq_start)]
    for k in range(1, 4):
        a, b = prices[k - 1], prices[k]
        dist = int(abs(b - a) / tick)  # ticks from a to b (both on the grid)
        n = -(-dist // step_ticks)  # steps of at most ``step`` from a to b (int ceil)
        if n > 1:
            inner = n - 1
            take = min(inner, sizes[k] - 1)  # volume for the inner prints, while the point keeps >= 1
            sizes[k] -= take
            step_px = tick if b > a else -tick
            span = times[k] - times[k - 1]
            for j in range(1, n):  # floor(dist * j / n) ticks from a: the j-th of n even steps, on the grid
                out.append(TradeTick(inst, times[k - 1] + span * j // n, a + step_px * (dist * j // n), 1,
                                     seq_start + k))
        out.append(TradeTick(inst, times[k], b, sizes[k], seq_start + k))
    return out


@functools.lru_cache(maxsize=8)
def _load_bars_cached(path: str, mtime_ns: int, instrument: str) -> tuple[list[BarRow], collections.Counter]:
    """:func:`load_bar_csv` memoized per (file, modification time, instrument): opening a source
    twice (first to find the trading days) parses the file once. Callers must not mutate the rows."""
    return load_bar_csv(path, instrument=instrument)


# --------------------------------------------------------------------------- Databento CSV

_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?")


def parse_utc_ns(text: str) -> int | None:
    """Timestamp text -> epoch ns, keeping all 9 fractional digits.

    Accepts ``2024-07-01 23:58:01.218218853+00:00`` (Databento CSV), ``...Z``, an explicit offset,
    no offset (taken as UTC), or a bare integer of epoch nanoseconds. Returns None if unparsable.
    """
    text = (text or "").strip()
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= 19 else None
    m = _TS_RE.fullmatch(text)
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, off = m.groups()
    try:
        base = dt.datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss), tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    ns = _aware_to_ns(base) + (int(frac.ljust(9, "0")) if frac else 0)
    if off and off != "Z":
        sign = 1 if off[0] == "+" else -1
        digits = off[1:].replace(":", "")
        ns -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * NS
    return ns


def _seq(rec: dict, fallback: int) -> int:
    try:
        return int((rec.get("sequence") or "").strip())
    except ValueError:
        return fallback


def load_databento_trades(path: Path | str, micro: bool = True) -> tuple[list[TradeTick], collections.Counter]:
    """Load a Databento trades CSV (``ts_event,...,symbol,price,size,...,action,...,sequence``).

    ``ts_ns`` = ``ts_event`` (UTC, ns); ``seq`` = the ``sequence`` column (row number if absent).
    The symbol root before the month code is the instrument (``ESU4`` -> ``ES``), mapped through
    :data:`SYMBOL_MAP` when ``micro`` (default: ``ES`` -> ``MES``).

    Returns ``(ticks, rejects)``; reject reasons: ``unknown_instrument``, ``not_a_trade`` (action
    other than ``T``), ``bad_timestamp``, ``out_of_order``, ``missing_or_bad_number``, ``nan``,
    ``non_positive_price``, ``price_out_of_range``, ``off_tick``, ``negative_size``,
    ``volume_out_of_range``, ``non_integral_size``, ``zero_size``.
    Raises FileNotFoundError, or :class:`BadDataFile` (a ValueError naming the file and line) if
    the file is unreadable or required columns are missing.
    """
    rejects: collections.Counter = collections.Counter()
    out: list[TradeTick] = []
    for i, (_line, rec) in enumerate(_read_rows(path, TRADE_COLUMNS)):
        sym = _resolve_symbol(rec.get("symbol"), micro)
        if sym is None:
            rejects["unknown_instrument"] += 1
            continue
        action = (rec.get("action") or "T").strip()
        if action != "T":
            rejects["not_a_trade"] += 1
            continue
        ts = parse_utc_ns(rec.get("ts_event") or "")
        if ts is None:
            rejects["bad_timestamp"] += 1
            continue
        price = _dec(rec.get("price"))
        reason = _check_prices((price,), INSTRUMENTS[sym].tick_size, sym)
        if reason:
            rejects[reason] += 1
            continue
        size = _int_field(rec.get("size"))
        if isinstance(size, str):
            rejects[size] += 1
            continue
        if size == 0:
            rejects["zero_size"] += 1
            continue
        if out and ts < out[-1].ts_ns:
            rejects["out_of_order"] += 1
            continue
        out.append(TradeTick(sym, ts, price, size, _seq(rec, i)))
    return out, rejects


def load_databento_quotes(path: Path | str, micro: bool = True) -> tuple[list[QuoteTick], collections.Counter]:
    """Load a Databento MBP-1 CSV as top-of-book quotes (one QuoteTick per book record).

    Uses ``bid_px/ask_px/bid_sz/ask_sz`` (the book *after* the event); ``ts_ns`` = ``ts_event``
    (UTC, ns); ``seq`` = ``sequence``. Symbol mapping as :func:`load_databento_trades`.

    Returns ``(quotes, rejects)``; reject reasons: ``unknown_instrument``, ``bad_timestamp``,
    ``out_of_order``, ``missing_or_bad_number``, ``nan`` (e.g. an empty book side),
    ``non_positive_price``, ``price_out_of_range``, ``off_tick``, ``crossed`` (bid >= ask),
    ``negative_size``, ``volume_out_of_range``, ``non_integral_size``. Raises FileNotFoundError,
    or :class:`BadDataFile` (a ValueError naming the file and line) if the file is unreadable or
    required columns are missing.
    """
    rejects: collections.Counter = collections.Counter()
    out: list[QuoteTick] = []
    for i, (_line, rec) in enumerate(_read_rows(path, QUOTE_COLUMNS)):
        sym = _resolve_symbol(rec.get("symbol"), micro)
        if sym is None:
            rejects["unknown_instrument"] += 1
            continue
        ts = parse_utc_ns(rec.get("ts_event") or "")
        if ts is None:
            rejects["bad_timestamp"] += 1
            continue
        bid, ask = _dec(rec.get("bid_px")), _dec(rec.get("ask_px"))
        reason = _check_prices((bid, ask), INSTRUMENTS[sym].tick_size, sym)
        if reason:
            rejects[reason] += 1
            continue
        if bid >= ask:
            rejects["crossed"] += 1
            continue
        bsz, asz = _int_field(rec.get("bid_sz")), _int_field(rec.get("ask_sz"))
        if isinstance(bsz, str) or isinstance(asz, str):
            rejects[bsz if isinstance(bsz, str) else asz] += 1
            continue
        if out and ts < out[-1].ts_ns:
            rejects["out_of_order"] += 1
            continue
        out.append(QuoteTick(sym, ts, bid, ask, bsz, asz, _seq(rec, i)))
    return out, rejects


# --------------------------------------------------------------------------- replay source

_MERGE_KEY = operator.attrgetter("ts_ns", "instrument", "seq")
"""Replay order of ticks: ``(ts_ns, instrument, seq)``."""


class ReplaySource:
    """Recorded bar files replayed as one merged, deterministic stream of trade ticks.

    Args:
        bar_files: instrument -> bar file (``{"MES": Path(".../ES_2min.csv.gz")}``); the key is
            the instrument every row is attributed to.
        start, end: first and last trading day to replay (inclusive; CME/Topstep trading days in
            America/Chicago, 17:00 CT boundary, :func:`domain.calendar.trading_day` of the bar
            start). None = from the first / to the last day in the data.
        warmup_days: number of trading days before the first replayed day whose bars
            :meth:`warmup_bars` returns (for seeding indicators; never replayed as ticks).
        trade_files: instrument -> Databento trades CSV (:func:`load_databento_trades`): bars
            whose trades reproduce them are replayed as those trades (module docstring).

    Attributes:
        rejects: Counter of dropped rows by reason, summed over all files
            (``rejects_by_instrument`` keeps them per instrument).
        bar_count: number of bars replayed (all instruments, inside ``[start, end]``).
        trade_paths: Counter of replayed bars ``bars from trades`` / ``bars not matched by trades``
            (bars the trade files reach; the others take the four-point path).

    Raises FileNotFoundError / ValueError / UnknownInstrumentError as :func:`load_bar_csv`, and
    ValueError if ``warmup_days < 0`` or ``start > end``.
    """

    def __init__(self, bar_files: dict[str, Path | str], *, start: dt.date | None = None,
                 end: dt.date | None = None, warmup_days: int = 1,
                 trade_files: dict[str, Path | str] | None = None) -> None:
        if warmup_days < 0:
            raise ValueError("warmup_days must be >= 0")
        if start is not None and end is not None and start > end:
            raise ValueError(f"start {start} is after end {end}")
        self.rejects: collections.Counter = collections.Counter()
        self.rejects_by_instrument: dict[str, collections.Counter] = {}
        self._bars: dict[str, list[BarRow]] = {}
        self._warmup: dict[str, list[BarRow]] = {}
        self._seq0: dict[str, int] = {}
        loaded: dict[str, tuple[list[BarRow], list[dt.date]]] = {}
        all_days: set[dt.date] = set()
        for inst in sorted(bar_files):
            path = Path(bar_files[inst])
            rows, rej = _load_bars_cached(str(path.resolve()), path.stat().st_mtime_ns, inst)
            rej = collections.Counter(rej)
            self.rejects_by_instrument[inst] = rej
            self.rejects.update(rej)
            days = [trading_day(r.start_ns) for r in rows]
            loaded[inst] = (rows, days)
            all_days.update(days)
        self._days = sorted(d for d in all_days
                            if (start is None or d >= start) and (end is None or d <= end))
        first = self._days[0] if self._days else None
        before = sorted(d for d in all_days if first is not None and d < first)
        warm_days = set(before[len(before) - warmup_days:]) if warmup_days else set()
        keep = set(self._days)
        for inst, (rows, days) in loaded.items():
            idx = [i for i, d in enumerate(days) if d in keep]
            self._bars[inst] = [rows[i] for i in idx]
            # seq of the first replayed tick = 4 x index of the bar in the whole file (stable).
            self._seq0[inst] = 4 * idx[0] if idx else 0
            self._warmup[inst] = [r for r, d in zip(rows, days) if d in warm_days]
        self.bar_count = sum(len(b) for b in self._bars.values())
        self.key = (tuple(sorted((inst, str(Path(p).resolve()), Path(p).stat().st_mtime_ns)
                                 for inst, p in bar_files.items())),
                    tuple(sorted((inst, str(Path(p).resolve()), Path(p).stat().st_mtime_ns)
                                 for inst, p in (trade_files or {}).items())),
                    tuple(self._days), warmup_days)
        """Identifies what this source replays (files, their modification times, days): equal keys
        replay equal streams (``infra.feeds.ReplayData.routed``)."""
        self.trade_paths: collections.Counter = collections.Counter()
        self._bar_trades: dict[str, dict[int, list[TradeTick]]] = {}
        for inst, path in sorted((trade_files or {}).items()):
            if inst in self._bars:
                self._bar_trades[inst] = self._match_trades(inst, Path(path))

    def _match_trades(self, inst: str, path: Path) -> dict[int, list[TradeTick]]:
        """Bar index -> the recorded trades replayed for it instead of a four-point path.

        A bar takes its trades (those with ``start <= ts_event < end``) only when they reproduce
        the bar exactly: first / highest / lowest / last price = open / high / low / close and the
        sizes sum to its volume. A bar the recording covers only in part (its edges) fails that
        test and keeps the path. Counted in :attr:`trade_paths` (``bars from trades``,
        ``bars not matched by trades``); the file's dropped rows in :attr:`rejects`."""
        ticks, rej = load_databento_trades(path, micro=inst in SYMBOL_MAP.values())
        rej = collections.Counter(rej)
        other = sum(1 for t in ticks if t.instrument != inst)
        if other:
            rej["trades_of_another_instrument"] += other
        ticks = [t for t in ticks if t.instrument == inst]
        self.rejects.update(rej)
        self.rejects_by_instrument.setdefault(inst, collections.Counter()).update(rej)
        times = [t.ts_ns for t in ticks]
        out: dict[int, list[TradeTick]] = {}
        if not ticks:
            return out
        for i, row in enumerate(self._bars[inst]):
            if row.end_ns <= times[0] or row.start_ns > times[-1]:
                continue
            lo, hi = bisect.bisect_left(times, row.start_ns), bisect.bisect_left(times, row.end_ns)
            inside = ticks[lo:hi]
            prices = [t.price for t in inside]
            if inside and (prices[0], max(prices), min(prices), prices[-1], sum(t.size for t in inside)) == \
                    (row.open, row.high, row.low, row.close, row.volume):
                seq = self._seq0[inst] + 4 * i
                out[i] = [TradeTick(inst, t.ts_ns, t.price, t.size, seq + k) for k, t in enumerate(inside)]
                self.trade_paths["bars from trades"] += 1
            else:
                self.trade_paths["bars not matched by trades"] += 1
        return out

    @property
    def instruments(self) -> list[str]:
        """Replayed instruments, sorted."""
        return sorted(self._bars)

    def trading_days(self) -> list[dt.date]:
        """Replayed trading days (America/Chicago), ascending."""
        return list(self._days)

    def bars(self, instrument: str) -> list[BarRow]:
        """The replayed bars of ``instrument`` (empty list if unknown)."""
        return list(self._bars.get(instrument, ()))

    def warmup_bars(self, instrument: str) -> list[BarRow]:
        """Bars of the ``warmup_days`` trading days before the first replayed day (may be empty)."""
        return list(self._warmup.get(instrument, ()))

    def replay_plan(self, instrument: str) -> tuple[list[BarRow], int, bool]:
        """``(bars, seq, recorded)``: the replayed bars of ``instrument`` (not to be mutated), the
        ``seq`` of the first one's first print (bar ``i`` starts at ``seq + 4 * i``), and whether
        recorded trades replace any of them (:meth:`_match_trades`)."""
        return self._bars.get(instrument, []), self._seq0.get(instrument, 0), bool(self._bar_trades.get(instrument))

    def _ticks(self, instrument: str, after_ns: int | None, path: str = "adaptive",
               position: Callable[[str], int] | None = None, step_bp: float | None = None) -> Iterator[TradeTick]:
        bars = self._bars[instrument]
        first = 0
        if after_ns is not None:
            # skip whole bars that end at or before after_ns (no tick of theirs can be later)
            first = bisect.bisect_right(bars, after_ns, key=lambda r: r.end_ns - 1)
        seq0 = self._seq0[instrument]
        recorded = self._bar_trades.get(instrument, {})
        for i in range(first, len(bars)):
            row = bars[i]
            ticks = recorded.get(i)
            if ticks is None:
                held = position(instrument) if position is not None and path != "adaptive" else 0
                ticks = bar_to_ticks(row, seq0 + 4 * i, bar_path(row, path, held), step_bp)
            if after_ns is None:
                yield from ticks
            else:
                yield from (t for t in ticks if t.ts_ns > after_ns)

    def events(self, after_ns: int | None = None, path: str = "adaptive",
               position: Callable[[str], int] | None = None, step_bp: float | None = None) -> Iterator[TradeTick]:
        """All instruments' ticks merged by ``(ts_ns, instrument, seq)``.

        Args:
            after_ns: epoch ns UTC; ticks with ``ts_ns <= after_ns`` are skipped (resume after a
                crash from the last processed event time). None replays everything.
            path: intra-bar path mode (:func:`bar_path`).
            position: ``f(instrument) -> signed contracts`` held (``adverse``), read when a bar's
                ticks are made: the merge reads them as soon as the instrument's previous print is
                handed out, so it is the position before that print (the previous bar's close) is
                matched.
            step_bp: the continuous path's longest step (:func:`bar_to_ticks`), None = four points.
        Raises ValueError for an unknown path mode.
        """
        if path not in BAR_PATHS:
            raise ValueError(f"unknown bar path {path!r}; use one of {BAR_PATHS}")
        streams = [self._ticks(inst, after_ns, path, position, step_bp) for inst in self.instruments]
        return heapq.merge(*streams, key=_MERGE_KEY)

