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
- :class:`ActorLoop` runs several actors (:class:`LoopHostedActor`) on one thread, one FIFO: the
  decision path (bars, strategies, risk, router, broker, the live feed) shares one, so a message
  between them costs no thread hand-over.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable

import pykka
from loguru import logger
from pykka import ActorRegistry, messages as pykka_messages

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


class ActorLoop:
    """One thread that runs the mailboxes of several hosted actors, in one FIFO.

    pykka gives each actor a thread of its own, so every message between two actors wakes a thread
    and hands the GIL over. On the decision path (tick -> bars -> strategy -> risk -> router ->
    broker) those hand-overs cost more than the handlers themselves in a burst on one CPU
    (docs/decisions/0001-decision-path-on-one-actor-loop.md). Actors hosted on one loop keep
    their own mailbox order, handler state and supervision: a crash stops that actor only, and its
    supervisor restarts it on the same loop. A message from one of them to another is then a queue
    append on the same thread, as in NautilusTrader's single-threaded kernel, or an Erlang
    scheduler running many processes.

    The rule that comes with it: a hosted handler never blocks. No ``ask`` from a handler (it would
    wait for its own thread: deadlock), no sleep, no network wait. The actors that do block (the
    replay feed paces itself by sleeping, the reconciler makes REST calls) and the one that must
    notice a stalled loop (the watchdog) keep threads of their own.

    Two lanes: the messages of actors started ``urgent`` (the broker, in modes whose
    ``ModeSpec.broker_urgent`` is set) run before any other message waiting on the loop, each lane
    in FIFO order, so an order the router passed on leaves for the venue before the loop goes on
    with the rest of a burst (docs/decisions/0002-live-broker-in-the-urgent-lane.md). Each actor's
    own messages stay in order (an actor has one lane).

    Args:
        name: the thread is named ``actor-loop-<name>``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # (actor, item) per lane, urgent first; one token in _ready per item appended
        self._lanes: tuple[deque, deque] = (deque(), deque())
        self._ready: "queue.SimpleQueue[None]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"actor-loop-{name}", daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The loop's thread (tests, diagnostics)."""
        return self._thread

    def post(self, actor: "LoopHostedActor", item: Any) -> None:
        """Queue ``item`` (a pykka envelope, or the start marker) for ``actor``, in its lane. Any
        thread."""
        self._lanes[0 if actor.urgent else 1].append((actor, item))
        self._ready.put(None)

    def close(self, timeout: float = 5.0) -> None:
        """Run what is queued, then end the thread (waits up to ``timeout`` s; not from the loop's
        own thread). Stop the hosted actors first: a message posted after this is never run."""
        self._lanes[1].append((None, None))
        self._ready.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        urgent, normal = self._lanes
        while True:
            self._ready.get()  # every item is appended before its token: one is waiting now
            actor, item = urgent.popleft() if urgent else normal.popleft()
            if actor is None:
                return
            actor._step(item)  # noqa: SLF001 - the loop is the actor's runtime


