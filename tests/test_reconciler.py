"""Reconciler against a real redis-server: fills journalled but not applied by risk, and the
bounded list of applied trade ids risk keeps in its snapshot."""

from __future__ import annotations

from decimal import Decimal

from domain.execution.reconciler import Reconciler, plain_view
from domain.handler import RISK, ROUTER, WATCHDOG
from domain.messages import (Bracket, BrokerSnapshot, Fill, OrderAccepted, OrderIntent, OrderType, PositionSnapshot,
                             ReconcileRequest, ReconcileResult, Side)
from domain.portfolio import Portfolio
from infra.state_store import StateStore

D = Decimal


def _fill(i: int, side: Side) -> Fill:
    return Fill(f"grid-MES-1-{i}", "grid-MES", f"T{i}", "MES", side, 1, D("5000.00"), D("0.37"), 0, 1_000 + i)


def _journal(store: StateStore, fills: list[Fill]) -> None:
    for f in fills:
        store.save_order(OrderIntent(f.client_order_id, f.strategy_id, "MES", f.side, 1, OrderType.LIMIT, f.ts_ns,
                                     limit_price=f.price), "ACCEPTED")
        assert store.record_fill_and_status(f)


def test_portfolio_snapshot_keeps_latest_ids_and_a_floor() -> None:
    pf = Portfolio()
    for i in range(1, 11):  # ids T1..T10: lexicographic order would keep the wrong ones
        pf.apply_fill(_fill(i, Side.BUY if i % 2 else Side.SELL))
    d = pf.to_dict(kept=3)
    assert [t for t, _ in d["seen"]] == ["T8", "T9", "T10"] and d["seen_floor_ns"] == 1_007
    back = Portfolio.from_dict(d)
    assert back.net_positions() == pf.net_positions() and set(back.seen_trade_ids) == {"T8", "T9", "T10"}
    assert back.to_dict(kept=3) == d  # stable across restarts


def test_old_fills_beyond_the_kept_ids_are_not_sent_to_risk_again(store: StateStore) -> None:
    """12 fills, risk keeps the last 3 ids and applied all but the newest: only the newest goes
    to risk; the 8 older ones, whose ids risk no longer keeps, are recognised by the floor."""
    fills = [_fill(i, Side.BUY if i % 2 else Side.SELL) for i in range(1, 13)]
    _journal(store, fills)
    pf = Portfolio()
    for f in fills[:-1]:
        pf.apply_fill(f)
    saved = Portfolio.from_dict(pf.to_dict(kept=3))  # what risk's mirror holds

    def risk_view():
        return saved.net_positions(), set(saved.seen_trade_ids), saved.seen_floor_ns

    venue_qty = sum(f.side.sign * f.qty for f in fills)
    snap = BrokerSnapshot((), (PositionSnapshot("MES", venue_qty, D("5000.00"), 2_000),) if venue_qty else (),
                          tuple(fills), 2_000)
    out = Reconciler(store, plain_view(lambda ts: snap, store), risk_view).reconcile(2_000, "test")
    to_risk = [m for d, m in out if d == RISK and isinstance(m, Fill)]
    assert to_risk == [fills[-1]]
    result = [m for d, m in out if d == ROUTER and isinstance(m, ReconcileResult)]
    assert result and result[0].ok, result


def test_a_late_listener_gets_the_last_result_without_a_second_run(store: StateStore) -> None:
    """The replay feed asks with ``reuse_last``: a second snapshot would see the orders placed
    since the first one (still on their way to the venue) as stale and close them."""
    snaps: list[int] = []

    def venue(ts: int) -> BrokerSnapshot:
        snaps.append(ts)
        return BrokerSnapshot((), (), (), ts)

    rec = Reconciler(store, plain_view(venue, store), lambda: ({}, set(), 0))
    first = rec.handle(ReconcileRequest("replay start", 5, reuse_last=True))  # nothing yet: it runs
    assert snaps == [5] and first[-1][1].ok
    store.save_order(OrderIntent("grid-MES-1-7", "grid-MES", "MES", Side.BUY, 1, OrderType.LIMIT, 6,
                                 limit_price=D("5000.00")), "SUBMITTED")  # in flight to the venue
    again = rec.handle(ReconcileRequest("replay start", 7, reuse_last=True))
    assert snaps == [5] and again == [(ROUTER, first[-1][1])] and rec.runs == 1


