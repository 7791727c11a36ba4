"""Bar features of the ML scalper, incremental (live and replay) and batch (training).

Source: /work/shared/seeds/003_42bd756451187795.txt, "Data Processing" ("Calculate real-time
features"; the runtime loop's ``features = feature_engine.update(bar)``), and its issue: features
computed incrementally in O(1) per bar, the same code for training and inference, proven equal to a
batch pandas computation on real data (tests/test_scalper_features.py).

Features of bar ``t`` (closes ``c``, highs ``h``, lows ``l`` in index points converted to
``float``; volumes ``v`` in contracts), column order :data:`FEATURES`:

================ ====================================================================== ==========
name             formula (bar ``t``)                                                    first idx
================ ====================================================================== ==========
ret_1            ``ln(c_t / c_{t-1})`` (log return, unitless)                           1
ret_5            ``ln(c_t / c_{t-5})``                                                  5
ret_15           ``ln(c_t / c_{t-15})``                                                 15
rvol_20          sample std (**ddof=1**) of the 20 one-bar log returns ``t-19..t``      20
volume_ratio_20  ``v_t / mean(v_{t-19..t})`` (window includes bar t); 0/0 -> **1.0**    19
range_atr_20     ``(h_t - l_t) / mean(h_i - l_i, i = t-19..t)``; 0/0 -> **1.0**         19
vwap_dist        ``(c_t - VWAP_t) / c_t``, session VWAP (below), unitless fraction      0
tod_sin          ``sin(2 pi f)``, ``f`` = time of day of the bar's **end**, America/     0
                 Chicago wall clock, as a fraction of 24 h (``[0, 1)``)
tod_cos          ``cos(2 pi f)``                                                        0
================ ====================================================================== ==========

- **Session VWAP**: ``sum(tp_i * v_i) / sum(v_i)`` over the bars of the current session, with the
  typical price ``tp = (h + l + c) / 3`` (points). The session is the CME/Topstep trading day of the
  bar's **start**, :func:`domain.calendar.trading_day` (a new one begins at 17:00 America/Chicago;
  Friday 17:00 and the weekend belong to Monday), so the VWAP resets on the first bar at or after
  the 17:00 CT open. While the session's volume is 0 (Yahoo files have some volume-0 bars, e.g. the
  first bar of a file) the VWAP is the plain mean of the session's typical prices. The session sums
  start at the first bar fed: a builder (or a frame) that starts in mid-session sees a VWAP of the
  bars since then only, so start at a session open, or warm up from one (the previous day's bars).
  The cumulative sums are Kahan-compensated, as pandas ``groupby().cumsum()`` is.
- **Time zone**: all timestamps are epoch ns UTC; the time of day is America/Chicago wall-clock
  time (CST/CDT, so 17:00 CT is the session open all year), from the bar's ``end_ns``.
- **Gaps**: bars are taken as consecutive whatever the time between them (the nightly Yahoo hole,
  weekends, feed holes): a return across a gap is the move over the gap, windows count bars, not
  minutes. No filling. Only the VWAP looks at the clock (the session change).
- **Zero volume / flat bars**: ``volume_ratio_20`` is 1.0 when the 20 volumes are all 0 (the
  current one included: "an ordinary bar", no information); ``range_atr_20`` is 1.0 when the 20
  ranges are all 0. A zero ``v_t`` with volume in the window gives 0.0, as does a zero range.
- **Warm-up**: :data:`WARMUP` = 20 bars. Bar index ``t`` (0-based, counted from the first bar fed)
  has a feature row only when ``t >= 20`` (``rvol_20`` needs 20 one-bar returns, i.e. 21 closes);
  :meth:`FeatureBuilder.update` returns None for the first 20 bars and :func:`batch_features` puts
  NaN in **every** column of its first 20 rows, even for features defined earlier.
- **Quote features** (spread and book imbalance, "where quotes exist"): :mod:`domain.scalper.
  quote_features`, appended after ``tod_cos`` in a model trained on a tick recording.

:class:`FeatureBuilder` (one bar at a time, O(1): windows of at most 20 values) and
:func:`batch_features` (pandas, vectorised) agree on real bars (tests/test_scalper_features.py holds
them to ``rtol=1e-9, atol=1e-12``). Measured on the 2-min ES/NQ and 5-min NQ files: the volume,
range, VWAP and time-of-day columns are bit-identical; the returns differ by at most 1 ulp
(``math.log`` vs ``numpy.log``) and ``rvol_20`` by < 1e-12 relative (pandas' online rolling variance
vs the builder's exact two-pass :func:`math.fsum`).

Bars: :class:`domain.messages.Bar` or :class:`infra.replay.BarRow` (or anything with ``start_ns``,
``end_ns``, ``high``, ``low``, ``close`` in ``Decimal`` or float points, and int ``volume``).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from domain.calendar import CT, NS, UTC, trading_day

FEATURES: tuple[str, ...] = ("ret_1", "ret_5", "ret_15", "rvol_20", "volume_ratio_20", "range_atr_20",
                             "vwap_dist", "tod_sin", "tod_cos")
"""Bar feature names, in column order (the quote features follow them in a model that has them:
:data:`domain.scalper.quote_features.QUOTE_FEATURES`)."""

RETURN_HORIZONS: tuple[int, ...] = (1, 5, 15)
"""Bars back of ``ret_1``, ``ret_5``, ``ret_15``."""

WINDOW = 20
"""Bars in the ``rvol_20`` (one-bar returns), ``volume_ratio_20`` and ``range_atr_20`` windows."""

WARMUP = 20
"""Bars without a feature row: the first row is that of bar index 20 (the 21st bar)."""

BAR_COLUMNS: tuple[str, ...] = ("start_ns", "end_ns", "open", "high", "low", "close", "volume")
"""Columns of the frame :func:`batch_features` reads (:func:`bars_frame` builds it)."""

DAY_NS = 86_400 * NS
TWO_PI = 2.0 * math.pi
_MAX_LAG = max(RETURN_HORIZONS)


@functools.lru_cache(maxsize=4096)
def _ct_offset_ns(utc_hour: int) -> int:
    """UTC offset of America/Chicago (ns) during a UTC hour (epoch hours). Its changes (02:00 local,
    = 07:00 / 08:00 UTC) fall on whole UTC hours, so one value per hour is exact."""
    off = dt.datetime.fromtimestamp(utc_hour * 3600, tz=UTC).astimezone(CT).utcoffset()
    return int(off.total_seconds()) * NS


def _time_of_day(end_ns: int) -> tuple[float, float]:
    """``(sin, cos)`` of the Chicago time of day of ``end_ns`` on the unit circle (1.0 = 24 h)."""
    sod = (end_ns + _ct_offset_ns(end_ns // (3600 * NS))) % DAY_NS
    angle = TWO_PI * (sod / DAY_NS)
    return math.sin(angle), math.cos(angle)


def _sample_std(values: Iterable[float]) -> float:
    """Sample (ddof=1) standard deviation, two-pass with :func:`math.fsum` (exact summation)."""
    v = list(values)
    m = math.fsum(v) / len(v)
    return math.sqrt(math.fsum((x - m) * (x - m) for x in v) / (len(v) - 1))


def _price(x: Any, what: str) -> float:
    p = float(x)
    if not (math.isfinite(p) and p > 0.0):
        raise ValueError(f"bar {what} must be a positive finite price, got {x!r}")
    return p


def _kahan_add(total: float, comp: float, x: float) -> tuple[float, float]:
    """One step of a Kahan-compensated sum, written as pandas' ``groupby().cumsum()`` does it:
    returns the new ``(total, compensation)``."""
    y = x - comp
    t = total + y
    return t, (t - total) - y


class FeatureBuilder:
    """Incremental features: one closed bar in, one row (or None) out, O(1) per bar.

    ``update(bar)`` returns None for the first :data:`WARMUP` bars, then a ``float64`` array of
    shape ``(len(FEATURES),)`` in :data:`FEATURES` order (unitless; module docstring), equal to the
    matching row of :func:`batch_features` over the same bars (module docstring: bit-identical
    or within 1e-12 relative).

    State: the last 16 closes, the last 20 one-bar log returns, volumes and ranges (deques; each
    window sum is recomputed exactly, 20 values at most), and the current session's running sums
    for the VWAP. ``snapshot()`` is JSON-safe (floats round-trip exactly through ``json``) and
    ``FeatureBuilder.restore(snapshot)`` continues identically.
    """

    SNAPSHOT_VERSION = 1

    def __init__(self) -> None:
        self._closes: deque[float] = deque(maxlen=_MAX_LAG + 1)
        self._rets: deque[float] = deque(maxlen=WINDOW)
        self._vols: deque[int] = deque(maxlen=WINDOW)
        self._ranges: deque[float] = deque(maxlen=WINDOW)
        self._vol_sum = 0  # sum(self._vols), exact (int)
        self._session: dt.date | None = None
        self._pv = self._pv_c = 0.0  # session sum of tp * v (Kahan total, compensation)
        self._tp = self._tp_c = 0.0  # session sum of tp
        self._v = 0  # session volume, contracts
        self._n = 0  # session bars
        self._last_start: int | None = None
        self._count = 0

    @property
    def count(self) -> int:
        """Bars seen since construction / :meth:`reset`."""
        return self._count

    @property
    def ready(self) -> bool:
        """True once the warm-up is over (the last :meth:`update` returned a row)."""
        return self._count > WARMUP

    def reset(self) -> None:
        """Forget every bar (warm-up and session sums start again)."""
        self.__init__()

    def update(self, bar: Any) -> np.ndarray | None:
        """Feed one closed bar (time order). Returns its feature row, shape ``(len(FEATURES),)``
        float64, or None during the warm-up.

        Raises ValueError (the builder is then unchanged) for a non-positive or non-finite price,
        ``high < low``, a negative volume, ``end_ns <= start_ns``, or a bar that does not start
        after the previous one.
        """
        h, lo, c = _price(bar.high, "high"), _price(bar.low, "low"), _price(bar.close, "close")
        v = int(bar.volume)
        start, end = int(bar.start_ns), int(bar.end_ns)
        if h < lo:
            raise ValueError(f"bar high {bar.high} is below its low {bar.low}")
        if v < 0:
            raise ValueError(f"bar volume must be >= 0, got {bar.volume!r}")
        if end <= start:
            raise ValueError(f"bar end_ns {end} is not after its start_ns {start}")
        if self._last_start is not None and start <= self._last_start:
            raise ValueError(f"bar start_ns {start} is not after the previous bar's {self._last_start}")
        day = trading_day(start)

        # --- state update (nothing below raises)
        self._last_start = start
        self._count += 1
        if self._closes:
            self._rets.append(math.log(c / self._closes[-1]))
        self._closes.append(c)
        if len(self._vols) == WINDOW:
            self._vol_sum -= self._vols[0]
        self._vols.append(v)
        self._vol_sum += v
        rng = h - lo
        self._ranges.append(rng)
        if day != self._session:
            self._session = day
            self._pv = self._pv_c = self._tp = self._tp_c = 0.0
            self._v = self._n = 0
        tp = (h + lo + c) / 3.0
        self._pv, self._pv_c = _kahan_add(self._pv, self._pv_c, tp * v)
        self._tp, self._tp_c = _kahan_add(self._tp, self._tp_c, tp)
        self._v += v
        self._n += 1
        if self._count <= WARMUP:
            return None

        # --- the row
        closes = self._closes
        rets = [math.log(c / closes[-1 - k]) for k in RETURN_HORIZONS]
        rvol = _sample_std(self._rets)
        volume_ratio = 1.0 if self._vol_sum == 0 else float(v) / (self._vol_sum / WINDOW)
        range_mean = math.fsum(self._ranges) / WINDOW
        range_atr = 1.0 if range_mean == 0.0 else rng / range_mean
        vwap = self._pv / self._v if self._v > 0 else self._tp / self._n
        tod_sin, tod_cos = _time_of_day(end)
        return np.array(rets + [rvol, volume_ratio, range_atr, (c - vwap) / c, tod_sin, tod_cos],
                        dtype=np.float64)

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state: the windows (closes, returns, volumes, ranges), the session's trading
        day (ISO date) and running sums, the last bar start (epoch ns) and the bar count."""
        return {"version": self.SNAPSHOT_VERSION, "count": self._count, "last_start_ns": self._last_start,
                "closes": list(self._closes), "returns": list(self._rets), "volumes": list(self._vols),
                "ranges": list(self._ranges),
                "session": None if self._session is None else self._session.isoformat(),
                "session_pv": [self._pv, self._pv_c], "session_tp": [self._tp, self._tp_c],
                "session_volume": self._v, "session_bars": self._n}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> FeatureBuilder:
        """Rebuild from :meth:`snapshot` output. Raises ValueError for another snapshot version or
        an inconsistent snapshot (window lengths that do not match the bar count)."""
        if d.get("version") != cls.SNAPSHOT_VERSION:
            raise ValueError(f"scalper feature snapshot version {d.get('version')!r}, "
                             f"expected {cls.SNAPSHOT_VERSION}")
        obj = cls()
        count = int(d["count"])
        closes = [float(x) for x in d["closes"]]
        rets = [float(x) for x in d["returns"]]
        vols = [int(x) for x in d["volumes"]]
        ranges = [float(x) for x in d["ranges"]]
        session = d.get("session")
        start = d.get("last_start_ns")
        n = int(d["session_bars"])
        if (count < 0 or len(closes) != min(count, _MAX_LAG + 1) or len(rets) != min(max(count - 1, 0), WINDOW)
                or len(vols) != min(count, WINDOW) or len(ranges) != min(count, WINDOW)
                or (count > 0) != (session is not None) or (count > 0) != (start is not None)
                or not (0 <= n <= count) or (count > 0 and n == 0) or min(vols, default=0) < 0):
            raise ValueError("inconsistent scalper feature snapshot")
        obj._count = count
        obj._closes.extend(closes)
        obj._rets.extend(rets)
        obj._vols.extend(vols)
        obj._vol_sum = sum(vols)
        obj._ranges.extend(ranges)
        obj._session = None if session is None else dt.date.fromisoformat(session)
        obj._pv, obj._pv_c = (float(x) for x in d["session_pv"])
        obj._tp, obj._tp_c = (float(x) for x in d["session_tp"])
        obj._v = int(d["session_volume"])
        obj._n = n
        obj._last_start = None if start is None else int(start)
        return obj


