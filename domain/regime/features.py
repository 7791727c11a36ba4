"""Regime features of 5-minute bars (seed 002, section 2.2).

Source: /work/shared/seeds/002_2613e4c741f6e65a.txt, section 2.2 ("regime/features.py") and
Decision Point 5 (the optional 4th feature ``bar_range_pct``).

Features (all unitless fractions computed in ``float`` from the bars' ``Decimal`` points; the
``_pct`` names are the seed's, the values are **fractions**, 0.001 = 0.1 %):

============== ================================================ ==============================
name           formula (bar ``t``)                               first defined at bar index
============== ================================================ ==============================
return_pct     ``(close_t - close_{t-1}) / close_{t-1}``          1
volatility     sample std (**ddof=1**) of the last 10 return_pct  10 (returns of bars t-9..t)
volume_ratio   ``volume_t / mean(volume_{t-19..t})``              19 (window includes bar t)
bar_range_pct  ``(high_t - low_t) / close_t``                     0
============== ================================================ ==============================

Choices (documented in docs/strategies/regime.md, "The regime model"):

- ``volatility`` uses the **sample** standard deviation (ddof=1), as pandas ``rolling(10).std()``
  and :class:`domain.indicators.RollingVolatility` do; computed two-pass with :func:`math.fsum`.
- ``volume_ratio``'s 20-bar mean **includes** the current bar (pandas ``rolling(20).mean()``), so
  the mean is 0 only when all 20 volumes are 0, the current one included; that 0/0 is defined as
  **1.0** ("an ordinary bar": no volume information). Yahoo files have some volume-0 bars.
- Bars are taken as consecutive, whatever the time between them (session breaks, the nightly
  Yahoo hole, weekends): the return across a gap is the move over the gap. No filling.
- Warm-up: the first ``warmup`` bars (default 20, the seed's) produce no row; rows are
  **dropped, never filled**. ``warmup`` must be at least the first index at which every requested
  feature is defined (19 with ``volume_ratio``, see :func:`min_warmup`).

:func:`compute_features` (batch) and :class:`FeatureBuilder` (one bar at a time) give bit-identical
numbers: both compute ``volatility`` with the same kernel (:func:`_sample_std`) and the other
features with the same IEEE operations (tests/test_regime_model.py).

Bars: anything with ``open/high/low/close`` (``Decimal`` or float points) and ``volume`` (int
contracts), e.g. :class:`domain.messages.Bar` or :class:`infra.replay.BarRow`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable, Sequence

import numpy as np

FEATURES: tuple[str, ...] = ("return_pct", "volatility", "volume_ratio")
"""The seed's three features (section 2.2), in this column order."""

OPTIONAL_FEATURES: tuple[str, ...] = ("bar_range_pct",)
"""Decision Point 5's candidate 4th feature: ``(high - low) / close``."""

ALL_FEATURES: tuple[str, ...] = FEATURES + OPTIONAL_FEATURES

VOL_WINDOW = 10
"""Returns in the ``volatility`` window."""

VOLUME_WINDOW = 20
"""Bars in the ``volume_ratio`` mean (current bar included)."""

DEFAULT_WARMUP = 20
"""The seed's ``warmup_bars`` (section 2.2)."""

