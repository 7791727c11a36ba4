"""Bad input end to end: malformed config exits 2 naming the field; bad ticks are rejected, counted
and logged by the feed and never reach the bar builder, the venue or risk.

The audit cases ("Results a trader can trust", "Bad input") follow: a ``--start`` outside the data,
non-finite / absurd config numbers, an impossible unquoted date, an unwritable run dir and an
unreachable Redis, corrupt bar files (exit 2 naming file and line), dropped bar rows counted by
reason (wrong symbol included), absurd prints refused by the absolute range and the sanity band,
and hub prices beyond Decimal range refused as malformed payloads. tests/test_fuzz_inputs.py
fuzzes the same inputs."""

from __future__ import annotations

from decimal import Decimal as D

from loguru import logger

import supervisor
from domain.handler import ticks_topic
from domain.messages import QuoteTick, TradeTick
from infra.feeds import FeedCore

T0 = 1_775_660_400_000_000_000  # 2026-04-08 10:00 CT


def test_malformed_config_exits_2_and_names_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies:\n  - {name: grid-MES, kind: grid, instruments: [MES], params: {atr_multiplier: -1}}\n")
    assert supervisor.main(["--mode", "backtest", "--config", str(bad), "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "strategies.0.params.atr_multiplier" in err

    old = tmp_path / "old.yaml"
    old.write_text("grid:\n  levels_each_side: 3\n")
    assert supervisor.main(["--mode", "backtest", "--config", str(old), "--run-dir", str(tmp_path)]) == 2
    assert "grid: not a section" in capsys.readouterr().err

    kind = tmp_path / "kind.yaml"
    kind.write_text("strategies:\n  - {name: x, kind: martingale, instruments: [MES]}\n")
    assert supervisor.main(["--mode", "backtest", "--config", str(kind), "--run-dir", str(tmp_path)]) == 2
    assert "unknown strategy kind 'martingale'" in capsys.readouterr().err

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("risk:\n  nonsense: 1\n")
    assert supervisor.main(["--config", str(unknown), "--run-dir", str(tmp_path)]) == 2
    assert "risk" in capsys.readouterr().err

    assert supervisor.main(["--profile", "no-such-profile", "--run-dir", str(tmp_path)]) == 2
    assert supervisor.main(["--speed", "fast", "--run-dir", str(tmp_path)]) == 2


def test_feed_rejects_counts_and_logs_bad_ticks():
    core = FeedCore()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        good = TradeTick("MES", T0, D("6500.25"), 3, 0)
        bad = [
            TradeTick("MES", T0 + 1, D("NaN"), 1, 1),             # NaN price
            TradeTick("MES", T0 + 2, D("0"), 1, 2),                # zero price
            TradeTick("MES", T0 + 3, D("-6500.00"), 1, 3),         # negative price
            TradeTick("MES", T0 + 4, D("6500.10"), 1, 4),          # off the 0.25 tick grid
            TradeTick("ZZZ", T0 + 5, D("6500.00"), 1, 5),          # unknown instrument
            QuoteTick("MES", T0 + 6, D("6500.50"), D("6500.25")),  # crossed quote
        ]
        assert core.route(good)
        routed = [core.route(t) for t in bad]
        routed.append(core.route(good))                            # duplicate print
        routed.append(core.route(TradeTick("MES", T0 - 60_000_000_000, D("6500.00"), 1, 9)))  # out of order
    finally:
        logger.remove(sink)
    assert routed == [[]] * len(routed), "a bad tick was routed downstream"
    assert dict(core.rejected) == {"nan_price": 1, "non_positive_price": 2, "off_tick_price": 1,
                                   "unknown_instrument": 1, "crossed_quote": 1, "duplicate": 1,
                                   "out_of_order_ts": 1}
    assert len(lines) == 8 and all("feed rejected" in ln for ln in lines)
    assert any("crossed_quote" in ln and "QuoteTick MES" in ln for ln in lines)
    # after all that, a good tick still goes to the instrument's tick topic (venue, bar builder, risk)
    nxt = TradeTick("MES", T0 + 100, D("6500.50"), 1, 10)
    assert (ticks_topic("MES"), nxt) in core.route(nxt)


# --------------------------------------------------------------------------- audit cases ("Bad input")

import gzip  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from actors.node import open_store  # noqa: E402
from config.settings import ConfigError, load_config  # noqa: E402
from domain.validation import BAND_REANCHOR_PRINTS, MarketDataValidator  # noqa: E402
from infra.feeds import open_replay  # noqa: E402
from infra.projectx.errors import MalformedPayload  # noqa: E402
from infra.projectx.mapping import quote_to_tick, trade_print_to_tick  # noqa: E402
from infra.replay import load_bar_csv  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
ONE_DAY = ["--start", "2026-04-09", "--end", "2026-04-09"]


def _main(tmp_path, capsys, *argv: str) -> tuple[int, str]:
    rc = supervisor.main(["--mode", "backtest", "--run-dir", str(tmp_path / "run"), *argv])
    return rc, capsys.readouterr().err


def test_start_outside_the_data_exits_2_naming_the_days(tmp_path, capsys):
    rc, err = _main(tmp_path, capsys, "--start", "2020-01-01", "--end", "2020-01-05")
    assert rc == 2
    assert "no trading day in the data between 2020-01-01 and 2020-01-05; the data covers 2026-04-07..2026-04-10" in err
    rc, err = _main(tmp_path, capsys, "--start", "2031-01-01")
    assert rc == 2 and "no trading day in the data between 2031-01-01 and its end" in err


@pytest.mark.parametrize("snippet, field", [
    ("strategies: [{name: grid-MES, kind: grid, instruments: [MES], params: {atr_multiplier: .inf}}]",
     "strategies.0.params.atr_multiplier"),
    ("strategies: [{name: grid-MES, kind: grid, instruments: [MES], params: {atr_multiplier: 1.0e+300}}]",
     "strategies.0.params.atr_multiplier"),
    ("strategies: [{name: grid-MES, kind: grid, instruments: [MES], params: {take_profit_atr: .inf}}]",
     "strategies.0.params.take_profit_atr"),
    ("strategies: [{name: hedge, kind: hedge, instruments: [MES, MNQ], params: {low_corr_minutes: .nan}}]",
     "strategies.0.params.low_corr_minutes"),
    ("strategies: [{name: e, kind: ema_cross, instruments: [NQ], params: {qty: 100000000000}}]",
     "strategies.0.params.qty"),
    ("runtime: {heartbeat_s: .inf}", "runtime.heartbeat_s"),
    ("runtime: {heartbeat_s: 1.0e+308}", "runtime.heartbeat_s"),
    ("runtime: {stale_data_s: .inf}", "runtime.stale_data_s"),
    ("runtime: {speed: .inf}", "runtime.speed"),
    ("runtime: {start: 2026-13-45}", "runtime.start"),
])
def test_non_finite_out_of_range_and_impossible_config_values_exit_2(tmp_path, capsys, snippet, field):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(snippet + "\n")
    rc, err = _main(tmp_path, capsys, "--config", str(cfg))
    assert rc == 2 and f"config error: {field}: " in err and str(cfg) in err, err


def test_unwritable_run_dir_and_unreachable_redis_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    rc = supervisor.main(["--mode", "backtest", "--run-dir", str(tmp_path / "file" / "run"), *ONE_DAY])
    err = capsys.readouterr().err
    assert rc == 2 and "runtime.run_dir: cannot write to" in err and str(tmp_path / "file" / "run") in err

    monkeypatch.setenv("REDIS_URL", "redis://user:secret@127.0.0.1:1/0")
    cfg = load_config(overrides={"runtime": {"run_dir": str(tmp_path / "run")}})
    with pytest.raises(ConfigError) as ei:
        open_store(cfg)
    assert ei.value.field == "runtime.redis_url" and "127.0.0.1:1" in str(ei.value)
    assert "secret" not in str(ei.value)
    rc = supervisor.main(["--mode", "paper", "--replay", "--metrics-port", "0", "--ops-port", "0", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "runtime.redis_url" in err and "secret" not in err


def _data_dir(tmp_path, es_bytes: bytes) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    (d / "ES_2min.csv.gz").write_bytes(es_bytes)
    shutil.copy(DEMO / "NQ_2min.csv.gz", d / "NQ_2min.csv.gz")
    return d


def _es_lines() -> list[str]:
    return gzip.decompress((DEMO / "ES_2min.csv.gz").read_bytes()).decode().splitlines()


def test_corrupt_bar_files_exit_2_naming_file_and_line(tmp_path, capsys):
    raw = (DEMO / "ES_2min.csv.gz").read_bytes()
    d = _data_dir(tmp_path, raw[: len(raw) // 2])
    rc, err = _main(tmp_path, capsys, "--data", str(d))
    assert rc == 2 and f"market data file {d / 'ES_2min.csv.gz'}, line " in err and "truncated" in err
    d = _data_dir(tmp_path, "\n".join(_es_lines()).encode())
    rc, err = _main(tmp_path, capsys, "--data", str(d))
    assert rc == 2 and f"market data file {d / 'ES_2min.csv.gz'}: not a gzip file" in err
    d = _data_dir(tmp_path, gzip.compress(b"when,price\n1,2\n"))
    rc, err = _main(tmp_path, capsys, "--data", str(d))
    assert rc == 2 and "missing column(s) datetime, open, high, low, close, volume" in err and "line 1" in err


def test_every_dropped_bar_row_is_counted_by_reason(tmp_path, capsys):
    lines = _es_lines()
    hdr, rows = lines[0], lines[1:]
    t = [r.split(",")[0] for r in rows]
    bad = [
        f"{t[10]},1e30,1e30,1e30,1e30,5,ES",                 # price_out_of_range (was InvalidOperation)
        f"{t[11]},{2 ** 70},{2 ** 70},{2 ** 70},{2 ** 70},5,ES",  # on the tick grid but absurd
        f"{t[12]},NaN,6650,6649,6650,5,ES",                 # nan
        f"{t[13]},0,6650,6649,6650,5,ES",                   # non_positive_price
        f"{t[14]},6650,6649,6651,6650,5,ES",                # high_below_low
        f"{t[15]},6650,6651,6649,6650,-3,ES",               # negative_size
        f"{t[16]},24000,24001,23999,24000,5,NQ",            # wrong_symbol: an NQ row in the ES file
        rows[20],                                           # duplicate_timestamp
        rows[5],                                            # out_of_order
    ]
    es = [*rows[:10], *bad[:7], *rows[17:21], bad[7], bad[8], *rows[21:]]
    p = tmp_path / "ES_2min.csv.gz"
    p.write_bytes(gzip.compress(("\n".join([hdr, *es]) + "\n").encode()))
    kept, rejects = load_bar_csv(p, instrument="MES")
    assert dict(rejects) == {"price_out_of_range": 2, "nan": 1, "non_positive_price": 1, "high_below_low": 1,
                             "negative_size": 1, "wrong_symbol": 1, "duplicate_timestamp": 1, "out_of_order": 1}
    assert len(kept) + sum(rejects.values()) == len(es)
    source = open_replay(_data_dir(tmp_path, p.read_bytes()), ("MES", "MNQ"))
    assert source.rejects == rejects  # what the node adds to the summary's "rejected inputs"
    rc, _ = _main(tmp_path, capsys, "--data", str(tmp_path / "data"), *ONE_DAY)
    assert rc == 0


def test_absurd_prints_are_refused_by_range_and_sanity_band():
    core = FeedCore()
    assert core.route(TradeTick("MES", T0, D("6500.00"), 1, 0))
    assert core.route(TradeTick("MES", T0 + 1, D(2 ** 70), 1, 1)) == []       # on the grid, absurd
    assert core.route(TradeTick("MES", T0 + 2, D("7200.00"), 1, 2)) == []     # 10.8 % from 6500: band
    assert core.route(QuoteTick("MES", T0 + 3, D("5800.00"), D("5800.25"), 1, 1, 3)) == []
    assert core.route(TradeTick("MES", T0 + 4, D("7100.00"), 1, 4))           # 9.2 %: inside the band
    assert dict(core.rejected) == {"price_out_of_range": 1, "price_band": 2}
    # a genuine level change (a hole in the data) re-anchors after BAND_REANCHOR_PRINTS consistent prints
    v = MarketDataValidator()
    assert v.check_trade(TradeTick("MES", T0, D("6500.00"), 1, 0)) is None
    got = [v.check_trade(TradeTick("MES", T0 + k, D("5000.00") + k, 1, k)) for k in range(1, BAND_REANCHOR_PRINTS + 2)]
    assert got == ["price_band"] * (BAND_REANCHOR_PRINTS - 1) + [None, None]
    assert v.reanchored["MES"] == 1


def test_hub_prices_beyond_decimal_range_are_malformed_payloads():
    ts = "2026-04-08T15:00:00Z"
    for bad in (1e308, 2 ** 70, "1e999999", float("nan"), -6500.25, "x" * 100_000):
        with pytest.raises(MalformedPayload):
            trade_print_to_tick("MES", D("0.25"), {"price": bad, "volume": 1, "timestamp": ts}, seq=0)
        with pytest.raises(MalformedPayload):
            quote_to_tick("MES", D("0.25"), {"bestBid": bad, "bestAsk": 6500.5, "timestamp": ts}, seq=0)
    with pytest.raises(MalformedPayload, match="out_of_range:price"):
        trade_print_to_tick("MES", D("0.25"), {"price": 1e308, "volume": 1, "timestamp": ts}, seq=0)