def test_live_mismatch_is_rechecked_before_it_is_left_to_the_operator(store: StateStore) -> None:
    """A snapshot taken while a fill is between the gateway and our journal mismatches for a
    moment: the live reconciler re-checks it (1, 2, 4 s apart) and a later match lifts the hold."""
    from infra.projectx.reconcile import RETRY_PREFIX, GatewayReconciler
    venue_qty = {"MES": -3}
    risk = {"MES": -2}  # one fill still in flight
    snap = lambda ts: BrokerSnapshot((), tuple(PositionSnapshot(k, v, D("5000"), ts)  # noqa: E731
                                               for k, v in venue_qty.items()), (), ts)
    retries: list[tuple[str, float]] = []
    rec = GatewayReconciler(Reconciler(store, plain_view(snap, store), lambda: (dict(risk), set(), 0)),
                            retry=lambda reason, delay: retries.append((reason, delay)))
    out = rec.handle(ReconcileRequest("ambiguous place of grid-MES-1-7", 1))
    # HALTED meanwhile, but not final: no critical alert for what the next check may clear
    assert [(m.ok, m.final) for _, m in out if isinstance(m, ReconcileResult)] == [(False, False)]
    assert not [m for d, m in out if d == WATCHDOG]
    assert retries == [(RETRY_PREFIX + "ambiguous place of grid-MES-1-7", 1.0)]
    rec.handle(ReconcileRequest(retries[-1][0], 2))
    assert retries[-1][1] == 2.0
    risk["MES"] = -3  # the fill arrived
    out = rec.handle(ReconcileRequest(retries[-1][0], 3))
    assert [m.ok for _, m in out if isinstance(m, ReconcileResult)] == [True] and len(retries) == 2
    assert rec.mismatches == 0
    venue_qty["MES"] = -4  # a real, lasting mismatch: re-checked MISMATCH_RECHECKS times, then left
    outs = [rec.handle(ReconcileRequest(RETRY_PREFIX + "x", 10 + i)) for i in range(GatewayReconciler.MISMATCH_RECHECKS + 1)]
    assert len(retries) == 2 + GatewayReconciler.MISMATCH_RECHECKS
    last = outs[-1]  # the final check: a final failure and the operator's alert
    assert [(m.ok, m.final) for _, m in last if isinstance(m, ReconcileResult)] == [(False, True)]
    assert [m.key for d, m in last if d == WATCHDOG] == ["position-mismatch"]
    assert all(not [m for d, m in o if d == WATCHDOG] for o in outs[:-1])


def test_an_owner_that_missed_its_fill_or_cancel_gets_it_again(store: StateStore) -> None:
    """A kill between the router's journal write and the grid's own snapshot: the restored grid
    still holds a filled entry and a cancelled one as working. The reconciler re-sends the
    journalled fill and the cancel to the owner only (risk and the journal already have them);
    an order still working at the venue and a fill not journalled yet (it goes through the router)
    are left alone."""
    filled = _fill(1, Side.BUY)
    _journal(store, [filled])
    cancelled = OrderIntent("grid-MES-1-2", "grid-MES", "MES", Side.SELL, 1, OrderType.LIMIT, 1_000,
                            limit_price=D("5010.00"))
    store.save_order(cancelled, "CANCELLED")
    working = OrderIntent("grid-MES-1-3", "grid-MES", "MES", Side.BUY, 1, OrderType.LIMIT, 1_000,
                          limit_price=D("4990.00"))
    store.save_order(working, "ACCEPTED")
    unjournalled = Fill("grid-MES-1-4", "grid-MES", "T4", "MES", Side.BUY, 1, D("4995.00"), D("0.37"), 0, 1_500)
    store.save_order(OrderIntent("grid-MES-1-4", "grid-MES", "MES", Side.BUY, 1, OrderType.LIMIT, 1_000,
                                 limit_price=D("4995.00")), "ACCEPTED")
    snap = BrokerSnapshot((working,), (PositionSnapshot("MES", 2, D("5000.00"), 2_000),), (filled, unjournalled), 2_000)
    owner = {c: ("grid-MES", 0) for c in ("grid-MES-1-1", "grid-MES-1-2", "grid-MES-1-3", "grid-MES-1-4")}
    rec = Reconciler(store, plain_view(lambda ts: snap, store), lambda: ({"MES": 1}, {"T1"}, 0),
                     owner_view=lambda: owner)
    out = rec.reconcile(2_000, "restart")
    to_owner = [m for d, m in out if d == "grid-MES"]
    assert [type(m).__name__ for m in to_owner] == ["Fill", "OrderCancelled"]
    assert to_owner[0] == filled and to_owner[1].client_order_id == "grid-MES-1-2"
    assert [m for d, m in out if d == ROUTER and isinstance(m, Fill)] == [unjournalled]
    result = [m for d, m in out if d == ROUTER and isinstance(m, ReconcileResult)][0]
    assert result.ok and "2 owner order(s) brought up to date" in result.detail, result.detail
    # an owner that has seen the whole fill gets nothing again
    owner["grid-MES-1-1"] = ("grid-MES", 1)
    assert [m for d, m in rec.reconcile(2_100, "again") if d == "grid-MES" and isinstance(m, Fill)] == []