def bars_frame(bars: Iterable[Any]) -> pd.DataFrame:
    """Frame of bar objects for :func:`batch_features`: columns :data:`BAR_COLUMNS`, one row per
    bar in the given order, ``start_ns``/``end_ns`` int64 epoch ns UTC, prices float64 points
    (``float()`` of the ``Decimal``), ``volume`` int64 contracts; RangeIndex."""
    rows = [(int(b.start_ns), int(b.end_ns), float(b.open), float(b.high), float(b.low), float(b.close),
             int(b.volume)) for b in bars]
    frame = pd.DataFrame(rows, columns=list(BAR_COLUMNS))
    return frame.astype({"start_ns": "int64", "end_ns": "int64", "open": "float64", "high": "float64",
                         "low": "float64", "close": "float64", "volume": "int64"})


def _session_days(start_ns: np.ndarray) -> np.ndarray:
    """Vectorised :func:`domain.calendar.trading_day` of epoch-ns bar starts, as ``datetime64[D]``:
    the Chicago date, +1 day at or after 17:00 CT, Saturday/Sunday rolled to Monday."""
    wall = pd.DatetimeIndex(pd.to_datetime(start_ns, unit="ns", utc=True)).tz_convert(CT).tz_localize(None)
    day = wall.normalize() + pd.to_timedelta((wall.hour >= 17).astype(np.int64), unit="D")
    dow = day.day_of_week
    day = day + pd.to_timedelta(np.where(dow == 5, 2, np.where(dow == 6, 1, 0)), unit="D")
    return day.to_numpy().astype("datetime64[D]")


