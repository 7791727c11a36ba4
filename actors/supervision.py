"""OTP-style supervision on top of pykka (which has none).

A :class:`Supervisor` owns an ordered list of children (actor specs or child supervisors), a
strategy and a restart intensity:

- ``one_for_one``: restart only the failed child;
- ``one_for_all``: stop every child (reverse order) and start them all again (in order);
- ``rest_for_one``: restart the failed child and every child started after it.

More than ``intensity`` restarts within ``period_s`` seconds makes the supervisor give up: it
stops its children and fails itself, and its parent treats that as a failure of one child
(escalation; erlang/otp design_principles/sup_princ.md). When the root gives up, the tree calls
``on_escalate(reason)``: the supervisor process flattens through a path that does not use the
failed actors, records the reason, alerts and exits non-zero.

Failures arrive on one queue (posted by :class:`actors.core.HandlerActor`) and are handled on one
thread, so restarts never race each other.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka
from loguru import logger

from actors.core import ChildFailed, Directory, start_handler_actor

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclass
class ActorSpec:
    """How to (re)start one hosted actor (an OTP child spec).

    Attributes:
        name: actor name.
        make_handler: builds the handler on every (re)start.
        kwargs: go to :class:`actors.core.HandlerActor` (``after``, ``on_started``, ``loop``, ``urgent``).
        restart: ``permanent`` (restarted whenever its supervisor restarts it) or ``temporary``
            (never restarted: a failure only removes it).
        shutdown_s: how long a stop waits for the actor, seconds.
    """

    name: str
    make_handler: Callable[[], Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    restart: str = "permanent"
    shutdown_s: float = 5.0


class Supervisor:
    """One supervisor node. See the module docstring for semantics.

    Args:
        name: supervisor name (for logs and restart counters).
        strategy: one of :data:`STRATEGIES`.
        intensity: restarts allowed within ``period_s`` (OTP default 1 in 5 s).
        children: ordered :class:`ActorSpec` or :class:`Supervisor` objects.
        clock: monotonic seconds (injected for tests).
    Raises:
        ValueError: unknown strategy.
    """

    def __init__(self, name: str, strategy: str, intensity: int, period_s: float,
                 children: list["ActorSpec | Supervisor"], clock: Callable[[], float] = time.monotonic) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown supervision strategy {strategy!r}; use one of {STRATEGIES}")
        self.name, self.strategy, self.intensity, self.period_s = name, strategy, intensity, period_s
        self.children = children
        self.clock = clock
        self.restarts: deque[float] = deque()
        self.parent: Supervisor | None = None
        for c in children:
            if isinstance(c, Supervisor):
                c.parent = self
        self.tree: SupervisionTree | None = None

    # ------------------------------------------------------------------ lifecycle
    def child_names(self) -> list[str]:
        return [c.name for c in self.children]

    def start(self) -> None:
        for c in self.children:
            self._start_child(c)

    def stop(self) -> None:
        for c in reversed(self.children):
            self._stop_child(c)

    def _start_child(self, c: "ActorSpec | Supervisor") -> None:
        assert self.tree is not None
        if isinstance(c, Supervisor):
            c.start()
            return
        start_handler_actor(c.name, c.make_handler, self.tree.directory, self.tree.failures, **c.kwargs)
        self.tree.starts[c.name] += 1

    def _stop_child(self, c: "ActorSpec | Supervisor") -> None:
        assert self.tree is not None
        if isinstance(c, Supervisor):
            c.stop()
            return
        ref = self.tree.directory.ref(c.name)
        if ref is not None:
            try:
                ref.stop(block=True, timeout=c.shutdown_s)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
            self.tree.directory.unregister(c.name, ref)

    # ------------------------------------------------------------------ failures
    def owns(self, actor: str) -> bool:
        return any(isinstance(c, ActorSpec) and c.name == actor for c in self.children)

    def _intensity_exceeded(self) -> bool:
        now = self.clock()
        self.restarts.append(now)
        while self.restarts and now - self.restarts[0] > self.period_s:
            self.restarts.popleft()
        return len(self.restarts) > self.intensity

    def child_failed(self, child_name: str, reason: str) -> None:
        """Restart per strategy, or escalate to the parent when intensity is exceeded."""
        assert self.tree is not None
        if self._intensity_exceeded():
            logger.error("supervisor {}: restart intensity {} in {}s exceeded ({}); escalating",
                         self.name, self.intensity, self.period_s, reason)
            self.stop()
            why = f"{self.name}: intensity exceeded after {child_name} failed: {reason}"
            if self.parent is None:
                self.tree.escalate(why)
            else:
                self.parent.child_failed(self.name, why)
            return
        idx = self.child_names().index(child_name)
        if self.strategy == "one_for_one":
            affected = [self.children[idx]]
        elif self.strategy == "one_for_all":
            affected = list(self.children)
        else:
            affected = self.children[idx:]
        logger.warning("supervisor {} ({}): restarting {} after {} failed: {}", self.name, self.strategy,
                       [c.name for c in affected], child_name, reason)
        for c in reversed(affected):
            self._stop_child(c)
        for c in affected:
            if isinstance(c, ActorSpec) and c.restart == "temporary":
                continue
            self.tree.restarts[c.name] += 1
            self._start_child(c)


class SupervisionTree:
    """Root supervisor plus the failure-handling thread.

    Args:
        root: the top :class:`Supervisor`.
        directory: name registry shared by all actors.
        on_escalate: called once with the reason when the root gives up.
    """

    def __init__(self, root: Supervisor, directory: Directory, on_escalate: Callable[[str], None]) -> None:
        self.root = root
        self.directory = directory
        self.failures: "queue.Queue[Any]" = queue.Queue()
        self.on_escalate = on_escalate
        self.restarts: Counter[str] = Counter()
        self.starts: Counter[str] = Counter()
        self.escalated: str | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._all: list[Supervisor] = []
        self._walk(root)

    def _walk(self, sup: Supervisor) -> None:
        sup.tree = self
        self._all.append(sup)
        for c in sup.children:
            if isinstance(c, Supervisor):
                self._walk(c)

    def start(self) -> None:
        """Start all actors (depth first, in order) and the failure thread."""
        self.root.start()
        self._thread = threading.Thread(target=self._run, name="supervision", daemon=False)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self.failures.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None or self.escalated:
                continue
            if isinstance(item, ChildFailed):
                owner = next((s for s in self._all if s.owns(item.name)), None)
                if owner is None:
                    logger.error("failure of unknown actor {}: {}", item.name, item.error)
                    continue
                try:
                    owner.child_failed(item.name, f"{item.error} ({item.phase})")
                except Exception as exc:  # restarting failed: that is an escalation too
                    logger.exception("restart failed")
                    self.escalate(f"restart of {item.name} failed: {exc!r}")

    def escalate(self, reason: str) -> None:
        if self.escalated:
            return
        self.escalated = reason
        logger.critical("supervision tree escalation: {}", reason)
        self.on_escalate(reason)

    def stop(self) -> None:
        """Stop every actor in reverse start order, then the failure thread."""
        self._stopping.set()
        self.root.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
