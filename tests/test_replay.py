"""Replay loaders and ReplaySource, on data/demo and on the 28-session data set that sits outside the
repository in /work/shared/data (what it is: docs/benchmarks.md, "Backtest throughput")."""

from __future__ import annotations

import datetime as dt
import gzip
from decimal import Decimal
from pathlib import Path

import pytest

from domain.calendar import NS, trading_day
from domain.messages import TradeTick
from infra.replay import (SYMBOL_MAP, BarRow, ReplaySource, bar_to_ticks, load_bar_csv, load_databento_quotes,
                          load_databento_trades, parse_utc_ns)

SHARED = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data"))
               if p.exists()), Path("/work/shared/data"))
"""The shared data folder beside the repository (CI lays a copy of shared/ next to its clone)."""
if not (SHARED / "es_nq_yahoo_2m_5m").exists():
    pytest.skip(f"shared market data not found beside the repository ({SHARED})", allow_module_level=True)
YAHOO = SHARED / "es_nq_yahoo_2m_5m"
DATABENTO = SHARED / "databento_es_nq_samples"
TRADES = DATABENTO / "ESU4_trades_2024-07-01T23-58Z_2024-07-02T00-02Z.csv"
QUOTES = DATABENTO / "ESU4_mbp-1_2024-07-01T23-58Z_2024-07-02T00-02Z.csv"
DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


@pytest.fixture(scope="module")
def es_rows() -> list[BarRow]:
    rows, rejects = load_bar_csv(YAHOO / "ES_2min.csv.gz")
    assert not rejects
    return rows


@pytest.fixture(scope="module")
def shared_source() -> ReplaySource:
    return ReplaySource({"MES": YAHOO / "ES_2min.csv.gz", "MNQ": YAHOO / "NQ_2min.csv.gz"},
                        start=dt.date(2026, 4, 7), end=dt.date(2026, 4, 8), warmup_days=2)


# --------------------------------------------------------------------------- bar files

def test_yahoo_row_counts_match_data_readme(es_rows):
    """The 28-session data set's row counts: ES 2-min 18,692 rows, NQ 2-min 18,693, ES 5-min 13,768;
    no bad rows."""
    assert len(es_rows) == 18_692
    nq, nq_rej = load_bar_csv(YAHOO / "NQ_2min.csv.gz")
    assert len(nq) == 18_693 and not nq_rej
    es5, es5_rej = load_bar_csv(YAHOO / "ES_5min.csv.gz")
    assert len(es5) == 13_768 and not es5_rej and es5[0].period_s == 300


def test_bar_rows_are_mapped_to_micros_in_utc(es_rows):
    first = es_rows[0]
    assert SYMBOL_MAP == {"ES": "MES", "NQ": "MNQ"}
    assert first.instrument == "MES" and first.period_s == 120
    # 2026-03-19 20:00 naive US/Eastern (EDT, UTC-4) = 2026-03-20 00:00 UTC
    assert first.start_ns == int(dt.datetime(2026, 3, 20, tzinfo=dt.timezone.utc).timestamp()) * NS
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        Decimal("6675.0"), Decimal("6676.5"), Decimal("6674.75"), Decimal("6676.5"), 0)
    assert all(b.start_ns - a.start_ns >= 120 * NS for a, b in zip(es_rows, es_rows[1:]))
    explicit, _ = load_bar_csv(YAHOO / "ES_2min.csv.gz", instrument="ES")
    assert explicit[0].instrument == "ES" and explicit[0].start_ns == first.start_ns


