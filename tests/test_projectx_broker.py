"""ProjectXBroker: domain mapping, round trips against the sandbox gateway (fills, cancels, snapshot,
flatten, faults) and event ordering against scripted REST + hub servers. Real sockets on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from domain.messages import (Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderRejected, OrderType,
                             PositionSnapshot, Side)
from domain.ports import ExecutionVenue
from infra.projectx.broker import STALE_CHECK_AFTER_S, ProjectXBroker
from infra.projectx.errors import MalformedPayload
from infra.projectx.mapping import (GatewayPosition, GatewayTrade, GwPositionType, GwSide, fill_from_trade, place_args,
                                    position_snapshot, strategy_id_of)
from infra.projectx.rest import ProjectXClient
from infra.sandbox.server import SandboxConfig, SandboxGateway
from tests.test_projectx_hubs import FAST, ScriptedHub, wait_for
from tests.test_projectx_rest import Reply, ScriptedGateway, ok

TICK = Decimal("0.25")


def intent(coid: str, side: Side = Side.BUY, qty: int = 1, otype: OrderType = OrderType.MARKET, ts: int = 0,
           limit: str | None = None, stop: str | None = None, instrument: str = "MES") -> OrderIntent:
    return OrderIntent(coid, strategy_id_of(coid), instrument, side, qty, otype, ts,
                       limit_price=Decimal(limit) if limit else None, stop_price=Decimal(stop) if stop else None)


# --------------------------------------------------------------------------- mapping

def test_strategy_id_is_the_client_order_id_without_incarnation_and_seq():
    assert strategy_id_of("grid-MES-3-17") == "grid-MES"
    assert strategy_id_of("hedge-2-5") == "hedge"
    assert strategy_id_of("manual") == "external"


def test_place_args_check_the_tick_grid_and_required_prices():
    args = place_args(intent("grid-MES-1-1", Side.SELL, 2, OrderType.LIMIT, limit="6650.25"), tick_size=TICK)
    assert args == {"order_type": 1, "side": 1, "size": 2, "custom_tag": "grid-MES-1-1",
                    "limit_price": Decimal("6650.25"), "risk_reducing": False}
    tp = dataclasses.replace(intent("grid-MES-1-2", Side.SELL, 1, OrderType.LIMIT, limit="6650.25"), reduce_only=True)
    assert place_args(tp, tick_size=TICK)["risk_reducing"] is True  # may use the slots entries leave free
    assert place_args(intent("g-1-2", otype=OrderType.STOP, stop="6600"), tick_size=TICK)["order_type"] == 4
    for bad in (intent("g-1-3", otype=OrderType.LIMIT, limit="6650.1"), intent("g-1-4", otype=OrderType.STOP),
                intent("g-1-5", qty=0)):
        with pytest.raises(ValueError):
            place_args(bad, tick_size=TICK)


def test_positions_are_signed_by_type_and_never_guessed():
    pos = GatewayPosition(1, 1001, "C", GwPositionType.SHORT, 3, Decimal("6650.5"), 5)
    assert position_snapshot(pos, instrument="MES") == PositionSnapshot("MES", -3, Decimal("6650.5"), 5)
    closed = GatewayPosition(1, 1001, "C", GwPositionType.UNDEFINED, 0, Decimal(0), None)
    assert position_snapshot(closed, instrument="MES").qty == 0
    with pytest.raises(MalformedPayload):
        position_snapshot(GatewayPosition(1, 1001, "C", GwPositionType.UNDEFINED, 2, Decimal(1), None),
                          instrument="MES")


def test_fill_from_half_trade():
    t = GatewayTrade(8604, 1001, "C", 1_000, Decimal("6065.25"), Decimal("50"), Decimal("1.40"), GwSide.ASK, 1,
                     False, 14328)
    assert fill_from_trade(t, client_order_id="grid-MES-1-9", strategy_id="grid-MES", instrument="MES",
                           leaves_qty=0) == Fill("grid-MES-1-9", "grid-MES", "8604", "MES", Side.SELL, 1,
                                                 Decimal("6065.25"), Decimal("1.40"), 0, 1_000, "14328")


# --------------------------------------------------------------------------- sandbox round trips

class Harness:
    """A sandbox gateway (manual replay) + client + broker whose events land in ``events``."""

    def __init__(self, account_id: int = 1001, hub: bool = True, **config: Any) -> None:
        self.gw = SandboxGateway(SandboxConfig(speed=0, port=0, ping_interval_s=0.2,
                                               client_timeout_s=2.0, **config))
        self.gw.start()
        self.client = ProjectXClient(self.gw.base_url, "sandbox", "sandbox-key", backoff_base_s=0.01)
        self.mes = self.client.resolve_front_month("MES").id
        self.events: list[Any] = []
        self.reconcile: list[str] = []
        self.brokers: list[ProjectXBroker] = []
        self.broker = self.new_broker(account_id, hub)
        self.gw.advance(2)  # a last price, so market orders fill at once

    def new_broker(self, account_id: int = 1001, hub: bool = True) -> ProjectXBroker:
        b = ProjectXBroker(self.client, account_id, {"MES": self.mes}, hub_url=self.gw.base_url if hub else None,
                           on_reconcile_needed=self.reconcile.append, hub_options=FAST, flatten_verify_s=3.0)
        b.set_event_sink(self.events.append)
        b.start()
        self.brokers.append(b)
        assert b.hub is None or b.hub.wait_connected(5)
        return b

    def submit(self, order: OrderIntent, broker: ProjectXBroker | None = None) -> list[Any]:
        """Submit like the broker actor: the events returned join the sink's events."""
        out = (broker or self.broker).submit(order, order.ts_ns)
        self.events.extend(out)
        return out

    def of(self, kind: type, coid: str | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (coid is None or e.client_order_id == coid)]

    def close(self) -> None:
        for b in self.brokers:
            b.stop()
        self.client.close()
        self.gw.stop()


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


