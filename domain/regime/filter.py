"""Causal regime inference: the scaled forward filter of an HMM (seed 002, section 2.3).

The seed asks for "filtered probabilities ... using only data up to the current bar" but calls
hmmlearn's ``predict_proba``, which runs the **forward-backward** algorithm: every row is a
*smoothed* posterior ``P(state_t | x_1..x_T)`` that depends on the bars after ``t``
(https://github.com/hmmlearn/hmmlearn/issues/355, https://github.com/hmmlearn/hmmlearn/issues/496,
https://github.com/hmmlearn/hmmlearn/issues/579). Only its **last** row is a filtered posterior.
Used on a whole backtest series it leaks the future into past regimes; used on a sliding window
(the seed's ``predict_window: 50``) it recomputes 50 bars per bar and forgets everything older.

:class:`ForwardFilter` implements the forward recursion from the model's parameters instead:

    alpha_1(j) ∝ startprob(j) * N(z_1; mu_j, Sigma_j)
    alpha_t(j) ∝ [sum_i alpha_{t-1}(i) transmat(i, j)] * N(z_t; mu_j, Sigma_j)

normalised every bar (the "scaled" forward algorithm, Rabiner 1989, section V.A), with the
emission computed as log-densities and exponentiated after subtracting their maximum
(log-sum-exp), so neither underflows. ``alpha_t = P(state_t | x_1..x_t)`` is exactly the last row
of ``predict_proba(X[:t+1])`` (tests/test_regime_model.py checks 1e-9 against hmmlearn). Cost
per bar: O(n^2) for the transition and O(n k) (diag) or O(n k^2) (full) for the densities.

Nothing later changes an earlier output: ``update`` returns a fresh array and its value depends
only on the inputs so far (tested: appending bars never changes earlier posteriors).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from domain.regime.model import RegimeModel

_LOG_2PI = math.log(2.0 * math.pi)


class ForwardFilter:
    """Filtered state posteriors ``P(state_t | x_1..x_t)``, one feature row at a time.

    Args:
        model: the :class:`~domain.regime.model.RegimeModel` (its scaler standardizes inputs).

    Attributes / properties:
        model: the model.
        probs: ``(n,)`` posterior after the last update (a copy), None before the first.
        state: ``argmax(probs)`` (lowest index on ties), None before the first update.
        label: ``model.labels[state]``, None before the first update.
        n_updates: rows filtered since construction / :meth:`reset`.
        loglik: ``log P(x_1..x_t)`` in z units (the sum of the per-bar normalisers), equal to
            hmmlearn's ``score`` of the same rows; ``last_loglik`` is the last bar's term
            ``log P(x_t | x_1..x_{t-1})`` (a drop flags bars the model finds unlikely).
    """

    SNAPSHOT_VERSION = 1

    def __init__(self, model: RegimeModel) -> None:
        self.model = model
        n, k = model.n_states, model.n_features
        self._n, self._k = n, k
        with np.errstate(divide="ignore"):
            self._log_start = np.log(np.asarray(model.startprob, dtype=np.float64))
        self._transmat = np.ascontiguousarray(model.transmat, dtype=np.float64)
        self._means = np.ascontiguousarray(model.means, dtype=np.float64)
        self._shift = np.asarray(model.scaler_mean, dtype=np.float64)
        self._scale = np.asarray(model.scaler_std, dtype=np.float64)
        self._diag = model.covariance_type == "diag"
        if self._diag:
            var = np.asarray(model.covars, dtype=np.float64)
            self._inv_var = 1.0 / var
            self._const = -0.5 * (k * _LOG_2PI + np.log(var).sum(axis=1))
        else:
            chol = np.linalg.cholesky(np.asarray(model.covars, dtype=np.float64))  # lower, (n, k, k)
            eye = np.eye(k)
            self._chol_inv = np.ascontiguousarray(np.array([np.linalg.solve(c, eye) for c in chol]))
            self._const = -0.5 * k * _LOG_2PI - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every bar: the next update starts from ``startprob``."""
        self._probs: np.ndarray | None = None
        self._n_updates = 0
        self._loglik = 0.0
        self._last_loglik: float | None = None

    @property
    def probs(self) -> np.ndarray | None:
        return None if self._probs is None else self._probs.copy()

    @property
    def state(self) -> int | None:
        return None if self._probs is None else int(np.argmax(self._probs))

    @property
    def label(self) -> str | None:
        s = self.state
        return None if s is None else self.model.labels[s]

    @property
    def n_updates(self) -> int:
        return self._n_updates

    @property
    def loglik(self) -> float:
        return self._loglik

    @property
    def last_loglik(self) -> float | None:
        return self._last_loglik

    # ------------------------------------------------------------------ maths

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        """``(n,)`` Gaussian log-densities ``log N(z; mu_j, Sigma_j)`` of one feature row ``x``
        (``(k,)``, original units; z = standardized), per state."""
        z = (np.asarray(x, dtype=np.float64) - self._shift) / self._scale
        d = z - self._means  # (n, k)
        if self._diag:
            return self._const - 0.5 * (d * d * self._inv_var).sum(axis=1)
        y = np.matmul(self._chol_inv, d[:, :, None])[:, :, 0]  # L^-1 (z - mu), (n, k)
        return self._const - 0.5 * (y * y).sum(axis=1)

    def update(self, x: np.ndarray) -> np.ndarray:
        """Filter one feature row.

        Args:
            x: ``(k,)`` features of the newest bar, original units, in ``model.features`` order
                (a :class:`~domain.regime.features.FeatureBuilder` row).
        Returns:
            ``(n,)`` ``P(state_t | x_1..x_t)`` (a new array; sums to 1).
        Raises:
            ValueError: wrong shape or non-finite values, or a row impossible under every
            reachable state (the filter is then unchanged).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self._k,):
            raise ValueError(f"feature row has shape {x.shape}, expected ({self._k},) for {self.model.features}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"feature row has non-finite values: {x}")
        ll = self.log_likelihoods(x)
        if self._probs is None:
            log_prior = self._log_start
        else:
            with np.errstate(divide="ignore"):
                log_prior = np.log(self._probs @ self._transmat)
        a = ll + log_prior
        m = float(a.max())
        if not math.isfinite(m):
            raise ValueError("feature row has zero likelihood under every reachable state")
        w = np.exp(a - m)
        s = float(w.sum())
        self._probs = w / s
        step = m + math.log(s)
        self._last_loglik = step
        self._loglik += step
        self._n_updates += 1
        return self._probs.copy()

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Filter every row of ``rows`` ``(T, k)`` in turn; returns ``(T, n)`` posteriors."""
        rows = np.asarray(rows, dtype=np.float64)
        out = np.empty((rows.shape[0], self._n))
        for t in range(rows.shape[0]):
            out[t] = self.update(rows[t])
        return out

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state (for the Redis mirror): version, the model's fingerprint, posterior,
        counters. Floats survive ``json`` exactly, so a restored filter continues bit-identically."""
        return {"version": self.SNAPSHOT_VERSION, "model": self.model.fingerprint,
                "probs": None if self._probs is None else [float(p) for p in self._probs],
                "n_updates": self._n_updates, "loglik": self._loglik, "last_loglik": self._last_loglik}

    def restore(self, d: dict[str, Any]) -> "ForwardFilter":
        """Load :meth:`snapshot` output into this filter (in place; returns self).

        Raises ValueError for another snapshot version, a snapshot of another model (fingerprint:
        the numeric parameters; labels may differ) or an invalid posterior.
        """
        if d.get("version") != self.SNAPSHOT_VERSION:
            raise ValueError(f"filter snapshot version {d.get('version')!r}, expected {self.SNAPSHOT_VERSION}")
        if d.get("model") != self.model.fingerprint:
            raise ValueError("filter snapshot belongs to another model (fingerprint differs)")
        probs = d.get("probs")
        if probs is None:
            if int(d.get("n_updates", 0)) != 0:
                raise ValueError("filter snapshot: no posterior after updates")
            self.reset()
            return self
        p = np.array([float(v) for v in probs], dtype=np.float64)
        if p.shape != (self._n,) or not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
            raise ValueError(f"filter snapshot: invalid posterior {probs!r}")
        self._probs = p
        self._n_updates = int(d["n_updates"])
        self._loglik = float(d["loglik"])
        last = d.get("last_loglik")
        self._last_loglik = None if last is None else float(last)
        return self
