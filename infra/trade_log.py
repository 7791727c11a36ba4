"""Per-session trades CSV: one row per fill, written as fills arrive.

Columns: ``time_ct`` (ISO-8601, America/Chicago), ``trading_day``, ``client_order_id``,
``strategy``, ``instrument``, ``side``, ``qty`` (contracts), ``price`` (points), ``fee`` (dollars),
``trade_id``, ``purpose`` (``grid-entry``, ``grid-tp``, ``hedge-open``..., ``flatten: <reason>``; the
router reads it from the order's Redis record for an order sent before a restart, and leaves it
empty for an order that is not ours), ``day_pnl`` (dollars: the trading day's realized net P&L
after fees, running, up to and including this fill; the day rolls at 17:00 CT as in
:class:`domain.risk_rules.AccountLedger`, so a day's last row is the day's net P&L that risk's
per-day table and the session summary show). Two backtests on the same input write
byte-identical files.

``day_pnl`` is folded here from the fills themselves (:class:`domain.portfolio.Portfolio`, the same
FIFO fold risk uses), not read from risk: the router writes this file and does not see risk. When
the file already exists (a restart), its rows are folded first so the running value continues.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

from domain.calendar import dt_to_ns, ns_to_ct, trading_day
from domain.messages import Fill, Side
from domain.portfolio import Portfolio

COLUMNS = ("time_ct", "trading_day", "client_order_id", "strategy", "instrument", "side", "qty", "price", "fee",
           "trade_id", "purpose", "day_pnl")


def read_rows(text: str) -> list[tuple[str, Fill]]:
    """``(trading_day, Fill)`` per row of a trades CSV, in file order (the fill's ``ts_ns`` and
    ``leaves_qty`` are not in the file: 0)."""
    return [(r["trading_day"], Fill(r["client_order_id"], r["strategy"], r["trade_id"], r["instrument"],
                                    Side(r["side"]), int(r["qty"]), Decimal(r["price"]), Decimal(r["fee"]), 0, 0))
            for r in csv.DictReader(io.StringIO(text))]


class TradeRow(NamedTuple):
    """One row of a trades CSV: its trading day (ISO, America/Chicago), the fill (``ts_ns`` from
    ``time_ct``, epoch ns UTC, to the microsecond) and the order's purpose."""

    trading_day: str
    fill: Fill
    purpose: str


def read_records(text: str) -> list[TradeRow]:
    """Every row of a trades CSV with its time and purpose (:class:`TradeRow`), in file order."""
    out = []
    for r in csv.DictReader(io.StringIO(text)):
        t = dt.datetime.fromisoformat(r["time_ct"])
        out.append(TradeRow(r["trading_day"], Fill(
            r["client_order_id"], r["strategy"], r["trade_id"], r["instrument"], Side(r["side"]), int(r["qty"]),
            Decimal(r["price"]), Decimal(r["fee"]), 0, dt_to_ns(t)), r.get("purpose") or ""))
    return out


class TradeLog:
    """Appends fills to ``path`` (created with a header if new). ``path=None`` keeps rows in memory.

    ``buffered=True`` (a backtest): rows are kept in memory and :meth:`flush` writes the file whole
    (the header is written at once, so the file exists from the start); a paper or live session
    appends each fill as it comes, so the file survives a crash.
    """

    def __init__(self, path: Path | None, buffered: bool = False) -> None:
        self.path = path
        self.rows = 0
        self._buf: io.StringIO | None = None
        self._book = Portfolio()  # account-wide fold for the running day_pnl
        self._day: str | None = None
        self._day_pnl = Decimal(0)
        if path is None or buffered:
            self._buf = io.StringIO()
            csv.writer(self._buf, lineterminator="\n").writerow(COLUMNS)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if buffered:
            if path.exists() and path.stat().st_size:
                raise ValueError(f"{path}: a buffered trade log starts a new file")
            path.write_text(self._buf.getvalue(), newline="")
            return
        if not path.exists() or path.stat().st_size == 0:
            with path.open("w", newline="") as fh:
                csv.writer(fh, lineterminator="\n").writerow(COLUMNS)
            return
        for day, fill in read_rows(path.read_text()):  # a restart: continue the fold
            self._fold(day, fill)

    def _fold(self, day: str, fill: Fill) -> Decimal:
        """Apply ``fill`` to the running day P&L of ``day``; returns it."""
        if day != self._day:
            self._day, self._day_pnl = day, Decimal(0)
        effect = self._book.apply_fill(fill)
        if effect is not None:
            self._day_pnl += effect.realized - effect.fee
        return self._day_pnl

    def write(self, fill: Fill, purpose: str = "") -> None:
        day = trading_day(fill.ts_ns).isoformat()
        day_pnl = self._fold(day, fill)
        row = (ns_to_ct(fill.ts_ns).isoformat(), day, fill.client_order_id,
               fill.strategy_id, fill.instrument, fill.side.value, fill.qty, str(fill.price), str(fill.fee),
               fill.trade_id, purpose, str(day_pnl))
        self.rows += 1
        if self._buf is not None:
            csv.writer(self._buf, lineterminator="\n").writerow(row)
            return
        assert self.path is not None
        with self.path.open("a", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerow(row)

    def flush(self) -> None:
        """Write a buffered log's rows to its file (no-op for an appending or in-memory log)."""
        if self.path is not None and self._buf is not None:
            self.path.write_text(self._buf.getvalue(), newline="")

    def fills(self) -> list[Fill]:
        """Every fill in the CSV (a resumed session's earlier processes included), in file order."""
        return [fill for _, fill in read_rows(self.text())]

    def records(self) -> list[TradeRow]:
        """Every row with its fill time and purpose (:func:`read_records`), in file order."""
        return read_records(self.text())

    def text(self) -> str:
        """The whole CSV as text."""
        if self._buf is not None:
            return self._buf.getvalue()
        assert self.path is not None
        return self.path.read_text()
