"""Walk-forward retraining of the ML scalper (scripts/walk_forward_scalper.py) on the bundled data
(data/demo, three trading days): one-day windows, a few epochs. Checks that the windows never
overlap (the last training bar + the purge < the first test bar, training days before test days,
test windows tiling the days), that the scaler was fitted on the window's fit rows only, and that
the written figures agree with the returned ones and add up to the totals."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from domain.scalper.features import FEATURES
from domain.scalper.labels import purged_time_split
from domain.scalper.model import load_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wf():
    spec = importlib.util.spec_from_file_location("walk_forward_scalper", ROOT / "scripts" / "walk_forward_scalper.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up
    spec.loader.exec_module(mod)
    return mod


def test_windows_are_purged_apart_and_the_figures_add_up(wf, tmp_path):
    a = wf.parse_args(["--data", str(ROOT / "data" / "demo"), "--train", "1", "--test", "1", "--max-epochs", "3",
                       "--patience", "2", "--out", str(tmp_path)])
    rows, totals = wf.walk_forward(a, tmp_path, progress=False)
    assert len(rows) == 2 and totals["windows"] == 2
    tests = []
    for r in rows:
        train_start, train_end = r.train.split("..")
        test_start, test_end = r.test.split("..")
        assert train_start <= train_end < test_start <= test_end
        assert r.purge == 10 and r.last_train_bar + r.purge < r.first_test_bar
        assert r.gap_bars == r.first_test_bar - r.last_train_bar > r.purge
        assert r.train_rows > 0 and r.val_rows > 0 and r.test_rows > 0
        for share in (r.accuracy, r.always_flat, r.majority):
            assert 0.0 <= share <= 1.0
        assert r.rules_ok and r.epochs <= 3
        tests.append((test_start, test_end))
    assert all(prev[1] < nxt[0] for prev, nxt in zip(tests, tests[1:]))  # test windows never overlap
    # the scaler saw the fit rows of its own window only
    ds = wf.dataset(Path(a.data) / a.bars, a.instrument, a.take, a.stop, a.horizon)
    for r in rows:
        start, end = r.train.split("..")
        idx = np.flatnonzero((ds["day"] >= start) & (ds["day"] <= end))
        idx = idx[ds["bar"][idx] < r.first_test_bar - r.purge]
        fit_i, _ = purged_time_split(len(idx), test_fraction=a.val_fraction, purge=r.purge)
        model = load_model(tmp_path / f"window{r.window}", FEATURES)
        np.testing.assert_allclose(model.scaler.mean, ds["x"][idx[fit_i]].mean(axis=0), rtol=1e-9)
        assert model.meta["windows"]["test"] == r.test.split("..")
        assert int(ds["bar"][idx[fit_i][-1]]) < r.first_test_bar
    # totals: sums and row-weighted accuracies of the windows
    assert totals["test_rows"] == sum(r.test_rows for r in rows)
    assert totals["net_low_gate"] == pytest.approx(sum(r.net_low_gate for r in rows), abs=0.005)
    assert totals["entries_low_gate"] == sum(r.entries_low_gate for r in rows)
    acc = sum(r.accuracy * r.test_rows for r in rows) / totals["test_rows"]
    assert totals["accuracy"] == pytest.approx(acc)
    # the files hold the same figures
    written = list(csv.DictReader((tmp_path / "windows.csv").open()))
    assert [int(w["test_rows"]) for w in written] == [r.test_rows for r in rows]
    assert [float(w["net_low_gate"]) for w in written] == [r.net_low_gate for r in rows]
    md = (tmp_path / "walk_forward_scalper.md").read_text()
    assert f"${totals['net_low_gate']:,.2f}" in md and "| 2 |" in md
    assert json.loads((tmp_path / "window1" / "model.json").read_text())["labels"]["purge_bars"] == 10


def test_too_few_days_is_exit_2(wf, tmp_path, capsys):
    assert wf.main(["--data", str(ROOT / "data" / "demo"), "--train", "5", "--test", "1", "--out", str(tmp_path)]) == 2
    assert "too few" in capsys.readouterr().err
