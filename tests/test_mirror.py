"""Risk's Redis mirror written behind the decision path (infra.persistence ``persist_hook`` with a
``WriteBehind``), against a real redis-server: never on the actor's thread, newest last, and a
restarted risk actor restores only once the writer has caught up."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from domain.calendar import CT, dt_to_ns
from domain.handler import RISK
from domain.messages import Fill, Side
from domain.portfolio import Portfolio
from infra.persistence import persist_hook
from infra.state_store import StateStore

D = Decimal
TS = dt_to_ns(dt.datetime(2026, 4, 8, 10, 0, tzinfo=CT))


def _fill(n: int) -> Fill:
    return Fill(f"grid-MES-1-{n}", "grid-MES", f"T{n}", "MES", Side.BUY, 1, D("6700.25"), D("0.62"), 0, TS + n)


def _held_mirror_writes(store: StateStore) -> tuple[threading.Lock, list[int], threading.Event]:
    """Make ``store.save_risk_mirror`` wait for the returned (held) lock; each write appends the
    number of positions' contracts it wrote; the event is set when the first write is waiting."""
    gate, written, waiting = threading.Lock(), [], threading.Event()
    gate.acquire()
    real = store.save_risk_mirror

    def held(name, snapshot_json, counters, positions):
        waiting.set()
        with gate:
            written.append(sum(p["qty"] for p in positions.values()))
            return real(name, snapshot_json, counters, positions)

    store.save_risk_mirror = held  # type: ignore[method-assign]
    return gate, written, waiting


def _mirrored_position(store: StateStore) -> int:
    saved = store.load_strategy(RISK)
    return Portfolio.from_dict(saved["portfolio"]).qty("MES") if saved else 0


def test_risk_mirror_is_written_behind_the_actor_newest_last_and_a_restart_waits_for_it(store: StateStore,
                                                                                      tmp_path) -> None:
    node = Node(load_config(None, "combine-50k"), MODES["paper"], store=store, trades_csv=tmp_path / "t.csv")
    writer = node.writer
    after = persist_hook(store, writer)
    factories = node.factories()
    risk = factories[RISK]()
    gate, written, waiting = _held_mirror_writes(store)

    def burst() -> None:  # three fills, as risk's actor handles them
        for n in (1, 2, 3):
            fill = _fill(n)
            after(risk, fill, risk.handle(fill))

    actor = threading.Thread(target=burst)
    actor.start()
    actor.join(3)
    try:
        assert not actor.is_alive()  # the actor never waited for Redis
        assert risk.portfolio.qty("MES") == 3
        assert waiting.wait(5) and _mirrored_position(store) == 0  # the first write is held: nothing in Redis yet
        restarted: list = []
        restart = threading.Thread(target=lambda: restarted.append(factories[RISK]()))
        restart.start()
        restart.join(0.3)
        assert restarted == []  # a restarted risk does not restore while a mirror write is pending
    finally:
        gate.release()
    restart.join(5)
    assert restarted and restarted[0].portfolio.qty("MES") == 3  # ... and then restores the newest
    assert _mirrored_position(store) == 3
    # one write per fill at most; the ones queued behind the held write are coalesced to the newest
    assert written[-1] == 3 and len(written) <= 3 and written == sorted(written), written


def test_risk_mirror_without_a_writer_is_written_before_the_hook_returns(store: StateStore, tmp_path) -> None:
    node = Node(load_config(None, "combine-50k"), MODES["backtest"], store=store, trades_csv=tmp_path / "t.csv")
    after = persist_hook(store, None)
    risk = node.factories()[RISK]()
    fill = _fill(1)
    after(risk, fill, risk.handle(fill))
    assert _mirrored_position(store) == 1
