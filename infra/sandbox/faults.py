"""Fault injection for the sandbox gateway.

:class:`Faults` is armed from any thread (tests call ``gw.faults.<name>(...)``; the manual script
and other processes use ``POST /sandbox/faults`` with ``{"fault": "<name>", <arguments>}``) and
consumed by the REST layer and the hubs on the gateway's event loop. Faults armed with a count
apply to the next ``n`` matching calls or events and then disarm themselves; ``clear()`` disarms
everything. REST faults apply to ``/api/...`` paths only (never to ``/hubs`` or ``/sandbox``).

- ``rate_limit_burst(n)``: the next n REST calls get HTTP 429 without being processed.
- ``server_errors(n, status=503, paths=None)``: the next n REST calls whose path is in ``paths``
  (``"/api/Order/place"`` or ``"Order/place"``; None = any) get ``status`` (500-599, or 429 for a
  rate limit on chosen paths only) without being processed.
- ``ambiguous_place(n, status=504)``: the next n ``Order/place`` calls ARE processed (the order
  exists and may fill) but the client gets ``status`` instead of the answer, or, with
  ``status=None``, the connection is dropped without any response.
- ``drop_connections(hub=None)``: abort the hub sockets (``"user"``, ``"market"``, None = both)
  at the TCP level: no SignalR close message, no WebSocket close frame.
- ``expire_tokens()``: every token issued so far becomes invalid: REST answers 401, open hub
  connections get a Close message (``allowReconnect: true``) and are closed, reconnecting or
  negotiating with an old token gets HTTP 401. Log in again for a new token.
- ``logout()``: push ``GatewayLogout`` (no arguments) to every user-hub connection, then close all
  hub connections with a Close message. Tokens stay valid.
- ``delay_events(ms, hub=None)``: every message queued from now on to a hub connection
  (``"user"``, ``"market"``, None = both) is written ``ms`` milliseconds later; a connection
  writes in order, so replies queued behind a delayed event wait too. ``delay_events(0)`` ends it.
- ``duplicate_events(n)``: the next n user-hub events are delivered twice.
- ``reorder_events(n)``: the next n user-hub events (n >= 2) are held back and delivered in
  reverse order once the n-th arrives (or :data:`REORDER_FLUSH_S` after the first, if fewer come).
- ``clear()``: disarm all of the above (held events are still released by the flush timer).

The connection actions (drop, expire, logout) are carried out by the gateway through the
:class:`HubActions` it passes in; called from another thread they return once done.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

REORDER_FLUSH_S = 1.0
"""Held reordered events are released at the latest this long after the first one was held."""

HUBS = ("user", "market")
FAULT_NAMES = ("rate_limit_burst", "server_errors", "ambiguous_place", "drop_connections", "expire_tokens",
               "logout", "delay_events", "duplicate_events", "reorder_events", "clear")
"""Faults that may be armed over REST (``POST /sandbox/faults``)."""


class HubActions(Protocol):
    """What the gateway does for the connection faults (thread-safe, blocking until done)."""

    def drop_connections(self, hub: str | None) -> None: ...

    def expire_tokens(self) -> None: ...

    def logout(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RestFault:
    """What to do with one REST call.

    ``kind``: ``"rate_limit"`` (429, not processed), ``"error"`` (``status``, not processed) or
    ``"ambiguous"`` (processed, then ``status``, or the connection dropped if ``status`` is None).
    """

    kind: str
    status: int | None = None


def _count(n: Any, minimum: int = 1) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < minimum:
        raise ValueError(f"n must be an integer >= {minimum}, got {n!r}")
    return n


def _status(status: Any) -> int:
    if not isinstance(status, int) or isinstance(status, bool) or not (500 <= status <= 599 or status == 429):
        raise ValueError(f"status must be an HTTP 5xx code or 429, got {status!r}")
    return status


def _hub(hub: Any) -> str | None:
    if hub is not None and hub not in HUBS:
        raise ValueError(f"hub must be 'user', 'market' or None, got {hub!r}")
    return hub


def _api_path(path: Any) -> str:
    if not isinstance(path, str) or not path:
        raise ValueError(f"paths must be non-empty strings, got {path!r}")
    return path if path.startswith("/") else "/api/" + path


class Faults:
    """Armed faults (see the module docstring). Every method is thread-safe.

    Raises ValueError from the arming methods for bad arguments.
    """

    def __init__(self, actions: HubActions) -> None:
        self._actions = actions
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._rate_limited = 0
        self._errors: list[list[Any]] = []  # [remaining, status, paths or None]
        self._ambiguous = 0
        self._ambiguous_status: int | None = 504
        self._delay_s = {hub: 0.0 for hub in HUBS}
        self._duplicates = 0
        self._reorder = 0

    # ------------------------------------------------------------------ arming

    def rate_limit_burst(self, n: int) -> None:
        """The next ``n`` REST calls get HTTP 429."""
        with self._lock:
            self._rate_limited += _count(n)

    def server_errors(self, n: int, status: int = 503, paths: list[str] | None = None) -> None:
        """The next ``n`` REST calls to ``paths`` (None = any) get ``status`` (5xx or 429) without being
        processed."""
        if paths is not None and not isinstance(paths, (list, tuple)):
            raise ValueError(f"paths must be a list of paths or None, got {paths!r}")
        entry = [_count(n), _status(status), None if paths is None else frozenset(_api_path(p) for p in paths)]
        with self._lock:
            self._errors.append(entry)

    def ambiguous_place(self, n: int, status: int | None = 504) -> None:
        """The next ``n`` Order/place calls are executed, then answered with ``status`` (None = dropped)."""
        checked = None if status is None else _status(status)
        with self._lock:
            self._ambiguous, self._ambiguous_status = _count(n), checked

    def drop_connections(self, hub: str | None = None) -> None:
        """Abort the sockets of ``hub`` (None = both) without a close handshake."""
        self._actions.drop_connections(_hub(hub))

    def expire_tokens(self) -> None:
        """Invalidate every token; close the hub connections."""
        self._actions.expire_tokens()

    def logout(self) -> None:
        """Push GatewayLogout to the user hub, then close every hub connection."""
        self._actions.logout()

    def delay_events(self, ms: float, hub: str | None = None) -> None:
        """Write hub messages ``ms`` milliseconds late (0 = no delay) on ``hub`` (None = both)."""
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0:
            raise ValueError(f"ms must be a number >= 0, got {ms!r}")
        with self._lock:
            for h in HUBS if _hub(hub) is None else (hub,):
                self._delay_s[h] = ms / 1000.0

    def duplicate_events(self, n: int) -> None:
        """Deliver the next ``n`` user-hub events twice."""
        with self._lock:
            self._duplicates += _count(n)

    def reorder_events(self, n: int) -> None:
        """Deliver the next ``n`` (>= 2) user-hub events in reverse order."""
        with self._lock:
            self._reorder = _count(n, minimum=2)

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._reset()

    def state(self) -> dict[str, Any]:
        """What is armed (JSON-safe), for ``GET /sandbox/faults`` and logs."""
        with self._lock:
            return {"rate_limit_burst": self._rate_limited,
                    "server_errors": [{"n": n, "status": s, "paths": sorted(p) if p is not None else None}
                                      for n, s, p in self._errors],
                    "ambiguous_place": {"n": self._ambiguous, "status": self._ambiguous_status},
                    "delay_events_ms": {h: d * 1000.0 for h, d in self._delay_s.items()},
                    "duplicate_events": self._duplicates, "reorder_events": self._reorder}

    # ------------------------------------------------------------------ consumption (gateway side)

    def take_rest_fault(self, path: str) -> RestFault | None:
        """The fault for one REST call to ``path``, consuming one count; None if nothing applies."""
        with self._lock:
            if self._rate_limited:
                self._rate_limited -= 1
                return RestFault("rate_limit", 429)
            for entry in self._errors:
                if entry[2] is None or path in entry[2]:
                    entry[0] -= 1
                    if entry[0] == 0:
                        self._errors.remove(entry)
                    return RestFault("error", entry[1])
            if self._ambiguous and path == "/api/Order/place":
                self._ambiguous -= 1
                return RestFault("ambiguous", self._ambiguous_status)
        return None

    def delay_s(self, hub: str) -> float:
        """Current write delay of ``hub`` connections, seconds."""
        with self._lock:
            return self._delay_s[hub]

    def take_duplicate(self) -> bool:
        """True if this user-hub event must be delivered twice (consumes one count)."""
        with self._lock:
            if self._duplicates:
                self._duplicates -= 1
                return True
            return False

    def take_reorder(self) -> tuple[bool, bool]:
        """``(hold, release)`` for one user-hub event: hold it back; release the held batch now
        (this event completes it). Consumes one count when holding."""
        with self._lock:
            if not self._reorder:
                return False, False
            self._reorder -= 1
            return True, self._reorder == 0
