"""Market-data validation. Pure; never raises on bad data.

:class:`MarketDataValidator` checks each :class:`~domain.messages.TradeTick` /
:class:`~domain.messages.QuoteTick` and returns a rejection reason (a short string) or ``None``
when the message is good. Accepted messages update per-instrument state (trades and quotes are
tracked separately) used for ordering and de-duplication.

Rejection reasons, in the order they are checked:

=====================  =====================================================================
``unknown_instrument``  symbol not in :data:`domain.instruments.INSTRUMENTS`
``bad_ts``              ``ts_ns`` not an int or negative
``bad_type``            price / size of the wrong type (not Decimal/int/float; size not int)
``nan_price``           price (trade) or bid/ask (quote) is NaN or infinite
``non_positive_price``  price <= 0 (quotes: bid <= 0 or ask <= 0)
``price_out_of_range``  price outside the instrument's plausible range (:data:`PLAUSIBLE_PRICE`)
``off_tick_price``      price not a multiple of the instrument tick size
``crossed_quote``       quote with ``bid >= ask`` (a valid quote has 0 < bid < ask)
``non_positive_size``   trade size <= 0, or quote size < 0 (quote sizes may be 0 = unknown)
``out_of_order_ts``     ``ts_ns`` strictly less than the last accepted one for that stream
``duplicate``           identical (ts_ns, seq, price(s), size(s)) to the last accepted one
``price_band``          more than :data:`PRICE_BAND_PCT` % away from the instrument's last
                        accepted price (the sanity band, below)
=====================  =====================================================================

Equal ``ts_ns`` with a different seq/price/size is accepted (several prints can share a ns).

Absolute range (:data:`PLAUSIBLE_PRICE`): a price on the tick grid can still be absurd (``2**70``);
each product has a range far wider than its history (S&P 500 futures 500..50,000 points, Nasdaq-100
500..200,000, WTI crude 0.01..1,000 dollars), so no real print is refused and an absurd one never
reaches the indicators (an ATR of 1e18 overflows the grid's lot arithmetic).

Sanity band (rule): a trade price, or either side of a quote, more than :data:`PRICE_BAND_PCT` %
(10 %) away from the last accepted price of that instrument (trade price or quote mid, trades and
quotes share it) is rejected as ``price_band``. Why 10 %: CME equity index futures stop trading at
7 % (overnight limit, first RTH halt), 13 % and 20 % from the prior settlement, so in continuous
trading consecutive prints never differ by 10 %, while the whole day range of a normal session
(about 1-2 %) and the four prints of a replayed 2-minute bar stay far inside it. A genuine jump
larger than the band (a hole in recorded data, a reconnect after a long outage) would otherwise
freeze the instrument, so the band re-anchors: :data:`BAND_REANCHOR_PRINTS` (8) consecutive
out-of-band prints that agree with each other (each within the band of the first of them) make the
8th one accepted and the new reference; the 7 before it stay rejected and counted. The first
accepted price of an instrument has no reference and is only checked against the absolute range.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.instruments import INSTRUMENTS
from domain.messages import QuoteTick, TradeTick

_NUMERIC = (Decimal, int, float)

PRICE_BAND_PCT = Decimal(10)
"""Sanity band: a print further than this many percent from the instrument's last accepted price
is rejected as ``price_band`` (the rule and its reason: module docstring)."""

BAND_REANCHOR_PRINTS = 8
"""Consecutive, mutually consistent out-of-band prints after which the band moves to them."""

PLAUSIBLE_PRICE: dict[str, tuple[Decimal, Decimal]] = {
    "ES": (Decimal(500), Decimal(50_000)),
    "NQ": (Decimal(500), Decimal(200_000)),
    "CL": (Decimal("0.01"), Decimal(1_000)),
}
"""Inclusive plausible price range (points) per product, keyed by the mini symbol
(:attr:`domain.instruments.InstrumentSpec.mini_symbol`: ES covers ES and MES)."""

DEFAULT_PLAUSIBLE_PRICE = (Decimal("0.000001"), Decimal(10_000_000))
"""Range for an instrument whose product has no entry in :data:`PLAUSIBLE_PRICE`."""


def plausible_range(instrument: str) -> tuple[Decimal, Decimal]:
    """The inclusive plausible price range of ``instrument`` (:data:`PLAUSIBLE_PRICE`)."""
    spec = INSTRUMENTS.get(instrument)
    if spec is None:
        return DEFAULT_PLAUSIBLE_PRICE
    return PLAUSIBLE_PRICE.get(spec.mini_symbol, DEFAULT_PLAUSIBLE_PRICE)


def price_problem(prices: tuple[Decimal, ...], instrument: str) -> str | None:
    """Worst problem of finite-or-not Decimal ``prices`` of ``instrument``: ``nan_price``,
    ``non_positive_price``, ``price_out_of_range``, ``off_tick_price``; None when all are fine.
    Never raises (the tick check runs only on in-range prices, so no Decimal overflow)."""
    if not all(p.is_finite() for p in prices):
        return "nan_price"
    if any(p <= 0 for p in prices):
        return "non_positive_price"
    lo, hi = plausible_range(instrument)
    if any(p < lo or p > hi for p in prices):
        return "price_out_of_range"
    spec = INSTRUMENTS.get(instrument)
    if spec is not None:
        for p in prices:
            try:
                if p % spec.tick_size != 0:
                    return "off_tick_price"
            except ArithmeticError:
                return "off_tick_price"
    return None


def outside_band(price: Decimal, ref: Decimal, pct: Decimal = PRICE_BAND_PCT) -> bool:
    """True if ``price`` is more than ``pct`` percent away from ``ref`` (> 0)."""
    return abs(price - ref) * 100 > ref * pct


def _band_bounds(ref: Decimal, pct: Decimal = PRICE_BAND_PCT) -> tuple[Decimal, Decimal, Decimal]:
    """(lowest, highest, ``ref``): the prices :func:`outside_band` finds inside the band around
    ``ref`` are exactly ``lowest <= p <= highest`` (``|p - ref| * 100 <= ref * pct``, exact in
    Decimal)."""
    half = ref * pct / 100
    return ref - half, ref + half, ref


def _as_decimal(x: Any) -> Decimal | None:
    """Decimal view of a numeric price, or None for a non-numeric / bool value."""
    if isinstance(x, bool) or not isinstance(x, _NUMERIC):
        return None
    if isinstance(x, Decimal):
        return x
    try:
        return Decimal(str(x)) if isinstance(x, float) else Decimal(x)
    except (InvalidOperation, ValueError):  # pragma: no cover - defensive
        return None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class MarketDataValidator:
    """Stateful validator for trades and quotes of any number of instruments.

    Attributes:
        rejected: ``Counter`` of rejection reasons.
        accepted: number of accepted messages (trades + quotes).
        reanchored: ``Counter`` per instrument of sanity-band re-anchorings (module docstring).
    """

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self.reanchored: Counter[str] = Counter()
        # instrument -> last accepted price (trade price or quote mid): the sanity band's reference
        self._ref: dict[str, Decimal] = {}
        # instrument -> (first price, count) of the current run of out-of-band prints
        self._band_run: dict[str, tuple[Decimal, int]] = {}
        # instrument -> (ts_ns, seq, price, size)
        self._last_trade: dict[str, tuple[int, int, Decimal, int]] = {}
        # instrument -> (plausible low, plausible high, tick size): price_problem's inputs
        self._ranges: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        # instrument -> (lowest, highest price inside the band, the reference they were made from)
        self._band_bounds: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        # instrument -> (ts_ns, seq, bid, ask, bid_size, ask_size)
        self._last_quote: dict[str, tuple[int, int, Decimal, Decimal, int, int]] = {}

    def _reject(self, reason: str) -> str:
        self.rejected[reason] += 1
        return reason

    def _band(self, instrument: str, prices: tuple[Decimal, ...]) -> str | None:
        """The sanity band (module docstring): ``"price_band"`` or None. Counts the run of
        consistent out-of-band prints and re-anchors after :data:`BAND_REANCHOR_PRINTS` of them."""
        ref = self._ref.get(instrument)
        if ref is None or not any(outside_band(p, ref) for p in prices):
            self._band_run.pop(instrument, None)
            return None
        first, n = self._band_run.get(instrument, (prices[0], 0))
        if any(outside_band(p, first) for p in prices):
            first, n = prices[0], 0
        n += 1
        if n >= BAND_REANCHOR_PRINTS:
            self._band_run.pop(instrument, None)
            self.reanchored[instrument] += 1
            return None
        self._band_run[instrument] = (first, n)
        return "price_band"

    def check_trade(self, tick: TradeTick) -> str | None:
        """Validate a trade print. Returns a rejection reason, or None (and records it) if good."""
        try:
            return self._check_trade(tick)
        except Exception:  # never raise on bad data
            return self._reject("bad_type")

    def _check_trade(self, tick: TradeTick) -> str | None:
        inst = tick.instrument
        spec = INSTRUMENTS.get(inst) if isinstance(inst, str) else None
        if spec is None:
            return self._reject("unknown_instrument")
        ts, size, seq = tick.ts_ns, tick.size, tick.seq
        if not _is_int(ts) or ts < 0:
            return self._reject("bad_ts")
        price = tick.price if type(tick.price) is Decimal else _as_decimal(tick.price)
        if price is None or not _is_int(size) or not _is_int(seq):
            return self._reject("bad_type")
        rng = self._ranges.get(inst)
        if rng is None:
            rng = self._ranges[inst] = (*plausible_range(inst), spec.tick_size)
        # the common case of price_problem inline (positive: the plausible ranges start above 0)
        if not (price.is_finite() and rng[0] <= price <= rng[1] and rng[0] > 0 and not price % rng[2]):
            reason = price_problem((price,), inst)
            if reason:
                return self._reject(reason)
        if size <= 0:
            return self._reject("non_positive_size")
        key = (ts, seq, price, size)
        last = self._last_trade.get(inst)
        if last is not None:
            if ts < last[0]:
                return self._reject("out_of_order_ts")
            if key == last:
                return self._reject("duplicate")
        band = self._band_bounds.get(inst)
        if band is not None and band[0] <= price <= band[1] and band[2] == self._ref.get(inst):
            self._band_run.pop(inst, None)  # inside the band of the last accepted price
        elif self._band(inst, (price,)):
            return self._reject("price_band")
        self._last_trade[inst] = key
        self._ref[inst] = price
        self._band_bounds[inst] = band if band is not None and band[2] == price else _band_bounds(price)
        self.accepted += 1
        return None

    def check_quote(self, q: QuoteTick) -> str | None:
        """Validate a top-of-book quote. Returns a rejection reason, or None (and records it) if good."""
        try:
            return self._check_quote(q)
        except Exception:  # never raise on bad data
            return self._reject("bad_type")

    def _check_quote(self, q: QuoteTick) -> str | None:
        spec = INSTRUMENTS.get(q.instrument) if isinstance(q.instrument, str) else None
        if spec is None:
            return self._reject("unknown_instrument")
        if not _is_int(q.ts_ns) or q.ts_ns < 0:
            return self._reject("bad_ts")
        bid, ask = _as_decimal(q.bid), _as_decimal(q.ask)
        if bid is None or ask is None or not (_is_int(q.bid_size) and _is_int(q.ask_size) and _is_int(q.seq)):
            return self._reject("bad_type")
        reason = price_problem((bid, ask), q.instrument)
        if reason:
            return self._reject(reason)
        if bid >= ask:
            return self._reject("crossed_quote")
        if q.bid_size < 0 or q.ask_size < 0:
            return self._reject("non_positive_size")
        key = (q.ts_ns, q.seq, bid, ask, q.bid_size, q.ask_size)
        last = self._last_quote.get(q.instrument)
        if last is not None:
            if q.ts_ns < last[0]:
                return self._reject("out_of_order_ts")
            if key == last:
                return self._reject("duplicate")
        if self._band(q.instrument, (bid, ask)):
            return self._reject("price_band")
        self._last_quote[q.instrument] = key
        self._ref[q.instrument] = (bid + ask) / 2
        self.accepted += 1
        return None