def test_market_order_fills_through_the_user_hub(h):
    assert isinstance(h.broker, ExecutionVenue)
    now = h.gw.now_ns()
    out = h.submit(intent("grid-MES-1-1", qty=2, ts=now))
    assert isinstance(out[0], OrderAccepted) and out[0].venue_order_id.isdigit()
    assert wait_for(lambda: h.of(Fill))
    time.sleep(0.2)
    assert len(h.of(Fill)) == 1 and len(h.of(OrderAccepted)) == 1
    f = h.of(Fill)[0]
    assert (f.client_order_id, f.strategy_id, f.side, f.qty, f.leaves_qty) == \
        ("grid-MES-1-1", "grid-MES", Side.BUY, 2, 0)
    assert f.fee == Decimal("1.22") and f.price % TICK == 0 and f.venue_order_id == out[0].venue_order_id
    assert h.broker.last_ts >= now
    snap = h.broker.snapshot(h.gw.now_ns())
    assert snap.working == () and snap.positions == (PositionSnapshot("MES", 2, f.price, snap.positions[0].ts_ns),)
    assert [(x.trade_id, x.client_order_id, x.leaves_qty) for x in snap.fills] == [(f.trade_id, "grid-MES-1-1", 0)]
    assert not h.reconcile


def test_limit_order_is_working_then_cancelled_exactly_once(h):
    now = h.gw.now_ns()
    out = h.submit(intent("grid-MES-1-2", Side.SELL, 1, OrderType.LIMIT, now, limit="9000"))
    assert isinstance(out[0], OrderAccepted)
    working = h.broker.snapshot(now).working
    assert [(o.client_order_id, o.strategy_id, o.side, o.order_type, o.limit_price) for o in working] == \
        [("grid-MES-1-2", "grid-MES", Side.SELL, OrderType.LIMIT, Decimal("9000"))]
    h.events.extend(h.broker.cancel("grid-MES-1-2", now))
    time.sleep(0.3)
    assert len(h.of(OrderCancelled)) == 1
    assert h.broker.snapshot(now).working == ()
    assert h.broker.cancel("grid-MES-1-2", now) == []  # nothing left to cancel


def test_rejections_are_definitive(h):
    now = h.gw.now_ns()
    placed = len(h.gw.orders_received)
    off_tick = h.submit(intent("grid-MES-1-3", otype=OrderType.LIMIT, limit="6650.1", ts=now))
    unknown = h.submit(intent("grid-NQ-1-1", instrument="MNQ", ts=now))
    assert isinstance(off_tick[0], OrderRejected) and "tick" in off_tick[0].reason
    assert isinstance(unknown[0], OrderRejected) and "MNQ" in unknown[0].reason
    assert len(h.gw.orders_received) == placed  # never sent

    assert isinstance(h.submit(intent("grid-MES-1-4", ts=now))[0], OrderAccepted)
    again = h.submit(intent("grid-MES-1-4", ts=now), h.new_broker())  # a fresh broker: the venue refuses the tag
    assert isinstance(again[0], OrderRejected) and again[0].reason.startswith("OrderRejected")

    h.gw.faults.rate_limit_burst(1)
    limited = h.submit(intent("grid-MES-1-5", ts=now))
    assert isinstance(limited[0], OrderRejected) and "RateLimited" in limited[0].reason
    snap = h.broker.snapshot(now)
    assert "grid-MES-1-5" not in {o.client_order_id for o in snap.working} | {f.client_order_id for f in snap.fills}


