"""Time-bar aggregation."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from domain.bars import BarAggregator, aggregate_bars
from domain.messages import Bar, QuoteTick, TradeTick

S = 1_000_000_000
BASE = 1_700_000_100 * S  # multiple of 60, 300 and 900 seconds


def t(sec: float, price: str, size: int = 1, seq: int = 0, inst: str = "MES") -> TradeTick:
    return TradeTick(inst, BASE + int(round(sec * S)), D(price), size, seq)


def test_base_is_aligned():
    for p in (60, 300, 900):
        assert BASE % (p * S) == 0


def test_trade_across_boundary_closes_bar_with_ohlcv():
    agg = BarAggregator("MES", (60,))
    ticks = [t(1, "5000.00", 1), t(10, "5001.25", 2), t(30, "4999.50", 3)]
    for tk in ticks:
        assert agg.on_trade(tk) == []
    last = TradeTick("MES", BASE + 60 * S - 1, D("5000.50"), 1)   # last ns of the bar
    assert agg.on_trade(last) == []
    out = agg.on_trade(t(60, "5002.00", 4))                       # exactly end_ns -> new bar
    assert out == [Bar("MES", 60, BASE, BASE + 60 * S, D("5000.00"), D("5001.25"), D("4999.50"),
                       D("5000.50"), 7, BASE + 60 * S)]
    part = agg.partial(60)
    assert part is not None and part.start_ns == BASE + 60 * S and part.open == D("5002.00") and part.volume == 4


def test_gap_emits_no_empty_bars():
    agg = BarAggregator("MES", (60,))
    agg.on_trade(t(5, "5000.00"))
    out = agg.on_trade(t(185, "5003.00", 2))      # skips bars [60,120) and [120,180)
    assert len(out) == 1
    assert (out[0].start_ns, out[0].end_ns, out[0].ts_ns) == (BASE, BASE + 60 * S, BASE + 185 * S)
    rest = agg.flush()
    assert len(rest) == 1
    assert rest[0].start_ns == BASE + 180 * S and rest[0].close == D("5003.00") and rest[0].volume == 2
    assert agg.flush() == []


def test_on_time_closes_open_bars():
    agg = BarAggregator("MES")  # 60, 300, 900
    agg.on_trade(t(5, "5000.00", 3))
    assert agg.on_time(BASE + 59 * S) == []
    out = agg.on_time(BASE + 60 * S)
    assert [b.period_s for b in out] == [60]
    assert out[0].ts_ns == BASE + 60 * S and out[0].volume == 3
    assert agg.on_time(BASE + 61 * S) == []       # already closed, nothing new
    assert agg.partial(60) is None and agg.partial(300) is not None
    out = agg.on_time(BASE + 1000 * S)
    assert [b.period_s for b in out] == [300, 900]
    assert all(b.ts_ns == BASE + 1000 * S and b.open == D("5000.00") for b in out)
    # a tick after a timer close starts a fresh bar and emits nothing
    assert agg.on_trade(t(1001, "5001.00")) == []


def test_multiple_periods_ordered_ascending():
    agg = BarAggregator("MES", (900, 60, 300, 60))
    assert agg.periods_s == (60, 300, 900)
    agg.on_trade(t(0, "5000.00", 1))
    out1 = agg.on_trade(t(70, "5010.00", 1))      # closes only the 1-minute bar
    assert [b.period_s for b in out1] == [60]
    agg.on_trade(t(310, "4990.00", 1))            # closes 60 [60,120) and 300 [0,300)
    agg.on_trade(t(620, "5020.00", 1))
    out = agg.on_trade(t(900, "5005.00", 1))
    assert [b.period_s for b in out] == [60, 300, 900]
    b15 = out[2]
    assert (b15.open, b15.high, b15.low, b15.close, b15.volume) == (
        D("5000.00"), D("5020.00"), D("4990.00"), D("5020.00"), 4)
    assert (b15.start_ns, b15.end_ns) == (BASE, BASE + 900 * S)


def test_other_instrument_and_late_ticks():
    agg = BarAggregator("MES", (60,))
    assert agg.on_trade(t(1, "100.00", inst="MNQ")) == []
    assert agg.partial(60) is None
    agg.on_trade(t(70, "5000.00"))
    agg.on_trade(t(10, "4000.00"))                # older than the open bar's start -> dropped
    assert agg.dropped_late == 1
    assert agg.partial(60).low == D("5000.00")


def test_quote_source_uses_rounded_mid():
    agg = BarAggregator("MES", (60,), source="quotes")
    assert agg.on_trade(t(1, "5000.00")) == []    # trades ignored for a quote aggregator
    agg.on_quote(QuoteTick("MES", BASE + 1 * S, D("5000.00"), D("5000.25")))  # mid 5000.125 -> 5000.25
    agg.on_quote(QuoteTick("MES", BASE + 2 * S, D("4999.50"), D("5000.00")))  # mid 4999.75
    out = agg.on_quote(QuoteTick("MES", BASE + 61 * S, D("5001.00"), D("5001.50")))
    assert len(out) == 1
    b = out[0]
    assert (b.open, b.high, b.low, b.close, b.volume) == (D("5000.25"), D("5000.25"), D("4999.75"), D("4999.75"), 0)
    trades_agg = BarAggregator("MES", (60,))
    assert trades_agg.on_quote(QuoteTick("MES", BASE, D("1.00"), D("1.25"))) == []
    assert trades_agg.partial(60) is None


def test_bad_constructor_args():
    with pytest.raises(ValueError):
        BarAggregator("MES", (0,))
    with pytest.raises(ValueError):
        BarAggregator("MES", source="book")


TICKS = [t(1, "5000.00", 1), t(20, "5002.00", 2, seq=1), t(20, "5001.00", 1, seq=2), t(65, "4998.00", 5),
         t(300, "5005.00", 1), t(301, "5006.25", 2), t(1000, "5010.00", 3)]


def test_aggregate_bars_matches_streaming_plus_flush():
    agg = BarAggregator("MES", (60,))
    streamed: list[Bar] = []
    for tk in TICKS:
        streamed.extend(agg.on_trade(tk))
    streamed.extend(agg.flush())
    hist = aggregate_bars(TICKS, 60)
    assert hist == streamed
    assert [(b.start_ns - BASE) // S for b in hist] == [0, 60, 300, 960]
    assert (hist[0].open, hist[0].high, hist[0].low, hist[0].close, hist[0].volume) == (
        D("5000.00"), D("5002.00"), D("5000.00"), D("5001.00"), 4)
    assert hist[-1].ts_ns == hist[-1].end_ns
    assert sum(b.volume for b in hist) == sum(tk.size for tk in TICKS)
    assert aggregate_bars([], 60) == []


def test_snapshot_restore_mid_bar():
    a = BarAggregator("MES")
    for tk in TICKS[:4]:
        a.on_trade(tk)
    b = BarAggregator.restore(json.loads(json.dumps(a.snapshot())))
    assert b.periods_s == a.periods_s and b.partial(300) == a.partial(300)
    for tk in TICKS[4:]:
        assert a.on_trade(tk) == b.on_trade(tk)
    assert a.flush(BASE + 2000 * S) == b.flush(BASE + 2000 * S)
