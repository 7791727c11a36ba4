#!/usr/bin/env python
"""Instructions executed by the 28-session grid+hedge backtest, per source tree: a speed ratio the
host's drift does not move.

Wall times on the 2-core development machines drift by up to 2x through a day and differ by up to
1.5x between two runs a minute apart (docs/benchmarks.md, "The machine, and how to compare").
The number of machine instructions the interpreter executes for the same run does not: valgrind's
``cachegrind`` counts them (``I refs``) and two counts of one tree agree within about 0.1 % on the 28 sessions (up to about 4 % on one
short day: the imports alone vary by up to about 60 M instructions between processes, and the
count subtracts them).
The ratio of two trees' counts is a speed ratio without noise; it leaves out what instructions
do not show (cache misses, branch mispredictions), so give it beside the interleaved wall times,
not instead of them.

For each tree the script runs the backtest once plainly (so that the tree's byte-code is
compiled), then counts twice, each in a fresh ``python`` under valgrind: the imports,
the config and the run (``Node(cfg, MODES["backtest"]).run_backtest(both_paths=False)`` on
profile ``combine-50k``, what ``scripts/benchmark.py --part backtest`` times), then the imports
and the config alone. Both counted children run with ``PYTHONHASHSEED=0``. The difference is the run's count, printed with the run's fills and net
so that trees doing other work show as such. Trees are counted two at a time (2 cores).

Usage::

    python scripts/benchmark_instructions.py                         # this tree
    python scripts/benchmark_instructions.py . /tmp/base61           # this tree and another checkout
    python scripts/benchmark_instructions.py --start 2026-04-06 --end 2026-04-10 .   # 5 sessions, ~30 s
    NATIVE_BUILD=off python scripts/benchmark_instructions.py .      # the Python sources, built or not

The last column says whether a tree ran its native build (scripts/build_native.py,
docs/decisions/0024): ``in use``, ``not built``, ``stale``, ``off``, or ``none`` for a tree from
before it.

Needs ``valgrind`` (apt ``valgrind``); a tree must have ``actors.node.Node`` with
``run_backtest(both_paths=...)`` (61e0c15 and later). About 2 minutes per tree on the 28 sessions
(20-25x the plain run).

Raises SystemExit(2) when valgrind or the data folder is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "es_nq_yahoo_2m_5m"

CHILD = """
import sys, tempfile, datetime as dt
from pathlib import Path
tree, data, start, end, run = sys.argv[1:6]
sys.path.insert(0, tree)
from loguru import logger
logger.remove()
from config.settings import load_config
from actors.node import Node
from actors.tree import MODES
runtime = {"data_dir": Path(data), "run_dir": Path(tempfile.mkdtemp())}
if start != "-":
    runtime["start"] = dt.date.fromisoformat(start)
if end != "-":
    runtime["end"] = dt.date.fromisoformat(end)
cfg = load_config(None, "combine-50k", {"runtime": runtime})
if run == "1":
    node = Node(cfg, MODES["backtest"], trades_csv=runtime["run_dir"] / "trades.csv")
    s = node.run_backtest(both_paths=False)
    native = "none"  # a tree from before the native build (decision 0024)
    if (Path(tree) / "domain" / "native.py").exists():
        from domain.native import install
        native = install().state.replace(" ", "-")
    print(f"RESULT {s.fills} {s.net_pnl} {s.events} {native}")
"""


def _env(write_bytecode: bool) -> dict[str, str]:
    """The children's environment: a fixed hash seed (string hashing and set order otherwise move
    the count by a few parts in 1,000), and byte-code written only by the warm-up run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONHASHSEED"] = "0"
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def warm(script: Path, tree: Path, data: Path, start: str, end: str) -> None:
    """One plain run of the child ``script`` (:data:`CHILD`), so that both counted children read
    the tree's compiled byte-code instead of compiling its modules (where the tree is writable)."""
    subprocess.run([sys.executable, str(script), str(tree), str(data), start, end, "1"], capture_output=True,
                   text=True, cwd=tree, env=_env(True), check=True)


def count(script: Path, tree: Path, data: Path, start: str, end: str, run: bool) -> tuple[int, str]:
    """``(I refs, the child's RESULT line or "")`` of the child ``script`` under cachegrind."""
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, str(script), str(tree), str(data), start, end, "1" if run else "0"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=_env(False))
    m = re.search(r"I\s+refs:\s+([\d,]+)", p.stderr)
    if p.returncode != 0 or m is None:
        raise RuntimeError(f"{tree}: the child failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    result = next((line for line in p.stdout.splitlines() if line.startswith("RESULT ")), "")
    return int(m.group(1).replace(",", "")), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="*", type=Path, default=[ROOT], help="source trees (default: this one)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="bar files (default: the 28 sessions)")
    ap.add_argument("--start", type=dt.date.fromisoformat, help="first trading day (default: the data's)")
    ap.add_argument("--end", type=dt.date.fromisoformat, help="last trading day (default: the data's)")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("error: valgrind not found (apt install valgrind)", file=sys.stderr)
        return 2
    if not args.data.exists():
        print(f"error: data folder {args.data} not found", file=sys.stderr)
        return 2
    start = args.start.isoformat() if args.start else "-"
    end = args.end.isoformat() if args.end else "-"
    trees = [t.resolve() for t in args.trees]
    data = args.data.resolve()
    jobs = [(t, run) for t in trees for run in (True, False)]  # a tree given twice is counted twice
    with tempfile.TemporaryDirectory(prefix="tsx-instr-") as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        for t in trees:
            warm(script, t, data, start, end)
        print(f"counting {len(trees)} tree(s) under cachegrind, two children at a time ...", flush=True)
        with ThreadPoolExecutor(max_workers=2) as pool:
            got = list(pool.map(lambda j: count(script, j[0], data, start, end, j[1]), jobs))
    runs = [(got[2 * i][0] - got[2 * i + 1][0], got[2 * i][1]) for i in range(len(trees))]
    first = runs[0][0]
    print("| tree | run, instructions | fills | net $ | events | vs the first tree | native build |")
    print("|---|---|---|---|---|---|---|")
    for t, (n, result) in zip(trees, runs, strict=True):
        _, fills, net, events, built = (result.split() + ["?"] * 5)[:5]
        print(f"| {t} | {n / 1e9:.3f} G | {fills} | {net} | {events} | {n / first:.4f}x | {built.replace('-', ' ')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
