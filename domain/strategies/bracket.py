"""One bracketed trade at a time: entry, protective stop and target, exits (shared by the
``regime_vwap`` and ``ml_scalper`` strategies; docs/strategies/regime.md, "Orders", and
docs/decisions/0019-native-brackets.md).

:class:`BracketTrader` is a mixin for a single-instrument strategy handler. The trade in progress
is a JSON-safe dict (``self.trade``, persisted in the strategy's snapshot)::

    entry, dir (+1 long / -1 short), qty, stop_ticks, target_ticks, tag (purpose suffix, e.g.
    "; regime=bull"), exit_prefix ("regime-exit"), stop, target, exit (client order ids or None),
    entry_price (average of the entry's fills, points), filled, filled_ts, pnl (dollars, str),
    native (bool); purpose, entry_leaves (contracts of the entry still working), stop_qty /
    target_qty (contracts each protective order covers), stop_px / target_px (points), old
    ({client order id: "stop"/"target"} replaced and being cancelled), margin_retry (bool),
    exiting (why a market exit was asked, or None)

- :meth:`open_trade` sends a market entry; with native brackets (``self.native_ok``) it carries a
  :class:`domain.messages.Bracket` and the venue places the legs on the fill (``OrderAccepted``
  with the leg, :meth:`_on_accepted`); otherwise the strategy sends the stop and target itself on
  the fill (:meth:`_cover`, a managed OCO).
- When one leg fills, the other goes: the venue cancels it (native) or the strategy does (managed).
- Legs not confirmed ``native_leg_timeout_s`` after the entry's fill, or a protective order risk
  denies or the venue rejects: the legs are cancelled and the position exits at market.
- A venue that refuses native brackets (ProjectX Position Brackets mode) switches the strategy to
  managed brackets for good, with a warning alert.
- :meth:`exit_now` closes at market (time-out or signal exits): the legs are cancelled first, then
  the reduce-only market exit goes (a leg left working could fill after the exit and open a
  position); the position is without its stop until that market order's fill. With
  ``keep_stop=True`` (a reversal, docs/strategies/scalper.md "Reversal") only the target is
  cancelled: the stop works until the close has filled and is cancelled then, so the position is
  never without a stop; if the stop and the close both fill (one print reaching both), the excess
  is closed at market.

Partial fills (seed 003 "Order Executor", "Handle partial fills"; sizes in contracts):

- The protective stop and target always cover exactly the position: on each part of the entry that
  fills (``Fill.leaves_qty`` > 0), and when a leg fills in part, :meth:`_cover` replaces an order of
  the wrong size with one of the position's size under a new client order id (no modify message
  exists between the actors). The new stop goes out *before* the old one is cancelled (never a
  moment without a stop; risk judges each bracket exit against the position alone,
  ``domain.risk.BRACKET_EXITS``); an old target is cancelled before its replacement (two targets
  never work at once). Prices stay those of the first fill: ``stop_ticks`` / ``target_ticks``
  from it.
- A native bracket whose entry or leg fills in part becomes a managed one for that trade: the
  gateway's sizing of the legs on a partial fill is not documented (docs/projectx-gateway.md), so
  the strategy places its own stop and target of the filled size first, then cancels the venue's
  legs (or the leg of the wrong size).
- If two closing orders both fill (a replaced stop and its replacement, a stop and a market close,
  a sibling that filled before its cancel arrived), the position is over-closed: what still works
  is cancelled and the excess closes at market.
- Orphans: when the position is flat, every other order of the trade is cancelled (the entry's
  remainder too). Every order the trade cancels stays tracked (``old``) until its cancel, or a
  fill that beat it, is reported, and the trade ends only then: a live venue may report the fill of
  an order after our cancel left, and that fill must find the trade (a reversal's new side waits
  for it too). A native leg's sibling is the venue's OCO and is not waited for.
- A fill of no order of the trade in progress (a late fill the venue reported after the trade
  ended, an order a restart forgot) is closed at market under a trade of its own (``exiting``
  "late fill"); a new trade's entry not filled yet is cancelled then.
- A market exit refused or cancelled while a position is held: in the trade's direction the stop
  and target go back on and the next bar decides again (a rate limit must not leave the position
  naked until then); an over-closed or late-fill position is sent to market again, at most
  :data:`BracketTrader.EXIT_ATTEMPTS` times, then a critical alert (risk's flatten remains).

Rejections (seed 003 "Error Handling"): an entry refused for insufficient margin
(:func:`is_insufficient_margin`) is sent once more at :func:`margin_retry_qty` contracts (half,
at least 1; a 1-contract entry is not retried), under a new client order id, only after the
rejection (terminal) arrived; the retry's own rejection is final. Any other rejection is not
retried.

Every rejection, a fill of no working order, a protective order refused and a market exit gone is
reported as a warning :class:`domain.messages.Alert` to the watchdog, keyed
``<strategy id>-<what happened>`` (:meth:`BracketTrader._alert`): logged at WARNING by the
watchdog's alerter and sent to Slack when a webhook is set (de-duplicated per key and trading day,
infra/alerts.py), or logged by the backtest's dispatcher, which has no watchdog.

The host class provides ``strategy_id``, ``instrument``, ``spec`` (instrument spec), ``ids``,
``book`` (:class:`domain.strategies.base.OwnPosition`), ``risk_state``, ``counters`` (with ``entries``, ``stops``,
``targets``, ``exits``, ``denied``, ``flattened``, ``legs_missing``), ``native_ok``, ``p`` (params
with ``native_leg_timeout_s``), and :meth:`_on_trade_closed` (the trade's net P&L in dollars).
Prices in points, sizes in contracts, times epoch ns UTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.handler import RISK, WATCHDOG, Out
from domain.messages import (Alert, Bracket, CancelOrder, ClockTick, ExposureUpdate, Fill, OrderAccepted,
                             OrderCancelled, OrderDenied, OrderIntent, OrderRejected, OrderSubmitted, OrderType,
                             RiskStateChanged, Side, StrategyStatus, TradeTick)
from domain.orders import bracket_leg_ids, bracket_parent

MARGIN_REASONS = ("insufficientfunds", "insufficient funds", "insufficient margin")
"""Lower-case texts of a rejection reason that mean the account lacks the margin for the order."""

TRADE_KEYS = frozenset({"entry", "dir", "qty", "stop_ticks", "target_ticks", "tag", "exit_prefix", "stop", "target",
                        "exit", "entry_price", "filled", "pnl", "native", "filled_ts", "purpose", "entry_leaves",
                        "stop_qty", "target_qty", "stop_px", "target_px", "old", "margin_retry", "exiting",
                        "exit_attempts"})
"""The trade dict's own keys; any other key is the host's (``open_trade``'s ``extra``)."""


def is_insufficient_margin(reason: str) -> bool:
    """True when a venue's rejection means insufficient margin (seed 003 "Error Handling",
    "Insufficient margin"): ProjectX ``Order/place`` errorCode 3 ``InsufficientFunds``
    (docs/projectx-gateway.md section 4; :class:`infra.projectx.broker.ProjectXBroker` words the
    reason ``"InsufficientFunds: <errorMessage>"``, the sandbox answers it for an account with
    ``margin_contracts``), or any reason saying "insufficient funds" / "insufficient margin" (case
    ignored). A request the gateway never processed (``not placed (...)``) is not one."""
    r = reason.lower()
    return not r.startswith("not placed") and any(m in r for m in MARGIN_REASONS)


def margin_retry_qty(qty: int) -> int | None:
    """Contracts of the one retry after a margin rejection of a ``qty``-contract entry: half,
    rounded down, at least 1; None for a 1-contract entry (nothing smaller to try)."""
    return max(1, qty // 2) if qty > 1 else None


def _new_trade(entry: str | None, direction: int, qty: int, tag: str, exit_prefix: str, purpose: str,
               **fields: Any) -> dict[str, Any]:
    """A trade dict (module docstring) with every key of :data:`TRADE_KEYS` at its starting value
    (nothing working, nothing filled); ``fields`` overrides some and adds the host's own."""
    return {"entry": entry, "dir": direction, "qty": qty, "stop_ticks": 0, "target_ticks": 0, "tag": tag,
            "exit_prefix": exit_prefix, "stop": None, "target": None, "exit": None, "entry_price": None,
            "filled": 0, "pnl": "0", "native": False, "filled_ts": 0, "purpose": purpose, "entry_leaves": 0,
            "stop_qty": 0, "target_qty": 0, "stop_px": None, "target_px": None, "old": {}, "margin_retry": False,
            "exiting": None, **fields}


class BracketTrader:
    """Mixin: the order side of one bracketed trade at a time (module docstring)."""

    trade: dict[str, Any] | None

    def _on_trade_closed(self, t: dict[str, Any], pnl: Decimal) -> None:
        """Called once when the trade ``t`` is over, with its net P&L (dollars, fees included)."""

    def bracket_event(self, msg: Any) -> Out | None:
        """The trade's share of a handler's dispatch: its order events, the account's exposure,
        risk's state and the ticks and clock ticks that time the legs' confirmation. Returns None
        for any other message (the host handles it)."""
        if isinstance(msg, Fill):
            return self._on_fill(msg)
        if isinstance(msg, (OrderDenied, OrderRejected, OrderCancelled)):
            return self._on_order_gone(msg)
        if isinstance(msg, OrderAccepted):
            return self._on_accepted(msg)
        if isinstance(msg, ExposureUpdate):
            return self._on_exposure(msg)
        if isinstance(msg, RiskStateChanged):
            self.risk_state = msg.state
            return []
        if isinstance(msg, (TradeTick, ClockTick)):
            return self._check_legs(msg.ts_ns) if self.trade is not None else []
        if isinstance(msg, (OrderSubmitted, StrategyStatus)):
            return []
        return None

    # ------------------------------------------------------------------ entries
    def _intent(self, side: Side, qty: int, kind: OrderType, ts: int, purpose: str, *, price: Decimal | None = None,
                reduce_only: bool = False, bracket: Bracket | None = None) -> OrderIntent:
        return OrderIntent(client_order_id=self.ids.next_id(self.strategy_id), strategy_id=self.strategy_id,
                           instrument=self.instrument, side=side, qty=qty, order_type=kind, ts_ns=ts,
                           limit_price=price if kind is OrderType.LIMIT else None,
                           stop_price=price if kind is OrderType.STOP else None, reduce_only=reduce_only,
                           purpose=purpose, bracket=bracket)

    def open_trade(self, direction: int, qty: int, stop_ticks: int, target_ticks: int, ts: int, purpose: str,
                   tag: str = "", exit_prefix: str = "exit", **extra: Any) -> Out:
        """A market entry (``direction`` +1 buy / -1 sell, ``qty`` contracts) with its stop and
        target ``stop_ticks`` / ``target_ticks`` from the fill; ``purpose`` + ``tag`` is its
        purpose (``tag`` also ends the legs' and exits' purposes); ``extra`` goes into the trade."""
        out = self._send_entry(direction, qty, stop_ticks, target_ticks, ts, purpose, tag, exit_prefix, extra)
        self.counters["entries"] += 1
        return out

    def _send_entry(self, direction: int, qty: int, stop_ticks: int, target_ticks: int, ts: int, purpose: str,
                    tag: str, exit_prefix: str, extra: dict[str, Any]) -> Out:
        intent = self._intent(Side.BUY if direction > 0 else Side.SELL, qty, OrderType.MARKET, ts, purpose + tag,
                              bracket=Bracket(stop_ticks, target_ticks) if self.native_ok else None)
        self.trade = _new_trade(intent.client_order_id, direction, qty, tag, exit_prefix, purpose,
                                stop_ticks=stop_ticks, target_ticks=target_ticks, native=self.native_ok,
                                entry_leaves=qty, **extra)
        return [(RISK, intent)]

    def _alert(self, what: str, text: str, ts_ns: int, action: str = "", level: str = "warning") -> Out:
        """An :class:`Alert` to the watchdog (``level`` warning unless given), keyed
        ``<strategy id>-<what>``; ``text`` is prefixed with the strategy id."""
        return [(WATCHDOG, Alert(level, f"{self.strategy_id}-{what}", f"{self.strategy_id}: {text}", ts_ns, action))]

    def _retry_smaller(self, t: dict[str, Any], msg: OrderRejected) -> Out | None:
        """The entry was refused for margin (:func:`is_insufficient_margin`): the same entry once
        more at :func:`margin_retry_qty` contracts, a new client order id, with a warning alert;
        None when there is no retry (already retried, or 1 contract), the rejection then being
        final."""
        qty = margin_retry_qty(t["qty"])
        if t.get("margin_retry") or qty is None:
            return None
        extra = {k: v for k, v in t.items() if k not in TRADE_KEYS}
        out = self._send_entry(t["dir"], qty, t["stop_ticks"], t["target_ticks"], msg.ts_ns, t.get("purpose", "entry"),
                               t.get("tag", ""), t.get("exit_prefix", "exit"), extra)
        assert self.trade is not None
        self.trade["margin_retry"] = True
        self.counters["margin_retries"] = self.counters.get("margin_retries", 0) + 1
        return self._alert("margin-retry", f"entry {t['entry']} ({t['qty']} contracts) rejected for margin "
                           f"({msg.reason})", msg.ts_ns,
                           f"retried once at {qty} contracts as {self.trade['entry']}") + out

    # ------------------------------------------------------------------ order events
    def _on_fill(self, fill: Fill) -> Out:
        if not self.book.apply(fill):
            return []
        t = self.trade
        coid = fill.client_order_id
        if t is not None and coid == t["entry"]:
            return self._on_entry_fill(t, fill)
        if t is not None and t["entry_price"] is not None and (
                coid in (t["stop"], t["target"], t["exit"]) or coid in (t.get("old") or {})):
            return self._on_exit_fill(t, fill)
        return self._late_fill(fill)

    def _late_fill(self, fill: Fill) -> Out:
        """A fill of no order of the trade in progress (an order cancelled earlier that filled
        first at the venue, or one a restart forgot): whatever position it leaves is closed at market
        under a trade of its own (``exiting`` "late fill"), cancelling the pending entry of a trade
        not filled yet. Nothing to do when it left the strategy flat."""
        pos = self.book.qty
        out = self._alert("late-fill", f"fill of {fill.client_order_id} ({fill.side.value} {fill.qty} @ {fill.price}) "
                          f"belongs to no working order of the trade; position now {pos}", fill.ts_ns,
                          "none: flat" if pos == 0 else f"closing {pos} at market")
        t = self.trade
        if pos == 0:
            if t is not None and t["entry_price"] is not None:
                return out + self._settle(fill.ts_ns, False)
            return out
        if t is not None and t["entry_price"] is None:  # a new trade's entry is on its way: not any more
            out.append((RISK, CancelOrder(t["entry"], self.strategy_id, fill.ts_ns, "late fill of an earlier order")))
        if t is None or t["entry_price"] is None:
            self.trade = _new_trade(t["entry"] if t else None, 1 if pos > 0 else -1, abs(pos), t["tag"] if t else "",
                                    t["exit_prefix"] if t else "exit", "late fill", entry_price=str(fill.price),
                                    filled=abs(pos), pnl=str(-fill.fee), filled_ts=fill.ts_ns,
                                    entry_leaves=t["entry_leaves"] if t else 0, margin_retry=True)
        return out + self._exit_position(fill.ts_ns, "late fill")

    def _exit_position(self, ts: int, why: str) -> Out:
        """Cancel the trade's protection and close the whole position at market."""
        t = self.trade
        assert t is not None
        out = self._cancel_protection(ts, why)
        t["exiting"] = why
        return out + self._market_exit(ts, why)

    def _on_entry_fill(self, t: dict[str, Any], fill: Fill) -> Out:
        """A part or all of the entry filled: protect what is held (module docstring)."""
        before = t["filled"]
        t["filled"] = before + fill.qty
        t["entry_leaves"] = fill.leaves_qty
        t["entry_price"] = str(fill.price if not before else
                               (Decimal(t["entry_price"]) * before + fill.price * fill.qty) / t["filled"])
        t["pnl"] = str(Decimal(t["pnl"]) - fill.fee)
        if not before:
            t["filled_ts"] = fill.ts_ns
        if t.get("exit") or t.get("exiting"):
            return []  # leaving already: a part that filled late is closed when the exit has filled
        if t.get("native"):
            if not before and not fill.leaves_qty:
                return []  # filled whole: the venue places the legs, OrderAccepted follows
            # filled in parts: this trade's protection is sized by the strategy from now on
            t["native"] = False
            legs = bracket_leg_ids(t["entry"])
            old = t.setdefault("old", {})
            for k in ("stop", "target"):
                if t[k] in legs:
                    t[k] = None
            out = self._cover(fill.ts_ns)  # our own stop first, then the venue's legs go
            for leg, kind in zip(legs, ("stop", "target")):
                old[leg] = kind
                out.append((RISK, CancelOrder(leg, self.strategy_id, fill.ts_ns, "bracket resized: entry filled in parts")))
            return out
        return self._cover(fill.ts_ns)

    def _on_exit_fill(self, t: dict[str, Any], fill: Fill) -> Out:
        """The stop, the target, a market exit (or a replaced leg in a race) filled, whole or in part."""
        coid = fill.client_order_id
        old = t.setdefault("old", {})
        role = ("stop" if coid == t["stop"] else "target" if coid == t["target"] else
                "exit" if coid == t["exit"] else old.get(coid, "exit"))
        native_leg = bool(t.get("native")) and coid in (t["stop"], t["target"])
        entry = Decimal(t["entry_price"])
        gross = (fill.price - entry) * -fill.side.sign * fill.qty * self.spec.point_value
        t["pnl"] = str(Decimal(t["pnl"]) + gross - fill.fee)
        if not fill.leaves_qty:  # that order is done
            self.counters[{"stop": "stops", "target": "targets"}.get(role, "exits")] += 1
            for k in ("stop", "target", "exit"):
                if t[k] == coid:
                    t[k] = None
            old.pop(coid, None)
        elif coid == t["stop"]:
            t["stop_qty"] = fill.leaves_qty
        elif coid == t["target"]:
            t["target_qty"] = fill.leaves_qty
        pos = self.book.qty
        if pos == 0:
            return self._settle(fill.ts_ns, native_leg)
        if (pos > 0) != (t["dir"] > 0):
            # over-closed (two closing orders filled): cancel what still works, close the excess
            return self._exit_position(fill.ts_ns, "over-closed")
        # a part closed: the rest stays protected, at its size
        if native_leg:
            t["native"] = False  # the venue's OCO sibling keeps its size: resized by the strategy
        if t.get("exiting"):
            return [] if t["exit"] else self._market_exit(fill.ts_ns, t["exiting"])
        return self._cover(fill.ts_ns)

    def _settle(self, ts: int, native_leg: bool) -> Out:
        """The position is flat: every other order of the trade is cancelled (orphans: seed 003
        "Cancel orphaned orders on exit"); a native leg's sibling is the venue's to cancel. The trade
        ends now, or when the entry's remainder or a market exit still working is gone."""
        t = self.trade
        assert t is not None
        out: Out = []
        old = t.setdefault("old", {})
        for k in (("exit",) if native_leg else ("stop", "target", "exit")):
            if t[k]:
                out.append((RISK, CancelOrder(t[k], self.strategy_id, ts, "oco: sibling filled")))
                old[t[k]] = k  # tracked until its cancel (or a fill that beat it) arrives
        if t.get("entry_leaves"):
            out.append((RISK, CancelOrder(t["entry"], self.strategy_id, ts, "position closed")))
        t["stop"] = t["target"] = t["exit"] = None  # a native leg's sibling is the venue's OCO
        self._close_if_done()
        return out

    def _cancel_protection(self, ts: int, why: str) -> Out:
        """Cancel the stop, the target and the entry's remainder (an exit at market follows)."""
        t = self.trade
        assert t is not None
        out: Out = [(RISK, CancelOrder(t[k], self.strategy_id, ts, why)) for k in ("stop", "target") if t[k]]
        self._track_cancelled(("stop", "target"))
        if t.get("entry_leaves") and t["filled"]:
            out.append((RISK, CancelOrder(t["entry"], self.strategy_id, ts, why)))
        return out

    def _track_cancelled(self, roles: tuple[str, ...]) -> None:
        """The trade's orders in ``roles`` are being cancelled: kept in ``old`` until their cancel,
        or a fill that beat it, arrives (the trade does not end before), and cleared from their
        roles. Only orders the trade knows to exist are tracked (a native leg never reported is not)."""
        t = self.trade
        assert t is not None
        old = t.setdefault("old", {})
        for k in roles:
            if t[k]:
                old[t[k]] = k
            t[k] = None

    def _cover(self, ts: int) -> Out:
        """A managed OCO sized to the position: a protective STOP and a LIMIT target, reduce-only,
        ``|position|`` contracts each, ``stop_ticks`` / ``target_ticks`` from the first fill's price
        (points; they do not move when later parts fill elsewhere). An order of another size is
        replaced under a new client order id: a new stop before the old one's cancel, an old
        target's cancel before the new target (module docstring, "Partial fills")."""
        t = self.trade
        qty = self.book.qty
        if t is None or qty == 0 or (qty > 0) != (t["dir"] > 0) or t.get("exit") or t.get("exiting"):
            return []
        qty = abs(qty)
        d = t["dir"]
        tick = self.spec.tick_size
        first = Decimal(t["entry_price"])
        if t.get("stop_px") is None:
            t["stop_px"] = str(first - d * t["stop_ticks"] * tick)
        if t.get("target_px") is None:
            t["target_px"] = str(first + d * t["target_ticks"] * tick)
        exit_side = Side.SELL if d > 0 else Side.BUY
        tag = t.get("tag", "")
        old = t.setdefault("old", {})
        out: Out = []
        if not t["stop"] or t.get("stop_qty", qty) != qty:
            stop = self._intent(exit_side, qty, OrderType.STOP, ts, "bracket-stop" + tag,
                                price=Decimal(t["stop_px"]), reduce_only=True)
            prev, t["stop"], t["stop_qty"] = t["stop"], stop.client_order_id, qty
            out.append((RISK, stop))
            if prev:
                old[prev] = "stop"
                out.append((RISK, CancelOrder(prev, self.strategy_id, ts, f"bracket resized to {qty}")))
        if not t["target"] or t.get("target_qty", qty) != qty:
            prev = t["target"]
            if prev:
                old[prev] = "target"
                out.append((RISK, CancelOrder(prev, self.strategy_id, ts, f"bracket resized to {qty}")))
            target = self._intent(exit_side, qty, OrderType.LIMIT, ts, "bracket-target" + tag,
                                  price=Decimal(t["target_px"]), reduce_only=True)
            t["target"], t["target_qty"] = target.client_order_id, qty
            out.append((RISK, target))
        return out

    def _on_accepted(self, msg: OrderAccepted) -> Out:
        """A native bracket leg of the trade's entry is working at the venue: remember it (its
        size, contracts, and price, points)."""
        t = self.trade
        if (t is not None and t.get("native") and msg.intent is not None
                and bracket_parent(msg.client_order_id) == t["entry"]):
            stop = msg.intent.order_type is OrderType.STOP
            k = "stop" if stop else "target"
            t[k] = msg.client_order_id
            t[k + "_qty"] = msg.intent.qty
            t[k + "_px"] = str(msg.intent.stop_price if stop else msg.intent.limit_price)
        return []

    def _check_legs(self, ts: int) -> Out:
        """A native bracket's legs not both confirmed ``native_leg_timeout_s`` after the entry
        filled (a lost event, a degraded hub): cancel them and exit at market."""
        t = self.trade
        if (t is None or not t.get("native") or not t["filled"] or (t["stop"] and t["target"]) or t["exit"]
                or self.book.qty == 0 or ts - t["filled_ts"] < self.p.native_leg_timeout_s * 1e9):
            return []
        self.counters["legs_missing"] += 1
        out: Out = [(RISK, CancelOrder(leg, self.strategy_id, ts, "bracket legs not confirmed"))
                    for leg in bracket_leg_ids(t["entry"])]
        t["stop"] = t["target"] = None
        return out + self._market_exit(ts, "bracket legs not confirmed")

    def _on_order_gone(self, msg: Any) -> Out:
        t = self.trade
        if t is None:
            return []
        coid = msg.client_order_id
        if coid == t["entry"]:
            out: Out = []
            t["entry_leaves"] = 0
            if isinstance(msg, OrderDenied):
                self.counters["denied"] += 1
            if isinstance(msg, OrderRejected) and t.get("native") and ("Auto OCO" in msg.reason or "Position Brackets" in msg.reason):
                # the account does not take native brackets (ProjectX Position Brackets mode)
                self.native_ok = False
                out += self._alert("native-brackets", f"the venue refused a native bracket ({msg.reason}); "
                                   "brackets are managed by the strategy from now on", msg.ts_ns)
            elif isinstance(msg, OrderRejected) and not t["filled"]:
                if is_insufficient_margin(msg.reason):
                    retry = self._retry_smaller(t, msg)
                    if retry is not None:
                        return out + retry
                    out += self._alert("margin-rejected", f"entry {coid} ({t['qty']} contracts) rejected for margin "
                                       f"({msg.reason})", msg.ts_ns, "not retried again")
                else:  # seed 003 "Error Handling": an order rejected is reported, not retried
                    out += self._alert("entry-rejected", f"entry {coid} ({t['qty']} contracts) rejected: {msg.reason}",
                                       msg.ts_ns, "not retried")
            if self.book.qty == 0:
                if t["filled"]:
                    self._close_if_done()  # the remainder of an entry whose position already closed
                else:
                    self.trade = None  # never filled
            return out
        old = t.get("old") or {}
        if coid in old:
            old.pop(coid)  # a replaced or orphaned order is gone
            self._close_if_done()
            return []
        if coid in (t["stop"], t["target"]) and not isinstance(msg, OrderCancelled) and self.book.qty != 0:
            # a protective order refused: never hold the position without its stop
            self.counters["denied"] += 1
            out = self._alert("protection-refused", f"protective order {coid} refused: {getattr(msg, 'reason', '')}",
                              msg.ts_ns, "exit at market")
            other = t["target"] if coid == t["stop"] else t["stop"]
            t["stop" if coid == t["stop"] else "target"] = None
            if other:
                out.append((RISK, CancelOrder(other, self.strategy_id, msg.ts_ns, "oco: sibling refused")))
            self._track_cancelled(("stop", "target"))
            t["exiting"] = "protective order refused"
            if t.get("entry_leaves"):
                out.append((RISK, CancelOrder(t["entry"], self.strategy_id, msg.ts_ns, "protective order refused")))
            return out + self._market_exit(msg.ts_ns, "protective order refused")
        if coid == t["stop"]:
            t["stop"] = None
        elif coid == t["target"]:
            t["target"] = None
        elif coid == t["exit"]:
            t["exit"] = None
            if self.book.qty == 0:
                self._close_if_done()
            else:
                return self._exit_gone(msg)
        return []

    EXIT_ATTEMPTS = 3
    """Market exits of one trade sent in a row for a position the trade's stop cannot protect (an
    over-close, a late fill) before the strategy stops trying and alerts (risk's flatten remains)."""

    def _exit_gone(self, msg: Any) -> Out:
        """The market exit was refused or cancelled with a position still held. In the trade's
        direction the stop and target go back on (:meth:`_cover`) and the next bar decides again;
        an over-closed or late-fill position has no stop to go back to, so the exit is sent again,
        at most :data:`EXIT_ATTEMPTS` times, then a critical alert."""
        t = self.trade
        assert t is not None
        pos = self.book.qty
        why = t.get("exiting") or "exit"
        gone = f"market exit {msg.client_order_id} gone ({getattr(msg, 'reason', type(msg).__name__)}); position {pos}"
        if (pos > 0) == (t["dir"] > 0) and t.get("stop_px") is not None and why not in ("over-closed", "late fill"):
            t["exiting"] = None
            return self._alert("exit-gone", gone, msg.ts_ns, "stop and target placed again") + self._cover(msg.ts_ns)
        t["exit_attempts"] = t.get("exit_attempts", 1) + 1
        if t["exit_attempts"] > self.EXIT_ATTEMPTS:
            return self._alert("unprotected", f"{pos} {self.instrument} held without a stop; "
                               f"{self.EXIT_ATTEMPTS} market exits failed ({why})", msg.ts_ns,
                               "none: risk's flatten or the operator must close it", level="critical")
        return self._alert("exit-gone", gone, msg.ts_ns, "market exit sent again") + self._market_exit(msg.ts_ns, why)

    def _close_if_done(self) -> None:
        """Close a flat trade once neither its entry's remainder nor a market exit still works."""
        t = self.trade
        if (t is not None and self.book.qty == 0 and not t.get("entry_leaves") and not t["exit"]
                and not t.get("old")):
            self._close_trade()

    def _market_exit(self, ts: int, why: str) -> Out:
        t = self.trade
        if t is None or self.book.qty == 0 or t["exit"]:
            return []
        exit_ = self._intent(Side.SELL if self.book.qty > 0 else Side.BUY, abs(self.book.qty), OrderType.MARKET, ts,
                             f"{t.get('exit_prefix', 'exit')}: {why}{t.get('tag', '')}", reduce_only=True)
        t["exit"] = exit_.client_order_id
        return [(RISK, exit_)]

    def exit_now(self, ts: int, why: str, keep_stop: bool = False) -> Out:
        """Close the trade at market: cancel its working legs first (and the entry's remainder),
        then the market exit. ``keep_stop``: the stop keeps working until the exit has filled
        (a reversal: no moment without a stop; module docstring)."""
        t = self.trade
        if t is None or self.book.qty == 0 or t["exit"]:
            return []
        legs = [t[k] for k in ("stop", "target") if t[k]]
        if t.get("native"):
            legs = list(dict.fromkeys(legs + list(bracket_leg_ids(t["entry"]))))  # also legs not reported yet
        keep = None
        if keep_stop:
            keep = t["stop"] or (bracket_leg_ids(t["entry"])[0] if t.get("native") else None)
            legs = [leg for leg in legs if leg != keep]
        out: Out = [(RISK, CancelOrder(leg, self.strategy_id, ts, f"exit: {why}")) for leg in legs]
        if t.get("entry_leaves"):
            out.append((RISK, CancelOrder(t["entry"], self.strategy_id, ts, f"exit: {why}")))
        self._track_cancelled(tuple(k for k in ("stop", "target") if t[k] and t[k] != keep))
        t["stop"], t["target"], t["exiting"] = keep, None, why
        return out + self._market_exit(ts, why)

    def _on_exposure(self, msg: ExposureUpdate) -> Out:
        t = self.trade
        working = t is not None and (any(t[k] for k in ("stop", "target", "exit")) or bool(t.get("old"))
                                     or bool(t.get("entry_leaves") and t.get("filled")))
        if self.book.flattened_by_risk(msg, orders_working=working):
            # risk closed it (its flatten cancels our orders first): the close's price is risk's fill,
            # not ours, so the trade's P&L here lacks it (risk's account-level caps count it)
            self.counters["flattened"] += 1
            self._close_trade()
        return []

    def _close_trade(self) -> None:
        t = self.trade
        if t is None:
            return
        self.trade = None
        self._on_trade_closed(t, Decimal(t["pnl"]))

    # ------------------------------------------------------------------ persistence helpers
    @staticmethod
    def held_orders(snapshot: dict) -> dict[str, int]:
        """``{client order id: contracts filled}`` of the trade's working orders in a snapshot."""
        t = snapshot.get("trade") or {}
        out = {t[k]: 0 for k in ("stop", "target", "exit") if t.get(k)}
        out.update({k: 0 for k in t.get("old") or {}})
        if t.get("entry") and (not t.get("filled") or t.get("entry_leaves")):
            out[t["entry"]] = int(t.get("filled") or 0)
        return out

    def forget_orders(self, client_order_ids: list[str]) -> None:
        """Drop restored orders that never reached the router."""
        t = self.trade
        if t is None:
            return
        for k in ("stop", "target", "exit"):
            if t.get(k) in client_order_ids:
                t[k] = None
        for k in [k for k in t.get("old") or {} if k in client_order_ids]:
            t["old"].pop(k)
        if t.get("entry") in client_order_ids:
            if not t.get("filled"):
                self.trade = None
            else:
                t["entry_leaves"] = 0
