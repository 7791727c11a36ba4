"""The deterministic host of the backtest: the node's handlers on one thread, FIFO, no actors.

Messages are delivered in the order they were produced, so two runs on the same input give the
same trade log, byte for byte (tests/test_core.py checks it).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from loguru import logger

from domain.handler import Out, RejectedMessage


class Dispatcher:
    """Single-threaded FIFO dispatcher: the same handlers and routing as the actor tree, no threads.

    Deterministic: messages are delivered in the order they were produced; ties cannot occur.
    """

    def __init__(self, handlers: dict[str, Any], topic_map: dict[str, tuple[str, ...]]) -> None:
        self.handlers = handlers
        self.topics = topic_map
        self.queue: deque[tuple[str, Any]] = deque()  # (actor or topic, message), in the order produced
        self.dead_letters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.delivered = 0

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

    def _deliver(self, out: Out) -> None:
        """Each message of ``out`` to its handlers (a topic's to each subscriber, in the topic's
        order); what they answer is queued behind everything already queued (FIFO)."""
        topics, handlers, queue = self.topics, self.handlers, self.queue
        for dest, msg in out:
            for name in topics.get(dest, (dest,)):
                h = handlers.get(name)
                if h is None:
                    self.dead_letters[name] += 1
                    continue
                self.delivered += 1
                try:
                    answer = h.handle(msg)
                except RejectedMessage as exc:
                    self._rejected(name, msg, exc)
                    continue
                if answer:
                    queue.extend(answer)

    def _rejected(self, name: str, msg: Any, exc: RejectedMessage) -> None:
        self.rejected[f"{name}:{type(msg).__name__}"] += 1
        logger.debug("{} rejected {}: {}", name, type(msg).__name__, exc)
