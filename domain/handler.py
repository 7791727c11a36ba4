"""The handler contract shared by every actor, plus addressing names.

A *handler* is a plain object with ``handle(msg) -> Out``: it consumes one message and returns the
messages to send as ``(destination, message)`` pairs. A destination is an actor name
(``"risk"``) or a topic (``"ticks.MES"``) that the runtime fans out to its subscribers
(:data:`TOPICS`). The pykka actor only hosts a handler; the backtest dispatcher calls the very
same handlers on one thread with a simulated clock (docs/architecture.md).

Bad input is answered by raising :class:`RejectedMessage`: the host logs the reason, counts it
and carries on. Any other exception is a crash that the supervisor handles.
"""

from __future__ import annotations

from typing import Any, Protocol

Out = list[tuple[str, Any]]
"""Messages to send: ``(destination name or topic, message)``."""

# Actor names (one obvious place for each).
FEED = "feed"
RISK = "risk"
ROUTER = "router"
BROKER = "broker"
RECONCILER = "reconciler"
WATCHDOG = "watchdog"
HEDGE = "hedge"


def bar_builder(instrument: str) -> str:
    """Actor name of the bar builder for ``instrument``."""
    return f"bars-{instrument}"


def grid_strategy(instrument: str) -> str:
    """Actor name (and strategy id) of the grid strategy for ``instrument``."""
    return f"grid-{instrument}"


def ticks_topic(instrument: str) -> str:
    """Topic of trade ticks of ``instrument`` (validated, from the feed)."""
    return f"ticks.{instrument}"


def prints_topic(instrument: str) -> str:
    """Topic of the trade prints of ``instrument`` for a venue that matches on our market data (the
    simulated venue). A timestamp's prints of every instrument go here before any goes to
    :func:`ticks_topic`, so the venue has them before a strategy reacts to that timestamp."""
    return f"prints.{instrument}"


def quotes_topic(instrument: str) -> str:
    """Topic of the validated top-of-book quotes of ``instrument`` from the live feed (the tick
    recorder, infra/tick_recorder.py; no trading handler takes quotes)."""
    return f"quotes.{instrument}"


def bars_topic(instrument: str) -> str:
    """Topic of closed bars of ``instrument``."""
    return f"bars.{instrument}"


RISK_STATE_TOPIC = "riskstate"
EXPOSURE_TOPIC = "exposure"
STATUS_TOPIC = "status"
CLOCK_TOPIC = "clock"
RECONCILED_TOPIC = "reconciled"
"""Reconciliation results (sent by the router after the corrective events): risk, and the feed."""


class RejectedMessage(ValueError):
    """Raised by a handler for a message it refuses (bad input). Never kills the actor."""


class IdGenerator(Protocol):
    """Source of client order ids, unique per account for ever (sent to ProjectX as customTag)."""

    def next_id(self, strategy_id: str) -> str: ...


class CounterIds:
    """Deterministic ids ``{strategy_id}-{incarnation}-{seq}`` (backtest, tests).

    Live and paper runs use the Redis-backed generator (``infra.state_store``) so ids survive
    restarts; the format is the same.
    """

    def __init__(self, incarnation: int = 1, start: int = 0) -> None:
        self.incarnation = incarnation
        self.seq = start

    def next_id(self, strategy_id: str) -> str:
        self.seq += 1
        return f"{strategy_id}-{self.incarnation}-{self.seq}"