def test_bar_path_bullish_dips_first_bearish_rallies_first(es_rows):
    bull = next(r for r in es_rows if r.close > r.open and r.volume >= 4)
    ticks = bar_to_ticks(bull, seq_start=100)
    assert [t.price for t in ticks] == [bull.open, bull.low, bull.high, bull.close]
    assert [t.ts_ns - bull.start_ns for t in ticks] == [0, 30 * NS, 60 * NS, 90 * NS]
    assert [t.seq for t in ticks] == [100, 101, 102, 103]
    assert sum(t.size for t in ticks) == bull.volume
    assert [t.size for t in ticks[:3]] == [bull.volume // 4] * 3 and all(t.size >= 1 for t in ticks)

    bear = next(r for r in es_rows if r.close < r.open and r.volume % 4)
    ticks = bar_to_ticks(bear)
    assert [t.price for t in ticks] == [bear.open, bear.high, bear.low, bear.close]
    assert ticks[-1].size == bear.volume - 3 * (bear.volume // 4) and sum(t.size for t in ticks) == bear.volume

    flat = next(r for r in es_rows if r.close == r.open and r.high > r.low)
    assert [t.price for t in bar_to_ticks(flat)] == [flat.open, flat.low, flat.high, flat.close]


def test_zero_volume_bar_gives_size_one_ticks(es_rows):
    first = es_rows[0]
    assert first.volume == 0
    ticks = bar_to_ticks(first)
    assert [t.size for t in ticks] == [1, 1, 1, 1]  # a print always has a size
    assert [t.price for t in ticks] == [Decimal("6675.0"), Decimal("6674.75"), Decimal("6676.5"), Decimal("6676.5")]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_bad_rows_are_rejected_and_counted(tmp_path):
    header = "datetime,open,high,low,close,volume,symbol\n"
    good = ["2026-04-07 10:00:00,6600.0,6601.0,6599.0,6600.5,100,ES",
            "2026-04-07 10:02:00,6600.5,6602.0,6600.0,6601.75,120,ES",
            "2026-04-07 10:06:00,6601.75,6603.0,6601.0,6602.0,90,ES",
            "2026-04-07 10:08:00,6602.0,6602.25,6601.5,6601.5,80,ES"]
    bad = ["2026-04-07 10:04:00,NaN,6602.0,6600.0,6601.0,50,ES",           # NaN
           "2026-04-07 10:04:00,-6601.0,6602.0,6600.0,6601.0,50,ES",       # negative price
           "2026-04-07 10:06:00,6601.75,6603.0,6601.0,6602.0,90,ES",       # duplicate timestamp
           "2026-04-07 10:03:00,6601.0,6602.0,6600.0,6601.0,50,ES",        # out of order
           "2026-04-07 10:10:00,6601.0,6600.0,6602.0,6601.0,50,ES",        # high < low
           "2026-04-07 10:10:00,6601.1,6602.0,6600.0,6601.0,50,ES",        # off tick
           "2026-04-07 10:10:00,6605.0,6602.0,6600.0,6601.0,50,ES",        # open above high
           "2026-04-07 10:10:00,,6602.0,6600.0,6601.0,50,ES",              # missing field
           "not a time,6601.0,6602.0,6600.0,6601.0,50,ES",                 # bad timestamp
           "2026-04-07 10:10:00,6601.0,6602.0,6600.0,6601.0,-5,ES"]       # negative volume
    lines = [good[0], good[1], bad[0], bad[1], good[2], bad[2], bad[3], good[3]] + bad[4:]
    p = _write(tmp_path, "bad.csv", header + "\n".join(lines) + "\n")
    rows, rejects = load_bar_csv(p)
    assert [r.close for r in rows] == [Decimal("6600.5"), Decimal("6601.75"), Decimal("6602.0"), Decimal("6601.5")]
    assert rows[0].period_s == 120
    assert rejects == {"nan": 1, "non_positive_price": 1, "duplicate_timestamp": 1, "out_of_order": 1,
                       "high_below_low": 1, "off_tick": 1, "open_close_outside_range": 1,
                       "missing_or_bad_number": 1, "bad_timestamp": 1, "negative_size": 1}

    gz = tmp_path / "bad.csv.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert load_bar_csv(gz) == (rows, rejects)

    unknown = _write(tmp_path, "unknown.csv", header + good[0].replace(",ES", ",ZZ") + "\n" + good[1] + "\n")
    rows, rejects = load_bar_csv(unknown, period_s=120)
    assert len(rows) == 1 and rejects == {"unknown_instrument": 1}

    with pytest.raises(ValueError, match="missing column"):
        load_bar_csv(_write(tmp_path, "nohdr.csv", "time,price\n1,2\n"))


# --------------------------------------------------------------------------- Databento

def test_databento_trades_match_readme():
    ticks, rejects = load_databento_trades(TRADES)
    assert not rejects
    assert len(ticks) == 120 and sum(t.size for t in ticks) == 253
    assert {t.instrument for t in ticks} == {"MES"}
    assert min(t.price for t in ticks) == Decimal("5528.5") and max(t.price for t in ticks) == Decimal("5529.5")
    # 2024-07-01 23:58:01.218218853 UTC, nanoseconds kept exactly
    assert ticks[0].ts_ns == 1_719_878_281_218_218_853 and ticks[0].seq == 9060643
    assert all(a.ts_ns <= b.ts_ns for a, b in zip(ticks, ticks[1:]))
    minis, _ = load_databento_trades(TRADES, micro=False)
    assert {t.instrument for t in minis} == {"ES"} and [t.price for t in minis] == [t.price for t in ticks]


def test_databento_quotes_never_crossed():
    quotes, rejects = load_databento_quotes(QUOTES)
    assert not rejects and len(quotes) == 2_288
    assert all(Decimal(0) < q.bid < q.ask for q in quotes)
    spreads = [q.ask - q.bid for q in quotes]
    assert spreads.count(Decimal("0.25")) == 2_183 and spreads.count(Decimal("0.5")) == 105


def test_databento_bad_records_rejected(tmp_path):
    header = ("ts_event,ts_recv,instrument_id,symbol,action,side,price,size,bid_px,ask_px,bid_sz,ask_sz,"
              "bid_ct,ask_ct,sequence\n")
    ok = "2024-07-01 23:58:01.2+00:00,x,118,ESU4,A,B,5528.5,1,5528.5,5528.75,29,6,22,3,1"
    p = _write(tmp_path, "q.csv", header + "\n".join([
        ok,
        "2024-07-01 23:58:02+00:00,x,118,ESU4,A,B,5528.5,1,5529.0,5528.75,29,6,22,3,2",   # crossed
        "2024-07-01 23:58:02+00:00,x,118,ESU4,A,B,5528.5,1,,5528.75,0,6,0,3,3",           # empty bid
        "2024-07-01 23:58:00+00:00,x,118,ESU4,A,B,5528.5,1,5528.5,5528.75,29,6,22,3,4",   # out of order
        "2024-07-01 23:58:03+00:00,x,1,ZBU4,A,B,5528.5,1,5528.5,5528.75,29,6,22,3,5",     # unknown
    ]) + "\n")
    quotes, rejects = load_databento_quotes(p)
    assert len(quotes) == 1 and quotes[0].ts_ns == parse_utc_ns("2024-07-01T23:58:01.200000000Z")
    assert rejects == {"crossed": 1, "missing_or_bad_number": 1, "out_of_order": 1, "unknown_instrument": 1}
    assert parse_utc_ns("2024-07-01 19:58:01-04:00") == parse_utc_ns("2024-07-01 23:58:01Z")
    assert parse_utc_ns("garbage") is None


# --------------------------------------------------------------------------- ReplaySource

def test_trading_days_and_warmup(shared_source):
    src = shared_source
    assert src.trading_days() == [dt.date(2026, 4, 7), dt.date(2026, 4, 8)]
    assert src.bar_count == 4 * 686 and not src.rejects
    # warm-up = the 2 trading days before 04-07 present in the data: Good Friday stub 04-03 (180
    # bars, 18:00-23:58 ET on 04-02) and Monday 04-06 (690 bars)
    warm = src.warmup_bars("MES")
    assert len(warm) == 180 + 690
    assert {trading_day(b.start_ns) for b in warm} == {dt.date(2026, 4, 3), dt.date(2026, 4, 6)}
    assert warm[-1].end_ns <= src.bars("MES")[0].start_ns
    assert warm[0].to_bar().end_ns == warm[0].start_ns + 120 * NS


def test_merge_order_is_deterministic(shared_source):
    events = list(shared_source.events())
    assert len(events) == 4 * shared_source.bar_count
    keys = [(e.ts_ns, e.instrument, e.seq) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert events[0].instrument == "MES" and events[1].instrument == "MNQ"
    assert events[0].ts_ns == events[1].ts_ns
    assert list(shared_source.events()) == events
    # every tick lies in a replayed trading day, and its bar is the one at that seq
    assert {trading_day(e.ts_ns) for e in events} == set(shared_source.trading_days())
    again = ReplaySource({"MNQ": YAHOO / "NQ_2min.csv.gz", "MES": YAHOO / "ES_2min.csv.gz"},
                         start=dt.date(2026, 4, 7), end=dt.date(2026, 4, 8))
    assert list(again.events()) == events


def test_resume_after_ns_skips_processed_ticks(shared_source):
    events = list(shared_source.events())
    for cut in (events[0].ts_ns - 1, events[1001].ts_ns, events[1001].ts_ns + 1, events[-1].ts_ns):
        resumed = list(shared_source.events(after_ns=cut))
        assert resumed == [e for e in events if e.ts_ns > cut]
    assert all(isinstance(e, TradeTick) for e in events[:10])


def test_demo_dataset_is_a_verbatim_four_day_excerpt():
    for sym in ("ES", "NQ"):
        demo = gzip.decompress((DEMO / f"{sym}_2min.csv.gz").read_bytes()).decode().splitlines()
        full = gzip.decompress((YAHOO / f"{sym}_2min.csv.gz").read_bytes()).decode().splitlines()
        assert demo[0] == full[0] == "datetime,open,high,low,close,volume,symbol"
        start = full.index(demo[1])
        assert full[start:start + len(demo) - 1] == demo[1:]
        assert len(demo) - 1 == 2_744
    src = ReplaySource({"MES": DEMO / "ES_2min.csv.gz", "MNQ": DEMO / "NQ_2min.csv.gz"})
    assert src.trading_days() == [dt.date(2026, 4, d) for d in (7, 8, 9, 10)]
    assert not src.rejects and src.bar_count == 2 * 2_744
    assert src.warmup_bars("MES") == []
    assert [b.start_ns for b in src.bars("MES")] == [b.start_ns for b in src.bars("MNQ")]
