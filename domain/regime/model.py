"""The HMM regime model: training, state labels, safe save/load (seed 002, sections 2.3 and 2.4).

Sources:

- /work/shared/seeds/002_2613e4c741f6e65a.txt, section 2.3 (``hmm_detector.py``: GaussianHMM,
  ``"diag"`` default, Decision Point 6), section 2.4 (``train_hmm.py`` and the state label rule),
  section 3 (config ``hmm.state_labels``, the manual override: :func:`with_labels`).
- hmmlearn ``GaussianHMM`` (https://hmmlearn.readthedocs.io/en/latest/api.html#gaussianhmm) for
  training only. Live inference is :class:`domain.regime.filter.ForwardFilter`, not hmmlearn's
  ``predict_proba`` (forward-backward: https://github.com/hmmlearn/hmmlearn/issues/355,
  https://github.com/hmmlearn/hmmlearn/issues/496, https://github.com/hmmlearn/hmmlearn/issues/579).

Units. The model works on **standardized** features ``z = (x - scaler_mean) / scaler_std``
(per-feature mean and population std of the training rows). Reason: the raw features differ by
four orders of magnitude (a 5-minute return ~1e-4, volume_ratio ~1), and hmmlearn floors every
variance at ``min_covar = 1e-3`` (https://hmmlearn.readthedocs.io/en/latest/api.html), which in
raw units would swamp the return and volatility variances entirely. ``means``/``covars`` are in
z units; :func:`state_stats` converts back to the original units (fractions per 5-minute bar),
and the filter standardizes every input with the stored scaler.

Storage (:func:`save`, :func:`load`): a directory with ``model.json`` (format name and version,
features, labels, shapes, metadata, SHA-256 of the arrays file) and ``arrays.npz`` (numeric
arrays, read with ``allow_pickle=False``). Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from domain.regime.features import FEATURES, check_names

FORMAT = "regime-hmm"
FORMAT_VERSION = 1
"""``model.json`` ``format`` / ``format_version``; :func:`load` refuses anything else."""

COVARIANCE_TYPES = ("diag", "full")

SEED_LABELS: tuple[str, ...] = ("strong_bull", "bull", "neutral", "bear", "crash")
"""The seed's five regime labels (section 2.4, config ``hmm.state_labels``)."""

ARRAY_NAMES = ("startprob", "transmat", "means", "covars", "scaler_mean", "scaler_std")

LABEL_RULE_5 = ("seed 002 section 2.4, resolved: strong_bull = highest mean return, crash = lowest; "
                "neutral = the lowest mean volatility among the three middle states (by return); "
                "of the two left, bull = higher mean return, bear = lower")
LABEL_RULE_N = "state_0 .. state_{n-1} by ascending mean return (state_0 = lowest)"

_STOCHASTIC_TOL = 1e-6


def _ro(a: Any, dtype: Any = np.float64) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``d`` through JSON (raises ValueError if it is not JSON-safe)."""
    try:
        return json.loads(json.dumps(dict(d), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"model metadata is not JSON-safe: {e}") from None


def _check_arrays(n: int, k: int, cov: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError (a plain problem statement) unless the arrays make a valid model."""
    shapes = {"startprob": (n,), "transmat": (n, n), "means": (n, k),
              "covars": (n, k) if cov == "diag" else (n, k, k), "scaler_mean": (k,), "scaler_std": (k,)}
    for name, shape in shapes.items():
        a = arrays[name]
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape} "
                             f"({n} states, {k} features, {cov} covariance)")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} has non-finite values")
    sp, tm = arrays["startprob"], arrays["transmat"]
    if np.any(sp < 0) or abs(sp.sum() - 1.0) > _STOCHASTIC_TOL:
        raise ValueError("startprob is not a probability vector")
    if np.any(tm < 0) or np.any(np.abs(tm.sum(axis=1) - 1.0) > _STOCHASTIC_TOL):
        raise ValueError("transmat rows are not probability vectors")
    if np.any(arrays["scaler_std"] <= 0):
        raise ValueError("scaler_std must be > 0")
    cv = arrays["covars"]
    if cov == "diag":
        if np.any(cv <= 0):
            raise ValueError("covars (diagonal variances) must be > 0")
    else:
        if not np.allclose(cv, np.transpose(cv, (0, 2, 1)), rtol=1e-10, atol=1e-12):
            raise ValueError("covars are not symmetric")
        try:
            np.linalg.cholesky(cv)
        except np.linalg.LinAlgError:
            raise ValueError("covars are not positive definite") from None


