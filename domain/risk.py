"""Risk handler: the gate every order passes, the account rules, and the flatten procedure.

Inputs and outputs (actor names from :mod:`domain.handler`):

- ``OrderIntent`` from a strategy: checked, then forwarded to the router or answered with
  ``OrderDenied`` to its strategy. Checks in order: duplicate client order id, trading state
  (HALTED: nothing; REDUCING: only orders that shrink a position), trading window (flat by
  15:10 CT minus the margin), then :func:`domain.risk_rules.check_order` (max contracts with
  micros 10:1 incl. working orders, per-trade risk, open-risk cap, net 1-ATR exposure cap), then
  for an entry the sweep guard :func:`domain.risk_rules.check_sweep` (the loss of one move through
  every working order plus this one must fit in what the day / session caps, kill switch, DLLs and
  MLL leave).
- ``CancelOrder``: always forwarded.
- order events from the router: folded into the order book and the portfolio; fills update the
  :class:`~domain.risk_rules.AccountLedger`; the new net positions go out as ``ExposureUpdate``.
- ``TradeTick``: marks; the account rules (MLL in real time on equity incl. unrealized, DLL,
  personal guardrails) are evaluated on every mark and every fill.
- ``ClockTick`` / tick time: trading-day roll at 17:00 CT (end-of-day balance -> MLL floor),
  sub-session roll at 08:30 CT, and the flatten at 15:10 CT minus the margin. Each closed day's
  net P&L (realized - fees, day roll at 17:00 CT) is kept in :attr:`RiskManager.day_history`.
- ``Flatten`` / ``Shutdown``: cancel every working order, then close each position with a
  reduce-only market order once no other order of that instrument is working (so a take-profit
  cannot fill on top of the close and flip the position).
- ``Pause`` / ``Resume`` (operator), ``ReconcileResult`` (the reconciler), ``SetArmed`` (live
  arming: disarmed holds ``unarmed``, HALTED for strategies, and cancels their working orders;
  risk's own closes of an existing position still go out).

The trading state is the most severe of the *holds* in force (e.g. ``reconcile`` HALTED until the
reconciler reports a match, ``day`` HALTED until the next trading day, ``session`` REDUCING until
the next sub-session, ``failed`` HALTED for good after an MLL breach).
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from typing import Any

from domain.calendar import OPEN_TIME, SessionCalendar, next_time_of_day_ns, trading_day
from domain.handler import (EXPOSURE_TOPIC, RISK_STATE_TOPIC, ROUTER, WATCHDOG, IdGenerator, Out,
                            RejectedMessage)
from domain.messages import (AccountStatus, Alert, CancelOrder, ClockTick, ExposureUpdate, Fill, Flatten, OrderAccepted,
                             OrderCancelled, OrderDenied, OrderIntent, OrderRejected, OrderSubmitted, OrderType,
                             Pause, ReconcileResult, Resume, RiskState, RiskStateChanged, SetArmed, Shutdown, Side,
                             StrategyStatus, TradeTick)
from domain.orders import OrderBook, OrderStatus, bracket_leg_ids
from domain.strategy_books import StrategyBooks
from domain.portfolio import Portfolio
from domain.risk_rules import (AccountLedger, Action, Breach, OrderCheck, RiskLimits, SweepBook, WorkingOrder,
                               breach_free_above, check_stress, evaluate_account, is_reducing, mini_equivalents,
                               net_atr_exposure, order_caps, RTH_START, sub_session_of)

_SEVERITY = {RiskState.ACTIVE: 0, RiskState.REDUCING: 1, RiskState.HALTED: 2}
PROCESS_HOLDS = frozenset({"reconcile", "shutdown"})
"""Holds of one process, never mirrored: a restarted process sets its own (``reconcile`` until
reconciled; ``shutdown`` only while it stops)."""
BRACKET_EXITS = frozenset({"bracket-stop", "bracket-target"})
"""Purposes of a bracket's two exits (a managed OCO: the owner cancels one when the other fills).
Each is judged against the position alone, not against its sibling or each other's pending size."""


BREACH_ACTIONS = {Action.LIQUIDATE: "flattening every position; the account failed: trading HALTED for good",
                  Action.FLATTEN_HALT_DAY: "flattening every position; trading HALTED for the rest of the trading day",
                  Action.FLATTEN_REDUCE_SESSION: "flattening every position; REDUCING (no new positions) for the session",
                  Action.REDUCE_DAY: "REDUCING: no new positions for the rest of the trading day"}
"""What risk does on each breach action, as an alert states it (docs/risk.md)."""


