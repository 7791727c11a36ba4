"""Live-mode pieces without the sandbox gateway: the projectx config section, CLI mapping, the live
feed's wall clock, the risk ``unarmed`` hold, and the shutdown's flat check (against the scripted
REST server of tests/test_projectx_rest.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

import supervisor
from actors.core import wait_until
from actors.node import Node
from domain.messages import SetArmed
from domain.risk import UNARMED_HOLD, RiskManager
from infra.feeds import LiveFeed, WallClock
from infra.projectx.broker import ProjectXBroker
from config.settings import ConfigError, load_config
from domain.calendar import SessionCalendar, dt_to_ns
from domain.handler import CLOCK_TOPIC, ROUTER, CounterIds
from domain.messages import CancelOrder, ClockTick, OrderIntent, OrderType, RiskState, Side, TradeTick
from domain.orders import OrderStatus
from tests.test_projectx_rest import ScriptedGateway, make_client, ok

CT = ZoneInfo("America/Chicago")


def test_projectx_defaults_and_hubs_url():
    px = load_config().projectx
    assert (px.base_url, px.hubs_url, px.account, px.armed, px.confirm_funded) == (
        "https://api.topstepx.com", "https://rtc.topstepx.com", None, False, False)
    assert load_config(overrides={"projectx": {"base_url": "http://127.0.0.1:8765"}}).projectx.hubs_url \
        == "http://127.0.0.1:8765"
    assert load_config(overrides={"projectx": {"rtc_url": "https://rtc.example"}}).projectx.hubs_url \
        == "https://rtc.example"
    with pytest.raises(ConfigError, match=r"projectx\.api_key"):
        load_config(overrides={"projectx": {"api_key": "x"}})  # credentials are not configuration
    with pytest.raises(ConfigError, match=r"projectx\.base_url"):
        load_config(overrides={"projectx": {"base_url": "api.topstepx.com"}})


def test_cli_maps_live_flags():
    args = supervisor.parse_args(["--mode", "live", "--base-url", "http://127.0.0.1:1", "--account", "1001",
                                  "--arm", "--confirm-funded"])
    cfg = supervisor.build_config(args)
    assert cfg.projectx.base_url == "http://127.0.0.1:1" and cfg.projectx.hubs_url == "http://127.0.0.1:1"
    assert (cfg.projectx.account, cfg.projectx.armed, cfg.projectx.confirm_funded) == ("1001", True, True)
    assert cfg.runtime.namespace == "tsx:live"
    assert supervisor.build_config(supervisor.parse_args([])).runtime.namespace == "tsx:paper"


def test_live_feed_wall_clock_ticks_when_data_is_quiet(monkeypatch):
    t0 = dt_to_ns(dt.datetime(2026, 4, 8, 15, 8, 30, tzinfo=CT))
    mono = [10**12]
    monkeypatch.setattr("infra.feeds.time.monotonic_ns", lambda: mono[0])
    feed = LiveFeed([], t0)
    tick = TradeTick("MES", t0 + 10**9, Decimal("5000.25"), 1)
    out = feed.handle(tick)  # the print to the venue first, then the new minute, then bars and risk
    assert out == [("prints.MES", tick), (CLOCK_TOPIC, ClockTick(t0 + 10**9)), ("ticks.MES", tick)]
    assert feed.handle(WallClock()) == []  # same minute
    mono[0] += 95 * 10**9  # 95 s of silence: 15:10:06 CT
    out = feed.handle(WallClock())
    assert out == [(CLOCK_TOPIC, ClockTick(t0 + 96 * 10**9))]
    assert feed.handle(WallClock()) == []


def _intent(coid: str) -> OrderIntent:
    return OrderIntent(client_order_id=coid, strategy_id="grid-MES", instrument="MES", side=Side.BUY, qty=1,
                       order_type=OrderType.LIMIT, ts_ns=0, limit_price=Decimal("5000"), purpose="grid-entry")


def test_unarmed_hold_denies_strategy_orders_and_disarm_cancels_working():
    cfg = load_config()
    t = dt_to_ns(dt.datetime(2026, 4, 8, 9, 0, tzinfo=CT))
    r = RiskManager(cfg.profile.limits(), CounterIds(), SessionCalendar(cfg.profile.flat_margin_s), t)
    r.set_armed(False, "start")
    assert r.state is RiskState.HALTED and UNARMED_HOLD in r.holds
    out = r.handle(_intent("grid-MES-1-1"))
    assert out and "unarmed" in out[0][1].reason
    r.handle(SetArmed(True, "test", t + 1))
    assert r.state is RiskState.ACTIVE and UNARMED_HOLD not in r.holds
    r.book.add(_intent("grid-MES-1-2"), OrderStatus.ACCEPTED)
    out = r.handle(SetArmed(False, "test", t + 2))
    assert r.state is RiskState.HALTED
    assert (ROUTER, CancelOrder("grid-MES-1-2", "grid-MES", t + 2, "disarmed")) in out


def test_shutdown_flat_check_asks_the_gateway_at_most_once_per_poll_interval():
    """The shutdown polls ``Node._flat`` every 50 ms. While the gateway still shows a position
    (risk's book already flat), it reads the gateway (Order/v2/query + Position/searchOpen) at most
    once per the mode's ``venue_read_interval_s``, not on every poll; once the gateway is flat it says so."""
    gw = ScriptedGateway().start()
    position = {"id": 1, "accountId": 1001, "contractId": "CON.F.US.MES.M26", "type": 1, "size": 1,
                "averagePrice": 6650.25}
    gw.script("Position/searchOpen", *[ok(positions=[position])] * 40)
    try:
        with make_client(gw) as client:
            venue = ProjectXBroker(client, 1001, {"MES": "CON.F.US.MES.M26"}, hub_url=None)
            node = SimpleNamespace(_risk_flat=lambda: True, _venue_checked_at=float("-inf"), venue=venue,
                                   spec=SimpleNamespace(venue_read_interval_s=0.4), _venue_seen="")
            polls = []

            def flat() -> bool:
                polls.append(1)
                return Node._flat(node)
            assert not wait_until(flat, timeout=1.0, interval=0.05)
            reads = len(gw.calls("Position/searchOpen"))
            assert len(polls) >= 10 and 2 <= reads <= 3, (len(polls), reads)
            assert len(gw.calls("Order/v2/query")) == reads
            gw.scripts["Position/searchOpen"].clear()  # the close went through: the gateway is flat
            assert wait_until(flat, timeout=2.0, interval=0.05)
    finally:
        gw.stop()


def test_an_unreadable_risk_book_is_not_flat():
    """The shutdown's flat check: risk's answer when it gives one; an ask that fails (risk busy past
    the 1 s timeout, or restarting) is "not flat", never "flat" (the shutdown then waits and, at its
    timeout, flattens at the venue)."""
    def answer(value):
        return SimpleNamespace(risk_query=lambda fn, timeout: fn(SimpleNamespace(is_flat=value)))

    def timed_out(fn, timeout):
        raise TimeoutError(f"no answer in {timeout}s")
    assert Node._risk_flat(answer(True)) is True
    assert Node._risk_flat(answer(False)) is False
    assert Node._risk_flat(SimpleNamespace(risk_query=timed_out)) is False
