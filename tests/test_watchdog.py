"""Watchdog (infra/watchdog.py): stale market data (wall clock), inbox depth, missing actors,
restarts, risk-state alerts and the metrics it feeds; and, with real pykka actors, the heartbeat
(``WatchdogCheck``) reporting each restart of a crash-looping child until its supervisor's restart
intensity is exceeded and the tree escalates (actors/supervision.py)."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace

import pykka
import pytest

from actors.core import Directory, Query, start_handler_actor, wait_until
from actors.supervision import ActorSpec, SupervisionTree, Supervisor
from domain.handler import RejectedMessage
from domain.messages import (
    AccountStatus,
    Alert,
    ClockTick,
    ExposureUpdate,
    Heartbeat,
    RiskState,
    RiskStateChanged,
    StrategyStatus,
)
from infra.metrics import Metrics
from infra.watchdog import Watchdog, WatchdogCheck

D = Decimal
TS = 1_775_660_400_000_000_000  # event time of the checks (irrelevant to staleness: wall clock)


class FakeAlerter:
    """Records what the watchdog sends (stands in for infra.alerts.SlackAlerter)."""

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> str:
        self.sent.append(alert)
        return "sent"

    def keys(self) -> list[str]:
        return [a.key for a in self.sent]


@dataclass
class Wall:
    """Injected monotonic clock, seconds."""

    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Rig:
    wd: Watchdog
    alerter: FakeAlerter
    metrics: Metrics | None
    wall: Wall
    env: SimpleNamespace = field(default_factory=SimpleNamespace)

    def check(self) -> list[Alert]:
        """One heartbeat; returns the alerts it raised."""
        before = len(self.alerter.sent)
        assert self.wd.handle(WatchdogCheck(TS)) == []
        return self.alerter.sent[before:]

    def gauge(self, name: str, **labels: str) -> float | None:
        assert self.metrics is not None
        return self.metrics.registry.get_sample_value(name, labels)


def rig(with_metrics: bool = True, **kw) -> Rig:
    env = SimpleNamespace(depths={}, live={"risk", "router", "feed"}, restarts={}, feed=True)
    wall, alerter = Wall(), FakeAlerter()
    metrics = Metrics() if with_metrics else None  # a private registry per instance
    wd = Watchdog(alerter, metrics, lambda: dict(env.depths), lambda: set(env.live), {"risk", "router", "feed"},
                  lambda: dict(env.restarts), lambda: env.feed, wall=wall, **kw)
    return Rig(wd, alerter, metrics, wall, env)


def account(state: RiskState = RiskState.ACTIVE) -> AccountStatus:
    return AccountStatus(TS, state, balance=D("50100"), equity=D("50250.50"), unrealized=D("150.50"),
                         day_pnl=D("238.30"), mll_floor=D("48000"), headroom=D("2250.50"), drawdown=D("75.25"),
                         realized=D("100"), fees=D("12.20"), open_orders=7, positions=(("MES", 4), ("MNQ", -3)),
                         exposure_1atr=D("312.5"))


# ------------------------------------------------------------------ stale data
def test_stale_data_alerts_only_after_stale_data_s_of_wall_time_without_a_clock_tick():
    r = rig()
    assert r.check() == []
    r.wall.t += 30.0
    assert r.check() == []  # exactly 30 s: not yet (strictly more than stale_data_s)
    r.wall.t += 1.0
    (alert,) = r.check()
    assert (alert.level, alert.key, alert.ts_ns) == ("warning", "stale-data", TS)
    assert alert.text == "no market data for 31s"
    assert r.wd.handle(ClockTick(1)) == []  # data flows again (its event time does not matter)
    assert r.check() == []
    r.wall.t += 30.0
    assert r.check() == []


def test_stale_data_repeats_on_every_check_under_one_key():
    """The watchdog raises the alert on each heartbeat while data is stale; collapsing the repeats
    is the alerter's job (SlackAlerter de-duplicates by ``key``)."""
    r = rig()
    r.wall.t += 45
    first = r.check()
    r.wall.t += 1
    second = r.check()
    assert [a.key for a in first + second] == ["stale-data", "stale-data"]
    assert [a.text for a in first + second] == ["no market data for 45s", "no market data for 46s"]
    assert r.wd.alerts == first + second  # the watchdog's own record of what it sent


