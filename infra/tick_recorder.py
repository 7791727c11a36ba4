"""Tick recorder: the market hub's validated trades and quotes to daily gzip CSV files, and their replay.

Recording (paper on live data and live; ``runtime.record_ticks``, docs/operations.md "Tick recording")
-------------------------------------------------------------------------------------------------------
:class:`TickRecorder` is the ``recorder`` actor (a thread of its own, so disk never stalls the
decision loop). It subscribes to ``ticks.<SYM>`` (the trades the feed accepted) and
``quotes.<SYM>`` (the quotes the live feed accepted) and writes them to

    ``{record_ticks_dir}/{YYYY-MM-DD}/{SYM}_trades.csv.gz``
    ``{record_ticks_dir}/{YYYY-MM-DD}/{SYM}_quotes.csv.gz``

one file per instrument, kind and CME trading day (America/Chicago, 17:00 CT boundary,
:func:`domain.calendar.trading_day` of the tick's event time), in the Databento CSV layout that
:func:`infra.replay.load_databento_trades` / :func:`~infra.replay.load_databento_quotes` read
(:data:`TRADE_FIELDS`, :data:`QUOTE_FIELDS`): ``ts_event`` is the tick's event time (UTC, all nine
fractional digits), ``ts_recv`` the wall clock (UTC) when the recorder wrote the row, ``symbol``
our instrument (``MES``), prices as plain decimals, sizes in contracts (the gateway sends no quote
sizes: 0), ``sequence`` the hub's per-instrument arrival counter (restarts at 0 with the hub).

Durability: rows are buffered and written at least every :data:`FLUSH_S` second (on the next tick
after that, and on the node's heartbeat ``FlushTicks``), each write one complete gzip member
appended to the file (``gzip`` and :mod:`gzip` read concatenated members as one stream). A
``kill -9`` therefore loses the rows of the last second at most, plus, if it struck inside a
write, that member: the next recorder to open the file cuts the broken member off and writes its
complete lines again before appending (:func:`scan_gzip`); a file corrupt inside (a disk fault,
not a cut write) is renamed ``<name>.damaged-<ns>`` whole and a new file begun. Nothing is
fsynced: an OS crash may lose what the page cache held.

Recording never blocks or stops trading: every error (disk full, permission) is logged (the first
few, then every 100th) and counted in :attr:`TickRecorder.errors`; rows that could not be written
stay buffered for the next flush, up to :data:`MAX_PENDING_ROWS` per file (older ones are dropped
and counted in :attr:`TickRecorder.dropped`).

Replay of recordings
--------------------
A data folder (``--data DIR``) with recording day folders and no bar file is replayed as
recorded: :class:`RecordedSource` reads the days' trade files back with the Databento loaders (a
file with a damaged tail is read up to the damage, the loss counted: :func:`read_recording`)
and emits the trades at their own times, prices, sizes and sequence; the node's bar builders make
the bars at every period the strategies ask for (``bar_s: 1`` gives 1-second bars). The recorded
quotes are replayed too when a strategy reads quotes (``StrategyPlugin.wants_quotes``: the ML
scalper with a model trained on quote features; ``open_recordings(quotes=True)``); the feed routes
them to ``quotes.<SYM>``, as the live feed does.

Times are epoch ns UTC; trading days America/Chicago.
"""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import heapq
import os
import re
import tempfile
import time
import zlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

from loguru import logger

from domain.calendar import NS, trading_day
from domain.handler import Out, RejectedMessage
from domain.messages import QuoteTick, TradeTick
from infra.feeds import DATA_FILES, ReplayData
from infra.replay import BadDataFile, load_databento_quotes, load_databento_trades

RECORDER = "recorder"
"""Actor name of the tick recorder."""

TRADE_FIELDS = ("ts_event", "ts_recv", "symbol", "price", "size", "action", "sequence")
"""Columns of a recorded trades file (a subset of Databento's trades CSV; ``action`` is ``T``)."""

QUOTE_FIELDS = ("ts_event", "ts_recv", "symbol", "bid_px", "ask_px", "bid_sz", "ask_sz", "sequence")
"""Columns of a recorded quotes file (a subset of Databento's MBP-1 CSV)."""

KINDS = ("trades", "quotes")

FLUSH_S = 1.0
"""Longest time a recorded row waits in memory, seconds of wall time (while ticks or the node's
heartbeat arrive)."""

MAX_PENDING_ROWS = 200_000
"""Rows kept per file while writes fail; beyond that the oldest are dropped (and counted)."""

