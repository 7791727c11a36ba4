"""Streaming technical indicators (pure, deterministic, O(1) or O(window) per update).

Indicators compute in ``float``: they are signals, not money. Prices arrive as ``Decimal`` points
and are converted with ``float()``; outputs are in points (ATR, VWAP, bands) or are unitless
(returns, volatility, correlation, beta).

Sources (summarised in docs/reference/indicators.md):
- VWAP with standard-deviation bands: ``VWAP = sum(v*tp)/sum(v)``,
  ``sigma^2 = sum(v*(tp-VWAP)^2)/sum(v)``; shifted by a reference price to avoid catastrophic
  cancellation (docs.rs/wickra-core ``vwap_stddev_bands.rs``).
- Wilder ATR: ``TR_t = max(H-L, |H-C_prev|, |L-C_prev|)``, seed = SMA of the first n TRs, then
  ``ATR_t = (ATR_{t-1}*(n-1) + TR_t)/n`` (en.wikipedia.org/wiki/Average_true_range).
- EMA: ``alpha = 2/(n+1)`` (standard "span" EMA, e.g. pandas ``ewm(span=n, adjust=False)``).
- Rolling volatility / correlation / beta: sample (ddof=1) moments of log returns (same as
  ``numpy.std(ddof=1)`` / ``numpy.corrcoef``): volatility two-pass over the window with
  :func:`math.fsum`; correlation and beta from running sums, re-summed exactly with
  :func:`math.fsum` every ``window`` updates (numerically stable either way).

Every stateful indicator has ``snapshot() -> dict`` (JSON-safe) and ``classmethod restore(dict)``
so its state can be mirrored (e.g. to Redis) and rebuilt exactly.
"""

from __future__ import annotations

import math
from collections import deque
from decimal import Decimal
from typing import Any, Iterable


Number = float | int | Decimal


def log_return(prev: Number, cur: Number) -> float:
    """Natural log return ``ln(cur/prev)`` (unitless) between two positive prices (points).

    Raises ValueError if either price is not strictly positive (a log return is undefined).
    """
    p, c = float(prev), float(cur)
    if not (p > 0.0 and c > 0.0):
        raise ValueError(f"log_return needs positive prices, got prev={prev!r} cur={cur!r}")
    return math.log(c / p)


def _sample_var(xs: Iterable[float]) -> tuple[float, float]:
    """(mean, sample variance ddof=1) by two passes with fsum. Needs at least 2 values."""
    data = list(xs)
    n = len(data)
    mean = math.fsum(data) / n
    var = math.fsum((x - mean) ** 2 for x in data) / (n - 1)
    return mean, var


# --------------------------------------------------------------------------- ATR

class WilderATR:
    """Wilder's Average True Range, in points.

    ``TR_t = max(H_t - L_t, |H_t - C_{t-1}|, |L_t - C_{t-1}|)``; the first bar's TR is ``H - L``.
    The first ATR value (after ``n`` TRs) is the simple mean of those ``n`` TRs; afterwards
    ``ATR_t = (ATR_{t-1}*(n-1) + TR_t)/n`` (an EMA with alpha = 1/n).
    Source: Wilder (1978) via en.wikipedia.org/wiki/Average_true_range;
    docs/reference/indicators.md#atr-wilder.

    Args:
        n: look-back in bars (default 14), >= 1.
    """

    def __init__(self, n: int = 14) -> None:
        if int(n) < 1:
            raise ValueError(f"ATR period must be >= 1, got {n}")
        self.n = int(n)
        self._prev_close: float | None = None
        self._count = 0          # TRs seen so far
        self._seed_sum = 0.0     # sum of TRs while count < n
        self._atr: float | None = None
        self._last_tr: float | None = None

    def update(self, high: Number, low: Number, close: Number) -> float | None:
        """Feed one bar (points). Returns the ATR (points), or None until ``n`` TRs were seen."""
        h, l, c = float(high), float(low), float(close)
        if self._prev_close is None:
            tr = h - l
        else:
            pc = self._prev_close
            tr = max(h - l, abs(h - pc), abs(l - pc))
        self._prev_close = c
        self._last_tr = tr
        self._count += 1
        if self._atr is None:
            self._seed_sum += tr
            if self._count == self.n:
                self._atr = self._seed_sum / self.n
        else:
            self._atr = (self._atr * (self.n - 1) + tr) / self.n
        return self._atr

    @property
    def value(self) -> float | None:
        """Current ATR in points (None until ready)."""
        return self._atr

    @property
    def ready(self) -> bool:
        """True once ``n`` true ranges have been seen."""
        return self._atr is not None

    @property
    def last_tr(self) -> float | None:
        """The most recent true range, points."""
        return self._last_tr

    @property
    def count(self) -> int:
        """Number of bars fed so far."""
        return self._count

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"n": self.n, "prev_close": self._prev_close, "count": self._count,
                "seed_sum": self._seed_sum, "atr": self._atr, "last_tr": self._last_tr}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> "WilderATR":
        """Rebuild from :meth:`snapshot` output (exact)."""
        obj = cls(int(d["n"]))
        obj._prev_close = d.get("prev_close")
        obj._count = int(d.get("count", 0))
        obj._seed_sum = float(d.get("seed_sum", 0.0))
        obj._atr = d.get("atr")
        obj._last_tr = d.get("last_tr")
        return obj