_FIRST_INDEX = {"return_pct": 1, "volatility": VOL_WINDOW, "volume_ratio": VOLUME_WINDOW - 1,
                "bar_range_pct": 0}


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate feature names: non-empty, known (:data:`ALL_FEATURES`), no repeats.

    Returns them as a tuple. Raises ValueError naming the offending entry.
    """
    out = tuple(names)
    if not out:
        raise ValueError("no features requested")
    for n in out:
        if n not in ALL_FEATURES:
            raise ValueError(f"unknown feature {n!r}; known: {', '.join(ALL_FEATURES)}")
    if len(set(out)) != len(out):
        raise ValueError(f"repeated feature in {out}")
    return out


def min_warmup(names: Sequence[str] = FEATURES) -> int:
    """Smallest ``warmup`` for ``names``: the first bar index at which all are defined
    (19 when ``volume_ratio`` is requested, 10 for ``volatility``, 1 for ``return_pct``)."""
    return max(_FIRST_INDEX[n] for n in check_names(names))


def _check_warmup(names: tuple[str, ...], warmup: int) -> int:
    w = int(warmup)
    need = min_warmup(names)
    if w < need:
        raise ValueError(f"warmup {warmup} is too short for {names}: at least {need} bars are needed")
    return w


def _sample_std(values: Iterable[float]) -> float:
    """Sample (ddof=1) standard deviation, two-pass with :func:`math.fsum` (exact summation)."""
    v = list(values)
    m = math.fsum(v) / len(v)
    return math.sqrt(math.fsum((x - m) * (x - m) for x in v) / (len(v) - 1))


def _volume_ratio(volume: int, window_sum: int, window_len: int) -> float:
    """``volume / (window_sum / window_len)``; 1.0 when the window's volume is 0 (then so is ``volume``)."""
    if window_sum == 0:
        return 1.0
    return float(volume) / (window_sum / window_len)


def _price(x: Any, what: str) -> float:
    p = float(x)
    if not (math.isfinite(p) and p > 0.0):
        raise ValueError(f"bar {what} must be a positive finite price, got {x!r}")
    return p


def _volume(x: Any) -> int:
    v = int(x)
    if v < 0:
        raise ValueError(f"bar volume must be >= 0, got {x!r}")
    return v


def compute_features(bars: Sequence[Any], names: Sequence[str] = FEATURES,
                     warmup: int = DEFAULT_WARMUP) -> np.ndarray:
    """Feature matrix of a bar sequence (batch).

    Args:
        bars: bars in time order (``open/high/low/close`` points, ``volume`` contracts).
        names: feature columns, in order (:data:`FEATURES`, optionally ``"bar_range_pct"``).
        warmup: leading bars that produce no row (default 20; >= :func:`min_warmup`).

    Returns:
        ``float64`` array of shape ``(max(len(bars) - warmup, 0), len(names))``: row ``i`` is bar
        ``warmup + i``. Unitless fractions (module docstring); the warm-up rows are dropped.

    Raises:
        ValueError: unknown/repeated names, warmup too short, a non-positive or non-finite
        price, a negative volume.
    """
    names = check_names(names)
    warmup = _check_warmup(names, warmup)
    n = len(bars)
    k = len(names)
    if n <= warmup:
        return np.empty((0, k), dtype=np.float64)
    close = np.array([_price(b.close, "close") for b in bars], dtype=np.float64)
    vol = np.array([_volume(b.volume) for b in bars], dtype=np.int64)
    ret = np.full(n, np.nan)
    ret[1:] = (close[1:] - close[:-1]) / close[:-1]
    rows = slice(warmup, n)
    out = np.empty((n - warmup, k), dtype=np.float64)
    for j, name in enumerate(names):
        if name == "return_pct":
            out[:, j] = ret[rows]
        elif name == "volatility":
            out[:, j] = [_sample_std(ret[t - VOL_WINDOW + 1:t + 1].tolist()) for t in range(warmup, n)]
        elif name == "volume_ratio":
            csum = np.concatenate(([0], np.cumsum(vol)))
            wsum = csum[VOLUME_WINDOW:] - csum[:-VOLUME_WINDOW]  # wsum[t - 19] = sum(vol[t-19..t])
            out[:, j] = [_volume_ratio(int(vol[t]), int(wsum[t - VOLUME_WINDOW + 1]), VOLUME_WINDOW)
                         for t in range(warmup, n)]
        else:  # bar_range_pct
            high = np.array([_price(b.high, "high") for b in bars[warmup:]], dtype=np.float64)
            low = np.array([_price(b.low, "low") for b in bars[warmup:]], dtype=np.float64)
            out[:, j] = (high - low) / close[rows]
    return out


