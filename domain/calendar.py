"""Exchange session calendar in America/Chicago (CME Globex equity index, Topstep rules).

- A *trading day* D runs from 17:00 CT on the previous business day (Sunday 17:00 for Monday)
  to 16:00 CT on D (CME Globex hours; docs/reference/topstep-rules.md#cme-contract-specifications).
- Topstep requires positions and working orders flat by 15:10:00 CT Monday-Friday and re-opens at
  17:00 CT (HC 8284206; "HC n" is https://help.topstep.com/en/articles/n). We stop opening
  positions and start flattening ``flat_margin`` before 15:10 (configurable, default 5 minutes:
  docs/reference/strategy-seeds.md#runtime-flow, step 6).
- Between 15:10 and 17:00 CT and on weekends nothing may be held or worked.
- No position is opened on the CME closures listed in :data:`EXCHANGE_CLOSED_DAYS` (Topstep's
  holiday schedule: HC 13350348); early-close days are not modelled.

All inputs are integer nanoseconds since the epoch (UTC) or timezone-aware datetimes; every date
returned is a trading day in America/Chicago.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

CT = ZoneInfo("America/Chicago")
UTC = dt.timezone.utc
OPEN_TIME = dt.time(17, 0)
"""Globex re-open and Topstep trading-day start, CT."""
FLAT_TIME = dt.time(15, 10)
"""Topstep flat deadline, CT (HC 8284206)."""
CLOSE_TIME = dt.time(16, 0)
"""Globex daily close, CT."""

NS = 1_000_000_000

EXCHANGE_CLOSED_DAYS: frozenset[dt.date] = frozenset({
    dt.date(2025, 1, 1), dt.date(2025, 4, 18), dt.date(2025, 12, 25),
    dt.date(2026, 1, 1), dt.date(2026, 4, 3), dt.date(2026, 12, 25),
    dt.date(2027, 1, 1), dt.date(2027, 3, 26), dt.date(2027, 12, 24),
})
"""Trading days on which CME equity-index futures do not trade a normal session (New Year's Day,
Good Friday, Christmas; CME Group holiday calendar). We never open positions in them: a position
taken in the evening before such a day could not be flattened by 15:10 CT (the 28-session ES
data of docs/benchmarks.md stops on Thursday 2026-04-02 22:58 CT and resumes Sunday 17:00 CT).
Early-close days (e.g. the day after Thanksgiving) are not modelled: add them here with care.
Extend the table yearly."""


def ns_to_ct(ts_ns: int) -> dt.datetime:
    """Epoch ns (UTC) -> aware datetime in America/Chicago."""
    return dt.datetime.fromtimestamp(ts_ns / NS, tz=UTC).astimezone(CT)


def dt_to_ns(t: dt.datetime) -> int:
    """Aware datetime -> epoch ns. Raises ValueError for a naive datetime."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: attach a timezone (exchange time is America/Chicago)")
    return int(t.timestamp()) * NS + t.microsecond * 1000


def trading_day(ts_ns: int) -> dt.date:
    """The Topstep/CME trading day a timestamp belongs to.

    At or after 17:00 CT the timestamp belongs to the next business day (Friday 17:00 onwards and
    the weekend belong to Monday). Example: Sunday 18:00 CT -> Monday; Tuesday 10:00 CT -> Tuesday.
    Between two 17:00 CT instants the day is constant: the last such window is kept, and a
    timestamp outside it is looked up per minute (the 17:00 boundary and every UTC offset change
    fall on whole minutes).
    """
    lo, hi, day = _day_window
    if lo <= ts_ns < hi:
        return day
    return _remember_day_window(ts_ns)


_day_window: tuple[int, int, dt.date] = (0, 0, dt.date.min)
"""(start, end, trading day): epoch ns of two consecutive 17:00 CT instants and the day between."""


def _remember_day_window(ts_ns: int) -> dt.date:
    global _day_window
    window = _day_window = _day_window_of(ts_ns)  # one tuple: a reader on another thread sees all or none
    return window[2]


