"""Top-of-book features of the ML scalper, "where quotes exist" (issue 22, item 1; seed
/work/shared/seeds/003_42bd756451187795.txt, "Data Processing").

Quotes exist in paper on live data and live (the market hub's GatewayQuote) and in tick recordings
(infra/tick_recorder.py, MBP-1 rows); the bundled 2-minute bar files have none. A model trained
with these features names them after :data:`domain.scalper.features.FEATURES` in its feature list,
and the strategy then reads quotes (:class:`domain.strategies.ml_scalper.MlScalperStrategy`).

Features of bar ``t`` (:data:`QUOTE_FEATURES`), from the **last quote strictly before the bar's
end** (``ts_ns < end_ns``; a quote at ``end_ns`` belongs to the next bar, as a print does):

================ ===================================================================================
spread_ticks     ``(ask - bid) / tick size`` (ticks, >= 1 for a valid quote)
book_imbalance   ``(bid_size - ask_size) / (bid_size + ask_size)`` in ``[-1, 1]`` (contracts on
                 the best bid vs the best ask; 0.0 when both sizes are 0)
================ ===================================================================================

A bar with no quote before its end (the first bars of a session, a quote feed that stopped) has
no row: :meth:`QuoteFeatureBuilder.at_bar` returns None and :func:`batch_quote_features` NaN, and
the strategy takes no decision on it. No staleness limit: the last quote stands until the next one,
as the book does.

:class:`QuoteFeatureBuilder` (one quote at a time, O(1) amortised) and :func:`batch_quote_features`
(pandas ``merge_asof``) agree exactly on real MBP-1 data (tests/test_scalper_quote_features.py).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Iterable

import numpy as np
import pandas as pd

QUOTE_FEATURES: tuple[str, ...] = ("spread_ticks", "book_imbalance")
"""Quote feature names, in column order (appended after the bar features in a model that uses them)."""

QUOTE_COLUMNS: tuple[str, ...] = ("ts_ns", "bid", "ask", "bid_size", "ask_size")
"""Columns of the quote frame :func:`batch_quote_features` reads (:func:`quotes_frame` builds it)."""


def quote_row(bid: Any, ask: Any, bid_size: int, ask_size: int, tick_size: Decimal) -> tuple[float, float]:
    """``(spread_ticks, book_imbalance)`` of one quote (prices in points, sizes in contracts)."""
    bid = bid if isinstance(bid, Decimal) else Decimal(str(bid))
    ask = ask if isinstance(ask, Decimal) else Decimal(str(ask))
    spread = float((ask - bid) / tick_size)
    total = bid_size + ask_size
    return spread, (0.0 if total == 0 else (bid_size - ask_size) / total)


class QuoteFeatureBuilder:
    """Quote features at each bar's close, incrementally.

    ``on_quote(q)`` for every validated quote of the instrument (time order); ``at_bar(bar)`` when
    a bar closes returns the float64 row of shape ``(len(QUOTE_FEATURES),)`` of the last quote
    with ``ts_ns < bar.end_ns``, or None if there is none. Quotes may run ahead of the bar being
    closed (the bar closes on the first print after its end); the ones at or after its end are
    kept for the next bar. Memory: the quotes since the last closed bar's end.

    Args:
        tick_size: the instrument's tick size, points.
    """

    def __init__(self, tick_size: Decimal) -> None:
        self.tick_size = tick_size
        self._pending: deque[tuple[int, tuple[float, float]]] = deque()
        self._last: tuple[float, float] | None = None  # row of the last quote before the last bar end

    def on_quote(self, q: Any) -> None:
        """One quote (``ts_ns``, ``bid``, ``ask`` in points, ``bid_size``, ``ask_size`` in contracts)."""
        self._pending.append((int(q.ts_ns), quote_row(q.bid, q.ask, int(q.bid_size), int(q.ask_size), self.tick_size)))

    def at_bar(self, bar: Any) -> np.ndarray | None:
        """The row of the bar ending at ``bar.end_ns`` (epoch ns UTC), or None (no quote yet)."""
        end = int(bar.end_ns)
        pending = self._pending
        while pending and pending[0][0] < end:
            self._last = pending.popleft()[1]
        return None if self._last is None else np.array(self._last, dtype=np.float64)

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state: the last row and the quotes not yet consumed by a bar."""
        return {"last": None if self._last is None else list(self._last),
                "pending": [[ts, list(row)] for ts, row in self._pending]}

    @classmethod
    def restore(cls, tick_size: Decimal, d: dict[str, Any]) -> "QuoteFeatureBuilder":
        """Rebuild from :meth:`snapshot` output."""
        obj = cls(tick_size)
        obj._last = None if d.get("last") is None else (float(d["last"][0]), float(d["last"][1]))
        obj._pending.extend((int(ts), (float(r[0]), float(r[1]))) for ts, r in d.get("pending", []))
        return obj


def quotes_frame(quotes: Iterable[Any]) -> pd.DataFrame:
    """Frame of quote objects for :func:`batch_quote_features`: columns :data:`QUOTE_COLUMNS`,
    ``ts_ns`` int64 epoch ns UTC, ``bid``/``ask`` as ``Decimal`` (object), sizes int64."""
    rows = [(int(q.ts_ns), q.bid, q.ask, int(q.bid_size), int(q.ask_size)) for q in quotes]
    return pd.DataFrame(rows, columns=list(QUOTE_COLUMNS)).astype({"ts_ns": "int64", "bid_size": "int64",
                                                                   "ask_size": "int64"})


def batch_quote_features(bars: pd.DataFrame, quotes: pd.DataFrame, tick_size: Decimal) -> pd.DataFrame:
    """The quote features of a whole bar frame (training data).

    Args:
        bars: one row per bar, time order, with ``end_ns`` (epoch ns UTC) (:func:`domain.scalper.
            features.bars_frame`).
        quotes: :func:`quotes_frame` output, time order.
        tick_size: points.
    Returns:
        float64 frame ``(len(bars), len(QUOTE_FEATURES))``, index that of ``bars``; NaN where no
        quote precedes the bar's end. Equal to :meth:`QuoteFeatureBuilder.at_bar` per bar.
    Raises:
        ValueError: a column is missing or the quotes are not in time order.
    """
    for frame, cols, what in ((bars, ("end_ns",), "bar"), (quotes, QUOTE_COLUMNS, "quote")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{what} frame lacks column(s) {', '.join(missing)}")
    ts = quotes["ts_ns"].to_numpy(dtype=np.int64)
    if len(ts) > 1 and (np.diff(ts) < 0).any():
        raise ValueError("quotes must be in time order")
    rows = [quote_row(b, a, int(bs), int(as_), tick_size) for b, a, bs, as_ in
            zip(quotes["bid"], quotes["ask"], quotes["bid_size"], quotes["ask_size"])]
    q = pd.DataFrame(rows, columns=list(QUOTE_FEATURES), dtype=np.float64)
    q["ts_ns"] = ts
    q = q.groupby("ts_ns", sort=True).last().reset_index()  # the last quote of a timestamp stands
    left = pd.DataFrame({"end_ns": bars["end_ns"].to_numpy(dtype=np.int64), "_row": np.arange(len(bars))})
    merged = pd.merge_asof(left.sort_values("end_ns"), q, left_on="end_ns", right_on="ts_ns",
                           allow_exact_matches=False, direction="backward").sort_values("_row")
    out = merged[list(QUOTE_FEATURES)].astype(np.float64)
    out.index = bars.index
    return out
