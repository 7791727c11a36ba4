"""scripts/host_speed.py times the host loop of docs/benchmarks.md, and the backtest benchmark prints
it beside its figures (docs/benchmarks.md, "The machine, and how to compare")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.host_speed import LOOP_ADDITIONS, describe, loop_seconds  # noqa: E402


def test_loop_runs_in_full_and_takes_time():
    # a tenth of the loop, run in full (loop_seconds checks the count) in a positive time
    assert loop_seconds(LOOP_ADDITIONS // 10) > 0
    with pytest.raises(ValueError, match="additions must be >= 1"):
        loop_seconds(0)


def test_describe_names_both_times():
    line = describe(3.04, 4.46)
    assert "3.0 s before, 4.5 s after" in line and f"{LOOP_ADDITIONS:,} additions" in line
    assert "took 3.0 s (" in describe(3.04)


def _benchmark_demo(*extra: str) -> str:
    """stdout of ``scripts/benchmark.py --part backtest`` on the bundled demo days, then ``extra``."""
    p = subprocess.run([sys.executable, "scripts/benchmark.py", "--part", "backtest", "--data", "data/demo", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def default_demo_benchmark() -> str:
    """The default run's stdout, host loop included (shared by the tests below: one run)."""
    return _benchmark_demo()


def test_backtest_benchmark_prints_the_host_loop_beside_its_figures(default_demo_benchmark):
    out = default_demo_benchmark
    # the demo days' run is deterministic: the main job's fills and net (README)
    assert re.search(r"backtest: 3 sessions, 4,116 bars, .* fills 32, net \$-169\.42, rules PASS", out), out
    m = re.search(r"host: .* took (\d+\.\d) s before, (\d+\.\d) s after", out)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, out


def test_backtest_benchmark_runs_the_work_of_the_tree_issue_19_was_filed_on(default_demo_benchmark):
    """``--four-prints --no-sweep-guard``: each bar as its four prints (fewer events than the
    continuous path's) and no sweep guard, named in the output (docs/benchmarks.md)."""
    default, light = default_demo_benchmark, _benchmark_demo("--no-host-loop", "--four-prints", "--no-sweep-guard")
    assert "(four prints per bar, no sweep guard)" in light and "(four" not in default
    events = [int(re.search(r"bars, ([\d,]+) events", out).group(1).replace(",", "")) for out in (default, light)]
    assert events[1] < events[0], (default, light)
    assert "host:" not in light  # --no-host-loop
