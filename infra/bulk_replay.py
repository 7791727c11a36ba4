"""A bar replay's routed stream built in bulk (numpy), for the ``adaptive`` intra-bar path.

The per-tick path (:class:`infra.feeds.Routed` over :meth:`infra.replay.ReplaySource.events`)
makes each bar's prints with :func:`infra.replay.bar_to_ticks`, merges the instruments with
``heapq`` and validates every print (:class:`domain.validation.MarketDataValidator`). Under the
``adaptive`` path the prints are a function of the bars alone, so :func:`bulk_routed` makes a whole
source's at once and hands each timestamp's prints to :meth:`infra.feeds.FeedCore.emit` (through
:class:`infra.feeds.Routed`): the same messages as the per-tick path, in the same order, with the
same ``Decimal`` objects for the bars' prices (a trade log writes them as the file spelled them).

- Path points, times, sizes and ``seq``: the rules of :func:`infra.replay.bar_to_ticks` (module
  docstring of :mod:`infra.replay`), as array arithmetic in integer ticks and ns.
- Continuous-path prints: ``floor(dist * j / n)`` ticks and ``span * j // n`` ns from the point
  they leave, size 1, taken from the point they lead to while it keeps one contract; their prices
  are made with the scalar path's ``Decimal`` formula.
- Merge order: ``(ts_ns, instrument, seq)``, as ``ReplaySource.events``.
- Validation: instead of checking each print, every check the validator makes is shown to pass
  for the whole stream with one array test each: known instrument, prices on the tick grid and
  inside the plausible range, sizes >= 1, times from the epoch on and strictly increasing per
  instrument (so no print is out of order or a duplicate), and each print within
  :data:`domain.validation.PRICE_BAND_PCT` of the instrument's previous one (the band's reference
  when every print is accepted). When one of them fails (a data hole wider than the band, for
  one), :func:`bulk_routed` returns None and the replay takes the per-tick path, which rejects
  and counts those prints.

Recorded trades replacing bars (``ReplaySource(trade_files=...)``) and the ``adverse`` path (which
reads the positions held as it goes) always take the per-tick path. ``tests/test_bulk_replay.py``
compares both paths message by message. Times are epoch ns UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterator

import numpy as np

from domain.instruments import INSTRUMENTS
from domain.messages import TradeTick
from domain.validation import PRICE_BAND_PCT, plausible_range
from infra.replay import NS, BarRow, ReplaySource, path_step


@dataclass
class BulkRoute:
    """A whole replay's prints, checked (:func:`bulk_routed`).

    Attributes:
        groups: the prints of each timestamp (a list of ``TradeTick``), in replay order; an
            iterator that makes them as it is read.
        ticks: prints in the stream.
    """

    groups: Iterator[list[TradeTick]]
    ticks: int


@dataclass
class _Columns:
    """One instrument's prints, in time order: ts (ns), price (ticks), size, seq, and the index of
    each print's price object in ``prices``."""

    ts: np.ndarray
    px: np.ndarray
    size: np.ndarray
    seq: np.ndarray
    obj: np.ndarray
    prices: list[Decimal]


