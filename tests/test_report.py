"""The backtest report: round-trip trades, seed 002's results table, the report folder.

Hand-made fills for the matching (partial closes, a flip, risk's flatten split between two
strategies, fees that do not divide evenly); a hand-made trade set for the table's exact layout
(seed 002 section 2.9, /work/shared/seeds/002_2613e4c741f6e65a.txt); one real backtest on the
bundled data/demo whose report folder is checked file by file, and the command line's options.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

import supervisor
from config.settings import load_config
from domain.calendar import NS
from domain.messages import Fill, Side
from domain.report import SessionSummary, attribute_fills
from domain.trade_stats import (
    ENTRY,
    EXIT,
    RISK,
    RoundTrip,
    compute_stats,
    drawdowns,
    eod_mll_floors,
    equity_curve,
    match_round_trips,
    regime_of,
    render_seed_table,
)

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_775_600_000 * NS  # 2026-04-07 17:13:20 CT


def fill(strategy: str, tid: str, side: Side, qty: int, price: str, fee: str, sec: int,
         instrument: str = "MES") -> Fill:
    return Fill(f"{strategy}-{tid}", strategy, tid, instrument, side, qty, D(price), D(fee), 0, T0 + sec * NS)


# ------------------------------------------------------------------ round trips


def test_partial_closes_make_one_trade_per_matched_part_with_exact_fees():
    fills = [fill("g", "T1", Side.BUY, 3, "100.00", "1.83", 0),
             fill("g", "T2", Side.SELL, 1, "101.00", "0.61", 10),
             fill("g", "T3", Side.SELL, 2, "99.50", "1.22", 20)]
    m = match_round_trips(fills, ["g"], {"T1": "grid-entry", "T2": "grid-tp", "T3": "grid-tp"})
    assert [(t.side, t.qty, t.entry_price, t.exit_price, t.gross, t.fees) for t in m.trades] == [
        ("long", 1, D("100.00"), D("101.00"), D("5.00"), D("1.22")),   # 1 pt x $5; 0.61 + 0.61
        ("long", 2, D("100.00"), D("99.50"), D("-5.00"), D("2.44"))]   # -0.5 pt x 2 x $5; 1.22 + 1.22
    assert m.trades[0].entry_ns == T0 and m.trades[1].exit_ns == T0 + 20 * NS
    assert m.trades[1].entry_purpose == "grid-entry" and m.trades[1].exit_purpose == "grid-tp"
    assert m.roles == {"T1": ENTRY, "T2": EXIT, "T3": EXIT} and m.open_lots == {}


def test_a_fee_that_does_not_divide_evenly_is_shared_to_the_cent_and_adds_up():
    fills = [fill("g", "T1", Side.BUY, 3, "100.00", "1.00", 0),
             fill("g", "T2", Side.SELL, 1, "100.00", "0", 1),
             fill("g", "T3", Side.SELL, 2, "100.00", "0", 2)]
    trades = match_round_trips(fills, ["g"]).trades
    assert [t.fees for t in trades] == [D("0.33"), D("0.67")]
    assert sum(t.net for t in trades) == D("-1.00")


def test_a_flip_closes_the_position_and_opens_the_rest_the_other_way():
    fills = [fill("ema", "T1", Side.BUY, 2, "20000.00", "1.22", 0, "MNQ"),
             fill("ema", "T2", Side.SELL, 3, "20010.00", "1.83", 60, "MNQ"),   # closes 2, opens short 1
             fill("ema", "T3", Side.BUY, 1, "20005.00", "0.61", 120, "MNQ")]
    m = match_round_trips(fills, ["ema"])
    assert [(t.side, t.qty, t.gross, t.fees, t.entry_ns, t.exit_ns) for t in m.trades] == [
        ("long", 2, D("40.00"), D("2.44"), T0, T0 + 60 * NS),           # 10 pt x 2 x $2
        ("short", 1, D("10.00"), D("1.22"), T0 + 60 * NS, T0 + 120 * NS)]  # 5 pt x $2; the flip's 0.61 + 0.61
    assert m.roles == {"T1": ENTRY, "T2": EXIT, "T3": EXIT}
    pf = attribute_fills(fills, ["ema"])["ema"]
    assert sum(t.net for t in m.trades) == pf.realized - pf.fees


def test_risks_flatten_closes_each_strategys_position_oldest_holder_first():
    fills = [fill("a", "T1", Side.BUY, 1, "100.00", "0.61", 0),
             fill("b", "T2", Side.BUY, 2, "101.00", "1.22", 1),
             fill("risk", "T3", Side.SELL, 3, "102.00", "1.83", 2),
             fill("risk", "T4", Side.SELL, 1, "20000.00", "0.61", 3, "MNQ"),   # nobody's position: left out
             fill("a", "T5", Side.SELL, 1, "103.00", "0.61", 4)]              # a goes short afterwards (open)
    m = match_round_trips(fills, ["a", "b"], {"T3": "flatten: daily_loss_cap"})
    assert [(t.strategy, t.qty, t.gross, t.fees, t.closed_by, t.exit_purpose) for t in m.trades] == [
        ("a", 1, D("10.00"), D("1.22"), "risk", "flatten: daily_loss_cap"),
        ("b", 2, D("10.00"), D("2.44"), "risk", "flatten: daily_loss_cap")]
    assert m.roles["T3"] == RISK and m.roles["T5"] == ENTRY and "T4" not in m.roles
    assert m.open_lots == {("a", "MES"): -1}
    books = attribute_fills(fills[:3], ["a", "b"])  # the summary's per-strategy figures agree
    for name in ("a", "b"):
        assert sum(t.net for t in m.trades if t.strategy == name) == books[name].realized - books[name].fees


def test_regime_labels_come_from_the_entry_purpose():
    assert regime_of("entry; regime=Strong Bull") == "Strong Bull"
    assert regime_of("grid-entry") is None and regime_of("") is None
    fills = [fill("h", "T1", Side.SELL, 1, "100.00", "0", 0), fill("h", "T2", Side.BUY, 1, "99.00", "0", 1)]
    m = match_round_trips(fills, ["h"], {"T1": "short; regime=Crash", "T2": "cover; regime=Bull"})
    assert m.trades[0].regime == "Crash" and m.trades[0].side == "short" and m.trades[0].gross == D("5.00")


# ------------------------------------------------------------------ the results table


def trip(strategy: str, net: str, regime: str | None = None) -> RoundTrip:
    return RoundTrip(strategy, "MES", "long", 1, T0, T0 + NS, D(100), D(100), D(net) + D("1.22"), D("1.22"),
                     regime=regime)


TRIPS = [trip("grid-MES", "50.00"), trip("grid-MES", "30.00"), trip("grid-MES", "-40.00"),
         trip("hedge", "-20.00"), trip("hedge", "10.00")]


def table(trades: list[RoundTrip]) -> str:
    return render_seed_table(compute_stats(
        trades, days=["2026-04-08", "2026-04-09"], total_pnl=D("30.00"), max_drawdown=D("1234.5"),
        day_pnls=[("2026-04-08", D("-760.00"), 3), ("2026-04-09", D("790.00"), 2)], daily_loss_cap=D(750),
        cap_breach_days=["2026-04-08"], strategies=["grid-MES", "hedge", "idle"]))


def test_seed_table_layout_and_numbers():
    assert table(TRIPS) == """\
