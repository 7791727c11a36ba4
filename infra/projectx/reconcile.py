"""Reconciliation against the ProjectX gateway: retries, re-checks, and orders in flight.

:class:`GatewayReconciler` hosts :class:`domain.execution.reconciler.Reconciler` for the live venue:

- a gateway snapshot that fails (HTTP 429 storm, 5xx, transport failure, expired session,
  malformed payload) is retried with a backoff instead of crashing the actor;
- a position mismatch is re-checked 1, 2 and 4 s later before it is left to the operator;
- :func:`guarded_view` gives the reconciler a view of the gateway and of our mirror in which orders
  placed while the snapshot was taken are neither closed nor taken for unknown venue orders.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

from loguru import logger

from domain.handler import ROUTER, WATCHDOG, Out
from domain.messages import BrokerSnapshot, ReconcileRequest, ReconcileResult
from infra.projectx import errors as pxe

RETRY_PREFIX = "retry: "
"""Reason prefix of the reconciliation retries scheduled by :class:`GatewayReconciler`."""


class GatewayReconciler:
    """The live reconciler: hosts a :class:`domain.execution.reconciler.Reconciler` (``inner``, built
    with :func:`guarded_view`) and logs every result (a live operator wants to see each one).

    A reconciliation whose gateway snapshot fails (HTTP 429 storm, 5xx, transport failure, expired
    session, malformed payload: :class:`infra.projectx.errors.ProjectXError` / ``MalformedPayload``)
    does not crash the actor: it is logged (``reconciliation deferred``) and retried by ``retry(reason,
    delay_s)`` with a backoff (1, 2, 4 ... ``RETRY_MAX_S`` s; one retry pending at a time, later
    requests meanwhile coalesce into it). From the ``FAIL_AFTER``-th consecutive failure on, a
    ``ReconcileResult(ok=False)`` goes to the router, so risk HALTs (and alerts) until a retry matches.

    A failed snapshot must not crash the actor: a 429 burst during the reconciliation that follows
    a user-hub reconnect would crash it several times a second, exceed the ``execution``
    supervisor's intensity and escalate to an emergency flatten under the same 429s
    (tests/test_live_faults.py covers it).

    Args:
        inner: the Reconciler.
        retry: ``retry(reason, delay_s)`` schedules a ``ReconcileRequest`` (None: failures raise).
    """

    FAIL_AFTER = 3
    RETRY_MAX_S = 10.0
    MISMATCH_RECHECKS = 3
    """A position mismatch is re-checked this many times, 1, 2, 4 s apart, before it is left to the
    operator: a snapshot taken while fills are between the gateway and our journal (an order placed
    during the snapshot that filled at once) mismatches for a moment. Risk stays HALTED meanwhile."""

    def __init__(self, inner: Any, retry: Callable[[str, float], None] | None = None) -> None:
        self.inner = inner
        self.retry = retry
        self.failures = 0
        self.mismatches = 0
        self.retry_pending = threading.Event()

    def handle(self, msg: Any) -> Out:
        if isinstance(msg, ReconcileRequest) and msg.reason.startswith(RETRY_PREFIX):
            self.retry_pending.clear()
        elif isinstance(msg, ReconcileRequest) and self.retry_pending.is_set():
            logger.info("reconciliation {}: coalesced into the pending retry", msg.reason)
            return []
        try:
            out = self.inner.handle(msg)
        except (pxe.ProjectXError, pxe.MalformedPayload) as e:
            if self.retry is None or not isinstance(msg, ReconcileRequest):
                raise
            self.failures += 1
            delay = min(self.RETRY_MAX_S, 2.0 ** (self.failures - 1))
            reason = msg.reason.removeprefix(RETRY_PREFIX)
            logger.warning("reconciliation deferred ({}): gateway snapshot failed: {}; retry {} in {:.0f}s",
                           reason, e, self.failures, delay)
            self.retry_pending.set()
            self.retry(RETRY_PREFIX + reason, delay)
            if self.failures < self.FAIL_AFTER:
                return []
            detail = f"{reason}: gateway snapshot failed {self.failures} times in a row ({e})"
            logger.error("reconciliation FAILED: {}", detail)
            return [(ROUTER, ReconcileResult(False, detail, msg.ts_ns))]
        self.failures = 0
        r = self.inner.last_result
        if r is not None and isinstance(msg, ReconcileRequest) and not msg.reuse_last:
            if r.ok:
                logger.info("reconciliation ok: {}", r.detail)
                self.mismatches = 0
            elif self.retry is not None and self.mismatches < self.MISMATCH_RECHECKS:
                # a snapshot taken while fills are between the gateway and us (or whose REST reads
                # straddle a fill) differs for a moment: halt, say so, look again before alerting
                self.mismatches += 1
                delay = 2.0 ** (self.mismatches - 1)
                logger.warning("reconciliation: positions differ (check {} of {}; fills may still be on their "
                               "way), re-checking in {:.0f}s, risk HALTED meanwhile: {}", self.mismatches,
                               self.MISMATCH_RECHECKS + 1, delay, r.detail)
                self.retry_pending.set()
                self.retry(RETRY_PREFIX + msg.reason.removeprefix(RETRY_PREFIX), delay)
                pending = dataclasses.replace(r, final=False)
                out = [(d, pending if m is r else m) for d, m in out
                       if not (d == WATCHDOG and getattr(m, "key", "") == "position-mismatch")]
            else:
                logger.error("reconciliation MISMATCH: {}", r.detail)
        return out


def guarded_view(store: Any, snapshot: Callable[[int], BrokerSnapshot], unsettled: Callable[[str], bool]
                 ) -> Callable[[int], tuple[BrokerSnapshot, dict[str, dict]]]:
    """The reconciler's view of the gateway and our mirror, not judging orders the snapshot cannot
    show yet.

    The broker actor keeps placing orders while the gateway snapshot is taken. An order mirrored
    (or placed) meanwhile is absent from the snapshot and would be closed as "not working at
    venue"; its ``OrderAccepted`` would then hit an order risk holds as cancelled. So the mirror's
    working set is read just before the snapshot (B) and just after it (A). Orders of A not in B,
    and orders of B whose place call is unsettled (``unsettled(coid)``: in flight, or of this run
    and not yet at the broker), count as working at the venue for this check (neither closed nor
    taken for unknown venue orders); orders mirrored after A are left out of our side (the
    snapshot cannot contain them either). The next reconciliation judges them.

    Args:
        store: the :class:`domain.ports.StateStore`.
        snapshot: ``f(ts_ns) -> BrokerSnapshot`` of the gateway (REST reads).
        unsettled: ``f(client_order_id) -> bool``.
    Returns: ``view(ts_ns) -> (snapshot, {client order id: order record})``.
    """
    def view(ts_ns: int) -> tuple[BrokerSnapshot, dict[str, dict]]:
        before = store.load_working_orders()
        pending = {c for c in before if unsettled(c)}
        result = snapshot(ts_ns)
        after = store.load_working_orders()
        pending |= after.keys() - before.keys()
        shown = {o.client_order_id for o in result.working}
        extra = tuple(after[c]["intent"] for c in sorted(pending) if c in after and c not in shown)
        if extra:
            logger.info("reconciliation: {} order(s) placed during the snapshot counted as working: {}",
                        len(extra), [i.client_order_id for i in extra])
            result = dataclasses.replace(result, working=tuple(result.working) + extra)
        ours = {c: r for c, r in store.load_working_orders().items() if c in after}
        return result, ours
    return view
