"""Train the ML scalper's classifier (seed 003; docs/strategies/scalper.md) and save it.

Usage::

    python scripts/train_scalper.py                                    # ES 2-min bars of the shared data, as MES
    python scripts/train_scalper.py --data ../shared/data/es_nq_yahoo_2m_5m/ES_2min.csv.gz \\
        --take 8 --stop 8 --horizon 10 --test-fraction 0.3 --out data/models/scalper-mes-2min

Steps, all by time (nothing shuffled across time):

1. bars from ``--data`` (a Yahoo-layout bar file, :func:`infra.replay.load_bar_csv`) as
   ``--instrument``; features of every bar (:func:`domain.scalper.features.batch_features`, the
   same numbers the strategy computes one bar at a time); warm-up rows dropped;
2. triple-barrier labels (:func:`domain.scalper.labels.triple_barrier_labels`): take ``--take``
   ticks, stop ``--stop`` ticks, time-out ``--horizon`` bars; bars without a full horizon dropped;
3. the last ``--test-fraction`` of the bars is the out-of-sample test; the ``--purge`` bars
   before it (default the horizon: their labels look into the test) are dropped; the last
   ``--val-fraction`` of what remains validates early stopping, purged the same way;
4. a small MLP (:mod:`domain.scalper.model`) trained on CPU with early stopping, seed ``--seed``
   (the same data and seed give the same model); the scaler is fitted on the training rows only;
5. out of sample: accuracy beside two baselines (always flat; always the training window's most
   common label), the confusion of long / flat / short, calibration by confidence bin, and the
   share of confident calls (``--min-confidence``) whose take-profit came first, beside a coin
   flip between long and short on the same bars (the backtest beside baselines:
   scripts/evaluate_scalper.py);
6. ``--out``: ``weights.pt`` + ``model.json`` with the data hash, windows, label parameters,
   feature list, torch version and every figure above.

With ``--recording DIR`` (a tick recording, infra/tick_recorder.py) the bars are made from the
recorded trades at ``--bar-s`` seconds (the seed's 1 s; :func:`domain.bars.aggregate_bars`, the
bar builder's aggregator) and the recorded quotes add the quote features
(:func:`domain.scalper.quote_features.batch_quote_features`): the model's feature list is then
``FEATURES + QUOTE_FEATURES`` and the strategy reads quotes. Rows without a quote before their bar's
end are dropped.

Exit codes: 0 saved; 2 bad input (missing file, too few bars).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from domain.calendar import trading_day  # noqa: E402
from domain.instruments import get_instrument  # noqa: E402
from domain.regime.model import sha256_file  # noqa: E402
from domain.messages import QuoteTick, TradeTick  # noqa: E402
from domain.scalper.features import FEATURES, bars_frame, batch_features  # noqa: E402
from domain.scalper.quote_features import QUOTE_FEATURES, batch_quote_features, quotes_frame  # noqa: E402
from domain.scalper.labels import purged_time_split, triple_barrier_labels  # noqa: E402
from domain.scalper.model import CLASSES, save_model, train_model  # noqa: E402
from infra.replay import load_bar_csv  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "es_nq_yahoo_2m_5m" / "ES_2min.csv.gz"


def calibration(conf: np.ndarray, correct: np.ndarray, edges=(0.34, 0.45, 0.55, 0.65, 0.75, 1.0)) -> list[dict]:
    """Per confidence bin: rows, mean confidence, accuracy (a calibrated model has them equal)."""
    out = []
    lo = 0.0
    for hi in edges:
        sel = (conf >= lo) & (conf < hi) if hi < 1.0 else (conf >= lo)
        if sel.any():
            out.append({"bin": f"{lo:.2f}-{hi:.2f}", "rows": int(sel.sum()), "mean_confidence": float(conf[sel].mean()),
                        "accuracy": float(correct[sel].mean())})
        lo = hi
    return out


def confident_precision(direction: np.ndarray, conf: np.ndarray, y: np.ndarray, min_conf: float) -> dict:
    """Of the bars where the model would trade (long or short, confidence >= ``min_conf``), the
    share whose label agrees (take-profit first), disagrees (the opposite side's take first) or
    times out / is flat."""
    trade = (direction != 0) & (conf >= min_conf)
    n = int(trade.sum())
    if n == 0:
        return {"trades": 0}
    right = int(((direction == y) & trade).sum())
    wrong = int(((direction == -y) & trade & (y != 0)).sum())
    return {"trades": n, "right": right, "wrong": wrong, "neither": n - right - wrong, "precision": right / n}


def _recorded(folder: Path, instrument: str, bar_s: int) -> tuple[list, dict, list, list[Path]]:
    """Bars of ``bar_s`` seconds from a recording's trades, its quotes and the files read, every
    recorded day of ``instrument`` (:class:`infra.tick_recorder.RecordedSource`)."""
    from domain.bars import aggregate_bars
    from infra.tick_recorder import RecordedSource
    src = RecordedSource(folder, (instrument,), warmup_days=0, quotes=True)
    bars: list = []
    quotes: list = []
    for day in src.trading_days():
        ticks = src.day_ticks(day)
        bars += aggregate_bars([t for t in ticks if isinstance(t, TradeTick)], bar_s)
        quotes += [t for t in ticks if isinstance(t, QuoteTick)]
    files = sorted(p for day_files in src.files.values() for (s, _k), p in day_files.items() if s == instrument)
    return bars, dict(src.rejects), quotes, files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--instrument", default="MES")
    ap.add_argument("--take", type=int, default=8, help="take-profit barrier, ticks")
    ap.add_argument("--stop", type=int, default=8, help="stop barrier, ticks")
    ap.add_argument("--horizon", type=int, default=10, help="time-out barrier, bars")
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--purge", type=int, help="bars dropped before each held-out block (default: --horizon)")
    ap.add_argument("--min-confidence", type=float, default=0.65)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "models" / "scalper-mes-2min")
    ap.add_argument("--recording", type=Path, help="a tick recording folder instead of --data: bars of --bar-s "
                                                   "seconds from its trades, quote features from its quotes")
    ap.add_argument("--bar-s", type=int, default=1, help="bar period with --recording, seconds (default 1)")
    args = ap.parse_args(argv)
    purge = args.horizon if args.purge is None else args.purge
    source = args.recording or args.data
    if not (source.is_dir() if args.recording else source.is_file()):
        print(f"error: {source} not found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    spec = get_instrument(args.instrument)
    features = FEATURES
    if args.recording:
        rows, rejects, quotes, files = _recorded(args.recording, args.instrument, args.bar_s)
        features = FEATURES + QUOTE_FEATURES
    else:
        rows, rejects = load_bar_csv(args.data, args.instrument)
        files = [args.data]
    if len(rows) < 500:
        print(f"error: {len(rows)} bars in {source}; at least 500 needed", file=sys.stderr)
        return 2
    frame = bars_frame(rows)
    feats = batch_features(frame)
    if args.recording:
        feats = feats.join(batch_quote_features(frame, quotes_frame(quotes), spec.tick_size))
    labels, valid = triple_barrier_labels(frame["high"].to_numpy(float), frame["low"].to_numpy(float),
                                          frame["close"].to_numpy(float), tick_size=float(spec.tick_size),
                                          take_ticks=args.take, stop_ticks=args.stop, max_bars=args.horizon)
    usable = np.flatnonzero(feats[list(features)].notna().all(axis=1).to_numpy() & valid)
    x_all = feats[list(features)].to_numpy(np.float64)[usable]
    y_all = labels[usable].astype(np.int64)
    train_idx, test_idx = purged_time_split(len(usable), test_fraction=args.test_fraction, purge=purge)
    fit_idx, val_idx = purged_time_split(len(train_idx), test_fraction=args.val_fraction, purge=purge)
    fit_idx, val_idx = train_idx[fit_idx], train_idx[val_idx]
    day = lambda i: trading_day(int(frame["start_ns"].iloc[usable[i]])).isoformat()  # noqa: E731
    windows = {"train": [day(fit_idx[0]), day(fit_idx[-1])], "validation": [day(val_idx[0]), day(val_idx[-1])],
               "test": [day(test_idx[0]), day(test_idx[-1])]}
    print(f"{len(rows)} bars ({dict(rejects) or 'none rejected'}), {len(usable)} usable; labels "
          f"long {int((y_all == 1).sum())} flat {int((y_all == 0).sum())} short {int((y_all == -1).sum())}")
    print(f"train {len(fit_idx)} rows {windows['train']}, validation {len(val_idx)} {windows['validation']}, "
          f"test {len(test_idx)} {windows['test']} (purge {purge} bars before each held-out block)")
    from tqdm import tqdm
    bar = tqdm(total=args.max_epochs, desc="training", unit="epoch")

    def progress(epoch: int, train_loss: float, val_loss: float) -> None:
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")

    model, fit = train_model(x_all[fit_idx], y_all[fit_idx], x_all[val_idx], y_all[val_idx], features=features,
                             seed=args.seed, max_epochs=args.max_epochs, patience=args.patience, progress=progress)
    bar.close()
    probs = model.probabilities(x_all[test_idx])
    direction = np.asarray(CLASSES)[probs.argmax(axis=1)]
    conf = probs.max(axis=1)
    y = y_all[test_idx]
    rng = np.random.RandomState(args.seed)
    majority = int(np.bincount(y_all[fit_idx] + 1).argmax()) - 1  # the training window's most common label
    trades = (direction != 0) & (conf >= args.min_confidence)
    coin = np.zeros_like(y)
    coin[trades] = rng.choice([-1, 1], size=int(trades.sum()))
    metrics = {
        "test_rows": int(len(y)), "accuracy": float((direction == y).mean()),
        "baseline_always_flat_accuracy": float((y == 0).mean()),
        "baseline_majority_accuracy": float((y == majority).mean()),
        "confusion": {f"label {a:+d}": {f"pred {b:+d}": int(((y == a) & (direction == b)).sum()) for b in CLASSES}
                      for a in CLASSES},
        "calibration": calibration(conf, direction == y),
        "confident_trades": confident_precision(direction, conf, y, args.min_confidence),
        "coin_flip_same_trades": confident_precision(coin, np.where(trades, 1.0, 0.0), y, 0.5),
        **fit,
    }
    model.meta.update({
        "instrument": args.instrument, "bar_period_s": int(frame["end_ns"].iloc[0] - frame["start_ns"].iloc[0]) // 1_000_000_000,
        "labels": {"take_ticks": args.take, "stop_ticks": args.stop, "horizon_bars": args.horizon, "purge_bars": purge},
        "data": {"file": source.name, "sha256": {f.name: sha256_file(f) for f in files} if args.recording
                 else sha256_file(args.data), "bars": len(rows)},
        "windows": windows, "metrics": metrics, "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    ident = save_model(model, args.out)
    ct = metrics["confident_trades"]
    cf = metrics["coin_flip_same_trades"]
    print(f"out of sample: accuracy {metrics['accuracy']:.3f} (always flat {metrics['baseline_always_flat_accuracy']:.3f}, "
          f"the training majority {majority:+d} {metrics['baseline_majority_accuracy']:.3f}); "
          f"confident calls (>= {args.min_confidence}): {ct.get('trades', 0)}, take-profit first "
          f"{ct.get('precision', 0):.3f} vs coin flip {cf.get('precision', 0):.3f}")
    for c in metrics["calibration"]:
        print(f"  confidence {c['bin']}: {c['rows']:6d} rows, mean confidence {c['mean_confidence']:.3f}, "
              f"accuracy {c['accuracy']:.3f}")
    print(f"saved {args.out} (id {ident[:12]}) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