=== BACKTEST RESULTS ===
Period:            08/04/2026 \u2013 09/04/2026
Total PnL:         $30.00 (net of slippage + commission)
Max Drawdown:      $1,234.50
Win Rate:          60.0%
Avg Win:           $30.00
Avg Loss:          $30.00
Win/Loss Ratio:    1.00
Total Trades:      5
Trades/Day:        2.5
Days Simulated:    2
Days hitting $750 limit: 1 (50%)

PnL by Strategy:
  grid-MES:        $40  (3 trades)
  hedge:           -$10  (2 trades)
  idle:            $0  (0 trades)"""


def test_seed_table_breaks_down_by_regime_when_trades_carry_one():
    trades = [trip("grid-MES", "50.00", "Strong Bull"), trip("grid-MES", "-20.00", "Crash"), trip("hedge", "5.00")]
    text = table(trades)
    assert text.endswith("""
PnL by Regime:
  Strong Bull:     $50  (1 trades)
  Crash:           -$20  (1 trades)
  (none):          $5  (1 trades)""")
    assert "Win Rate:          66.7%" in text and "Win/Loss Ratio:    1.38" in text


def test_seed_table_without_trades_says_n_a():
    text = table([])
    assert "Win Rate:          n/a" in text and "Avg Loss:          n/a" in text and "Total Trades:      0" in text


def test_the_session_summary_prints_the_table():
    s = SessionSummary("backtest", ["2026-04-08"])
    s.add_strategies([("g", "grid", ("MES",), {})],
                     [fill("g", "T1", Side.BUY, 1, "100.00", "0.61", 0), fill("g", "T2", Side.SELL, 1, "101.00", "0.61", 1)])
    text = s.render()
    assert "\n=== BACKTEST RESULTS ===\nPeriod:            08/04/2026 \u2013 08/04/2026\n" in text
    assert "Avg Win:           $3.78" in text and "  g:               $4  (1 trades)" in text


# ------------------------------------------------------------------ a real backtest's report folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One backtest of data/demo (combine-150k: it trades every day) and its report folder."""
    from actors.node import Node
    from actors.tree import MODES
    from infra.reporting import new_report_dir, write_report
    tmp = tmp_path_factory.mktemp("report")
    cfg = load_config(None, "combine-150k", {"runtime": {"data_dir": str(ROOT / "data/demo"), "run_dir": str(tmp)}})
    summary = Node(cfg, MODES["backtest"], trades_csv=tmp / "trades" / "t.csv").run_backtest()
    out = write_report(summary, cfg, new_report_dir(tmp, summary, cfg.profile.name))
    return summary, cfg, out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_report_folder_has_every_file(demo):
    summary, cfg, out = demo
    assert out.parent == Path(cfg.runtime.run_dir) / "reports"
    assert re.fullmatch(r"backtest_2026-04-08_2026-04-10_combine-150k_\d{8}-\d{6}", out.name)
    worst = summary.worst_day[0]
    pngs = {"equity.png", "drawdown.png", "daily_pnl.png", "strategies.png", f"price_{worst}_MES.png",
            f"price_{worst}_MNQ.png"}
    assert {p.name for p in out.iterdir()} == {"report.html", "summary.json", "trades.csv", *pngs}
    for name in pngs:
        assert png_size(out / name) == (900, 450)
        assert 3_000 < (out / name).stat().st_size < 80_000, name


