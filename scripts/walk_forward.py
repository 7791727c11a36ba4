"""Walk-forward analysis: pick the best parameter set on each training window, trade it on the next.

Usage::

    python scripts/walk_forward.py --grid config/sweeps/grid-hedge.yaml --train 10 --test 5
    RAY_ADDRESS=ray://head:10001 python scripts/walk_forward.py --grid my.yaml   # on a Ray cluster

Windows, objective and figures: docs/research.md ("Walk-forward"). Writes
``run/walk_forward/<spec>-<UTC time>/windows.csv`` and ``walk_forward.md``. Exit 2 on a bad spec or
too little data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.research.sweep import SweepSpecError, load_spec  # noqa: E402
from actors.research.walk_forward import walk_forward  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", required=True, type=Path, help="sweep spec YAML (config/sweeps/grid-hedge.yaml)")
    ap.add_argument("--train", type=int, default=10, help="training window, trading days (default 10)")
    ap.add_argument("--test", type=int, default=5, help="test window, trading days (default 5)")
    ap.add_argument("--objective", help="metric to maximise in training (net, sharpe, ...; default the spec's)")
    ap.add_argument("--data", help="market data folder (overrides the spec's)")
    ap.add_argument("--profile", help="risk profile (overrides the spec's)")
    ap.add_argument("--workers", type=int, default=None, help="Ray workers (default every CPU; 0 = no Ray)")
    ap.add_argument("--out", type=Path, help="output folder (default run/walk_forward/<spec>-<UTC time>)")
    a = ap.parse_args(argv)
    try:
        spec = load_spec(a.grid)
        spec = replace(spec, **{k: v for k, v in (("data", a.data), ("profile", a.profile),
                                                   ("objective", a.objective)) if v})
        out = a.out or ROOT / "run" / "walk_forward" / f"{a.grid.stem}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
        rows, totals, out = walk_forward(spec, a.train, a.test, out, a.workers)
    except (SweepSpecError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((out / "walk_forward.md").read_text())
    print(f"windows: {out}/windows.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
