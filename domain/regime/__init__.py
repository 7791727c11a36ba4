"""HMM market regime model (seed 002, /work/shared/seeds/002_2613e4c741f6e65a.txt, sections 2.2-2.4).

Pure package (numpy, scipy; hmmlearn for training only):

- :mod:`domain.regime.features`: ``return_pct``, ``volatility``, ``volume_ratio`` (and the optional
  ``bar_range_pct``) of 5-minute bars, batch (:func:`compute_features`) and incremental
  (:class:`FeatureBuilder`);
- :mod:`domain.regime.model`: :class:`RegimeModel`, :func:`train`, labels (:func:`assign_labels`,
  :func:`match_labels`, :func:`with_labels`), :func:`save` / :func:`load` (JSON + ``.npz``, never
  pickle), :func:`state_stats`;
- :mod:`domain.regime.filter`: :class:`ForwardFilter`, the causal posterior
  ``P(state_t | x_1..x_t)`` (not hmmlearn's forward-backward ``predict_proba``).

Usage (live or replay)::

    model = load("data/models/regime-mnq-5min")
    fb, flt = FeatureBuilder(model.features), ForwardFilter(model)
    for bar in five_minute_bars:
        row = fb.update(bar)
        if row is not None:
            probs = flt.update(row)      # (n_states,), sums to 1
            regime = flt.label           # e.g. "neutral"

Docs: docs/strategies/regime.md, "The regime model".
"""

from domain.regime.features import ALL_FEATURES, FEATURES, FeatureBuilder, compute_features
from domain.regime.filter import ForwardFilter
from domain.regime.model import (SEED_LABELS, RegimeModel, assign_labels, load, match_labels, save,
                                 state_stats, train, with_labels)

__all__ = ["ALL_FEATURES", "FEATURES", "FeatureBuilder", "compute_features", "ForwardFilter",
           "SEED_LABELS", "RegimeModel", "assign_labels", "load", "match_labels", "save", "state_stats",
           "train", "with_labels"]
