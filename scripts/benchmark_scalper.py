"""Per-bar cost of the scalper: the features (``FeatureBuilder.update``) and the model's inference
(``ScalperModel.predict``: scaler, MLP, softmax under ``torch.inference_mode()``, one thread).

Usage::

    python scripts/benchmark_scalper.py                      # the bundled ES 2-min bars, the bundled model
    python scripts/benchmark_scalper.py --data path/to/ES_2min.csv.gz --instrument MES --model DIR

Feeds every bar of the file (default ``data/demo/ES_2min.csv.gz``, 2,744 real 2-minute bars, read
with :func:`infra.replay.load_bar_csv`) to a fresh builder, timing each call on its own with
``time.perf_counter_ns`` (so Python call overhead is included, as a strategy pays it; the 20
warm-up calls are counted too), then the model's ``predict`` on every feature row the same way.
Prints the call counts and p50 / p99 / max in microseconds. Targets (issue 22): feature update
<= 0.2 ms and inference <= 1 ms at p99 (the seed's: 5 ms and 10 ms,
/work/shared/seeds/003_42bd756451187795.txt, "Performance"); nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from domain.scalper.features import FeatureBuilder  # noqa: E402
from infra.replay import load_bar_csv  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "demo" / "ES_2min.csv.gz")
    ap.add_argument("--instrument", default="MES")
    ap.add_argument("--model", type=Path, default=ROOT / "data" / "models" / "scalper-mes-2min")
    args = ap.parse_args(argv)
    bars = [r.to_bar() for r in load_bar_csv(args.data, args.instrument)[0]]
    fb = FeatureBuilder()
    times = np.empty(len(bars), dtype=np.int64)
    clock = time.perf_counter_ns
    rows = []
    for i, bar in enumerate(bars):
        t0 = clock()
        x = fb.update(bar)
        times[i] = clock() - t0
        if x is not None:
            rows.append(x)
    report("FeatureBuilder.update", args.data.name, times)
    import torch

    from domain.scalper.features import FEATURES
    from domain.scalper.model import load_model
    torch.set_num_threads(1)
    model = load_model(args.model, FEATURES)
    model.predict(rows[0])  # first call: torch's one-time set-up, not counted
    inf = np.empty(len(rows), dtype=np.int64)
    for i, x in enumerate(rows):
        t0 = clock()
        model.predict(x)
        inf[i] = clock() - t0
    report("ScalperModel.predict", args.model.name, inf)
    return 0


def report(what: str, source: str, times_ns: np.ndarray) -> None:
    us = times_ns / 1000.0
    print(f"{what} over {source}: n={len(us)}  p50={np.percentile(us, 50):.1f} us  "
          f"p99={np.percentile(us, 99):.1f} us  max={us.max():.1f} us")


if __name__ == "__main__":
    sys.exit(main())
