"""An httpx transport over the standard library's ``http.client``: the REST client's connection layer.

Why: an order call spends most of its client CPU in httpx's default transport (httpcore's pool
and the pure-Python h11 state machine), about 0.45-0.6 ms per ``Order/place`` on loopback, under
the one GIL the whole live system shares. ``http.client`` does the same HTTP/1.1 exchange for
about half of that, and in a burst (a grid rebuild sends ten orders from one quote) ten orders
reached the sandbox in 5-6.5 ms instead of 8.5-10 ms (docs/projectx.md, "Transport"). Requests,
responses and errors stay httpx's (:class:`httpx.BaseTransport` is httpx's extension point for
this), so :mod:`infra.projectx.rest` and its error classification do not change.

Behaviour (what httpx's transport did that the REST client relies on):

- One keep-alive HTTP/1.1 connection per (thread, scheme, host, port): the broker's request pool
  threads never share one, so no lock is needed on the hot path. ``close()`` closes all of them;
  a thread's own are closed when it exits.
- A connection idle for ``keepalive_expiry_s`` (default 5 s, httpx's default) or found readable
  while idle (the server closed it, or sent something unasked) is closed and a new one opened
  BEFORE the request is written. Without this an order sent on a connection the server had just
  closed would fail after it was written, an ambiguous outcome, instead of simply going out on a
  fresh connection.
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
import weakref
from typing import Any

import certifi
import httpx

KEEPALIVE_EXPIRY_S = 5.0
"""Idle connections older than this are not reused, seconds (httpx's default ``keepalive_expiry``)."""


class _Conn:
    """One keep-alive connection and when it was last used (``time.monotonic()`` s). Closed when
    collected: a thread's connections go when the thread exits (its thread-local map is released;
    the transport's registry only holds weak references), e.g. the request-pool threads of a
    restarted broker actor."""

    __slots__ = ("http", "idle_since", "__weakref__")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.http = conn
        self.idle_since = time.monotonic()

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


class StdlibHTTPTransport(httpx.BaseTransport):
    """:class:`httpx.BaseTransport` on ``http.client`` (module docstring). Thread-safe: each thread
    uses its own connections.

    Args:
        keepalive_expiry_s: an idle connection older than this is closed instead of reused, seconds.
        ssl_context: for ``https`` URLs; default verifies against certifi's CA bundle.
    """

    def __init__(self, keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S, ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive_expiry_s = keepalive_expiry_s
        self._ssl = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[_Conn] = weakref.WeakSet()  # every live connection, for close()
        self.connects = 0
        """Connections opened so far (a test and diagnostics counter)."""

    # ------------------------------------------------------------------ httpx.BaseTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (body already in memory) and return the complete response. Raises the
        httpx exceptions listed in the module docstring."""
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        url = request.url
        key = (url.scheme, url.host, url.port)
        conn = self._connection(key, timeouts.get("connect"), request)
        sock = conn.http.sock
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw}
        target = url.raw_path.decode("ascii")
        try:
            sock.settimeout(timeouts.get("write"))
            conn.http.request(request.method, target, body=request.content, headers=headers)
        except TimeoutError as e:
            self._discard(key, conn)
            raise httpx.WriteTimeout(f"writing the request timed out: {e}", request=request) from e
        except (OSError, http.client.HTTPException) as e:
            self._discard(key, conn)
            raise httpx.WriteError(f"writing the request failed: {e!r}", request=request) from e
        try:
            sock.settimeout(timeouts.get("read"))
            resp = conn.http.getresponse()
            body = resp.read()
            status, reason, resp_headers = resp.status, resp.reason, resp.getheaders()
            version = resp.version
        except TimeoutError as e:
            self._discard(key, conn)
            raise httpx.ReadTimeout(f"waiting for the response timed out: {e}", request=request) from e
        except http.client.HTTPException as e:  # RemoteDisconnected, IncompleteRead, BadStatusLine...
            self._discard(key, conn)
            raise httpx.RemoteProtocolError(f"no complete response: {e!r}", request=request) from e
        except OSError as e:
            self._discard(key, conn)
            raise httpx.ReadError(f"reading the response failed: {e!r}", request=request) from e
        if conn.http.sock is None:  # the server asked to close (Connection: close / HTTP/1.0)
            self._discard(key, conn)
        else:
            conn.idle_since = time.monotonic()
        return httpx.Response(status, headers=resp_headers, content=body, request=request,
                              extensions={"http_version": b"HTTP/1.1" if version == 11 else b"HTTP/1.0",
                                          "reason_phrase": (reason or "").encode("latin-1", "replace")})

    def close(self) -> None:
        """Close every connection of every thread; later requests open new ones."""
        with self._lock:
            conns, self._all = list(self._all), weakref.WeakSet()
        for c in conns:
            c.http.close()

    # ------------------------------------------------------------------ connections

    def _connection(self, key: tuple[str, str, int | None], connect_timeout: float | None,
                    request: httpx.Request) -> _Conn:
        """This thread's live connection for ``key``, opening one if there is none, it expired, or
        the server closed it while idle. Raises ``httpx.ConnectTimeout`` / ``httpx.ConnectError``."""
        conns: dict | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn: _Conn | None = conns.get(key)
        if conn is not None:
            sock = conn.http.sock
            if (sock is None or time.monotonic() - conn.idle_since > self.keepalive_expiry_s
                    or _readable(sock)):
                self._discard(key, conn)
                conn = None
        if conn is not None:
            return conn
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
        conn = conns[key] = _Conn(http_conn)
        with self._lock:
            self._all.add(conn)
            self.connects += 1
        return conn

    def _discard(self, key: tuple[str, str, int | None], conn: _Conn) -> None:
        """Close ``conn`` and forget it (this thread's map and the registry)."""
        conn.http.close()
        conns = getattr(self._local, "conns", None)
        if conns is not None and conns.get(key) is conn:
            del conns[key]
        with self._lock:
            self._all.discard(conn)
