"""Walk-forward: choose parameters on a training window, trade them on the next, roll on.

Windows are counted in trading days of the data (America/Chicago, 17:00 CT roll): train on days
``[i, i + train)``, test on ``[i + train, i + train + test)``, then ``i += test`` (the test windows
tile the data after the first training window; the last one may be shorter). In each window every
parameter set of the sweep spec is backtested on the training days (a fresh account each time, the
day before the window warms the indicators up), the best by the spec's ``objective`` (a key of
:func:`actors.research.sweep.metrics`, higher is better; ties: the earlier set) is then backtested
on the test days. Out-of-sample figures are only those of test windows; the in-sample figures of
the chosen sets are reported beside them.

All training runs of all windows go to the Ray pool at once, then the test runs
(:func:`actors.research.sweep.run_tasks`).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.research.sweep import SweepSpec, SweepSpecError, preflight, run_tasks


@dataclass(frozen=True)
class Window:
    """One walk-forward step: ISO trading days (inclusive)."""

    train_start: str
    train_end: str
    test_start: str
    test_end: str


def windows(days: list[str], train: int, test: int) -> list[Window]:
    """Rolling windows over ``days`` (sorted ISO dates). Raises SweepSpecError when ``train`` or
    ``test`` is < 1 or the data has fewer than ``train + 1`` days."""
    if train < 1 or test < 1:
        raise SweepSpecError(f"train ({train}) and test ({test}) must be at least one day")
    if len(days) < train + 1:
        raise SweepSpecError(f"{len(days)} trading days in the data: too few for {train} training days and a test day")
    out = []
    i = 0
    while i + train < len(days):
        tr, te = days[i:i + train], days[i + train:i + train + test]
        out.append(Window(tr[0], tr[-1], te[0], te[-1]))
        i += test
    return out


def walk_forward(spec: SweepSpec, train: int, test: int, out_dir: Path, workers: int | None = None,
                 progress: bool = True) -> tuple[list[dict], dict, Path]:
    """Run the walk-forward; write ``windows.csv`` (per window: chosen parameters, in-sample and
    out-of-sample figures) and ``walk_forward.md`` into ``out_dir``.

    Returns ``(rows, totals, out_dir)``: one row per window, and the sums over the windows of the
    out-of-sample and in-sample net P&L (dollars), out-of-sample days, wall seconds. Sets the
    config model refuses are left out.

    Raises:
        SweepSpecError: from :func:`actors.research.sweep.preflight` or :func:`windows`, before any
            backtest and before ``out_dir`` is made.
    """
    objective = spec.objective
    all_points = spec.points()
    days, refused = preflight(spec, all_points)  # a spec that cannot run fails here, before any backtest
    wins = windows(days, train, test)
    points = [p for i, p in enumerate(all_points) if i not in refused]
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_tasks = [(p, w.train_start, w.train_end) for w in wins for p in points]
    train_res = run_tasks(spec, train_tasks, workers, progress, desc="train")
    chosen: list[tuple[dict, dict]] = []
    for k in range(len(wins)):
        block = [r for r in train_res[k * len(points):(k + 1) * len(points)] if "error" not in r]
        if not block:
            raise SweepSpecError(f"window {k + 1}: every parameter set was refused by the config model")
        best = max(block, key=lambda r: r[objective])  # max keeps the first of equals
        chosen.append(({key: best[key] for key in spec.params}, best))
    test_res = run_tasks(spec, [(p, w.test_start, w.test_end) for (p, _), w in zip(chosen, wins)], workers,
                         progress, desc="test")
    wall = time.perf_counter() - t0
    rows = []
    for w, (params, ins), oos in zip(wins, chosen, test_res):
        rows.append({"train": f"{w.train_start}..{w.train_end}", "test": f"{w.test_start}..{w.test_end}", **params,
                     "is_net": ins["net"], "is_sharpe": ins["sharpe"], "is_max_drawdown": ins["max_drawdown"],
                     "oos_net": oos.get("net"), "oos_sharpe": oos.get("sharpe"),
                     "oos_max_drawdown": oos.get("max_drawdown"), "oos_passed": oos.get("passed"),
                     "oos_cap_days": oos.get("cap_days"), "oos_days": oos.get("days")})
    totals = {"oos_net": round(sum(r["oos_net"] or 0 for r in rows), 2),
              "is_net": round(sum(r["is_net"] for r in rows), 2),
              "oos_days": sum(r["oos_days"] or 0 for r in rows), "runs": len(train_tasks) + len(test_res),
              "wall_s": round(wall, 1)}
    with open(out_dir / "windows.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    (out_dir / "walk_forward.md").write_text(render(rows, totals, spec, train, test))
    return rows, totals, out_dir


def render(rows: list[dict], totals: dict, spec: SweepSpec, train: int, test: int) -> str:
    """Markdown: one line per window, chosen parameters, in-sample vs out-of-sample."""
    keys = list(spec.params)
    head = ["train", "test", *keys, "IS net $", "IS Sharpe", "OOS net $", "OOS Sharpe", "OOS max DD $", "OOS cap days"]
    lines = [f"Walk-forward {spec.source}: train {train} days, test {test} days, objective {spec.objective}, "
             f"profile {spec.profile}, data {spec.data}; {totals['runs']} backtests in {totals['wall_s']} s",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["train"], r["test"], *(str(r[k]) for k in keys), f"{r['is_net']:,.2f}",
                                        f"{r['is_sharpe']:.2f}", _money(r["oos_net"]), _num(r["oos_sharpe"]),
                                        _money(r["oos_max_drawdown"]), str(r["oos_cap_days"])]) + " |")
    lines += ["", f"Out of sample: net ${totals['oos_net']:,.2f} over {totals['oos_days']} days; "
              f"the chosen sets made ${totals['is_net']:,.2f} in their training windows."]
    return "\n".join(lines) + "\n"


def _money(v: Any) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"
