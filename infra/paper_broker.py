"""Simulated venue for paper trading and replay: order matching, fills, fees and a position book.

Pure logic, no I/O, no clock, no randomness: every output depends only on the calls made, and ids
come from counters (``{prefix}-O{n}`` venue order ids, ``{prefix}-T{n}`` trade ids). It lives in
``infra`` because it stands in for the outside world (the TopstepX venue).

Matching model (all prices Decimal points on the instrument's tick grid, qty int contracts):

- **Full fills by default.** The size of a print or quote is ignored: an order that is reached
  fills completely, ``Fill.leaves_qty == 0``. With ``partial_fills=True`` (opt-in,
  ``runtime.partial_fills``) a fill on a trade print is limited to the print's ``size``
  (contracts; each working order on its own, a print of size 0 fills whole): the order stays
  working with ``leaves_qty`` left and takes later prints. Quotes and ``fill_on_arrival`` still
  fill whole. A native bracket leg that fills in part leaves its OCO sibling as it is (the
  gateway's behaviour there is not documented; the strategy resizes: domain/strategies/bracket.py);
  the sibling is cancelled when the leg has filled completely.
- **Limit orders on a trade print** fill at their limit price when the print trades *through* them
  (buy: ``price < limit``; sell: ``price > limit``). With ``fill_on_touch=True`` a print *at* the
  limit fills too (``<=`` / ``>=``). Every resting order a print crosses fills, not only the nearest.
- **Limit orders on a quote** fill at the limit when the opposite side crosses them (buy:
  ``ask < limit``, sell: ``bid > limit``; ``<=`` / ``>=`` on touch).
- **Stop orders** trigger on a print at or beyond the stop (buy: ``price >= stop``, sell:
  ``price <= stop``; on quotes: buy ``ask >= stop``, sell ``bid <= stop``) and fill at that
  price moved ``slippage_ticks`` against the taker (buy higher, sell lower).
- **No fill on arrival.** An order fills only on a print (or quote) of its own instrument that the
  venue sees after the order arrived, so never at a price from before the decision (the replay
  hands every instrument's prints of a timestamp to the venue before any strategy reacts to that
  timestamp: infra/feeds.py ``FeedCore.route_batch``).
- **Market orders** fill on the next print +/- ``slippage_ticks`` (worse for the taker), or on the
  next quote (ask + slippage for a buy, bid - slippage for a sell). With no print they wait: a
  close on an instrument that does not trade stays unfilled until it does (the summary's flat
  check shows it) rather than filling at a price nobody traded.
- **Marketable on arrival** (aggressive): a LIMIT already marketable against the instrument's last
  print (buy ``limit >= last``, sell ``limit <= last``) takes the next print that is still at or
  better than its limit, at that print +/- slippage capped at the limit; if the market moved away
  it rests as a passive limit. A STOP already triggered by the last print fills like a market
  order on the next print. A last print older than ``max_price_age_ns`` (event time) is never used
  to judge this: the order then rests as if not marketable.
- Within one tick, orders fill in order of arrival (deterministic). A quote never updates the last
  trade price.
- Fee per fill = the instrument's ``fee_per_side`` x qty (dollars).
- **Native brackets** (an entry with ``OrderIntent.bracket``): when the entry fills, the venue
  places its two legs at once (:func:`domain.orders.bracket_leg_ids`, ``-SL`` STOP and ``-TP``
  LIMIT, reduce-only, priced from the fill: :func:`domain.orders.bracket_legs`), reported as
  ``OrderAccepted`` events carrying the legs' intents, right after the entry's ``Fill``. The legs
  are one OCO pair: when one fills the venue cancels the other in the same call
  (``OrderCancelled``, reason ``oco: <leg> filled``). A leg the client cancels leaves its sibling
  alone (as on the gateway: docs/sandbox.md "Brackets"). The pairing survives :meth:`snapshot` /
  :meth:`restore`.

Position book: per instrument a signed quantity and FIFO lots (CME clearing convention). Realized
P&L (dollars) is therefore always an exact multiple of the tick value. The reported average entry
price is open cost / open qty, exact whenever that quotient is a terminating decimal, otherwise
rounded to 34 significant digits (fixed context, deterministic).

Modify (:meth:`PaperBroker.modify`) follows the ProjectX gateway's ``Order/modify`` (docs/sandbox.md,
"Modify"): a working order's size and/or price change in place (same client and venue order ids),
the order loses its time priority, and it fills at once if now marketable (the arrival rules above).
A refused modify leaves the order exactly as it was.

Bad input never raises: a bad order is answered with :class:`OrderRejected`, a bad modify with no
event, a bad tick is ignored; all are counted in :attr:`PaperBroker.rejects`.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from decimal import Context, Decimal, ROUND_HALF_EVEN
from typing import Any

from domain import codec
from domain.instruments import INSTRUMENTS, InstrumentSpec
from domain.orders import bracket_legs
from domain.messages import (BrokerSnapshot, Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderModified,
                             OrderRejected, OrderType, PositionSnapshot, QuoteTick, Side, TradeTick)

SNAPSHOT_VERSION = 1
_AVG_CTX = Context(prec=34, rounding=ROUND_HALF_EVEN)


@dataclass(slots=True)
class _Working:
    intent: OrderIntent
    venue_order_id: str
    aggressive: bool = False  # marketable when it arrived: takes the next print (module docstring)
    sibling: str | None = None  # a native bracket leg: the other leg's client order id (OCO)
    filled: int = 0  # contracts filled so far (partial fills: ``partial_fills``)


@dataclass(slots=True)
class _Book:
    """Position of one instrument: FIFO lots of (price, signed qty), all with the same sign."""

    lots: list[list[Any]]  # [[Decimal price, int signed qty], ...]
    realized: Decimal
    fees: Decimal
    ts_ns: int

    @property
    def qty(self) -> int:
        return sum(q for _, q in self.lots)

    def avg_price(self) -> Decimal:
        q = self.qty
        if q == 0:
            return Decimal(0)
        cost = sum((p * abs(n) for p, n in self.lots), Decimal(0))
        return _AVG_CTX.divide(cost, Decimal(abs(q)))


def _valid_price(p: Any, spec: InstrumentSpec) -> bool:
    try:
        return isinstance(p, Decimal) and p.is_finite() and p > 0 and not p % spec.tick_size
    except ArithmeticError:  # e.g. 1E+999: the quotient does not fit the decimal context
        return False


class PaperBroker:
    """A deterministic simulated venue (see the module docstring for the matching model).

    Args:
        slippage_ticks: ticks added against the taker on market and stop fills (>= 0).
        slippage_by_tag: ``{text: ticks}``: an order whose ``purpose`` contains the text slips
            that many ticks instead (the first match in order), e.g. ``{"regime=crash": 3}``, seed
            002 section 2.9's 3 ticks in the crash regime (the regime strategy tags its orders).
        fill_on_touch: also fill resting limits on a print/quote exactly at the limit price.
        id_prefix: prefix of venue order ids (``P-O1``) and trade ids (``P-T1``).
        max_price_age_ns: a last print older than this (event time, ns) is not used to judge an
            arriving order marketable; None = no limit.
        fill_on_arrival: a marketable order fills at once at the last print (market and stop
            +/- slippage, limit at the last print): an exchange with a standing book, as the
            sandbox gateway models it (infra/sandbox/exchange.py). False (the simulated venue of
            backtest and paper): it takes the next print.
        partial_fills: a fill on a trade print is at most the print's size (contracts); the rest
            of the order stays working (module docstring). False (default): whole fills.

    Raises:
        ValueError: ``slippage_ticks`` negative or not an int.
    """

    def __init__(self, *, slippage_ticks: int = 1, fill_on_touch: bool = False, id_prefix: str = "P",
                 max_price_age_ns: int | None = None, fill_on_arrival: bool = False,
                 slippage_by_tag: dict[str, int] | None = None, partial_fills: bool = False) -> None:
        if not isinstance(slippage_ticks, int) or isinstance(slippage_ticks, bool) or slippage_ticks < 0:
            raise ValueError(f"slippage_ticks must be an int >= 0, got {slippage_ticks!r}")
        self.slippage_ticks = slippage_ticks
        self.slippage_by_tag = {str(k): int(v) for k, v in (slippage_by_tag or {}).items()}
        self.fill_on_touch = bool(fill_on_touch)
        self.id_prefix = id_prefix
        self.max_price_age_ns = max_price_age_ns
        self.fill_on_arrival = bool(fill_on_arrival)
        self.partial_fills = bool(partial_fills)
        self._last_ts: dict[str, int] = {}  # event time of the last trade price per instrument
        self._order_seq = 0
        self._trade_seq = 0
        self._working: dict[str, _Working] = {}  # insertion order = arrival order
        self._seen: set[str] = set()  # every client_order_id ever submitted (duplicates rejected)
        self._seen_log: list[str] = []  # the same ids in arrival order (incremental persistence)
        self._last: dict[str, Decimal] = {}  # last trade price per instrument
        self._books: dict[str, _Book] = {}
        self._fills: list[Fill] = []
        self.rejects: collections.Counter = collections.Counter()
        """Rejected orders (``order:<reason>``), refused modifies (``modify:<reason>``) and ignored
        ticks (``trade:`` / ``quote:<reason>``)."""

    # ------------------------------------------------------------------ orders

    def _see(self, client_order_id: str) -> None:
        if client_order_id not in self._seen:
            self._seen.add(client_order_id)
            self._seen_log.append(client_order_id)

    def _validate(self, intent: OrderIntent) -> str | None:
        if not isinstance(intent, OrderIntent):
            return "not an OrderIntent"
        if not isinstance(intent.client_order_id, str) or not intent.client_order_id:
            return "missing client_order_id"
        if intent.client_order_id in self._seen:
            return "duplicate client_order_id"
        spec = INSTRUMENTS.get(intent.instrument) if isinstance(intent.instrument, str) else None
        if spec is None:
            return "unknown instrument"
        if not isinstance(intent.side, Side):
            return "bad side"
        if not isinstance(intent.qty, int) or isinstance(intent.qty, bool) or intent.qty <= 0:
            return "qty <= 0"
        if not isinstance(intent.order_type, OrderType):
            return "bad order type"
        if intent.order_type is OrderType.LIMIT and not _valid_price(intent.limit_price, spec):
            return "missing or off-tick limit price"
        if intent.order_type is OrderType.STOP and not _valid_price(intent.stop_price, spec):
            return "missing or off-tick stop price"
        b = intent.bracket
        if b is not None and not (isinstance(b.stop_ticks, int) and isinstance(b.target_ticks, int)
                                  and b.stop_ticks > 0 and b.target_ticks > 0 and not intent.reduce_only):
            return "bad bracket (ticks must be ints > 0, on an entry)"
        return None

    def submit(self, intent: OrderIntent, ts_ns: int) -> list:
        """Place an order at event time ``ts_ns`` (epoch ns UTC).

        Returns ``[OrderAccepted]`` (it fills on a later print: module docstring),
        or ``[OrderRejected] (terminal: the client_order_id can never be used again) with reason
        ``duplicate client_order_id``, ``unknown instrument``,
        ``qty <= 0``, ``missing or off-tick limit price``, ``missing or off-tick stop price``
        (or ``bad side`` / ``bad order type`` / ``missing client_order_id`` / ``not an OrderIntent``).
        Never raises.
        """
        reason = self._validate(intent)
        if reason is not None:
            self.rejects[f"order:{reason}"] += 1
            coid = getattr(intent, "client_order_id", "")
            if isinstance(coid, str) and coid:
                self._see(coid)  # a rejected id is terminal: it can never be reused
            sid = getattr(intent, "strategy_id", "")
            return [OrderRejected(coid if isinstance(coid, str) else "", sid if isinstance(sid, str) else "",
                                  reason, ts_ns)]
        self._see(intent.client_order_id)
        self._order_seq += 1
        w = _Working(intent, f"{self.id_prefix}-O{self._order_seq}")
        self._working[intent.client_order_id] = w
        w.aggressive = self._marketable(intent, ts_ns)
        return [OrderAccepted(intent.client_order_id, intent.strategy_id, w.venue_order_id, ts_ns)] + self._on_arrival(w, ts_ns)

    def _on_arrival(self, w: _Working, ts_ns: int) -> list:
        """With ``fill_on_arrival``, the fill of a marketable order at the last print (else none)."""
        last = self._fresh_last(w.intent.instrument, ts_ns)
        if not (self.fill_on_arrival and w.aggressive and last is not None):
            return []
        o = w.intent
        price = last if o.order_type is OrderType.LIMIT else self._slipped(o, last)
        return self._fill(w, price, ts_ns)

    def _fresh_last(self, instrument: str, ts_ns: int) -> Decimal | None:
        """The instrument's last print if it is not older than ``max_price_age_ns`` at ``ts_ns``."""
        last = self._last.get(instrument)
        if last is None or self.max_price_age_ns is None:
            return last
        return last if ts_ns - self._last_ts.get(instrument, ts_ns) <= self.max_price_age_ns else None

    def _marketable(self, o: OrderIntent, ts_ns: int) -> bool:
        """Whether an order arriving at ``ts_ns`` takes the next print (module docstring)."""
        if o.order_type is OrderType.MARKET:
            return True
        last = self._fresh_last(o.instrument, ts_ns)
        if last is None:
            return False
        buy = o.side is Side.BUY
        if o.order_type is OrderType.LIMIT:
            return (buy and o.limit_price >= last) or (not buy and o.limit_price <= last)
        return (buy and last >= o.stop_price) or (not buy and last <= o.stop_price)

    def _slipped(self, o: OrderIntent, price: Decimal) -> Decimal:
        ticks = next((n for tag, n in self.slippage_by_tag.items() if tag in o.purpose), self.slippage_ticks)
        return price + o.side.sign * ticks * INSTRUMENTS[o.instrument].tick_size

    def cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> list:
        """Cancel a working order. Returns ``[OrderCancelled]``, or ``[]`` if the id is unknown or
        the order is already terminal (filled, cancelled, rejected): idempotent, never raises."""
        w = self._working.pop(client_order_id, None) if isinstance(client_order_id, str) else None
        if w is None:
            return []
        return [OrderCancelled(client_order_id, w.intent.strategy_id, ts_ns, reason)]

    def modify(self, client_order_id: str, ts_ns: int, *, qty: int | None = None,
               limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> list:
        """Change a working order at event time ``ts_ns`` (epoch ns UTC), as the gateway's
        ``Order/modify`` does (absolute values; ``None`` = unchanged; docs/sandbox.md "Modify",
        docs/projectx.md "Error mapping").

        Args:
            qty: new total size in contracts, an int >= 1 and above what is filled (0 unless
                ``partial_fills``).
            limit_price: new limit in points, on the tick grid; LIMIT orders only.
            stop_price: new stop in points, on the tick grid; STOP orders only.

        Returns ``[OrderModified]`` (the fields given). The modified order is judged again as on
        arrival (module docstring: marketable now = it takes the next print). It keeps its client
        and venue order ids and moves behind the other working orders (it loses its time priority,
        as on the gateway).

        Returns ``[]`` and leaves the order exactly as it was when the modify is refused: the id is
        not working (unknown, filled, cancelled, rejected), nothing to change, a qty that is not an
        int >= 1, a price for the wrong order type (a limit price on a stop order...), a price that
        is not positive or off the tick grid. A refusal is never an :class:`OrderRejected` (that is terminal for the
        order, which stays working); refusals of a working order are counted in
        :attr:`rejects` as ``modify:<reason>``. Never raises.
        """
        w = self._working.get(client_order_id) if isinstance(client_order_id, str) else None
        if w is None:
            return []
        reason = self._modify_refusal(w.intent, qty, limit_price, stop_price)
        if reason is None and qty is not None and qty <= w.filled:
            reason = "qty not above the filled size"
        if reason is not None:
            self.rejects[f"modify:{reason}"] += 1
            return []
        changes = {k: v for k, v in (("qty", qty), ("limit_price", limit_price), ("stop_price", stop_price))
                   if v is not None}
        w.intent = dataclasses.replace(w.intent, **changes)
        del self._working[client_order_id]  # loses its time priority: matched after the others
        self._working[client_order_id] = w
        w.aggressive = self._marketable(w.intent, ts_ns)
        return [OrderModified(client_order_id, w.intent.strategy_id, ts_ns, qty, limit_price, stop_price)] + \
            self._on_arrival(w, ts_ns)

    @staticmethod
    def _modify_refusal(o: OrderIntent, qty: Any, limit_price: Any, stop_price: Any) -> str | None:
        if qty is None and limit_price is None and stop_price is None:
            return "nothing to change"
        if qty is not None and (not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0):
            return "qty <= 0"
        spec = INSTRUMENTS[o.instrument]
        if limit_price is not None and (o.order_type is not OrderType.LIMIT or not _valid_price(limit_price, spec)):
            return "limit price off-tick or not a limit order"
        if stop_price is not None and (o.order_type is not OrderType.STOP or not _valid_price(stop_price, spec)):
            return "stop price off-tick or not a stop order"
        return None

    def cancel_all(self, ts_ns: int) -> list:
        """Cancel every working order (in arrival order). Returns the list of OrderCancelled."""
        out: list = []
        for coid in list(self._working):
            out.extend(self.cancel(coid, ts_ns, "cancel_all"))
        return out

    # ------------------------------------------------------------------ market data

    def on_trade(self, tick: TradeTick) -> list:
        """Process a trade print: update the last price, then fill every working order of that
        instrument the print reaches, in arrival order. Returns the fills, each followed by what it
        set off (a native bracket's legs placed, an OCO sibling cancelled). A tick with an unknown
        instrument, a non-positive / off-tick / non-Decimal price or a negative size is ignored and
        counted."""
        spec = INSTRUMENTS.get(getattr(tick, "instrument", None)) if isinstance(tick, TradeTick) else None
        if spec is None:
            self.rejects["trade:unknown_instrument" if isinstance(tick, TradeTick) else "trade:not_a_trade"] += 1
            return []
        if not _valid_price(tick.price, spec):
            self.rejects["trade:bad_price"] += 1
            return []
        if not isinstance(tick.size, int) or tick.size < 0:
            self.rejects["trade:bad_size"] += 1
            return []
        px, inst = tick.price, tick.instrument
        self._last[inst] = px
        self._last_ts[inst] = tick.ts_ns
        if not self._working:
            return []
        out: list = []
        for w in [w for w in self._working.values() if w.intent.instrument == inst]:
            if w.sibling is not None and w.intent.client_order_id not in self._working:
                continue  # its OCO sibling filled on this print
            price = self._match(w, px, px, px)
            if price is not None:
                out += self._fill(w, price, tick.ts_ns, tick.size if self.partial_fills else 0)
        return out

    def _match(self, w: _Working, taker: Decimal, buy_through: Decimal, sell_through: Decimal) -> Decimal | None:
        """The fill price of working order ``w`` at this print or quote, or None.

        ``taker``: the price a marketable order of ``w``'s side trades at (the print; on a quote the
        ask for a buy, the bid for a sell); ``buy_through`` / ``sell_through``: the price a resting
        buy / sell limit is traded through by (the print; on a quote the ask / the bid)."""
        o = w.intent
        buy = o.side is Side.BUY
        if o.order_type is OrderType.MARKET:
            return self._slipped(o, taker)
        if o.order_type is OrderType.LIMIT:
            lim = o.limit_price
            if w.aggressive:
                if (buy and taker <= lim) or (not buy and taker >= lim):
                    slipped = self._slipped(o, taker)
                    return min(slipped, lim) if buy else max(slipped, lim)
                w.aggressive = False  # the market moved away: it rests from now on
            if buy and (buy_through < lim or (self.fill_on_touch and buy_through == lim)):
                return lim
            if not buy and (sell_through > lim or (self.fill_on_touch and sell_through == lim)):
                return lim
            return None
        if w.aggressive or (buy and taker >= o.stop_price) or (not buy and taker <= o.stop_price):
            return self._slipped(o, taker)
        return None

    def on_quote(self, q: QuoteTick) -> list:
        """Process a top-of-book quote: fill working orders the quote reaches, in arrival order
        (limits at their limit, stops and market orders at the touched side +/- slippage). A quote
        with an unknown instrument, bad prices or ``bid >= ask`` is ignored and counted."""
        spec = INSTRUMENTS.get(getattr(q, "instrument", None)) if isinstance(q, QuoteTick) else None
        if spec is None:
            self.rejects["quote:unknown_instrument" if isinstance(q, QuoteTick) else "quote:not_a_quote"] += 1
            return []
        if not (_valid_price(q.bid, spec) and _valid_price(q.ask, spec)):
            self.rejects["quote:bad_price"] += 1
            return []
        if q.bid >= q.ask:
            self.rejects["quote:crossed"] += 1
            return []
        out: list = []
        for w in [w for w in self._working.values() if w.intent.instrument == q.instrument]:
            if w.sibling is not None and w.intent.client_order_id not in self._working:
                continue  # its OCO sibling filled on this quote
            touch = q.ask if w.intent.side is Side.BUY else q.bid  # the side this order trades against
            price = self._match(w, touch, q.ask, q.bid)
            if price is not None:
                out += self._fill(w, price, q.ts_ns)
        return out

    # ------------------------------------------------------------------ fills & positions

    def _fill(self, w: _Working, price: Decimal, ts_ns: int, cap: int = 0) -> list:
        """Fill ``w`` at ``price``, whole or (``cap`` > 0 contracts) at most ``cap``: ``[Fill]``,
        then a native bracket's legs placed on the entry's first fill (``OrderAccepted`` with their
        intents, sized at the entry's whole size as the gateway creates them) or, once the leg has
        filled completely, the OCO sibling cancelled."""
        o = w.intent
        spec = INSTRUMENTS[o.instrument]
        leaves = o.qty - w.filled
        qty = min(leaves, cap) if cap > 0 else leaves
        first = w.filled == 0
        w.filled += qty
        if qty == leaves:
            self._working.pop(o.client_order_id, None)
        self._trade_seq += 1
        fee = spec.fee_per_side * qty
        f = Fill(o.client_order_id, o.strategy_id, f"{self.id_prefix}-T{self._trade_seq}", o.instrument, o.side,
                 qty, price, fee, leaves - qty, ts_ns, w.venue_order_id)
        self._fills.append(f)
        self._apply(f, spec)
        out: list = [f]
        if w.sibling is not None and qty == leaves:
            out += self.cancel(w.sibling, ts_ns, f"oco: {o.client_order_id} filled")
        if o.bracket is not None and first:
            legs = bracket_legs(o, price, spec.tick_size)
            ids = [leg.client_order_id for leg in legs]
            for leg, other in zip(legs, reversed(ids)):
                self._see(leg.client_order_id)
                self._order_seq += 1
                lw = _Working(dataclasses.replace(leg, ts_ns=ts_ns), f"{self.id_prefix}-O{self._order_seq}",
                              sibling=other)
                self._working[leg.client_order_id] = lw
                lw.aggressive = self._marketable(lw.intent, ts_ns)
                out.append(OrderAccepted(leg.client_order_id, leg.strategy_id, lw.venue_order_id, ts_ns, lw.intent))
        return out

    def _apply(self, f: Fill, spec: InstrumentSpec) -> None:
        book = self._books.setdefault(f.instrument, _Book([], Decimal(0), Decimal(0), f.ts_ns))
        book.fees += f.fee
        book.ts_ns = f.ts_ns
        remaining = f.side.sign * f.qty  # signed
        while remaining and book.lots and (book.lots[0][1] > 0) != (remaining > 0):
            lot = book.lots[0]
            n = min(abs(lot[1]), abs(remaining))
            direction = 1 if lot[1] > 0 else -1  # +1: closing a long
            book.realized += (f.price - lot[0]) * n * direction * spec.point_value
            lot[1] -= direction * n
            remaining += direction * n
            if lot[1] == 0:
                book.lots.pop(0)
        if remaining:
            book.lots.append([f.price, remaining])

    def position(self, instrument: str) -> int:
        """Signed position in contracts (+ long), 0 if flat or unknown."""
        b = self._books.get(instrument)
        return b.qty if b else 0

    def positions(self) -> dict[str, PositionSnapshot]:
        """Non-flat positions by instrument; ``ts_ns`` = time of the last fill in that instrument."""
        return {i: PositionSnapshot(i, b.qty, b.avg_price(), b.ts_ns)
                for i, b in sorted(self._books.items()) if b.qty != 0}

    def realized_pnl(self, instrument: str | None = None) -> Decimal:
        """Realized P&L in dollars before fees (FIFO), for one instrument or all."""
        books = [self._books[instrument]] if instrument in self._books else (
            [] if instrument is not None else list(self._books.values()))
        return sum((b.realized for b in books), Decimal(0))

    def fees_paid(self, instrument: str | None = None) -> Decimal:
        """Commissions paid in dollars, for one instrument or all."""
        books = [self._books[instrument]] if instrument in self._books else (
            [] if instrument is not None else list(self._books.values()))
        return sum((b.fees for b in books), Decimal(0))

    def last_price(self, instrument: str) -> Decimal | None:
        """Last trade price seen for ``instrument`` (points), None if none yet."""
        return self._last.get(instrument)

    def last_prices(self) -> dict[str, Decimal]:
        """Last trade price per instrument (points)."""
        return dict(self._last)

    def set_last_prices(self, prices: dict[str, Decimal], times: dict[str, int] | None = None) -> None:
        """Restore last trade prices (points) newer than a snapshot, with their event times (ns)."""
        self._last.update(prices)
        self._last_ts.update(times or {})

    def last_times(self) -> dict[str, int]:
        """Event time (ns) of the last trade price per instrument."""
        return dict(self._last_ts)

    @property
    def has_working(self) -> bool:
        """True while at least one order is working (a print can fill something)."""
        return bool(self._working)

    def working_orders(self) -> list[OrderIntent]:
        """Working orders in arrival order."""
        return [w.intent for w in self._working.values()]

    def fills(self) -> list[Fill]:
        """Every fill so far, in execution order."""
        return list(self._fills)

    def broker_snapshot(self, ts_ns: int, max_fills: int | None = None) -> BrokerSnapshot:
        """What the venue says is true at ``ts_ns``: working orders, non-flat positions (stamped
        ``ts_ns``) and fills (all, or the last ``max_fills``)."""
        fills = self._fills if max_fills is None else self._fills[len(self._fills) - max(0, max_fills):]
        return BrokerSnapshot(
            tuple(self.working_orders()),
            tuple(PositionSnapshot(p.instrument, p.qty, p.avg_price, ts_ns) for p in self.positions().values()),
            tuple(fills), ts_ns)

    # ------------------------------------------------------------------ persistence

    def snapshot(self, history: bool = True) -> dict[str, Any]:
        """JSON-safe state (messages via :mod:`domain.codec`, Decimals as strings), including the id
        counters so a restored broker never repeats an id.

        With ``history=False`` the two parts that only grow, ``fills`` (every fill) and ``seen``
        (every client order id), are left out: a caller persisting incrementally stores them
        with :meth:`history_since` and hands them back to :meth:`restore`.
        """
        d: dict[str, Any] = {
            "version": SNAPSHOT_VERSION,
            "config": {"slippage_ticks": self.slippage_ticks, "fill_on_touch": self.fill_on_touch,
                       "id_prefix": self.id_prefix, "max_price_age_ns": self.max_price_age_ns,
                       "fill_on_arrival": self.fill_on_arrival, "slippage_by_tag": dict(self.slippage_by_tag),
                       "partial_fills": self.partial_fills},
            "order_seq": self._order_seq,
            "trade_seq": self._trade_seq,
            "working": [{"intent": codec.encode(w.intent), "venue_order_id": w.venue_order_id,
                         "aggressive": w.aggressive, "sibling": w.sibling, "filled": w.filled}
                        for w in self._working.values()],
            "last": {i: str(p) for i, p in sorted(self._last.items())},
            "last_ts": dict(sorted(self._last_ts.items())),
            "books": {i: {"lots": [[str(p), n] for p, n in b.lots], "realized": str(b.realized),
                          "fees": str(b.fees), "ts_ns": b.ts_ns} for i, b in sorted(self._books.items())},
            "rejects": dict(sorted(self.rejects.items())),
        }
        if history:
            d["seen"] = list(self._seen_log)
            d["fills"] = [codec.encode(f) for f in self._fills]
        return d

    def history_counts(self) -> tuple[int, int]:
        """``(fills, client order ids seen)`` so far; pass them to :meth:`history_since` later."""
        return len(self._fills), len(self._seen_log)

    def history_since(self, n_fills: int, n_seen: int) -> tuple[list[dict[str, Any]], list[str]]:
        """Fills (codec dicts) and client order ids added after the counts ``history_counts`` gave."""
        return [codec.encode(f) for f in self._fills[n_fills:]], self._seen_log[n_seen:]

    @classmethod
    def restore(cls, d: dict[str, Any], fills: list[dict[str, Any]] | None = None,
                seen: list[str] | None = None) -> "PaperBroker":
        """Rebuild a broker from :meth:`snapshot` (also after a JSON round trip). ``fills`` and
        ``seen`` are used when the snapshot was taken with ``history=False``.

        Raises ValueError for an unknown snapshot version or a malformed snapshot.
        """
        try:
            if d.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"unsupported paper broker snapshot version {d.get('version')!r}")
            b = cls(**d["config"])
            b._order_seq = int(d["order_seq"])
            b._trade_seq = int(d["trade_seq"])
            for w in d["working"]:
                intent = codec.decode(w["intent"])
                b._working[intent.client_order_id] = _Working(intent, w["venue_order_id"], bool(w.get("aggressive")),
                                                              w.get("sibling"), int(w.get("filled", 0)))
            for coid in d.get("seen", seen or []):
                b._see(coid)
            b._last = {i: Decimal(p) for i, p in d["last"].items()}
            b._last_ts = {i: int(t) for i, t in d.get("last_ts", {}).items()}
            b._books = {i: _Book([[Decimal(p), int(n)] for p, n in v["lots"]], Decimal(v["realized"]),
                                 Decimal(v["fees"]), int(v["ts_ns"])) for i, v in d["books"].items()}
            b._fills = [codec.decode(f) for f in d.get("fills", fills or [])]
            b.rejects = collections.Counter(d.get("rejects", {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed paper broker snapshot: {exc!r}") from exc
        return b
