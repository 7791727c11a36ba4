"""The HMM regime model (domain/regime): features, causal forward filter, labels, safe storage.

Data (all in the repository, no ../shared needed): ``tests/data/regime/NQ_5min.csv.gz`` (5 trading
days of real NQ 5-minute bars, provenance in its README), ``data/models/regime-mnq-5min`` (the
bundled model), ``tests/data/databento_es/NQ_1min.csv.gz`` (1-minute bars, resampling) and
synthetic models / sequences.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import pickle
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domain.messages import Bar
from domain.regime import (ALL_FEATURES, FEATURES, SEED_LABELS, FeatureBuilder, ForwardFilter, RegimeModel,
                           compute_features, load, match_labels, save, state_stats, train, with_labels)
from domain.regime.features import min_warmup
from domain.regime.model import seed_labels
from infra.replay import load_bar_csv

ROOT = Path(__file__).resolve().parent.parent
EXCERPT = ROOT / "tests/data/regime/NQ_5min.csv.gz"
BUNDLED = ROOT / "data/models/regime-mnq-5min"

_spec = importlib.util.spec_from_file_location("train_regime", ROOT / "scripts" / "train_regime.py")
train_regime = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_regime)

logging.getLogger("hmmlearn").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def bars():
    rows, rejects = load_bar_csv(EXCERPT, instrument="MNQ")
    assert not rejects and len(rows) == 1376
    return rows


@pytest.fixture(scope="module")
def bundled() -> RegimeModel:
    return load(BUNDLED)


def random_model(seed: int, n: int = 4, k: int = 3, cov: str = "diag", sticky: bool = False) -> RegimeModel:
    """A random valid model (z-space parameters, random scaler)."""
    rng = np.random.default_rng(seed)
    transmat = rng.dirichlet(np.ones(n), size=n)
    if sticky:
        transmat = 0.2 * transmat + 0.8 * np.eye(n)
    if cov == "diag":
        covars = rng.uniform(0.2, 3.0, size=(n, k))
    else:
        a = rng.normal(size=(n, k, k))
        covars = a @ np.transpose(a, (0, 2, 1)) + 0.3 * np.eye(k)
    return RegimeModel(startprob=rng.dirichlet(np.ones(n)), transmat=transmat,
                       means=rng.normal(scale=1.5, size=(n, k)), covars=covars, covariance_type=cov,
                       features=ALL_FEATURES[:k], labels=tuple(f"s{i}" for i in range(n)),
                       scaler_mean=rng.normal(scale=0.01, size=k), scaler_std=rng.uniform(0.001, 2.0, size=k))


def sample(model: RegimeModel, t: int, seed: int) -> np.ndarray:
    """``t`` rows from the model, in original units."""
    z, _ = model.to_hmmlearn().sample(t, random_state=seed)
    return z * model.scaler_std + model.scaler_mean


def make_bar(close: float, volume: int, high: float | None = None, low: float | None = None) -> Bar:
    c = Decimal(str(close))
    return Bar("MNQ", 300, 0, 300, c, Decimal(str(high)) if high else c, Decimal(str(low)) if low else c, c, volume)


# --------------------------------------------------------------------------- features

@pytest.mark.parametrize("names", [FEATURES, ALL_FEATURES, ("volume_ratio", "bar_range_pct", "return_pct")])
def test_features_batch_equals_incremental_bit_for_bit(bars, names):
    batch = compute_features(bars, names)
    fb = FeatureBuilder(names)
    out = [fb.update(b) for b in bars]
    assert all(r is None for r in out[:20]) and all(r is not None for r in out[20:])
    inc = np.vstack(out[20:])
    assert batch.shape == (len(bars) - 20, len(names)) == inc.shape
    assert np.array_equal(batch, inc)  # identical numbers, not just close


def test_features_follow_the_seed_formulas(bars):
    """Independent pandas formulas: pct_change, rolling(10).std() (ddof=1), rolling(20).mean()."""
    df = pd.DataFrame({"close": [float(b.close) for b in bars], "high": [float(b.high) for b in bars],
                       "low": [float(b.low) for b in bars], "volume": [b.volume for b in bars]})
    ret = df.close.pct_change()
    expect = np.column_stack([ret, ret.rolling(10).std(), df.volume / df.volume.rolling(20).mean(),
                              (df.high - df.low) / df.close])[20:]
    got = compute_features(bars, ALL_FEATURES)
    assert np.allclose(got, expect, rtol=1e-11, atol=1e-15)
    assert np.all(np.isfinite(got))


def test_warmup_rows_are_dropped_never_filled(bars):
    assert compute_features(bars[:20]).shape == (0, 3)
    assert compute_features(bars[:21]).shape == (1, 3)
    x30 = compute_features(bars, warmup=30)
    assert np.array_equal(x30, compute_features(bars)[10:])  # the same rows, 10 more dropped
    assert min_warmup(FEATURES) == 19 and min_warmup(("return_pct",)) == 1
    with pytest.raises(ValueError, match="at least 19"):
        compute_features(bars, warmup=18)
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureBuilder(("return_pct", "rsi"))


def test_volume_ratio_of_an_all_zero_window_is_one():
    fb = FeatureBuilder()
    rows = [fb.update(make_bar(100 + (i % 3) * 0.25, 0)) for i in range(25)]
    assert [r[2] for r in rows[20:]] == [1.0] * 5
    assert compute_features([make_bar(100.0, 0)] * 21)[0, 2] == 1.0


def test_feature_builder_snapshot_restores_exactly(bars):
    fb = FeatureBuilder(ALL_FEATURES)
    for b in bars[:500]:
        fb.update(b)
    fb2 = FeatureBuilder.restore(json.loads(json.dumps(fb.snapshot())))
    for b in bars[500:600]:
        assert np.array_equal(fb.update(b), fb2.update(b))
    with pytest.raises(ValueError):
        FeatureBuilder.restore({**fb.snapshot(), "version": 99})
    with pytest.raises(ValueError, match="inconsistent"):
        FeatureBuilder.restore({**fb.snapshot(), "volumes": [1, 2]})


# --------------------------------------------------------------------------- forward filter

@pytest.mark.parametrize("cov", ["diag", "full"])
@pytest.mark.parametrize("seed", range(4))
def test_filter_equals_last_row_of_hmmlearn_predict_proba_on_every_prefix(cov, seed):
    m = random_model(seed, n=4, k=3, cov=cov)
    x = sample(m, 80, seed) + np.random.default_rng(seed).normal(scale=0.3, size=(80, 3)) * m.scaler_std
    h, z = m.to_hmmlearn(), m.standardize(x)
    f = ForwardFilter(m)
    for t in range(len(x)):
        p = f.update(x[t])
        np.testing.assert_allclose(p, h.predict_proba(z[:t + 1])[-1], rtol=0, atol=1e-9)
        assert abs(p.sum() - 1.0) < 1e-12
    assert f.loglik == pytest.approx(h.score(z), rel=1e-10)


def test_filter_equals_hmmlearn_for_the_bundled_model_on_real_bars(bars, bundled):
    x = compute_features(bars, bundled.features)[:300]
    h, z = bundled.to_hmmlearn(), bundled.standardize(x)
    probs = ForwardFilter(bundled).run(x)
    for t in range(len(x)):
        np.testing.assert_allclose(probs[t], h.predict_proba(z[:t + 1])[-1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_appending_future_bars_never_changes_earlier_posteriors(cov):
    """Causality over many random models and sequences; hmmlearn's forward-backward is not causal
    (https://github.com/hmmlearn/hmmlearn/issues/355)."""
    smoothed_moved = 0
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        m = random_model(seed, n=int(rng.integers(2, 6)), k=int(rng.integers(1, 5)), cov=cov, sticky=seed % 2 == 0)
        t0 = int(rng.integers(1, 40))
        past = sample(m, t0, seed)
        before = ForwardFilter(m).run(past)
        for trial in range(3):
            future = sample(m, int(rng.integers(1, 30)), 10_000 + 7 * seed + trial) * rng.uniform(0.5, 3.0)
            after = ForwardFilter(m).run(np.vstack([past, future]))
            assert np.array_equal(after[:t0], before)  # bit-identical
        h = m.to_hmmlearn()
        full = np.vstack([past, future])
        smoothed_moved += np.abs(h.predict_proba(m.standardize(full))[:t0] -
                                 h.predict_proba(m.standardize(past))).max() > 1e-6
    assert smoothed_moved > 20  # predict_proba rewrites the past on most sequences


def test_filter_survives_outliers_and_rejects_bad_rows(bundled):
    f = ForwardFilter(bundled)
    p = f.update(np.array([0.05, 0.05, 50.0]))  # a 5 % bar: absurd for every state, still a posterior
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-12
    with pytest.raises(ValueError, match="shape"):
        f.update(np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        f.update(np.array([np.nan, 0.0, 1.0]))
    assert f.n_updates == 1


def test_filter_snapshot_restore_and_reset(bars, bundled):
    x = compute_features(bars, bundled.features)
    f = ForwardFilter(bundled)
    assert f.probs is None and f.state is None and f.label is None
    f.run(x[:400])
    snap = json.loads(json.dumps(f.snapshot()))
    g = ForwardFilter(with_labels(bundled, {"neutral": "calm"})).restore(snap)  # relabelled: same fingerprint
    for row in x[400:500]:
        assert np.array_equal(f.update(row), g.update(row))
    assert f.loglik == g.loglik and f.n_updates == g.n_updates == 500
    assert f.label in bundled.labels and f.state == bundled.labels.index(f.label)
    with pytest.raises(ValueError, match="another model"):
        ForwardFilter(random_model(1, n=5, k=3)).restore(snap)
    f.reset()
    assert f.probs is None and f.n_updates == 0
    assert np.array_equal(f.update(x[0]), ForwardFilter(bundled).update(x[0]))


# --------------------------------------------------------------------------- labels

def test_seed_label_rule_and_its_resolution():
    # readings agree: the middle state by return is also the calmest of the middle three
    assert seed_labels([0.3, 0.1, 0.0, -0.1, -0.3], [2, 1, 0.5, 1, 2]) == SEED_LABELS
    # they disagree: the calmest middle state (index 1) is neutral; bull / bear the other two by return
    assert seed_labels([0.3, 0.1, 0.0, -0.1, -0.3], [2, 0.4, 0.9, 1, 2]) == \
        ("strong_bull", "neutral", "bull", "bear", "crash")
    # extremes stay by return even when calmer than the middle
    assert seed_labels([-0.3, 0.3, 0.0, 0.1, -0.1], [0.1, 0.1, 1, 1, 1])[0] == "crash"
    assert seed_labels([0.2, -0.1, 0.0], [1, 1, 1]) == ("state_2", "state_0", "state_1")


def test_assigned_labels_follow_the_rule_on_the_bundled_model(bundled):
    stats = state_stats(bundled)
    assert set(bundled.labels) == set(SEED_LABELS)
    ret = {lab: s["mean_return"] for lab, s in stats.items()}
    assert ret["strong_bull"] == max(ret.values()) and ret["crash"] == min(ret.values())
    assert ret["bull"] > ret["bear"]
    middle = [lab for lab in ("bull", "neutral", "bear")]
    assert min(middle, key=lambda lab: stats[lab]["mean_volatility"]) == "neutral"


def test_match_labels_recovers_permuted_states(bundled):
    perm = np.array([3, 0, 4, 1, 2])  # new state i = old state perm[i]
    p = RegimeModel(startprob=bundled.startprob[perm], transmat=bundled.transmat[np.ix_(perm, perm)],
                    means=bundled.means[perm], covars=bundled.covars[perm], covariance_type="diag",
                    features=bundled.features, labels=tuple(f"x{i}" for i in range(5)),
                    scaler_mean=bundled.scaler_mean, scaler_std=bundled.scaler_std)
    m = match_labels(p, bundled)
    assert m.labels == tuple(bundled.labels[j] for j in perm)
    assert m.metadata["label_source"] == "matched"
    assert all(pair["distance"] == 0.0 for pair in m.metadata["label_match"]["pairs"])
    with pytest.raises(ValueError, match="states"):
        match_labels(random_model(0, n=4, k=3), bundled)


def test_two_retrains_give_matching_states_the_same_label():
    """Two windows of one regime process, trained with different seeds: after matching, each
    label names the same regime in both models (state means within 0.3 std)."""
    means = np.array([[2.5, 0.0, 0.0], [0.0, 2.5, 0.0], [0.0, 0.0, 2.5], [-2.5, 0.0, 0.0], [0.0, -2.5, 0.0]])
    truth = RegimeModel(startprob=np.full(5, 0.2), transmat=0.9 * np.eye(5) + 0.02, means=means,
                        covars=np.full((5, 3), 0.4), covariance_type="diag", features=FEATURES,
                        labels=SEED_LABELS, scaler_mean=np.array([0.0, 6e-4, 1.0]),
                        scaler_std=np.array([8e-4, 5e-4, 0.7]))
    a = train(sample(truth, 1500, 1), seed=0, n_iter=100, n_init=2)
    b = train(sample(truth, 1500, 2), seed=50, n_iter=100, n_init=2)
    b_a = match_labels(b, a)
    ma = a.means * a.scaler_std + a.scaler_mean
    mb = b.means * b.scaler_std + b.scaler_mean
    for label in a.labels:
        i, j = a.state_of(label), b_a.state_of(label)
        assert np.all(np.abs(ma[i] - mb[j]) / a.scaler_std < 0.3)
    # the same pairing as through the generating process: b's state j and a's state labelled like
    # it stand for the same true regime
    a_t, b_t = match_labels(a, truth), match_labels(b, truth)
    for j in range(5):
        assert a_t.labels[a.state_of(b_a.labels[j])] == b_t.labels[j]


def test_with_labels_overrides_from_config(bundled):
    cfg = {0: "strong_bull", 1: "bull", 2: "neutral", 3: "bear", 4: "crash"}  # seed section 3 layout
    m = with_labels(bundled, cfg)
    assert m.labels == SEED_LABELS and m.fingerprint == bundled.fingerprint
    assert m.metadata["label_source"] == "override" and m.metadata["label_map"]["2"] == "neutral"
    assert with_labels(bundled, {"neutral": "calm"}).labels[bundled.state_of("neutral")] == "calm"
    assert with_labels(bundled, {"1": "x"}).labels[1] == "x"
    assert with_labels(bundled, list("abcde")).labels == tuple("abcde")
    with pytest.raises(ValueError, match="unique"):
        with_labels(bundled, {0: "bull"} if bundled.labels[0] != "bull" else {0: "bear"})
    with pytest.raises(ValueError, match="unknown state"):
        with_labels(bundled, {"sideways": "x"})
    with pytest.raises(ValueError, match="out of range"):
        with_labels(bundled, {7: "x"})


# --------------------------------------------------------------------------- storage

def test_save_load_round_trip(tmp_path, bars, bundled):
    for cov in ("diag", "full"):
        m = random_model(3, n=3, k=4, cov=cov)
        m2 = load(save(m, tmp_path / cov))
        assert m2.fingerprint == m.fingerprint and m2.labels == m.labels and m2.features == m.features
        for name in ("startprob", "transmat", "means", "covars", "scaler_mean", "scaler_std"):
            assert np.array_equal(getattr(m2, name), getattr(m, name))
    b2 = load(save(bundled, tmp_path / "bundled") / "model.json")
    assert b2.metadata == bundled.metadata and b2.labels == bundled.labels
    x = compute_features(bars, bundled.features)[:100]
    assert np.array_equal(ForwardFilter(b2).run(x), ForwardFilter(bundled).run(x))


class _Boom:
    """Unpickling this writes a marker file: proof that a loader unpickled."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled!"))


def test_load_refuses_pickles_without_unpickling(tmp_path, bundled):
    boom = _Boom()
    boom.marker = tmp_path / "marker"
    pkl = tmp_path / "hmm_model.pkl"  # the seed's format
    pkl.write_bytes(pickle.dumps(boom))
    with pytest.raises(ValueError, match=r"hmm_model\.pkl.*not a model directory"):
        load(pkl)
    d = save(bundled, tmp_path / "m")
    (d / "arrays.npz").write_bytes(pickle.dumps(boom))  # a pickle disguised as the arrays file
    doc = json.loads((d / "model.json").read_text())
    doc["arrays_sha256"] = train_regime.sha256_file(d / "arrays.npz")
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"arrays\.npz.*pickled"):
        load(d)
    arrays = {k: np.array(getattr(bundled, k)) for k in ("startprob", "transmat", "means", "covars",
                                                         "scaler_mean", "scaler_std")}
    arrays["means"] = np.array([object()] * 15, dtype=object).reshape(5, 3)  # object array = pickle inside
    np.savez(d / "arrays.npz", **arrays)
    doc["arrays_sha256"] = train_regime.sha256_file(d / "arrays.npz")
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"arrays\.npz"):
        load(d)
    assert not boom.marker.exists()


def _edit(d: Path, **changes) -> None:
    doc = json.loads((d / "model.json").read_text())
    doc.update(changes)
    (d / "model.json").write_text(json.dumps(doc))


def test_load_refuses_wrong_format_version_and_mismatches(tmp_path, bundled):
    d = save(bundled, tmp_path / "m")
    _edit(d, format_version=2)
    with pytest.raises(ValueError, match=r"model\.json: format_version 2"):
        load(d)
    d = save(bundled, tmp_path / "m2")
    _edit(d, format="pickle")
    with pytest.raises(ValueError, match=r"model\.json: format 'pickle'"):
        load(d)
    d = save(bundled, tmp_path / "m3")
    _edit(d, n_states=4)  # shapes still say 5 states
    with pytest.raises(ValueError, match="shape"):
        load(d)
    d = save(bundled, tmp_path / "m4")
    doc = json.loads((d / "model.json").read_text())
    doc["shapes"]["means"] = [5, 4]
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"arrays\.npz: means has shape \(5, 3\), model\.json says \(5, 4\)"):
        load(d)
    d = save(bundled, tmp_path / "m5")
    other = save(random_model(2, n=5, k=3), tmp_path / "other")
    (d / "arrays.npz").write_bytes((other / "arrays.npz").read_bytes())  # arrays of another model
    with pytest.raises(ValueError, match=r"arrays\.npz: SHA-256 differs"):
        load(d)
    d = save(bundled, tmp_path / "m6")
    _edit(d, labels=["a", "a", "b", "c", "d"])
    with pytest.raises(ValueError, match="labels"):
        load(d)
    (tmp_path / "m7").mkdir()
    (tmp_path / "m7" / "model.json").write_text("{not json")
    (tmp_path / "m7" / "arrays.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model\.json: not JSON"):
        load(tmp_path / "m7")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent")


def test_bundled_model_metadata(bundled):
    md = bundled.metadata
    assert bundled.n_states == 5 and bundled.features == FEATURES and bundled.covariance_type == "diag"
    for key in ("hmmlearn_version", "training_window", "data_files", "log_likelihood_per_bar", "label_map",
                "state_stats", "n_states", "covariance_type", "features", "bic"):
        assert key in md, key
    assert len(md["data_files"][0]["sha256"]) == 64
    assert md["training_window"]["first_bar_start_utc"].endswith("Z")
    assert md["label_map"] == {str(i): lab for i, lab in enumerate(bundled.labels)}
    st = state_stats(bundled)
    mo = bundled.means * bundled.scaler_std + bundled.scaler_mean
    for lab, s in st.items():
        assert s["mean_return"] == pytest.approx(mo[s["state"], 0]) and abs(s["mean_return"]) < 1e-3
        assert 0 < s["mean_volatility"] < 0.01


# --------------------------------------------------------------------------- training and the script

def test_training_is_deterministic_and_labels_by_rule(bars):
    x = compute_features(bars)
    a = train(x, seed=3, n_iter=60)
    b = train(x, seed=3, n_iter=60)
    assert a.fingerprint == b.fingerprint and a.labels == b.labels
    assert set(a.labels) == set(SEED_LABELS) and a.metadata["label_source"] == "rule"
    assert a.metadata["n_bars"] == len(bars) - 20
    assert train(x, n_states=3, seed=0, n_iter=30).labels.count("state_0") == 1
    with pytest.raises(ValueError, match="too few"):
        train(x[:50])
    with pytest.raises(ValueError, match="shape"):
        train(x[:, :2])


def test_train_script_trains_matches_and_saves(tmp_path, capsys, bundled):
    out = tmp_path / "model"
    rc = train_regime.main(["--data", str(EXCERPT), "--out", str(out), "--restarts", "1", "--n-iter", "60",
                            "--previous", str(BUNDLED), "--start", "2026-04-07"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "labels matched" in text and "strong_bull" in text and "share" in text
    m = load(out)
    assert set(m.labels) == set(bundled.labels) and m.metadata["label_source"] == "matched"
    assert m.metadata["training_window"]["first_trading_day"] == "2026-04-07"
    assert m.metadata["data_files"][0]["name"] == "NQ_5min.csv.gz"


def test_train_script_exit_2_on_bad_input(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert train_regime.main(["--data", str(tmp_path / "nope.csv.gz"), "--out", out]) == 2
    assert "no such file" in capsys.readouterr().err
    assert train_regime.main(["--data", str(ROOT / "data/demo/NQ_2min.csv.gz"), "--out", out]) == 2
    assert "cannot be resampled" in capsys.readouterr().err
    assert train_regime.main(["--data", str(EXCERPT), "--out", out, "--start", "2027-01-01"]) == 2
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(gzip.compress(b"datetime,open\n"))
    assert train_regime.main(["--data", str(bad), "--out", out]) == 2
    assert train_regime.main(["--data", str(EXCERPT), "--out", out, "--previous", str(tmp_path)]) == 2
    for argv in (["--data", str(EXCERPT), "--out", out, "--features", "return_pct,rsi"],
                 ["--data", str(EXCERPT), "--out", out, "--start", "2026-13-01"],
                 ["--data", str(EXCERPT)]):
        with pytest.raises(SystemExit) as e:
            train_regime.main(argv)
        assert e.value.code == 2
    assert not (tmp_path / "m").exists()


def test_resample_one_minute_bars_to_five():
    rows, _ = load_bar_csv(ROOT / "tests/data/databento_es/NQ_1min.csv.gz", instrument="MNQ")
    five = train_regime.resample(rows)
    assert sum(b.volume for b in five) == sum(r.volume for r in rows)
    for b in five:
        group = [r for r in rows if b.start_ns <= r.start_ns < b.end_ns]
        assert b.start_ns % (300 * 10**9) == 0 and b.period_s == 300
        assert (b.open, b.high, b.low, b.close) == (group[0].open, max(r.high for r in group),
                                                    min(r.low for r in group), group[-1].close)