def test_a_5xx_on_place_leaves_the_order_pending_and_asks_for_reconciliation(h):
    now = h.gw.now_ns()
    h.gw.faults.server_errors(1, paths=["Order/place"])
    assert h.submit(intent("grid-MES-1-6", ts=now)) == []
    assert h.reconcile == ["ambiguous place of grid-MES-1-6"]
    snap = h.broker.snapshot(now)
    assert not [f for f in snap.fills if f.client_order_id == "grid-MES-1-6"]  # the reconciler will close it


def test_an_ambiguous_place_that_was_processed_is_learned_from_the_hub(h):
    now = h.gw.now_ns()
    h.gw.faults.ambiguous_place(1)
    out = h.submit(intent("grid-MES-1-7", qty=1, ts=now))
    assert out == [] or isinstance(out[0], OrderAccepted)
    assert wait_for(lambda: len(h.of(Fill)) == 1 and len(h.of(OrderAccepted)) == 1)
    accepted, fill = h.of(OrderAccepted)[0], h.of(Fill)[0]
    assert accepted.client_order_id == fill.client_order_id == "grid-MES-1-7"
    assert h.events.index(accepted) < h.events.index(fill)
    if out == []:
        assert h.reconcile == ["ambiguous place of grid-MES-1-7"]


def test_duplicated_and_reordered_hub_events_give_one_fill(h):
    now = h.gw.now_ns()
    h.gw.faults.duplicate_events(20)
    h.submit(intent("grid-MES-1-8", ts=now))
    h.gw.faults.reorder_events(4)
    h.submit(intent("grid-MES-1-9", Side.SELL, ts=now))
    assert wait_for(lambda: len(h.of(Fill)) == 2)
    time.sleep(1.2)  # the reorder flush
    assert sorted(f.client_order_id for f in h.of(Fill)) == ["grid-MES-1-8", "grid-MES-1-9"]
    assert sorted(a.client_order_id for a in h.of(OrderAccepted)) == ["grid-MES-1-8", "grid-MES-1-9"]


def test_a_fresh_broker_rebuilds_client_ids_from_rest(h):
    now = h.gw.now_ns()
    h.submit(intent("grid-MES-2-1", qty=3, ts=now))
    h.submit(intent("grid-MES-2-2", Side.BUY, 1, OrderType.LIMIT, now, limit="1000"))
    assert wait_for(lambda: h.of(Fill))
    restarted = h.new_broker(hub=False)
    snap = restarted.snapshot(h.gw.now_ns())
    assert [(f.client_order_id, f.strategy_id, f.qty, f.leaves_qty) for f in snap.fills] == \
        [("grid-MES-2-1", "grid-MES", 3, 0)]
    assert [o.client_order_id for o in snap.working] == ["grid-MES-2-2"]
    assert restarted.cancel("grid-MES-2-2", now) == [OrderCancelled("grid-MES-2-2", "grid-MES", now, "cancelled")]


def test_flatten_cancels_and_closes_with_rest_only(h):
    now = h.gw.now_ns()
    h.submit(intent("grid-MES-3-1", qty=2, ts=now))
    h.submit(intent("grid-MES-3-2", Side.SELL, 1, OrderType.LIMIT, now, limit="9000"))
    assert wait_for(lambda: h.of(Fill))
    events = h.new_broker(hub=False).flatten(now)
    assert events == [OrderCancelled("grid-MES-3-2", "grid-MES", now, "flatten")]
    assert h.gw.positions(1001) == [] and h.gw.open_orders(1001) == []
    # the hub broker did not issue that close: it sees a fill it cannot attribute and asks to reconcile
    assert wait_for(lambda: any(r.startswith("fill ") and r.endswith("we did not place") for r in h.reconcile))
    snap = h.broker.snapshot(h.gw.now_ns())
    assert snap.positions == () and snap.working == ()
    assert sum(f.side.sign * f.qty for f in snap.fills) == 0