@dataclass(frozen=True, eq=False)
class RegimeModel:
    """A trained Gaussian HMM with its feature scaler and state labels. Immutable (arrays are
    read-only copies); every change (:func:`with_labels`, :func:`match_labels`) returns a new model.

    Attributes (n states, k features; z = standardized feature units):
        startprob: ``(n,)`` initial state distribution.
        transmat: ``(n, n)`` ``transmat[i, j] = P(state_t = j | state_{t-1} = i)``, per 5-min bar.
        means: ``(n, k)`` state means, z units.
        covars: ``"diag"``: ``(n, k)`` variances; ``"full"``: ``(n, k, k)`` covariance matrices;
            z units (z^2).
        covariance_type: ``"diag"`` or ``"full"`` (seed Decision Point 6).
        features: feature names, the column order (:mod:`domain.regime.features`).
        labels: one label per state, index = state (unique strings).
        scaler_mean, scaler_std: ``(k,)`` training mean and population std per feature, original
            units; ``z = (x - scaler_mean) / scaler_std``.
        metadata: JSON-safe dict (training window, data files and SHA-256, hmmlearn version,
            log-likelihood per bar, label map, per-state stats, ...; see :func:`train`).
        fingerprint: SHA-256 (hex) of the numeric parameters, features and covariance type, not
            of labels or metadata: a relabelled model keeps its fingerprint (filter snapshots
            stay valid), a retrained one does not.

    Raises ValueError on construction if shapes, probabilities, variances, labels or features
    are invalid.
    """

    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray
    covariance_type: str
    features: tuple[str, ...]
    labels: tuple[str, ...]
    scaler_mean: np.ndarray
    scaler_std: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        cov = self.covariance_type
        if cov not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type {cov!r}; use one of {COVARIANCE_TYPES}")
        feats = check_names(self.features)
        arrays = {name: _ro(getattr(self, name)) for name in ARRAY_NAMES}
        n = arrays["startprob"].shape[0] if arrays["startprob"].ndim == 1 else -1
        if n < 1:
            raise ValueError(f"startprob has shape {arrays['startprob'].shape}, expected (n_states,)")
        _check_arrays(n, len(feats), cov, arrays)
        labels = tuple(self.labels)
        if len(labels) != n or not all(isinstance(s, str) and s for s in labels) \
                or len(set(labels)) != n:
            raise ValueError(f"labels {labels!r}: need {n} unique non-empty strings")
        for name, a in arrays.items():
            object.__setattr__(self, name, a)
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "metadata", _json_safe(self.metadata))
        h = hashlib.sha256()
        h.update(json.dumps([FORMAT_VERSION, cov, list(feats)]).encode())
        for name in ARRAY_NAMES:
            a = np.ascontiguousarray(arrays[name], dtype="<f8")
            h.update(name.encode() + repr(a.shape).encode() + a.tobytes())
        object.__setattr__(self, "fingerprint", h.hexdigest())

    @property
    def n_states(self) -> int:
        return int(self.startprob.shape[0])

    @property
    def n_features(self) -> int:
        return len(self.features)

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """Original-unit features ``(..., k)`` -> z units ``(x - scaler_mean) / scaler_std``."""
        return (np.asarray(x, dtype=np.float64) - self.scaler_mean) / self.scaler_std

    def state_of(self, label: str) -> int:
        """State index of ``label``; KeyError if unknown."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise KeyError(f"no state labelled {label!r}; labels: {self.labels}") from None

    def to_hmmlearn(self) -> Any:
        """An equivalent ``hmmlearn.hmm.GaussianHMM`` (z units), e.g. to cross-check the filter or
        to score: ``m.to_hmmlearn().score(m.standardize(X))``."""
        from hmmlearn.hmm import GaussianHMM
        h = GaussianHMM(n_components=self.n_states, covariance_type=self.covariance_type)
        h.n_features = self.n_features
        h.startprob_ = np.array(self.startprob)
        h.transmat_ = np.array(self.transmat)
        h.means_ = np.array(self.means)
        h.covars_ = np.array(self.covars)
        return h

    def variances(self) -> np.ndarray:
        """``(n, k)`` per-state variance of each feature (z units), whatever the covariance type."""
        if self.covariance_type == "diag":
            return np.array(self.covars)
        return np.array([np.diag(c) for c in self.covars])


# --------------------------------------------------------------------------- statistics

def n_parameters(n_states: int, n_features: int, covariance_type: str) -> int:
    """Free parameters of a Gaussian HMM as hmmlearn counts them (for BIC): ``(n-1)`` start +
    ``n(n-1)`` transitions + ``n k`` means + ``n k`` (diag) or ``n k(k+1)/2`` (full) covariance
    entries. (The stored ``startprob`` is derived from ``transmat``, so ``n-1`` of these are not
    free; the same constant for every model compared with the same ``n``.)"""
    n, k = n_states, n_features
    cov = n * k if covariance_type == "diag" else n * k * (k + 1) // 2
    return (n - 1) + n * (n - 1) + n * k + cov


def stationary_distribution(transmat: np.ndarray) -> np.ndarray:
    """Long-run state shares: ``pi = pi @ transmat``, ``sum(pi) = 1``, shape ``(n,)``.

    Solved as a least-squares linear system (unique for an irreducible chain; for a reducible one
    a minimum-norm solution, clipped at 0 and renormalised)."""
    t = np.asarray(transmat, dtype=np.float64)
    n = t.shape[0]
    a = np.vstack([t.T - np.eye(n), np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.clip(np.linalg.lstsq(a, b, rcond=None)[0], 0.0, None)
    return pi / pi.sum()


def state_stats(model: RegimeModel) -> dict[str, dict[str, Any]]:
    """Per-state statistics in **original units**, from the model parameters (not from data).

    Returns ``{label: {...}}`` in state order, each with:

    - ``state``: index;
    - ``mean_return``: state mean of ``return_pct`` (fraction per 5-min bar; 1e-4 = 0.01 %);
    - ``mean_volatility``: state mean of ``volatility`` (the 10-bar sample std of returns,
      fraction), or None if the model has no ``volatility`` feature;
    - ``return_std``: within-state std of ``return_pct`` (fraction), from ``covars``;
    - ``means``: ``{feature: state mean}``, original units;
    - ``stationary_share``: long-run share of bars in the state (from ``transmat``);
    - ``expected_duration_bars``: ``1 / (1 - transmat[i, i])`` (inf for an absorbing state).
    """
    mo = model.means * model.scaler_std + model.scaler_mean
    var = model.variances() * model.scaler_std ** 2
    pi = stationary_distribution(model.transmat)
    f = model.features
    out: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(model.labels):
        stay = float(model.transmat[i, i])
        out[label] = {
            "state": i,
            "mean_return": float(mo[i, f.index("return_pct")]) if "return_pct" in f else None,
            "mean_volatility": float(mo[i, f.index("volatility")]) if "volatility" in f else None,
            "return_std": float(math.sqrt(var[i, f.index("return_pct")])) if "return_pct" in f else None,
            "means": {name: float(mo[i, j]) for j, name in enumerate(f)},
            "stationary_share": float(pi[i]),
            "expected_duration_bars": (1.0 / (1.0 - stay)) if stay < 1.0 else math.inf,
        }
    return out


def _refresh_metadata(model: RegimeModel, **extra: Any) -> RegimeModel:
    """The model with ``metadata["label_map"]`` and ``metadata["state_stats"]`` recomputed."""
    stats = state_stats(model)
    meta = dict(model.metadata)
    meta.update(extra)
    meta["label_map"] = {str(i): lab for i, lab in enumerate(model.labels)}
    meta["state_stats"] = {lab: {"state": s["state"], "mean_return": s["mean_return"],
                                 "mean_volatility": s["mean_volatility"], "return_std": s["return_std"],
                                 "stationary_share": s["stationary_share"],
                                 "expected_duration_bars": (None if math.isinf(s["expected_duration_bars"])
                                                            else s["expected_duration_bars"])}
                           for lab, s in stats.items()}
    return replace(model, metadata=meta)


# --------------------------------------------------------------------------- labels

def seed_labels(mean_return: Sequence[float], mean_volatility: Sequence[float]) -> tuple[str, ...]:
    """Labels by the seed's rule (section 2.4) from per-state mean return and mean volatility.

    For 5 states the rule, as written, can contradict itself: it ranks four labels by mean return
    ("highest", "second highest", "second lowest", "lowest") but picks ``neutral`` by "near-zero
    return, lowest volatility", and the lowest-volatility state need not be the middle one by
    return. Resolution (:data:`LABEL_RULE_5`): the extremes by return are fixed (``strong_bull``,
    ``crash``); ``neutral`` is the **lowest-volatility state among the three middle states** (so
    its return lies between the extremes: "near zero" relative to them); of the two left the
    higher return is ``bull``, the lower ``bear``. When the readings agree (the middle state by
    return is also the calmest of the three) this is exactly the rank rule. Ties: lower |return|,
    then lower state index.

    Other state counts (:data:`LABEL_RULE_N`): ``state_0 .. state_{n-1}`` by ascending mean
    return (``state_0`` lowest; ties by state index).

    Args: per-state sequences (index = state), any consistent units.
    Returns: labels, index = state.
    """
    r = [float(x) for x in mean_return]
    v = [float(x) for x in mean_volatility]
    n = len(r)
    if len(v) != n or n < 1:
        raise ValueError("mean_return and mean_volatility need one value per state")
    by_return = sorted(range(n), key=lambda i: (r[i], i))  # ascending
    labels = [""] * n
    if n != 5:
        for rank, i in enumerate(by_return):
            labels[i] = f"state_{rank}"
        return tuple(labels)
    crash, strong_bull = by_return[0], by_return[-1]
    middle = by_return[1:4]
    neutral = min(middle, key=lambda i: (v[i], abs(r[i]), i))
    bear, bull = sorted((i for i in middle if i != neutral), key=lambda i: (r[i], i))
    for i, lab in ((strong_bull, "strong_bull"), (bull, "bull"), (neutral, "neutral"), (bear, "bear"),
                   (crash, "crash")):
        labels[i] = lab
    return tuple(labels)


def assign_labels(model: RegimeModel) -> RegimeModel:
    """The model with labels by the seed's rule (:func:`seed_labels`), using the state means of
    ``return_pct`` and ``volatility`` in original units (if the model has no ``volatility``
    feature, the within-state std of ``return_pct`` stands for it). Records ``label_rule``,
    ``label_source = "rule"`` and whether the 5-state readings agreed (``label_rule_note``) in the
    metadata. Raises ValueError if the model has no ``return_pct`` feature."""
    if "return_pct" not in model.features:
        raise ValueError("assign_labels needs the return_pct feature")
    stats = state_stats(model)
    ret = [s["mean_return"] for s in stats.values()]
    vol = [s["mean_volatility"] if s["mean_volatility"] is not None else s["return_std"]
           for s in stats.values()]
    labels = seed_labels(ret, vol)
    note = None
    if model.n_states == 5:
        median = sorted(range(5), key=lambda i: (ret[i], i))[2]
        note = ("neutral is the middle state by return (the rule's two readings agree)"
                if labels[median] == "neutral" else
                "neutral is NOT the middle state by return: it was chosen as the calmest of the "
                "three middle states (see label_rule)")
    m = replace(model, labels=labels)
    return _refresh_metadata(m, label_rule=LABEL_RULE_5 if model.n_states == 5 else LABEL_RULE_N,
                             label_source="rule", label_rule_note=note)


def with_labels(model: RegimeModel, mapping: Mapping[Any, str] | Sequence[str]) -> RegimeModel:
    """Override labels (config ``hmm.state_labels``, seed section 3).

    Args:
        mapping: either a sequence of ``n`` labels (index = state), or a mapping whose keys are a
            state index (``int`` or digit string, as YAML may give ``0:`` or ``"0":``) or a
            current label, and whose values are the new labels; states not mentioned keep theirs.
    Returns:
        a new model (same fingerprint) with ``metadata["label_source"] = "override"``.
    Raises:
        ValueError: unknown state/label key, or the result's labels are not unique non-empty
        strings.
    """
    labels = list(model.labels)
    if isinstance(mapping, Mapping):
        for key, new in mapping.items():
            if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                idx = int(key)
            elif isinstance(key, str) and key.isdigit():
                idx = int(key)
            elif isinstance(key, str) and key in model.labels:
                idx = model.labels.index(key)
            else:
                raise ValueError(f"label override: unknown state {key!r} (use 0..{model.n_states - 1} "
                                 f"or one of {model.labels})")
            if not 0 <= idx < model.n_states:
                raise ValueError(f"label override: state {idx} out of range 0..{model.n_states - 1}")
            labels[idx] = new
    else:
        labels = list(mapping)
        if len(labels) != model.n_states:
            raise ValueError(f"label override: {len(labels)} labels for {model.n_states} states")
    if not all(isinstance(s, str) and s for s in labels) or len(set(labels)) != len(labels):
        raise ValueError(f"label override gives {labels}: labels must be unique non-empty strings")
    return _refresh_metadata(replace(model, labels=tuple(labels)), label_source="override")


def match_labels(new: RegimeModel, old: RegimeModel) -> RegimeModel:
    """Carry ``old``'s labels over to a retrained ``new`` model (stable labels across retrains).

    States are paired by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on
    the squared distance between state means, both taken to original units and divided by
    ``old``'s scaler std (so every feature counts on the same scale). ``new``'s state ``i`` gets
    the label of the ``old`` state it is paired with. The pairing and its distances are recorded
    in ``metadata["label_match"]``.

    Raises ValueError if the two models differ in features or number of states.
    """
    from scipy.optimize import linear_sum_assignment
    if new.features != old.features:
        raise ValueError(f"cannot match labels: features {new.features} vs {old.features}")
    if new.n_states != old.n_states:
        raise ValueError(f"cannot match labels: {new.n_states} states vs {old.n_states}")
    a = (new.means * new.scaler_std + new.scaler_mean) / old.scaler_std
    b = (old.means * old.scaler_std + old.scaler_mean) / old.scaler_std
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    labels = [""] * new.n_states
    for i, j in zip(rows, cols):
        labels[int(i)] = old.labels[int(j)]
    info = {"matched_to": old.fingerprint,
            "pairs": [{"new_state": int(i), "old_state": int(j), "label": old.labels[int(j)],
                       "distance": float(math.sqrt(cost[i, j]))} for i, j in zip(rows, cols)]}
    return _refresh_metadata(replace(new, labels=tuple(labels)), label_source="matched", label_match=info)


# --------------------------------------------------------------------------- training

def train(features: np.ndarray, n_states: int = 5, covariance_type: str = "diag", seed: int = 0,
          n_iter: int = 200, *, names: Sequence[str] = FEATURES, lengths: Sequence[int] | None = None,
          n_init: int = 1, tol: float = 1e-4, metadata: Mapping[str, Any] | None = None) -> RegimeModel:
    """Fit a Gaussian HMM (hmmlearn ``GaussianHMM``) to a feature matrix and label its states.

    Args:
        features: ``(T, k)`` rows of :func:`domain.regime.features.compute_features`, original
            units, time order.
        n_states: hidden states (seed default 5).
        covariance_type: ``"diag"`` (seed default) or ``"full"`` (Decision Point 6).
        seed: ``random_state`` of the k-means initialisation (restart ``r`` uses ``seed + r``):
            the same data, arguments and library versions give the same model.
        n_iter, tol: EM iteration cap and convergence threshold (log-likelihood gain).
        names: the ``k`` feature names (column order); must include ``return_pct``.
        lengths: lengths of independent sequences in ``features`` (hmmlearn ``lengths``), or None
            for one sequence.
        n_init: EM restarts; the fit with the highest log-likelihood is kept.

    Initialisation (EM finds local optima; the restarts differ in where they start): means by
    k-means and covariances from the data in every restart (hmmlearn's ``"mc"`` init, k-means
    ``random_state = seed + r``); restart 0 starts from **uniform** start and transition
    probabilities; restarts 1.. from hmmlearn's own random draw (rows ~ Dirichlet(1/n), sparse:
    EM cannot revive a zero transition, so such a start can find structure such as "the
    calmest state never moves straight to a middle one", or miss a true transition). Measured: on synthetic
    5-state data with dense transitions the uniform start recovered the true states in 10 of 10
    samples, hmmlearn's random start in 2 of 10; on the NQ 5-minute data the best optimum
    (-2.167 nats/bar, z units) was reached only from random starts (2 of 5 seeds), the uniform
    start ends at -2.248 (docs/strategies/regime.md).
        metadata: extra JSON-safe entries (the training script adds data files, SHA-256, window).

    Start probabilities: EM estimates ``startprob`` from the first bar of each training sequence,
    so with one sequence it comes out one-hot (the first bar's state): a filter reset (or the
    seed's 50-bar window) would then force that state on its first bar whatever the data. It is
    replaced after fitting by the **stationary distribution** of ``transmat`` (the chance of each
    state at an arbitrary bar), the right prior for a filter that starts mid-stream. The EM value
    is kept in ``metadata["fitted_startprob"]``.

    Standardization: the features are z-scored with their own mean and population std (stored
    in the model and applied by the filter; module docstring explains why).

    Returns:
        the model, labelled by :func:`assign_labels`, with metadata: ``features``, ``n_states``,
        ``covariance_type``, ``hmmlearn_version``, ``seed``, ``n_iter``, ``n_init``, ``iterations``,
        ``converged``, ``n_bars``, ``log_likelihood_per_bar`` (z units; the original-unit figure
        is ``log_likelihood_per_bar_original_units``), ``bic``, ``n_parameters``, ``label_map``,
        ``state_stats``, ``label_rule`` plus ``metadata``.

    Raises:
        ValueError: wrong shape, non-finite values, a constant feature, fewer than
        ``20 * n_states`` rows, no ``return_pct`` feature.
    """
    import hmmlearn
    from hmmlearn.hmm import GaussianHMM

    names = check_names(names)
    if "return_pct" not in names:
        raise ValueError("the features must include return_pct (labels are ranked by it)")
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type {covariance_type!r}; use one of {COVARIANCE_TYPES}")
    if n_states < 1 or n_iter < 1 or n_init < 1:
        raise ValueError("n_states, n_iter and n_init must be >= 1")
    if not 0 <= seed <= 2 ** 32 - n_init:
        raise ValueError(f"seed {seed} out of range 0 .. 2**32 - n_init")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"features have shape {x.shape}, expected (T, {len(names)}) for {names}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain non-finite values")
    if x.shape[0] < 20 * n_states:
        raise ValueError(f"{x.shape[0]} rows are too few to train {n_states} states "
                         f"(need at least {20 * n_states})")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    if np.any(std <= 0):
        const = [n for n, s in zip(names, std) if s <= 0]
        raise ValueError(f"constant feature(s) {const}: cannot standardize")
    z = (x - mean) / std
    best = None
    for r in range(n_init):
        h = GaussianHMM(n_components=n_states, covariance_type=covariance_type, n_iter=n_iter, tol=tol,
                        random_state=seed + r, implementation="log")
        if r == 0:  # dense start: uniform start and transition probabilities
            h.init_params = "mc"
            h.startprob_ = np.full(n_states, 1.0 / n_states)
            h.transmat_ = np.full((n_states, n_states), 1.0 / n_states)
        h.fit(z, lengths)
        ll = float(h.score(z, lengths))
        if best is None or ll > best[0]:
            best = (ll, h, r)
    assert best is not None
    fit_ll, h, r = best
    fitted_start = np.array(h.startprob_)
    h.startprob_ = stationary_distribution(h.transmat_)
    ll = float(h.score(z, lengths))
    covars = np.array(h._covars_) if covariance_type == "diag" else np.array(h.covars_)
    t = x.shape[0]
    p = n_parameters(n_states, len(names), covariance_type)
    meta: dict[str, Any] = {
        "features": list(names), "n_states": n_states, "covariance_type": covariance_type,
        "hmmlearn_version": hmmlearn.__version__, "numpy_version": np.__version__,
        "seed": seed, "n_iter": n_iter, "n_init": n_init, "best_restart": r, "tol": tol,
        "iterations": int(h.monitor_.iter), "converged": bool(h.monitor_.converged),
        "n_bars": t, "n_sequences": 1 if lengths is None else len(lengths),
        "log_likelihood_per_bar": ll / t,
        "log_likelihood_per_bar_original_units": ll / t - float(np.log(std).sum()),
        "n_parameters": p, "bic": -2.0 * ll + p * math.log(t),
        "startprob": "stationary distribution of transmat (replaces the EM estimate, learnt from the "
                     "first bar of one sequence)",
        "fitted_startprob": [float(v) for v in fitted_start], "fit_log_likelihood_per_bar": fit_ll / t,
        "standardization": "z = (x - scaler_mean) / scaler_std, training mean and population std",
    }
    meta.update(_json_safe(metadata or {}))
    model = RegimeModel(startprob=h.startprob_, transmat=h.transmat_, means=h.means_, covars=covars,
                        covariance_type=covariance_type, features=names,
                        labels=tuple(f"s{i}" for i in range(n_states)), scaler_mean=mean,
                        scaler_std=std, metadata=meta)
    return assign_labels(model)


def score_per_bar(model: RegimeModel, features: np.ndarray) -> float:
    """Average log-likelihood per row of ``features`` (original units in, z units scored, one
    sequence), e.g. out of sample. Uses hmmlearn's forward pass (``score``)."""
    x = np.asarray(features, dtype=np.float64)
    return float(model.to_hmmlearn().score(model.standardize(x))) / x.shape[0]


# --------------------------------------------------------------------------- storage

def sha256_file(p: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks): model arrays, training data files."""
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: RegimeModel, path: Path | str) -> Path:
    """Write ``model`` to the directory ``path`` (created if needed): ``arrays.npz`` (plain
    float64 arrays, :data:`ARRAY_NAMES`) then ``model.json`` (format, version, features, labels,
    covariance type, shapes, SHA-256 of ``arrays.npz``, fingerprint, metadata). Each file is
    written to a temporary name and renamed, so a reader never sees half a file. Returns the
    directory."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.ascontiguousarray(getattr(model, name), dtype=np.float64) for name in ARRAY_NAMES}
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".arrays-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model is a readable data file
        os.replace(tmp, d / "arrays.npz")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "n_states": model.n_states,
           "n_features": model.n_features, "covariance_type": model.covariance_type,
           "features": list(model.features), "labels": list(model.labels),
           "shapes": {name: list(a.shape) for name, a in arrays.items()},
           "arrays_sha256": sha256_file(d / "arrays.npz"), "fingerprint": model.fingerprint,
           "metadata": model.metadata}
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".model-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, d / "model.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d


