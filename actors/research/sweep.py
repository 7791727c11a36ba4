"""Parameter sweeps: a grid of configurations, each a full backtest on the node, run on Ray.

A sweep spec (YAML, docs/research.md "Sweep spec") names a profile, a data folder, a date range
and ``params``: ``{"<target>.<field>": [values...]}`` where ``<target>`` is a strategy's name in the
config (``grid-MES.atr_multiplier``), ``profile`` (``profile.daily_loss_cap``) or ``runtime``
(``runtime.bar_path``). The grid is the cartesian product, in the spec's key order.

Each parameter set runs :meth:`actors.node.Node.run_backtest` (backtest mode, one intra-bar path,
trades kept in memory): the same handlers, risk and simulated venue as paper and live, so every
order still passes risk. Results per set (:func:`metrics`): net P&L, max drawdown, daily Sharpe,
trades per day, Combine passed, days hitting the daily cap, worst day.

Execution (:func:`run_sweep`): Ray, on this machine's cores (``ray.init`` local) or, when
``RAY_ADDRESS`` is set, on that cluster with the repository shipped as the job's working
directory; nothing else changes. One :class:`BacktestWorker` actor per CPU loads the market data
once (the parsed bar files stay in its process) and runs many sets; a progress bar (tqdm) counts
finished sets.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import yaml

from domain import native

ROOT = Path(__file__).resolve().parents[2]
TARGETS_FIXED = ("profile", "runtime")
"""Non-strategy targets of a ``params`` key."""


class SweepSpecError(ValueError):
    """A sweep spec that cannot run; the message names the key and the file."""


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec.

    Attributes:
        params: ``{"target.field": (values...)}`` in spec order.
        profile: risk profile name (config/profiles).
        data: market data folder (as for ``--data``).
        start, end: first / last trading day (ISO, America/Chicago) or None (the data's range;
            the first day of the data only warms up).
        config: optional base config file (``--config``); None = config/default.yaml's built-ins.
        objective: the walk-forward's ranking metric (a key of :func:`metrics`), higher is better.
    """

    params: dict[str, tuple]
    profile: str = "combine-150k"
    data: str = "../shared/data/es_nq_yahoo_2m_5m"
    start: str | None = None
    end: str | None = None
    config: str | None = None
    objective: str = "net"
    source: str = "<dict>"

    def points(self) -> list[dict[str, Any]]:
        """Every parameter set of the grid (cartesian product, the last key varying fastest)."""
        keys = list(self.params)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.params[k] for k in keys))]


