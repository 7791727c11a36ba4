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
``off_tick_price``      price not a multiple of the instrument tick size
``crossed_quote``       quote with ``bid >= ask`` (a valid quote has 0 < bid < ask)
``non_positive_size``   trade size <= 0, or quote size < 0 (quote sizes may be 0 = unknown)
``out_of_order_ts``     ``ts_ns`` strictly less than the last accepted one for that stream
``duplicate``           identical (ts_ns, seq, price(s), size(s)) to the last accepted one
=====================  =====================================================================

Equal ``ts_ns`` with a different seq/price/size is accepted (several prints can share a ns).
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.instruments import INSTRUMENTS
from domain.messages import QuoteTick, TradeTick

_NUMERIC = (Decimal, int, float)


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
    """

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        # instrument -> (ts_ns, seq, price, size)
        self._last_trade: dict[str, tuple[int, int, Decimal, int]] = {}
        # instrument -> (ts_ns, seq, bid, ask, bid_size, ask_size)
        self._last_quote: dict[str, tuple[int, int, Decimal, Decimal, int, int]] = {}

    def _reject(self, reason: str) -> str:
        self.rejected[reason] += 1
        return reason

    @staticmethod
    def _check_prices(prices: tuple[Decimal, ...], tick: Decimal) -> str | None:
        """Worst problem among ``prices``: non-finite, then non-positive, then off the tick grid."""
        if not all(p.is_finite() for p in prices):
            return "nan_price"
        if any(p <= 0 for p in prices):
            return "non_positive_price"
        for p in prices:
            try:
                if p % tick != 0:
                    return "off_tick_price"
            except (InvalidOperation, ArithmeticError):
                return "off_tick_price"
        return None

    def check_trade(self, tick: TradeTick) -> str | None:
        """Validate a trade print. Returns a rejection reason, or None (and records it) if good."""
        try:
            return self._check_trade(tick)
        except Exception:  # never raise on bad data
            return self._reject("bad_type")

    def _check_trade(self, tick: TradeTick) -> str | None:
        spec = INSTRUMENTS.get(tick.instrument) if isinstance(tick.instrument, str) else None
        if spec is None:
            return self._reject("unknown_instrument")
        if not _is_int(tick.ts_ns) or tick.ts_ns < 0:
            return self._reject("bad_ts")
        price = _as_decimal(tick.price)
        if price is None or not _is_int(tick.size) or not _is_int(tick.seq):
            return self._reject("bad_type")
        reason = self._check_prices((price,), spec.tick_size)
        if reason:
            return self._reject(reason)
        if tick.size <= 0:
            return self._reject("non_positive_size")
        key = (tick.ts_ns, tick.seq, price, tick.size)
        last = self._last_trade.get(tick.instrument)
        if last is not None:
            if tick.ts_ns < last[0]:
                return self._reject("out_of_order_ts")
            if key == last:
                return self._reject("duplicate")
        self._last_trade[tick.instrument] = key
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
        reason = self._check_prices((bid, ask), spec.tick_size)
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
        self._last_quote[q.instrument] = key
        self.accepted += 1
        return None
