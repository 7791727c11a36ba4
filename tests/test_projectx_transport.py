"""The REST client's http.client transport against a raw socket HTTP server on 127.0.0.1.

The server is scripted per connection (answer and keep the connection, answer and close it
without saying so, answer with ``Connection: close``, read the request and hang up, never answer)
so that each of the transport's connection rules is exercised on a real socket, plus HTTPS with a
throw-away self-signed certificate made by the ``openssl`` command.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from actors.core import wait_until
from infra.projectx.transport import StdlibHTTPTransport

TIMEOUT = httpx.Timeout(2.0).as_dict()


class RawServer:
    """HTTP/1.1 on a listening socket, one thread per connection. ``mode`` decides what happens
    after each request is read: ``keep`` answers and keeps the connection, ``drop_idle`` answers
    (no ``Connection: close``) and then closes it, ``close`` answers with ``Connection: close``,
    ``hangup`` closes without answering, ``silent`` never answers; ``delay_s`` waits before each
    answer. Counts connections and requests; :meth:`drop_all` closes every open connection (what a
    server does to idle keep-alive connections at its own timeout)."""

    def __init__(self, mode: str = "keep", tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.tls = tls
        self.connections = 0
        self.hung_up = 0  # connections the client closed
        self.requests: list[bytes] = []
        self.delay_s = 0.0
        self.open: list[socket.socket] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/api/Order/place"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            self.connections += 1
            self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, buf: bytes) -> tuple[bytes | None, bytes]:
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None, b""
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            rest += conn.recv(65536)
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                try:
                    request, buf = self._read_request(conn, buf)
                except OSError:
                    return
                if request is None:
                    self.hung_up += 1
                    return
                self.requests.append(request)
                if self.mode == "silent":
                    time.sleep(5)
                    return
                if self.mode == "hangup":
                    return
                time.sleep(self.delay_s)
                body = b'{"success":true,"orderId":%d}' % len(self.requests)
                extra = b"Connection: close\r\n" if self.mode == "close" else b""
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                             % (len(body), extra, body))
                if self.mode in ("close", "drop_idle"):
                    return

    def drop_all(self) -> None:
        for conn in self.open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open.clear()

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self.drop_all()


@pytest.fixture
def server_factory():
    servers: list[RawServer] = []

    def make(mode: str = "keep", tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(mode, tls))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def _request(url: str, body: bytes = b'{"accountId":1}') -> httpx.Request:
    return httpx.Request("POST", url, headers={"Content-Type": "application/json"}, content=body,
                         extensions={"timeout": TIMEOUT})


def post(transport: StdlibHTTPTransport, url: str, body: bytes = b'{"accountId":1}') -> httpx.Response:
    return transport.handle_request(_request(url, body))


def test_keeps_one_connection_alive_and_sends_the_request_as_given(server_factory):
    srv = server_factory("keep")
    t = StdlibHTTPTransport()
    for i in range(3):
        r = post(t, srv.url, b'{"n":%d}' % i)
        assert r.status_code == 200 and r.json()["orderId"] == i + 1
    assert srv.connections == 1 and t.connects == 1
    head, _, body = srv.requests[2].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/Order/place HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/json" in head and body == b'{"n":2}'
    t.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(server_factory):
    # Without the idle check the second order would be written to a dead socket: an ambiguous
    # outcome (reconciliation) for an order that simply never left.
    srv = server_factory("drop_idle")
    t = StdlibHTTPTransport()
    assert post(t, srv.url).status_code == 200
    time.sleep(0.1)  # the server's FIN arrives
    assert post(t, srv.url).status_code == 200
    assert srv.connections == 2 and len(srv.requests) == 2
    t.close()


def test_an_idle_connection_past_the_keepalive_expiry_is_not_reused(server_factory):
    srv = server_factory("keep")
    t = StdlibHTTPTransport(keepalive_expiry_s=0.05)
    post(t, srv.url)
    post(t, srv.url)  # at once: reused
    time.sleep(0.1)
    post(t, srv.url)  # expired: a new connection
    assert srv.connections == 2


def test_connection_close_from_the_server_is_honoured(server_factory):
    srv = server_factory("close")
    t = StdlibHTTPTransport()
    assert [post(t, srv.url).json()["orderId"] for _ in range(2)] == [1, 2]
    assert srv.connections == 2


def test_concurrent_requests_use_separate_connections_and_reuse_them(server_factory):
    srv = server_factory("keep")
    srv.delay_s = 0.05  # the three requests of a round overlap
    t = StdlibHTTPTransport()
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def worker() -> None:
        try:
            for _ in range(5):
                start.wait(timeout=5)
                post(t, srv.url)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(srv.requests) == 15
    assert srv.connections == 3 == t.connects  # one per concurrent request, then reused
    # connections are not tied to threads: a later thread (a restarted broker's pool) reuses them
    th = threading.Thread(target=lambda: post(t, srv.url))
    th.start()
    th.join()
    assert srv.connections == 3
    t.close()
    assert wait_until(lambda: srv.hung_up == 3, timeout=3)  # close() closed the idle ones
    post(t, srv.url)  # after close: a new connection, no error
    assert srv.connections == 4


def test_a_connection_lent_when_close_runs_is_closed_when_its_request_ends(server_factory):
    srv = server_factory("keep")
    srv.delay_s = 0.3
    t = StdlibHTTPTransport()
    answers: list[int] = []
    th = threading.Thread(target=lambda: answers.append(post(t, srv.url).status_code))
    th.start()
    assert wait_until(lambda: len(srv.requests) == 1, timeout=3)
    t.close()
    th.join()
    assert answers == [200]  # the request in flight still completes
    assert wait_until(lambda: srv.hung_up == 1, timeout=3)


def test_keep_warm_opens_connections_ahead_of_requests_without_sending_any(server_factory):
    srv = server_factory("keep")
    srv.delay_s = 0.05
    t = StdlibHTTPTransport()
    t.keep_warm(srv.url, 3)
    assert t.warm_connects == 3 and wait_until(lambda: srv.connections == 3, timeout=3) and srv.requests == []
    threads = [threading.Thread(target=lambda: post(t, srv.url)) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(srv.requests) == 3
    assert t.connects == 3 and srv.connections == 3  # the three concurrent requests opened none
    t.close()


def test_send_writes_requests_back_to_back_and_their_answers_are_read_afterwards(server_factory):
    """What the broker does with a decision's orders: one thread writes each on a warm connection
    without waiting for any answer; each answer is read later (here on the same thread)."""
    srv = server_factory("keep")
    t = StdlibHTTPTransport()
    t.keep_warm(srv.url, 3)
    answers = [t.send(_request(srv.url, b'{"n":%d}' % i), idle_only=True) for i in range(3)]
    assert all(a is not None for a in answers)
    assert wait_until(lambda: len(srv.requests) == 3, timeout=3)  # all three out, no answer read yet
    assert [a().json()["success"] for a in answers] == [True] * 3
    assert sorted(r.partition(b"\r\n\r\n")[2] for r in srv.requests) == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert t.connects == 3 and post(t, srv.url).status_code == 200 and t.connects == 3  # given back, reused
    t.close()


def test_send_idle_only_sends_nothing_when_no_connection_is_open(server_factory):
    srv = server_factory("keep")
    t = StdlibHTTPTransport()
    assert t.send(_request(srv.url), idle_only=True) is None
    assert t.connects == 0 and srv.requests == []
    assert t.send(_request(srv.url))().status_code == 200  # without idle_only it connects
    t.close()


def test_keep_warm_replaces_connections_the_server_closed_and_those_near_expiry(server_factory):
    srv = server_factory("keep")
    t = StdlibHTTPTransport(keepalive_expiry_s=0.6, warm_interval_s=0.05)
    t.keep_warm(srv.url, 2)
    assert t.warm_connects == 2 and wait_until(lambda: srv.connections == 2, timeout=3)
    srv.drop_all()  # the server's own idle timeout
    assert wait_until(lambda: srv.connections == 4, timeout=3)  # replaced by the warmer
    assert wait_until(lambda: srv.connections >= 6, timeout=3)  # rotated before 0.6 s of idleness
    post(t, srv.url)
    assert t.connects == t.warm_connects  # the request found a warm connection: it opened none
    t.close()
    n = srv.connections
    time.sleep(0.3)
    assert srv.connections == n  # close() stopped the warmer


def test_refused_connection_is_a_connect_error(server_factory):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(httpx.ConnectError):
        post(StdlibHTTPTransport(), f"http://127.0.0.1:{port}/api/Order/place")


def test_keep_warm_survives_an_unreachable_host(server_factory):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/api/Order/place"
    t = StdlibHTTPTransport(warm_interval_s=0.05)
    t.keep_warm(url, 2)  # logged, not raised: the live system starts, and retries every interval
    time.sleep(0.2)
    assert t.warm_connects == 0 and t._warmer is not None and t._warmer.is_alive()
    with pytest.raises(httpx.ConnectError):
        post(t, url)
    t.close()


def test_no_answer_is_a_read_timeout(server_factory):
    srv = server_factory("silent")
    request = httpx.Request("POST", srv.url, content=b"{}", extensions={"timeout": httpx.Timeout(0.3).as_dict()})
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        StdlibHTTPTransport().handle_request(request)
    assert time.monotonic() - t0 < 2.0
    assert len(srv.requests) == 1  # it was sent: for an order this is an ambiguous outcome


def test_hang_up_after_the_request_is_a_protocol_error_and_the_connection_is_dropped(server_factory):
    srv = server_factory("hangup")
    t = StdlibHTTPTransport()
    with pytest.raises(httpx.RemoteProtocolError):
        post(t, srv.url)
    srv.mode = "keep"
    assert post(t, srv.url).status_code == 200
    assert srv.connections == 2


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_verifies_the_certificate(server_factory, self_signed):
    cert, key = self_signed
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    srv = server_factory("keep", tls=server_ctx)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        post(StdlibHTTPTransport(), srv.url)  # default: certifi's CAs, which do not know this one
    trusting = ssl.create_default_context(cafile=str(cert))
    t = StdlibHTTPTransport(ssl_context=trusting)
    assert post(t, srv.url).json()["orderId"] == 1
    assert post(t, srv.url).json()["orderId"] == 2
    t.close()
