"""Market data sources: the tick feed of a file replay and of the ProjectX market hub.

- :class:`FeedCore` validates each incoming tick (:mod:`domain.validation`: NaN, non-positive,
  off-tick, crossed, out-of-order, duplicate, unknown instrument are rejected, counted and logged)
  and routes good ones to ``ticks.<instrument>`` (venue, bar builder, risk), plus a ``ClockTick`` on
  the ``clock`` topic at every new minute of event time.
- :class:`ReplayFeed` is the replay's feed handler: it paces ticks at ``speed`` x real time and so
  sleeps (it has a thread of its own); :class:`LiveFeed` is the hub's: hub ticks and the wall-clock
  ``ClockTick`` (it never blocks and shares the decision loop).
- :class:`ReplayData` and :class:`HubData` are the two :class:`domain.ports.MarketDataSource`
  adapters the node picks from.

Times are epoch ns UTC; trading days America/Chicago.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from loguru import logger

from domain.calendar import trading_day
from domain.handler import CLOCK_TOPIC, FEED, RECONCILER, Out, RejectedMessage, prints_topic, ticks_topic
from domain.handler import quotes_topic
from domain.messages import ClockTick, QuoteTick, ReconcileRequest, ReconcileResult, TradeTick
from domain.validation import MarketDataValidator
from infra.bulk_replay import BulkRoute, bulk_routed
from infra.replay import ReplaySource, bar_to_ticks

NS = 1_000_000_000

MINUTE_NS = 60 * NS


class FeedCore:
    """Validation + routing of raw ticks: ``route_batch(ticks) -> Out`` for the ticks of one
    timestamp (``route(tick)`` for one), empty for rejected ticks.

    Event order: the prints of every instrument of a timestamp go to ``prints.<SYM>`` (the venue)
    first; then, if a new minute of event time began, one ``ClockTick``; then each trade to
    ``ticks.<SYM>`` (bar builders, risk, and through the bars the strategies) and each quote to
    ``quotes.<SYM>`` (strategies that read quotes, the tick recorder). So an order decided
    on a timestamp never meets a print of that timestamp the venue has not seen yet: it fills on a
    later print (infra/paper_broker.py), in backtest, paper and paper on live data alike.

    Each rejection is counted per reason (:attr:`rejected`); the first ``LOG_FIRST`` of a reason
    and every ``LOG_EVERY``-th after that are logged with the tick and the running count.
    """

    LOG_FIRST = 20
    LOG_EVERY = 1000

    def __init__(self) -> None:
        self.validator = MarketDataValidator()
        self.minute: int | None = None
        self.last_ts = 0
        self._topics: dict[str, tuple[str, str, str]] = {}  # instrument -> (prints, ticks, quotes) topic

    def route(self, tick: TradeTick | QuoteTick) -> Out:
        """One tick (a batch of one)."""
        return self.route_batch((tick,))

    def route_batch(self, ticks: Any) -> Out:
        """The ticks of one timestamp, in replay order (module docstring for the event order)."""
        accept = self._accept
        good = [t for t in ticks if accept(t)]
        return self.emit(good) if good else []

    def emit(self, good: list) -> Out:
        """The messages of one timestamp's accepted ticks (non-empty, replay order): every print
        to ``prints.<SYM>``, a ``ClockTick`` at a new minute, then every tick to ``ticks.<SYM>`` /
        ``quotes.<SYM>``. Also the bulk stream's router (:func:`infra.bulk_replay.bulk_routed`)."""
        topics = self._topics
        out: Out = []
        later: Out = []
        for t in good:
            names = topics.get(t.instrument)
            if names is None:
                names = topics[t.instrument] = (prints_topic(t.instrument), ticks_topic(t.instrument),
                                                quotes_topic(t.instrument))
            if type(t) is TradeTick:
                out.append((names[0], t))
                later.append((names[1], t))
            else:
                later.append((names[2], t))
        ts = good[0].ts_ns
        minute = ts // MINUTE_NS
        if minute != self.minute:
            self.minute = minute
            out.append((CLOCK_TOPIC, ClockTick(ts)))
        self.last_ts = good[-1].ts_ns
        out += later
        return out

    def _accept(self, tick: Any) -> bool:
        reason = (self.validator.check_trade(tick) if isinstance(tick, TradeTick)
                  else self.validator.check_quote(tick))
        if reason:
            n = self.validator.rejected[reason]
            if n <= self.LOG_FIRST or n % self.LOG_EVERY == 0:  # a bad feed must not flood the log
                logger.warning("feed rejected {} {} at ts_ns {}: {} ({} so far for this reason)", type(tick).__name__,
                               getattr(tick, "instrument", "?"), getattr(tick, "ts_ns", "?"), reason, n)
            return False
        return True

    @property
    def rejected(self):
        return self.validator.rejected