def load_spec(path: Path | str | None = None, data: dict | None = None) -> SweepSpec:
    """Read a sweep spec from YAML (or a dict already read).

    Raises:
        SweepSpecError: missing or empty ``params``, a key without ``target.field``, a value list
            that is empty or not a list, an unknown top-level key.
    """
    src = str(path) if path is not None else "<dict>"
    if data is None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}  # type: ignore[arg-type]
        except (OSError, yaml.YAMLError) as e:
            raise SweepSpecError(f"{src}: cannot read the sweep spec: {e}") from None
    if not isinstance(data, dict):
        raise SweepSpecError(f"{src}: a sweep spec is a mapping (profile, data, start, end, params)")
    allowed = {"params", "profile", "data", "start", "end", "config", "objective"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SweepSpecError(f"{src}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise SweepSpecError(f"{src}: params: a mapping of 'target.field' to a list of values is required")
    out: dict[str, tuple] = {}
    for key, values in params.items():
        if not isinstance(key, str) or "." not in key:
            raise SweepSpecError(f"{src}: params.{key}: write 'target.field' (a strategy name, profile or runtime)")
        if not isinstance(values, list) or not values:
            raise SweepSpecError(f"{src}: params.{key}: a non-empty list of values is required")
        out[key] = tuple(values)
    kw = {k: (str(v) if v is not None else None) for k, v in data.items() if k in ("start", "end", "config")}
    return SweepSpec(params=out, profile=str(data.get("profile", SweepSpec.profile)),
                     data=str(data.get("data", SweepSpec.data)), objective=str(data.get("objective", "net")),
                     source=src, **kw)


def overrides_for(base: Any, point: dict[str, Any], run_dir: str, data: str,
                  start: str | None, end: str | None) -> dict:
    """The ``load_config`` overrides of one parameter set on top of ``base`` (an AppConfig).

    Raises:
        SweepSpecError: a target that is neither a strategy of ``base`` nor profile / runtime.
    """
    strategies = [s.model_dump(mode="python") for s in base.strategies]
    by_name = {s["name"]: s for s in strategies}
    over: dict[str, Any] = {"runtime": {"data_dir": data, "run_dir": run_dir, "start": start, "end": end}}
    touched = False
    for key, value in point.items():
        target, fld = key.split(".", 1)
        if target in TARGETS_FIXED:
            over.setdefault(target, {})[fld] = value
        elif target in by_name:
            params = by_name[target].get("params") or {}
            params = params.model_dump(mode="python") if hasattr(params, "model_dump") else dict(params)
            params[fld] = value
            by_name[target]["params"] = params
            touched = True
        else:
            raise SweepSpecError(f"params.{key}: {target!r} is not a strategy of the config "
                                 f"({', '.join(by_name)}) nor one of {TARGETS_FIXED}")
    if touched:
        over["strategies"] = strategies
    return over


METRICS = ("net", "max_drawdown", "sharpe", "trades_per_day", "passed", "cap_days", "worst_day", "days", "fills")
"""The keys of :func:`metrics` (a walk-forward ``objective`` is one of them)."""


def metrics(summary: Any) -> dict[str, Any]:
    """The figures of one backtest (a :class:`domain.report.SessionSummary`), JSON-safe floats.

    - ``net``: net P&L, dollars (after fees); ``max_drawdown``: dollars, from the equity peak;
    - ``sharpe``: mean / standard deviation of the daily net P&L x sqrt(252), over every simulated
      day (0 with fewer than two days or no variation);
    - ``trades_per_day``: fills / 2 per simulated day (a round trip is two fills);
    - ``passed``: Combine passed (profit target, consistency, rules: docs/risk.md);
    - ``cap_days``: days whose net P&L reached the daily loss cap (<= -cap);
    - ``worst_day``: the lowest daily net P&L, dollars; ``days``: simulated days; ``fills``.
    """
    days = [p for _d, p, _n in summary.day_pnls] or [Decimal(0)]
    daily = [float(p) for p in days]
    sd = statistics.pstdev(daily) if len(daily) > 1 else 0.0
    sharpe = statistics.fmean(daily) / sd * math.sqrt(252) if sd > 0 else 0.0
    cap = summary.daily_loss_cap
    return {"net": float(summary.net_pnl), "max_drawdown": float(summary.max_drawdown), "sharpe": round(sharpe, 3),
            "trades_per_day": round(summary.fills / 2 / max(1, len(summary.days)), 2),
            "passed": bool(summary.target_reached and summary.rules_ok),
            "cap_days": sum(1 for p in days if cap is not None and p <= -cap),
            "worst_day": float(min(days)), "days": len(summary.days), "fills": summary.fills}


def point_config(point: dict[str, Any], spec: SweepSpec, run_dir: str, start: str | None = None,
                 end: str | None = None, base: Any = None) -> Any:
    """The validated config (``config.settings.AppConfig``) of one parameter set, running in
    ``run_dir``, over ``start..end`` (default the spec's). ``base``: the spec's config without the
    point (``load_config(spec.config, spec.profile)``), read here when not given.

    Raises:
        config.settings.ConfigError: a value the config model refuses (the model's message).
        SweepSpecError: a target that is neither a strategy of the config nor profile / runtime.
    """
    from config.settings import load_config
    cfg_path = Path(spec.config) if spec.config else None
    s, e = (start, end) if start or end else (spec.start, spec.end)
    if base is None:
        base = load_config(cfg_path, spec.profile)
    return load_config(cfg_path, spec.profile, overrides_for(base, point, run_dir, spec.data, s, e))


def data_days(spec: SweepSpec, cfg: Any = None) -> list[str]:
    """The trading days a backtest of ``spec`` can trade (ISO dates; the data's first day only
    warms up). Parses the data folder. ``cfg``: the spec's config
    (``load_config(spec.config, spec.profile)``), read here when not given.

    Raises:
        SweepSpecError: a start or end that is not an ISO date; the data folder lacks a file, a
            file is unreadable, or no trading day lies between start and end (the message of
            :func:`infra.feeds.open_replay`).
    """
    from config.settings import load_config
    from infra.feeds import open_replay
    if cfg is None:
        cfg = load_config(Path(spec.config) if spec.config else None, spec.profile)
    bounds = []
    for key, value in (("start", spec.start), ("end", spec.end)):
        try:
            bounds.append(dt.date.fromisoformat(value) if value else None)
        except ValueError:
            raise SweepSpecError(f"{spec.source}: {key}: {value!r} is not a date (YYYY-MM-DD)") from None
    try:
        source = open_replay(Path(spec.data), cfg.instruments(), *bounds)
    except (OSError, ValueError) as e:
        raise SweepSpecError(f"{spec.source}: data {spec.data}: {e}") from None
    return [d.isoformat() for d in source.trading_days()]


def preflight(spec: SweepSpec, points: list[dict[str, Any]]) -> tuple[list[str], dict[int, str]]:
    """What is known before any backtest runs: the trading days of the spec's data and range
    (:func:`data_days`), and the parameter sets the config model refuses (index in ``points`` ->
    the model's message). About 3 ms a set, in this process, so a spec that cannot run fails
    before Ray starts.

    Raises:
        SweepSpecError: the objective is not one of :data:`METRICS`; the data cannot be replayed
            (:func:`data_days`); the config model refuses every set (the message quotes the first).
    """
    import tempfile

    from config.settings import ConfigError, load_config
    if spec.objective not in METRICS:
        raise SweepSpecError(f"{spec.source}: objective {spec.objective!r} is not a metric ({', '.join(METRICS)})")
    refused: dict[int, str] = {}
    base = load_config(Path(spec.config) if spec.config else None, spec.profile)
    with tempfile.TemporaryDirectory() as tmp:
        for i, point in enumerate(points):
            try:
                point_config(point, spec, tmp, base=base)
            except (ConfigError, SweepSpecError) as err:
                refused[i] = str(err)
    if points and len(refused) == len(points):
        raise SweepSpecError(f"{spec.source}: the config model refuses every parameter set, e.g. {points[0]}: {refused[0]}")
    return data_days(spec, base), refused


def run_point(point: dict[str, Any], spec: SweepSpec, start: str | None = None, end: str | None = None) -> dict:
    """One backtest of ``point`` over ``start..end`` (default the spec's); returns :func:`metrics`
    plus the point's values, the wall seconds and ``native`` (True when this process ran the
    native build, docs/decisions/0024). A configuration the model refuses (e.g. a value out of
    range) gives ``{"error": message}`` instead of raising."""
    import tempfile

    from loguru import logger

    from actors.node import Node
    from actors.tree import MODES
    from config.settings import ConfigError
    logger.remove()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg = point_config(point, spec, tmp, start, end)
        except (ConfigError, SweepSpecError) as err:
            return {**point, "error": str(err)}
        summary = Node(cfg, MODES["backtest"], keep_trades=False, memo_data=True).run_backtest(both_paths=False)
    return {**point, **metrics(summary), "seconds": round(time.perf_counter() - t0, 2),
            "native": native.install().in_use}


def _ray_init(workers: int | None) -> int:
    """Start (or join) Ray; returns the number of CPUs it offers. ``RAY_ADDRESS`` set: join that
    cluster and ship the repository as the job's working directory; else a local Ray on this
    machine's cores (``workers`` caps them)."""
    import ray
    if ray.is_initialized():
        return int(ray.available_resources().get("CPU", 1))
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env={"working_dir": str(ROOT), "excludes": [".venv/", ".git/", "run/"]}, log_to_driver=False)
    else:
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}})
    return int(ray.cluster_resources().get("CPU", 1))