def _day_window_of(ts_ns: int) -> tuple[int, int, dt.date]:
    """(start, end, trading day): the two consecutive 17:00 CT instants around ``ts_ns``, epoch
    ns, and the trading day of every timestamp between them."""
    day = _trading_day_of_minute(ts_ns // (60 * NS))
    t = ns_to_ct(ts_ns)
    today_open = dt.datetime.combine(t.date(), OPEN_TIME, tzinfo=CT)
    lo = today_open if t >= today_open else dt.datetime.combine(t.date() - dt.timedelta(days=1), OPEN_TIME, tzinfo=CT)
    hi = dt.datetime.combine(lo.date() + dt.timedelta(days=1), OPEN_TIME, tzinfo=CT)
    return dt_to_ns(lo), dt_to_ns(hi), day


@functools.lru_cache(maxsize=8192)
def _trading_day_of_minute(minute: int) -> dt.date:
    t = ns_to_ct(minute * 60 * NS)
    d = t.date()
    if t.time() >= OPEN_TIME:
        d += dt.timedelta(days=1)
    while d.weekday() >= 5:
        d += dt.timedelta(days=1)
    return d


def next_time_of_day_ns(ts_ns: int, times: tuple[dt.time, ...]) -> int:
    """The first instant strictly after ``ts_ns`` (epoch ns UTC) whose America/Chicago wall-clock
    time is one of ``times`` (each a whole minute), epoch ns. DST-aware: 17:00 CT is 22:00 or
    23:00 UTC by season. Cached per minute."""
    return _next_time_of_day_minute(ts_ns // (60 * NS), times)


@functools.lru_cache(maxsize=4096)
def _next_time_of_day_minute(minute: int, times: tuple[dt.time, ...]) -> int:
    day = ns_to_ct(minute * 60 * NS).date()
    after = minute * 60 * NS
    return min(n for n in (dt_to_ns(dt.datetime.combine(day + dt.timedelta(days=k), t, tzinfo=CT))
                           for k in (0, 1) for t in times) if n > after)


def session_open(day: dt.date) -> dt.datetime:
    """17:00 CT on the business day before ``day`` (Sunday for a Monday)."""
    return dt.datetime.combine(day - dt.timedelta(days=1), OPEN_TIME, tzinfo=CT)


def flat_deadline(day: dt.date) -> dt.datetime:
    """15:10 CT on ``day``: flat (no positions, no working orders) by then."""
    return dt.datetime.combine(day, FLAT_TIME, tzinfo=CT)


@dataclass(frozen=True, slots=True)
class SessionCalendar:
    """Session rules with a configurable safety margin before the flat deadline.

    Args:
        flat_margin_s: seconds before 15:10 CT at which we stop opening positions, cancel working
            orders and flatten (default 300 = 5 minutes).
    """

    flat_margin_s: int = 300

    def flatten_at(self, day: dt.date) -> dt.datetime:
        """When our own flatten starts on trading day ``day`` (15:10 CT minus the margin)."""
        return flat_deadline(day) - dt.timedelta(seconds=self.flat_margin_s)

    def flatten_at_ns(self, day: dt.date) -> int:
        return dt_to_ns(self.flatten_at(day))

    def can_open(self, ts_ns: int) -> bool:
        """True when new positions may be opened: inside the trading day, before the flatten time,
        and not on an exchange holiday (:data:`EXCHANGE_CLOSED_DAYS`). The answer is constant on
        spans of time; the last span asked about is kept per margin (:func:`_open_span`)."""
        lo, hi, value = _open_spans.get(self.flat_margin_s, _NO_SPAN)
        if lo <= ts_ns < hi:
            return value
        span = _open_spans[self.flat_margin_s] = _open_span(ts_ns, self.flat_margin_s)  # one tuple, as _day_window
        return span[2]

    def must_be_flat(self, ts_ns: int) -> bool:
        """True from the flatten time until the next session opens (and all weekend)."""
        return not self.can_open(ts_ns)

    @staticmethod
    def in_session(ts_ns: int) -> bool:
        """True between 17:00 CT (Sun-Thu) and 15:10 CT (Mon-Fri): the Topstep trading window."""
        open_ns, deadline_ns = _session_bounds_ns(trading_day(ts_ns))
        return open_ns <= ts_ns < deadline_ns


_NO_SPAN = (0, 0, False)
_open_spans: dict[int, tuple[int, int, bool]] = {}
"""flat margin (s) -> the span of :func:`_open_span` last asked about."""


def _open_span(ts_ns: int, flat_margin_s: int) -> tuple[int, int, bool]:
    """``(start, end, can open)``: the longest span around ``ts_ns`` (epoch ns, end excluded)
    over which :meth:`SessionCalendar.can_open` with ``flat_margin_s`` gives one answer, cut at
    the 17:00 CT instants around it (:func:`_day_window_of`). Within those the trading day is one,
    so the answer is False on a closed day, else True from the session open to the flatten time
    and False before and after (``tests/test_fast_paths.py`` holds it to the plain rule)."""
    lo, hi, day = _day_window_of(ts_ns)
    if day in EXCHANGE_CLOSED_DAYS:
        return lo, hi, False
    open_ns, _ = _session_bounds_ns(day)
    flat_ns = _flatten_ns(day, flat_margin_s)
    if ts_ns < open_ns:
        return lo, min(open_ns, hi), False
    if ts_ns < flat_ns:
        return max(lo, open_ns), min(flat_ns, hi), True
    return max(lo, flat_ns), hi, False


@functools.lru_cache(maxsize=256)
def _session_bounds_ns(day: dt.date) -> tuple[int, int]:
    """(17:00 CT session open, 15:10 CT flat deadline) of trading day ``day``, epoch ns."""
    return dt_to_ns(session_open(day)), dt_to_ns(flat_deadline(day))


@functools.lru_cache(maxsize=256)
def _flatten_ns(day: dt.date, flat_margin_s: int) -> int:
    return dt_to_ns(flat_deadline(day) - dt.timedelta(seconds=flat_margin_s))