def test_stale_data_is_not_checked_while_the_feed_is_stopped():
    r = rig()
    r.env.feed = False
    r.wall.t += 3600  # session over: no data is expected
    assert r.check() == []
    r.env.feed = True
    assert r.alerter.keys() == [] and [a.key for a in r.check()] == ["stale-data"]


def test_stale_data_s_is_configurable():
    r = rig(stale_data_s=5.0)
    r.wall.t += 5.0
    assert r.check() == []
    r.wall.t += 0.5
    assert [a.key for a in r.check()] == ["stale-data"]


# ------------------------------------------------------------------ inbox depth
def test_inbox_depth_above_max_alerts_and_every_depth_is_a_gauge():
    r = rig()  # max_inbox = 5000
    r.env.depths = {"risk": 5001, "router": 5000, "hedge": 3}
    (alert,) = r.check()  # 5000 is not above the maximum
    assert (alert.key, alert.level) == ("inbox-risk", "warning")
    assert alert.text == "risk inbox depth 5001 > 5000"
    assert r.gauge("tsx_inbox_depth", actor="risk") == 5001
    assert r.gauge("tsx_inbox_depth", actor="router") == 5000
    assert r.gauge("tsx_inbox_depth", actor="hedge") == 3
    r.env.depths = {"risk": 10, "router": 0, "hedge": 0}
    assert r.check() == []
    assert r.gauge("tsx_inbox_depth", actor="risk") == 10


def test_max_inbox_is_configurable_and_each_deep_inbox_has_its_own_key():
    r = rig(max_inbox=100)
    r.env.depths = {"risk": 101, "router": 250, "feed": 100}
    assert sorted(a.key for a in r.check()) == ["inbox-risk", "inbox-router"]


# ------------------------------------------------------------------ liveness
def test_an_expected_actor_missing_on_two_checks_in_a_row_alerts():
    r = rig()
    assert r.check() == []
    r.env.live = {"risk", "feed"}  # router crashed: being restarted
    assert r.check() == []  # one miss: no alert
    (alert,) = r.check()  # still gone at the next heartbeat
    assert (alert.key, alert.level) == ("actors-down", "warning")
    assert alert.text == "actors not running: ['router']"
    assert [a.key for a in r.check()] == ["actors-down"]  # again while it stays down
    r.env.live = {"risk", "router", "feed"}
    assert r.check() == []


def test_misses_that_are_not_consecutive_do_not_alert():
    r = rig()
    for live in ({"risk", "feed"}, {"risk", "router", "feed"}, {"risk", "feed"}, {"risk", "router", "feed"}):
        r.env.live = live
        assert r.check() == []
    r.env.live = {"other"}  # unexpected actors do not count; all three expected ones gone
    assert r.check() == []
    (alert,) = r.check()
    assert alert.text == "actors not running: ['feed', 'risk', 'router']"


# ------------------------------------------------------------------ restarts
def test_each_new_restart_is_reported_once_and_counted():
    r = rig()
    assert r.check() == []
    r.env.restarts = {"hedge": 1}
    (alert,) = r.check()
    assert (alert.key, alert.text) == ("restart-hedge", "hedge restarted (1 so far)")
    assert r.gauge("tsx_actor_restarts_total", actor="hedge") == 1
    assert r.check() == []  # nothing new
    assert r.gauge("tsx_actor_restarts_total", actor="hedge") == 1
    r.env.restarts = {"hedge": 3, "risk": 1}  # two more for hedge between heartbeats: one alert
    alerts = r.check()
    assert sorted((a.key, a.text) for a in alerts) == [("restart-hedge", "hedge restarted (3 so far)"),
                                                       ("restart-risk", "risk restarted (1 so far)")]
    assert r.gauge("tsx_actor_restarts_total", actor="hedge") == 3
    assert r.gauge("tsx_actor_restarts_total", actor="risk") == 1