def test_report_html_is_self_contained(demo):
    _summary, _cfg, out = demo
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower()
    srcs = re.findall(r'\b(?:src|href)="([^"]*)"', text)
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "=== BACKTEST RESULTS ===" in text and "Combine passed:" in text and "adverse" in text
    assert text.count("<figcaption>") == 6


def test_summary_json_and_trades_csv_add_up_to_the_session(demo):
    summary, _cfg, out = demo
    assert summary.open_positions == {}, "the session ends flat"
    js = json.loads((out / "summary.json").read_text())
    assert D(js["account"]["net_pnl"]) == summary.net_pnl
    assert js["path_nets"] == {k: str(v) for k, v in summary.path_nets.items()}
    rows = list(csv.DictReader(io.StringIO((out / "trades.csv").read_text())))
    assert rows and js["seed_table"]["total_trades"] == len(rows) == len(summary.round_trips)
    assert sum(D(r["net_pnl"]) for r in rows) == summary.gross_pnl - summary.fees == summary.net_pnl
    assert all(D(r["gross_pnl"]) - D(r["fees"]) == D(r["net_pnl"]) for r in rows)
    for r in summary.strategies:
        assert sum(D(x["net_pnl"]) for x in rows if x["strategy"] == r.name) == r.net_pnl
    assert {r["exit_purpose"] for r in rows} >= {"grid-tp"} and any(r["closed_by"] == "risk" for r in rows)
    assert all(r["entry_time_ct"].endswith(("-05:00", "-06:00")) for r in rows)
    assert [d["day"] for d in js["days"]] == [d for d, _p, _n in summary.day_pnls]
    assert js["seed_table"]["text"] in summary.render()


