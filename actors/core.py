"""Actor hosting and name-based addressing on pykka.

- :class:`Directory` maps actor names to the *current* ``ActorRef`` and topics to subscriber names.
  Senders always resolve a name at send time, so a restarted actor (a new pykka object) is
  reached without anyone holding a stale reference. A message for a name with no live actor is a
  counted dead letter.
- :class:`HandlerActor` hosts one domain handler (``handle(msg) -> Out``): it delivers the
  returned messages through the directory, rejects bad input with a logged reason
  (:class:`~domain.handler.RejectedMessage`, unknown types) and otherwise lets an exception crash
  the actor, which pykka reports to ``on_failure`` and we forward to the supervision tree.
  pykka skips ``on_failure`` for exceptions raised in ``on_start``; we report those ourselves.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import pykka
from loguru import logger

from domain.handler import Out, RejectedMessage


_current = threading.local()


def current_message() -> Any:
    """The message the calling actor thread is handling (None outside a handler): lets a send hook
    (tracing, the latency benchmark) tell what caused a message."""
    return getattr(_current, "msg", None)


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Posted to the supervision queue when a hosted actor crashes."""

    name: str
    error: str
    phase: str = "run"


@dataclass(frozen=True, slots=True)
class Query:
    """Run ``fn(handler)`` inside the actor thread and return its result (use with ``ask``)."""

    fn: Callable[[Any], Any]


class Directory:
    """Name -> current ActorRef, and topic -> subscriber names. Thread-safe."""

    def __init__(self) -> None:
        self._refs: dict[str, pykka.ActorRef] = {}
        self._topics: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.dead_letters: Counter[str] = Counter()
        self.send_hook: Callable[[str, Any], None] | None = None

    def register(self, name: str, ref: pykka.ActorRef) -> None:
        with self._lock:
            self._refs[name] = ref

    def unregister(self, name: str, ref: pykka.ActorRef | None = None) -> None:
        with self._lock:
            if ref is None or self._refs.get(name) is ref:
                self._refs.pop(name, None)

    def subscribe(self, topic: str, *names: str) -> None:
        with self._lock:
            self._topics[topic] = tuple(dict.fromkeys(self._topics.get(topic, ()) + names))

    def resolve(self, dest: str) -> tuple[str, ...]:
        """Names a destination reaches: a topic's subscribers, or the name itself."""
        return self._topics.get(dest, (dest,))

    def ref(self, name: str) -> pykka.ActorRef | None:
        return self._refs.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._refs)

    def tell(self, dest: str, msg: Any) -> None:
        """Deliver ``msg`` to every actor ``dest`` resolves to; dead letters are counted, never raised."""
        if self.send_hook is not None:
            self.send_hook(dest, msg)
        for name in self.resolve(dest):
            ref = self._refs.get(name)
            if ref is None:
                self.dead_letters[name] += 1
                continue
            try:
                ref.tell(msg)
            except pykka.ActorDeadError:
                self.dead_letters[name] += 1

    def send_all(self, out: Out) -> None:
        for dest, msg in out:
            self.tell(dest, msg)

    def inbox_depths(self) -> dict[str, int]:
        """Current inbox size per actor (pykka's unbounded queue)."""
        depths = {}
        for name, ref in list(self._refs.items()):
            inbox = getattr(ref, "actor_inbox", None)
            if inbox is not None:
                depths[name] = inbox.qsize()
        return depths


class HandlerActor(pykka.ThreadingActor):
    """pykka actor hosting one handler.

    Args:
        name: the actor's name in the directory.
        make_handler: builds the handler (restoring state from the mirror if there is any);
            called in ``on_start`` on every (re)start.
        directory: where outputs are sent.
        failures: the supervision queue (``queue.Queue`` of :class:`ChildFailed`).
        after: optional ``after(handler, msg, out)`` hook run after each handled message and before
            its outputs are sent (persistence: the mirror is never behind what others were told).
        on_started: optional ``on_started(handler) -> Out`` sent once the actor runs.
    """

    def __init__(self, name: str, make_handler: Callable[[], Any], directory: Directory, failures: Any,
                 after: Callable[[Any, Any], None] | None = None,
                 on_started: Callable[[Any], Out] | None = None) -> None:
        super().__init__()
        self.name = name
        self._make = make_handler
        self.directory = directory
        self.failures = failures
        self._after = after
        self._on_started = on_started
        self.handler: Any = None
        self.rejected: Counter[str] = Counter()

    def on_start(self) -> None:
        try:
            self.handler = self._make()
            self.directory.register(self.name, self.actor_ref)
            if self._on_started is not None:
                self.directory.send_all(self._on_started(self.handler))
        except Exception as exc:  # pykka would stop us silently: report it
            logger.exception("actor {} failed to start: {}", self.name, exc)
            self.failures.put(ChildFailed(self.name, repr(exc), "start"))
            raise

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Query):
            return message.fn(self.handler)
        _current.msg = message
        try:
            out = self.handler.handle(message)
        except RejectedMessage as exc:
            self.rejected[type(message).__name__] += 1
            logger.warning("{} rejected {}: {}", self.name, type(message).__name__, exc)
            return None
        if self._after is not None:
            self._after(self.handler, message, out)  # mirrored before anyone hears of its effects
        self.directory.send_all(out)
        return None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        logger.error("actor {} crashed: {!r}", self.name, exception_value)
        self.directory.unregister(self.name, self.actor_ref)
        self._close_handler()
        self.failures.put(ChildFailed(self.name, repr(exception_value)))

    def on_stop(self) -> None:
        self.directory.unregister(self.name, self.actor_ref)
        self._close_handler()

    def _close_handler(self) -> None:
        """Let a handler that owns resources (threads, connections) release them: its ``close()``,
        if it has one, runs once the actor is stopped or crashed. A restart builds a new handler,
        so an old one's threads would otherwise outlive it."""
        close = getattr(getattr(self, "handler", None), "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:  # noqa: BLE001 - a failing cleanup must not hide the stop or the crash
            logger.exception("actor {}: closing its handler failed", self.name)


def start_handler_actor(name: str, make_handler: Callable[[], Any], directory: Directory, failures: Any,
                        start_timeout_s: float = 10.0, **kw: Any) -> pykka.ActorRef:
    """Start a :class:`HandlerActor` and wait until its ``on_start`` ran (handler built, name
    registered, ``on_started`` messages sent), as OTP's ``start_link`` waits for ``init``: pykka runs
    ``on_start`` on the actor's own thread, and a sibling started next must find this one
    registered. (It did not always: a reconciler could answer before risk was registered, the
    answer was a dead letter and risk stayed HALTED for the whole session.) Returns the ref; an
    actor whose start failed has already reported it to ``failures``."""
    ref = HandlerActor.start(name, make_handler, directory, failures, **kw)
    try:
        ref.ask(Query(lambda _handler: None), timeout=start_timeout_s)
    except pykka.ActorDeadError:
        pass  # on_start failed: reported to the supervision queue
    except pykka.Timeout:
        logger.warning("actor {} still starting after {:.0f} s", name, start_timeout_s)
    return ref


def ask(directory: Directory, name: str, fn: Callable[[Any], Any], timeout: float = 5.0) -> Any:
    """Run ``fn(handler)`` in actor ``name`` and return the result (supervisor and tests only)."""
    ref = directory.ref(name)
    if ref is None:
        raise pykka.ActorDeadError(f"no live actor named {name!r}")
    return ref.ask(Query(fn), timeout=timeout)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``cond`` until true or ``timeout`` seconds; returns the last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()
