"""The private hooks we reach into in pykka and signalrcore are still there (and pinned).

Two modules lean on names their libraries do not promise to keep:

- ``actors/core.py``: :class:`~actors.core.LoopHostedActor` runs pykka actors on a shared thread
  (:class:`~actors.core.ActorLoop`), so it redoes what pykka's own thread loop
  (``pykka.Actor._actor_loop_running``) does. It overrides pykka's hooks for new actor types,
  ``_create_actor_inbox`` and ``_start_actor_loop``, and calls pykka internals:
  ``_actor_loop_setup()``, ``_handle_receive(message)``, ``_handle_failure(*exc_info)``, ``_stop()``,
  ``pykka.messages._ActorStop``, the envelope attributes ``.message`` / ``.reply_to`` and the
  future's ``set()`` / ``set_exception()``, and the instance attributes ``actor_inbox`` and
  ``actor_stopped`` (``Directory.inbox_depths`` reads ``ActorRef.actor_inbox`` with a ``getattr``
  default, so a rename there would silently empty the watchdog's inbox depths).
- ``infra/projectx/hubs.py``: subclasses signalrcore's ``BaseHubConnection`` (imported from its
  module path, as are ``PingMessage`` and ``JsonHubProtocol``), overrides ``on_message`` to see every
  frame (the silence watchdog), sends its own keep-alive with ``conn.transport.send(PingMessage())``,
  and ``_kill`` shuts a connection's socket down through ``conn.transport._client.sock``, read with
  ``getattr`` defaults: if signalrcore renamed either, ``_kill`` would quietly stop waking a receive
  thread blocked in ``recv`` instead of failing. It also filters the ``SignalRCoreClient`` logger so
  that tokens in URLs never reach the logs; a renamed logger would leak them.

pyproject.toml bounds both packages (``pykka>=4.1,<5``, ``signalrcore>=1.0.2,<1.1``). These tests
make a version that dropped or changed a hook fail here, with a message naming the file that relies
on it and what to do, instead of deadlocking an actor loop or a hub reconnect in production; and
they notice an installed version outside the declared bounds (a resolver that ignored the pin).
The loop host's full behaviour is covered by tests/test_core.py, the hubs' by
tests/test_projectx_hubs.py. Nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import logging
import queue
import re
import socket
import struct
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pykka
import pytest
from pykka import messages as pykka_messages

from actors.core import (
    ActorLoop,
    Directory,
    LoopHostedActor,
    Query,
    _LoopInbox,
    start_handler_actor,
)
from infra.projectx import hubs

ROOT = Path(__file__).resolve().parents[1]
PYKKA_VERSION = importlib.metadata.version("pykka")
SIGNALRCORE_VERSION = importlib.metadata.version("signalrcore")
RS = "\x1e"


def pykka_broke(what: str, user: str) -> str:
    return (f"pykka {PYKKA_VERSION} {what}, used by {user}: update the loop host in actors/core.py to the "
            f"new pykka internals (and re-run tests/test_core.py), or pin pykka below {PYKKA_VERSION} in "
            f"pyproject.toml")


def signalrcore_broke(what: str, user: str) -> str:
    return (f"signalrcore {SIGNALRCORE_VERSION} {what}, used by {user}: update infra/projectx/hubs.py to the "
            f"new signalrcore internals (and re-run tests/test_projectx_hubs.py), or pin signalrcore below "
            f"{SIGNALRCORE_VERSION} in pyproject.toml")


# ------------------------------------------------------------------ pykka: the names exist

# (name on pykka.Actor, arguments after self it is called with, who relies on it)
PYKKA_METHODS = [
    ("_create_actor_inbox", (), "actors/core.py LoopHostedActor._create_actor_inbox (overrides it)"),
    ("_start_actor_loop", (), "actors/core.py LoopHostedActor._start_actor_loop (overrides it)"),
    ("_actor_loop_setup", (), "actors/core.py LoopHostedActor._step (the start marker runs on_start)"),
    ("_handle_receive", ("message",), "actors/core.py LoopHostedActor._step (every envelope)"),
    ("_handle_failure", (None, None, None), "actors/core.py LoopHostedActor._step (a crash in a tell)"),
    ("_stop", (), "actors/core.py LoopHostedActor._step (a BaseException stops the actor)"),
]


@pytest.mark.parametrize("name,args,user", PYKKA_METHODS, ids=[m[0] for m in PYKKA_METHODS])
def test_pykka_actor_still_defines_the_private_method(name: str, args: tuple, user: str) -> None:
    """Each method is defined by ``pykka.Actor`` itself (so an override of ours overrides something
    pykka calls, and a call of ours reaches pykka's code) and accepts the arguments we pass."""
    assert name in vars(pykka.Actor), pykka_broke(f"removed `Actor.{name}`", user)
    raw = inspect.getattr_static(pykka.Actor, name)
    func = getattr(pykka.Actor, name)
    assert callable(func), pykka_broke(f"made `Actor.{name}` something not callable ({type(raw).__name__})", user)
    bound_args = args if isinstance(raw, staticmethod) else (object(), *args)
    try:
        inspect.signature(func).bind(*bound_args)
    except TypeError as e:
        pytest.fail(pykka_broke(f"changed the signature of `Actor.{name}` to {inspect.signature(func)} ({e})", user))


def test_pykka_actor_stop_message_class_is_still_there() -> None:
    user = "actors/core.py LoopHostedActor._step (answers a stop request queued to a stopped actor)"
    stop_cls = getattr(pykka_messages, "_ActorStop", None)
    assert inspect.isclass(stop_cls), pykka_broke("removed `pykka.messages._ActorStop`", user)
    stop_cls()  # pykka builds it without arguments (Actor.stop, ActorRef.stop)


def test_pykka_future_still_takes_a_value_and_an_exc_info() -> None:
    """``envelope.reply_to.set(value)``, ``.set_exception()`` (from an ``except`` block) and
    ``.set_exception(exc_info=(type, value, tb))``: how LoopHostedActor._step answers an ``ask``."""
    user = "actors/core.py LoopHostedActor._step (answers to ask)"
    future = pykka.ThreadingActor._create_future()
    for method in ("set", "set_exception"):
        assert callable(getattr(future, method, None)), pykka_broke(f"removed `Future.{method}`", user)
    params = inspect.signature(future.set_exception).parameters
    assert "exc_info" in params and params["exc_info"].default is None, \
        pykka_broke(f"changed `Future.set_exception` to {inspect.signature(future.set_exception)}", user)
    future.set(42)
    assert future.get(timeout=1) == 42
    f2 = pykka.ThreadingActor._create_future()
    f2.set_exception(exc_info=(pykka.ActorDeadError, pykka.ActorDeadError("gone"), None))
    with pytest.raises(pykka.ActorDeadError):
        f2.get(timeout=1)
    f3 = pykka.ThreadingActor._create_future()
    try:
        raise KeyError("from the handler")
    except KeyError:
        f3.set_exception()
    with pytest.raises(KeyError):
        f3.get(timeout=1)


# ------------------------------------------------------------------ pykka: it still calls them as we expect

class _RecordingInbox:
    """What pykka puts into an actor's inbox (``put``/``get``/``empty``/``qsize``, as _LoopInbox)."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    def put(self, envelope: Any, block: bool = True, timeout: float | None = None) -> None:
        self.envelopes.append(envelope)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.envelopes.pop(0)

    def qsize(self) -> int:
        return len(self.envelopes)

    def empty(self) -> bool:
        return not self.envelopes


class _Probe(pykka.Actor):
    """A pykka actor type built as LoopHostedActor is: instance-method hooks, no thread of its own."""

    last: _Probe | None = None

    def __init__(self) -> None:
        self.calls: list[Any] = []
        _Probe.last = self
        super().__init__()

    def _create_actor_inbox(self) -> _RecordingInbox:  # type: ignore[override]
        self.calls.append("create_actor_inbox")
        return _RecordingInbox()

    @staticmethod
    def _create_future() -> pykka.Future:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self.calls.append("start_actor_loop")

    def on_start(self) -> None:
        self.calls.append("on_start")

    def on_receive(self, message: Any) -> Any:
        self.calls.append(("on_receive", message))
        if message == "boom":
            raise RuntimeError("boom")
        return f"got {message}"

    def on_stop(self) -> None:
        self.calls.append("on_stop")


@pytest.fixture
def probe() -> Any:
    ref = _Probe.start()
    yield _Probe.last
    pykka.ActorRegistry.unregister(ref)


def test_pykka_builds_and_starts_an_actor_through_our_hooks(probe: _Probe) -> None:
    """``Actor.__init__`` calls ``self._create_actor_inbox()`` (our instance-method override, as
    LoopHostedActor's) and sets ``actor_inbox``/``actor_stopped``; ``Actor.start`` registers the actor
    and calls ``_start_actor_loop``; ``ActorRef.actor_inbox`` is the same inbox."""
    user = "actors/core.py LoopHostedActor (its inbox is the shared loop)"
    assert probe.calls[:2] == ["create_actor_inbox", "start_actor_loop"], \
        pykka_broke(f"no longer calls `_create_actor_inbox()` then `_start_actor_loop()` ({probe.calls})", user)
    assert isinstance(getattr(probe, "actor_inbox", None), _RecordingInbox), \
        pykka_broke("no longer stores `_create_actor_inbox()` as `actor_inbox`", user)
    assert isinstance(getattr(probe, "actor_stopped", None), threading.Event), \
        pykka_broke("no longer gives an actor an `actor_stopped` threading.Event",
                    "actors/core.py LoopHostedActor._step (skips the mail of a stopped actor)")
    assert getattr(probe.actor_ref, "actor_inbox", None) is probe.actor_inbox, \
        pykka_broke("no longer exposes `ActorRef.actor_inbox`",
                    "actors/core.py Directory.inbox_depths (the watchdog's inbox depths, read with a getattr default)")
    assert pykka.ActorRegistry.get_by_urn(probe.actor_urn) is probe.actor_ref


def test_pykka_envelopes_still_carry_message_and_reply_to(probe: _Probe) -> None:
    user = "actors/core.py LoopHostedActor._step (reads envelope.message / envelope.reply_to)"
    probe.actor_ref.tell("hello")
    future = probe.actor_ref.ask("question", block=False)
    probe.actor_ref.stop(block=False)
    told, asked, stop = probe.actor_inbox.envelopes
    for envelope in (told, asked, stop):
        assert hasattr(envelope, "message") and hasattr(envelope, "reply_to"), \
            pykka_broke(f"changed the envelope to {type(envelope).__name__}({envelope!r})", user)
    assert told.message == "hello" and told.reply_to is None, pykka_broke(f"changed what tell() queues: {told!r}", user)
    assert asked.message == "question" and asked.reply_to is future, \
        pykka_broke(f"changed what ask() queues: {asked!r}", user)
    assert isinstance(stop.message, pykka_messages._ActorStop) and stop.reply_to is not None, \
        pykka_broke(f"no longer asks an actor to stop with a `messages._ActorStop` envelope: {stop!r}", user)


def test_pykka_internals_still_do_what_the_loop_host_counts_on(probe: _Probe) -> None:
    """Run the internals the way LoopHostedActor._step does and check their effects."""
    probe._actor_loop_setup()
    assert "on_start" in probe.calls, pykka_broke("`_actor_loop_setup()` no longer runs on_start",
                                                  "actors/core.py LoopHostedActor._step (start marker)")
    assert probe._handle_receive("m") == "got m", pykka_broke(
        "`_handle_receive(message)` no longer hands a plain message to on_receive and returns its answer",
        "actors/core.py LoopHostedActor._step")
    try:
        probe._handle_receive("boom")
    except RuntimeError:
        pass
    else:
        pytest.fail(pykka_broke("`_handle_receive` swallows a handler's exception",
                                "actors/core.py LoopHostedActor._step (a crash must reach on_failure)"))
    assert not probe.actor_stopped.is_set()
    assert probe._handle_receive(pykka_messages._ActorStop()) is None
    assert probe.actor_stopped.is_set() and "on_stop" in probe.calls, pykka_broke(
        "`_handle_receive(_ActorStop())` no longer stops the actor (`_stop`: actor_stopped, on_stop)",
        "actors/core.py LoopHostedActor._step (a stop request is just an envelope)")
    assert pykka.ActorRegistry.get_by_urn(probe.actor_urn) is None, pykka_broke(
        "`_stop()` no longer unregisters the actor", "actors/core.py LoopHostedActor._step")


def test_pykka_handle_failure_still_stops_and_unregisters(caplog: pytest.LogCaptureFixture) -> None:
    ref = _Probe.start()
    actor = _Probe.last
    try:
        try:
            raise RuntimeError("handler crashed")
        except RuntimeError:
            with caplog.at_level(logging.CRITICAL, logger="pykka"):  # pykka logs the crash at ERROR
                actor._handle_failure(*sys.exc_info())
        user = "actors/core.py LoopHostedActor._step (a crash in a tell stops that actor only)"
        assert actor.actor_stopped.is_set(), pykka_broke("`_handle_failure` no longer sets actor_stopped", user)
        assert pykka.ActorRegistry.get_by_urn(actor.actor_urn) is None, \
            pykka_broke("`_handle_failure` no longer unregisters the actor", user)
        assert not ref.is_alive()
    finally:
        pykka.ActorRegistry.unregister(ref)


class _Echo:
    def handle(self, msg: Any) -> list:
        if msg == "boom":
            raise RuntimeError("boom")
        return []


def test_loop_hosted_actor_runs_on_the_loop_through_the_hooks() -> None:
    """The real thing, once: a LoopHostedActor gets its inbox from ``_create_actor_inbox``, starts
    through ``_start_actor_loop``/``_actor_loop_setup``, answers an ask, crashes through
    ``_handle_failure`` and stops through ``_ActorStop``. (tests/test_core.py covers the rest.)"""
    d, failures, loop = Directory(), queue.Queue(), ActorLoop("hooks")
    try:
        ref = start_handler_actor("h", _Echo, d, failures, loop=loop)
        assert ref.actor_class is LoopHostedActor
        assert isinstance(ref.actor_inbox, _LoopInbox), pykka_broke(
            "no longer takes a LoopHostedActor's inbox from its `_create_actor_inbox` override",
            "actors/core.py LoopHostedActor (every message would bypass the shared loop)")
        assert ref.ask(Query(lambda _h: threading.get_ident()), timeout=5) == loop.thread.ident
        assert d.inbox_depths() == {"h": 0}
        d.tell("h", "boom")
        crashed = failures.get(timeout=5)
        assert crashed.name == "h" and "boom" in crashed.error
        assert not ref.is_alive()
        ref2 = start_handler_actor("h2", _Echo, d, failures, loop=loop)
        assert ref2.stop(timeout=5) is True and not ref2.is_alive()
    finally:
        loop.close()


# ------------------------------------------------------------------ signalrcore: the names exist

SIGNALRCORE_IMPORTS = [
    ("signalrcore.hub.base_hub_connection", "BaseHubConnection"),
    ("signalrcore.messages.ping_message", "PingMessage"),
    ("signalrcore.protocol.json_hub_protocol", "JsonHubProtocol"),
]


@pytest.mark.parametrize("module,name", SIGNALRCORE_IMPORTS, ids=[n for _, n in SIGNALRCORE_IMPORTS])
def test_signalrcore_import_paths_still_work(module: str, name: str) -> None:
    user = "infra/projectx/hubs.py (module-level import)"
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        pytest.fail(signalrcore_broke(f"moved module `{module}` ({e})", user))
    assert inspect.isclass(getattr(mod, name, None)), signalrcore_broke(f"removed `{module}.{name}`", user)


def test_signalrcore_hub_connection_api_we_subclass_and_call() -> None:
    from signalrcore.hub.base_hub_connection import BaseHubConnection

    user = "infra/projectx/hubs.py _Connection / _Hub._connect / _Hub._send"
    try:
        inspect.signature(BaseHubConnection).bind(url="u", skip_negotiation=True, headers={}, protocol=None)
    except TypeError as e:
        pytest.fail(signalrcore_broke(f"changed BaseHubConnection's constructor ({e})", user))
    for method in ("on", "on_open", "on_close", "on_error", "start", "stop", "send", "on_message"):
        assert callable(getattr(BaseHubConnection, method, None)), \
            signalrcore_broke(f"removed `BaseHubConnection.{method}`", user)
    try:
        inspect.signature(BaseHubConnection.send).bind(None, "Method", [], on_invocation=None, invocation_id="x")
    except TypeError as e:
        pytest.fail(signalrcore_broke(f"changed `BaseHubConnection.send` ({e})", user))


def test_signalrcore_still_logs_to_the_logger_whose_tokens_we_redact() -> None:
    conn = hubs._Connection("http://127.0.0.1:9/hubs/market?access_token=secret", lambda: None)  # never started
    assert getattr(conn, "logger", None) is logging.getLogger("SignalRCoreClient"), signalrcore_broke(
        f"logs to {getattr(getattr(conn, 'logger', None), 'name', None)!r} instead of 'SignalRCoreClient'",
        "infra/projectx/hubs.py _RedactTokens (tokens in URLs would reach the logs unredacted)")
    assert any(isinstance(f, hubs._RedactTokens) for f in logging.getLogger("SignalRCoreClient").filters)


def test_signalrcore_ping_message_encodes_as_a_signalr_ping() -> None:
    from signalrcore.messages.ping_message import PingMessage
    from signalrcore.protocol.json_hub_protocol import JsonHubProtocol

    encoded = JsonHubProtocol().encode(PingMessage())
    assert encoded.endswith(RS) and json.loads(encoded[:-1]) == {"type": 6}, signalrcore_broke(
        f"encodes PingMessage() as {encoded!r}", "infra/projectx/hubs.py _Hub._run (our keep-alive)")


# ------------------------------------------------------------------ signalrcore: over a real socket

def _read_frame(sock: socket.socket) -> bytes | None:
    """One client->server WebSocket frame's payload (clients mask), or None at EOF."""
    def exactly(n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    header = exactly(2)
    if header is None:
        return None
    length = header[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack(">Q", exactly(8))[0]
    mask = exactly(4) if header[1] & 0x80 else b"\0\0\0\0"
    payload = exactly(length) or b""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


class _OneShotHub:
    """A SignalR hub on 127.0.0.1 for one connection: answers the WebSocket upgrade and the SignalR
    handshake, sends one server ping, then records every frame the client sends until EOF."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self.frames: queue.Queue[bytes] = queue.Queue()
        self.eof = threading.Event()
        self.peer: tuple | None = None
        self.error: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, name="hooks-hub", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, self.peer = self._listener.accept()
            with conn:
                conn.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
                handshake = _read_frame(conn)  # {"protocol":"json","version":1}\x1e
                if handshake is None:
                    return
                conn.sendall(_text_frame("{}" + RS) + _text_frame('{"type":6}' + RS))
                while (frame := _read_frame(conn)) is not None:
                    self.frames.put(frame)
                self.eof.set()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error.append(e)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5)


def test_signalrcore_transport_client_socket_is_where_hubs_reaches_for_it() -> None:
    """Connect hubs._Connection (built as _Hub._connect builds it) to a local hub and follow the
    paths infra/projectx/hubs.py takes: ``on_message`` sees every frame (server pings included),
    ``transport.send(PingMessage())`` reaches the server, and ``transport._client.sock`` is the
    connected socket that ``_kill`` shuts down."""
    from signalrcore.messages.ping_message import PingMessage

    server = _OneShotHub()
    frames_seen: list[float] = []
    opened = threading.Event()
    conn = hubs._Connection(f"http://127.0.0.1:{server.port}/hubs/market?access_token=t0k",
                            lambda: frames_seen.append(time.monotonic()))
    conn.on_open(opened.set)
    killed = False
    try:
        conn.start()  # returns once the WebSocket upgrade is answered; the SignalR handshake follows

        client = getattr(conn.transport, "_client", None)
        assert client is not None, signalrcore_broke(
            f"no longer keeps the socket client as `transport._client` ({type(conn.transport).__name__})",
            "infra/projectx/hubs.py _kill (a hub stuck in recv would no longer be woken)")
        sock = getattr(client, "sock", None)
        assert isinstance(sock, socket.socket), signalrcore_broke(
            f"no longer keeps the socket as `transport._client.sock` ({type(client).__name__}.sock = {sock!r})",
            "infra/projectx/hubs.py _kill (a hub stuck in recv would no longer be woken)")
        assert sock.getsockname() == server.peer, "transport._client.sock is not the socket connected to the hub"

        assert opened.wait(5), signalrcore_broke(
            f"did not complete a SignalR handshake with a local hub (server errors: {server.error})",
            "infra/projectx/hubs.py _Hub._connect (waits for on_open)")
        deadline = time.monotonic() + 5
        while not frames_seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert frames_seen, signalrcore_broke(
            "no longer delivers received frames to the connection's `on_message`",
            "infra/projectx/hubs.py _Connection.on_message (the silence watchdog: every hub would be "
            "dropped as silent)")

        assert callable(getattr(conn.transport, "send", None)), signalrcore_broke(
            "removed `transport.send`", "infra/projectx/hubs.py _Hub._run (our keep-alive)")
        conn.transport.send(PingMessage())
        sent = server.frames.get(timeout=5).decode()
        assert sent.endswith(RS) and json.loads(sent[:-1]) == {"type": 6}, signalrcore_broke(
            f"`transport.send(PingMessage())` sent {sent!r}", "infra/projectx/hubs.py _Hub._run (our keep-alive)")

        started = time.monotonic()
        hubs._kill(conn)
        killed = True
        assert server.eof.wait(5), "hubs._kill did not close the connection"
        assert time.monotonic() - started < 4
        assert sock.fileno() == -1, "hubs._kill did not close transport._client.sock"
        assert not server.error, server.error
    finally:
        if not killed:
            hubs._kill(conn, join_s=1.0)
        server.close()


# ------------------------------------------------------------------ the pins themselves

def _declared(package: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        if re.match(rf"{re.escape(package)}\b(?![-_.\w])", dep.strip(), re.IGNORECASE):
            return dep.strip()
    pytest.fail(f"{package} is not declared in pyproject.toml [project] dependencies")


def _release(version: str) -> tuple[int, ...]:
    parts = re.match(r"\d+(?:\.\d+)*", version)
    assert parts, f"cannot read version {version!r}"
    return tuple(int(p) for p in parts.group(0).split("."))


def _contains(spec: str, version: str) -> bool:
    """``version`` satisfies the comma-separated ``spec`` (packaging when installed, else release numbers)."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        SpecifierSet = None
    if SpecifierSet is not None:
        return SpecifierSet(spec).contains(version, prereleases=True)
    have = _release(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, ver = re.match(r"(~=|==|!=|<=|>=|<|>)\s*(\S+)", clause).groups()
        want = _release(ver)
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        ok = {"==": a == b, "!=": a != b, "<=": a <= b, ">=": a >= b, "<": a < b, ">": a > b,
              "~=": a >= b and have[:len(want) - 1] == want[:len(want) - 1]}[op]
        if not ok:
            return False
    return True


def test_loguru_file_sink_is_where_the_redacting_log_setup_builds_it(tmp_path) -> None:
    """infra/logs.py builds loguru's private ``loguru._file_sink.FileSink`` (what ``logger.add(path,
    rotation=, retention=)`` builds) to wrap it in the redaction of infra/redact.py, which calls its
    ``write``, ``stop`` (and ``flush`` when present)."""
    try:
        from loguru._file_sink import FileSink
    except ImportError as e:  # pragma: no cover - the loud failure
        raise AssertionError(f"loguru {importlib.metadata.version('loguru')} moved loguru._file_sink.FileSink, used "
                             f"by infra/logs.py setup_logging: build the file sink another way or pin loguru lower") from e
    sink = FileSink(str(tmp_path / "x_{time:YYYY-MM-DD}.log"), rotation="00:00", retention=14)
    for name in ("write", "stop"):
        assert callable(getattr(sink, name, None)), (
            f"loguru FileSink lost {name}(), which infra/redact.py RedactingSink calls: update it or pin loguru lower")
    from loguru import logger
    handler = logger.add(sink, format="{message}", level="INFO", filter=lambda r: r["extra"].get("hook_test"))
    try:
        logger.bind(hook_test=True).info("a line")  # loguru hands the sink its Message (a str with .record)
    finally:
        logger.remove(handler)
        sink.stop()
    assert [p.read_text() for p in tmp_path.glob("x_*.log")] == ["a line\n"]


@pytest.mark.parametrize("package", ["pykka", "signalrcore", "loguru"])
def test_installed_version_is_inside_the_pin(package: str) -> None:
    """Both pins carry an upper bound, and the installed version satisfies them: a resolver or a
    hand-run ``pip install -U`` that ignored the pin is noticed here."""
    declared = _declared(package)
    spec = declared[len(package):].split(";")[0].strip()
    assert re.search(r"<|==|~=", spec), (
        f"pyproject.toml declares {declared!r} without an upper bound: {package} is pinned because the code "
        f"reaches into its private hooks (see this module's docstring); keep an upper bound")
    installed = importlib.metadata.version(package)
    assert _contains(spec, installed), (
        f"{package} {installed} is installed but pyproject.toml declares {declared!r}: the private hooks were "
        f"only verified inside that range. Reinstall within it (pip install -e .), or run this module against "
        f"{installed}, fix what fails and widen the pin")


def test_the_fallback_version_comparison_agrees_with_packaging() -> None:
    """_contains without packaging must give packaging's answers for the pins we write."""
    cases = [(">=4.1,<5", "4.5.0", True), (">=4.1,<5", "5.0.0", False), (">=4.1,<5", "4.0.2", False),
             (">=1.0.2,<1.1", "1.0.2", True), (">=1.0.2,<1.1", "1.0.1", False), (">=1.0.2,<1.1", "1.1.0", False),
             ("~=1.0.2", "1.0.9", True), ("~=1.0.2", "1.1", False), ("==1.0.2", "1.0.2", True)]
    import builtins

    real_import = builtins.__import__

    def no_packaging(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("packaging"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    for spec, version, expected in cases:
        assert _contains(spec, version) is expected, (spec, version)
        builtins.__import__ = no_packaging
        try:
            assert _contains(spec, version) is expected, ("fallback", spec, version)
        finally:
            builtins.__import__ = real_import