def test_the_hub_broker_labels_its_own_flatten_fills(h):
    now = h.gw.now_ns()
    h.submit(intent("grid-MES-4-1", qty=1, ts=now))
    assert wait_for(lambda: h.of(Fill))
    assert h.broker.flatten(now) == []
    assert wait_for(lambda: len(h.of(Fill)) == 2)
    close = h.of(Fill)[1]
    assert (close.client_order_id, close.strategy_id, close.side, close.qty) == (f"emergency-MES-{now}", "emergency",
                                                                                Side.SELL, 1)


def test_user_hub_reconnect_asks_for_reconciliation(h):
    h.gw.faults.drop_connections(hub="user")
    assert wait_for(lambda: h.broker.hub.connects == 2 and h.broker.hub.connected)
    assert wait_for(lambda: "user hub reconnected (events may have been missed)" in h.reconcile)


def test_cancel_refused_on_a_funded_account_is_logged_not_raised():
    harness = Harness(account_id=1002, hub=False)
    try:
        now = harness.gw.now_ns()
        out = harness.submit(intent("grid-MES-5-1", Side.BUY, 1, OrderType.LIMIT, now, limit="1000"))
        assert isinstance(out[0], OrderAccepted)
        assert harness.broker.cancel("grid-MES-5-1", now) == []
        assert [o.client_order_id for o in harness.broker.snapshot(now).working] == ["grid-MES-5-1"]
    finally:
        harness.close()


def test_cancel_of_an_order_no_longer_working_asks_for_one_reconciliation_unless_the_hub_settled_it(h):
    """Order/cancel code 3 (the order filled already): with the fill known from the user hub,
    nothing more; with the order still open here (no hub: the fill never arrived), one
    reconciliation request ~1 s later for all such orders, so that risk's book does not keep a
    filled order working (its flatten would wait for it forever)."""
    now = h.gw.now_ns()
    h.submit(intent("grid-MES-8-1", qty=1, ts=now))
    assert wait_for(lambda: h.of(Fill, "grid-MES-8-1"))
    assert h.broker.cancel("grid-MES-8-1", now) == []  # refused: the order filled
    time.sleep(STALE_CHECK_AFTER_S + 0.5)
    assert h.reconcile == []
    deaf = h.new_broker(hub=False)
    for coid in ("grid-MES-9-1", "grid-MES-9-2"):
        assert isinstance(h.submit(intent(coid, qty=1, ts=now), deaf)[0], OrderAccepted)
    assert wait_for(lambda: len(h.gw.trades(1001)) == 3)  # both filled at the gateway, unknown to `deaf`
    assert deaf.cancel("grid-MES-9-1", now) == [] and deaf.cancel("grid-MES-9-2", now) == []
    assert h.reconcile == []  # not at once: a fill racing the cancel is usually on its way
    assert wait_for(lambda: h.reconcile, timeout=STALE_CHECK_AFTER_S + 2)
    time.sleep(0.5)
    assert h.reconcile == ["cancel refused, no longer working at the gateway: grid-MES-9-1, grid-MES-9-2"]


# --------------------------------------------------------------------------- ordering (scripted REST + hub)

def _order(oid: int, tag: str | None, status: int = 1, fill_volume: int = 0) -> dict[str, Any]:
    return {"id": oid, "accountId": 1001, "contractId": "CON.F.US.MES.M26", "creationTimestamp":
            "2026-04-08T13:30:00Z", "updateTimestamp": "2026-04-08T13:30:00Z", "status": status, "type": 2,
            "side": 0, "size": 2, "fillVolume": fill_volume, "customTag": tag}


def _trade(tid: int, oid: int, size: int = 1) -> dict[str, Any]:
    return {"id": tid, "accountId": 1001, "contractId": "CON.F.US.MES.M26", "creationTimestamp":
            "2026-04-08T13:30:00.5Z", "price": 6650.25, "profitAndLoss": None, "fees": 0.61, "side": 0,
            "size": size, "voided": False, "orderId": oid}


@pytest.fixture
def scripted():
    rest, hub = ScriptedGateway().start(), ScriptedHub().start()
    client = ProjectXClient(rest.url, "sandbox", "key", backoff_base_s=0.001)
    events: list[Any] = []
    reconcile: list[str] = []
    broker = ProjectXBroker(client, 1001, {"MES": "CON.F.US.MES.M26"}, hub_url=hub.url,
                            on_reconcile_needed=reconcile.append, hub_options=FAST)
    broker.set_event_sink(events.append)
    broker.start()
    assert broker.hub.wait_connected(5)
    yield rest, hub, broker, events, reconcile
    broker.stop()
    client.close()
    rest.stop()
    hub.stop()


