"""Indicators against hand-computed values (and numpy for the rolling statistics)."""

from __future__ import annotations

import json
import math
from decimal import Decimal as D

import numpy as np
import pytest

from domain.indicators import (EMA, RollingCorrelation, RollingVolatility, SessionVWAP, WilderATR,
                               log_return)


# --------------------------------------------------------------------------- ATR

# (high, low, close); n = 3
ATR_BARS = [
    (D("10"), D("8"), D("9")),          # TR1 = H-L = 2 (first bar)
    (D("12"), D("10"), D("11")),        # prevC 9: max(2, |12-9|=3, |10-9|=1) = 3  (gap up)
    (D("11.5"), D("10.5"), D("11")),    # prevC 11: max(1, 0.5, 0.5) = 1 -> seed = (2+3+1)/3 = 2
    (D("9.5"), D("8.5"), D("9.25")),    # prevC 11: max(1, 1.5, |8.5-11|=2.5) = 2.5 (gap down)
                                        #   ATR4 = (2*2 + 2.5)/3 = 6.5/3 = 13/6
    (D("10"), D("9.5"), D("9.75")),     # prevC 9.25: max(0.5, 0.75, 0.25) = 0.75
                                        #   ATR5 = (13/6*2 + 0.75)/3 = (52/12 + 9/12)/3 = 61/36
]


def test_atr_hand_computed():
    atr = WilderATR(3)
    outs = [atr.update(*b) for b in ATR_BARS]
    assert outs[0] is None and outs[1] is None
    assert outs[2] == pytest.approx(2.0)
    assert outs[3] == pytest.approx(13 / 6)
    assert outs[4] == pytest.approx(61 / 36)
    assert atr.value == pytest.approx(61 / 36)
    assert atr.last_tr == pytest.approx(0.75)
    assert atr.ready and atr.count == 5


def test_atr_true_range_components():
    atr = WilderATR(1)  # n=1: ATR == TR of each bar
    assert atr.update(5, 4, 4.5) == pytest.approx(1.0)
    assert atr.update(7, 6.5, 7) == pytest.approx(2.5)      # |H - prevC| = 7 - 4.5
    assert atr.update(5, 4.75, 5) == pytest.approx(2.25)    # |L - prevC| = 7 - 4.75


def test_atr_snapshot_restore_roundtrip():
    a = WilderATR(3)
    for b in ATR_BARS[:2]:
        a.update(*b)
    b = WilderATR.restore(json.loads(json.dumps(a.snapshot())))
    for bar in ATR_BARS[2:]:
        assert a.update(*bar) == b.update(*bar)
    assert b.value == pytest.approx(61 / 36)


def test_atr_rejects_bad_period():
    with pytest.raises(ValueError):
        WilderATR(0)


# --------------------------------------------------------------------------- VWAP

def test_vwap_three_trades_by_hand():
    v = SessionVWAP()
    assert v.value is None and v.std is None and v.band(1) is None
    v.update(D("100"), 1)
    v.update(D("102"), 2)
    v.update(D("101"), 1)
    # sum v = 4, sum v*p = 100 + 204 + 101 = 405 -> VWAP = 101.25
    assert v.value == pytest.approx(101.25)
    # deviations -1.25, +0.75, -0.25; v*d^2 = 1.5625 + 2*0.5625 + 0.0625 = 2.75; var = 2.75/4 = 0.6875
    assert v.std == pytest.approx(math.sqrt(0.6875))
    lo, hi = v.band(2)
    assert lo == pytest.approx(101.25 - 2 * math.sqrt(0.6875))
    assert hi == pytest.approx(101.25 + 2 * math.sqrt(0.6875))
    assert v.volume == 4


def test_vwap_update_bar_uses_typical_price():
    v = SessionVWAP()
    v.update_bar(D("103"), D("100"), D("102"), 3)  # tp = 305/3, v*tp = 305
    v.update_bar(D("102"), D("99"), D("99"), 1)    # tp = 100
    assert v.value == pytest.approx(405 / 4)       # 101.25


def test_vwap_zero_volume_ignored_and_reset():
    v = SessionVWAP()
    v.update(D("500"), 0)
    assert v.value is None           # zero volume does not anchor or count
    v.update(D("10"), 2)
    v.update(D("999"), 0)
    assert v.value == pytest.approx(10.0)
    assert v.std == 0.0
    v.reset()
    assert v.value is None and v.volume == 0
    v.update(D("20"), 1)
    assert v.value == pytest.approx(20.0)


def test_vwap_no_catastrophic_cancellation_at_large_prices():
    v = SessionVWAP()
    base = 1e9
    for off in (0.0, 0.5, 1.0):
        v.update(base + off, 1)
    # deviations -0.5, 0, +0.5 -> var = 0.5/3; the naive sum(v p^2)/sum(v) - VWAP^2 loses it all at 1e18
    assert v.value == pytest.approx(base + 0.5, abs=1e-9)
    assert v.std == pytest.approx(math.sqrt(1 / 6), rel=1e-12)


def test_vwap_snapshot_restore():
    v = SessionVWAP()
    v.update(D("100"), 1)
    w = SessionVWAP.restore(json.loads(json.dumps(v.snapshot())))
    for x in (v, w):
        x.update(D("102"), 2)
        x.update(D("101"), 1)
    assert w.value == v.value == pytest.approx(101.25)
    assert w.std == v.std