# --------------------------------------------------------------------------- VWAP

class SessionVWAP:
    """Anchored (session) VWAP with volume-weighted standard-deviation bands, in points.

    ``VWAP = sum(v*p)/sum(v)``; ``sigma^2 = sum(v*(p-VWAP)^2)/sum(v)`` (population variance about
    the current VWAP); bands ``VWAP +/- k*sigma``. Sources:
    docs/reference/indicators.md#session-vwap-and-bands, docs.rs/wickra-core ``vwap_stddev_bands.rs``.

    Numerics: sums are kept about a reference price ``c`` (the first price after :meth:`reset`):
    ``S0 = sum v``, ``S1 = sum v*(p-c)``, ``S2 = sum v*(p-c)^2``; then ``VWAP = c + S1/S0`` and
    ``sigma^2 = S2/S0 - (S1/S0)^2``, which avoids the cancellation of ``sum v*p^2/sum v - VWAP^2``
    at large prices (wickra-core approach). Volume is in contracts; zero (or negative) volume
    updates are ignored. Call :meth:`reset` at each anchor (e.g. 17:00 CT session open).
    """

    def __init__(self) -> None:
        self._ref: float | None = None
        self._s0 = 0.0
        self._s1 = 0.0
        self._s2 = 0.0

    def reset(self) -> None:
        """Start a new anchor: all sums to zero, reference price cleared."""
        self._ref = None
        self._s0 = self._s1 = self._s2 = 0.0

    def update(self, price_or_tp: Number, volume: Number) -> float | None:
        """Add ``volume`` contracts at ``price_or_tp`` points. Returns the VWAP (None if no volume yet)."""
        v = float(volume)
        if not v > 0.0:
            return self.value
        p = float(price_or_tp)
        if self._ref is None:
            self._ref = p
        d = p - self._ref
        self._s0 += v
        self._s1 += v * d
        self._s2 += v * d * d
        return self.value

    def update_bar(self, high: Number, low: Number, close: Number, volume: Number) -> float | None:
        """Add a bar using its typical price ``(H+L+C)/3`` (points) and its volume (contracts)."""
        tp = (float(high) + float(low) + float(close)) / 3.0
        return self.update(tp, volume)

    @property
    def volume(self) -> float:
        """Total volume since the anchor, contracts."""
        return self._s0

    @property
    def value(self) -> float | None:
        """VWAP in points, None before any volume."""
        if self._s0 <= 0.0 or self._ref is None:
            return None
        return self._ref + self._s1 / self._s0

    @property
    def std(self) -> float | None:
        """Volume-weighted population std (points) about the current VWAP; None before any volume."""
        if self._s0 <= 0.0:
            return None
        m = self._s1 / self._s0
        var = self._s2 / self._s0 - m * m
        return math.sqrt(var) if var > 0.0 else 0.0

    def band(self, k: float) -> tuple[float, float] | None:
        """``(VWAP - k*sigma, VWAP + k*sigma)`` in points; None before any volume."""
        vw, sd = self.value, self.std
        if vw is None or sd is None:
            return None
        return vw - k * sd, vw + k * sd

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"ref": self._ref, "s0": self._s0, "s1": self._s1, "s2": self._s2}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> "SessionVWAP":
        """Rebuild from :meth:`snapshot` output (exact)."""
        obj = cls()
        obj._ref = d.get("ref")
        obj._s0 = float(d.get("s0", 0.0))
        obj._s1 = float(d.get("s1", 0.0))
        obj._s2 = float(d.get("s2", 0.0))
        return obj