def test_a_restarted_watchdog_does_not_count_or_alert_earlier_restarts_twice():
    """The node shares one record of reported restarts with every watchdog it builds (actors/node.py
    ``_make_watchdog``): a restarted watchdog reports only restarts that are new."""
    r = rig()
    r.env.restarts = {"hedge": 2}
    r.check()
    assert r.gauge("tsx_actor_restarts_total", actor="hedge") == 2
    sent = len(r.alerter.sent)
    again = Watchdog(r.alerter, r.metrics, dict, lambda: set(r.env.live), {"risk", "router", "feed"},
                     lambda: dict(r.env.restarts), lambda: True, wall=r.wall,
                     restarts_reported=r.wd.restarts_reported)
    r.env.restarts = {"hedge": 2, "watchdog": 1}
    again.handle(WatchdogCheck(TS))
    assert r.gauge("tsx_actor_restarts_total", actor="hedge") == 2  # not 4
    assert r.gauge("tsx_actor_restarts_total", actor="watchdog") == 1
    assert [a.key for a in r.alerter.sent[sent:]] == ["restart-watchdog"]


# ------------------------------------------------------------------ risk state and metrics
@pytest.mark.parametrize("state, value", [(RiskState.REDUCING, 1), (RiskState.HALTED, 2)])
def test_risk_state_reducing_or_halted_alerts_and_sets_the_gauge(state, value):
    r = rig()
    assert r.wd.handle(RiskStateChanged(state, "daily loss cap", TS)) == []
    (alert,) = r.alerter.sent
    assert (alert.level, alert.key, alert.ts_ns) == ("warning", f"risk-state-{state.value}", TS)
    assert alert.text == f"risk {state.value}: daily loss cap"
    assert r.gauge("tsx_risk_state") == value


def test_risk_state_active_sets_the_gauge_without_alert():
    r = rig()
    r.wd.handle(RiskStateChanged(RiskState.HALTED, "kill switch", TS))
    r.wd.handle(RiskStateChanged(RiskState.ACTIVE, "new session", TS))
    assert r.alerter.keys() == ["risk-state-HALTED"]
    assert r.gauge("tsx_risk_state") == 0


def test_account_status_sets_pnl_and_mll_gauges():
    r = rig()
    status = account(RiskState.REDUCING)
    assert r.wd.handle(status) == []
    assert r.wd.last_status is status
    expected = {"tsx_pnl_realized_dollars": 100.0, "tsx_pnl_unrealized_dollars": 150.5, "tsx_pnl_net_dollars": 238.3,
                "tsx_fees_dollars": 12.2, "tsx_drawdown_dollars": 75.25, "tsx_mll_headroom_dollars": 2250.5,
                "tsx_mll_floor_dollars": 48000.0, "tsx_equity_dollars": 50250.5, "tsx_open_orders": 7.0,
                "tsx_exposure_1atr_dollars": 312.5, "tsx_risk_state": 1.0}
    assert {k: r.gauge(k) for k in expected} == pytest.approx(expected)
    assert r.alerter.sent == []  # telemetry, not an alert


def test_strategy_status_and_exposure_update_feed_their_gauges():
    r = rig()
    assert r.wd.handle(StrategyStatus("hedge", "MNQ", TS, hedge_ratio=0.87, correlation=0.93)) == []
    assert r.wd.handle(StrategyStatus("grid-MES", "MES", TS, atr=7.5, spacing=3.75, grid_mid=6700.0)) == []
    assert r.wd.handle(ExposureUpdate((("MES", 6), ("MNQ", -4)), TS)) == []
    assert r.gauge("tsx_hedge_ratio") == pytest.approx(0.87)
    assert r.gauge("tsx_correlation") == pytest.approx(0.93)
    assert r.gauge("tsx_atr_points", instrument="MES") == 7.5
    assert r.gauge("tsx_grid_spacing_points", instrument="MES") == 3.75
    assert r.gauge("tsx_exposure_contracts", instrument="MES") == 6
    assert r.gauge("tsx_exposure_contracts", instrument="MNQ") == -4


