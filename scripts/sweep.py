"""Parameter sweep: every set of a grid of parameters, a full backtest each, on Ray.

Usage::

    python scripts/sweep.py --grid config/sweeps/grid-hedge.yaml            # local Ray, all cores
    python scripts/sweep.py --grid my.yaml --data data/demo --workers 2
    RAY_ADDRESS=ray://head:10001 python scripts/sweep.py --grid my.yaml      # an existing Ray cluster

Writes ``run/sweeps/<spec>-<UTC time>/``: ``results.csv`` (every set, best net first),
``results.md`` (the top 10) and ``heatmap.png`` (net over the first two parameters, or --x/--y).
The spec format and the metrics: docs/research.md. Exit 2 on a bad spec, a data folder that
cannot be replayed, or a grid whose every set the config model refuses (all found before Ray
starts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.research.sweep import SweepSpecError, load_spec, markdown_top, run_sweep  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", required=True, type=Path, help="sweep spec YAML (config/sweeps/grid-hedge.yaml)")
    ap.add_argument("--data", help="market data folder (overrides the spec's)")
    ap.add_argument("--start", help="first trading day YYYY-MM-DD (overrides the spec's)")
    ap.add_argument("--end", help="last trading day YYYY-MM-DD (overrides the spec's)")
    ap.add_argument("--profile", help="risk profile (overrides the spec's)")
    ap.add_argument("--workers", type=int, default=None,
                    help="Ray workers (default: every CPU Ray offers; 0 = in this process, no Ray)")
    ap.add_argument("--out", type=Path, help="output folder (default run/sweeps/<spec>-<UTC time>)")
    ap.add_argument("--x", help="heat map x parameter (default the first)")
    ap.add_argument("--y", help="heat map y parameter (default the second)")
    a = ap.parse_args(argv)
    try:
        spec = load_spec(a.grid)
    except SweepSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from dataclasses import replace
    spec = replace(spec, **{k: v for k, v in (("data", a.data), ("start", a.start), ("end", a.end),
                                               ("profile", a.profile)) if v})
    for axis in (a.x, a.y):
        if axis and axis not in spec.params:
            print(f"error: --x/--y {axis!r} is not a key of params ({', '.join(spec.params)})", file=sys.stderr)
            return 2
    out = a.out or ROOT / "run" / "sweeps" / f"{a.grid.stem}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    try:
        rows, out = run_sweep(spec, out, a.workers, x=a.x, y=a.y)
    except SweepSpecError as e:  # found before any backtest: a bad objective, data or every set refused
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in rows if "error" in r]
    print(markdown_top(rows, list(spec.params)))
    if failed:
        print(f"{len(failed)} set(s) refused by the config model, e.g.: {failed[0]['error']}")
    heat = f"  heat map: {out}/heatmap.png" if (out / "heatmap.png").exists() else ""
    print(f"results: {out}/results.csv{heat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
