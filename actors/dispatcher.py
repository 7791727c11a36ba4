"""The deterministic host of the backtest: the node's handlers on one thread, FIFO, no actors.

Messages are delivered in the order they were produced, so two runs on the same input give the
same trade log, byte for byte (tests/test_core.py checks it).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Callable, Iterable

from loguru import logger

from domain.handler import Out, RejectedMessage
from domain.messages import Alert


class Dispatcher:
    """Single-threaded FIFO dispatcher: the same handlers and routing as the actor tree, no threads.

    Deterministic: messages are delivered in the order they were produced; ties cannot occur.

    Args:
        handlers: actor name -> handler (``handle(msg) -> Out``).
        topic_map: topic -> subscriber names, in delivery order.
        on_alert: called with each :class:`domain.messages.Alert` sent to a name with no handler
            (the backtest has no watchdog: the node passes a log-only alerter, so a strategy's
            or risk's alerts still reach the log); None counts them as dead letters only.
    """

    def __init__(self, handlers: dict[str, Any], topic_map: dict[str, tuple[str, ...]],
                 on_alert: Callable[[Alert], Any] | None = None) -> None:
        self.handlers = handlers
        self.topics = topic_map
        self.on_alert = on_alert
        self.queue: deque[tuple[str, Any]] = deque()  # (actor or topic, message), in the order produced
        self.dead_letters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._routes: dict[str, tuple[tuple[str, Any], ...]] = {}  # destination -> ((name, handle or None), ...)

    def replace(self, name: str, handler: Any) -> None:
        """Make ``handler`` the handler of ``name`` from the next message on (change handlers
        only through this: the routes keep each handler's bound ``handle``)."""
        self.handlers[name] = handler
        self._routes.clear()

    def _route(self, dest: str) -> tuple[tuple[str, Any], ...]:
        """``dest``'s handlers, kept: a topic's subscribers in the topic's order, or the actor
        itself, as ``(name, bound handle)``, the handle None for a name with no handler (a dead
        letter)."""
        route = self._routes[dest] = tuple((name, getattr(self.handlers.get(name), "handle", None))
                                           for name in self.topics.get(dest, (dest,)))
        return route

    def send(self, out: Out) -> None:
        self.queue.extend(out)

    def drain(self) -> None:
        """Deliver until nothing is queued: what is queued now, in order, then what that answered."""
        while self.queue:
            batch, self.queue = self.queue, deque()
            self._deliver(batch)

    def run(self, out: Out) -> None:
        """``send(out)`` then ``drain()``; with nothing queued, ``out`` goes straight to its
        handlers without passing through the queue (the backtest calls this once per timestamp
        of the replay)."""
        if self.queue:
            self.queue.extend(out)
        else:
            self._deliver(out)
        self.drain()

    def _deliver(self, out: Iterable[tuple[str, Any]]) -> None:
        """Each message of ``out`` to its handlers (a topic's to each subscriber, in the topic's
        order); what they answer is queued behind everything already queued (FIFO)."""
        routes, queue = self._routes, self.queue
        for dest, msg in out:
            route = routes.get(dest)
            if route is None:
                route = self._route(dest)
            for name, handle in route:
                if handle is None:
                    self.dead_letters[name] += 1
                    if type(msg) is Alert and self.on_alert is not None:
                        self.on_alert(msg)
                    continue
                try:
                    answer = handle(msg)
                except RejectedMessage as exc:
                    self._rejected(name, msg, exc)
                    continue
                if answer:
                    queue.extend(answer)

    def _rejected(self, name: str, msg: Any, exc: RejectedMessage) -> None:
        self.rejected[f"{name}:{type(msg).__name__}"] += 1
        logger.debug("{} rejected {}: {}", name, type(msg).__name__, exc)