COMPRESS_LEVEL = 6

_DAY_DIR = re.compile(r"\d{4}-\d{2}-\d{2}")
_FILE = re.compile(r"([A-Z0-9]+)_(trades|quotes)\.csv\.gz")


@dataclass(frozen=True, slots=True)
class FlushTicks:
    """Tell the recorder to write what it holds (the node's heartbeat sends it). ``ts_ns``: wall
    clock, epoch ns UTC (informational)."""

    ts_ns: int = 0


def recording_path(root: Path | str, day: dt.date, instrument: str, kind: str) -> Path:
    """``{root}/{YYYY-MM-DD}/{instrument}_{kind}.csv.gz``; ``kind`` is ``trades`` or ``quotes``.
    Raises ValueError for another kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown recording kind {kind!r}; use one of {KINDS}")
    return Path(root) / day.isoformat() / f"{instrument}_{kind}.csv.gz"


def utc_text(ts_ns: int) -> str:
    """Epoch ns -> ``2024-07-01 23:58:01.218218853+00:00`` (Databento's CSV form, exact to the ns;
    :func:`infra.replay.parse_utc_ns` reads it back)."""
    sec, frac = divmod(int(ts_ns), NS)
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=sec)
    return f"{t:%Y-%m-%d %H:%M:%S}.{frac:09d}+00:00"


def _num(x: Decimal | int) -> str:
    """A price or size as plain decimal text (never ``5E+3``)."""
    return format(x, "f") if isinstance(x, Decimal) else str(int(x))


def trade_row(t: TradeTick, recv_ns: int) -> str:
    """One :data:`TRADE_FIELDS` CSV line (with its newline)."""
    return f"{utc_text(t.ts_ns)},{utc_text(recv_ns)},{t.instrument},{_num(t.price)},{int(t.size)},T,{int(t.seq)}\n"


def quote_row(q: QuoteTick, recv_ns: int) -> str:
    """One :data:`QUOTE_FIELDS` CSV line (with its newline)."""
    return (f"{utc_text(q.ts_ns)},{utc_text(recv_ns)},{q.instrument},{_num(q.bid)},{_num(q.ask)},"
            f"{int(q.bid_size)},{int(q.ask_size)},{int(q.seq)}\n")


# --------------------------------------------------------------------------- gzip members

@dataclass(frozen=True)
class GzipScan:
    """What :func:`scan_gzip` found.

    Attributes:
        data: the decompressed content of every intact member (empty unless asked for).
        intact_end: file offset (bytes) just after the last intact member.
        size: the file's size, bytes.
        tail: the complete lines of a truncated last member (its decompressed prefix up to the last
            newline); empty when the file ends on a member boundary or the damage is corruption.
        cut_bytes: decompressed bytes of the truncated member after its last newline (a partial row).
        problem: None for an intact file, else what is wrong and where (truncated / corrupt member).
    """

    data: bytes
    intact_end: int
    size: int
    tail: bytes
    cut_bytes: int
    problem: str | None

    @property
    def truncated(self) -> bool:
        """The damage is a last member that ends early (a cut write), not corruption."""
        return self.problem is not None and self.problem.startswith("truncated")


def scan_gzip(path: Path | str, keep: bool = True, chunk: int = 1 << 20) -> GzipScan:
    """Walk the gzip members of ``path`` (each checked: deflate stream, CRC-32 and length).

    A member that ends early (a write cut by ``kill -9``) yields its complete lines as ``tail``;
    a corrupt member (bad header, deflate error, CRC mismatch) ends the scan with nothing of it.
    ``keep``: return the intact members' content in ``data`` (False: only find the damage).
    Raises OSError (FileNotFoundError) when the file cannot be read.
    """
    out: list[bytes] = []
    member: list[bytes] = []
    intact_end = offset = 0
    d = zlib.decompressobj(31)
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            offset += len(block)
            data = block
            while data:
                try:
                    member.append(d.decompress(data))
                except zlib.error as e:
                    return GzipScan(b"".join(out), intact_end, os.fstat(fh.fileno()).st_size, b"", 0,
                                    f"corrupt gzip member at byte {intact_end}: {e}")
                if not d.eof:
                    break
                rest = d.unused_data
                intact_end = offset - len(rest)
                if keep:
                    out.append(b"".join(member))
                member = []
                d = zlib.decompressobj(31)
                data = rest
    if intact_end == offset:
        return GzipScan(b"".join(out), intact_end, offset, b"", 0, None)
    partial = b"".join(member)
    cut = partial.rfind(b"\n") + 1
    return GzipScan(b"".join(out), intact_end, offset, partial[:cut], len(partial) - cut,
                    f"truncated gzip member at byte {intact_end} of {offset}")


# --------------------------------------------------------------------------- the recorder

class TickRecorder:
    """Handler of the ``recorder`` actor (module docstring): trades and quotes to daily gzip CSVs.

    Args:
        root: the recording folder (``runtime.record_ticks_dir``, default ``{run_dir}/ticks``);
            created when the first row is written.
        flush_s: longest wall time a row is held before a write, seconds.
        wall_ns: wall clock, epoch ns UTC (``ts_recv``); monotonic: seconds, for the flush timing.

    Messages: :class:`~domain.messages.TradeTick`, :class:`~domain.messages.QuoteTick` (recorded),
    :class:`FlushTicks` (write now); anything else is a ``RejectedMessage``. ``handle`` never raises
    otherwise and returns no messages.

    Attributes:
        written: rows written, by kind (``trades``, ``quotes``).
        errors: failures by reason (``OSError`` errno names, ``bad_tick``, ``repair``...).
        dropped: rows lost by reason (``backlog``: over :data:`MAX_PENDING_ROWS` while writes failed).
        repaired: damaged files found: a truncated tail is cut off (its complete lines written
            again); a file corrupt inside is renamed ``<name>.damaged-<ns>`` and a new one begun.
    """

    LOG_FIRST = 5
    LOG_EVERY = 100

    def __init__(self, root: Path | str, flush_s: float = FLUSH_S, wall_ns: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic, max_pending_rows: int = MAX_PENDING_ROWS) -> None:
        self.root = Path(root)
        self.flush_s = flush_s
        self._wall_ns = wall_ns
        self._monotonic = monotonic
        self.max_pending_rows = max_pending_rows
        self.pending: dict[tuple[Path, str], list[str]] = {}
        self._ready: set[Path] = set()
        self._last_flush = monotonic()
        self._day: dt.date | None = None
        self.written: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.dropped: collections.Counter = collections.Counter()
        self.repaired = 0
        logger.info("tick recorder: trades and quotes to {}/<trading day>/<SYM>_<trades|quotes>.csv.gz", self.root)

    # ----------------------------------------------------------------- messages
    def handle(self, msg: Any) -> Out:
        if isinstance(msg, (TradeTick, QuoteTick)):
            self.record(msg)
            if self._monotonic() - self._last_flush >= self.flush_s:
                self.flush()
            return []
        if isinstance(msg, FlushTicks):
            self.flush()
            return []
        raise RejectedMessage(f"tick recorder: unexpected message {type(msg).__name__}")

    def record(self, tick: TradeTick | QuoteTick) -> None:
        """Buffer one tick's row in the file of its instrument, kind and trading day. Never raises."""
        try:
            kind = "trades" if isinstance(tick, TradeTick) else "quotes"
            day = trading_day(tick.ts_ns)
            recv = self._wall_ns()
            row = trade_row(tick, recv) if kind == "trades" else quote_row(tick, recv)
            if self._day is None or day > self._day:  # (another instrument's tick may still be on the old day)
                if self._day is not None:
                    self.flush()
                    logger.info("tick recorder: trading day {} begins ({})", day, self.counts())
                self._day = day
                self._ready = {p for p in self._ready if p.parent.name == day.isoformat()}
            self.pending.setdefault((recording_path(self.root, day, tick.instrument, kind), kind), []).append(row)
        except Exception as e:  # noqa: BLE001 - recording must never stop trading
            self._error("bad_tick", f"tick not recorded ({tick!r}): {e!r}")

    def flush(self) -> None:
        """Write every buffered row (one gzip member per file). Never raises: a failed write keeps
        its rows for the next flush (at most :data:`MAX_PENDING_ROWS` per file)."""
        self._last_flush = self._monotonic()
        for key in list(self.pending):
            rows = self.pending[key]
            if not rows:
                del self.pending[key]
                continue
            path, kind = key
            try:
                self._append(path, kind, rows)
            except Exception as e:  # noqa: BLE001 - recording must never stop trading
                reason = getattr(e, "errno", None)
                reason = os.strerror(reason) if isinstance(reason, int) else type(e).__name__
                self._error(reason, f"cannot write {path} ({len(rows)} rows kept for the next try): {e}")
                self._ready.discard(path)  # the next try checks the file's tail again
                over = len(rows) - self.max_pending_rows
                if over > 0:
                    del rows[:over]
                    self.dropped["backlog"] += over
                continue
            self.written[kind] += len(rows)
            del self.pending[key]

    def close(self) -> None:
        """Write what is buffered (the actor's stop or crash calls this)."""
        self.flush()
        logger.info("tick recorder: {} in {}", self.counts(), self.root)

    def counts(self) -> str:
        """One line of figures for the log."""
        extra = "".join(f", {name} {dict(c)}" for name, c in (("errors", self.errors), ("dropped", self.dropped)) if c)
        return (f"{self.written['trades']} trades and {self.written['quotes']} quotes written"
                + (f", {self.repaired} damaged file tail(s) repaired" if self.repaired else "") + extra)

    # ----------------------------------------------------------------- files
    def _append(self, path: Path, kind: str, rows: list[str]) -> None:
        head = b"" if path in self._ready else self._prepare(path, kind)
        member = gzip.compress(head + "".join(rows).encode("ascii"), compresslevel=COMPRESS_LEVEL, mtime=0)
        with open(path, "ab") as fh:
            start = fh.tell()
            try:
                fh.write(member)
                fh.flush()
            except BaseException:
                try:
                    fh.truncate(start)  # no half member left for the next append to follow
                except OSError:
                    pass
                raise
        self._ready.add(path)

    def _prepare(self, path: Path, kind: str) -> bytes:
        """First write to ``path`` by this recorder: the bytes the first member must start with
        (the header for a new or empty file; the complete lines of a truncated tail, which is cut off)."""
        header = ",".join(TRADE_FIELDS if kind == "trades" else QUOTE_FIELDS).encode("ascii") + b"\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            return header
        scan = scan_gzip(path, keep=False)
        if scan.problem is None:
            return b""
        self.repaired += 1
        if not scan.truncated:  # corrupt inside: keep the file aside whole, start a new one
            aside = path.with_name(f"{path.name}.damaged-{self._wall_ns()}")
            path.rename(aside)
            logger.error("tick recorder: {}: {}; moved to {} (not replayed), a new file begins", path,
                         scan.problem, aside.name)
            return header
        with open(path, "r+b") as fh:
            fh.truncate(scan.intact_end)
        logger.warning("tick recorder: {}: {}; cut at byte {}, {} complete row bytes written again{}", path,
                       scan.problem, scan.intact_end, len(scan.tail),
                       f", a partial row of {scan.cut_bytes} bytes lost" if scan.cut_bytes else "")
        if scan.intact_end == 0:
            return scan.tail if scan.tail.startswith(header) else header
        return scan.tail

    def _error(self, reason: str, text: str) -> None:
        self.errors[reason] += 1
        n = self.errors[reason]
        if n <= self.LOG_FIRST or n % self.LOG_EVERY == 0:
            logger.error("tick recorder: {} ({} so far: {})", text, reason, n)


