"""CME contract specifications, month codes and front-month / roll logic.

Pure data and date arithmetic; no I/O.

Sources (see ``docs/reference/topstep-rules.md``, sections "CME contract specifications" and
"Fees"):
- Contract sizes, tick sizes and values: CME contract spec pages for ES, MES, NQ, MNQ, CL, MCL
  (summarised in docs/reference/topstep-rules.md#cme-contract-specifications).
- TopstepX fees per side: help.topstep.com article 8284213 (ES/NQ $3.78 round turn = $1.89 per side,
  MES/MNQ $1.22 RT = $0.61/side, CL $4.02 RT = $2.01/side, MCL $1.52 RT = $0.76/side).
- Micro contracts count 10:1 against the Topstep maximum position (HC 8284197; "HC n" is
  https://help.topstep.com/en/articles/n).
- Equity index roll: CME convention, 8 calendar days before the 3rd-Friday expiry (cmegroup.com
  rolldates). CL last trade: 3 business days before the 25th of the month before delivery
  (4 if the 25th is not a business day); MCL one business day before CL.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping

MONTH_CODES: str = "FGHJKMNQUVXZ"
"""Futures month codes, index 0 = January (barchart.com month code table)."""


class UnknownInstrumentError(KeyError):
    """Raised when a symbol is not in :data:`INSTRUMENTS`."""


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """Static contract specification.

    Attributes:
        symbol: our ticker (``"MES"``).
        name: human name.
        exchange: listing exchange (``"CME"``, ``"NYMEX"``).
        tick_size: minimum price increment, in points (``Decimal("0.25")``).
        tick_value: dollars per tick per contract.
        point_value: dollars per 1.0 point per contract (= tick_value / tick_size).
        mini_equivalent: how much one contract counts against a Topstep max-position limit
            expressed in minis (1 for a mini, ``0.1`` for a micro: micros count 10:1).
        mini_symbol: the full-size contract this one is the micro of (itself for minis).
        fee_per_side: TopstepX commission + exchange + NFA fees per contract per side, dollars.
        months: listed contract month codes (``"HMUZ"`` for quarterly equity index).
        projectx_root: the root ProjectX uses in contract ids (``EP`` for ES, ``ENQ`` for NQ);
            only a search hint, ids are always resolved through the gateway.
        roll_rule: ``"equity_index"`` or ``"crude"`` (see :func:`roll_date`).
    """

    symbol: str
    name: str
    exchange: str
    tick_size: Decimal
    tick_value: Decimal
    point_value: Decimal
    mini_equivalent: Decimal
    mini_symbol: str
    fee_per_side: Decimal
    months: str
    projectx_root: str
    roll_rule: str

    @property
    def is_micro(self) -> bool:
        """True for micro contracts (they count 10:1 against Topstep limits)."""
        return self.mini_equivalent < 1

    def to_ticks(self, price: Decimal) -> int:
        """Price in points -> integer ticks. Raises ValueError if not on the tick grid."""
        q, r = divmod(price, self.tick_size)
        if r != 0:
            raise ValueError(f"{self.symbol}: price {price} is not a multiple of tick size {self.tick_size}")
        return int(q)

    def from_ticks(self, ticks: int) -> Decimal:
        """Integer ticks -> price in points."""
        return self.tick_size * ticks

    def round_to_tick(self, price: float | Decimal, mode: str = "nearest") -> Decimal:
        """Round a price (points) onto the tick grid.

        Args:
            price: a price in points (float from an indicator, or Decimal).
            mode: ``"nearest"`` (ties away from zero), ``"down"`` (floor) or ``"up"`` (ceiling).
        Returns: a Decimal multiple of ``tick_size``.

        The tick count is ``Decimal(str(price)) / tick_size`` rounded by ``mode``. A float price
        to the nearest tick is first divided in floats: within a million ticks of zero the float
        quotient is within 1e-9 ticks of the Decimal one, so when it is more than 1e-6 ticks
        from a tie both round to the same tick (``tests/test_fast_paths.py`` holds the two
        together); nearer a tie, and in every other case, the Decimal quotient decides.
        """
        if type(price) is float and mode == "nearest":
            q = price / float(self.tick_size)
            if -1e6 < q < 1e6:
                n = round(q)
                if abs(q - n) < 0.499999:
                    return self.tick_size * n
        ticks = Decimal(str(price)) / self.tick_size
        if mode == "down":
            n = math.floor(ticks)
        elif mode == "up":
            n = math.ceil(ticks)
        elif mode == "nearest":
            n = int(ticks.to_integral_value(rounding="ROUND_HALF_UP"))
        else:
            raise ValueError(f"unknown rounding mode {mode!r}")
        return self.tick_size * n

    def pnl(self, entry: Decimal, exit_: Decimal, signed_qty: int) -> Decimal:
        """Dollar P&L of ``signed_qty`` contracts (positive = long) from ``entry`` to ``exit_``.

        Computed as integer ticks x tick value, so it is exact (no float drift).
        """
        return Decimal(self.to_ticks(exit_ - entry) * signed_qty) * self.tick_value


def _spec(symbol: str, name: str, exchange: str, tick_size: str, tick_value: str, mini_eq: str, mini_symbol: str,
          fee: str, months: str, root: str, roll_rule: str) -> InstrumentSpec:
    ts, tv = Decimal(tick_size), Decimal(tick_value)
    return InstrumentSpec(symbol, name, exchange, ts, tv, tv / ts, Decimal(mini_eq), mini_symbol, Decimal(fee),
                          months, root, roll_rule)


INSTRUMENTS: Mapping[str, InstrumentSpec] = {
    s.symbol: s
    for s in (
        _spec("ES", "E-mini S&P 500", "CME", "0.25", "12.50", "1", "ES", "1.89", "HMUZ", "EP", "equity_index"),
        _spec("MES", "Micro E-mini S&P 500", "CME", "0.25", "1.25", "0.1", "ES", "0.61", "HMUZ", "MES", "equity_index"),
        _spec("NQ", "E-mini Nasdaq-100", "CME", "0.25", "5.00", "1", "NQ", "1.89", "HMUZ", "ENQ", "equity_index"),
        _spec("MNQ", "Micro E-mini Nasdaq-100", "CME", "0.25", "0.50", "0.1", "NQ", "0.61", "HMUZ", "MNQ", "equity_index"),
        _spec("CL", "Crude Oil", "NYMEX", "0.01", "10.00", "1", "CL", "2.01", MONTH_CODES, "CLE", "crude"),
        _spec("MCL", "Micro WTI Crude Oil", "NYMEX", "0.01", "1.00", "0.1", "CL", "0.76", MONTH_CODES, "MCLE", "crude"),
    )
}
"""All supported instruments by symbol."""


def get_instrument(symbol: str) -> InstrumentSpec:
    """Look up a spec. Raises :class:`UnknownInstrumentError` naming the symbol."""
    try:
        return INSTRUMENTS[symbol]
    except KeyError:
        raise UnknownInstrumentError(f"unknown instrument {symbol!r}; known: {', '.join(sorted(INSTRUMENTS))}") from None


def third_friday(year: int, month: int) -> dt.date:
    """Third Friday of a month (equity index futures expiry day)."""
    first = dt.date(year, month, 1)
    offset = (4 - first.weekday()) % 7  # Friday = 4
    return first + dt.timedelta(days=offset + 14)


def _business_days_before(day: dt.date, n: int) -> dt.date:
    d = day
    while n > 0:
        d -= dt.timedelta(days=1)
        if d.weekday() < 5:
            n -= 1
    return d


def expiry_date(symbol: str, year: int, month: int) -> dt.date:
    """Last trading day of the contract ``symbol`` for delivery month ``year-month``.

    Equity index: third Friday of the contract month. CL: 3 business days before the 25th of the
    month before delivery (4 if the 25th is not a business day). MCL: 1 business day before CL.
    Business days here skip weekends only, not exchange holidays.
    """
    spec = get_instrument(symbol)
    if spec.roll_rule == "equity_index":
        return third_friday(year, month)
    prev_y, prev_m = (year, month - 1) if month > 1 else (year - 1, 12)
    the_25th = dt.date(prev_y, prev_m, 25)
    n = 3 if the_25th.weekday() < 5 else 4
    cl_last = _business_days_before(the_25th, n)
    return _business_days_before(cl_last, 1) if symbol == "MCL" else cl_last


def roll_date(symbol: str, year: int, month: int) -> dt.date:
    """Day from which we trade the next contract instead of ``year-month``.

    Equity index: 8 calendar days before expiry (CME's roll convention, usually the 2nd Thursday).
    Crude: CME has no roll convention (docs/reference/topstep-rules.md#cme-contract-specifications);
    our choice is to roll 3 business days before the last trading day.
    """
    exp = expiry_date(symbol, year, month)
    if get_instrument(symbol).roll_rule == "equity_index":
        return exp - dt.timedelta(days=8)
    return _business_days_before(exp, 3)


def front_month(symbol: str, on: dt.date) -> tuple[int, int]:
    """The (year, month) contract to trade on date ``on`` (America/Chicago trading date).

    The front month is the first listed month whose roll date is after ``on``.
    """
    spec = get_instrument(symbol)
    year = on.year
    for _ in range(3):
        for code in spec.months:
            month = MONTH_CODES.index(code) + 1
            if on < roll_date(symbol, year, month):
                return year, month
        year += 1
    raise AssertionError("unreachable: a listed month exists within 3 years")


def contract_code(symbol: str, year: int, month: int) -> str:
    """Exchange-style local symbol, e.g. ``contract_code("MES", 2026, 6) == "MESM6"``."""
    get_instrument(symbol)
    return f"{symbol}{MONTH_CODES[month - 1]}{year % 10}"