@dataclass(frozen=True, slots=True)
class Pump:
    """Self-message of the replay feed: emit the next batch."""


class ReplayFeed:
    """Paced replay feed handler (paper mode).

    Args:
        events: iterator of ticks in replay order (already resumed after the venue's last tick).
        speed: replay speed (1 = real time; ``float('inf')`` = as fast as possible).
        warmup: ``(destination, WarmupBars)`` pairs sent first.
        on_done: called once when the data is exhausted.
        self_tell: sends a message to this actor (set by the host after start).
        batch: max ticks per pump.
        backlog: ``f() -> int`` largest consumer inbox; above ``max_backlog`` the feed waits
            (backpressure instead of dropping, so orders and fills stay exact at any speed).
            At ``speed`` inf ("max") the replay goes in lock step: the ticks of one timestamp,
            then nothing until every consumer's inbox is empty. Otherwise the simulated venue
            (fast) runs up to a batch of ticks ahead of the strategies (slower), which then decide
            on prices minutes old: their passive entries are marketable at the venue and fill on
            arrival, several at one price
            (docs/decisions/0008-replay-lock-step-and-backpressure.md).
        wait_reconciled: hold the first tick until a :class:`ReconcileResult` arrived (risk is
            HALTED until then, so earlier ticks would only be denied decisions) and every
            consumer has digested the warm-up (backlog 0); at most ``start_timeout_s`` seconds,
            then the replay starts anyway with a warning. False for a restarted feed (no new
            reconciliation comes). At its start the feed asks the reconciler for its result
            (``reuse_last``: the start-up run's result, or a run stamped ``start_ts_ns`` if none
            happened yet).
    """

    def __init__(self, events: Iterator[TradeTick], speed: float, warmup: Out, on_done: Callable[[], None],
                 batch: int = 200, backlog: Callable[[], int] | None = None, max_backlog: int = 50,
                 wait_reconciled: bool = False, start_timeout_s: float = 10.0, start_ts_ns: int = 0) -> None:
        self.events = events
        self.speed = speed
        self.core = FeedCore()
        self.warmup = warmup
        self.on_done = on_done
        self.batch = batch
        self.t0_wall: float | None = None
        self.t0_event: int | None = None
        self.pending: list | None = None  # a timestamp's ticks not yet due (paced replay)
        self._peek: TradeTick | None = None  # the first tick of the next timestamp, read ahead
        self.on_loop = False
        """Hosted on the decision loop (a replay at ``max`` speed): lock step without sleeping."""
        self.done = False
        self.sent = 0
        self.sent_wall: dict[int, float] = {}  # ts_ns -> perf_counter at send (latency benchmark)
        self.record_latency = False
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.lockstep = speed == float("inf") and backlog is not None
        self.reconciled = not wait_reconciled
        self.start_timeout_s = start_timeout_s
        self._started_wall: float | None = None
        self.start_ts_ns = start_ts_ns

    def now_ns(self) -> int:
        """Event time of the last tick sent (the start time before the first), epoch ns UTC."""
        return self.core.last_ts or self.start_ts_ns

    def start(self) -> Out:
        out = list(self.warmup)
        if not self.reconciled:
            # the reconciler's start-up run may have finished before this feed existed to hear the
            # result: ask for it again (the reconciler re-sends its last result, never runs twice)
            out.append((RECONCILER, ReconcileRequest("replay start", self.start_ts_ns, reuse_last=True)))
        out.append((FEED, Pump()))
        return out

    def _ready(self) -> bool:
        """Start gate: reconciled and warm-up digested, or the start timeout passed."""
        now = time.monotonic()
        if self._started_wall is None:
            self._started_wall = now
        if self.reconciled and (self.backlog is None or self.backlog() == 0):
            return True
        if now - self._started_wall > self.start_timeout_s:
            logger.warning("replay starts before {} ({:.0f} s)", "the warm-up was digested" if self.reconciled
                           else "reconciliation finished; risk stays HALTED until it does", self.start_timeout_s)
            self.reconciled = True
            return True
        return False

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, ReconcileResult):
            self.reconciled = True
            return []
        if not isinstance(msg, Pump):
            raise RejectedMessage(f"feed: unexpected message {type(msg).__name__}")
        if self.done:
            return []
        if self.t0_event is None and not self._ready():
            time.sleep(0.0005 if self.on_loop else 0.002)
            return [(FEED, Pump())]
        if self.lockstep:
            if self.backlog() > 0:
                if not self.on_loop:
                    time.sleep(0.0003)  # lock step: the previous timestamp is still being handled
                return [(FEED, Pump())]  # on the loop: behind everything queued, no sleep
        elif self.backlog is not None and self.backlog() > self.max_backlog:
            time.sleep(0.002)  # backpressure: consumers are behind; never drop ticks
            return [(FEED, Pump())]
        out: Out = []
        sent = 0
        while sent < self.batch:
            group = self._next_group()
            if not group:
                self.done = True
                self.on_done()
                return out
            if self.t0_event is None:
                self.t0_event, self.t0_wall = group[0].ts_ns, time.monotonic()
            if self.speed != float("inf"):
                due = self.t0_wall + (group[0].ts_ns - self.t0_event) / NS / self.speed
                wait = due - time.monotonic()
                if wait > 0:
                    self.pending = group
                    if not out:
                        time.sleep(min(wait, 0.05))
                    break
            routed = self.core.route_batch(group)
            if self.record_latency and routed:
                self.sent_wall[group[0].ts_ns] = time.perf_counter()
            out += routed
            self.sent += len(group)
            sent += len(group)
            if self.lockstep:
                break  # the next timestamp after the consumers are done with this one
        out.append((FEED, Pump()))
        return out

    def _next_group(self) -> list:
        """The ticks of the next timestamp (every instrument's), in replay order; [] at the end."""
        if self.pending is not None:
            group, self.pending = self.pending, None
            return group
        first = self._peek if self._peek is not None else next(self.events, None)
        self._peek = None
        if first is None:
            return []
        group = [first]
        for tick in self.events:
            if tick.ts_ns != first.ts_ns:
                self._peek = tick
                break
            group.append(tick)
        return group