def test_hub_events_racing_the_place_response_come_back_in_order(scripted):
    rest, hub, broker, events, _ = scripted
    rest.script("Order/place", Reply(delay_s=0.6, body={"success": True, "errorCode": 0, "orderId": 77}))
    rest.script("Order/searchById", ok(order=_order(77, "grid-MES-1-1", fill_volume=1)))
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.extend(broker.submit(intent("grid-MES-1-1", qty=2), 5)))
    t.start()
    assert wait_for(lambda: rest.calls("Order/place"))
    hub.push("GatewayUserTrade", [_trade(901, 77)])  # the fill before anything else
    hub.push("GatewayUserOrder", [{"action": 1, "data": _order(77, "grid-MES-1-1", fill_volume=1)}])
    hub.push("GatewayUserTrade", [_trade(902, 77)])
    hub.push("GatewayUserTrade", [_trade(902, 77)])  # a duplicate
    t.join(5)
    assert [type(e).__name__ for e in result] == ["OrderAccepted", "Fill", "Fill"]
    assert [(f.trade_id, f.leaves_qty) for f in result[1:]] == [("901", 1), ("902", 0)]
    assert result[0].venue_order_id == "77" and events == []


def test_fill_for_an_unseen_order_is_resolved_over_rest_and_untagged_ones_are_reported(scripted):
    rest, hub, broker, events, reconcile = scripted
    rest.script("Order/searchById", ok(order=_order(55, "grid-MES-7-3", status=2, fill_volume=2)),
                ok(order=_order(56, None, status=2, fill_volume=1)))
    hub.push("GatewayUserTrade", [_trade(950, 55, size=2)])
    assert wait_for(lambda: events)
    assert [(e.client_order_id, e.strategy_id, e.leaves_qty) for e in events] == [("grid-MES-7-3", "grid-MES", 0)]
    hub.push("GatewayUserTrade", [_trade(951, 56)])
    assert wait_for(lambda: reconcile)
    assert reconcile == ["fill 951 of order 56 we did not place"] and len(events) == 1
    assert broker.stats == {"unknown_fills": 1}


def test_a_rejection_that_carries_an_order_id_is_still_rejected(scripted):
    rest, _, broker, _, _ = scripted
    msg = "Brackets cannot be used with Position Brackets. You must enable Auto OCO Brackets."
    rest.script("Order/place", ok(success=False, errorCode=2, errorMessage=msg, orderId=9056))
    out = broker.submit(intent("grid-MES-8-1"), 7)
    assert out == [OrderRejected("grid-MES-8-1", "grid-MES", f"OrderRejected: {msg}", 7)]


def test_flatten_rides_out_429s_on_its_cancels_and_closes(h):
    """The emergency flatten sends a cancel or close the gateway refused with HTTP 429 again
    (unprocessed: safe) until the account shows flat; logging the refusal and moving on would leave
    the order working (and, past 5 s, the position open)."""
    now = h.gw.now_ns()
    h.submit(intent("grid-MES-6-1", qty=2, ts=now))
    h.submit(intent("grid-MES-6-2", Side.SELL, 1, OrderType.LIMIT, now, limit="9000"))
    assert wait_for(lambda: h.of(Fill))
    h.gw.faults.server_errors(4, status=429, paths=["Order/cancel", "Position/closeContract"])
    events = h.new_broker(hub=False).flatten(now)
    assert events == [OrderCancelled("grid-MES-6-2", "grid-MES", now, "flatten")]
    assert h.gw.positions(1001) == [] and h.gw.open_orders(1001) == []
    assert h.gw.faults.state()["server_errors"] == []  # every 429 was met, and the flatten went on


