"""Each strategy's own P&L, drawdown and exposure while the session runs (the ``strategy_*``
metrics, docs/operations.md "Metrics").

A FIFO portfolio per strategy (:class:`domain.portfolio.Portfolio`, exact Decimal dollars), fed
with every fill in execution order. A fill of risk's flatten or the emergency flatten is split
among the strategies holding the opposite position in its instrument, oldest holder first, with
the fee split per contract: the same attribution as the end-of-run summary
(:func:`domain.report.booked_fills`), so the figures add up to the account's.

Per strategy: realized and unrealized P&L and fees (session), the day's net P&L (total now minus
total at the trading day's start, 17:00 CT roll), the drawdown from its highest total, its net
position per instrument it has traded (0 when flat). Money in dollars, positions in contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from domain.messages import Fill
from domain.portfolio import Portfolio
from domain.report import SYSTEM_OWNERS, booked_fills


@dataclass(frozen=True, slots=True)
class StrategyFigures:
    """One strategy's figures at one moment: dollars, contracts."""

    strategy: str
    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    day_pnl: Decimal
    drawdown: Decimal
    positions: tuple[tuple[str, int], ...]

    @property
    def total(self) -> Decimal:
        """Session P&L after fees: realized + unrealized - fees."""
        return self.realized + self.unrealized - self.fees


class StrategyBooks:
    """The per-strategy portfolios (module docstring). Not thread-safe: risk owns it."""

    def __init__(self) -> None:
        self.names: list[str] = []  # in order of first fill: the attribution order of risk's closes
        self.books: dict[str, Portfolio] = {}
        self.day_start: dict[str, Decimal] = {}
        self.peak: dict[str, Decimal] = {}

    def apply(self, fill: Fill) -> None:
        """Book one fill (a strategy's own, or a share of a system close); duplicates are ignored."""
        if fill.strategy_id not in SYSTEM_OWNERS and fill.strategy_id not in self.books:
            self.names.append(fill.strategy_id)
            self.books[fill.strategy_id] = Portfolio()
        for _ in booked_fills([fill], self.names, self.books):
            pass

    def _total(self, name: str, marks: Mapping[str, Decimal]) -> Decimal:
        book = self.books[name]
        return book.realized + book.unrealized(marks) - book.fees

    def roll_day(self, marks: Mapping[str, Decimal]) -> None:
        """A new trading day starts: each strategy's day P&L counts from its total now."""
        self.day_start = {name: self._total(name, marks) for name in self.names}

    def figures(self, marks: Mapping[str, Decimal]) -> tuple[StrategyFigures, ...]:
        """Every strategy's :class:`StrategyFigures` at ``marks`` (last prices, points); updates
        the high-water marks the drawdowns are measured from."""
        out = []
        for name in self.names:
            book = self.books[name]
            unreal = book.unrealized(marks)
            total = book.realized + unreal - book.fees
            peak = max(self.peak.get(name, Decimal(0)), total)
            self.peak[name] = peak
            positions = tuple(sorted((sym, p.qty) for sym, p in book.positions.items()))
            out.append(StrategyFigures(name, book.realized, unreal, book.fees,
                                       total - self.day_start.get(name, Decimal(0)), peak - total, positions))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (Decimals as strings)."""
        return {"names": list(self.names), "books": {k: v.to_dict() for k, v in self.books.items()},
                "day_start": {k: str(v) for k, v in self.day_start.items()},
                "peak": {k: str(v) for k, v in self.peak.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StrategyBooks":
        """Rebuild from :meth:`to_dict`. Raises KeyError / ValueError on a malformed dict."""
        b = cls()
        b.names = list(d["names"])
        b.books = {k: Portfolio.from_dict(v) for k, v in d["books"].items()}
        b.day_start = {k: Decimal(v) for k, v in d.get("day_start", {}).items()}
        b.peak = {k: Decimal(v) for k, v in d.get("peak", {}).items()}
        return b