def test_guarded_view_does_not_judge_orders_the_gateway_snapshot_cannot_show_yet(store: StateStore) -> None:
    """Live: the broker keeps placing while the gateway snapshot is taken. An order mirrored during
    the snapshot, and one whose place call is still in flight, count as working at the venue; one
    mirrored after the snapshot's second read is left out of our side. So the reconciler neither
    closes them nor cancels them as unknown."""
    from infra.projectx.reconcile import guarded_view

    def intent(i: int) -> OrderIntent:
        return OrderIntent(f"grid-MES-2-{i}", "grid-MES", "MES", Side.BUY, 1, OrderType.LIMIT, 1_000 + i,
                           limit_price=D("5000.00"))
    store.save_order(intent(1), "SUBMITTED")  # mirrored before the snapshot, its place still in flight
    reads = {"n": 0}
    real = store.load_working_orders

    def load_working_orders():
        reads["n"] += 1
        if reads["n"] == 3:
            store.save_order(intent(3), "SUBMITTED")  # mirrored after the second read
        return real()
    store.load_working_orders = load_working_orders  # type: ignore[method-assign]

    def snapshot(ts):
        store.save_order(intent(2), "SUBMITTED")  # mirrored while the gateway was read
        return BrokerSnapshot((), (), (), ts)
    guarded = guarded_view(store, snapshot, unsettled=lambda coid: coid == "grid-MES-2-1")
    seen = []

    def view(ts):
        seen.append(guarded(ts))
        return seen[-1]
    out = Reconciler(store, view, lambda: ({}, set(), 0)).reconcile(5_000, "hub gap")
    ((snap, ours),) = seen
    assert sorted(o.client_order_id for o in snap.working) == ["grid-MES-2-1", "grid-MES-2-2"]
    assert sorted(ours) == ["grid-MES-2-1", "grid-MES-2-2"]  # grid-MES-2-3: the next reconciliation's
    assert not [m for _, m in out if type(m).__name__ in ("OrderCancelled", "CancelOrder")]
    # without the guard the same moment closes the two orders in flight as "not working at venue"
    plain = Reconciler(store, lambda ts: (BrokerSnapshot((), (), (), ts), real()), lambda: ({}, set(), 0))
    closed = sorted(m.client_order_id for _, m in plain.reconcile(6_000, "x") if type(m).__name__ == "OrderCancelled")
    assert closed == ["grid-MES-2-1", "grid-MES-2-2", "grid-MES-2-3"]


