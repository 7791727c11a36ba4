"""The reconciler: our mirror against the venue's truth, at start, after a restart and on gaps.

Fills we missed are replayed through the router (a native bracket leg of ours that filled before
the router recorded it is recorded first, as the venue placed it), fills journalled but not
applied by risk go to risk, orders the venue no longer has are closed, venue orders we never sent
are cancelled (policy ``cancel``; ``adopt`` keeps them), owners are brought up to date, and then the positions must
match exactly, else risk stays HALTED and a critical alert goes out (docs/architecture.md,
"Recovery").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from domain.handler import BROKER, RISK, ROUTER, WATCHDOG, Out, RejectedMessage
from domain.messages import (Alert, BrokerSnapshot, CancelOrder, Fill, OrderAccepted, OrderCancelled, OrderIntent,
                             ReconcileRequest, ReconcileResult)
from domain.instruments import INSTRUMENTS
from domain.orders import bracket_legs, bracket_parent
from domain.ports import StateStore

class Reconciler:
    """Reconciler handler. On :class:`ReconcileRequest` compares the mirror with the venue.

    Args:
        store: the :class:`domain.ports.StateStore` (journal of orders and seen fills), or None
            (backtest: nothing is compared but positions).
        view: ``f(ts_ns) -> (BrokerSnapshot, {client order id: order record})``: the venue's truth
            and the orders our mirror holds as working, read together (:func:`plain_view`; live:
            :func:`infra.projectx.reconcile.guarded_view`, which accounts for orders in flight).
        risk_view: ``f() -> (positions, applied, applied_floor_ns)`` read from ONE mirrored risk
            snapshot (so they agree): ``positions`` {instrument: signed qty}, ``applied`` the set
            of trade ids that snapshot keeps (or None if unknown) and ``applied_floor_ns`` the
            time at or before which every fill was applied although its id is no longer kept
            (:meth:`domain.portfolio.Portfolio.to_dict`). A fill the router journalled but risk
            never applied (a kill between the two, or a snapshot still being written) is sent to
            risk again (risk ignores a trade id it already has); with ``applied`` None only fills
            missing from the journal are replayed.
        unknown_order_policy: ``"cancel"`` (default) or ``"adopt"`` for venue orders we never sent.
        owner_view: ``f() -> {client_order_id: (owner, filled_qty)}``, the orders each strategy's
            mirrored snapshot still holds as working and the quantity it has seen filled, or None.
            An owner that holds an order the venue filled further gets the order's journalled
            fills again (owners ignore a trade id they already applied); one the router already
            closed (journal status cancelled / rejected) and the venue no longer works gets the
            :class:`OrderCancelled` again. That covers a kill between the router's journal write
            and the owner's own snapshot: without it a restored grid keeps a filled entry as
            working (no take-profit, the level blocked) and the position it holds is unmanaged.
    """

    def __init__(self, store: StateStore | None, view: Callable[[int], tuple[BrokerSnapshot, dict[str, dict]]],
                 risk_view: Callable[[], tuple[dict[str, int], set[str] | None, int]],
                 unknown_order_policy: str = "cancel",
                 owner_view: Callable[[], dict[str, tuple[str, int]]] | None = None) -> None:
        if unknown_order_policy not in ("cancel", "adopt"):
            raise ValueError(f"unknown_order_policy must be 'cancel' or 'adopt', not {unknown_order_policy!r}")
        self.store = store
        self.view = view
        self.risk_view = risk_view
        self.owner_view = owner_view
        self.policy = unknown_order_policy
        self.runs = 0
        self.last_result: ReconcileResult | None = None

    def handle(self, msg: Any) -> Out:
        if not isinstance(msg, ReconcileRequest):
            raise RejectedMessage(f"reconciler: unexpected message {type(msg).__name__}")
        if msg.reuse_last and self.last_result is not None:
            return [(ROUTER, self.last_result)]
        self.runs += 1
        return self.reconcile(msg.ts_ns, msg.reason)

    def reconcile(self, ts_ns: int, reason: str) -> Out:
        # risk's side is read BEFORE the venue's: a fill landing in between is then in the venue
        # snapshot and counted as missed or unapplied, so the positions agree. Read after it, such a
        # fill would be in risk's position but not in the venue's: a false MISMATCH.
        risk_positions, applied, applied_floor_ns = self.risk_view()
        snap, ours = self.view(ts_ns)
        venue_working = {o.client_order_id: o for o in snap.working}
        out: Out = []
        missed: list[Fill] = []
        unapplied: list[Fill] = []
        for f in snap.fills:
            if self.store is None:
                break
            if not (f.client_order_id in ours or self.store.load_order(f.client_order_id) is not None):
                leg = self._unrecorded_leg(f.client_order_id, snap.fills)
                if leg is None:
                    continue  # not ours (an order placed by hand on the account)
                # a native bracket leg that filled before the router recorded it (a kill between
                # the venue placing it and its report): recorded first, then its fill replayed
                out.append((ROUTER, OrderAccepted(leg.client_order_id, leg.strategy_id, "", ts_ns, leg)))
            if not self.store.fill_seen(f.trade_id):
                missed.append(f)  # the router never saw it: journal, trade log, risk and owner
            elif applied is not None and f.trade_id not in applied and f.ts_ns > applied_floor_ns:
                unapplied.append(f)  # journalled, but risk's mirrored position does not contain it
        out += [(ROUTER, f) for f in missed] + [(RISK, f) for f in unapplied]
        missed += unapplied
        filled_coids = {f.client_order_id for f in snap.fills if f.leaves_qty == 0}
        closed: set[str] = set()
        for coid, rec in ours.items():
            if coid in venue_working or coid in filled_coids:
                continue
            closed.add(coid)
            out.append((ROUTER, OrderCancelled(coid, rec["intent"].strategy_id, ts_ns, "reconcile: not working at venue")))
        owners_told = self._tell_owners(snap.fills, venue_working, filled_coids, closed, ts_ns, out)
        # a native bracket leg of an entry we sent, placed by the venue when the entry filled but
        # never reported to us (a crash or a lost event in between): ours, recorded by the router
        legs = [o for coid, o in venue_working.items() if coid not in ours and self._our_leg(coid)]
        out += [(ROUTER, OrderAccepted(o.client_order_id, o.strategy_id, "", ts_ns, dataclasses.replace(o, reduce_only=True)))
                for o in legs]
        unknown = [o for coid, o in venue_working.items() if coid not in ours and o not in legs]
        if self.policy == "cancel":
            out += [(BROKER, CancelOrder(o.client_order_id, o.strategy_id, ts_ns, "reconcile: unknown order"))
                    for o in unknown]
        expected = dict(risk_positions)
        for f in missed:
            expected[f.instrument] = expected.get(f.instrument, 0) + f.side.sign * f.qty
        expected = {k: v for k, v in expected.items() if v}
        venue_pos = {p.instrument: p.qty for p in snap.positions if p.qty}
        ok = expected == venue_pos
        detail = (f"{reason}: {len(missed)} missed fills replayed ({len(unapplied)} to risk only), {len(closed)} stale orders closed, "
                  + (f"{len(legs)} bracket legs adopted, " if legs else "") +
                  f"{owners_told} owner order(s) brought up to date, "
                  f"{len(unknown)} unknown venue orders {'cancelled' if self.policy == 'cancel' else 'adopted'}; "
                  f"positions ours={expected} venue={venue_pos}")
        result = ReconcileResult(ok, detail, ts_ns)
        self.last_result = result
        out.append((ROUTER, result))
        if not ok:
            out.append((WATCHDOG, Alert("critical", "position-mismatch", detail, ts_ns)))
        return out

    def _unrecorded_leg(self, client_order_id: str, venue_fills: list[Fill]) -> OrderIntent | None:
        """The intent of ``client_order_id`` if it names a native bracket leg of an entry in our
        records whose fill is among the venue's, rebuilt as the venue placed it at that fill's
        price (:func:`domain.orders.bracket_legs`); else None."""
        parent = bracket_parent(client_order_id)
        rec = self.store.load_order(parent) if parent is not None and self.store is not None else None
        if rec is None or rec["intent"].bracket is None or rec["intent"].instrument not in INSTRUMENTS:
            return None
        price = next((f.price for f in venue_fills if f.client_order_id == parent), None)
        if price is None:
            return None
        legs = bracket_legs(rec["intent"], price, INSTRUMENTS[rec["intent"].instrument].tick_size)
        return next((leg for leg in legs if leg.client_order_id == client_order_id), None)

    def _our_leg(self, client_order_id: str) -> bool:
        """True if ``client_order_id`` is a native bracket leg of an order in our records."""
        parent = bracket_parent(client_order_id)
        return parent is not None and self.store is not None and self.store.load_order(parent) is not None

    def _tell_owners(self, venue_fills: list[Fill], venue_working: dict, filled_coids: set[str], closed: set[str],
                     ts_ns: int, out: Out) -> int:
        """Append to ``out`` what each owner missed of its own orders (see ``owner_view``); returns
        the number of orders concerned. Everything sent is idempotent for the owner. Fills the
        journal does not have yet are left out: they reach the owner through the router."""
        if self.owner_view is None or self.store is None:
            return 0
        by_coid: dict[str, list[Fill]] = {}
        for f in venue_fills:
            by_coid.setdefault(f.client_order_id, []).append(f)
        told = 0
        for coid, (owner, known_filled) in sorted(self.owner_view().items()):
            fills = by_coid.get(coid, [])
            if sum(f.qty for f in fills) > known_filled:
                again = [f for f in fills if self.store.fill_seen(f.trade_id)]
                out += [(owner, f) for f in again]
                told += bool(again)
            elif coid not in venue_working and coid not in filled_coids and coid not in closed:
                rec = self.store.load_order(coid)
                if rec is not None and rec["status"] in ("CANCELLED", "REJECTED"):
                    out.append((owner, OrderCancelled(coid, owner, ts_ns, f"reconcile: {rec['status'].lower()} at venue")))
                    told += 1
        return told


def plain_view(snapshot: Callable[[int], BrokerSnapshot], store: StateStore | None
               ) -> Callable[[int], tuple[BrokerSnapshot, dict[str, dict]]]:
    """The reconciler's view for a venue that answers at once: the venue snapshot, then the
    mirror's working orders (none without a store)."""
    def view(ts_ns: int) -> tuple[BrokerSnapshot, dict[str, dict]]:
        snap = snapshot(ts_ns)
        return snap, (store.load_working_orders() if store is not None else {})
    return view