@dataclass(frozen=True, slots=True)
class WallClock:
    """Timer message to the live feed (sent every second of wall time)."""


class LiveFeed:
    """Live feed handler: hub ticks through :class:`FeedCore`, plus the wall-clock ``ClockTick``.

    Trades are validated and routed like replayed ones. Quotes are validated, advance the clock
    and go to ``quotes.<SYM>`` (the tick recorder's; the strategies trade on prints, no trading
    handler takes quotes).

    Args:
        warmup: ``(destination, WarmupBars)`` pairs sent when the actor starts.
        anchor_ns: event time to start the clock from (end of the last history bar), epoch ns UTC.
    """

    LOG_FIRST = 20

    def __init__(self, warmup: Out, anchor_ns: int) -> None:
        self.core = FeedCore()
        self.warmup = warmup
        self.last_ts = anchor_ns
        self.last_mono = time.monotonic_ns()
        self.sent = 0
        self.quotes = 0

    def start(self) -> Out:
        return list(self.warmup)

    def now_ns(self) -> int:
        """Last feed event time plus the wall time elapsed since it arrived, epoch ns UTC."""
        return self.last_ts + (time.monotonic_ns() - self.last_mono)

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, TradeTick):
            out = self.core.route(msg)
            if out:
                self._anchor(msg.ts_ns)
                self.sent += 1
            return out
        if isinstance(msg, QuoteTick):
            reason = self.core.validator.check_quote(msg)
            if reason:
                n = self.core.rejected[reason]
                if n <= self.LOG_FIRST:
                    logger.warning("feed rejected quote {} at ts_ns {}: {} ({} so far)", msg.instrument, msg.ts_ns,
                                   reason, n)
                return []
            self.quotes += 1
            self._anchor(msg.ts_ns)
            return self._clock(msg.ts_ns) + [(quotes_topic(msg.instrument), msg)]
        if isinstance(msg, WallClock):
            return self._clock(self.now_ns())
        if isinstance(msg, ReconcileResult):
            return []  # the market does not wait for us: live data flows from the start
        raise RejectedMessage(f"feed: unexpected message {type(msg).__name__}")

    def _anchor(self, ts_ns: int) -> None:
        if ts_ns >= self.last_ts:
            self.last_ts, self.last_mono = ts_ns, time.monotonic_ns()

    def _clock(self, ts_ns: int) -> Out:
        minute = ts_ns // MINUTE_NS
        if self.core.minute is not None and minute <= self.core.minute:
            return []
        self.core.minute = minute
        return [(CLOCK_TOPIC, ClockTick(ts_ns))]