def test_a_working_bracket_leg_of_our_filled_entry_is_adopted_not_cancelled(store: StateStore) -> None:
    """The process died between a bracketed entry's fill and the report of its native legs: the
    reconciliation finds the legs working at the venue and not in our records. They are ours (their
    entry is): recorded through the router and told to the owner, never cancelled as unknown;
    an untagged stranger is still cancelled."""
    from domain.handler import BROKER
    from domain.messages import Bracket, CancelOrder, OrderAccepted
    from domain.orders import bracket_legs
    entry = OrderIntent("regime-MNQ-1-4", "regime-MNQ", "MNQ", Side.BUY, 1, OrderType.MARKET, 1_000,
                        purpose="regime-entry bull_pullback; regime=bull", bracket=Bracket(8, 14))
    store.save_order(entry, "ACCEPTED")
    fill = Fill(entry.client_order_id, "regime-MNQ", "T1", "MNQ", Side.BUY, 1, D("20000.00"), D("0.37"), 0, 1_001)
    assert store.record_fill_and_status(fill)
    stop, target = bracket_legs(entry, fill.price, D("0.25"))
    stranger = OrderIntent("px-77", "external", "MNQ", Side.SELL, 1, OrderType.LIMIT, 1_002, limit_price=D("20100.00"))
    snap = BrokerSnapshot((stop, target, stranger), (PositionSnapshot("MNQ", 1, fill.price, 1_001),), (fill,), 2_000)
    out = Reconciler(store, plain_view(lambda ts: snap, store),
                     lambda: ({"MNQ": 1}, {"T1"}, 0)).reconcile(2_000, "restart")
    adopted = [m.client_order_id for d, m in out if d == ROUTER and isinstance(m, OrderAccepted)]
    assert adopted == [stop.client_order_id, target.client_order_id]
    assert all(m.intent.reduce_only for d, m in out if isinstance(m, OrderAccepted))
    assert [m.client_order_id for d, m in out if d == BROKER and isinstance(m, CancelOrder)] == ["px-77"]
    result = [m for d, m in out if isinstance(m, ReconcileResult)][0]
    assert result.ok and "2 bracket legs adopted" in result.detail


def test_a_native_leg_that_filled_before_it_was_recorded_is_recorded_then_its_fill_replayed(store: StateStore) -> None:
    """A kill -9 after the venue placed a bracket's legs and filled the target, before the router
    recorded the target: at restart the reconciler records the leg as the venue placed it, then
    replays its fill (journal, risk, owner), and the positions agree. Skipped as "not ours", the
    fill left risk holding a long the venue no longer had, which risk's flatten later sold into a
    naked short."""
    entry = OrderIntent("regime-MNQ-1-1", "regime-MNQ", "MNQ", Side.BUY, 1, OrderType.LIMIT, 1_000,
                        limit_price=D("25221.75"), bracket=Bracket(stop_ticks=40, target_ticks=11))
    store.save_order(entry, "ACCEPTED")
    entry_fill = Fill("regime-MNQ-1-1", "regime-MNQ", "T1", "MNQ", Side.BUY, 1, D("25221.75"), D("0.37"), 0, 1_001)
    assert store.record_fill_and_status(entry_fill)
    target_fill = Fill("regime-MNQ-1-1-TP", "regime-MNQ", "T2", "MNQ", Side.SELL, 1, D("25224.50"), D("0.37"), 0, 1_002)
    assert store.load_order("regime-MNQ-1-1-TP") is None
    snap = BrokerSnapshot((), (), (entry_fill, target_fill), 2_000)
    out = Reconciler(store, plain_view(lambda ts: snap, store), lambda: ({"MNQ": 1}, {"T1"}, 0)).reconcile(2_000, "restart")
    routed = [m for d, m in out if d == ROUTER]
    accepted = [m for m in routed if isinstance(m, OrderAccepted)]
    assert [a.client_order_id for a in accepted] == ["regime-MNQ-1-1-TP"]
    leg = accepted[0].intent
    assert (leg.order_type, leg.side, leg.qty, leg.reduce_only) == (OrderType.LIMIT, Side.SELL, 1, True)
    assert leg.limit_price == D("25221.75") + 11 * D("0.25") and leg.purpose.startswith("bracket-target")
    assert routed.index(accepted[0]) < routed.index(target_fill)  # recorded before its fill is replayed
    assert isinstance(routed[-1], ReconcileResult) and routed[-1].ok, routed[-1].detail
    # an order id that is not a leg of ours stays someone else's: its fill is not replayed
    stranger = Fill("manual-1-TP", "", "T3", "MNQ", Side.SELL, 1, D("25224.50"), D("0.37"), 0, 1_003)
    out = Reconciler(store, plain_view(lambda ts: BrokerSnapshot((), (), (stranger,), 2_000), store),
                     lambda: ({}, set(), 0)).reconcile(2_000, "restart")
    assert not any(isinstance(m, (OrderAccepted, Fill)) for _, m in out)
