"""Scalper bar features (domain/scalper/features.py): incremental == batch on real bars, snapshot /
restore, the 17:00 CT VWAP reset, hand-computed values.

Data: in the repository ``data/demo/ES_2min.csv.gz`` / ``NQ_2min.csv.gz`` (4 trading days of real
2-minute bars) and ``tests/data/databento_es/NQ_1min.csv.gz`` (30 real 1-minute bars). Optional,
skipped when absent or not readable by :mod:`infra.replay`: the 28-session 2-minute ES and the
5-minute NQ (volume-0 bars) files of ``/work/shared/data/es_nq_yahoo_2m_5m/``, and the 1-minute
NQ sample (``/work/shared/data/NQ_1min_sample.csv.gz``, or the FRD copy, whose ``timestamp``
header the replay loader does not read: that case skips).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domain.calendar import CT, NS, dt_to_ns, trading_day
from domain.messages import Bar
from domain.scalper.features import (
    FEATURES,
    WARMUP,
    FeatureBuilder,
    _session_days,
    bars_frame,
    batch_features,
)
from infra.replay import BadDataFile, ReplaySource

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("/work/shared/data")

REAL_FILES = {
    "demo-ES-2min": ("MES", [ROOT / "data/demo/ES_2min.csv.gz"]),
    "demo-NQ-2min": ("MNQ", [ROOT / "data/demo/NQ_2min.csv.gz"]),
    "databento-NQ-1min": ("MNQ", [ROOT / "tests/data/databento_es/NQ_1min.csv.gz"]),
    "shared-ES-2min-28d": ("MES", [SHARED / "es_nq_yahoo_2m_5m/ES_2min.csv.gz"]),
    "shared-NQ-5min": ("MNQ", [SHARED / "es_nq_yahoo_2m_5m/NQ_5min.csv.gz"]),
    "shared-NQ-1min-sample": ("MNQ", [SHARED / "NQ_1min_sample.csv.gz",
                                      SHARED / "frd_nq_spy_1m_2026-06/NQ_1min_sample.csv.gz"]),
}
IN_REPO = {"demo-ES-2min", "demo-NQ-2min", "databento-NQ-1min"}


def real_bars(name: str) -> list:
    """Bars of a :data:`REAL_FILES` entry read as the reports read them (``ReplaySource``, every day,
    no warm-up split); skips when an optional file is absent or unreadable by infra.replay."""
    inst, candidates = REAL_FILES[name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        assert name not in IN_REPO, f"bundled file missing: {candidates[0]}"
        pytest.skip(f"{name}: no file at {', '.join(map(str, candidates))}")
    try:
        src = ReplaySource({inst: path}, warmup_days=0)
    except BadDataFile as exc:
        assert name not in IN_REPO
        pytest.skip(f"{name}: not readable by infra.replay ({exc})")
    bars = src.bars(inst)
    assert len(bars) > WARMUP
    return bars


def incremental(bars: list) -> list:
    fb = FeatureBuilder()
    return [fb.update(b) for b in bars]


@pytest.fixture(scope="module")
def demo_es() -> list:
    return real_bars("demo-ES-2min")


# --------------------------------------------------------------------------- incremental == batch

@pytest.mark.parametrize("name", list(REAL_FILES))
def test_incremental_equals_batch_on_real_bars(name: str) -> None:
    bars = real_bars(name)
    rows = incremental(bars)
    frame = batch_features(bars_frame(bars))
    assert list(frame.columns) == list(FEATURES) and len(frame) == len(bars)
    assert (frame.index == pd.RangeIndex(len(bars))).all()
    # warm-up: None incrementally, all-NaN rows in batch; afterwards rows everywhere, finite
    assert all(r is None for r in rows[:WARMUP])
    assert frame.iloc[:WARMUP].isna().all().all()
    assert all(r is not None and r.shape == (len(FEATURES),) and r.dtype == np.float64 for r in rows[WARMUP:])
    inc = np.vstack(rows[WARMUP:])
    batch = frame.iloc[WARMUP:].to_numpy()
    assert np.isfinite(batch).all()
    np.testing.assert_allclose(inc, batch, rtol=1e-9, atol=1e-12)


def test_real_data_covers_session_changes_and_vectorised_session_day(demo_es: list) -> None:
    starts = np.array([b.start_ns for b in demo_es], dtype=np.int64)
    days = _session_days(starts)
    assert [np.datetime64(trading_day(int(s)), "D") for s in starts] == list(days)
    assert len(set(days.tolist())) == 4  # 4 trading days: the VWAP resets 3 times inside the data


@pytest.mark.parametrize("local", [
    "2026-04-10 16:59", "2026-04-10 17:00", "2026-04-11 12:00", "2026-04-12 16:59", "2026-04-12 17:00",
    "2026-04-07 00:00", "2026-04-07 16:58", "2026-03-08 01:59", "2026-03-08 03:00", "2026-03-08 17:00",
    "2026-11-01 01:30", "2026-11-01 17:00", "2026-12-31 23:59",
])
def test_vectorised_session_day_matches_calendar(local: str) -> None:
    ns = dt_to_ns(dt.datetime.fromisoformat(local).replace(tzinfo=CT))
    assert _session_days(np.array([ns], dtype=np.int64))[0] == np.datetime64(trading_day(ns), "D")


def test_batch_index_is_the_input_index(demo_es: list) -> None:
    frame = bars_frame(demo_es[:60])
    frame.index = pd.Index(range(1000, 1060))
    out = batch_features(frame)
    assert list(out.index) == list(frame.index)
    np.testing.assert_array_equal(out.to_numpy(), batch_features(bars_frame(demo_es[:60])).to_numpy())


# --------------------------------------------------------------------------- snapshot / restore

@pytest.mark.parametrize("cut", [0, 1, 7, WARMUP, WARMUP + 1, 700, 1500])
def test_snapshot_restore_continues_identically(demo_es: list, cut: int) -> None:
    bars = demo_es[:1600]
    whole = incremental(bars)
    fb = FeatureBuilder()
    for b in bars[:cut]:
        fb.update(b)
    snap = json.loads(json.dumps(fb.snapshot()))
    restored = FeatureBuilder.restore(snap)
    assert restored.count == cut and restored.snapshot() == snap
    for b, expected in zip(bars[cut:], whole[cut:]):
        got = restored.update(b)
        if expected is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, expected)


def test_restore_rejects_bad_snapshots(demo_es: list) -> None:
    fb = FeatureBuilder()
    for b in demo_es[:30]:
        fb.update(b)
    snap = fb.snapshot()
    with pytest.raises(ValueError, match="version"):
        FeatureBuilder.restore({**snap, "version": 99})
    with pytest.raises(ValueError, match="inconsistent"):
        FeatureBuilder.restore({**snap, "volumes": snap["volumes"][1:]})
    with pytest.raises(ValueError, match="inconsistent"):
        FeatureBuilder.restore({**snap, "count": 3})


# --------------------------------------------------------------------------- hand-made bars

T0 = dt.datetime(2026, 4, 7, 9, 0, tzinfo=CT)  # a Tuesday, regular hours


def bar(start: dt.datetime, close: float, volume: int, rng: float = 1.0, period_s: int = 60,
        low: float | None = None) -> Bar:
    """A 1-bar helper: ``close`` at the top of a ``rng``-point range unless ``low`` is given."""
    s = dt_to_ns(start)
    lo = close - rng if low is None else low
    hi = lo + rng
    return Bar("MES", period_s, s, s + period_s * NS, Decimal(repr(close)), Decimal(repr(hi)),
               Decimal(repr(lo)), Decimal(repr(close)), volume, ts_ns=s + period_s * NS)


def minute_bars(closes: list[float], volumes: list[int], ranges: list[float] | None = None) -> list[Bar]:
    ranges = ranges or [1.0] * len(closes)
    return [bar(T0 + dt.timedelta(minutes=i), c, v, r) for i, (c, v, r) in enumerate(zip(closes, volumes, ranges))]


def test_hand_computed_returns_volume_ratio_range_and_rvol() -> None:
    closes = [100.0] * 20 + [101.0, 99.0, 99.0]
    volumes = [10] * 20 + [30, 0, 21]
    ranges = [1.0] * 20 + [3.0, 0.5, 1.0]
    rows = incremental(minute_bars(closes, volumes, ranges))
    assert rows[:WARMUP] == [None] * WARMUP
    f = dict(zip(FEATURES, rows[20]))
    # bar 20: close 100 -> 101; window of volumes = bars 1..20 = 19 x 10 + 30 = 220, mean 11
    assert f["ret_1"] == pytest.approx(math.log(1.01), rel=1e-15)
    assert f["ret_5"] == pytest.approx(math.log(1.01), rel=1e-15)
    assert f["ret_15"] == pytest.approx(math.log(1.01), rel=1e-15)
    assert f["volume_ratio_20"] == pytest.approx(30 / 11, rel=1e-15)
    assert f["range_atr_20"] == pytest.approx(3.0 / 1.1, rel=1e-15)  # (19 x 1 + 3) / 20 = 1.1
    # 19 zero returns and x = ln 1.01: sample variance = x^2 / 20
    assert f["rvol_20"] == pytest.approx(math.log(1.01) * math.sqrt(0.05), rel=1e-12)
    f = dict(zip(FEATURES, rows[21]))
    # bar 21: 101 -> 99; volume 0 with 18 x 10 + 30 + 0 = 210 in the window -> ratio 0
    assert f["ret_1"] == pytest.approx(math.log(99 / 101), rel=1e-15)
    assert f["ret_5"] == pytest.approx(math.log(0.99), rel=1e-15)
    assert f["volume_ratio_20"] == 0.0
    f = dict(zip(FEATURES, rows[22]))
    # bar 22: unchanged close; window 17 x 10 + 30 + 0 + 21 = 221 -> 21 / 11.05
    assert f["ret_1"] == 0.0
    assert f["volume_ratio_20"] == pytest.approx(21 / 11.05, rel=1e-15)
    batch = batch_features(bars_frame(minute_bars(closes, volumes, ranges))).to_numpy()
    np.testing.assert_allclose(np.vstack(rows[WARMUP:]), batch[WARMUP:], rtol=1e-9, atol=1e-12)


def test_all_zero_volume_and_flat_bars_give_one() -> None:
    rows = incremental(minute_bars([100.0] * 22, [0] * 22, [0.0] * 22))
    f = dict(zip(FEATURES, rows[21]))
    assert f["volume_ratio_20"] == 1.0 and f["range_atr_20"] == 1.0
    assert f["rvol_20"] == 0.0 and f["ret_1"] == 0.0
    assert f["vwap_dist"] == 0.0  # no volume: VWAP = mean typical price = 100 (h = l = c)
    batch = batch_features(bars_frame(minute_bars([100.0] * 22, [0] * 22, [0.0] * 22)))
    assert batch.iloc[21]["volume_ratio_20"] == 1.0 and batch.iloc[21]["range_atr_20"] == 1.0


def test_time_of_day_is_chicago_wall_clock_of_the_bar_end() -> None:
    rows = incremental(minute_bars([100.0] * 21, [1] * 21))
    # bar 20 starts 09:20 CT and ends 09:21 CT (CDT in April)
    frac = (9 * 60 + 21) / 1440
    f = dict(zip(FEATURES, rows[20]))
    assert f["tod_sin"] == pytest.approx(math.sin(2 * math.pi * frac), abs=1e-15)
    assert f["tod_cos"] == pytest.approx(math.cos(2 * math.pi * frac), abs=1e-15)
    # winter (CST, UTC-6): same wall clock, same value
    winter = [bar(dt.datetime(2026, 1, 6, 9, 0, tzinfo=CT) + dt.timedelta(minutes=i), 100.0, 1) for i in range(21)]
    np.testing.assert_array_equal(incremental(winter)[20][-2:], rows[20][-2:])


def session_pair(first_volume: int, second_volume: int) -> list[Bar]:
    """21 two-minute bars ending 16:00 CT Tuesday 2026-04-07 (the last at close 100, typical price
    100), then 17:00 and 17:02 CT bars (Wednesday's session) at h = l = c = 110 and 120."""
    warm = [bar(dt.datetime(2026, 4, 7, 15, 18, tzinfo=CT) + dt.timedelta(minutes=2 * i), 100.0, 10,
                rng=0.0, period_s=120) for i in range(21)]
    s1, s2 = dt.datetime(2026, 4, 7, 17, 0, tzinfo=CT), dt.datetime(2026, 4, 7, 17, 2, tzinfo=CT)
    return warm + [bar(s1, 110.0, first_volume, rng=0.0, period_s=120),
                   bar(s2, 120.0, second_volume, rng=0.0, period_s=120)]


def test_vwap_resets_at_the_17_00_ct_session_open() -> None:
    bars = session_pair(5, 15)
    assert trading_day(bars[20].start_ns) == dt.date(2026, 4, 7)  # 15:58-16:00 CT: Tuesday's session
    assert trading_day(bars[21].start_ns) == dt.date(2026, 4, 8)  # 17:00 CT: Wednesday's
    rows = incremental(bars)
    col = FEATURES.index("vwap_dist")
    assert rows[20][col] == 0.0  # Tuesday: every bar at 100
    # reset: the 17:00 bar is its session's only bar (without the reset: (21 x 10 x 100 + 5 x 110) / 215)
    assert rows[21][col] == 0.0
    # 17:02: VWAP = (5 x 110 + 15 x 120) / 20 = 117.5
    assert rows[22][col] == pytest.approx((120 - 117.5) / 120, rel=1e-15)
    batch = batch_features(bars_frame(bars))["vwap_dist"].to_numpy()
    np.testing.assert_allclose([r[col] for r in rows[WARMUP:]], batch[WARMUP:], rtol=1e-9, atol=1e-12)


def test_vwap_without_session_volume_is_the_typical_price_mean() -> None:
    bars = session_pair(0, 0)
    col = FEATURES.index("vwap_dist")
    rows = incremental(bars)
    assert rows[21][col] == 0.0
    assert rows[22][col] == pytest.approx((120 - 115) / 120, rel=1e-15)  # mean of 110 and 120
    assert batch_features(bars_frame(bars))["vwap_dist"].iloc[22] == rows[22][col]


def test_bad_bars_raise_and_leave_the_builder_unchanged() -> None:
    bars = minute_bars([100.0] * 25, [1] * 25)
    fb = FeatureBuilder()
    for b in bars[:22]:
        fb.update(b)
    snap = fb.snapshot()
    with pytest.raises(ValueError, match="not after the previous"):
        fb.update(bars[21])
    with pytest.raises(ValueError, match="below its low"):
        fb.update(bar(T0 + dt.timedelta(minutes=22), 100.0, 1, low=101.0, rng=-1.0))
    with pytest.raises(ValueError, match="volume"):
        fb.update(bar(T0 + dt.timedelta(minutes=22), 100.0, -1))
    assert fb.snapshot() == snap
    with pytest.raises(ValueError, match="strictly increasing"):
        batch_features(bars_frame(bars[:5] + bars[3:4]))