def test_alerts_from_other_actors_are_passed_to_the_alerter():
    r = rig()
    a = Alert("warning", "hedge-low-correlation", "MES/MNQ correlation 0.41 < 0.6", TS)
    assert r.wd.handle(a) == []
    assert r.alerter.sent == [a] and r.wd.alerts == [a]


def test_works_without_metrics():
    r = rig(with_metrics=False)
    r.env.depths = {"risk": 9000}
    r.env.restarts = {"risk": 1}
    for msg in (account(), StrategyStatus("hedge", "MNQ", TS, hedge_ratio=0.9),
                ExposureUpdate((("MES", 1),), TS), RiskStateChanged(RiskState.HALTED, "x", TS)):
        assert r.wd.handle(msg) == []
    assert sorted(a.key for a in r.check()) == ["inbox-risk", "restart-risk"]
    assert r.alerter.keys()[0] == "risk-state-HALTED"


@pytest.mark.parametrize("msg", [Heartbeat("risk", TS), "check", object()])
def test_unknown_message_is_rejected(msg):
    """The heartbeat is the WatchdogCheck timer: anything else (even a Heartbeat message) is refused."""
    r = rig()
    with pytest.raises(RejectedMessage, match="watchdog: unexpected message"):
        r.wd.handle(msg)
    assert r.alerter.sent == []


# ------------------------------------------------------------------ supervision: heartbeat and escalation
class CrashLoop:
    """A handler that crashes on "boom"."""

    def handle(self, msg):
        if msg == "boom":
            raise RuntimeError("boom")
        return []


def test_crash_looping_child_is_reported_per_restart_then_escalates_after_its_intensity():
    d = Directory()
    escalated: queue.Queue[str] = queue.Queue()
    sup = Supervisor("strategies", "one_for_one", 2, 60, [ActorSpec("worker", CrashLoop)])
    tree = SupervisionTree(sup, d, escalated.put)
    alerter, metrics, wall = FakeAlerter(), Metrics(), Wall()
    wd = Watchdog(alerter, metrics, d.inbox_depths, lambda: set(d.names()), {"worker", "watchdog"},
                  lambda: dict(tree.restarts), lambda: False, wall=wall)
    tree.start()
    # the watchdog is hosted as an actor of its own, outside the failing supervisor
    start_handler_actor("watchdog", lambda: wd, d, queue.Queue())

    def heartbeat(n_alerts: int) -> list[str]:
        d.tell("watchdog", WatchdogCheck(TS))
        assert wait_until(lambda: len(alerter.sent) >= n_alerts, timeout=2)
        d.ref("watchdog").ask(Query(lambda h: None), timeout=2)  # that check is done
        return alerter.keys()

    try:
        assert heartbeat(0) == []
        assert metrics.registry.get_sample_value("tsx_inbox_depth", {"actor": "worker"}) == 0
        for n in (1, 2):  # within the intensity (2 restarts in 60 s): restarted, reported once each
            first = d.ref("worker")
            d.tell("worker", "boom")
            assert wait_until(lambda n=n, first=first: tree.restarts["worker"] == n
                              and d.ref("worker") not in (None, first), timeout=2)
            assert escalated.empty()
            assert heartbeat(n) == ["restart-worker"] * n
            assert alerter.sent[-1].text == f"worker restarted ({n} so far)"
            assert metrics.registry.get_sample_value("tsx_actor_restarts_total", {"actor": "worker"}) == n
        assert heartbeat(2) == ["restart-worker"] * 2  # nothing new: no repeat

        d.tell("worker", "boom")  # the third failure in 60 s exceeds the intensity
        reason = escalated.get(timeout=2)
        assert "strategies: intensity exceeded after worker failed" in reason and "boom" in reason
        assert tree.escalated == reason and tree.restarts["worker"] == 2  # given up, not restarted
        assert wait_until(lambda: d.ref("worker") is None, timeout=2)
        assert heartbeat(2) == ["restart-worker"] * 2  # first miss: could be a restart
        assert heartbeat(3)[-1] == "actors-down"  # second miss in a row
        assert alerter.sent[-1].text == "actors not running: ['worker']"
    finally:
        tree.stop()
        pykka.ActorRegistry.stop_all()
    assert not tree._thread.is_alive()
