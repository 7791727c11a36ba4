"""Per-session trades CSV: one row per fill, written as fills arrive.

Columns: ``time_ct`` (ISO-8601, America/Chicago), ``trading_day``, ``client_order_id``,
``strategy``, ``instrument``, ``side``, ``qty`` (contracts), ``price`` (points), ``fee`` (dollars),
``trade_id``, ``purpose`` (``grid-entry``, ``grid-tp``, ``hedge-open``..., ``flatten: <reason>``; the
router reads it from the order's Redis record for an order sent before a restart, and leaves it
empty for an order that is not ours). Two backtests on the same input write byte-identical files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from domain.calendar import ns_to_ct, trading_day
from domain.messages import Fill

COLUMNS = ("time_ct", "trading_day", "client_order_id", "strategy", "instrument", "side", "qty", "price", "fee",
           "trade_id", "purpose")


class TradeLog:
    """Appends fills to ``path`` (created with a header if new). ``path=None`` keeps rows in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows = 0
        self._buf: io.StringIO | None = None
        if path is None:
            self._buf = io.StringIO()
            csv.writer(self._buf, lineterminator="\n").writerow(COLUMNS)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            with path.open("w", newline="") as fh:
                csv.writer(fh, lineterminator="\n").writerow(COLUMNS)

    def write(self, fill: Fill, purpose: str = "") -> None:
        row = (ns_to_ct(fill.ts_ns).isoformat(), trading_day(fill.ts_ns).isoformat(), fill.client_order_id,
               fill.strategy_id, fill.instrument, fill.side.value, fill.qty, str(fill.price), str(fill.fee),
               fill.trade_id, purpose)
        self.rows += 1
        if self._buf is not None:
            csv.writer(self._buf, lineterminator="\n").writerow(row)
            return
        assert self.path is not None
        with self.path.open("a", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerow(row)

    def text(self) -> str:
        """The whole CSV as text."""
        if self._buf is not None:
            return self._buf.getvalue()
        assert self.path is not None
        return self.path.read_text()
