"""Walk-forward retraining of the ML scalper (seed 003; docs/strategies/scalper.md, "Walk-forward"):
retrain the classifier on each training window, judge it on the next days it never saw, roll on.

Usage::

    python scripts/walk_forward_scalper.py                                   # 28 sessions, --train 10 --test 5
    python scripts/walk_forward_scalper.py --data data/demo --train 1 --test 1 --max-epochs 5

Windows are the research toolkit's (:func:`actors.research.walk_forward.windows`): trading days of
the data (America/Chicago, 17:00 CT roll; the data's first day only warms indicators up, as in
every backtest), train on days ``[i, i + train)``, test on ``[i + train, i + train + test)``, then
``i += test`` (the test windows tile the data; the last one may be shorter). Per window:

1. rows: the bar file's (``--bars``, default ``ES_2min.csv.gz`` of ``--data``, as ``--instrument``)
   features (:func:`domain.scalper.features.batch_features`, computed over the whole file so a
   window's first bars have their look-back) and triple-barrier labels (``--take`` / ``--stop``
   ticks, ``--horizon`` bars); a row belongs to the trading day of its bar's start;
2. training rows: the training days' rows minus the last ``--purge`` bars (default the horizon:
   their labels read prices of the test days; AFML 7.4.1), so the last training bar and the first
   test bar are more than ``purge`` bars apart (checked: :class:`WindowResult` ``gap_bars``);
   the last ``--val-fraction`` of them (purged the same way) validates early stopping; the scaler
   is fitted on the remaining fit rows only (:func:`domain.scalper.model.train_model`), seed
   ``--seed``;
3. out of sample on the test days' rows: accuracy beside always flat and the training window's
   majority label (the baselines of scripts/train_scalper.py; a uniform guess is ~33 %);
4. backtests through the node (:class:`actors.node.Node`, ``--profile``) on the test days with the
   window's model (evaluate_scalper.py's rows): the scalper at ``min_confidence`` 0.65 (as
   configured), at ``--low-gate`` (0.35), a coin flip with about the low gate's entries (within
   -20 / +25 % after at most four re-runs), and EMA
   10/30 on 2-minute bars; "always flat" is $0.

Prints a table per window and the out-of-sample totals, and writes ``windows.csv``,
``walk_forward_scalper.md`` and each window's model (``window<k>/``) to ``--out`` (default
``run/walk_forward_scalper/<UTC time>``). Money in dollars, accuracy as a share of rows.

Exit codes: 0 done; 2 bad input (missing file, too few days or rows for a window).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402

from domain.calendar import trading_day  # noqa: E402
from domain.instruments import get_instrument  # noqa: E402
from domain.scalper.features import FEATURES, bars_frame, batch_features  # noqa: E402
from domain.scalper.labels import purged_time_split, triple_barrier_labels  # noqa: E402
from domain.scalper.model import CLASSES, save_model, train_model  # noqa: E402
from actors.research.sweep import SweepSpecError  # noqa: E402
from actors.research.walk_forward import windows  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "es_nq_yahoo_2m_5m"
CONFIGURED_GATE = 0.65


@dataclass
class WindowResult:
    """One window's figures. Days ISO (America/Chicago); ``*_bar`` indexes into the bar file's
    rows; ``gap_bars`` = first test bar - last training bar (> ``purge``); money in dollars."""

    window: int
    train: str
    test: str
    train_rows: int
    val_rows: int
    test_rows: int
    last_train_bar: int
    first_test_bar: int
    gap_bars: int
    purge: int
    epochs: int
    best_epoch: int
    accuracy: float
    always_flat: float
    majority: float
    majority_label: int
    confident_calls: int
    net_configured: float
    entries_configured: int
    net_low_gate: float
    entries_low_gate: int
    win_rate_low_gate: float | None
    net_coin_flip: float
    entries_coin_flip: int
    net_ema: float
    rules_ok: bool
    seconds: float


def dataset(bars_file: Path, instrument: str, take: int, stop: int, horizon: int) -> dict[str, Any]:
    """Features and labels of every usable bar of ``bars_file``: ``x`` (rows, features), ``y``
    (-1/0/+1), ``bar`` (index of the row's bar in the file), ``day`` (ISO trading day of the bar's
    start). Raises FileNotFoundError, ValueError (too few bars)."""
    from infra.replay import load_bar_csv
    rows, _rejects = load_bar_csv(bars_file, instrument)
    if len(rows) < 100:
        raise ValueError(f"{len(rows)} bars in {bars_file}: too few")
    frame = bars_frame(rows)
    feats = batch_features(frame)
    labels, valid = triple_barrier_labels(frame["high"].to_numpy(float), frame["low"].to_numpy(float),
                                          frame["close"].to_numpy(float),
                                          tick_size=float(get_instrument(instrument).tick_size),
                                          take_ticks=take, stop_ticks=stop, max_bars=horizon)
    usable = np.flatnonzero(feats[list(FEATURES)].notna().all(axis=1).to_numpy() & valid)
    starts = frame["start_ns"].to_numpy()
    return {"x": feats[list(FEATURES)].to_numpy(np.float64)[usable], "y": labels[usable].astype(np.int64),
            "bar": usable, "day": np.array([trading_day(int(starts[i])).isoformat() for i in usable]),
            "bars": len(rows)}


def backtest_rows(model_dir: Path, start: str, end: str, a: argparse.Namespace) -> dict[str, dict]:
    """The node backtests of one test window (module docstring, step 4), as
    scripts/evaluate_scalper.py runs them: ``{row: {net, fills, trades, win_rate, entries, ...}}``."""
    import json

    from evaluate_scalper import CoinFlip, run
    args = SimpleNamespace(data=a.data, profile=a.profile, start=start, end=end)
    base = {"name": "scalper-MES", "kind": "ml_scalper", "instruments": [a.instrument],
            "params": {"model": str(model_dir)}}
    low = dict(base, params={**base["params"], "min_confidence": a.low_gate,
                             "reverse_confidence": max(a.low_gate, 0.6)})
    out = {"configured": run("configured", [base], args), "low": run("low gate", [low], args)}
    target = out["low"]["entries"] or 0
    every = max(1, int((out["low"]["predictions"] or 1) / max(1, target)))
    meta = json.loads((model_dir / "model.json").read_text())
    out["coin"] = run("coin flip", [low], args, CoinFlip(meta, every))
    for _ in range(4):  # random picks outside the session or while a trade is open do not enter: re-thin
        got = out["coin"]["entries"] or 0
        if target == 0 or 0.8 * target <= got <= 1.25 * target:
            break
        nxt = max(1, round(every * max(got, 1) / target))
        if nxt == every:
            break
        every = nxt
        out["coin"] = run("coin flip", [low], args, CoinFlip(meta, every))
    ema = {"name": "ema-MES", "kind": "ema_cross", "instruments": [a.instrument],
           "params": {"fast": 10, "slow": 30, "qty": 1, "bar_s": 120}}
    out["ema"] = run("EMA 10/30", [ema], args)
    return out


def walk_forward(a: argparse.Namespace, out: Path, progress: bool = True) -> tuple[list[WindowResult], dict]:
    """Run every window (module docstring); write the models, ``windows.csv`` and the markdown
    into ``out``. Returns the rows and the totals. Raises SweepSpecError (too few days),
    ValueError (a window without training, validation or test rows)."""
    from loguru import logger
    from tqdm import tqdm

    from infra.feeds import open_replay
    logger.remove()
    t0 = time.perf_counter()
    days = [d.isoformat() for d in open_replay(Path(a.data), (a.instrument,), None, None).trading_days()]
    wins = windows(days, a.train, a.test)
    purge = a.horizon if a.purge is None else a.purge
    ds = dataset(Path(a.data) / a.bars, a.instrument, a.take, a.stop, a.horizon)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[WindowResult] = []
    bar = tqdm(wins, desc="windows", unit="window", file=sys.stderr, disable=not progress)
    for k, w in enumerate(bar, 1):
        tw = time.perf_counter()
        in_train = np.flatnonzero((ds["day"] >= w.train_start) & (ds["day"] <= w.train_end))
        in_test = np.flatnonzero((ds["day"] >= w.test_start) & (ds["day"] <= w.test_end))
        if len(in_train) == 0 or len(in_test) == 0:
            raise ValueError(f"window {k}: no usable rows in the training or the test days")
        first_test_bar = int(ds["bar"][in_test[0]])
        # purge: drop training rows whose labels' horizon reaches the test days' bars
        in_train = in_train[ds["bar"][in_train] < first_test_bar - purge]
        if len(in_train) < 20:
            raise ValueError(f"window {k}: {len(in_train)} training rows after the purge")
        fit_i, val_i = purged_time_split(len(in_train), test_fraction=a.val_fraction, purge=purge)
        fit_idx, val_idx = in_train[fit_i], in_train[val_i]
        epochs = tqdm(total=a.max_epochs, desc=f"window {k} training", unit="epoch", file=sys.stderr,
                      leave=False, disable=not progress)

        def tick(_e: int, tl: float, vl: float, bar=epochs) -> None:
            bar.update(1)
            bar.set_postfix(train=f"{tl:.4f}", val=f"{vl:.4f}")

        model, fit = train_model(ds["x"][fit_idx], ds["y"][fit_idx], ds["x"][val_idx], ds["y"][val_idx],
                                 features=FEATURES, seed=a.seed, max_epochs=a.max_epochs, patience=a.patience,
                                 progress=tick)
        epochs.close()
        probs = model.probabilities(ds["x"][in_test])
        direction = np.asarray(CLASSES)[probs.argmax(axis=1)]
        conf = probs.max(axis=1)
        y = ds["y"][in_test]
        majority = int(np.bincount(ds["y"][fit_idx] + 1, minlength=3).argmax()) - 1
        model.meta.update({
            "instrument": a.instrument, "bar_period_s": 120,
            "labels": {"take_ticks": a.take, "stop_ticks": a.stop, "horizon_bars": a.horizon, "purge_bars": purge},
            "windows": {"train": [w.train_start, w.train_end], "test": [w.test_start, w.test_end]},
            "walk_forward": {"window": k, **fit}})
        model_dir = out / f"window{k}"
        save_model(model, model_dir)
        bt = backtest_rows(model_dir, w.test_start, w.test_end, a)
        low = bt["low"]
        rows.append(WindowResult(
            k, f"{w.train_start}..{w.train_end}", f"{w.test_start}..{w.test_end}", len(fit_idx), len(val_idx),
            len(in_test), int(ds["bar"][in_train[-1]]), first_test_bar, first_test_bar - int(ds["bar"][in_train[-1]]),
            purge, fit["epochs"], fit["best_epoch"], float((direction == y).mean()), float((y == 0).mean()),
            float((y == majority).mean()), majority,
            int(((direction != 0) & (conf >= CONFIGURED_GATE)).sum()),
            bt["configured"]["net"], bt["configured"]["entries"] or 0, low["net"], low["entries"] or 0,
            None if low["win_rate"] is None else float(low["win_rate"]), bt["coin"]["net"],
            bt["coin"]["entries"] or 0, bt["ema"]["net"],
            all(r["rules_ok"] for r in bt.values()), round(time.perf_counter() - tw, 1)))
        bar.set_postfix(acc=f"{rows[-1].accuracy:.3f}", net_low=f"{low['net']:.2f}")
    totals = totals_of(rows)
    totals["wall_s"] = round(time.perf_counter() - t0, 1)
    with open(out / "windows.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        wr.writeheader()
        wr.writerows(asdict(r) for r in rows)
    (out / "walk_forward_scalper.md").write_text(render(rows, totals, a))
    return rows, totals


def totals_of(rows: list[WindowResult]) -> dict[str, Any]:
    """Out-of-sample totals: accuracies weighted by test rows, nets and entries summed (dollars)."""
    n = sum(r.test_rows for r in rows)
    w = lambda f: sum(getattr(r, f) * r.test_rows for r in rows) / n if n else 0.0  # noqa: E731
    return {"windows": len(rows), "test_rows": n, "accuracy": w("accuracy"), "always_flat": w("always_flat"),
            "majority": w("majority"), "confident_calls": sum(r.confident_calls for r in rows),
            "net_configured": round(sum(r.net_configured for r in rows), 2),
            "entries_configured": sum(r.entries_configured for r in rows),
            "net_low_gate": round(sum(r.net_low_gate for r in rows), 2),
            "entries_low_gate": sum(r.entries_low_gate for r in rows),
            "net_coin_flip": round(sum(r.net_coin_flip for r in rows), 2),
            "entries_coin_flip": sum(r.entries_coin_flip for r in rows),
            "net_ema": round(sum(r.net_ema for r in rows), 2), "rules_ok": all(r.rules_ok for r in rows),
            "windows_model_beats_both_baselines": sum(1 for r in rows if r.accuracy > max(r.always_flat, r.majority))}


def render(rows: list[WindowResult], totals: dict, a: argparse.Namespace) -> str:
    """Markdown: the per-window table and the out-of-sample totals."""
    head = ["window", "train", "test", "fit/val/test rows", "epochs (best)", "accuracy", "flat", "majority",
            "net @0.65 (entries)", f"net @{a.low_gate} (entries)", "coin flip (entries)", "EMA 10/30", "s"]
    lines = [f"Walk-forward of the ML scalper: data {a.data} ({a.bars} as {a.instrument}), train {a.train} days, "
             f"test {a.test}, labels {a.take}/{a.stop} ticks over {a.horizon} bars, purge "
             f"{a.horizon if a.purge is None else a.purge} bars, seed {a.seed}, profile {a.profile}; "
             f"{totals['windows']} windows in {totals.get('wall_s', '?')} s", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r.window} | {r.train} | {r.test} | {r.train_rows}/{r.val_rows}/{r.test_rows} | "
                     f"{r.epochs} ({r.best_epoch}) | {r.accuracy:.1%} | {r.always_flat:.1%} | {r.majority:.1%} | "
                     f"{r.net_configured:,.2f} ({r.entries_configured}) | {r.net_low_gate:,.2f} ({r.entries_low_gate}) | "
                     f"{r.net_coin_flip:,.2f} ({r.entries_coin_flip}) | {r.net_ema:,.2f} | {r.seconds} |")
    t = totals
    lines += ["", f"Out of sample, {t['test_rows']} rows over {t['windows']} windows: accuracy {t['accuracy']:.1%} "
              f"(always flat {t['always_flat']:.1%}, training majority {t['majority']:.1%}; the model beats both "
              f"in {t['windows_model_beats_both_baselines']} of {t['windows']} windows); confident calls "
              f"(>= {CONFIGURED_GATE}) {t['confident_calls']}.",
              f"Backtests: as configured ${t['net_configured']:,.2f} ({t['entries_configured']} entries), at "
              f"{a.low_gate} ${t['net_low_gate']:,.2f} ({t['entries_low_gate']} entries), coin flip "
              f"${t['net_coin_flip']:,.2f} ({t['entries_coin_flip']} entries), EMA 10/30 ${t['net_ema']:,.2f}, "
              f"always flat $0.00; Topstep rules {'PASS' if t['rules_ok'] else 'FAIL'} in every backtest."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="data folder (ES_2min.csv.gz ...)")
    ap.add_argument("--bars", default="ES_2min.csv.gz", help="the bar file in --data the model learns from")
    ap.add_argument("--instrument", default="MES")
    ap.add_argument("--train", type=int, default=10, help="training window, trading days")
    ap.add_argument("--test", type=int, default=5, help="test window, trading days")
    ap.add_argument("--take", type=int, default=8, help="take-profit barrier, ticks")
    ap.add_argument("--stop", type=int, default=8, help="stop barrier, ticks")
    ap.add_argument("--horizon", type=int, default=10, help="time-out barrier, bars")
    ap.add_argument("--purge", type=int, help="bars dropped before each held-out block (default: --horizon)")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--low-gate", type=float, default=0.35, help="min_confidence of the second backtest row")
    ap.add_argument("--profile", default="combine-50k")
    ap.add_argument("--out", type=Path)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = a.out or ROOT / "run" / "walk_forward_scalper" / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    try:
        rows, totals = walk_forward(a, out)
    except (SweepSpecError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = (out / "walk_forward_scalper.md").read_text()
    print(text)
    print(f"written: {out}/walk_forward_scalper.md, windows.csv and the window models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