def load(path: Path | str) -> RegimeModel:
    """Read a model written by :func:`save`.

    Args:
        path: the model directory (or its ``model.json``).

    Never unpickles: ``arrays.npz`` is read with ``np.load(allow_pickle=False)``; a pickle file
    (e.g. the seed's ``models/hmm_model.pkl``) is refused.

    Raises:
        FileNotFoundError: no such directory / file.
        ValueError: anything else wrong; the message starts with ``regime model <file>:`` and
            says what (not a model directory, not JSON, wrong format or version, missing or
            extra array, shape mismatch, SHA-256 mismatch, pickled/object data, invalid
            probabilities or covariances, bad labels).
    """
    p = Path(path)
    d = p.parent if p.name == "model.json" else p
    if not d.exists():
        raise FileNotFoundError(f"regime model {d}: no such directory")
    if not d.is_dir():
        raise ValueError(f"regime model {d}: not a model directory (expected a directory with "
                         f"model.json and arrays.npz; pickled models are never loaded)")
    mj, az = d / "model.json", d / "arrays.npz"
    for f in (mj, az):
        if not f.is_file():
            raise ValueError(f"regime model {f}: missing (a model directory holds model.json and arrays.npz)")

    def bad(f: Path, problem: str) -> ValueError:
        return ValueError(f"regime model {f}: {problem}")

    try:
        doc = json.loads(mj.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(mj, f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise bad(mj, "not a JSON object")
    if doc.get("format") != FORMAT:
        raise bad(mj, f"format {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise bad(mj, f"format_version {doc.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    try:
        n, k = int(doc["n_states"]), int(doc["n_features"])
        cov = str(doc["covariance_type"])
        feats = tuple(doc["features"])
        labels = tuple(doc["labels"])
        shapes = {name: tuple(int(s) for s in doc["shapes"][name]) for name in ARRAY_NAMES}
        sha = str(doc["arrays_sha256"])
        meta = doc.get("metadata", {})
    except (KeyError, TypeError, ValueError) as e:
        raise bad(mj, f"missing or malformed field ({type(e).__name__}: {e})") from None
    if len(feats) != k:
        raise bad(mj, f"{len(feats)} feature names for n_features {k}")
    if not isinstance(meta, dict):
        raise bad(mj, "metadata is not an object")
    if sha256_file(az) != sha:
        raise bad(az, "SHA-256 differs from model.json's arrays_sha256 (files from different models, "
                      "or modified)")
    try:
        with np.load(az, allow_pickle=False) as npz:
            names = set(npz.files)
            if names != set(ARRAY_NAMES):
                raise bad(az, f"arrays {sorted(names)}, expected {sorted(ARRAY_NAMES)}")
            arrays = {}
            for name in ARRAY_NAMES:
                a = npz[name]
                if a.dtype.kind not in "fiu":
                    raise bad(az, f"{name} has dtype {a.dtype}, expected float")
                arrays[name] = a.astype(np.float64)
    except ValueError as e:
        if str(e).startswith("regime model"):
            raise
        raise bad(az, f"unreadable ({e}); pickled or object data is never loaded") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise bad(az, f"unreadable as .npz ({type(e).__name__}: {e})") from None
    for name in ARRAY_NAMES:
        if arrays[name].shape != shapes[name]:
            raise bad(az, f"{name} has shape {arrays[name].shape}, model.json says {shapes[name]}")
    try:
        check_names(feats)
        if cov not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type {cov!r}; use one of {COVARIANCE_TYPES}")
        _check_arrays(n, k, cov, arrays)
        model = RegimeModel(covariance_type=cov, features=feats, labels=labels, metadata=meta, **arrays)
    except ValueError as e:
        raise bad(d, f"invalid model ({e})") from None
    if doc.get("fingerprint") not in (None, model.fingerprint):
        raise bad(mj, "fingerprint does not match the arrays")
    return model
