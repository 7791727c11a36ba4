"""Train the HMM regime model on 5-minute bars and save it (seed 002, section 2.4).

Usage::

    python scripts/train_regime.py --data ../shared/data/es_nq_yahoo_2m_5m/NQ_5min.csv.gz \\
        --states 5 --out data/models/regime-mnq-5min
    python scripts/train_regime.py --data NEW.csv.gz --previous data/models/regime-mnq-5min --out NEW_DIR
    python scripts/train_regime.py --data NQ_1min.csv.gz --out DIR      # 1-min bars, resampled to 5 min

- ``--data``: a bar file :func:`infra.replay.load_bar_csv` reads (Yahoo layout, ``.csv[.gz]``),
  read as ``--instrument`` (default MNQ; the NQ rows stand for MNQ). 5-minute bars are used as
  they are; bars of a period dividing 300 s (1-min, ...) are resampled to 5-minute bars aligned
  to 5-minute clock boundaries (:func:`resample`). Several ``--data`` files are concatenated in
  time order (the loader's checks apply per file).
- ``--start`` / ``--end``: first and last CME trading day (America/Chicago, 17:00 CT boundary,
  :func:`domain.calendar.trading_day` of the bar start), inclusive. The feature warm-up (20 bars)
  is taken inside the window.
- ``--features``: comma list, default ``return_pct,volatility,volume_ratio``; ``bar_range_pct``
  may be added (Decision Point 5).
- ``--previous MODEL_DIR``: label the new states by Hungarian matching to that model's states
  (:func:`domain.regime.model.match_labels`) instead of the seed's rule, so labels stay stable
  across retrains.
- ``--restarts`` (default 5): EM runs from k-means seeds ``seed .. seed+restarts-1``; the best
  log-likelihood is kept (EM's local optima differ by up to 0.14 nats/bar on the NQ data:
  docs/strategies/regime.md).

Prints progress, then the per-state table: label, mean return %, mean volatility %, within-state
return std %, share of bars and mean run length in bars of the causal (forward-filter argmax)
state path over the training bars, and the model's expected duration ``1/(1 - a_ii)``.

Exit codes: 0 saved; 2 bad arguments or input (missing/unreadable file, unknown feature, too few
bars, period not resamplable, unreadable or mismatched ``--previous`` model).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from domain.calendar import NS, trading_day  # noqa: E402
from domain.instruments import UnknownInstrumentError  # noqa: E402
from domain.messages import Bar  # noqa: E402
from domain.regime.features import FEATURES, check_names, compute_features  # noqa: E402
from domain.regime.filter import ForwardFilter  # noqa: E402
from domain.regime.model import RegimeModel, load, match_labels, save, sha256_file, state_stats, train  # noqa: E402
from infra.replay import load_bar_csv  # noqa: E402

PERIOD_S = 300
"""The regime bars: 5 minutes (seed ``timeframes.regime: "5min"``)."""


class InputError(Exception):
    """Bad input: printed and exit code 2."""


def iso_utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // NS, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")


def resample(bars: Sequence[Any], period_s: int = PERIOD_S) -> list[Bar]:
    """Bars of a period dividing ``period_s`` -> ``period_s`` bars aligned to multiples of
    ``period_s`` since the epoch (as :mod:`domain.bars`): open of the first, max high, min low,
    close of the last, summed volume. A bucket with missing sub-bars still makes a bar (no
    filling, as the live aggregator); empty buckets make none."""
    out: list[Bar] = []
    pns = period_s * NS
    cur: list[Any] = []
    for b in bars:
        if cur and b.start_ns // pns != cur[0].start_ns // pns:
            out.append(_merge(cur, pns, period_s))
            cur = []
        cur.append(b)
    if cur:
        out.append(_merge(cur, pns, period_s))
    return out


def _merge(group: list[Any], pns: int, period_s: int) -> Bar:
    start = group[0].start_ns - group[0].start_ns % pns
    return Bar(group[0].instrument, period_s, start, start + pns, group[0].open, max(b.high for b in group),
               min(b.low for b in group), group[-1].close, sum(b.volume for b in group), ts_ns=start + pns)


def load_bars(paths: Sequence[Path], instrument: str, start: dt.date | None,
              end: dt.date | None) -> tuple[list[Any], list[dict[str, Any]]]:
    """5-minute bars of the files inside ``[start, end]`` and a provenance record per file."""
    bars: list[Any] = []
    files: list[dict[str, Any]] = []
    for p in paths:
        try:
            rows, rejects = load_bar_csv(p, instrument=instrument)
        except FileNotFoundError:
            raise InputError(f"{p}: no such file") from None
        except UnknownInstrumentError as e:
            raise InputError(str(e)) from None
        except ValueError as e:  # BadDataFile
            raise InputError(str(e)) from None
        if not rows:
            raise InputError(f"{p}: no usable bars (rejected: {dict(rejects)})")
        period = rows[0].period_s
        rec = {"path": str(p), "name": p.name, "sha256": sha256_file(p), "rows": len(rows),
               "rejected": dict(rejects), "period_s": period}
        if period != PERIOD_S:
            if PERIOD_S % period:
                raise InputError(f"{p}: {period}-second bars cannot be resampled to {PERIOD_S} s "
                                 f"(the period must divide {PERIOD_S})")
            rows = resample(rows)
            rec["resampled_to_s"] = PERIOD_S
            print(f"  {p.name}: {rec['rows']} bars of {period} s resampled to {len(rows)} bars of {PERIOD_S} s")
        files.append(rec)
        bars.extend(rows)
    bars.sort(key=lambda b: b.start_ns)
    for a, b in zip(bars, bars[1:]):
        if b.start_ns == a.start_ns:
            raise InputError(f"two input bars start at {iso_utc(a.start_ns)} (overlapping --data files)")
    bars = [b for b in bars if (start is None or trading_day(b.start_ns) >= start)
            and (end is None or trading_day(b.start_ns) <= end)]
    return bars, files


def path_stats(states: np.ndarray, n_states: int) -> tuple[np.ndarray, np.ndarray]:
    """Share of bars and mean run length (bars) per state of a state path."""
    share = np.bincount(states, minlength=n_states) / max(len(states), 1)
    runs: list[list[int]] = [[] for _ in range(n_states)]
    if len(states):
        cut = np.flatnonzero(np.diff(states)) + 1
        for seg in np.split(states, cut):
            runs[int(seg[0])].append(len(seg))
    mean_run = np.array([np.mean(r) if r else 0.0 for r in runs])
    return share, mean_run


def state_table(model: RegimeModel, x: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The per-state table (text) and its numbers, states by descending mean return."""
    probs = ForwardFilter(model).run(x)
    states = probs.argmax(axis=1)
    share, mean_run = path_stats(states, model.n_states)
    stats = state_stats(model)
    lines = [f"{'label':<12} {'state':>5} {'return %':>9} {'volatility %':>12} {'ret std %':>9} "
             f"{'share':>6} {'run (bars)':>10} {'model dur':>9}"]
    table = {}
    for label, s in sorted(stats.items(), key=lambda kv: -kv[1]["mean_return"]):
        i = s["state"]
        vol = s["mean_volatility"]
        lines.append(f"{label:<12} {i:>5} {s['mean_return'] * 100:>9.4f} "
                     f"{(vol * 100 if vol is not None else float('nan')):>12.4f} "
                     f"{s['return_std'] * 100:>9.4f} {share[i]:>6.1%} {mean_run[i]:>10.1f} "
                     f"{s['expected_duration_bars']:>9.1f}")
        table[label] = {"state": i, "share_of_bars_filtered": float(share[i]),
                        "mean_run_bars_filtered": float(mean_run[i])}
    return "\n".join(lines), table


def parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Train the HMM regime model (seed 002) on 5-minute bars.")
    ap.add_argument("--data", type=Path, action="append", required=True,
                    help="bar file (.csv/.csv.gz, Yahoo layout); repeat for several files")
    ap.add_argument("--out", type=Path, required=True, help="model directory to write")
    ap.add_argument("--states", type=int, default=5, help="hidden states (default 5)")
    ap.add_argument("--covariance", choices=("diag", "full"), default="diag")
    ap.add_argument("--features", default=",".join(FEATURES),
                    help="comma list (default %(default)s; optional bar_range_pct)")
    ap.add_argument("--previous", type=Path, help="model directory whose labels to carry over")
    ap.add_argument("--start", type=parse_day, help="first trading day (YYYY-MM-DD, inclusive)")
    ap.add_argument("--end", type=parse_day, help="last trading day (YYYY-MM-DD, inclusive)")
    ap.add_argument("--instrument", default="MNQ", help="instrument the rows stand for (default MNQ)")
    ap.add_argument("--seed", type=int, default=0, help="k-means random_state of the first restart")
    ap.add_argument("--restarts", type=int, default=5, help="EM restarts, best kept (default 5)")
    ap.add_argument("--n-iter", type=int, default=200, help="EM iteration cap (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="feature warm-up bars (default 20)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.states < 1 or args.restarts < 1 or args.n_iter < 1:
        ap.error("--states, --restarts and --n-iter must be >= 1")
    if args.start and args.end and args.start > args.end:
        ap.error(f"--start {args.start} is after --end {args.end}")
    try:
        names = check_names([s.strip() for s in args.features.split(",") if s.strip()])
    except ValueError as e:
        ap.error(f"--features: {e}")
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    try:
        previous = None
        if args.previous is not None:
            try:
                previous = load(args.previous)
            except (FileNotFoundError, ValueError) as e:
                raise InputError(f"--previous: {e}") from None
            if previous.features != names or previous.n_states != args.states:
                raise InputError(f"--previous model has features {previous.features} and "
                                 f"{previous.n_states} states; this run: {names}, {args.states}")
        t0 = time.perf_counter()
        print(f"loading {', '.join(str(p) for p in args.data)} as {args.instrument} ...")
        bars, files = load_bars(args.data, args.instrument, args.start, args.end)
        if len(bars) <= args.warmup:
            raise InputError(f"{len(bars)} bars in the window: not enough for a {args.warmup}-bar warm-up")
        days = sorted({trading_day(b.start_ns) for b in bars})
        print(f"  {len(bars)} five-minute bars, {len(days)} trading days {days[0]} .. {days[-1]}")
        try:
            x = compute_features(bars, names, args.warmup)
        except ValueError as e:
            raise InputError(f"features: {e}") from None
        first = bars[args.warmup]
        meta = {"instrument": args.instrument, "bar_period_s": PERIOD_S, "data_files": files,
                "warmup_bars": args.warmup,
                "training_window": {"first_bar_start_utc": iso_utc(first.start_ns),
                                    "last_bar_start_utc": iso_utc(bars[-1].start_ns),
                                    "first_trading_day": str(trading_day(first.start_ns)),
                                    "last_trading_day": str(days[-1]), "trading_days": len(days)},
                "command": "python scripts/train_regime.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        print(f"training a {args.states}-state {args.covariance} GaussianHMM on {x.shape[0]} rows x "
              f"{x.shape[1]} features ({', '.join(names)}), {args.restarts} restart(s) ...")
        try:
            model = train(x, args.states, args.covariance, seed=args.seed, n_iter=args.n_iter, names=names,
                          n_init=args.restarts, metadata=meta)
        except ValueError as e:
            raise InputError(f"training: {e}") from None
        md = model.metadata
        print(f"  log-likelihood {md['log_likelihood_per_bar']:.5f} per bar (z units), BIC {md['bic']:.1f}, "
              f"{md['iterations']} EM iterations, converged {md['converged']} "
              f"({time.perf_counter() - t0:.1f} s)")
        if previous is not None:
            model = match_labels(model, previous)
            print(f"  labels matched to {args.previous} (Hungarian on state means)")
        else:
            print(f"  labels by the seed's rule: {md['label_rule_note'] or md['label_rule']}")
        text, table = state_table(model, x)
        model = replace(model, metadata={**model.metadata, "training_path_stats": table})
        print(text)
        save(model, args.out)
        print(f"saved {args.out} (fingerprint {model.fingerprint[:16]})")
        return 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