# --------------------------------------------------------------------------- EMA

class EMA:
    """Exponential moving average with ``alpha = 2/(n+1)``.

    Seeding: the first value fed becomes the EMA (no SMA warm-up), i.e. the recursive form
    ``EMA_t = alpha*x_t + (1-alpha)*EMA_{t-1}`` with ``EMA_0 = x_0`` (same as pandas
    ``ewm(span=n, adjust=False)``). Units are those of the input.
    """

    def __init__(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError(f"EMA period must be >= 1, got {n}")
        self.n = int(n)
        self.alpha = 2.0 / (self.n + 1)
        self._value: float | None = None
        self._count = 0

    def update(self, x: Number) -> float:
        """Feed one value; returns the new EMA."""
        xf = float(x)
        if self._value is None:
            self._value = xf
        else:
            self._value = self._value + self.alpha * (xf - self._value)
        self._count += 1
        return self._value

    @property
    def value(self) -> float | None:
        """Current EMA (None before the first value)."""
        return self._value

    @property
    def count(self) -> int:
        """Values fed so far."""
        return self._count

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"n": self.n, "value": self._value, "count": self._count}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> "EMA":
        """Rebuild from :meth:`snapshot` output."""
        obj = cls(int(d["n"]))
        obj._value = d.get("value")
        obj._count = int(d.get("count", 0))
        return obj


# --------------------------------------------------------------------------- rolling volatility

class RollingVolatility:
    """Sample std (ddof=1) of the log returns of successive closes over the last ``window`` returns.

    Per-bar (not annualised) volatility, unitless. Two-pass fsum over the window (O(window) per
    update, exact to float rounding; equals ``numpy.std(np.diff(np.log(closes))[-window:], ddof=1)``).

    Args:
        window: number of returns kept (>= 2).
        min_periods: returns needed before a value is produced (2 <= min_periods <= window);
            default ``window``.
    Closes must be positive (points); a non-positive close raises ValueError.
    """

    def __init__(self, window: int, min_periods: int | None = None) -> None:
        self.window = int(window)
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.min_periods = self.window if min_periods is None else int(min_periods)
        if not 2 <= self.min_periods <= self.window:
            raise ValueError(f"min_periods must be in [2, {self.window}], got {min_periods}")
        self._rets: deque[float] = deque(maxlen=self.window)
        self._prev: float | None = None
        self._value: float | None = None

    def update(self, close: Number) -> float | None:
        """Feed one close (points). Returns the volatility, or None until ``min_periods`` returns."""
        c = float(close)
        if not c > 0.0:
            raise ValueError(f"close must be positive, got {close!r}")
        if self._prev is not None:
            self._rets.append(math.log(c / self._prev))
        self._prev = c
        if len(self._rets) >= self.min_periods:
            self._value = math.sqrt(_sample_var(self._rets)[1])
        else:
            self._value = None
        return self._value

    @property
    def value(self) -> float | None:
        """Latest volatility (None until enough returns)."""
        return self._value

    @property
    def count(self) -> int:
        """Returns currently in the window."""
        return len(self._rets)

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"window": self.window, "min_periods": self.min_periods, "prev": self._prev,
                "rets": list(self._rets), "value": self._value}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> "RollingVolatility":
        """Rebuild from :meth:`snapshot` output."""
        obj = cls(int(d["window"]), int(d["min_periods"]))
        obj._prev = d.get("prev")
        obj._rets.extend(float(x) for x in d.get("rets", []))
        obj._value = d.get("value")
        return obj


# --------------------------------------------------------------------------- rolling correlation

