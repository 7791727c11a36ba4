"""The modes and the supervision tree, as data. The node (:mod:`actors.node`) reads both tables.

Every mode is one row of :data:`MODES`: where market data comes from, which venue fills the
orders, which clock runs, which host runs the handlers, and the few hosting choices that follow
from them. Nothing else differs between modes (the NautilusTrader idea of one core whose
environment only picks the clock and the adapters: docs/reference/reference-designs.md, "NautilusTrader").

The tree (:data:`TREE`) is OTP's child-spec list (erlang.org/doc/system/sup_princ.html): each
supervisor has a strategy and a restart intensity (N restarts in T seconds, beyond which it gives
up and its parent handles that as one failure); each child a restart type and a shutdown timeout.
Two entries stand for one child per item: ``strategy:*`` (one actor per configured strategy, named
by the config) and ``bars:*`` (one bar builder per instrument). The ``recorder`` (the tick recorder,
infra/tick_recorder.py) is built only where there is something to record: hub data with
``runtime.record_ticks``. docs/architecture.md draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DECISION_LOOP = "loop"
"""A child on the shared decision loop (:class:`actors.core.ActorLoop`): it must never block."""
OWN_THREAD = "thread"
"""A child with a pykka thread of its own (it blocks, or must run when the loop is stuck)."""


@dataclass(frozen=True)
class ModeSpec:
    """One mode: the adapters and host it runs with.

    Attributes:
        name: the ``--mode`` value (``paper-live`` is chosen by ``paper`` with credentials set).
        shown: the mode as the summary, the meta hash and the trade log name it.
        data: ``replay`` (recorded bars, :class:`infra.feeds.ReplayData`) or ``projectx-hub``
            (:class:`infra.feeds.HubData`).
        venue: ``simulated`` (:class:`infra.venues.simulated.SimulatedVenue`) or ``projectx``
            (:class:`infra.projectx.broker.ProjectXBroker`).
        clock: ``simulated`` (event time of the data) or ``wall`` (last event + wall time since, so
            time rules fire when data is quiet).
        host: ``dispatcher`` (one thread, deterministic: :class:`actors.dispatcher.Dispatcher`) or
            ``actors`` (the supervised tree).
        broker_urgent: the broker runs in the loop's urgent lane (an order the router passed on is
            sent before the rest of a burst). Only with a venue that does not match our ticks: a
            tick must not overtake an intent queued before it, or simulated fills would change.
        arming: live trading starts unarmed until the operator arms it (README, "Arming").
        venue_read_interval_s: the shutdown's flat check reads the venue at most this often (REST
            reads count against the gateway's rate limit).
        namespace: default Redis key prefix (state of different modes never mixes).
    """

    name: str
    shown: str
    data: Literal["replay", "projectx-hub"]
    venue: Literal["simulated", "projectx"]
    clock: Literal["simulated", "wall"]
    host: Literal["dispatcher", "actors"]
    broker_urgent: bool
    arming: bool
    venue_read_interval_s: float
    namespace: str

    @property
    def watchdog(self) -> bool:
        """A watchdog runs: only in the supervised tree (``host == "actors"``). Without one, nothing
        is sent that only the watchdog reads (telemetry; alerts still reach the backtest's log)."""
        return self.host == "actors"


MODES: dict[str, ModeSpec] = {m.name: m for m in (
    #        name          shown       data            venue        clock        host          urgent arming reads namespace
    ModeSpec("backtest", "backtest", "replay", "simulated", "simulated", "dispatcher", False, False, 0.0, ""),
    ModeSpec("paper", "paper", "replay", "simulated", "simulated", "actors", False, False, 0.0, "tsx:paper"),
    ModeSpec("paper-live", "paper", "projectx-hub", "simulated", "wall", "actors", False, False, 0.0, "tsx:paper-live"),
    ModeSpec("live", "live", "projectx-hub", "projectx", "wall", "actors", True, True, 1.0, "tsx:live"),
)}


@dataclass(frozen=True)
class Child:
    """One child actor (OTP child spec).

    Attributes:
        name: actor name, or ``strategy:*`` / ``bars:*`` for one child per strategy / instrument.
        thread: :data:`DECISION_LOOP` or :data:`OWN_THREAD`. The ``feed`` runs where its data source
            says (``MarketDataSource.blocks``): a paced replay sleeps, so it has a thread of its
            own; a replay at ``max`` speed (in lock step, so a paper run makes the backtest's fills)
            and a hub feed never block and share the decision loop.
        restart: ``permanent`` (always restarted) or ``temporary`` (never restarted).
        shutdown_s: how long a stop waits for the actor, seconds.
    """

    name: str
    thread: str = DECISION_LOOP
    restart: Literal["permanent", "temporary"] = "permanent"
    shutdown_s: float = 5.0


@dataclass(frozen=True)
class Sup:
    """One supervisor: ``strategy`` one_for_one / one_for_all / rest_for_one, at most
    ``intensity`` restarts in ``period_s`` seconds."""

    name: str
    strategy: str
    intensity: int
    period_s: float
    children: tuple["Child | Sup", ...]


TREE = Sup("root", "rest_for_one", 2, 60, (
    Sup("infra", "one_for_one", 5, 60, (
        Child("broker"),                               # the venue adapter
        Child("watchdog", thread=OWN_THREAD),          # must run when the decision loop is stuck
    )),
    Sup("execution", "one_for_all", 3, 60, (          # restarted together, then HALTED until reconciled
        Child("risk"),
        Child("router"),
        Child("reconciler", thread=OWN_THREAD),        # reads the venue (REST) and blocks
    )),
    Sup("strategies", "one_for_one", 5, 60, (
        Child("strategy:*"),
    )),
    Sup("marketdata", "rest_for_one", 5, 60, (
        Child("bars:*"),
        Child("feed"),
        Child("recorder", thread=OWN_THREAD),          # hub data only: ticks to daily files (disk I/O)
    )),
))
"""The supervision tree of every actor-hosted mode. Escalation beyond the root: the node's
emergency flatten at the venue (no actor involved), the reason in ``{ns}:meta``, a critical
alert, exit code 3."""


def render_tree(sup: Sup = TREE, indent: str = "") -> str:
    """The tree as text (docs/architecture.md shows this output)."""
    lines = [f"{indent}{sup.name}  {sup.strategy} {sup.intensity}/{sup.period_s:g}s"]
    for c in sup.children:
        if isinstance(c, Sup):
            lines.append(render_tree(c, indent + "    "))
        else:
            if c.name == "feed":
                extra = "  (thread for a paced replay; loop at max speed and for hub data)"
            elif c.name == "recorder":
                extra = "  (thread; hub data with runtime.record_ticks only)"
            else:
                extra = "" if c.thread == DECISION_LOOP else f"  ({c.thread})"
            lines.append(f"{indent}    {c.name}{extra}")
    return "\n".join(lines)
