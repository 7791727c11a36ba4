"""How fast the host is right now: the fixed pure-Python loop of docs/benchmarks.md ("The machine,
and how to compare"), timed, so that every benchmark prints it beside its figures.

The development machines' speed drifts by up to about 2x through a day, so a wall-clock figure
means little without the host's speed in the same minutes. The loop is the one docs/benchmarks.md
gives as a command (30 million additions to a global, ``exec``'d), so its time here and the
command's time are the same measure::

    python scripts/host_speed.py          # prints e.g. "3.1 s"

The benchmarks (``scripts/benchmark.py``, ``scripts/benchmark_peers.py``) run it before and after
their runs: two times far apart mean the host changed speed during the run.
"""

from __future__ import annotations

import time

LOOP_ADDITIONS = 30_000_000
"""Additions in the loop (its times on the development machines: docs/benchmarks.md, "The machine")."""


def loop_seconds(additions: int = LOOP_ADDITIONS) -> float:
    """Wall seconds (``time.perf_counter``) of ``additions`` additions to a global in a pure-Python
    ``for`` loop, the loop of docs/benchmarks.md. Raises ValueError for ``additions < 1``."""
    if additions < 1:
        raise ValueError(f"additions must be >= 1, got {additions}")
    namespace = {"x": 0}
    code = compile(f"for i in range({additions}): x += 1", "<host loop>", "exec")
    t0 = time.perf_counter()
    exec(code, namespace)
    seconds = time.perf_counter() - t0
    if namespace["x"] != additions:  # the loop ran in full, or the figure means nothing
        raise RuntimeError(f"host loop added {namespace['x']} times, not {additions}")
    return seconds


def describe(before: float, after: float | None = None) -> str:
    """One line for a benchmark's output: the loop's time before (and after) the run, seconds."""
    times = f"{before:.1f} s" if after is None else f"{before:.1f} s before, {after:.1f} s after"
    return (f"host: the pure-Python loop of docs/benchmarks.md ({LOOP_ADDITIONS:,} additions) took {times} "
            f"(its times on a calm and a slow hour, and what it does not show: docs/benchmarks.md, \"The machine\")")


if __name__ == "__main__":
    print(f"{loop_seconds():.1f} s")
