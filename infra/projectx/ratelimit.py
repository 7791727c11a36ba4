"""Client-side sliding-window rate limiter for the ProjectX REST API.

Gateway limits (docs/reference/projectx-gateway.md#rate-limits): ``History/retrieveBars`` 50
requests / 30 s; every other endpoint, login included, 200 requests / 60 s. Whether the server's
window is fixed or sliding, and how it is keyed, is unconfirmed, so the client keeps a **sliding**
window (the stricter reading) with a margin below the documented numbers (:data:`DEFAULT_GENERAL`,
:data:`DEFAULT_BARS`; docs/decisions/0013-rate-limit-room-for-risk.md).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

from loguru import logger


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``max_requests`` requests in any ``window_s`` seconds."""

    max_requests: int
    window_s: float

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.window_s <= 0:
            raise ValueError(f"invalid rate limit {self.max_requests}/{self.window_s}s")


GATEWAY_GENERAL = RateLimit(200, 60.0)
"""Documented limit for every endpoint except History/retrieveBars (docs/reference/projectx-gateway.md#rate-limits)."""
GATEWAY_BARS = RateLimit(50, 30.0)
"""Documented limit for History/retrieveBars (docs/reference/projectx-gateway.md#rate-limits)."""
DEFAULT_GENERAL = RateLimit(180, 60.0)
"""What the client allows itself by default: 10 % under :data:`GATEWAY_GENERAL`."""
DEFAULT_BARS = RateLimit(45, 30.0)
"""What the client allows itself by default: 10 % under :data:`GATEWAY_BARS`."""


def default_entry_headroom(limit: RateLimit) -> int:
    """Slots of ``limit`` that new entries leave free by default: a sixth (30 of
    :data:`DEFAULT_GENERAL`'s 180). See ``ProjectXClient`` (``entry_headroom``): an order that opens
    or adds to a position is sent only while fewer than 150 requests are in the window, and is
    refused at once otherwise; cancels, closes, risk-reducing orders and reads may use all 180."""
    return limit.max_requests // 6


class SlidingWindowLimiter:
    """Blocks callers until a request fits in the sliding window. Thread-safe.

    Args:
        limit: the window and its capacity.
        clock: monotonic seconds (injectable for tests).
        sleep: ``sleep(seconds)``; tests pass a fake that advances ``clock``.
        name: what the window counts, for the log (e.g. ``"requests"``, ``"History/retrieveBars"``).
        log_wait_s: a caller about to wait this long or longer is logged (WARNING, once per
            :meth:`acquire`), so a pause for the window is never silent (a full window can hold a
            call, e.g. the shutdown's flat check, for up to ``window_s``).

    Attributes:
        waited_s: total seconds callers spent blocked (for metrics/tests).
    """

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, name: str = "requests",
                 log_wait_s: float = 1.0) -> None:
        self.limit = limit
        self.name = name
        self._log_wait_s = log_wait_s
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def acquire(self) -> None:
        """Take one slot, sleeping (lock released) until the oldest request leaves the window."""
        logged = False
        while True:
            with self._lock:
                wait = self._take()
                if wait is None:
                    return
                self.waited_s += wait
            if not logged and wait >= self._log_wait_s:
                logged = True
                logger.warning("ProjectX client rate window full ({}: {} per {:g}s), waiting {:.1f}s for a slot",
                               self.name, self.limit.max_requests, self.limit.window_s, wait)
            self._sleep(wait)

    def try_acquire(self, headroom: int = 0) -> bool:
        """Take one slot if one is free now, leaving ``headroom`` slots free for others (so: only
        while fewer than ``max_requests - headroom`` requests are in the window); never waits.
        Raises ValueError when ``headroom`` is negative or leaves no slot at all."""
        if not 0 <= headroom < self.limit.max_requests:
            raise ValueError(f"headroom {headroom} must be 0..{self.limit.max_requests - 1}")
        with self._lock:
            return self._take(headroom) is None

    def give_back(self) -> None:
        """Return the slot of a request that was not sent after all (the most recent one taken)."""
        with self._lock:
            if self._sent:
                self._sent.pop()

    def _take(self, headroom: int = 0) -> float | None:
        """Under the lock: take a slot (None) or say how long until one frees, seconds (for
        ``headroom`` 0; any positive number otherwise)."""
        now = self._clock()
        while self._sent and now - self._sent[0] >= self.limit.window_s:
            self._sent.popleft()
        if len(self._sent) < self.limit.max_requests - headroom:
            self._sent.append(now)
            return None
        return self.limit.window_s - (now - self._sent[0])
