#!/usr/bin/env python
"""Benchmark the project's backtest against peer engines (NautilusTrader, backtrader), interleaved.

Every row runs in a fresh process, repetitions are interleaved (for rep in 1..N: for each
strategy: NautilusTrader row, backtrader row, project row(s)), and the table prints medians and the
ratios project/NautilusTrader and project/backtrader for bars/s, per-order cost and peak RSS.
Absolute times on shared machines drift through a day; only ratios from the same minutes mean
anything (../shared/bench/peers/README.md).

Set-up of the peers (a separate venv; they are not project dependencies)::

    python3 -m venv /tmp/peers && . /tmp/peers/bin/activate
    pip install nautilus_trader==1.221.0 backtrader pandas numpy TA-Lib

Usage (from the project root, in the project venv)::

    python scripts/benchmark_peers.py                         # 3 reps, every row
    python scripts/benchmark_peers.py --reps 1 --only ema     # strategies whose key contains "ema"
    python scripts/benchmark_peers.py --peer-python /tmp/peers/bin/python --peer-out /tmp/peer-results
    python scripts/benchmark_peers.py --project-row ema       # one project row (child mode): RESULT:{json}

Rows (same data, ../shared/data/es_nq_yahoo_2m_5m):

- ``ema``: EMA 10/30 on ES+NQ (project: ``ema_cross`` on MES and on MNQ; peers: ``--strategy ema
  --symbols ES,NQ``).
- ``grid``: the reference grid on ES (project: ``ref_grid`` on MES; peers: ``--strategy grid``).
- ``null`` is skipped: the project has no strategy kind that sees bars and does nothing.

The project runs under a risk profile (Topstep rules, 15:10 CT flatten, loss caps, sweep guard), so
its work differs from the peers' (fewer orders): orders and fills are printed next to the peers'.
Four project variants: ``practice-150k`` as shipped (``rules``), the same profile with every
personal guardrail switched off (``open``: "guardrails off"; the Topstep rules themselves stay on),
``open`` with four prints per bar (``ohlc``: ``runtime.path_step_bp: null``, no continuous-path
prints between them: the O, H, L, C points NautilusTrader's bar execution matches on, so the same
number of price events per bar as the peers), and ``open`` on the peers' account (``peer``: $100,000
start and an MLL of $99,999, so the loss limit never halts the account and the grid places orders all
run, as the peers' grid does; flat by 15:10 CT and the contract limit stay on). ``peer`` is the
like-for-like row for per-order cost: under ``open`` the reference grid touches practice-150k's MLL
and is halted after ~1,400 orders, so its seconds / orders is mostly per-bar work.

Measured per row (in the child process):

- bars: replayed 2-minute bars of the row's instruments.
- seconds: data loading + setup + run (after imports); the peers' ``e2e_s``, the project's
  Node construction + ``run_backtest(both_paths=False)``, cold (no file read before it).
- orders: orders that reached the venue (project: calls of ``PaperBroker.submit``, counted in the
  child; peers: ``orders_submitted``); fills; per-order cost = seconds / orders.
- peak RSS: the child's maximum resident set size, MiB (project: ``ru_maxrss``; peers:
  ``/usr/bin/time -v``, as their run_all.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domain import native  # noqa: E402
from scripts.host_speed import describe, loop_seconds  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "es_nq_yahoo_2m_5m"
PEERS = ROOT.parent / "shared" / "bench" / "peers"
PROFILE = "practice-150k"

EMA_PARAMS = {"fast": 10, "slow": 30, "qty": 1, "bar_s": 120}
PROJECT_STRATEGIES = {
    "ema": [{"name": "ema-ES", "kind": "ema_cross", "instruments": ["MES"], "params": dict(EMA_PARAMS)},
            {"name": "ema-NQ", "kind": "ema_cross", "instruments": ["MNQ"], "params": dict(EMA_PARAMS)}],
    "grid": [{"name": "ref-grid-MES", "kind": "ref_grid", "instruments": ["MES"]}],
}
# every personal guardrail of RiskProfile that accepts None but the sweep guard's distance
# (config.settings.SWEEP_GUARD_FIELDS, added in the child after its timed imports); the Topstep
# rules (MLL, contract limit, flat by 15:10 CT) are not touched
GUARDRAILS_OFF = {k: None for k in (
    "daily_loss_cap", "session_loss_cap", "trailing_kill_switch", "open_risk_cap", "per_trade_risk",
    "net_exposure_cap", "consecutive_loss_limit", "stress_loss_cap", "stress_move_pct", "personal_dll")}
# the peers' account: $100,000, no loss limit; Topstep's MLL is kept as a rule, out of reach
PEER_ACCOUNT = {"account_size": 100_000, "starting_balance": 100_000, "mll_amount": 99_999}
VARIANTS = {"rules": "project (practice-150k)", "open": "project, guardrails off (Topstep rules still on)",
            "ohlc": "project, guardrails off, four prints per bar",
            "peer": "project, guardrails off, the peers' $100,000 account (MLL out of reach)"}

# strategy key -> (label, peer args)
STRATEGIES = {
    "ema": ("EMA 10/30, ES+NQ", ["--strategy", "ema", "--symbols", "ES,NQ"]),
    "grid": ("reference grid, ES", ["--strategy", "grid", "--symbols", "ES"]),
}
PEER_ENGINES = (("nt", "NautilusTrader", "bench_nt.py"), ("bt", "backtrader", "bench_bt.py"))


# ---------------------------------------------------------------------------------- child mode
def project_row(strategy: str, variant: str) -> dict:
    """One project backtest in this process; returns the figures (printed as ``RESULT:{json}``)."""
    t_start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from loguru import logger

    logger.remove()  # the backtest logs every decision; keep the child's stdout to the result
    from actors.node import Node
    from actors.tree import MODES
    from config.settings import SWEEP_GUARD_FIELDS, load_config
    from infra.paper_broker import PaperBroker

    orders = 0
    submit = PaperBroker.submit

    def counting_submit(self, *a, **kw):  # every order that reaches the simulated venue
        nonlocal orders
        orders += 1
        return submit(self, *a, **kw)

    PaperBroker.submit = counting_submit
    t_imported = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        overrides: dict = {"strategies": PROJECT_STRATEGIES[strategy],
                           "runtime": {"data_dir": DATA, "run_dir": Path(tmp)}}
        if variant in ("open", "ohlc", "peer"):
            overrides["profile"] = {**GUARDRAILS_OFF, **dict.fromkeys(SWEEP_GUARD_FIELDS)}
        if variant == "peer":
            overrides["profile"].update(PEER_ACCOUNT)
        if variant == "ohlc":
            overrides["runtime"]["path_step_bp"] = None
        cfg = load_config(None, PROFILE, overrides)
        t0 = time.perf_counter()  # cold: nothing of the data read or cached before, as a user's run
        node = Node(cfg, MODES["backtest"], trades_csv=Path(tmp) / "trades.csv")
        summary = node.run_backtest(both_paths=False)
        secs = time.perf_counter() - t0
        bars = node.data.source.bar_count
    return {"engine": "project", "variant": variant, "strategy": strategy, "instruments": list(cfg.instruments()),
            "bars": bars, "e2e_s": secs, "import_s": t_imported - t_start, "orders_submitted": orders,
            "fills": summary.fills, "net_pnl": float(summary.net_pnl), "denials": summary.denials,
            "rules_ok": summary.rules_ok, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---------------------------------------------------------------------------------- parent mode
def parse_result(stdout: str) -> dict | None:
    res = None
    for line in stdout.splitlines():
        if line.startswith("RESULT:"):
            res = json.loads(line[len("RESULT:"):])
    return res


def run_peer(python: str, script: str, args: list[str], out: Path) -> dict:
    """One peer row in a fresh process under /usr/bin/time -v (as the peers' run_all.py does)."""
    cmd = ["/usr/bin/time", "-v", python, str(PEERS / script)] + args
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=out, check=False)
    res = parse_result(p.stdout)
    if p.returncode != 0 or res is None:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{p.stdout[-1500:]}\n{p.stderr[-2500:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    res["peak_rss_mb"] = int(m.group(1)) / 1024 if m else float("nan")
    return res


def run_project(strategy: str, variant: str) -> dict:
    """One project row in a fresh process of this interpreter (the project venv)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--project-row", strategy, "--variant", variant]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    res = parse_result(p.stdout)
    if p.returncode != 0 or res is None:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{p.stdout[-1500:]}\n{p.stderr[-2500:]}")
    return res


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def summarise(rs: list[dict]) -> dict:
    secs = statistics.median(r["e2e_s"] for r in rs)
    orders = rs[0].get("orders_submitted") or 0
    return {"bars": rs[0]["bars"], "secs": secs, "secs_min": min(r["e2e_s"] for r in rs),
            "secs_max": max(r["e2e_s"] for r in rs), "bars_per_s": statistics.median(r["bars"] / r["e2e_s"] for r in rs),
            "orders": orders, "fills": rs[0]["fills"], "per_order_ms": secs / orders * 1e3 if orders else None,
            "rss": statistics.median(r["peak_rss_mb"] for r in rs), "reps": len(rs),
            "varies": len({(r.get("orders_submitted"), r["fills"]) for r in rs}) > 1}


def print_table(stats: dict, strategies: list[str], variants: list[str]) -> None:
    hdr = ("| row | engine | bars | s (median) [min-max] | bars/s | orders | fills | per-order ms | peak RSS MiB |")
    print(hdr)
    print("|" + "---|" * 9)
    for s in strategies:
        for key in [e[0] for e in PEER_ENGINES] + variants:
            st = stats.get((s, key))
            if st is None:
                continue
            eng = {e[0]: e[1] for e in PEER_ENGINES}.get(key) or VARIANTS[key]
            po = f"{st['per_order_ms']:.3f}" if st["per_order_ms"] is not None else "n/a"
            print(f"| {STRATEGIES[s][0]} | {eng} | {st['bars']:,} | {st['secs']:.3f} [{st['secs_min']:.3f}-{st['secs_max']:.3f}] | "
                  f"{st['bars_per_s']:,.0f} | {st['orders']:,} | {st['fills']:,}{' (varies!)' if st['varies'] else ''} | "
                  f"{po} | {st['rss']:.0f} |")
    print()
    print("Ratios (project / peer; bars/s > 1x: project faster; per-order ms and RSS < 1x: project cheaper)")
    print()
    print("| row | project variant | peer | bars/s ratio | per-order cost ratio | peak RSS ratio |")
    print("|" + "---|" * 6)
    for s in strategies:
        for v in variants:
            p = stats.get((s, v))
            for key, name, _ in PEER_ENGINES:
                q = stats.get((s, key))
                if p is None or q is None:
                    continue
                print(f"| {STRATEGIES[s][0]} | {VARIANTS[v]} | {name} | {ratio(p['bars_per_s'], q['bars_per_s'])} | "
                      f"{ratio(p['per_order_ms'], q['per_order_ms'])} | {ratio(p['rss'], q['rss'])} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions per row (default 3)")
    ap.add_argument("--only", default=None, help="run only strategies whose key (ema, grid) contains this")
    ap.add_argument("--variants", default="rules,open,ohlc,peer",
                    help="project variants: rules (practice-150k), open (guardrails off), ohlc (open, four prints "
                         "per bar), peer (open on the peers' $100,000 account, MLL out of reach)")
    ap.add_argument("--peer-python", default="/tmp/peers/bin/python", help="python of the peers' venv")
    ap.add_argument("--peer-out", default=os.environ.get("PEER_OUT", "/tmp/peer-results"),
                    help="working folder of the peer processes (the shared folder is read-only)")
    ap.add_argument("--no-peers", action="store_true", help="run the project rows only")
    ap.add_argument("--json", default=None, help="also write the raw results to this file")
    ap.add_argument("--project-row", choices=sorted(PROJECT_STRATEGIES), help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="rules", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.project_row:  # child mode: one project row, one RESULT line
        sys.stdout.write("RESULT:" + json.dumps(project_row(args.project_row, args.variant), default=float) + "\n")
        return 0

    strategies = [s for s in STRATEGIES if args.only is None or args.only in s]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    peers = not args.no_peers
    if peers and not Path(args.peer_python).exists():
        ap.error(f"--peer-python {args.peer_python} not found (see the set-up in this script's docstring)")
    out = Path(args.peer_out)
    out.mkdir(parents=True, exist_ok=True)

    raw: dict[tuple[str, str], list[dict]] = {}
    host_before = loop_seconds()
    t0 = time.time()
    for rep in range(1, args.reps + 1):
        for s in strategies:
            jobs = [(key, lambda sc=script, s=s: run_peer(args.peer_python, sc, STRATEGIES[s][1], out))
                    for key, _n, script in PEER_ENGINES] if peers else []
            jobs += [(v, lambda v=v, s=s: run_project(s, v)) for v in variants]
            for key, job in jobs:
                r = job()
                raw.setdefault((s, key), []).append(r)
                print(f"[rep {rep}] {s:5s} {key:6s} bars {r['bars']:>6}  {r['e2e_s']:8.3f}s  "
                      f"orders {r.get('orders_submitted') or 0:>6}  fills {r['fills']:>6}  "
                      f"rss {r['peak_rss_mb']:6.0f} MiB", flush=True)
    total = time.time() - t0
    host_after = loop_seconds()
    stats = {k: summarise(v) for k, v in raw.items()}
    print()
    print(f"Medians of {args.reps} fresh processes per row, rows interleaved; whole run {total:.0f} s; "
          f"{os.cpu_count()} CPUs; profile {PROFILE}; data {DATA}")
    print(describe(host_before, host_after))
    print(f"project: {native.install().line}")
    print()
    print_table(stats, strategies, variants)
    if args.json:
        Path(args.json).write_text(json.dumps({"total_s": total, "host_loop_s": [host_before, host_after], "raw": {f"{s}/{k}": v for (s, k), v in raw.items()}},
                                              indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