# --------------------------------------------------------------------------- sources

DATA_FILES = {sym: (f"{root}_1min.csv.gz", f"{root}_2min.csv.gz")
              for sym, root in (("MES", "ES"), ("ES", "ES"), ("MNQ", "NQ"), ("NQ", "NQ"))}
"""Recorded files per instrument, finest first: ES prices stand for ES and MES, NQ prices for NQ
and MNQ (data/demo/README.md). The finest file in the folder is replayed: 1-minute bars, when
there, give the intra-bar path twice the resolution of 2-minute bars (the strategies build their
own 1/5/15-minute bars from the prints either way)."""


TRADE_FILES = {sym: (f"{root}_trades.csv.gz", f"{root}_trades.csv")
               for sym, root in (("MES", "ES"), ("ES", "ES"), ("MNQ", "NQ"), ("NQ", "NQ"))}
"""Recorded trade prints per instrument (Databento trades CSV, ``infra.replay.load_databento_trades``),
optional: where one is in the data folder, every bar its prints reproduce is replayed as those
prints instead of a four-point path (infra/replay.py, "Recorded trades replace the guess")."""


def open_replay(data_dir: Path, instruments: tuple[str, ...], start: Any = None, end: Any = None) -> ReplaySource:
    """The replay of ``instruments`` from ``data_dir`` (the finest file of each, :data:`DATA_FILES`;
    recorded trades where :data:`TRADE_FILES` has one).
    Without ``start``, the first trading day of the data only warms the indicators up and trading
    starts on the second.

    Rows the loader drops are counted by reason in the source's ``rejects`` (never an error).

    Raises:
        ValueError: an instrument without a recorded file (:data:`DATA_FILES`); a file without a
            single usable bar (the message names the file and the drop counts); no trading day
            between ``start`` and ``end`` (the message names both and the days the data covers).
        infra.replay.BadDataFile (a ValueError): a file that is not readable CSV (not gzip,
            truncated, malformed line); the message names the file and the line.
        FileNotFoundError: a file missing in ``data_dir``.
    """
    files = {}
    for sym in instruments:
        names = DATA_FILES.get(sym)
        if names is None:
            raise ValueError(f"no recorded data file for {sym}; recorded: {sorted(DATA_FILES)}")
        path = next((Path(data_dir) / n for n in names if (Path(data_dir) / n).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"market data file not found: {Path(data_dir) / names[-1]} "
                                    f"(nor {', '.join(names[:-1])})")
        files[sym] = path
    whole = ReplaySource(files, warmup_days=0)
    for sym in whole.instruments:
        if not whole.bars(sym):
            dropped = dict(whole.rejects_by_instrument.get(sym, {}))
            raise ValueError(f"market data file {files[sym]}: no usable bar for {sym} "
                             f"(rows dropped by reason: {dropped or 'none, the file has no rows'})")
    days = whole.trading_days()
    if start is None:
        start = days[1] if len(days) > 1 else None
    trades = {sym: p for sym in instruments
              for p in [next((Path(data_dir) / n for n in TRADE_FILES.get(sym, ()) if (Path(data_dir) / n).is_file()),
                             None)] if p is not None}
    source = ReplaySource(files, start=start, end=end, warmup_days=1, trade_files=trades)
    if not source.trading_days():
        raise ValueError(f"no trading day in the data between {start or 'its start'} and {end or 'its end'}; "
                         f"the data covers {days[0]}..{days[-1]} ({', '.join(str(f) for f in files.values())})")
    return source


class Routed:
    """A replay's ticks routed a timestamp at a time (:meth:`FeedCore.route_batch`): from an
    iterator of ticks, or for a whole ``adaptive``-path replay from the groups of
    :func:`infra.bulk_replay.bulk_routed` (checked already, so only :meth:`FeedCore.emit`).

    Attributes:
        batches: iterable of the routed messages (``Out``) of each timestamp with an accepted tick.
        core: the :class:`FeedCore` that routed them: ``core.rejected`` (counts by reason) and
            ``core.last_ts`` are complete once ``batches`` is exhausted.
        ticks: ticks read so far (all of them once ``batches`` is exhausted).
    """

    def __init__(self, events: Iterator[TradeTick] | None, bulk: BulkRoute | None = None) -> None:
        self.core = FeedCore()
        self.ticks = 0
        if bulk is None:
            self.batches: Any = self._route(events or iter(()))
        else:  # every print accepted already (infra/bulk_replay.py)
            self.batches = map(self.core.emit, bulk.groups)
            self.ticks = bulk.ticks
        self.outputs: dict[Hashable, dict[int, Out]] | None = None
        """For a kept stream: per pure handler (bar builders), its output for each message of
        the stream by ``id`` (:class:`MemoHandler`); None otherwise."""

    def memo_handler(self, key: Hashable, handler: Any) -> Any:
        """``handler`` wrapped in a :class:`MemoHandler` when this stream is kept, else itself.
        Only for handlers whose output is a function of the feed's messages and of ``key`` alone
        (the handler's name and configuration)."""
        if self.outputs is None:
            return handler
        return MemoHandler(handler, self.outputs.setdefault(key, {}))

    def _route(self, events: Iterator[TradeTick]) -> Iterator[Out]:
        for _ts, group in itertools.groupby(events, key=lambda t: t.ts_ns):
            ticks = list(group)
            self.ticks += len(ticks)
            out = self.core.route_batch(ticks)
            if out:
                yield out


class MemoHandler:
    """A pure handler's outputs remembered by message identity: the first run over a kept
    stream computes them, the next runs replay them (the same immutable messages, in the same
    order). The wrapped handler's own state is not advanced on a replay."""

    def __init__(self, inner: Any, outputs: dict[int, Out]) -> None:
        self.inner = inner
        self.outputs = outputs

    def handle(self, msg: Any) -> Out:
        out = self.outputs.get(id(msg))
        if out is None:
            out = self.outputs[id(msg)] = self.inner.handle(msg)
        return out


ROUTED_KEEP = 4
"""Routed streams a process keeps (:meth:`ReplayData.routed`): the 28 shared sessions take ~200 MiB
with the bar builders' outputs."""
_ROUTED: dict[tuple, Routed] = {}
"""Memo of :meth:`ReplayData.routed`, oldest first."""


class ReplayData:
    """:class:`domain.ports.MarketDataSource` over recorded bars (paper replay, backtest).

    Args:
        source: the :class:`infra.replay.ReplaySource`.
        speed: replay speed factor (``inf`` = as fast as the actors go, in lock step).
        path: intra-bar path mode (``infra.replay.bar_path``).
        position: ``f(instrument) -> signed contracts`` held (the ``adverse`` path reads it).
        step_bp: longest step of the continuous intra-bar path, basis points of the bar's open
            (``infra.replay.bar_to_ticks``); None = four prints per bar.
        memo: keep :meth:`routed` in this process for the next replay of the same data (sweep
            workers run many backtests on one data set).
    """

    def __init__(self, source: ReplaySource, speed: float = float("inf"), path: str = "adaptive",
                 position: Callable[[str], int] | None = None, step_bp: float | None = None,
                 memo: bool = False) -> None:
        self.memo = memo
        self.source = source
        self.speed = speed
        self.path = path
        self.step_bp = step_bp
        self.position = position
        self.instruments = tuple(source.instruments)
        self.blocks = speed != float("inf")
        """A paced replay sleeps (thread of its own); at ``max`` speed it runs on the decision loop."""

    def start_ns(self) -> int:
        """Start of the first replayed bar, epoch ns UTC."""
        return min(self.source.bars(s)[0].start_ns for s in self.instruments if self.source.bars(s))

    def trading_days(self) -> list[str]:
        return [d.isoformat() for d in self.source.trading_days()]

    def rejected_rows(self) -> dict[str, int]:
        """Rows the loader dropped, by reason (``file row: <reason>``), for the summary."""
        return {f"file row: {k}": v for k, v in sorted(self.source.rejects.items()) if v}

    def warmup_ticks(self) -> dict[str, list[TradeTick]]:
        """The warm-up day's bars as ticks, per instrument."""
        return {sym: [t for row in self.source.warmup_bars(sym) for t in bar_to_ticks(row)] for sym in self.instruments}

    def routed(self) -> "Routed":
        """The backtest host's input: for each timestamp of the replay, what
        :meth:`FeedCore.route_batch` sends (the same messages the paper feed sends, so backtest =
        paper), in replay order, produced as the run consumes them (the ``adverse`` path reads the
        positions held as it goes).

        With ``memo`` and the ``adaptive`` path (the ticks do not depend on the positions held) the
        routed stream is kept in this process (the newest :data:`ROUTED_KEEP`), keyed by
        :attr:`ReplaySource.key`, the path and the step, so a sweep worker routes its data once. Messages are immutable: runs share them."""
        key = (self.source.key, self.path, self.step_bp)
        keep = self.memo and self.path == "adaptive"
        if keep and key in _ROUTED:
            return _ROUTED[key]
        bulk = (bulk_routed(self.source, self.step_bp)
                if self.path == "adaptive" and isinstance(self.source, ReplaySource) else None)
        routed = Routed(None if bulk else self.events(), bulk)
        if keep:
            routed.batches = list(routed.batches)  # route it all now, once
            routed.outputs = {}
            while len(_ROUTED) >= ROUTED_KEEP:  # the oldest goes (walk-forward windows come in order)
                del _ROUTED[next(iter(_ROUTED))]
            _ROUTED[key] = routed
        return routed

    def events(self, after_ns: int | None = None) -> Iterator[TradeTick]:
        """Every tick in replay order (intra-bar path ``self.path``), after ``after_ns`` when resuming."""
        return self.source.events(after_ns=after_ns, path=self.path, position=self.position, step_bp=self.step_bp)

    def make_handler(self, warmup: Out, after_ns: int | None, restarted: bool, backlog: Callable[[], int],
                     on_done: Callable[[], None], start_ts_ns: int) -> "ReplayFeed":
        """The feed actor's handler; a first start waits for the start-up reconciliation."""
        feed = ReplayFeed(self.events(after_ns), self.speed, warmup, on_done, backlog=backlog,
                          wait_reconciled=not restarted, start_ts_ns=start_ts_ns)
        feed.on_loop = not self.blocks
        return feed

    def start(self, post: Callable[[Any], None]) -> None:
        """Nothing to connect: the feed handler pulls the ticks itself."""

    def stop(self) -> None:
        """Nothing to disconnect."""


class HubData:
    """:class:`domain.ports.MarketDataSource` over the ProjectX market hub (paper on live data, live).

    Quotes and trades of the resolved contracts go to the feed actor (``post``); a 1-second wall
    timer posts :class:`WallClock`, so ``ClockTick``s (and the 15:10 CT flatten) come when data is
    quiet. Warm-up ticks and the start time come from ``History/retrieveBars``.

    Args:
        client: a logged-in :class:`infra.projectx.rest.ProjectXClient`.
        contracts: our instrument -> gateway contract id.
        hubs_url: the SignalR hubs host.
    Raises:
        ProjectXError: the history warm-up failed.
    """

    blocks = False

    def __init__(self, client: Any, contracts: dict[str, str], hubs_url: str) -> None:
        from infra.projectx.hubs import MarketHub
        from infra.projectx.session import history_warmup
        self.client = client
        self.contracts = contracts
        self.instruments = tuple(contracts)
        self._warm, self._anchor = history_warmup(client, contracts)
        self._post: Callable[[Any], None] | None = None
        self._done = threading.Event()
        self.market = MarketHub(hubs_url, client.token, on_quote=self._on_tick, on_trade=self._on_tick,
                                on_state=lambda s: logger.warning("ProjectX market hub {}", s))

    def start_ns(self) -> int:
        """End of the latest history bar: the gateway's now as history shows it, epoch ns UTC."""
        return self._anchor

    def trading_days(self) -> list[str]:
        return [trading_day(self._anchor).isoformat()]

    def warmup_ticks(self) -> dict[str, list[TradeTick]]:
        return self._warm

    def rejected_rows(self) -> dict[str, int]:
        """No file rows: hub payloads are checked by the feed (its counts are in the summary)."""
        return {}

    def make_handler(self, warmup: Out, after_ns: int | None, restarted: bool, backlog: Callable[[], int],
                     on_done: Callable[[], None], start_ts_ns: int) -> "LiveFeed":
        """The feed actor's handler, its clock anchored at ``start_ts_ns``; live data never waits."""
        return LiveFeed(warmup, start_ts_ns)

    def _on_tick(self, tick: Any) -> None:
        if self._post is not None:
            self._post(tick)

    def start(self, post: Callable[[Any], None]) -> None:
        """Subscribe the contracts, connect, and start the wall timer; ``post`` tells the feed actor."""
        self._post = post
        for inst, cid in self.contracts.items():
            self.market.subscribe(cid, inst)
        self.market.start()
        threading.Thread(target=self._clock_loop, name="market-clock", daemon=True).start()

    def _clock_loop(self) -> None:
        while not self._done.wait(1.0):
            if self._post is not None:
                self._post(WallClock())

    def stop(self) -> None:
        self._done.set()
        self.market.stop()
