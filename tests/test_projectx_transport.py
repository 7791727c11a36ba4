"""The REST client's http.client transport against a raw socket HTTP server on 127.0.0.1.

The server is scripted per connection (answer and keep the connection, answer and close it
without saying so, answer with ``Connection: close``, read the request and hang up, never answer)
so that each of the transport's connection rules is exercised on a real socket, plus HTTPS with a
throw-away self-signed certificate made by the ``openssl`` command.
"""

from __future__ import annotations

import gc
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
    ``hangup`` closes without answering, ``silent`` never answers. Counts connections and requests."""

    def __init__(self, mode: str = "keep", tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.tls = tls
        self.connections = 0
        self.hung_up = 0  # connections the client closed
        self.requests: list[bytes] = []
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
                body = b'{"success":true,"orderId":%d}' % len(self.requests)
                extra = b"Connection: close\r\n" if self.mode == "close" else b""
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                             % (len(body), extra, body))
                if self.mode in ("close", "drop_idle"):
                    return

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def server_factory():
    servers: list[RawServer] = []

    def make(mode: str = "keep", tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(mode, tls))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def post(transport: StdlibHTTPTransport, url: str, body: bytes = b'{"accountId":1}') -> httpx.Response:
    request = httpx.Request("POST", url, headers={"Content-Type": "application/json"}, content=body,
                            extensions={"timeout": TIMEOUT})
    return transport.handle_request(request)


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


def test_each_thread_has_its_own_connection_and_close_closes_them_all(server_factory):
    srv = server_factory("keep")
    t = StdlibHTTPTransport()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                post(t, srv.url)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(srv.requests) == 15 and srv.connections == 3
    t.close()
    post(t, srv.url)  # after close: a new connection, no error
    assert srv.connections == 4


def test_a_threads_connection_is_closed_when_the_thread_exits(server_factory):
    """The request-pool threads of a restarted broker actor exit; their sockets must not stay open."""
    srv = server_factory("keep")
    t = StdlibHTTPTransport()
    th = threading.Thread(target=lambda: post(t, srv.url))
    th.start()
    th.join()
    gc.collect()
    assert srv.connections == 1
    assert wait_until(lambda: srv.hung_up == 1, timeout=3)


def test_refused_connection_is_a_connect_error(server_factory):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(httpx.ConnectError):
        post(StdlibHTTPTransport(), f"http://127.0.0.1:{port}/api/Order/place")


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