def batch_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The features of a whole bar frame at once (pandas, vectorised): training data.

    Args:
        bars: one row per bar in time order, columns ``start_ns``, ``end_ns`` (epoch ns UTC),
            ``high``, ``low``, ``close`` (points), ``volume`` (contracts); ``open`` is not used.
            :func:`bars_frame` builds it from bar objects.

    Returns:
        float64 frame of shape ``(len(bars), len(FEATURES))``, columns :data:`FEATURES`, index
        that of ``bars``; row ``i`` equals ``FeatureBuilder.update`` of bar ``i`` after bars
        ``0..i-1``; the first :data:`WARMUP` rows are all NaN.

    Raises:
        ValueError: a missing column, a non-positive or non-finite price, ``high < low``, a
        negative volume, ``end_ns <= start_ns``, or bar starts not strictly increasing.
    """
    missing = [c for c in ("start_ns", "end_ns", "high", "low", "close", "volume") if c not in bars.columns]
    if missing:
        raise ValueError(f"bar frame lacks column(s) {', '.join(missing)}")
    idx = bars.index
    start = bars["start_ns"].to_numpy(dtype=np.int64)
    end = bars["end_ns"].to_numpy(dtype=np.int64)
    h = pd.Series(bars["high"].to_numpy(dtype=np.float64), index=idx)
    lo = pd.Series(bars["low"].to_numpy(dtype=np.float64), index=idx)
    c = pd.Series(bars["close"].to_numpy(dtype=np.float64), index=idx)
    v = pd.Series(bars["volume"].to_numpy(dtype=np.int64), index=idx)
    for name, s in (("high", h), ("low", lo), ("close", c)):
        if not (np.isfinite(s.to_numpy()).all() and (s.to_numpy() > 0.0).all()):
            raise ValueError(f"bar {name} must be positive finite prices")
    if (h < lo).any():
        raise ValueError("bar high below its low")
    if (v < 0).any():
        raise ValueError("bar volume must be >= 0")
    if (end <= start).any():
        raise ValueError("bar end_ns not after its start_ns")
    if (np.diff(start) <= 0).any():
        raise ValueError("bar start_ns not strictly increasing")

    out = pd.DataFrame(index=idx, columns=list(FEATURES), dtype=np.float64)
    for k in RETURN_HORIZONS:
        out[f"ret_{k}"] = np.log(c / c.shift(k))
    out["rvol_20"] = np.log(c / c.shift(1)).rolling(WINDOW).std(ddof=1)

    vol_sum = v.astype(np.float64).rolling(WINDOW).sum()
    out["volume_ratio_20"] = (v / (vol_sum / WINDOW)).where(vol_sum != 0.0, 1.0)
    rng = h - lo
    range_mean = rng.rolling(WINDOW).sum() / WINDOW
    out["range_atr_20"] = (rng / range_mean).where(range_mean != 0.0, 1.0)

    session = _session_days(start)
    tp = (h + lo + c) / 3.0
    grouped = pd.DataFrame({"pv": tp * v, "tp": tp, "v": v}, index=idx).groupby(session, sort=False)
    cums = grouped.cumsum()
    n = grouped.cumcount() + 1
    vwap = (cums["pv"] / cums["v"]).where(cums["v"] > 0, cums["tp"] / n)
    out["vwap_dist"] = (c - vwap) / c

    wall = pd.DatetimeIndex(pd.to_datetime(end, unit="ns", utc=True)).tz_convert(CT).tz_localize(None)
    sod = wall.to_numpy().astype("datetime64[ns]").view(np.int64) % DAY_NS
    angle = TWO_PI * (sod / DAY_NS)
    out["tod_sin"] = np.sin(angle)
    out["tod_cos"] = np.cos(angle)

    # rolling windows read before the frame for rows < WINDOW are NaN already; blank the whole warm-up
    out.iloc[:WARMUP] = np.nan
    return out