# --------------------------------------------------------------------------- reading back

def read_recording(path: Path | str, kind: str | None = None) -> tuple[list, collections.Counter]:
    """A recorded file's ticks: ``(ticks, rejects)`` as :func:`infra.replay.load_databento_trades`
    (``kind`` ``trades``) or :func:`~infra.replay.load_databento_quotes` (``quotes``) return them,
    symbols read as written (``MES`` stays MES, ``ES`` stays ES). ``kind`` None: from the name.

    A file the loader refuses as truncated or corrupt gzip is read up to the damage: the intact
    members and the complete lines of a truncated last member; ``rejects`` then counts
    ``damaged_file_tail`` (1) and ``partial_row`` (the cut row, 0 or 1). Rows after a corrupt
    member are not recovered.

    Raises FileNotFoundError; :class:`infra.replay.BadDataFile` (a ValueError) for a file whose
    gzip is intact but whose CSV is not (missing columns, malformed line).
    """
    path = Path(path)
    if kind is None:
        m = _FILE.fullmatch(path.name)
        kind = m.group(2) if m else "trades"
    load = load_databento_trades if kind == "trades" else load_databento_quotes
    try:
        return load(path, micro=False)
    except BadDataFile as e:
        error = e
    scan = scan_gzip(path)
    if scan.problem is None:
        raise error
    logger.warning("recorded file {}: {}; read up to the damage", path, scan.problem)
    rejects: collections.Counter = collections.Counter(damaged_file_tail=1)
    if scan.cut_bytes:
        rejects["partial_row"] += 1
    text = scan.data + scan.tail
    if not text.strip():
        return [], rejects
    fd, tmp = tempfile.mkstemp(suffix=".csv", prefix="salvaged-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
        ticks, more = load(tmp, micro=False)
    finally:
        os.unlink(tmp)
    rejects.update(more)
    return ticks, rejects


def find_recordings(root: Path | str) -> dict[dt.date, dict[tuple[str, str], Path]]:
    """Recorded files under ``root``: trading day -> ``{(instrument, kind): path}`` (days ascending).
    A missing folder has none."""
    out: dict[dt.date, dict[tuple[str, str], Path]] = {}
    root = Path(root)
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not (d.is_dir() and _DAY_DIR.fullmatch(d.name)):
            continue
        try:
            day = dt.date.fromisoformat(d.name)
        except ValueError:
            continue
        files = {(m.group(1), m.group(2)): f for f in sorted(d.iterdir()) for m in [_FILE.fullmatch(f.name)] if m}
        if files:
            out[day] = files
    return out


def is_recording_dir(data_dir: Path | str, instruments: tuple[str, ...]) -> bool:
    """True when ``data_dir`` holds no bar file for any of ``instruments`` (:data:`infra.feeds.DATA_FILES`)
    and at least one recorded trades file of one of them: the node then replays the recordings."""
    data_dir = Path(data_dir)
    if any((data_dir / n).is_file() for sym in instruments for n in DATA_FILES.get(sym, ())):
        return False
    return any((sym, "trades") in files for files in find_recordings(data_dir).values() for sym in instruments)


class RecordedSource:
    """Recorded ticks replayed as one stream, in event time (the replay source of :class:`RecordedData`).

    Args:
        root: the recording folder (:func:`find_recordings`).
        instruments: our symbols to replay; each needs a trades file on at least one replayed day.
        start, end: first and last trading day to replay (inclusive, America/Chicago); None = all.
        warmup_days: trading days before ``start`` whose trades :meth:`warmup_trades` returns.
        quotes: also emit the recorded quotes (merged with the trades by time, instrument, sequence).

    Days are read when the replay reaches them (two kept in memory). ``rejects`` counts the rows
    the loaders dropped (and damaged files, :func:`read_recording`), by reason, for the days read.

    Raises:
        ValueError: an instrument with no recorded trades in the replayed days, no trading day
            between ``start`` and ``end``, ``start`` after ``end``.
    """

    KEEP_DAYS = 2

    def __init__(self, root: Path | str, instruments: tuple[str, ...], start: dt.date | None = None,
                 end: dt.date | None = None, warmup_days: int = 1, quotes: bool = False) -> None:
        if start is not None and end is not None and start > end:
            raise ValueError(f"start {start} is after end {end}")
        self.root = Path(root)
        self.quotes = quotes
        self.files = find_recordings(self.root)
        with_trades = sorted(d for d, f in self.files.items() if any((s, "trades") in f for s in instruments))
        self._days = [d for d in with_trades if (start is None or d >= start) and (end is None or d <= end)]
        if not self._days:
            raise ValueError(f"no recorded trading day of {'/'.join(instruments)} in {self.root} between "
                             f"{start or 'its start'} and {end or 'its end'}"
                             + (f" (recorded: {with_trades[0]}..{with_trades[-1]})" if with_trades else ""))
        missing = [s for s in instruments if not any((s, "trades") in self.files[d] for d in self._days)]
        if missing:
            raise ValueError(f"no recorded trades of {', '.join(missing)} in {self.root} "
                             f"({self._days[0]}..{self._days[-1]})")
        self.instruments = sorted(instruments)
        before = [d for d in with_trades if d < self._days[0]]
        self._warm_days = before[len(before) - warmup_days:] if warmup_days > 0 else []
        self.rejects: collections.Counter = collections.Counter()
        self.rejects_by_instrument: dict[str, collections.Counter] = {}
        self._cache: dict[tuple[dt.date, str, str], list] = {}
        self._counted: set[tuple[dt.date, str, str]] = set()
        used = [p for d in [*self._warm_days, *self._days] for (s, k), p in sorted(self.files[d].items())
                if s in instruments and (k == "trades" or quotes)]
        self.key = (("recorded", str(self.root.resolve()), quotes),
                    tuple((str(p.resolve()), p.stat().st_mtime_ns) for p in used), tuple(self._days), warmup_days)
        """Identifies what this source replays (``infra.feeds.ReplayData.routed``)."""
        self.bar_count = 0
        self.trade_paths: collections.Counter = collections.Counter()

    def trading_days(self) -> list[dt.date]:
        """Replayed trading days (America/Chicago), ascending."""
        return list(self._days)

    def _load(self, day: dt.date, instrument: str, kind: str) -> list:
        key = (day, instrument, kind)
        if key in self._cache:
            return self._cache[key]
        path = self.files.get(day, {}).get((instrument, kind))
        ticks, rej = read_recording(path, kind) if path is not None else ([], collections.Counter())
        other = sum(1 for t in ticks if t.instrument != instrument)
        if other:
            rej["ticks_of_another_instrument"] += other
            ticks = [t for t in ticks if t.instrument == instrument]
        if key not in self._counted:
            self._counted.add(key)
            self.rejects.update(rej)
            self.rejects_by_instrument.setdefault(instrument, collections.Counter()).update(rej)
        days = sorted({k[0] for k in self._cache} | {day})
        for old in [k for k in self._cache if k[0] not in days[-self.KEEP_DAYS:]]:
            del self._cache[old]
        self._cache[key] = ticks
        return ticks

    def day_ticks(self, day: dt.date, quotes: bool | None = None) -> list:
        """One trading day's ticks of every instrument, merged by ``(ts_ns, instrument, seq)``;
        trades and, with ``quotes`` (default: the source's), quotes."""
        quotes = self.quotes if quotes is None else quotes
        kinds = KINDS if quotes else ("trades",)
        lists = [self._load(day, s, k) for s in self.instruments for k in kinds]
        return list(heapq.merge(*lists, key=lambda t: (t.ts_ns, t.instrument, t.seq)))

    def start_ns(self) -> int:
        """Event time of the first replayed tick, epoch ns UTC. Raises ValueError when the
        replayed days hold no readable tick."""
        for day in self._days:
            ticks = self.day_ticks(day)
            if ticks:
                return ticks[0].ts_ns
        raise ValueError(f"the recordings in {self.root} ({self._days[0]}..{self._days[-1]}) hold no readable tick")

    def warmup_trades(self, instrument: str) -> list[TradeTick]:
        """The trades of ``instrument`` on the warm-up days (may be empty)."""
        return [t for d in self._warm_days for t in self._load(d, instrument, "trades")]

    def events(self, after_ns: int | None = None, path: str = "adaptive", position: Any = None,
               step_bp: float | None = None) -> Iterator[TradeTick | QuoteTick]:
        """Every replayed tick in event time, after ``after_ns`` (epoch ns UTC) when resuming.
        ``path``, ``position`` and ``step_bp`` are the bar replay's and do not apply: recorded
        ticks have no intra-bar path to guess."""
        for day in self._days:
            for t in self.day_ticks(day):
                if after_ns is None or t.ts_ns > after_ns:
                    yield t


def open_recordings(data_dir: Path | str, instruments: tuple[str, ...], start: dt.date | None = None,
                    end: dt.date | None = None, quotes: bool = False) -> RecordedSource:
    """The replay of recorded ticks in ``data_dir``, as :func:`infra.feeds.open_replay` for bars:
    without ``start`` the first recorded day only warms the indicators up and trading starts on the
    second (a single day is replayed without warm-up). Raises ValueError as :class:`RecordedSource`."""
    if start is None:
        days = sorted(d for d, f in find_recordings(data_dir).items() if any((s, "trades") in f for s in instruments))
        if len(days) > 1:
            start = days[1]
    return RecordedSource(data_dir, instruments, start, end, warmup_days=1, quotes=quotes)


class RecordedData(ReplayData):
    """:class:`domain.ports.MarketDataSource` over recorded ticks (paper replay, backtest): the
    replay feed of :class:`infra.feeds.ReplayData` (pacing, lock step, resume after ``after_ns``)
    over a :class:`RecordedSource`. The bar path settings do not apply (a backtest reports one net)."""

    bar_paths = False
    """A recorded replay has no intra-bar path: the backtest's second path run is skipped."""

    def __init__(self, source: RecordedSource, speed: float = float("inf"), memo: bool = False) -> None:
        super().__init__(source, speed, "adaptive", None, None, memo)  # type: ignore[arg-type]

    def start_ns(self) -> int:
        """Event time of the first replayed tick, epoch ns UTC."""
        return self.source.start_ns()

    def warmup_ticks(self) -> dict[str, list[TradeTick]]:
        """The warm-up day's recorded trades, per instrument."""
        return {sym: self.source.warmup_trades(sym) for sym in self.instruments}