class RollingCorrelation:
    """Rolling Pearson correlation, beta and vols of two return series fed in pairs.

    Over the last ``window`` pairs (a, b): ``cov = sum((a-ma)(b-mb))/(N-1)``,
    ``var = sum((x-m)^2)/(N-1)`` (sample, ddof=1); ``corr = cov/sqrt(var_a*var_b)``,
    ``beta = cov/var_b`` (regression slope of a on b: hedge ratio in return terms),
    ``vol_a = sqrt(var_a)``, ``vol_b = sqrt(var_b)``. Matches ``numpy.corrcoef``/``numpy.cov``
    (to ~1e-12 relative on return series).
    O(1) per update: running sums of a, b, a^2, b^2 and ab over the window (the pair leaving the
    window is subtracted), re-summed exactly (``math.fsum``) every ``window`` updates so rounding
    cannot accumulate; ``cov = (S_ab - S_a S_b / N)/(N-1)``. Returns are centred near 0, so the
    one-pass formula loses no precision that matters here. (A two-pass sum per update would cost
    ~10 % of a 28-session backtest.)

    Args:
        window: pairs kept (>= 2).
        min_periods: pairs needed before values are produced (2..window); default ``window``.
    Correlation and beta are None while not ready or when a variance is 0.
    """

    def __init__(self, window: int, min_periods: int | None = None) -> None:
        self.window = int(window)
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.min_periods = self.window if min_periods is None else int(min_periods)
        if not 2 <= self.min_periods <= self.window:
            raise ValueError(f"min_periods must be in [2, {self.window}], got {min_periods}")
        self._a: deque[float] = deque(maxlen=self.window)
        self._b: deque[float] = deque(maxlen=self.window)
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # a, b, a*a, b*b, a*b over the window
        self._since_resum = 0
        self._corr: float | None = None
        self._beta: float | None = None
        self._vol_a: float | None = None
        self._vol_b: float | None = None

    def update(self, ret_a: Number, ret_b: Number) -> float | None:
        """Feed one pair of returns. Returns the correlation in [-1, 1] or None."""
        a, b = float(ret_a), float(ret_b)
        sums = self._sums
        if len(self._a) == self.window:  # the oldest pair leaves the window
            oa, ob = self._a[0], self._b[0]
            sums[0] -= oa
            sums[1] -= ob
            sums[2] -= oa * oa
            sums[3] -= ob * ob
            sums[4] -= oa * ob
        self._a.append(a)
        self._b.append(b)
        sums[0] += a
        sums[1] += b
        sums[2] += a * a
        sums[3] += b * b
        sums[4] += a * b
        self._since_resum += 1
        if self._since_resum >= self.window:
            self._resum()
        else:
            self._recompute()
        return self._corr

    def _resum(self) -> None:
        """Exact sums of the window (no rounding carried over from earlier updates)."""
        a, b = self._a, self._b
        self._sums = [math.fsum(a), math.fsum(b), math.fsum(x * x for x in a), math.fsum(y * y for y in b),
                      math.fsum(x * y for x, y in zip(a, b))]
        self._since_resum = 0
        self._recompute()

    def _recompute(self) -> None:
        self._corr = self._beta = self._vol_a = self._vol_b = None
        n = len(self._a)
        if n < self.min_periods:
            return
        sa, sb, saa, sbb, sab = self._sums
        va = max(0.0, (saa - sa * sa / n) / (n - 1))
        vb = max(0.0, (sbb - sb * sb / n) / (n - 1))
        cov = (sab - sa * sb / n) / (n - 1)
        self._vol_a, self._vol_b = math.sqrt(va), math.sqrt(vb)
        if vb > 0.0:
            self._beta = cov / vb
        if va > 0.0 and vb > 0.0:
            self._corr = max(-1.0, min(1.0, cov / math.sqrt(va * vb)))

    @property
    def value(self) -> float | None:
        """Latest correlation (None if not ready or a variance is 0)."""
        return self._corr

    @property
    def beta(self) -> float | None:
        """``cov(a, b)/var(b)``; None if not ready or var(b) is 0."""
        return self._beta

    @property
    def vol_a(self) -> float | None:
        """Sample std of series a over the window (None until ready)."""
        return self._vol_a

    @property
    def vol_b(self) -> float | None:
        """Sample std of series b over the window (None until ready)."""
        return self._vol_b

    @property
    def count(self) -> int:
        """Pairs currently in the window."""
        return len(self._a)

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"window": self.window, "min_periods": self.min_periods, "a": list(self._a), "b": list(self._b),
                "sums": list(self._sums), "since_resum": self._since_resum}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> "RollingCorrelation":
        """Rebuild from :meth:`snapshot` output."""
        obj = cls(int(d["window"]), int(d["min_periods"]))
        obj._a.extend(float(x) for x in d.get("a", []))
        obj._b.extend(float(x) for x in d.get("b", []))
        if "sums" in d:  # the running sums as they were: a restored series continues bit for bit
            obj._sums = [float(x) for x in d["sums"]]
            obj._since_resum = int(d.get("since_resum", 0))
            obj._recompute()
        else:
            obj._resum()
        return obj
