"""Measurements behind seed 002's regime decision points DP5, DP6 and DP7.

Usage::

    python scripts/regime_study.py                        # ../shared/data/es_nq_yahoo_2m_5m/NQ_5min.csv.gz
    python scripts/regime_study.py --data FILE --split 2026-04-07 --restarts 5 --json out.json

Data: the NQ 5-minute bars (as MNQ), features over the whole series (causal, 20-bar warm-up),
rows split by CME trading day (America/Chicago) of the bar: **train** = days before ``--split``,
**test** = ``--split`` onwards (out of sample: neither the scaler nor the HMM sees them).

DP5 / DP6 (seed section 2.2 "bar_range_pct as a 4th feature?", section 2.3 "diag or full?"):
for each of {3 features, 4 features} x {diag, full}, a 5-state model (``--restarts`` EM restarts,
best kept) and:

- ``LL/bar in`` / ``LL/bar out``: log-likelihood per bar of the model's own features (z units,
  hmmlearn forward algorithm), train / test rows; ``BIC`` on train rows. Comparable between diag
  and full of the same feature set, **not** between 3 and 4 features (other data);
- ``LL3 in/out``: log-likelihood per bar of the **three base features** only (a 4-feature model
  marginalised: its Gaussians restricted to the first three dimensions; same scaler for them):
  comparable across all four models;
- ``spread``: max - min of the state mean returns (model means, % per bar);
- ``eta2 r+1`` / ``eta2 |r+1|``: share of the variance of the **next** bar's return / absolute
  return explained by the causal state (forward-filter argmax at bar t), test rows (the signal a
  strategy could use); chance level ~ (n_states - 1) / rows;
- ``conf``: mean of the largest filtered state probability, test rows (state separation).

DP7 (seed section 2.3, "last 50 bars" window): with the 3-feature diag model, the state path
(argmax) of: the forward filter over all bars since the start (``continuous``), the filter reset
at each trading day's first bar (``daily reset``), the filter over the last W bars only (the
seed's window, W = 20, 50, 100; = the last row of ``predict_proba(X[t-W+1:t+1])``), and, for
reference, non-causal smoothing (``predict_proba`` of each whole day / the whole series). For
each: label flips per full trading day (train / test days), and agreement with ``continuous``.
Also the continuous filter's path with hysteresis (switch only when the new state's filtered
probability is >= 0.7 / 0.9), a causal way to trade fewer flips for lag.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from domain.calendar import trading_day  # noqa: E402
from domain.regime.features import ALL_FEATURES, FEATURES, compute_features  # noqa: E402
from domain.regime.filter import ForwardFilter  # noqa: E402
from domain.regime.model import RegimeModel, score_per_bar, state_stats, train  # noqa: E402
from infra.replay import load_bar_csv  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared/data/es_nq_yahoo_2m_5m/NQ_5min.csv.gz"
FULL_DAY_ROWS = 250
"""A trading day with at least this many 5-minute rows counts as full (a full day has 275-276)."""


def marginal(model: RegimeModel, names: tuple[str, ...]) -> RegimeModel:
    """The model restricted to the features ``names`` (Gaussian marginals; same dynamics)."""
    idx = [model.features.index(n) for n in names]
    cov = model.covars[:, idx] if model.covariance_type == "diag" else model.covars[np.ix_(range(model.n_states), idx, idx)]
    return RegimeModel(startprob=model.startprob, transmat=model.transmat, means=model.means[:, idx], covars=cov,
                       covariance_type=model.covariance_type, features=names, labels=model.labels,
                       scaler_mean=model.scaler_mean[idx], scaler_std=model.scaler_std[idx])


def eta2(y: np.ndarray, groups: np.ndarray) -> float:
    """Between-group share of the variance of ``y``."""
    total = float(((y - y.mean()) ** 2).sum())
    between = sum(float((groups == g).sum()) * (float(y[groups == g].mean()) - float(y.mean())) ** 2
                  for g in np.unique(groups))
    return between / total if total > 0 else float("nan")


def flips_per_day(states: np.ndarray, days: np.ndarray, keep: set) -> float:
    """Mean number of argmax changes inside a trading day, over the days in ``keep``."""
    counts = collections.Counter()
    for t in range(1, len(states)):
        if days[t] == days[t - 1] and days[t] in keep and states[t] != states[t - 1]:
            counts[days[t]] += 1
    return float(np.mean([counts[d] for d in keep])) if keep else float("nan")


def window_filter(model: RegimeModel, x: np.ndarray, w: int) -> np.ndarray:
    """Row t: the filtered posterior of a fresh filter over rows ``t-w+1..t`` (the seed's window)."""
    out = np.empty((len(x), model.n_states))
    for t in range(len(x)):
        out[t] = ForwardFilter(model).run(x[max(0, t - w + 1):t + 1])[-1]
    return out


def held_path(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Argmax path that changes state only when the new argmax has probability >= ``threshold``
    (hysteresis; causal)."""
    out = np.empty(len(probs), dtype=int)
    for t, p in enumerate(probs):
        a = int(p.argmax())
        out[t] = a if t == 0 or p[a] >= threshold else out[t - 1]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--split", type=dt.date.fromisoformat, default=dt.date(2026, 4, 7),
                    help="first out-of-sample trading day (default 2026-04-07)")
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    if not args.data.is_file():
        print(f"error: {args.data}: no such file", file=sys.stderr)
        return 2
    bars, _ = load_bar_csv(args.data, instrument="MNQ")
    x_all = compute_features(bars, ALL_FEATURES)
    rows = bars[20:]
    days = np.array([trading_day(b.start_ns) for b in rows])
    nxt = np.append(x_all[1:, 0], np.nan)  # next bar's return
    train_m = days < args.split
    test_m = ~train_m
    tr_days = {d for d, c in collections.Counter(days[train_m]).items() if c >= FULL_DAY_ROWS}
    te_days = {d for d, c in collections.Counter(days[test_m]).items() if c >= FULL_DAY_ROWS}
    print(f"{args.data.name}: {len(rows)} feature rows; train {train_m.sum()} rows "
          f"({days[train_m][0]} .. {days[train_m][-1]}, {len(tr_days)} full days), test {test_m.sum()} rows "
          f"({days[test_m][0]} .. {days[test_m][-1]}, {len(te_days)} full days)")
    result: dict = {"data": str(args.data), "split": str(args.split), "train_rows": int(train_m.sum()),
                    "test_rows": int(test_m.sum()), "train_full_days": len(tr_days),
                    "test_full_days": len(te_days), "restarts": args.restarts, "seed": args.seed, "dp56": {}}

    # ---------------------------------------------------------------- DP5 / DP6
    print("\nDP5/DP6: 5 states, trained on the train rows "
          f"({args.restarts} restarts); LL in nats per bar, z units")
    hdr = (f"{'features':<9}{'cov':<5}{'params':>7}{'LL/bar in':>10}{'LL/bar out':>11}{'BIC':>10}{'LL3 in':>8}"
           f"{'LL3 out':>8}{'spread %':>9}{'eta2 r+1':>9}{'eta2|r+1|':>10}{'conf':>6}{'s':>5}")
    print(hdr)
    models: dict[tuple[int, str], RegimeModel] = {}
    test_ok = test_m & np.isfinite(nxt)
    for names in (FEATURES, ALL_FEATURES):
        idx = [ALL_FEATURES.index(n) for n in names]
        x = x_all[:, idx]
        for cov in ("diag", "full"):
            t0 = time.perf_counter()
            m = train(x[train_m], 5, cov, seed=args.seed, n_init=args.restarts, names=names)
            models[(len(names), cov)] = m
            m3 = marginal(m, FEATURES)
            probs = ForwardFilter(m).run(x)
            st = probs.argmax(axis=1)
            rets = [s["mean_return"] for s in state_stats(m).values()]
            r = {"params": m.metadata["n_parameters"],
                 "ll_in": m.metadata["log_likelihood_per_bar"], "ll_out": score_per_bar(m, x[test_m]),
                 "bic": m.metadata["bic"],
                 "ll3_in": score_per_bar(m3, x_all[train_m, :3]), "ll3_out": score_per_bar(m3, x_all[test_m, :3]),
                 "spread_pct": (max(rets) - min(rets)) * 100,
                 "eta2_next_return_out": eta2(nxt[test_ok], st[test_ok]),
                 "eta2_next_abs_return_out": eta2(np.abs(nxt[test_ok]), st[test_ok]),
                 "eta2_next_return_in": eta2(nxt[train_m & np.isfinite(nxt)], st[train_m & np.isfinite(nxt)]),
                 "eta2_next_abs_return_in": eta2(np.abs(nxt[train_m & np.isfinite(nxt)]),
                                                 st[train_m & np.isfinite(nxt)]),
                 "confidence_out": float(probs[test_m].max(axis=1).mean()),
                 "seconds": time.perf_counter() - t0}
            result["dp56"][f"{len(names)}-{cov}"] = r
            print(f"{len(names):<9}{cov:<5}{r['params']:>7}{r['ll_in']:>10.4f}{r['ll_out']:>11.4f}{r['bic']:>10.0f}"
                  f"{r['ll3_in']:>8.4f}{r['ll3_out']:>8.4f}{r['spread_pct']:>9.4f}{r['eta2_next_return_out']:>9.5f}"
                  f"{r['eta2_next_abs_return_out']:>10.4f}{r['confidence_out']:>6.3f}{r['seconds']:>5.0f}")
    print(f"  chance eta2 ~ {4 / test_ok.sum():.5f} (4 / test rows)")

    # per-state next-bar returns, 3-feature diag, test rows
    m = models[(3, "diag")]
    x3 = x_all[:, :3]
    st = ForwardFilter(m).run(x3).argmax(axis=1)
    print("\nper state (3 features, diag), test rows: causal state at bar t, return of bar t+1")
    print(f"{'label':<12}{'rows':>6}{'mean r+1 %':>11}{'t-stat':>8}{'mean |r+1| %':>13}{'model mean r %':>15}")
    per_state = {}
    stats = state_stats(m)
    for lab, s in sorted(stats.items(), key=lambda kv: -kv[1]["mean_return"]):
        sel = test_ok & (st == s["state"])
        y = nxt[sel]
        tstat = float(y.mean() / (y.std(ddof=1) / np.sqrt(len(y)))) if len(y) > 1 else float("nan")
        per_state[lab] = {"rows": int(sel.sum()), "mean_next_return_pct": float(y.mean() * 100) if len(y) else None,
                          "t_stat": tstat, "mean_abs_next_return_pct": float(np.abs(y).mean() * 100) if len(y) else None,
                          "model_mean_return_pct": s["mean_return"] * 100}
        print(f"{lab:<12}{len(y):>6}{(y.mean() * 100 if len(y) else float('nan')):>11.4f}{tstat:>8.2f}"
              f"{(np.abs(y).mean() * 100 if len(y) else float('nan')):>13.4f}{s['mean_return'] * 100:>15.4f}")
    result["per_state_test"] = per_state

    # ---------------------------------------------------------------- DP7
    print("\nDP7: state paths of the 3-feature diag model (trained on the train rows)")
    h = m.to_hmmlearn()
    z = m.standardize(x3)
    paths: dict[str, np.ndarray] = {}
    cont = ForwardFilter(m).run(x3)
    paths["continuous filter"] = cont
    daily = np.empty_like(cont)
    f = ForwardFilter(m)
    for t in range(len(x3)):
        if t == 0 or days[t] != days[t - 1]:
            f.reset()
        daily[t] = f.update(x3[t])
    paths["daily reset filter"] = daily
    for w in (20, 50, 100):
        paths[f"window {w} filter"] = window_filter(m, x3, w)
    smooth_day = np.empty_like(cont)
    for d in np.unique(days):
        sel = days == d
        smooth_day[sel] = h.predict_proba(z[sel])
    paths["smoothed per day (non-causal)"] = smooth_day
    paths["smoothed all (non-causal)"] = h.predict_proba(z)
    for thr in (0.7, 0.9):
        paths[f"continuous, switch at p>={thr}"] = cont  # probabilities unchanged, path held (below)
    print(f"{'path':<32}{'flips/day in':>13}{'flips/day out':>14}{'agree %':>9}{'max |dp|':>9}{'mean |dp|':>10}")
    result["dp7"] = {}
    cs = cont.argmax(axis=1)
    for name, p in paths.items():
        s = p.argmax(axis=1) if "switch at" not in name else held_path(p, float(name.rsplit(">=", 1)[1]))
        r = {"flips_per_day_train": flips_per_day(s, days, tr_days), "flips_per_day_test": flips_per_day(s, days, te_days),
             "agreement_with_continuous": float((s == cs).mean()),
             "max_abs_prob_diff": float(np.abs(p - cont).max()), "mean_abs_prob_diff": float(np.abs(p - cont).mean())}
        result["dp7"][name] = r
        print(f"{name:<32}{r['flips_per_day_train']:>13.1f}{r['flips_per_day_test']:>14.1f}"
              f"{r['agreement_with_continuous'] * 100:>9.2f}{r['max_abs_prob_diff']:>9.3f}{r['mean_abs_prob_diff']:>10.4f}")
    # how far back does the past matter? distance between the window-W and continuous posteriors
    print("  rows/day: ~275; 50 bars = 4 h 10 min")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
