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
        self.queue: deque[tuple[str, Any]] = deque()
        self.dead_letters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.delivered = 0

    def send(self, out: Out) -> None:
        for dest, msg in out:
            for name in self.topics.get(dest, (dest,)):
                self.queue.append((name, msg))

    def drain(self) -> None:
        q, handlers = self.queue, self.handlers
        while q:
            name, msg = q.popleft()
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
                self.send(answer)

    def run(self, out: Out) -> None:
        """``send(out)`` then ``drain()``, without queueing ``out`` itself when the queue is empty:
        its messages go straight to their handlers, in order, and what those handlers answer is
        queued behind, where FIFO would put it (after every message of ``out``). The backtest
        calls this once per timestamp of the replay; the delivery is written out here as in
        :meth:`drain` (a call per delivery is a tenth of a print's cost)."""
        if self.queue:
            self.send(out)
            self.drain()
            return
        topics, handlers = self.topics, self.handlers
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
                    self.send(answer)
        self.drain()

    def _rejected(self, name: str, msg: Any, exc: RejectedMessage) -> None:
        self.rejected[f"{name}:{type(msg).__name__}"] += 1
        logger.debug("{} rejected {}: {}", name, type(msg).__name__, exc)
