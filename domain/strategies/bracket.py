"""One bracketed trade at a time: entry, protective stop and target, exits (shared by the
``regime_vwap`` and ``ml_scalper`` strategies; docs/strategies/regime.md, "Orders", and
docs/decisions/0019-native-brackets.md).

:class:`BracketTrader` is a mixin for a single-instrument strategy handler. The trade in progress
is a JSON-safe dict (``self.trade``, persisted in the strategy's snapshot)::

    entry, dir (+1 long / -1 short), qty, stop_ticks, target_ticks, tag (purpose suffix, e.g.
    "; regime=bull"), exit_prefix ("regime-exit"), stop, target, exit (client order ids or None),
    entry_price, filled, filled_ts, pnl (dollars, str), native (bool)

- :meth:`open_trade` sends a market entry; with native brackets (``self.native_ok``) it carries a
  :class:`domain.messages.Bracket` and the venue places the legs on the fill (``OrderAccepted``
  with the leg, :meth:`_on_accepted`); otherwise the strategy sends the stop and target itself on
  the fill (:meth:`_protect`, a managed OCO).
- When one leg fills, the other goes: the venue cancels it (native) or the strategy does (managed).
- Legs not confirmed ``native_leg_timeout_s`` after the entry's fill, or a protective order risk
  denies or the venue rejects: the legs are cancelled and the position exits at market.
- A venue that refuses native brackets (ProjectX Position Brackets mode) switches the strategy to
  managed brackets for good, with a warning alert.
- :meth:`exit_now` closes at market (time-out or signal exits): the legs are cancelled first, then
  the reduce-only market exit goes (a leg left working could fill after the exit and open a
  position); the position is without its stop until that market order's fill.

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
        intent = self._intent(Side.BUY if direction > 0 else Side.SELL, qty, OrderType.MARKET, ts, purpose + tag,
                              bracket=Bracket(stop_ticks, target_ticks) if self.native_ok else None)
        self.trade = {"entry": intent.client_order_id, "dir": direction, "qty": qty, "stop_ticks": stop_ticks,
                      "target_ticks": target_ticks, "tag": tag, "exit_prefix": exit_prefix, "stop": None,
                      "target": None, "exit": None, "entry_price": None, "filled": 0, "pnl": "0",
                      "native": self.native_ok, "filled_ts": 0, **extra}
        self.counters["entries"] += 1
        return [(RISK, intent)]

    # ------------------------------------------------------------------ order events
    def _on_fill(self, fill: Fill) -> Out:
        if not self.book.apply(fill):
            return []
        t = self.trade
        if t is None:
            return []
        coid = fill.client_order_id
        if coid == t["entry"]:
            t["filled"] += fill.qty
            t["entry_price"] = str(fill.price)
            t["pnl"] = str(Decimal(t["pnl"]) - fill.fee)
            if t.get("native"):
                t["filled_ts"] = fill.ts_ns  # the venue places the legs: OrderAccepted follows
                return []
            return self._protect(fill)
        # an exit: the stop, the target or a market exit
        entry = Decimal(t["entry_price"])
        gross = (fill.price - entry) * t["dir"] * fill.qty * self.spec.point_value
        t["pnl"] = str(Decimal(t["pnl"]) + gross - fill.fee)
        kind = "stops" if coid == t["stop"] else "targets" if coid == t["target"] else "exits"
        self.counters[kind] += 1
        out: Out = []
        if self.book.qty == 0:  # closed: the other protective order(s) go (one cancels the other)
            # a native bracket's venue cancels the sibling leg itself
            for k in (("exit",) if t.get("native") and coid in (t["stop"], t["target"]) else ("stop", "target", "exit")):
                if t[k] and t[k] != coid:
                    out.append((RISK, CancelOrder(t[k], self.strategy_id, fill.ts_ns, "oco: sibling filled")))
            self._close_trade()
        return out

    def _protect(self, fill: Fill) -> Out:
        """The entry filled: a protective stop and a target, reduce-only, as one managed OCO."""
        t = self.trade
        assert t is not None
        tick = self.spec.tick_size
        d = t["dir"]
        exit_side = Side.SELL if d > 0 else Side.BUY
        stop_px = fill.price - d * t["stop_ticks"] * tick
        target_px = fill.price + d * t["target_ticks"] * tick
        qty = abs(self.book.qty)
        tag = t.get("tag", "")
        stop = self._intent(exit_side, qty, OrderType.STOP, fill.ts_ns, "bracket-stop" + tag, price=stop_px,
                            reduce_only=True)
        target = self._intent(exit_side, qty, OrderType.LIMIT, fill.ts_ns, "bracket-target" + tag, price=target_px,
                              reduce_only=True)
        t["stop"], t["target"] = stop.client_order_id, target.client_order_id
        return [(RISK, stop), (RISK, target)]

    def _on_accepted(self, msg: OrderAccepted) -> Out:
        """A native bracket leg of the trade's entry is working at the venue: remember it."""
        t = self.trade
        if t is not None and msg.intent is not None and bracket_parent(msg.client_order_id) == t["entry"]:
            t["stop" if msg.intent.order_type is OrderType.STOP else "target"] = msg.client_order_id
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
            out = []
            if isinstance(msg, OrderDenied):
                self.counters["denied"] += 1
            if isinstance(msg, OrderRejected) and t.get("native") and ("Auto OCO" in msg.reason or "Position Brackets" in msg.reason):
                # the account does not take native brackets (ProjectX Position Brackets mode)
                self.native_ok = False
                out.append((WATCHDOG, Alert("warning", f"{self.strategy_id}-native-brackets",
                                            f"{self.strategy_id}: the venue refused a native bracket ({msg.reason}); "
                                            "brackets are managed by the strategy from now on", msg.ts_ns)))
            if self.book.qty == 0:
                self.trade = None  # never filled
            return out
        if coid in (t["stop"], t["target"]) and not isinstance(msg, OrderCancelled) and self.book.qty != 0:
            # a protective order refused: never hold the position without its stop
            self.counters["denied"] += 1
            other = t["target"] if coid == t["stop"] else t["stop"]
            t["stop"] = t["target"] = None
            out: Out = [(RISK, CancelOrder(other, self.strategy_id, msg.ts_ns, "oco: sibling refused"))] if other else []
            return out + self._market_exit(msg.ts_ns, "protective order refused")
        if coid == t["stop"]:
            t["stop"] = None
        elif coid == t["target"]:
            t["target"] = None
        elif coid == t["exit"]:
            t["exit"] = None
        return []

    def _market_exit(self, ts: int, why: str) -> Out:
        t = self.trade
        if t is None or self.book.qty == 0 or t["exit"]:
            return []
        exit_ = self._intent(Side.SELL if self.book.qty > 0 else Side.BUY, abs(self.book.qty), OrderType.MARKET, ts,
                             f"{t.get('exit_prefix', 'exit')}: {why}{t.get('tag', '')}", reduce_only=True)
        t["exit"] = exit_.client_order_id
        return [(RISK, exit_)]

    def exit_now(self, ts: int, why: str) -> Out:
        """Close the trade at market: cancel its working legs first, then the market exit."""
        t = self.trade
        if t is None or self.book.qty == 0 or t["exit"]:
            return []
        legs = [t[k] for k in ("stop", "target") if t[k]]
        if t.get("native"):
            legs = list(dict.fromkeys(legs + list(bracket_leg_ids(t["entry"]))))  # also legs not reported yet
        out: Out = [(RISK, CancelOrder(leg, self.strategy_id, ts, f"exit: {why}")) for leg in legs]
        t["stop"] = t["target"] = None
        return out + self._market_exit(ts, why)

    def _on_exposure(self, msg: ExposureUpdate) -> Out:
        t = self.trade
        working = t is not None and any(t[k] for k in ("stop", "target", "exit"))
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
        if t.get("entry") and not t.get("filled"):
            out[t["entry"]] = 0
        return out

    def forget_orders(self, client_order_ids: list[str]) -> None:
        """Drop restored orders that never reached the router."""
        t = self.trade
        if t is None:
            return
        for k in ("stop", "target", "exit"):
            if t.get(k) in client_order_ids:
                t[k] = None
        if t.get("entry") in client_order_ids and not t.get("filled"):
            self.trade = None