# --------------------------------------------------------------------------- EMA

def test_ema_seeded_with_first_value():
    e = EMA(3)  # alpha = 2/4 = 0.5
    assert e.value is None
    assert e.alpha == 0.5
    assert e.update(10) == 10.0                  # seed
    assert e.update(12) == pytest.approx(11.0)   # 10 + 0.5*(12-10)
    assert e.update(14) == pytest.approx(12.5)   # 11 + 0.5*(14-11)
    e2 = EMA.restore(json.loads(json.dumps(e.snapshot())))
    assert e2.update(D("4.5")) == e.update(D("4.5")) == pytest.approx(8.5)


# --------------------------------------------------------------------------- log return / vol

def test_log_return():
    assert log_return(D("100"), D("110")) == pytest.approx(math.log(1.1))
    assert log_return(50, 50) == 0.0
    with pytest.raises(ValueError):
        log_return(0, 1)


CLOSES = [100.0, 101.0, 99.5, 102.25, 100.0, 100.75, 98.0]


def test_rolling_vol_matches_numpy_ddof1():
    rv = RollingVolatility(3)
    rets = np.diff(np.log(CLOSES))
    outs = [rv.update(D(str(c))) for c in CLOSES]
    assert outs[:3] == [None, None, None]       # 0, 1, 2 returns
    for i in range(3, len(CLOSES)):             # i-th close gives returns rets[i-3:i]
        assert outs[i] == pytest.approx(float(np.std(rets[i - 3:i], ddof=1)), rel=1e-12)
    assert rv.count == 3


def test_rolling_vol_min_periods_and_hand_value():
    rv = RollingVolatility(10, min_periods=2)
    rv.update(100)
    assert rv.update(110) is None
    r1, r2 = math.log(1.1), math.log(100 / 110)
    # two returns: sample std = |r1 - r2| / sqrt(2)
    assert rv.update(100) == pytest.approx(abs(r1 - r2) / math.sqrt(2))
    rv2 = RollingVolatility.restore(json.loads(json.dumps(rv.snapshot())))
    assert rv2.update(105) == rv.update(105)


def test_rolling_vol_bad_args():
    with pytest.raises(ValueError):
        RollingVolatility(1)
    with pytest.raises(ValueError):
        RollingVolatility(5, min_periods=6)
    with pytest.raises(ValueError):
        RollingVolatility(5).update(0)


# --------------------------------------------------------------------------- correlation

A = [0.010, -0.020, 0.015, 0.003, -0.007, 0.004]
B = [0.012, -0.018, 0.010, 0.001, -0.009, 0.006]


def test_correlation_matches_numpy():
    rc = RollingCorrelation(5)
    outs = [rc.update(a, b) for a, b in zip(A, B)]
    assert outs[:4] == [None] * 4
    for end in (5, 6):
        a, b = np.array(A[end - 5:end]), np.array(B[end - 5:end])
        assert outs[end - 1] == pytest.approx(float(np.corrcoef(a, b)[0, 1]), rel=1e-12)
    a, b = np.array(A[1:]), np.array(B[1:])
    assert rc.beta == pytest.approx(float(np.cov(a, b, ddof=1)[0, 1] / np.var(b, ddof=1)), rel=1e-12)
    assert rc.vol_a == pytest.approx(float(np.std(a, ddof=1)), rel=1e-12)
    assert rc.vol_b == pytest.approx(float(np.std(b, ddof=1)), rel=1e-12)


def test_correlation_hand_cases():
    rc = RollingCorrelation(3)
    # a = 2*b exactly: corr 1, beta = cov/var_b = 2
    for b in (1.0, -1.0, 2.0):
        rc.update(2 * b, b)
    assert rc.value == pytest.approx(1.0)
    assert rc.beta == pytest.approx(2.0)
    # b: 1,-1,2 mean 2/3; deviations 1/3,-5/3,4/3; squares sum 42/9; var = 42/18 = 7/3
    assert rc.vol_b == pytest.approx(math.sqrt(7 / 3))
    assert rc.vol_a == pytest.approx(2 * math.sqrt(7 / 3))
    neg = RollingCorrelation(2)
    neg.update(1, -1)
    assert neg.update(2, -3) == pytest.approx(-1.0)


def test_correlation_zero_variance_is_none():
    rc = RollingCorrelation(3)
    for a in (0.1, 0.2, 0.3):
        rc.update(a, 0.5)            # b constant
    assert rc.value is None and rc.beta is None
    assert rc.vol_b == 0.0 and rc.vol_a == pytest.approx(0.1)
    rc2 = RollingCorrelation(2)
    rc2.update(0.1, 0.1)
    rc2.update(0.1, 0.3)             # a constant, b varies: corr None, beta defined (= 0)
    assert rc2.value is None and rc2.beta == pytest.approx(0.0)


def test_correlation_snapshot_restore():
    rc = RollingCorrelation(4, min_periods=3)
    for a, b in zip(A[:3], B[:3]):
        rc.update(a, b)
    assert rc.value is not None
    rc2 = RollingCorrelation.restore(json.loads(json.dumps(rc.snapshot())))
    assert rc2.value == rc.value
    for a, b in zip(A[3:], B[3:]):
        assert rc2.update(a, b) == rc.update(a, b)