class FeatureBuilder:
    """Incremental :func:`compute_features`: one bar in, one feature row out (or None).

    ``update(bar)`` returns None for the first ``warmup`` bars, then the row of that bar: a
    ``float64`` array of shape ``(len(names),)``, bit-identical to the matching row of
    :func:`compute_features` over the same bars. O(10 + 20) per bar (two :func:`math.fsum` passes).

    ``snapshot()`` is JSON-safe (floats round-trip exactly through ``json``);
    ``FeatureBuilder.restore(snapshot)`` rebuilds the builder so that it continues identically.

    Args:
        names: feature columns (:data:`FEATURES`, optionally ``"bar_range_pct"``).
        warmup: bars without a row (default 20; >= :func:`min_warmup`).
    """

    SNAPSHOT_VERSION = 1

    def __init__(self, names: Sequence[str] = FEATURES, warmup: int = DEFAULT_WARMUP) -> None:
        self.names = check_names(names)
        self.warmup = _check_warmup(self.names, warmup)
        self._rets: deque[float] = deque(maxlen=VOL_WINDOW)
        self._vols: deque[int] = deque(maxlen=VOLUME_WINDOW)
        self._prev: float | None = None
        self._count = 0

    @property
    def count(self) -> int:
        """Bars seen since construction / :meth:`reset`."""
        return self._count

    @property
    def ready(self) -> bool:
        """True once the warm-up is over (the last :meth:`update` returned a row)."""
        return self._count > self.warmup

    def reset(self) -> None:
        """Forget every bar (warm-up starts again)."""
        self._rets.clear()
        self._vols.clear()
        self._prev = None
        self._count = 0

    def update(self, bar: Any) -> np.ndarray | None:
        """Feed one closed bar (time order). Returns its feature row ``(len(names),)`` or None
        during the warm-up. Raises ValueError for a non-positive price or a negative volume (the
        builder is then unchanged)."""
        c = _price(bar.close, "close")
        v = _volume(bar.volume)
        rng = None
        if "bar_range_pct" in self.names:
            rng = (_price(bar.high, "high") - _price(bar.low, "low")) / c
        if self._prev is not None:
            self._rets.append((c - self._prev) / self._prev)
        self._prev = c
        self._vols.append(v)
        self._count += 1
        if self._count <= self.warmup:
            return None
        row = np.empty(len(self.names), dtype=np.float64)
        for j, name in enumerate(self.names):
            if name == "return_pct":
                row[j] = self._rets[-1]
            elif name == "volatility":
                row[j] = _sample_std(self._rets)
            elif name == "volume_ratio":
                row[j] = _volume_ratio(v, sum(self._vols), VOLUME_WINDOW)
            else:
                row[j] = rng
        return row

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state: names, warmup, previous close, the return and volume windows, count."""
        return {"version": self.SNAPSHOT_VERSION, "names": list(self.names), "warmup": self.warmup,
                "prev_close": self._prev, "returns": list(self._rets), "volumes": list(self._vols),
                "count": self._count}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> "FeatureBuilder":
        """Rebuild from :meth:`snapshot` output. Raises ValueError for another snapshot version or
        an inconsistent snapshot."""
        if d.get("version") != cls.SNAPSHOT_VERSION:
            raise ValueError(f"feature builder snapshot version {d.get('version')!r}, "
                             f"expected {cls.SNAPSHOT_VERSION}")
        obj = cls(d["names"], int(d["warmup"]))
        rets = [float(x) for x in d.get("returns", [])]
        vols = [int(x) for x in d.get("volumes", [])]
        count = int(d.get("count", 0))
        prev = d.get("prev_close")
        if len(rets) > VOL_WINDOW or len(vols) > VOLUME_WINDOW or count < len(vols) \
                or (count > 0) != (prev is not None) or min(count, VOLUME_WINDOW) != len(vols) \
                or min(max(count - 1, 0), VOL_WINDOW) != len(rets):
            raise ValueError("inconsistent feature builder snapshot")
        obj._rets.extend(rets)
        obj._vols.extend(vols)
        obj._prev = None if prev is None else float(prev)
        obj._count = count
        return obj
