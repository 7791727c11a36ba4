"""Backtest the ML scalper on held-out days through the node, beside its baselines (issue 22 item 3;
docs/strategies/scalper.md, "Evaluation").

Usage::

    python scripts/evaluate_scalper.py                      # the model's own test window, shared 28-session data
    python scripts/evaluate_scalper.py --model data/models/scalper-mes-2min --start 2026-04-17 --end 2026-04-29

Rows (each a full backtest, ``--profile`` rules, both on MES with the same bars):

- ``scalper``: the strategy as configured (config/scalper.yaml, ``min_confidence`` 0.65);
- ``scalper @ --low-gate`` (0.35, about the median confidence of the bundled model): the same model
  with a lower gate, to see what its calls are worth when it trades;
- ``coin flip``: the scalper's order logic with a model that says long or short at random (seed
  7) on as many bars as the low-gate row entered, spread evenly: the same trade count, no skill;
- ``always flat``: no trades ($0 by definition);
- ``EMA 10/30``: the ``ema_cross`` strategy on 2-minute bars.

The days default to the model's test window (``model.json`` ``windows.test``), which training never
saw (purged). Prints net P&L, trades, win rate and the Combine rule check per row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "es_nq_yahoo_2m_5m"


class CoinFlip:
    """A stand-in model: on every ``every``-th bar a random long or short with confidence 1."""

    def __init__(self, meta: dict, every: int, seed: int = 7) -> None:
        self.meta, self.every, self.n = meta, max(1, every), 0
        self.rng = np.random.RandomState(seed)
        self.identifier = f"coin-flip-{every}"

    def predict(self, x):
        self.n += 1
        if self.n % self.every:
            return 0, 0.0
        return int(self.rng.choice([-1, 1])), 1.0


def run(label: str, strategies: list[dict], args, model_override=None) -> dict:
    from loguru import logger
    logger.remove()
    from actors.node import Node
    from actors.tree import MODES
    from config.settings import load_config
    import domain.strategies.ml_scalper as ml
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, args.profile, {"strategies": strategies, "runtime": {
            "data_dir": str(args.data), "run_dir": tmp, "start": args.start, "end": args.end}})
        saved = ml._model
        if model_override is not None:
            ml._model = lambda p: model_override
        try:
            s = Node(cfg, MODES["backtest"], trades_csv=Path(tmp) / "t.csv").run_backtest(both_paths=False)
        finally:
            ml._model = saved
    stats = s.seed_stats()
    st = s.strategies[0].stats if s.strategies else {}
    n, win = stats.trades, stats.win_rate
    return {"row": label, "net": float(s.net_pnl), "fills": s.fills, "trades": n, "win_rate": win,
            "entries": st.get("entries"), "predictions": st.get("predictions"), "rules_ok": s.rules_ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "data" / "models" / "scalper-mes-2min")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--start")
    ap.add_argument("--end")
    ap.add_argument("--profile", default="combine-50k")
    ap.add_argument("--low-gate", type=float, default=0.35, help="min_confidence of the second row")
    args = ap.parse_args(argv)
    meta = json.loads((args.model / "model.json").read_text())
    test = meta.get("windows", {}).get("test", [None, None])
    # the first test day may share bars with the purge gap's labels: start on the next day
    import datetime as dt
    args.start = args.start or (dt.date.fromisoformat(test[0]) + dt.timedelta(days=1)).isoformat()
    args.end = args.end or test[1]
    print(f"held-out days {args.start} .. {args.end} ({args.data.name}), profile {args.profile}, "
          f"model trained on {meta.get('windows', {}).get('train')}")
    base = {"name": "scalper-MES", "kind": "ml_scalper", "instruments": ["MES"],
            "params": {"model": str(args.model)}}
    rows = [run("scalper (0.65, as configured)", [base], args)]
    low = dict(base, params={**base["params"], "min_confidence": args.low_gate,
                             "reverse_confidence": max(args.low_gate, 0.6)})
    rows.append(run(f"scalper @ {args.low_gate}", [low], args))
    target = rows[-1]["entries"] or 0
    every = max(1, int((rows[-1]["predictions"] or 1) / max(1, target)))
    coin = run("coin flip, same trade count", [low], args, CoinFlip(meta, every))
    while every > 1 and (coin["entries"] or 0) < target:  # many random picks fall outside the session
        every = max(1, every * (coin["entries"] or 1) // max(1, target))
        coin = run("coin flip, same trade count", [low], args, CoinFlip(meta, every))
    rows.append(coin)
    rows.append({"row": "always flat", "net": 0.0, "fills": 0, "trades": 0, "win_rate": None, "entries": 0,
                 "predictions": None, "rules_ok": True})
    ema = {"name": "ema-MES", "kind": "ema_cross", "instruments": ["MES"],
           "params": {"fast": 10, "slow": 30, "qty": 1, "bar_s": 120}}
    rows.append(run("EMA 10/30 (2-min)", [ema], args))
    print(f"{'row':32s} {'net $':>10s} {'fills':>6s} {'entries':>8s} {'win rate':>9s} rules")
    for r in rows:
        win = "-" if r["win_rate"] is None else f"{float(r['win_rate']):.1%}"
        print(f"{r['row']:32s} {r['net']:10.2f} {r['fills']:6d} {str(r['entries'] if r['entries'] is not None else '-'):>8s} "
              f"{win:>9s} {'PASS' if r['rules_ok'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
