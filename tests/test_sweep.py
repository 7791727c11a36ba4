"""Parameter sweeps and walk-forward (actors/research, scripts/sweep.py, scripts/walk_forward.py).

A small sweep runs on a real local Ray (2 workers) over the bundled data; its figures must equal
the same parameter set run in this process (deterministic backtest, data loaded once per worker).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from config.settings import load_config
import actors.research.sweep as sweep_mod
import actors.research.walk_forward as wf_mod
from actors.research.sweep import METRICS, SweepSpecError, data_days, load_spec, overrides_for, run_point, run_sweep
from actors.research.walk_forward import walk_forward, windows
from domain import native

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "data" / "demo")


def _spec(**params):
    return load_spec(data={"profile": "combine-150k", "data": DEMO,
                           "params": params or {"grid-MES.atr_multiplier": [0.45, 0.6],
                                                "hedge.activation_spacings": [1.5]}})


def test_spec_errors_name_the_key():
    with pytest.raises(SweepSpecError, match="params: a mapping"):
        load_spec(data={"profile": "combine-50k"})
    with pytest.raises(SweepSpecError, match=r"params\.atr_multiplier: write 'target.field'"):
        load_spec(data={"params": {"atr_multiplier": [1]}})
    with pytest.raises(SweepSpecError, match=r"params\.grid-MES\.max_lot: a non-empty list"):
        load_spec(data={"params": {"grid-MES.max_lot": []}})
    with pytest.raises(SweepSpecError, match=r"unknown key\(s\) \['grid'\]"):
        load_spec(data={"params": {"grid-MES.max_lot": [1]}, "grid": {}})


def test_a_point_becomes_config_overrides_of_that_strategy_profile_and_runtime(tmp_path):
    base = load_config(None, "combine-150k")
    over = overrides_for(base, {"grid-MES.atr_multiplier": 0.6, "profile.daily_loss_cap": 700,
                                "runtime.bar_path": "adverse"}, str(tmp_path), DEMO, None, None)
    cfg = load_config(None, "combine-150k", over)
    grid = next(s for s in cfg.strategies if s.name == "grid-MES")
    hedge = next(s for s in cfg.strategies if s.name == "hedge")
    assert grid.params.atr_multiplier == 0.6 and grid.params.levels_each_side == 5
    assert hedge.params == next(s for s in base.strategies if s.name == "hedge").params
    assert cfg.profile.daily_loss_cap == 700 and cfg.runtime.bar_path == "adverse"
    with pytest.raises(SweepSpecError, match="'grid-ES' is not a strategy"):
        overrides_for(base, {"grid-ES.max_lot": 1}, str(tmp_path), DEMO, None, None)


def test_a_value_the_config_model_refuses_is_a_failed_row_not_a_crash():
    spec = _spec()
    row = run_point({"grid-MES.atr_multiplier": 100.0}, spec)
    assert "atr_multiplier" in row["error"] and "net" not in row


def test_a_spec_that_cannot_run_fails_before_any_backtest(tmp_path, monkeypatch):
    def no_backtest(*a, **k):
        raise AssertionError("a backtest ran")
    monkeypatch.setattr(sweep_mod, "run_tasks", no_backtest)
    monkeypatch.setattr(wf_mod, "run_tasks", no_backtest)
    out = tmp_path / "out"
    with pytest.raises(SweepSpecError, match=r"refuses every parameter set.*atr_multiplier"):
        run_sweep(_spec(**{"grid-MES.atr_multiplier": [100.0, 200.0]}), out, workers=0, progress=False)
    with pytest.raises(SweepSpecError, match=r"objective 'sharp' is not a metric \(net, "):
        walk_forward(replace(_spec(), objective="sharp"), 1, 1, out, workers=0, progress=False)
    with pytest.raises(SweepSpecError, match="market data file not found"):
        run_sweep(replace(_spec(), data=str(tmp_path / "no-data")), out, workers=0, progress=False)
    with pytest.raises(SweepSpecError, match=r"start: '2026-04-31' is not a date"):
        data_days(replace(_spec(), start="2026-04-31"))
    with pytest.raises(SweepSpecError, match="no trading day in the data between 2030-01-01"):
        walk_forward(replace(_spec(), start="2030-01-01"), 1, 1, out, workers=0, progress=False)
    assert not out.exists()


def test_a_partly_refused_grid_runs_the_rest_and_lists_the_refused_last(tmp_path):
    spec = _spec(**{"grid-MES.atr_multiplier": [100.0, 0.6]})
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "heatmap.png").write_bytes(b"an earlier sweep's map")
    rows, out = run_sweep(spec, tmp_path / "sweep", workers=0, progress=False)
    ran, refused = rows
    assert set(METRICS) == set(ran) - {"grid-MES.atr_multiplier", "seconds", "native"}
    assert ran == {**run_point({"grid-MES.atr_multiplier": 0.6}, spec), "seconds": ran["seconds"]}
    assert refused["grid-MES.atr_multiplier"] == 100.0 and "atr_multiplier" in refused["error"]
    table = list(csv.DictReader(open(out / "results.csv")))
    assert [t["grid-MES.atr_multiplier"] for t in table] == ["0.6", "100.0"] and table[1]["error"] == refused["error"]
    assert not (out / "heatmap.png").exists()  # one parameter: no map, not even an earlier one


@pytest.fixture
def ray_local():
    ray = pytest.importorskip("ray")
    yield ray
    ray.shutdown()


def test_a_small_sweep_on_local_ray_matches_the_same_sets_run_here(tmp_path, ray_local):
    spec = _spec()
    rows, out = run_sweep(spec, tmp_path / "sweep", workers=2, progress=False)
    assert ray_local.is_initialized()
    assert len(rows) == 2 and all("error" not in r for r in rows)
    assert rows[0]["net"] >= rows[1]["net"]  # best first
    for r in rows:
        here = run_point({k: r[k] for k in spec.params}, spec)
        assert {k: here[k] for k in ("net", "max_drawdown", "fills", "cap_days")} == \
            {k: r[k] for k in ("net", "max_drawdown", "fills", "cap_days")}
    table = list(csv.DictReader(open(out / "results.csv")))
    assert [float(t["net"]) for t in table] == [r["net"] for r in rows]
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| grid-MES.atr_multiplier |" in (out / "results.md").read_text()
    # the workers run what this process runs: the native build when it is in use (CI requires it)
    assert f"native build in use in {2 if native.install().in_use else 0} of 2 sets" in (out / "results.md").read_text()


def test_windows_roll_by_the_test_length():
    days = [f"2026-04-{d:02d}" for d in range(1, 9)]
    w = windows(days, 3, 2)
    assert [(x.train_start, x.train_end, x.test_start, x.test_end) for x in w] == [
        ("2026-04-01", "2026-04-03", "2026-04-04", "2026-04-05"),
        ("2026-04-03", "2026-04-05", "2026-04-06", "2026-04-07"),
        ("2026-04-05", "2026-04-07", "2026-04-08", "2026-04-08")]
    with pytest.raises(SweepSpecError, match="too few"):
        windows(days[:3], 3, 1)


def test_walk_forward_trades_the_best_training_set_on_the_next_day(tmp_path):
    spec = _spec()
    rows, totals, out = walk_forward(spec, 1, 1, tmp_path / "wf", workers=0, progress=False)
    assert [r["test"] for r in rows] == ["2026-04-09..2026-04-09", "2026-04-10..2026-04-10"]
    for r in rows:
        day = r["train"].split("..")[0]
        trained = [run_point(p, spec, day, day) for p in spec.points()]
        best = max(trained, key=lambda t: t["net"])
        assert r["grid-MES.atr_multiplier"] == best["grid-MES.atr_multiplier"] and r["is_net"] == best["net"]
        test_day = r["test"].split("..")[0]
        assert r["oos_net"] == run_point({k: r[k] for k in spec.params}, spec, test_day, test_day)["net"]
    assert totals["oos_net"] == round(sum(r["oos_net"] for r in rows), 2) and totals["oos_days"] == 2
    assert "Out of sample: net $" in (out / "walk_forward.md").read_text()