def test_a_cancel_refused_with_429_is_sent_again(h):
    """Order/cancel refused unprocessed (HTTP 429) twice: the third try cancels the order. It used
    to be logged and dropped, leaving the entry working while its strategy counted it cancelled."""
    now = h.gw.now_ns()
    assert isinstance(h.submit(intent("grid-MES-7-1", Side.BUY, 1, OrderType.LIMIT, now, limit="1000"))[0],
                      OrderAccepted)
    h.gw.faults.server_errors(2, status=429, paths=["Order/cancel"])
    out = h.broker.cancel("grid-MES-7-1", now)
    assert h.gw.open_orders(1001) == [] and h.gw.faults.state()["server_errors"] == []
    # one OrderCancelled: returned, or first reported by the user hub during the retries
    mine = lambda: [e for e in out + h.of(OrderCancelled) if e.client_order_id == "grid-MES-7-1"]  # noqa: E731
    assert wait_for(mine)
    time.sleep(0.3)  # and no second one follows
    assert len(mine()) == 1, mine()


def test_a_cancel_is_sent_once_while_in_flight_and_never_for_a_settled_order(h):
    """A strategy, risk's flatten and a second flatten can ask to cancel one order within
    milliseconds: one Order/cancel goes to the gateway, the one in flight answers for all; an order
    whose fill or cancel is already out gets no request at all (the gateway would answer code 3)."""
    now = h.gw.now_ns()
    assert isinstance(h.submit(intent("grid-MES-5-1", Side.SELL, 1, OrderType.LIMIT, now, limit="9000"))[0],
                      OrderAccepted)
    first = h.broker.begin_cancel("grid-MES-5-1", now, "grid rebuild")
    second = h.broker.begin_cancel("grid-MES-5-1", now, "flatten: session flat time")
    assert second() == []
    out = first()  # the OrderCancelled: returned, or first reported by the user hub
    assert wait_for(lambda: [e for e in out + h.of(OrderCancelled) if e.client_order_id == "grid-MES-5-1"])
    time.sleep(0.3)
    assert len([e for e in out + h.of(OrderCancelled) if e.client_order_id == "grid-MES-5-1"]) == 1
    assert h.broker.cancel("grid-MES-5-1", now) == []  # settled: nothing sent
    assert h.gw.requests_received["Order/cancel"] == 1
    h.submit(intent("grid-MES-5-2", qty=1, ts=now))
    assert wait_for(lambda: h.of(Fill, "grid-MES-5-2"))
    assert h.broker.cancel("grid-MES-5-2", now) == []  # filled: nothing sent
    assert h.gw.requests_received["Order/cancel"] == 1
    assert h.broker.stats["cancel_coalesced"] == 3
    assert h.gw.open_orders(1001) == []


def test_a_cancel_asked_after_a_failed_one_is_sent(h):
    """The cancel in flight fails (HTTP 429 on every try): the order stays working, and the next
    cancel asked goes to the gateway and cancels it."""
    now = h.gw.now_ns()
    assert isinstance(h.submit(intent("grid-MES-5-3", Side.SELL, 1, OrderType.LIMIT, now, limit="9000"))[0],
                      OrderAccepted)
    h.gw.faults.server_errors(3, status=429, paths=["Order/cancel"])
    assert h.broker.cancel("grid-MES-5-3", now) == []  # three tries, all refused
    assert len(h.gw.open_orders(1001)) == 1 and h.gw.requests_received["Order/cancel"] == 3
    out = h.broker.cancel("grid-MES-5-3", now)
    assert h.gw.open_orders(1001) == [] and h.gw.requests_received["Order/cancel"] == 4
    assert wait_for(lambda: [e for e in out + h.of(OrderCancelled) if e.client_order_id == "grid-MES-5-3"])


def test_flatten_closes_again_a_position_still_open_2_s_after_its_accepted_close(scripted):
    """A close the gateway accepted but that left the position open (an order that filled after
    its cancel reopened it): the flatten closes it again once 2 s have passed, not on every check
    before that (two closes in flight could reverse the position)."""
    rest, _, broker, _, _ = scripted
    closes: list[float] = []
    position = {"id": 7, "accountId": 1001, "contractId": "CON.F.US.MES.M26", "type": 1, "size": 1,
                "averagePrice": 6650.25}

    def search(_body: Any) -> Reply:
        return ok(positions=[position] if len(closes) < 2 else [])

    def close(_body: Any) -> Reply:
        closes.append(time.monotonic())
        return ok()

    rest.script("Position/searchOpen", *[search] * 100)
    rest.script("Position/closeContract", close, close, close)
    t0 = time.monotonic()
    broker.flatten(5)
    assert len(closes) == 2  # the first, then one more once it still showed after 2 s
    assert closes[1] - closes[0] >= 2.0 and time.monotonic() - t0 < 10
    assert len(rest.calls("Position/searchOpen")) >= 5  # it kept checking meanwhile