class _LoopInbox:
    """A loop-hosted actor's mailbox as pykka sees it (``put``/``empty``/``qsize``): ``put`` queues
    the envelope on the loop; ``qsize`` is how many of this actor's messages wait there (the
    watchdog's inbox depth)."""

    def __init__(self, loop: ActorLoop, actor: "LoopHostedActor") -> None:
        self._loop = loop
        self._actor = actor
        self._lock = threading.Lock()
        self._put = 0
        self.taken = 0
        """Envelopes the loop has taken for this actor; written by the loop's thread only."""

    def put(self, envelope: Any, block: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            self._put += 1
        self._loop.post(self._actor, envelope)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        raise RuntimeError("a loop-hosted actor's mailbox is read by its ActorLoop only")

    def qsize(self) -> int:
        return max(0, self._put - self.taken)

    def empty(self) -> bool:
        return self.qsize() == 0


_START = object()
"""Posted by :meth:`LoopHostedActor._start_actor_loop`: run ``on_start`` on the loop."""


class LoopHostedActor(HandlerActor):
    """A :class:`HandlerActor` run on a shared :class:`ActorLoop` instead of a thread of its own.

    Same contract as :class:`HandlerActor`: ``tell``/``ask``/``stop`` through its ``ActorRef``,
    ``on_start`` before the first message, a crash reported to supervision by ``on_failure``.
    For each envelope the loop does what pykka's thread loop does (``pykka.Actor._actor_loop_running``,
    pykka 4): handle it and answer an ``ask``; on an exception answer the asker with it or, for a
    ``tell``, stop the actor and run ``on_failure``. An envelope that reaches a stopped actor is
    answered as pykka answers what is left in a stopped actor's inbox (``ActorDeadError``; a stop
    request gets None). pykka names ``_create_actor_inbox`` and ``_start_actor_loop`` as the hooks
    for new actor types.

    Args:
        loop: the :class:`ActorLoop` to run on; the rest as :class:`HandlerActor`.
        urgent: this actor's messages run before the loop's other waiting messages (its lanes).
    """

    def __init__(self, name: str, make_handler: Callable[[], Any], directory: Directory, failures: Any,
                 loop: ActorLoop, urgent: bool = False, **kw: Any) -> None:
        self._loop = loop  # before pykka's __init__, which creates the inbox
        self.urgent = urgent
        super().__init__(name, make_handler, directory, failures, **kw)

    def _create_actor_inbox(self) -> _LoopInbox:  # type: ignore[override]  # pykka calls it as self._create_actor_inbox()
        return _LoopInbox(self._loop, self)

    def _start_actor_loop(self) -> None:
        self._loop.post(self, _START)

    def _step(self, item: Any) -> None:
        """On the loop's thread: the start marker (``on_start``), or one envelope."""
        if item is _START:
            self._actor_loop_setup()
            return
        self.actor_inbox.taken += 1
        envelope = item
        if self.actor_stopped.is_set():
            if envelope.reply_to is not None:
                if isinstance(envelope.message, pykka_messages._ActorStop):  # noqa: SLF001
                    envelope.reply_to.set(None)
                else:
                    dead = pykka.ActorDeadError(f"{self.actor_ref} stopped before handling the message")
                    envelope.reply_to.set_exception(exc_info=(pykka.ActorDeadError, dead, None))
            return
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # noqa: BLE001 - as pykka: log it, the actor is stopped anyway
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # noqa: BLE001 - as pykka: SystemExit and the like stop every actor
            logger.critical("{!r} in actor {}: stopping all actors", sys.exc_info()[1], self.name)
            self._stop()
            # not block=True, as pykka's own thread loop does: the stops of this loop's other
            # actors are run by this thread, which would wait for them for ever
            ActorRegistry.stop_all(block=False)


def start_handler_actor(name: str, make_handler: Callable[[], Any], directory: Directory, failures: Any,
                        start_timeout_s: float = 10.0, **kw: Any) -> pykka.ActorRef:
    """Start a :class:`HandlerActor` and wait until its ``on_start`` ran (handler built, name
    registered, ``on_started`` messages sent), as OTP's ``start_link`` waits for ``init``: pykka runs
    ``on_start`` on the actor's own thread, and a sibling started next must find this one
    registered. Otherwise a reconciler could answer before risk is registered; the answer would be
    a dead letter, and risk would stay HALTED for the whole session. With ``loop=`` an
    :class:`ActorLoop`, the actor is a :class:`LoopHostedActor` on that loop, in its urgent lane
    with ``urgent=True``. Returns the ref; an actor whose start failed has already reported it to
    ``failures``."""
    loop = kw.pop("loop", None)
    urgent = kw.pop("urgent", False)
    if loop is not None:
        ref = LoopHostedActor.start(name, make_handler, directory, failures, loop=loop, urgent=urgent, **kw)
    else:
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