def _instrument_columns(inst: str, bars: list[BarRow], seq0: int, step_bp: float | None) -> _Columns | None:
    """The ``adaptive``-path prints of ``bars`` (one instrument, time order), or None when a price
    is not on the tick grid (the per-tick path then rejects it as the validator does)."""
    tick = INSTRUMENTS[inst].tick_size
    prices: list[Decimal] = []
    in_ticks: dict[Decimal, int] = {}
    steps: list[int] = []
    for r in bars:
        path = (r.open, r.low, r.high, r.close) if r.close >= r.open else (r.open, r.high, r.low, r.close)
        prices.extend(path)
        if step_bp is not None:
            steps.append(int(path_step(r.open, step_bp, tick) / tick))
    try:
        for p in prices:
            if p not in in_ticks:
                q, rem = divmod(p, tick)
                if rem:
                    return None
                in_ticks[p] = int(q)
    except ArithmeticError:  # NaN, infinity
        return None
    n = len(bars)
    pts = np.fromiter((in_ticks[p] for p in prices), dtype=np.int64, count=4 * n).reshape(n, 4)
    start = np.fromiter((r.start_ns for r in bars), dtype=np.int64, count=n)
    period = np.fromiter((r.period_s for r in bars), dtype=np.int64, count=n) * NS
    vol = np.fromiter((r.volume for r in bars), dtype=np.int64, count=n)
    times = np.stack([start + (k * period) // 4 for k in range(4)], axis=1)
    base = vol // 4
    first = np.where(base > 0, base, 1)
    sizes = np.stack([first, first, first, np.maximum(1, vol - 3 * base)], axis=1)
    seqs = (seq0 + 4 * np.arange(n, dtype=np.int64))[:, None] + np.arange(4, dtype=np.int64)
    objs = np.arange(4 * n, dtype=np.int64).reshape(n, 4)
    extra: list[tuple[np.ndarray, ...]] = []
    if step_bp is not None:
        step = np.array(steps, dtype=np.int64)
        for k in range(1, 4):
            a, b = pts[:, k - 1], pts[:, k]
            dist = np.abs(b - a)
            steps_k = -(-dist // step)
            inner = np.maximum(steps_k - 1, 0)
            sizes[:, k] -= np.minimum(inner, sizes[:, k] - 1)
            rows = np.flatnonzero(inner)
            if not rows.size:
                continue
            count = inner[rows]
            rep = np.repeat(rows, count)
            j = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count) + 1
            nn = steps_k[rep]
            moved = dist[rep] * j // nn
            up = b[rep] > a[rep]
            ts = times[rep, k - 1] + (times[rep, k] - times[rep, k - 1]) * j // nn
            px = a[rep] + np.where(up, moved, -moved)
            obj = len(prices) + np.arange(rep.size, dtype=np.int64)
            neg = -tick
            prices.extend(prices[4 * i + k - 1] + (tick if u else neg) * m  # the scalar path's formula
                          for i, u, m in zip(rep.tolist(), up.tolist(), moved.tolist()))
            extra.append((ts, px, np.ones(rep.size, dtype=np.int64), seqs[rep, k], obj))
    parts = [(times.ravel(), pts.ravel(), sizes.ravel(), seqs.ravel(), objs.ravel()), *extra]
    cols = [np.concatenate([p[c] for p in parts]) for c in range(5)]
    order = np.argsort(cols[0], kind="stable")
    return _Columns(*(c[order] for c in cols), prices=prices)


def _passes_validation(inst: str, c: _Columns) -> bool:
    """True when the validator (:meth:`MarketDataValidator.check_trade`) accepts every print of
    ``c`` in turn, starting from no state for ``inst`` (module docstring)."""
    if not c.ts.size:
        return True
    if c.size.min() < 1 or c.ts[0] < 0 or (c.ts.size > 1 and np.diff(c.ts).min() <= 0):
        return False
    tick = INSTRUMENTS[inst].tick_size
    lo, hi = plausible_range(inst)
    if not (lo > 0 and tick * int(c.px.min()) >= lo and tick * int(c.px.max()) <= hi):
        return False
    # outside_band(p, ref): |p - ref| * 100 > ref * pct, exact in integers of ticks (pct = num / den)
    num, den = PRICE_BAND_PCT.as_integer_ratio()
    return not np.any(np.abs(np.diff(c.px)) * (100 * den) > c.px[:-1] * num)


def bulk_routed(source: ReplaySource, step_bp: float | None) -> BulkRoute | None:
    """The ``adaptive``-path prints of ``source`` (every replayed day, from the start), checked and
    grouped by timestamp, or None when it must take the per-tick path: a bar replaced by recorded trades, an instrument
    without a contract spec, or a print the validator would reject (module docstring).

    The prints are computed and checked here, as arrays; their ``TradeTick`` objects are made as
    :attr:`BulkRoute.groups` is iterated, :data:`CHUNK` timestamps at a time, so a run holds a few
    thousand of them at once, as the per-tick path does."""
    names = source.instruments
    cols: list[_Columns] = []
    for inst in names:
        bars, seq0, recorded = source.replay_plan(inst)
        if recorded or inst not in INSTRUMENTS:
            return None
        c = _instrument_columns(inst, bars, seq0, step_bp)
        if c is None or not _passes_validation(inst, c):
            return None
        cols.append(c)
    if not cols:
        return BulkRoute(iter(()), 0)
    ts = np.concatenate([c.ts for c in cols])
    which = np.concatenate([np.full(c.ts.size, i, dtype=np.int64) for i, c in enumerate(cols)])
    seq = np.concatenate([c.seq for c in cols])
    order = np.lexsort((seq, which, ts))
    merged = (ts[order], which[order], np.concatenate([c.obj for c in cols])[order],
              np.concatenate([c.size for c in cols])[order], seq[order])
    return BulkRoute(_groups(names, [c.prices for c in cols], merged), int(ts.size))


CHUNK = 4096
"""Timestamps whose prints :func:`bulk_routed`'s groups make at a time."""


def _groups(names: list[str], prices: list[list[Decimal]], merged: tuple[np.ndarray, ...]) -> Iterator[list[TradeTick]]:
    """The prints of each timestamp, made :data:`CHUNK` timestamps at a time from the merged
    columns (ts, instrument index, price object index, size, seq)."""
    n = int(merged[0].size)
    bounds = [0, *(np.flatnonzero(np.diff(merged[0])) + 1).tolist(), n] if n else [0]
    for c0 in range(0, len(bounds) - 1, CHUNK):
        c1 = min(c0 + CHUNK, len(bounds) - 1)
        lo, hi = bounds[c0], bounds[c1]
        ts, which, obj, size, seq = (a[lo:hi].tolist() for a in merged)
        ticks = [TradeTick(names[w], t, prices[w][o], s, q) for t, w, o, s, q in zip(ts, which, obj, size, seq)]
        for g in range(c0, c1):
            yield ticks[bounds[g] - lo:bounds[g + 1] - lo]