def _worker_class():
    import ray

    @ray.remote(num_cpus=1)
    class BacktestWorker:
        """One per CPU: loads the market data once (parsed bar files stay cached in this process,
        infra/replay.py ``_load_bars_cached``), then runs parameter sets."""

        def __init__(self, spec: SweepSpec) -> None:
            sys.path.insert(0, str(ROOT))
            from config.settings import load_config
            from infra.feeds import open_replay
            self.spec = spec
            cfg = load_config(Path(spec.config) if spec.config else None, spec.profile)
            open_replay(Path(spec.data), cfg.instruments())  # parse once

        def run_indexed(self, item: tuple[int, tuple]) -> tuple[int, dict]:
            """``(i, (point, start, end))`` -> ``(i, result)``: unordered results find their task."""
            i, (point, start, end) = item
            return i, run_point(point, self.spec, start, end)

    return BacktestWorker


def run_tasks(spec: SweepSpec, tasks: list[tuple], workers: int | None = None, progress: bool = True,
              desc: str = "sweep", on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run ``tasks`` (``(point, start, end)``) and return their results in task order.

    ``workers=0`` runs them in this process, one after another; otherwise on Ray (local cores or
    ``RAY_ADDRESS``), one :class:`BacktestWorker` per CPU (at most ``workers``, at most one per task).
    """
    from tqdm import tqdm
    results: list[dict | None] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit="set", disable=not progress, file=sys.stderr)
    if workers == 0:
        for i, (point, start, end) in enumerate(tasks):
            results[i] = run_point(point, spec, start, end)
            bar.update(1)
            if on_result:
                on_result(results[i])
        bar.close()
        return results  # type: ignore[return-value]
    from ray.util import ActorPool
    cpus = _ray_init(workers)
    n = max(1, min(cpus, workers or cpus, len(tasks)))
    pool = ActorPool([_worker_class().remote(spec) for _ in range(n)])
    for i, res in pool.map_unordered(lambda a, item: a.run_indexed.remote(item), list(enumerate(tasks))):
        results[i] = res
        bar.update(1)
        if on_result:
            on_result(res)
    bar.close()
    return results  # type: ignore[return-value]


COLUMNS = ("net", "max_drawdown", "sharpe", "trades_per_day", "passed", "cap_days", "worst_day", "fills", "seconds")
"""Result columns after the parameters (:func:`metrics`)."""


def write_table(rows: list[dict], keys: list[str], path: Path, sort_by: str = "net") -> list[dict]:
    """Write the results CSV (parameters, then :data:`COLUMNS`, best ``sort_by`` first; failed sets
    last with their error) and return the rows in that order."""
    import csv
    ok = sorted((r for r in rows if "error" not in r), key=lambda r: r[sort_by], reverse=True)
    bad = [r for r in rows if "error" in r]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*keys, *COLUMNS, "error"], extrasaction="ignore")
        w.writeheader()
        for r in ok + bad:
            w.writerow(r)
    return ok + bad


def markdown_top(rows: list[dict], keys: list[str], n: int = 10) -> str:
    """The first ``n`` rows as a Markdown table (dollars rounded to cents)."""
    head = [*keys, "net $", "max DD $", "Sharpe", "trades/day", "passed", "cap days", "worst day $"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in [r for r in rows if "error" not in r][:n]:
        lines.append("| " + " | ".join([*(str(r[k]) for k in keys), f"{r['net']:,.2f}", f"{r['max_drawdown']:,.2f}",
                                        f"{r['sharpe']:.2f}", f"{r['trades_per_day']:.1f}",
                                        "yes" if r["passed"] else "no", str(r["cap_days"]),
                                        f"{r['worst_day']:,.2f}"]) + " |")
    return "\n".join(lines)


def heatmap(rows: list[dict], x: str, y: str, path: Path, value: str = "net", title: str = "") -> None:
    """PNG heat map of ``value`` (best over the other parameters) for each (``x``, ``y``) pair,
    each cell labelled with its figure (dollars for net / drawdown)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    ok = [r for r in rows if "error" not in r]
    xs = sorted({r[x] for r in ok}, key=_order)
    ys = sorted({r[y] for r in ok}, key=_order)
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in ok:
        i, j = ys.index(r[y]), xs.index(r[x])
        grid[i, j] = r[value] if np.isnan(grid[i, j]) else max(grid[i, j], r[value])
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(xs) + 3), 0.6 * len(ys) + 2.4), dpi=100)
    lim = np.nanmax(np.abs(grid)) or 1.0
    im = ax.imshow(grid, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:,.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label=f"{value} $" if value in ("net", "max_drawdown", "worst_day") else value)
    ax.set_title(title or f"{value} by {x} and {y}\n(each cell: the best set over the other parameters)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _order(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


def run_sweep(spec: SweepSpec, out_dir: Path, workers: int | None = None, progress: bool = True,
              x: str | None = None, y: str | None = None) -> tuple[list[dict], Path]:
    """Run every parameter set of ``spec`` over its date range; write ``results.csv``,
    ``results.md`` (top 10) and ``heatmap.png`` (``x`` / ``y``: two params keys, default the first
    two; none when fewer than two keys) into ``out_dir``. Returns (rows best first, out_dir).

    Raises:
        SweepSpecError: from :func:`preflight`, before any backtest and before ``out_dir`` is made.
    """
    points = spec.points()
    _days, refused = preflight(spec, points)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(spec.params)
    t0 = time.perf_counter()
    ran = iter(run_tasks(spec, [(p, None, None) for i, p in enumerate(points) if i not in refused], workers, progress))
    rows = [{**p, "error": refused[i]} if i in refused else next(ran) for i, p in enumerate(points)]
    wall = time.perf_counter() - t0
    rows = write_table(rows, keys, out_dir / "results.csv")
    ran = [r for r in rows if "error" not in r]
    (out_dir / "results.md").write_text(
        f"Sweep {spec.source}: {len(rows)} sets, profile {spec.profile}, data {spec.data}, "
        f"{spec.start or 'start'}..{spec.end or 'end'}, wall {wall:.1f} s; native build in use in "
        f"{sum(bool(r.get('native')) for r in ran)} of {len(ran)} sets\n\n{markdown_top(rows, keys)}\n")
    heat = out_dir / "heatmap.png"
    heat.unlink(missing_ok=True)  # a map of an earlier sweep into the same folder is not this one's
    if len(keys) >= 2 and any("error" not in r for r in rows):
        heatmap(rows, x or keys[0], y or keys[1], heat)
    return rows, out_dir