def is_bracket_exit(intent: OrderIntent) -> bool:
    """The order is a bracket's stop or target: its purpose, up to a ``;`` (tags follow, e.g.
    ``bracket-stop; regime=crash``), is one of :data:`BRACKET_EXITS`."""
    return intent.purpose.split(";", 1)[0].strip() in BRACKET_EXITS


LEGS_REPORTED_NS = 5_000_000_000
"""Event time within which the venue reports the native bracket legs of a filled entry (the
simulated venue: with the fill; ProjectX: on the user hub, milliseconds later). A flatten waits
that long at most for them before it closes the position (:meth:`RiskManager._continue_flatten`)."""

UNARMED_HOLD = "unarmed"
"""The hold of a live account not armed by the operator (README, "Arming")."""


@dataclasses.dataclass(slots=True)
class _Batch:
    """What the order checks read of the account, the same for every intent of one batch (a
    strategy proposing several levels at once, with no other message in between):
    :meth:`RiskManager._on_intent` builds it for the first intent and drops it on any other
    message, on a new event time and when an intent passes (it changes the working orders)."""

    positions: dict[str, int]  # net position per instrument, contracts
    working: dict[str, tuple[int, int]]  # {instrument: (buy, sell)} working, contracts
    positions_key: tuple  # the three as sorted item tuples (the order caps' memo key)
    working_key: tuple
    atr_key: tuple
    exposure: Decimal  # net 1-ATR exposure of the positions, dollars
    sweep: SweepBook | None = None  # the sweep guard's book, on first use
    worst: dict[tuple[str, bool], tuple[dict[str, int], tuple]] = dataclasses.field(default_factory=dict)

    def worst_case(self, instrument: str, buy: bool) -> tuple[dict[str, int], tuple]:
        """The positions once every working order on one side of ``instrument`` has filled, as a
        dict and as a sorted item tuple (the check cache's key)."""
        got = self.worst.get((instrument, buy))
        if got is None:
            b, s = self.working.get(instrument, (0, 0))
            worst = dict(self.positions)
            worst[instrument] = worst.get(instrument, 0) + (b if buy else -s)
            got = self.worst[(instrument, buy)] = (worst, tuple(sorted(worst.items())))
        return got


_CAPS_KEPT = 4096
"""Answers :meth:`RiskManager._order_caps` keeps before it starts again."""

_DAY_BOUNDARIES = (RTH_START, OPEN_TIME)
"""CT wall-clock times at which :meth:`RiskManager._on_time` can change state besides the flatten
time: the RTH sub-session starts (08:30) and the trading day and ETH sub-session start (17:00);
:func:`domain.calendar.trading_day`, :func:`domain.risk_rules.sub_session_of` and
:meth:`domain.calendar.SessionCalendar.must_be_flat` are constant between them."""


