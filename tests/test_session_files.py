"""Per-day session files (seed 003 "Logging"; infra/session_files.py, docs/strategies/scalper.md):
the ML scalper run through the node on the bundled data with a low confidence gate so it trades,
then ``trading_<day>.log``, ``trades_<day>.csv`` and ``metrics_<day>.json`` checked for every
trading day: the seed's line formats, and nets that add up (trades CSV = metrics = the node's
summary). Real node runs, real files; the paper run goes through supervisor.py on a real Redis."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from domain.trade_stats import RoundTripMatcher, match_round_trips
from infra.trade_log import read_records

ROOT = Path(__file__).resolve().parent.parent
SCALPER = [{"name": "scalper-MES", "kind": "ml_scalper", "instruments": ["MES"],
            "params": {"min_confidence": 0.35, "reverse_confidence": 0.6}}]

STAMP = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} \[(DEBUG|INFO|WARNING|ERROR)\] "
SIGNAL = re.compile(STAMP + r"SIGNAL: (LONG_ENTRY|SHORT_ENTRY|EXIT_LONG|EXIT_SHORT|REVERSE_TO_LONG|REVERSE_TO_SHORT) "
                    r"conf=0\.\d\d price=\d+\.\d{2}\b")
ORDER = re.compile(STAMP + r"ORDER: (MARKET|LIMIT|STOP) (BUY|SELL) \d+ MES @ (market|\d+\.\d{2})\b")
FILL = re.compile(STAMP + r"FILL: (BOUGHT|SOLD) \d+ MES @ \d+\.\d{2}( \((TARGET HIT|STOP HIT|EXIT: [^)]*|FLATTEN: [^)]*)\))?"
                  r" id=")
CLOSED = re.compile(STAMP + r"TRADE CLOSED: (?P<net>[+-]\$[\d,]+\.\d{2}) \((?P<ticks>-?\d+) ticks\)")
KNOWN = re.compile(STAMP + r"(SESSION|SIGNAL|ORDER|FILL|TRADE CLOSED|CANCELLED|REJECTED|RISK): ")


def _dollars(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", ""))


def _check_day_files(folder: Path, days: list[str], day_pnls: dict[str, Decimal]) -> dict[str, int]:
    """Every day has its three files; each log line has a known shape; per day the trades CSV's
    nets add up to the metrics' trades_net and net, and to the summary's day P&L. Returns counts."""
    counts = {"signals": 0, "orders": 0, "fills": 0, "closed": 0, "trades": 0}
    for day in days:
        log = (folder / f"trading_{day}.log").read_text().splitlines()
        rows = list(csv.DictReader((folder / f"trades_{day}.csv").open()))
        m = json.loads((folder / f"metrics_{day}.json").read_text())
        assert log and log[0].split("] ", 1)[1].startswith(f"SESSION: trading day {day}")
        assert all(KNOWN.match(line) for line in log), [line for line in log if not KNOWN.match(line)][:3]
        sig = [line for line in log if " SIGNAL: " in line]
        orders = [line for line in log if " ORDER: " in line]
        fills = [line for line in log if " FILL: " in line]
        closed = [CLOSED.match(line) for line in log if " TRADE CLOSED: " in line]
        assert all(SIGNAL.match(line) for line in sig), sig[:3]
        assert all(ORDER.match(line) for line in orders), orders[:3]
        assert all(FILL.match(line) for line in fills), fills[:3]
        assert all(closed), [line for line in log if " TRADE CLOSED: " in line][:3]
        nets = [Decimal(r["net_pnl"]) for r in rows]
        # the log's TRADE CLOSED figures are the CSV's trades, in order, with their ticks
        assert [_dollars(c["net"]) for c in closed] == nets
        assert [int(c["ticks"]) for c in closed] == [int(r["ticks"]) for r in rows]
        for r in rows:
            sign = 1 if r["side"] == "long" else -1
            ticks = (Decimal(r["exit_price"]) - Decimal(r["entry_price"])) * sign / Decimal("0.25")
            assert int(r["ticks"]) == ticks
            assert Decimal(r["gross_pnl"]) == ticks * Decimal("1.25") * int(r["qty"])  # MES: $1.25 a tick
        assert m["trading_day"] == day and m["time_zone"] == "America/Chicago"
        assert Decimal(m["trades_net"]) == sum(nets, Decimal(0)) == Decimal(m["net"]) == day_pnls.get(day, Decimal(0))
        assert m["trades"] == len(rows) == m["wins"] + m["losses"] + sum(1 for n in nets if n == 0)
        assert m["fills"] == len(fills) and sum(m["orders"].values()) == len(orders)
        assert sum(m["signals"].values()) == len(sig) and m["denied"] is not None
        assert Decimal(m["max_drawdown"]) >= 0
        counts["signals"] += len(sig)
        counts["orders"] += len(orders)
        counts["fills"] += len(fills)
        counts["closed"] += len(closed)
        counts["trades"] += len(rows)
    return counts


def test_backtest_writes_the_three_files_per_trading_day(tmp_path):
    cfg = load_config(None, "combine-50k", {"strategies": SCALPER, "runtime": {
        "data_dir": str(ROOT / "data" / "demo"), "run_dir": str(tmp_path)}})
    folder = tmp_path / "logs" / "backtest"
    node = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv", session_dir=folder)
    s = node.run_backtest(both_paths=False)
    stats = s.strategies[0].stats
    assert stats["entries"] >= 3, stats  # the low gate trades
    counts = _check_day_files(folder, s.days, {d: p for d, p, _n in s.day_pnls})
    # the days' nets add up to the node's summary, every fill and signal is in a log
    assert sum(Decimal(json.loads((folder / f"metrics_{d}.json").read_text())["net"]) for d in s.days) == s.net_pnl
    assert counts["fills"] == s.fills
    assert counts["signals"] == sum(stats[k] for k in ("long_entry", "short_entry", "exit_long", "exit_short",
                                                        "reverse_to_long", "reverse_to_short")) - stats["denied"]
    assert counts["trades"] == counts["closed"] == len(s.round_trips)
    report = (folder / f"session_{s.days[0]}_{s.days[-1]}.txt").read_text()
    assert "session summary (backtest)" in report and f"net P&L: ${s.net_pnl:,.2f}" in report
    # the incremental matcher the files use finds the report's round trips
    rows = read_records((tmp_path / "t.csv").read_text())
    batch = match_round_trips([r.fill for r in rows], ["scalper-MES"], {r.fill.trade_id: r.purpose for r in rows})
    inc = RoundTripMatcher(["scalper-MES"])
    assert [t for r in rows for t in inc.add(r.fill, r.purpose)] == batch.trades and inc.roles == batch.roles


def test_a_backtest_without_a_session_dir_writes_none(tmp_path):
    cfg = load_config(None, "combine-50k", {"strategies": SCALPER, "runtime": {
        "data_dir": str(ROOT / "data" / "demo"), "run_dir": str(tmp_path), "start": "2026-04-10",
        "end": "2026-04-10"}})
    Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest(both_paths=False)
    assert not list(tmp_path.rglob("trading_*.log"))


def test_paper_session_shutdown_writes_the_files_and_the_session_report(redis_url, tmp_path):
    """A paper session through supervisor.py (actors, Redis) at full speed: the shutdown path
    (cancel, flatten, persist, then the session files and report, then disconnect) leaves the
    three files per day and the report, whose net is the printed summary's."""
    from tests.live_support import supervisor_env
    config = tmp_path / "scalper.yaml"
    config.write_text("strategies:\n  - name: scalper-MES\n    kind: ml_scalper\n    instruments: [MES]\n"
                      "    params: {min_confidence: 0.35, reverse_confidence: 0.6}\n")
    ns = f"test:sf:{uuid.uuid4().hex[:6]}"
    q = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper", "--profile", "combine-50k",
                        "--config", str(config), "--start", "2026-04-09", "--end", "2026-04-10", "--namespace", ns,
                        "--run-dir", str(tmp_path), "--metrics-port", "0", "--ops-port", "0", "--speed", "max",
                        "--fresh"], env=supervisor_env(redis_url, creds=False), cwd=ROOT, capture_output=True,
                       text=True, timeout=240)
    out = q.stdout + q.stderr
    assert q.returncode == 0, out[-3000:]
    folder = tmp_path / "logs" / ns.replace(":", "_")
    days = ["2026-04-09", "2026-04-10"]
    net = Decimal(re.search(r"net P&L: \$(-?[\d,]+\.\d\d)", q.stdout)[1].replace(",", ""))
    day_pnls = {d: Decimal(p.replace(",", ""))  # the summary's per-day table: "  2026-04-09      -79.85 ..."
                for d, p in re.findall(r"^  (2026-04-\d\d)\s+(-?[\d,]+\.\d\d)\s", q.stdout, re.M)}
    metrics = {d: json.loads((folder / f"metrics_{d}.json").read_text()) for d in days}
    _check_day_files(folder, days, {d: Decimal(metrics[d]["net"]) for d in days})
    assert sum(Decimal(m["net"]) for m in metrics.values()) == net
    assert day_pnls and set(day_pnls) <= set(days)
    for d in days:
        if d in day_pnls:
            assert day_pnls[d] == Decimal(metrics[d]["net"])
    assert sum(m["trades"] for m in metrics.values()) >= 1
    report = (folder / "session_2026-04-09_2026-04-10.txt").read_text()
    assert "session summary (paper)" in report and "open positions at exit: none" in report
    # the shutdown's order in the process log: flat first, then the session files, then disconnect
    assert out.index("flat check: risk's book flat") < out.index("session files (trading_<day>.log")