@pytest.mark.parametrize("path", ["adaptive", "adverse"])
def test_the_equity_curve_is_risks_marked_equity_at_every_print(tmp_path, path):
    """Marked at every replayed print (the run's intra-bar path), the curve's deepest drawdown is
    risk's max drawdown to the cent, and it ends at the account's net P&L."""
    from actors.node import Node
    from actors.tree import MODES
    from infra.reporting import _collect
    cfg = load_config(None, "combine-150k", {"runtime": {"data_dir": str(ROOT / "data/demo"), "run_dir": str(tmp_path),
                                                         "bar_path": path}})
    summary = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest(both_paths=False)
    curve = _collect(summary, cfg, None).curve
    assert summary.fills > 100 and summary.max_drawdown > 0
    assert max(drawdowns([p.equity for p in curve])) == summary.max_drawdown
    assert curve[-1].equity == cfg.profile.starting_balance + summary.net_pnl
    assert len(curve) > 10 * summary.fills  # marked between the fills, not only at them


def test_equity_curve_and_mll_floor_match_risks_book(demo):
    from infra.trade_log import read_records
    summary, cfg, _out = demo
    fills = [r.fill for r in read_records(Path(summary.trades_csv).read_text())]
    curve = equity_curve(fills, [], cfg.profile.starting_balance)
    assert curve[-1].equity == curve[-1].balance == cfg.profile.starting_balance + summary.net_pnl
    floors = eod_mll_floors(summary.day_pnls[:-1], cfg.profile.starting_balance, cfg.profile.mll_amount)
    assert floors[-1][1] == summary.mll_floor  # the floor after the last closed day


# ------------------------------------------------------------------ command line


@pytest.fixture
def default_logging():
    """supervisor.main sets up logging to the test's captured stderr, closed after the test: log to
    whatever ``sys.stderr`` is at the time afterwards (loguru's default, looked up per message)."""
    yield
    from loguru import logger
    logger.remove()
    logger.configure(patcher=None)
    logger.add(lambda m: sys.stderr.write(m))


def test_cli_writes_the_report_for_the_chosen_day_and_prints_its_path(default_logging, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--mode", "backtest", "--profile", "combine-150k", "--run-dir", str(run), "--start", "2026-04-09",
            "--end", "2026-04-09"]
    assert supervisor.main([*argv, "--report-day", "2026-04-09"]) == 0
    out = capsys.readouterr().out
    assert "\n=== BACKTEST RESULTS ===\nPeriod:            09/04/2026 \u2013 09/04/2026\n" in out
    folder = Path(re.search(r"^report: (.+)/report\.html", out, re.MULTILINE).group(1))
    assert folder.parent == run / "reports" and (folder / "price_2026-04-09_MES.png").is_file()
    assert supervisor.main([*argv, "--no-report"]) == 0
    assert len(list((run / "reports").iterdir())) == 1 and "report:" not in capsys.readouterr().out
    assert supervisor.main([*argv, "--report-day", "2026-04-10"]) == 2
    assert "--report-day 2026-04-10 is outside --start..--end" in capsys.readouterr().err


def test_matplotlib_is_not_imported_by_the_node():
    code = "import sys, actors.node, infra.reporting; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_regime_strategys_price_chart_shows_its_regimes_and_vwap_band(tmp_path):
    """The regime strategy's chart: the background is the regime its own forward filter saw and the
    lines its session VWAP and band (domain/strategies/regime_vwap.py ``indicator_series``)."""
    from actors.node import Node
    from actors.tree import MODES
    from infra.reporting import _regime_overlay, new_report_dir, write_report
    cfg = load_config(ROOT / "config/regime.yaml", "combine-150k", {"runtime": {"run_dir": str(tmp_path)}})
    summary = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest(both_paths=False)
    out = write_report(summary, cfg, new_report_dir(tmp_path, summary, cfg.profile.name), day="2026-04-09")
    page = (out / "report.html").read_text()
    assert "forward filter saw (5-minute bars)" in page
    assert png_size(out / "price_2026-04-09_MNQ.png") == (900, 450)
    from infra.replay import ReplaySource
    import datetime as _dt
    day = _dt.date(2026, 4, 9)
    bars = ReplaySource({"MNQ": ROOT / "data/demo/NQ_2min.csv.gz"}, start=day, end=day, warmup_days=0).bars("MNQ")
    series = _regime_overlay(cfg, "MNQ", bars)
    assert series and {r for _t, r, *_ in series} <= {"strong_bull", "bull", "neutral", "bear", "crash", None}
    assert all(lo <= vw <= hi for _t, _r, vw, lo, hi in series if lo is not None)
    assert len({r for _t, r, *_ in series if r}) >= 2  # the regime changes during the day