class RiskManager:
    """Risk handler. ``handle(msg) -> Out``.

    Args:
        limits: the account profile's :class:`RiskLimits`.
        ids: client order id source for flatten orders (strategy id ``"risk"``).
        calendar: session rules.
        start_ns: event time at construction (first trading day).
        halted_until_reconciled: start HALTED with a ``reconcile`` hold (restart / live startup).
        telemetry: send the watchdog an ``AccountStatus`` each minute of event time (False where
            no watchdog runs: the backtest; :attr:`actors.tree.ModeSpec.watchdog`).
    """

    strategy_id = "risk"

    def __init__(self, limits: RiskLimits, ids: IdGenerator, calendar: SessionCalendar, start_ns: int,
                 halted_until_reconciled: bool = False, telemetry: bool = True) -> None:
        self.limits = limits
        self.ids = ids
        self.calendar = calendar
        self.ledger = AccountLedger(limits, trading_day(start_ns), sub_session_of(start_ns))
        self.portfolio = Portfolio()
        self.strategy_books = StrategyBooks()  # per-strategy P&L for the strategy_* metrics
        self.book = OrderBook()
        self.marks: dict[str, Decimal] = {}
        self.atr: dict[str, float] = {}
        self.holds: dict[str, tuple[RiskState, str]] = {}
        self.state = RiskState.ACTIVE
        self.flattening: str | None = None
        self.now_ns = start_ns
        self.breaches: list[tuple[int, str, str]] = []  # (ts, rule, detail), for the session summary
        self.max_contracts_seen = Decimal(0)
        self.flat_violations: list[int] = []
        self.cancel_requested: set[str] = set()  # strategy orders asked to cancel by the current flatten
        self.legs_due: dict[str, tuple[str, int]] = {}
        """Native bracket legs the venue places on an entry's fill and has not reported yet:
        ``{leg client order id: (instrument, event-time ns after which it is no longer awaited)}``
        (:meth:`_continue_flatten` closes nothing on that instrument meanwhile). Not mirrored: after
        a restart the reconciler's comparison with the venue's working orders stands in for it."""
        self.telemetry = telemetry
        self.min_headroom: Decimal | None = None
        self.peak_equity = limits.starting_balance
        self.max_drawdown = Decimal(0)
        self.denials = 0
        self.denials_by_rule: dict[str, int] = {}
        self.day_history: list[tuple[str, Decimal, int]] = []  # closed days: (ISO day, net P&L, fills)
        self._time_stable_until = 0
        """Event time (epoch ns) before which :meth:`_on_time` cannot change anything: the next
        trading-day or sub-session boundary (:data:`_DAY_BOUNDARIES`), or the flatten time when
        that comes first. 0 = evaluate at the next message."""
        self._band: tuple[int, int, int] | None = None
        """(ledger version, low, high): unrealized P&L, integer cents, inside which a mark changes
        nothing (:meth:`_arm_band`); None = every mark goes through :meth:`_check_account`."""
        self._unreal_cents: dict[str, int] = {}  # per instrument, at its last mark, while the band holds
        self._unreal_total = 0  # their sum, cents
        self._batch: _Batch | None = None  # the current batch of intents (:class:`_Batch`)
        self._waived = dataclasses.replace(limits, open_risk_cap=None, stress_loss_cap=None)
        """The limits for a hedge that lowers the net 1-ATR exposure: the gross caps waived."""
        self._caps: dict[tuple, tuple[str | None, bool]] = {}
        """:meth:`_order_caps` answers by their arguments (at most :data:`_CAPS_KEPT`)."""
        if halted_until_reconciled:
            self.holds["reconcile"] = (RiskState.HALTED, "waiting for reconciliation with the broker")
            self.state = RiskState.HALTED

    # ------------------------------------------------------------------ helpers
    def _set_hold(self, name: str, state: RiskState | None, reason: str = "") -> Out:
        if state is None:
            self.holds.pop(name, None)
        else:
            self.holds[name] = (state, reason)
        new = max((s for s, _ in self.holds.values()), key=_SEVERITY.__getitem__, default=RiskState.ACTIVE)
        if new is self.state:
            return []
        self.state = new
        why = "; ".join(f"{k}: {r}" for k, (_, r) in self.holds.items()) or reason or "all holds released"
        return [(RISK_STATE_TOPIC, RiskStateChanged(new, why, self.now_ns))]

    def unrealized(self) -> Decimal:
        return self.portfolio.unrealized(self.marks)

    def equity(self) -> Decimal:
        return self.ledger.balance + self.unrealized()

    def _deny(self, intent: OrderIntent, reason: str) -> Out:
        self.denials += 1
        rule = reason.split(":", 1)[0] if ":" in reason[:40] else "other"
        self.denials_by_rule[rule] = self.denials_by_rule.get(rule, 0) + 1
        denied = OrderDenied(intent.client_order_id, intent.strategy_id, reason, self.now_ns)
        self.book.add(intent).apply(denied)
        return [(intent.strategy_id, denied)]

    # ------------------------------------------------------------------ dispatch
    def handle(self, msg: Any) -> Out:
        if type(msg) is TradeTick:  # the hot path: one call per print of every instrument
            self._batch = None
            ts = msg.ts_ns
            out = self._advance(ts) if ts >= self._time_stable_until else []
            if ts > self.now_ns:  # between two calendar instants (_advance) only the event time moves
                self.now_ns = ts
            if self.legs_due and self.flattening:  # a leg's report may be overdue now
                out = out + self._continue_flatten()
            sym, price = msg.instrument, msg.price
            marks = self.marks
            moved = marks.get(sym) != price
            marks[sym] = price
            pos = self.portfolio.positions.get(sym) if moved else None
            if pos is None or not pos.qty:
                return out  # equity did not move (fills run their own check)
            band = self._band
            if band is not None and not out and band[0] == self.ledger.version:
                cents = pos.unrealized_cents(price)
                if cents is not None:
                    parts = self._unreal_cents
                    total = self._unreal_total + cents - parts.get(sym, 0)
                    parts[sym] = cents
                    self._unreal_total = total
                    if band[1] <= total <= band[2]:
                        return out  # inside the band: no rule, no equity figure moves
            return out + self._check_account() if out else self._check_account()
        ts = getattr(msg, "ts_ns", None)
        if type(msg) is not OrderIntent or (isinstance(ts, int) and ts > self.now_ns):
            self._batch = None  # anything but the next intent of a batch may change what it read
        out = self._advance(ts) if isinstance(ts, int) else []
        if isinstance(msg, OrderIntent):
            return out + self._on_intent(msg)
        if isinstance(msg, ClockTick):  # the next most frequent, once a minute
            if self.legs_due and self.flattening:  # a leg's report may be overdue now
                out += self._continue_flatten()
            return out + [(WATCHDOG, self.account_status())] if self.telemetry else out
        if isinstance(msg, CancelOrder):
            return out + [(ROUTER, msg)]
        if isinstance(msg, (OrderSubmitted, OrderAccepted, OrderRejected, OrderCancelled, Fill)):
            return out + self._on_order_event(msg)
        if isinstance(msg, StrategyStatus):
            if msg.atr > 0:
                self.atr[msg.instrument] = msg.atr
            return out
        if isinstance(msg, Shutdown):  # strategies stop for good; market data may flow on for the closes
            out += self._set_hold("shutdown", RiskState.HALTED, f"shutting down: {msg.reason}")
            return out + self.start_flatten(msg.reason)
        if isinstance(msg, Flatten):
            return out + self.start_flatten(msg.reason)
        if isinstance(msg, Pause):
            return out + self._set_hold("operator", RiskState.REDUCING, f"paused: {msg.reason}")
        if isinstance(msg, Resume):
            return out + self._set_hold("operator", None, f"resumed: {msg.reason}")
        if isinstance(msg, SetArmed):
            return out + self.set_armed(msg.armed, msg.reason)
        if isinstance(msg, ReconcileResult):
            if msg.ok:
                return out + self._set_hold("reconcile", None, "reconciled")
            held = self._set_hold("reconcile", RiskState.HALTED, f"reconciliation failed: {msg.detail}")
            if not msg.final:
                return out + held  # checked again in a moment: halted meanwhile, the alert waits
            return out + held + [
                (WATCHDOG, Alert("critical", "reconcile-mismatch", f"reconciliation failed: {msg.detail}", self.now_ns))]
        raise RejectedMessage(f"risk: unexpected message {type(msg).__name__}")

    def set_armed(self, armed: bool, reason: str) -> Out:
        """Release the ``unarmed`` hold, or set it (HALTED) and cancel every working strategy order.
        Open positions are not flattened: disarming is not an exit."""
        if armed:
            return self._set_hold(UNARMED_HOLD, None, f"armed ({reason})")
        out = self._set_hold(UNARMED_HOLD, RiskState.HALTED, f"unarmed ({reason})")
        for o in self.book.working():
            if o.intent.strategy_id != self.strategy_id:
                out.append((ROUTER, CancelOrder(o.intent.client_order_id, o.intent.strategy_id, self.now_ns,
                                                "disarmed")))
        return out

    # ------------------------------------------------------------------ orders
    def _on_intent(self, intent: OrderIntent) -> Out:
        if intent.client_order_id in self.book:
            return [(intent.strategy_id, OrderDenied(intent.client_order_id, intent.strategy_id,
                                                     "duplicate client order id", self.now_ns))]
        if intent.qty <= 0:
            return self._deny(intent, f"quantity {intent.qty} <= 0")
        position = self.portfolio.qty(intent.instrument)
        signed = intent.side.sign * intent.qty
        batch = self._batch or self._new_batch()
        working = batch.working
        if intent.reduce_only:
            # a close is judged against what other working closes on its side leave of the position,
            # so two actors closing the same position (hedge reduce + risk flatten) cannot flip it;
            # a bracket's stop and target are one close (the owner cancels one when the other fills)
            pending = 0 if is_bracket_exit(intent) else sum(
                o.intent.side.sign * o.leaves_qty for o in self.book.open_orders(intent.instrument)
                if o.intent.reduce_only and o.intent.side is intent.side and not is_bracket_exit(o.intent))
            reducing = is_reducing(position + pending, signed)
        else:
            # an entry "reduces" only if it still shrinks the position after every working order on
            # its side has filled: a sell against a long that working sells already cover opens a short
            buy_w, sell_w = working.get(intent.instrument, (0, 0))
            reducing = is_reducing(position + (buy_w if signed > 0 else -sell_w), signed)
        if intent.reduce_only and not reducing and intent.purpose != "grid-tp":
            return self._deny(intent, f"reduce-only order would not reduce position {position}")
        if self.flattening and intent.strategy_id != self.strategy_id:
            return self._deny(intent, f"flattening ({self.flattening}): risk closes the positions itself")
        if self.state is RiskState.HALTED and intent.strategy_id != self.strategy_id:
            return self._deny(intent, f"trading HALTED ({'; '.join(r for _, r in self.holds.values())})")
        if self.state is RiskState.REDUCING and not reducing:
            return self._deny(intent, "trading REDUCING: only orders that shrink a position")
        if not reducing and not self.calendar.can_open(self.now_ns):
            return self._deny(intent, "outside the trading window (flat by 15:10 CT minus margin)")
        if intent.strategy_id != self.strategy_id:
            positions = batch.positions
            limits = self.limits
            after = dict(positions)
            after[intent.instrument] = after.get(intent.instrument, 0) + signed
            # a hedge that lowers the net 1-ATR exposure is not blocked by the gross caps
            waived = net_atr_exposure(after, self.atr) < batch.exposure
            if waived:
                limits = self._waived
            check = (intent.instrument, signed, intent.reduce_only, waived)
            reason, _ = self._order_caps(check, batch.positions_key, batch.working_key, batch.atr_key)
            if reason is None and not reducing:
                # check_order on the worst case: every working order on the same side fills first
                # (open risk, exposure, stress loss at the marks)
                worst, worst_key = batch.worst_case(intent.instrument, signed > 0)
                reason, measured = self._order_caps(check, worst_key, (), batch.atr_key)
                if reason is None and measured and self.marks:
                    reason = check_stress(OrderCheck(intent.instrument, signed, intent.reduce_only), worst,
                                          self.marks, limits)
            if reason is None and not reducing and self.limits.sweep_guard:
                if batch.sweep is None:
                    batch.sweep = SweepBook(
                        positions, [_working_order(o.intent.instrument, o.intent.side.sign * o.leaves_qty, o.intent)
                                    for o in self.book.open_orders() if o.leaves_qty],
                        self.marks, self.atr, self.ledger, self.unrealized())
                reason = batch.sweep.check(_working_order(intent.instrument, signed, intent))
            if reason:
                return self._deny(intent, reason)
        self.book.add(intent)
        self._batch = None  # one more working order
        return [(ROUTER, intent)]

    def _order_caps(self, check: tuple[str, int, bool, bool], positions: tuple, working: tuple,
                    atr: tuple) -> tuple[str | None, bool]:
        """:func:`domain.risk_rules.order_caps` (the checks of :func:`domain.risk_rules.check_order`
        without prices) of ``check`` = (instrument, signed qty, reduce-only, gross caps waived)
        against positions, working quantities and ATR given as sorted item tuples, memoized: it is
        a pure function of them and the limits, and a grid re-proposes the same level against the
        same book many times while a cap denies it."""
        key = (check, positions, working, atr)
        got = self._caps.get(key)
        if got is None:
            if len(self._caps) >= _CAPS_KEPT:
                self._caps.clear()
            instrument, signed, reduce_only, waived = check
            got = self._caps[key] = order_caps(OrderCheck(instrument, signed, reduce_only), dict(positions),
                                               dict(working), dict(atr), self._waived if waived else self.limits)
        return got

    def _new_batch(self) -> _Batch:
        """:class:`_Batch` of the account as it is now (kept in :attr:`_batch`)."""
        positions = self.portfolio.net_positions()
        working = self.book.working_qty_map()  # {instrument: (buy, sell)} working, one pass over the book
        self._batch = _Batch(positions, working, tuple(sorted(positions.items())), tuple(sorted(working.items())),
                             tuple(sorted(self.atr.items())), net_atr_exposure(positions, self.atr))
        return self._batch

    def _on_order_event(self, ev: Any) -> Out:
        out: Out = []
        if self.legs_due:
            self.legs_due.pop(ev.client_order_id, None)  # the venue reported the leg
        order = self.book.get(ev.client_order_id)
        first_fill = isinstance(ev, Fill) and order is not None and not order.filled_qty
        if order is None and isinstance(ev, OrderAccepted) and ev.intent is not None:
            # a native bracket leg the venue placed when its entry (approved here with its
            # bracket) filled: a reduce-only exit, tracked like any working order from now on
            order = self.book.add(ev.intent, OrderStatus.SUBMITTED)
        if order is None and isinstance(ev, Fill):
            # a fill of an order we never approved (adopted at reconciliation): still a position change
            pass
        elif order is not None:
            if not order.apply(ev):
                return []  # duplicate fill
        if first_fill and order.intent.bracket is not None and not order.intent.reduce_only:
            # the venue places the entry's stop and target now (domain.orders.bracket_legs); until it
            # reports them, a flatten's close could fill beside a leg and open the other way
            for leg in bracket_leg_ids(ev.client_order_id):
                if leg not in self.book:
                    self.legs_due[leg] = (ev.instrument, ev.ts_ns + LEGS_REPORTED_NS)
        if isinstance(ev, Fill):
            effect = self.portfolio.apply_fill(ev)
            if effect is None:
                return []
            self.strategy_books.apply(ev)
            self.ledger.on_realized(effect.realized, effect.fee, effect.closed)
            self.marks.setdefault(ev.instrument, ev.price)
            out.append((EXPOSURE_TOPIC, ExposureUpdate(tuple(sorted(self.portfolio.net_positions().items())), ev.ts_ns)))
            self._track_contracts()
            out += self._check_account()
        if self.flattening:
            out += self._continue_flatten()
        self.book.prune_terminal()
        return out

    def _track_contracts(self) -> None:
        self.max_contracts_seen = max(self.max_contracts_seen, mini_equivalents(self.portfolio.net_positions()))

    # ------------------------------------------------------------------ account rules
    def _check_account(self) -> Out:
        """Mark the account to the last prices and act on every breached rule
        (:func:`domain.risk_rules.evaluate_account`). A print that moves nothing does not get here
        (:meth:`_arm_band`)."""
        unreal = self.portfolio.unrealized(self.marks)
        led = self.ledger
        self._track_equity(led.mark(unreal))
        out: Out = []
        breaches = evaluate_account(led, unreal)
        for b in breaches:
            out += self._apply_breach(b)
        if breaches:
            self._band = None
        else:
            self._arm_band()
        return out

    def _arm_band(self) -> None:
        """Set :attr:`_band` after an account check that found no breach: the unrealized P&L
        (cents) above the level where a rule would breach
        (:func:`domain.risk_rules.breach_free_above`) and below the nearest level at which an
        equity figure would move (a new intraday or all-time equity high, a lower headroom, a
        deeper drawdown). A mark inside it changes nothing, so the print path compares integer
        cents (positions' unrealized P&L in cents,
        :meth:`domain.portfolio.Position.unrealized_cents`) and returns. No band while a breach
        does not depend on the mark, an instrument's tick value is not whole cents, or before the
        first headroom."""
        self._band = None
        led = self.ledger
        free = breach_free_above(led)
        if free is None or self.min_headroom is None:
            return
        parts: dict[str, int] = {}
        for sym, pos in self.portfolio.positions.items():
            if pos.lots and sym in self.marks:
                cents = pos.unrealized_cents(self.marks[sym])
                if cents is None:
                    return
                parts[sym] = cents
        bal = led.balance
        low = max(math.floor(free * 100) + 1, math.ceil((self.min_headroom + led.floor - bal) * 100),
                  math.ceil((self.peak_equity - self.max_drawdown - bal) * 100))
        high = math.floor(min(led.intraday_peak_equity, self.peak_equity) * 100 - bal * 100)
        self._unreal_cents, self._unreal_total = parts, sum(parts.values())
        self._band = (led.version, low, high)

    def _track_equity(self, equity: Decimal) -> None:
        headroom = equity - self.ledger.floor
        if self.min_headroom is None or headroom < self.min_headroom:
            self.min_headroom = headroom
        if equity > self.peak_equity:
            self.peak_equity = equity
        elif self.peak_equity - equity > self.max_drawdown:
            self.max_drawdown = self.peak_equity - equity

    def _apply_breach(self, b: Breach) -> Out:
        hold = {Action.LIQUIDATE: ("failed", RiskState.HALTED),
                Action.FLATTEN_HALT_DAY: ("day", RiskState.HALTED),
                Action.FLATTEN_REDUCE_SESSION: ("session", RiskState.REDUCING),
                Action.REDUCE_DAY: ("day-reduce", RiskState.REDUCING)}.get(b.action, ("", RiskState.ACTIVE))
        if b.action in (Action.NOTIFY, Action.FLATTEN_ONCE):
            # the personal DLL's "Do Nothing" / "Liquidate": act once, no hold, trading goes on
            self.ledger.pdll_fired = True
            self.breaches.append((self.now_ns, b.rule, b.detail))
            out = [(WATCHDOG, Alert("warning", f"risk-{b.rule}", f"{b.rule} reached: {b.detail}", self.now_ns,
                                    "flattening every position (trading goes on)" if b.action.flatten
                                    else "none: notify only"))]
            return out + (self.start_flatten(b.rule) if b.action.flatten else [])
        if b.rule == "personal_dll":
            self.ledger.pdll_fired = True
        if hold[0] in self.holds:
            return []
        self.breaches.append((self.now_ns, b.rule, b.detail))
        if b.action is Action.LIQUIDATE:
            self.ledger.failed = True  # Topstep: the account failed; stays HALTED for good
        out = self._set_hold(hold[0], hold[1], f"{b.rule}: {b.detail}")
        level = "critical" if b.action is Action.LIQUIDATE else "warning"
        out.append((WATCHDOG, Alert(level, f"risk-{b.rule}", f"{b.rule} breached: {b.detail}", self.now_ns,
                                    BREACH_ACTIONS.get(b.action, ""))))
        if b.action is not Action.REDUCE_DAY:
            out += self.start_flatten(b.rule)
        return out

    # ------------------------------------------------------------------ time
    def _advance(self, ts: int) -> Out:
        """Move event time to ``ts`` (epoch ns); the calendar's rules run when it can change them."""
        if ts <= self.now_ns:
            return []
        self.now_ns = ts
        if ts < self._time_stable_until:
            return []
        out = self._on_time()
        boundary = next_time_of_day_ns(ts, _DAY_BOUNDARIES)
        flatten = self.calendar.flatten_at_ns(self.ledger.trading_day)
        self._time_stable_until = flatten if ts < flatten < boundary else boundary
        return out

    def _on_time(self) -> Out:
        out: Out = []
        day = trading_day(self.now_ns)
        if day != self.ledger.trading_day:
            if self.portfolio.net_positions():
                self.flat_violations.append(self.now_ns)
            closed = self.ledger.roll_day(day, sub_session_of(self.now_ns))
            self.strategy_books.roll_day(self.marks)
            if closed is not None:
                self.day_history.append((closed[0].isoformat(), closed[1], closed[2]))
            for hold in ("day", "day-reduce", "session", "flat-time"):
                out += self._set_hold(hold, None, "new trading day")
            # a breach that still stands (the trailing kill switch is measured from the all-time
            # high-water mark, not the day) holds again at once, before any order can pass
            out += self._check_account()
        else:
            sub = sub_session_of(self.now_ns)
            if sub != self.ledger.sub_session:
                self.ledger.roll_sub_session(sub)
                out += self._set_hold("session", None, "new sub-session")
                out += self._check_account()
        if self.calendar.must_be_flat(self.now_ns):
            if "flat-time" not in self.holds:
                out += self._set_hold("flat-time", RiskState.REDUCING, "flat by 15:10 CT")
                out += self.start_flatten("session flat time")
        elif "flat-time" in self.holds:
            out += self._set_hold("flat-time", None, "session open")
        return out

    # ------------------------------------------------------------------ flatten
    def start_flatten(self, reason: str) -> Out:
        """Cancel every working order, then close each position (reduce-only market orders)."""
        self.flattening = reason
        self.cancel_requested.clear()
        return self._continue_flatten()  # cancels the strategy orders first

    def _cancel_strategy_orders(self) -> Out:
        """Cancel every open strategy order not already asked to cancel during this flatten."""
        out: Out = []
        for o in self.book.open_orders():
            if o.intent.strategy_id != self.strategy_id and o.client_order_id not in self.cancel_requested:
                self.cancel_requested.add(o.client_order_id)
                out.append((ROUTER, CancelOrder(o.client_order_id, o.intent.strategy_id, self.now_ns,
                                                f"flatten: {self.flattening}")))
        return out

    def _continue_flatten(self) -> Out:
        out: Out = self._cancel_strategy_orders()  # orders that raced the start of the flatten
        positions = self.portfolio.net_positions()
        awaited = self._legs_awaited(out) if self.legs_due else ()
        for sym, qty in positions.items():
            if self.book.open_orders(sym) or sym in awaited:
                continue  # wait for cancels (or the working close, or the legs' reports) to settle
            intent = OrderIntent(client_order_id=self.ids.next_id(self.strategy_id), strategy_id=self.strategy_id,
                                 instrument=sym, side=Side.for_qty(-qty), qty=abs(qty), order_type=OrderType.MARKET,
                                 ts_ns=self.now_ns, reduce_only=True, purpose=f"flatten: {self.flattening}")
            self.book.add(intent)
            out.append((ROUTER, intent))
        if not positions and not self.book.open_orders():
            self.flattening = None
        return out

    def _legs_awaited(self, out: Out) -> set[str]:
        """Instruments with a native bracket leg still to be reported (:attr:`legs_due`). A leg past
        its time is no longer awaited and a warning goes to the watchdog on ``out`` (the venue did
        not place it, or its report was lost: the reconciler compares the books)."""
        for leg, (sym, until) in list(self.legs_due.items()):
            if self.now_ns > until:
                del self.legs_due[leg]
                out.append((WATCHDOG, Alert("warning", "risk-legs-missing",
                                            f"native bracket leg {leg} ({sym}) not reported by the venue within "
                                            f"{LEGS_REPORTED_NS // 1_000_000_000} s of its entry's fill",
                                            self.now_ns, f"flattening {sym} without waiting for it")))
        return {sym for sym, _ in self.legs_due.values()}

    def account_status(self) -> AccountStatus:
        """Telemetry snapshot for the watchdog / metrics."""
        unreal = self.unrealized()
        equity = self.ledger.balance + unreal
        positions = self.portfolio.net_positions()
        working = self.book.working()
        by_strategy: dict[str, int] = {name: 0 for name in self.strategy_books.names}
        for o in working:
            by_strategy[o.intent.strategy_id] = by_strategy.get(o.intent.strategy_id, 0) + 1
        return AccountStatus(self.now_ns, self.state, self.ledger.balance, equity, unreal, self.ledger.day_pnl(unreal),
                             self.ledger.floor, equity - self.ledger.floor, self.peak_equity - equity,
                             self.portfolio.realized, self.portfolio.fees, len(working),
                             tuple(sorted(positions.items())), net_atr_exposure(positions, self.atr),
                             self.strategy_books.figures(self.marks), tuple(sorted(by_strategy.items())))

    def day_table(self) -> list[tuple[str, Decimal, int]]:
        """Net P&L per trading day (day roll at 17:00 CT): ``(ISO day, realized - fees, fills)`` of
        every closed day, then the current day (its unrealized P&L included, 0 when flat)."""
        return [*self.day_history, (self.ledger.trading_day.isoformat(), self.ledger.day_pnl(self.unrealized()),
                                    self.ledger.day_fills)]

    @property
    def is_flat(self) -> bool:
        return not self.portfolio.net_positions() and not self.book.open_orders()

    # ------------------------------------------------------------------ persistence
    def mirror_fingerprint(self) -> tuple:
        """Cheap value that changes whenever :meth:`snapshot` (apart from ``now_ns``), the state or
        the holds change: the persistence hook skips the Redis write while it stays the same.
        Positions change only through fills, which :attr:`Portfolio.fills_applied` counts."""
        return (tuple(self.ledger.to_dict().items()), self.state, tuple(self.holds.items()),
                self.portfolio.fills_applied, self.max_contracts_seen, self.min_headroom, self.peak_equity,
                self.max_drawdown, len(self.flat_violations), len(self.breaches), tuple(self.atr.items()),
                len(self.day_history))

    def snapshot(self) -> dict:
        return {"ledger": self.ledger.to_dict(), "portfolio": self.portfolio.to_dict(),
                "holds": {k: [s.value, r] for k, (s, r) in self.holds.items() if k not in PROCESS_HOLDS},
                "now_ns": self.now_ns, "max_contracts_seen": str(self.max_contracts_seen),
                "min_headroom": str(self.min_headroom) if self.min_headroom is not None else None,
                "peak_equity": str(self.peak_equity), "max_drawdown": str(self.max_drawdown),
                "flat_violations": self.flat_violations, "breaches": [list(b) for b in self.breaches[-100:]],
                "atr": dict(self.atr),
                "day_history": [[d, str(p), n] for d, p, n in self.day_history],
                "strategy_books": self.strategy_books.to_dict()}

    def restore(self, d: dict) -> None:
        """Load a :meth:`snapshot`; the ``reconcile`` hold set at construction stays."""
        self.ledger = AccountLedger.from_dict(self.limits, d["ledger"])
        self._time_stable_until, self._band, self._batch = 0, None, None
        self.portfolio = Portfolio.from_dict(d["portfolio"])
        for k, (s, r) in d.get("holds", {}).items():
            self.holds[k] = (RiskState(s), r)
        self.now_ns = max(self.now_ns, int(d.get("now_ns", 0)))
        self.max_contracts_seen = Decimal(d.get("max_contracts_seen", "0"))
        self.min_headroom = Decimal(d["min_headroom"]) if d.get("min_headroom") else None
        self.peak_equity = Decimal(d.get("peak_equity", str(self.limits.starting_balance)))
        self.max_drawdown = Decimal(d.get("max_drawdown", "0"))
        self.flat_violations = list(d.get("flat_violations", []))
        self.breaches = [tuple(b) for b in d.get("breaches", [])]
        self.day_history = [(str(x), Decimal(p), int(n)) for x, p, n in d.get("day_history", [])]
        if d.get("strategy_books"):
            self.strategy_books = StrategyBooks.from_dict(d["strategy_books"])
        # the last ATR per instrument: without it checks 2-5 of check_order are skipped until the
        # strategy's next StrategyStatus, which a restored grid sends only on its next bar
        self.atr.update({k: float(v) for k, v in d.get("atr", {}).items() if float(v) > 0})
        self._set_hold("reconcile", self.holds.get("reconcile", (None, ""))[0], "restored")


def _working_order(instrument: str, signed_qty: int, intent: OrderIntent) -> WorkingOrder:
    """The sweep guard's view of an order: its limit price (LIMIT), stop price (STOP) or none (MARKET)."""
    price = intent.limit_price if intent.order_type is OrderType.LIMIT else intent.stop_price
    return WorkingOrder(instrument, signed_qty, intent.order_type.value, price)
