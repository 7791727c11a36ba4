"""An httpx transport over the standard library's ``http.client``: the REST client's connection layer.

Why: an order call spends most of its client CPU in httpx's default transport (httpcore's pool
and the pure-Python h11 state machine), under the one GIL the whole live system shares.
``http.client`` does the same HTTP/1.1 exchange for about half of that CPU, which counts most in a
burst (a grid rebuild sends ten orders from one quote; the figures are in
docs/decisions/0009-rest-transport-http-client-warm-connections.md). Requests, responses and
errors stay httpx's (:class:`httpx.BaseTransport` is httpx's extension point for this), so
:mod:`infra.projectx.rest` and its error classification do not change.

Behaviour (what the REST client relies on, as httpx's transport does it, plus two extensions):

- Keep-alive HTTP/1.1 connections, shared: a request takes an idle connection to its host (the
  most recently used) or opens one, and gives it back once the response is read, so there are
  never more connections than concurrent requests (plus :meth:`StdlibHTTPTransport.keep_warm`'s).
  ``close()`` closes the idle ones at once and those lent to a request when it ends.
- A connection idle for ``keepalive_expiry_s`` (default 30 s, :data:`KEEPALIVE_EXPIRY_S`) or found
  readable while idle (the server closed it, or sent something unasked) is closed and another one
  used BEFORE the request is written. Without this an order sent on a connection the server had
  just closed would fail after it was written, an ambiguous outcome, instead of simply going out
  on a fresh connection.
- Extension: :meth:`StdlibHTTPTransport.keep_warm` keeps ``n`` connections to a host open ahead of
  need (the live broker's orders: an order never waits for a TCP and TLS handshake).
- Extension: :meth:`StdlibHTTPTransport.send` is a request in two halves, written now, its answer
  read later (possibly on another thread), so that one thread can write a decision's orders back
  to back; with ``idle_only`` it sends only on an already open connection
  (docs/decisions/0010-orders-written-back-to-back.md).
- Errors, by phase, as httpx's transport raises them (``infra.projectx.rest`` treats the first two
  as "not sent" and the rest as "may have been processed" for order-changing calls):
  connect: ``httpx.ConnectTimeout`` / ``httpx.ConnectError``; writing the request:
  ``httpx.WriteTimeout`` / ``httpx.WriteError``; reading the response: ``httpx.ReadTimeout`` /
  ``httpx.RemoteProtocolError`` (closed without a complete response, malformed status line or
  headers) / ``httpx.ReadError``. A connection that failed is closed and forgotten.
- Timeouts come from the request's ``timeout`` extension (``httpx.Timeout(...).as_dict()``):
  ``connect`` for the TCP (and TLS) connect, ``write`` while sending, ``read`` while waiting for
  and reading the response; ``None`` = no limit.
- HTTPS verifies certificates and host names against certifi's CA bundle, as httpx does.
- Responses are read completely; ``Connection: close`` from the server is honoured (the next
  request opens a new connection). No proxies, no redirects, no cookies: the gateway needs none.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable

import certifi
import httpx
from loguru import logger

KEEPALIVE_EXPIRY_S = 30.0
"""Idle connections older than this are not reused, seconds. httpx uses 5 s; servers close idle
connections after 60 s (AWS load balancers), 75 s (nginx), 120-130 s (IIS, Kestrel, the ASP.NET Core
server ProjectX runs on) or more, and the gateway's own value is unconfirmed
(docs/reference/projectx-gateway.md#unconfirmed). 30 s stays under all of them, and a connection a
server closes sooner is seen closed (readable) and replaced before it is used. At 5 s most orders
after a quiet spell would pay a new TCP and TLS handshake
(docs/decisions/0009-rest-transport-http-client-warm-connections.md)."""

WARM_INTERVAL_S = 1.0
"""How often :meth:`StdlibHTTPTransport.keep_warm`'s thread checks the idle connections, seconds."""

WARM_CONNECT_TIMEOUT_S = 10.0
"""Connect (and TLS handshake) timeout of the connections :meth:`StdlibHTTPTransport.keep_warm`
opens, seconds (the REST client's default request timeout)."""


class _Conn:
    """One keep-alive connection and when it was last used (``time.monotonic()`` s). Closed when
    collected, so a connection dropped without ``close()`` leaves no socket behind."""

    __slots__ = ("http", "idle_since", "gen")

    def __init__(self, conn: http.client.HTTPConnection, gen: int) -> None:
        self.http = conn
        self.idle_since = time.monotonic()
        self.gen = gen  # the transport's close() generation it was opened in

    def usable(self, max_idle_s: float, now: float) -> bool:
        """Open, idle for at most ``max_idle_s`` (``now``: ``time.monotonic()``) and not readable
        (the server has not closed it): safe to write a request on."""
        sock = self.http.sock
        return sock is not None and now - self.idle_since <= max_idle_s and not _readable(sock)

    def __del__(self) -> None:
        try:
            self.http.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the socket module may be gone
            pass


def _readable(sock: socket.socket) -> bool:
    """True if ``sock`` has something to read (or EOF) right now: on an idle keep-alive connection
    that means the server closed it (or broke the protocol); either way it must not be reused."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed or invalid descriptor
        return True


Key = tuple[str, str, "int | None"]
"""(scheme, host, port) of a connection."""


def _key(url: httpx.URL) -> Key:
    return (url.scheme, url.host, url.port)


class StdlibHTTPTransport(httpx.BaseTransport):
    """:class:`httpx.BaseTransport` on ``http.client`` (module docstring). Thread-safe: a request
    takes an idle connection for itself (or opens one) and gives it back when the response is read.

    Args:
        keepalive_expiry_s: an idle connection older than this is closed instead of reused, seconds.
        ssl_context: for ``https`` URLs; default verifies against certifi's CA bundle.
        warm_interval_s: how often the :meth:`keep_warm` thread checks, seconds.
    """

    def __init__(self, keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S, ssl_context: ssl.SSLContext | None = None,
                 warm_interval_s: float = WARM_INTERVAL_S) -> None:
        self.keepalive_expiry_s = keepalive_expiry_s
        self.warm_interval_s = warm_interval_s
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._idle: dict[Key, list[_Conn]] = {}  # per host, most recently used last
        self._busy: dict[Key, int] = {}          # per host, connections lent to a request now
        self._warm: dict[Key, int] = {}          # keep_warm targets
        self._gen = 0                            # close() count: connections of an older one are not kept
        self._warm_lock = threading.Lock()       # one keep-warm pass at a time
        self._warm_stop = threading.Event()
        self._warmer: threading.Thread | None = None
        self.connects = 0
        """Connections opened so far, by requests and by :meth:`keep_warm` (a test and diagnostics
        counter)."""
        self.warm_connects = 0
        """Of :attr:`connects`, those opened ahead of need by :meth:`keep_warm`."""
        self._warm_failing = False  # the last keep-warm connect failed (logged once per streak)

    # ------------------------------------------------------------------ httpx.BaseTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (body already in memory) and return the complete response. Raises the
        httpx exceptions listed in the module docstring."""
        return self.send(request)()

    def send(self, request: httpx.Request, *, idle_only: bool = False) -> Callable[[], httpx.Response] | None:
        """Write ``request`` now; return ``response()``, which reads the complete response (and gives
        the connection back). The two halves of :meth:`handle_request`, so that one thread can write
        several requests (a decision's orders) before reading any answer; ``response()`` may run on
        another thread, and must be called exactly once (the connection is lent until then).

        ``idle_only``: use an already open idle connection or return None (nothing sent): the caller
        is a thread that must not wait for a TCP/TLS connect (the broker actor).

        Raises (now) the connect and write errors, (from ``response()``) the read errors, as listed
        in the module docstring."""
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        key = _key(request.url)
        conn = self._acquire(key, timeouts.get("connect"), request, idle_only=idle_only)
        if conn is None:
            return None
        try:
            self._write(conn, request, timeouts)
        except BaseException:
            conn.http.close()  # a connection that failed is never lent again
            self._release(key, None)
            raise

        def response() -> httpx.Response:
            try:
                resp = self._read(conn, request, timeouts)
            except BaseException:
                conn.http.close()
                self._release(key, None)
                raise
            self._release(key, conn if conn.http.sock is not None else None)  # None: the server asked to close
            return resp

        return response

    def close(self) -> None:
        """Stop :meth:`keep_warm` and close every idle connection; a connection lent to a request
        now is closed when that request ends. Later requests open new ones."""
        self._warm_stop.set()
        with self._lock:
            idle, self._idle, self._warm = self._idle, {}, {}
            self._gen += 1
        for conns in idle.values():
            for c in conns:
                c.http.close()

    # ------------------------------------------------------------------ keeping connections ready

    def keep_warm(self, url: str | httpx.URL, n: int) -> None:
        """Keep ``n`` connections to ``url``'s host open and ready, so that a burst of up to ``n``
        concurrent requests (the broker's order pool) never waits for a TCP and TLS handshake
        (about 2 ms of CPU on loopback, plus two network round trips to the real gateway).

        Opens them now, then a daemon thread checks every ``warm_interval_s``: an idle connection
        the server closed is replaced; one idle for nearly ``keepalive_expiry_s`` is replaced by a
        fresh one before it would expire, so requests do not open connections themselves. No
        request is sent (nothing counts against the gateway's rate limit). A failed connect is
        logged and retried on the next check (requests still connect on their own). Stopped by
        :meth:`close`. Calling it again for the same host sets a new ``n``.
        """
        key = _key(httpx.URL(url))
        with self._lock:
            self._warm[key] = max(0, int(n))
            start = self._warmer is None or not self._warmer.is_alive()
            if start:
                self._warm_stop.clear()
                self._warmer = threading.Thread(target=self._warm_loop, name="px-http-warm", daemon=True)
        self._top_up()
        if start:
            self._warmer.start()

    def _warm_loop(self) -> None:
        while not self._warm_stop.wait(self.warm_interval_s):
            try:
                self._top_up()
            except Exception as e:  # noqa: BLE001 - the warmer must outlive any surprise
                logger.warning("REST keep-warm check failed: {!r}", e)

    def _top_up(self) -> None:
        """One keep-warm pass: drop idle connections that are closed or about to expire, then open
        new ones until each warm host has its ``n`` (idle plus lent)."""
        with self._warm_lock:
            stale_after = max(0.0, self.keepalive_expiry_s - 2 * self.warm_interval_s)
            now = time.monotonic()
            dropped: list[_Conn] = []
            missing: dict[Key, int] = {}
            with self._lock:
                for key, n in self._warm.items():
                    keep: list[_Conn] = []
                    for c in self._idle.get(key, []):
                        (keep if c.usable(stale_after, now) else dropped).append(c)
                    self._idle[key] = keep
                    missing[key] = n - len(keep) - self._busy.get(key, 0)
            for c in dropped:
                c.http.close()
            for key, count in missing.items():
                self._open_warm(key, count)

    def _open_warm(self, key: Key, count: int) -> None:
        """Open up to ``count`` idle connections for ``key``; stop at the first failed connect
        (logged once per failing streak; the next pass tries again)."""
        for _ in range(count):
            try:
                conn = self._open(key, WARM_CONNECT_TIMEOUT_S)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as e:
                if not self._warm_failing:
                    logger.warning("REST keep-warm: cannot connect to {}://{}:{}: {} (retried every "
                                   "{:g} s)", *key, e, self.warm_interval_s)
                self._warm_failing = True
                return
            if self._warm_failing:
                logger.info("REST keep-warm: connected to {}://{}:{} again", *key)
                self._warm_failing = False
            with self._lock:
                if self._warm.get(key) is None or conn.gen != self._gen:  # closed meanwhile
                    conn.http.close()
                    return
                self._idle.setdefault(key, []).append(conn)
                self.warm_connects += 1

    # ------------------------------------------------------------------ connections

    def _acquire(self, key: Key, connect_timeout: float | None, request: httpx.Request, *,
                 idle_only: bool = False) -> _Conn | None:
        """An idle live connection for ``key``, or a new one if none is left (one idle too long or
        found readable, i.e. closed by the server, is closed and skipped); with ``idle_only``, None
        instead of a new one. Raises ``httpx.ConnectTimeout`` / ``httpx.ConnectError`` /
        ``httpx.UnsupportedProtocol``."""
        with self._lock:
            self._busy[key] = self._busy.get(key, 0) + 1
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if conn.usable(self.keepalive_expiry_s, time.monotonic()):
                return conn
            conn.http.close()
        if idle_only:
            self._release(key, None)
            return None
        try:
            return self._open(key, connect_timeout, request)
        except BaseException:
            self._release(key, None)
            raise

    def _release(self, key: Key, conn: _Conn | None) -> None:
        """Give ``conn`` back as idle (``None``: it was closed), ending its lending."""
        with self._lock:
            self._busy[key] = max(0, self._busy.get(key, 0) - 1)
            if conn is not None and conn.gen != self._gen:
                conn.http.close()  # lent when close() ran
            elif conn is not None:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(key, []).append(conn)

    def _open(self, key: Key, connect_timeout: float | None, request: httpx.Request | None = None) -> _Conn:
        """Connect (and for https, handshake). Raises ``httpx.ConnectTimeout`` / ``httpx.ConnectError``
        / ``httpx.UnsupportedProtocol``."""
        scheme, host, port = key
        if scheme == "https":
            if self._ssl is None:  # built once (it loads the CA bundle); a race only builds it twice
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            http_conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port or 443, timeout=connect_timeout, context=self._ssl)
        elif scheme == "http":
            http_conn = http.client.HTTPConnection(host, port or 80, timeout=connect_timeout)
        else:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        try:
            http_conn.connect()
        except TimeoutError as e:
            http_conn.close()
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from e
        except OSError as e:  # refused, unreachable, DNS, TLS handshake/verification
            http_conn.close()
            raise httpx.ConnectError(f"connecting to {host}:{port} failed: {e!r}", request=request) from e
        http_conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connects += 1
            return _Conn(http_conn, self._gen)

    @staticmethod
    def _write(conn: _Conn, request: httpx.Request, timeouts: dict[str, Any]) -> None:
        """Write ``request`` on ``conn``; ``httpx.WriteTimeout`` / ``httpx.WriteError``."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw}
        target = request.url.raw_path.decode("ascii")
        try:
            conn.http.sock.settimeout(timeouts.get("write"))
            conn.http.request(request.method, target, body=request.content, headers=headers)
        except TimeoutError as e:
            raise httpx.WriteTimeout(f"writing the request timed out: {e}", request=request) from e
        except (OSError, http.client.HTTPException) as e:
            raise httpx.WriteError(f"writing the request failed: {e!r}", request=request) from e

    @staticmethod
    def _read(conn: _Conn, request: httpx.Request, timeouts: dict[str, Any]) -> httpx.Response:
        """Read the whole response to ``request`` from ``conn``; ``httpx.ReadTimeout`` /
        ``httpx.RemoteProtocolError`` / ``httpx.ReadError``."""
        try:
            conn.http.sock.settimeout(timeouts.get("read"))
            resp = conn.http.getresponse()
            body = resp.read()
            status, reason, resp_headers = resp.status, resp.reason, resp.getheaders()
            version = resp.version
        except TimeoutError as e:
            raise httpx.ReadTimeout(f"waiting for the response timed out: {e}", request=request) from e
        except http.client.HTTPException as e:  # RemoteDisconnected, IncompleteRead, BadStatusLine...
            raise httpx.RemoteProtocolError(f"no complete response: {e!r}", request=request) from e
        except OSError as e:
            raise httpx.ReadError(f"reading the response failed: {e!r}", request=request) from e
        return httpx.Response(status, headers=resp_headers, content=body, request=request,
                              extensions={"http_version": b"HTTP/1.1" if version == 11 else b"HTTP/1.0",
                                          "reason_phrase": (reason or "").encode("latin-1", "replace")})
