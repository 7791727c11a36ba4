"""Market-data feed and bar builder handlers.

:class:`FeedCore` validates each incoming tick (:mod:`domain.validation`: NaN, non-positive,
off-tick, crossed, out-of-order, duplicate, unknown instrument are rejected, counted and logged)
and routes good ones to ``ticks.<instrument>`` (paper venue, bar builder, risk), plus a
``ClockTick`` on the ``clock`` topic at every new minute of event time.

:class:`ReplayFeed` is the paper-mode feed actor's handler: it pulls ticks from a
:class:`infra.replay.ReplaySource` and paces them at ``speed`` x real time (``inf`` = as fast as
possible), sending itself a ``Pump`` message between batches so that it stays responsive to
stop requests. It starts with warm-up bars for the strategies and resumes after the last tick
the paper venue processed (crash recovery).

:class:`BarBuilderHandler` turns ticks into 1/5/15-min bars and passes ticks on to the strategy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from loguru import logger

from domain.bars import BarAggregator, aggregate_bars
from domain.handler import CLOCK_TOPIC, FEED, RECONCILER, Out, RejectedMessage, bars_topic, ticks_topic
from domain.messages import ClockTick, QuoteTick, ReconcileRequest, ReconcileResult, TradeTick, WarmupBars
from domain.validation import MarketDataValidator

NS = 1_000_000_000
MINUTE_NS = 60 * NS


class FeedCore:
    """Validation + routing of raw ticks. ``route(tick) -> Out`` (empty for a rejected tick).

    Each rejection is counted per reason (:attr:`rejected`); the first ``LOG_FIRST`` of a reason
    and every ``LOG_EVERY``-th after that are logged with the tick and the running count.
    """

    LOG_FIRST = 20
    LOG_EVERY = 1000

    def __init__(self) -> None:
        self.validator = MarketDataValidator()
        self.minute: int | None = None
        self.last_ts = 0

    def route(self, tick: TradeTick | QuoteTick) -> Out:
        reason = (self.validator.check_trade(tick) if isinstance(tick, TradeTick)
                  else self.validator.check_quote(tick))
        if reason:
            n = self.validator.rejected[reason]
            if n <= self.LOG_FIRST or n % self.LOG_EVERY == 0:  # a bad feed must not flood the log
                logger.warning("feed rejected {} {} at ts_ns {}: {} ({} so far for this reason)", type(tick).__name__,
                               getattr(tick, "instrument", "?"), getattr(tick, "ts_ns", "?"), reason, n)
            return []
        out: Out = []
        minute = tick.ts_ns // MINUTE_NS
        if minute != self.minute:
            self.minute = minute
            out.append((CLOCK_TOPIC, ClockTick(tick.ts_ns)))
        self.last_ts = tick.ts_ns
        out.append((ticks_topic(tick.instrument), tick))
        return out

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
            then nothing until every consumer's inbox is empty. Otherwise the paper venue (fast)
            ran up to a batch of ticks ahead of the strategies (slower): they decided on prices
            minutes old, their passive entries were marketable at the venue and filled on
            arrival, several at one price (seen after a kill -9 resume at ``max``).
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
        self.pending: TradeTick | None = None
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
        self._last_sent_ts = -1

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
            time.sleep(0.002)
            return [(FEED, Pump())]
        if self.lockstep:
            if self.backlog() > 0:
                time.sleep(0.0003)  # lock step: the previous timestamp is still being handled
                return [(FEED, Pump())]
        elif self.backlog is not None and self.backlog() > self.max_backlog:
            time.sleep(0.002)  # backpressure: consumers are behind; never drop ticks
            return [(FEED, Pump())]
        out: Out = []
        for _ in range(self.batch):
            tick = self.pending if self.pending is not None else next(self.events, None)
            self.pending = None
            if tick is None:
                self.done = True
                self.on_done()
                return out
            if self.lockstep and out and tick.ts_ns != self._last_sent_ts:
                self.pending = tick  # next timestamp: after the consumers are done with this one
                break
            self._last_sent_ts = tick.ts_ns
            if self.t0_event is None:
                self.t0_event, self.t0_wall = tick.ts_ns, time.monotonic()
            if self.speed != float("inf"):
                due = self.t0_wall + (tick.ts_ns - self.t0_event) / NS / self.speed
                wait = due - time.monotonic()
                if wait > 0:
                    self.pending = tick
                    if not out:
                        time.sleep(min(wait, 0.05))
                    break
            routed = self.core.route(tick)
            if self.record_latency and routed:
                self.sent_wall[tick.ts_ns] = time.perf_counter()
            out += routed
            self.sent += 1
        out.append((FEED, Pump()))
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
    """Ticks -> bars for one instrument; ticks are passed on to ``bars.<instrument>`` subscribers too."""

    def __init__(self, instrument: str, periods_s: tuple[int, ...] = (60, 300, 900)) -> None:
        self.instrument = instrument
        self.agg = BarAggregator(instrument, periods_s)
        self.topic = bars_topic(instrument)

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, TradeTick):
            out: Out = [(self.topic, b) for b in self.agg.on_trade(msg)]
            out.append((self.topic, msg))
            return out
        if isinstance(msg, ClockTick):
            return [(self.topic, b) for b in self.agg.on_time(msg.ts_ns)]
        raise RejectedMessage(f"bar builder: unexpected message {type(msg).__name__}")
