"""Walk-forward of the HMM regime strategy: retrain the model on each training window, trade the next.

For each window (trading days, America/Chicago; ``actors.research.walk_forward.windows``): the
HMM is trained on the training days' 5-minute bars of the strategy's instrument (built from the
data folder's bars; labels by the seed's rule, then matched to the previous window's model so a
label keeps its meaning: ``domain.regime.model.match_labels``), the strategy is backtested with
that model on the training days (in sample) and on the test days (out of sample), and seed 002's
results table is printed for each, with P&L by regime; the out-of-sample windows are then summed
by regime. docs/strategies/regime.md ("Walk-forward").

Usage::

    python scripts/walk_forward_regime.py --data ../shared/data/es_nq_yahoo_2m_5m --train 10 --test 5
    python scripts/walk_forward_regime.py --config config/regime.yaml --profile combine-150k --states 5

Writes the models and ``walk_forward_regime.md`` to ``--out`` (default run/walk_forward_regime/<UTC
time>). Exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from config.settings import ConfigError, load_config  # noqa: E402
from actors.research.sweep import SweepSpec, SweepSpecError, data_days, overrides_for  # noqa: E402
from actors.research.walk_forward import windows  # noqa: E402


def five_minute_bars(cfg, sym: str, start: str, end: str) -> list:
    """The 5-minute bars of ``sym`` on trading days ``start..end``, aggregated from the data
    folder's bars (each replayed as its four-point path; only closes, highs, lows and volume count)."""
    from domain.bars import aggregate_bars
    from infra.feeds import open_replay
    from infra.replay import bar_to_ticks
    src = open_replay(Path(cfg.runtime.data_dir), (sym,), dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    ticks = [t for b in src.bars(sym) for t in bar_to_ticks(b)]
    return aggregate_bars(ticks, 300)


def backtest(cfg_path: Path, profile: str, point: dict, data: str, start: str, end: str):
    """One backtest of the config with ``point`` (``{"<strategy>.<param>": value}``) overriding it."""
    from loguru import logger

    from actors.node import Node
    from actors.tree import MODES
    logger.remove()
    base = load_config(cfg_path, profile)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(cfg_path, profile, overrides_for(base, point, tmp, data, start, end))
        return Node(cfg, MODES["backtest"], trades_csv=Path(tmp) / "t.csv").run_backtest(both_paths=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config/regime.yaml")
    ap.add_argument("--profile", default="combine-150k")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/es_nq_yahoo_2m_5m"))
    ap.add_argument("--train", type=int, default=10, help="training window, trading days")
    ap.add_argument("--test", type=int, default=5, help="test window, trading days")
    ap.add_argument("--states", type=int, default=5)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    from domain.regime.features import FEATURES, compute_features
    from domain.regime.model import assign_labels, match_labels, save, train
    from domain.trade_stats import render_seed_table
    try:
        cfg = load_config(a.config, a.profile, {"runtime": {"data_dir": a.data}})
        entry = next(e for e in cfg.enabled_strategies() if e.kind == "regime_vwap")
        spec = SweepSpec(params={}, profile=a.profile, data=a.data, config=str(a.config))
        wins = windows(data_days(spec), a.train, a.test)
    except (ConfigError, SweepSpecError, StopIteration, ValueError, FileNotFoundError) as e:
        print(f"error: {e or 'the config has no regime_vwap strategy'}", file=sys.stderr)
        return 2
    out = a.out or ROOT / "run" / "walk_forward_regime" / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    sym = entry.instruments[0]
    key = f"{entry.name}.model"
    previous = None
    lines = [f"Walk-forward of {entry.name} ({a.config}), profile {a.profile}, data {a.data}: train {a.train} "
             f"days, test {a.test}; the HMM ({a.states} states) retrained on each training window", ""]
    by_regime: dict[str, list] = {}
    oos_total = Decimal(0)
    for k, w in enumerate(tqdm(wins, desc="windows", unit="window", file=sys.stderr), 1):
        bars = five_minute_bars(cfg, sym, w.train_start, w.train_end)
        features = compute_features(bars)  # the seed's three features (FEATURES), as the bundled model
        model = assign_labels(train(features, a.states, seed=0, names=FEATURES, n_init=3))
        if previous is not None:
            model = match_labels(model, previous)
        previous = model
        path = save(model, out / f"window{k}")
        try:
            ins = backtest(a.config, a.profile, {key: str(path)}, a.data, w.train_start, w.train_end)
            oos = backtest(a.config, a.profile, {key: str(path)}, a.data, w.test_start, w.test_end)
        except ConfigError as e:  # e.g. a state count that leaves a seed regime without a state
            print(f"error: window {k}: {e}", file=sys.stderr)
            return 2
        oos_total += oos.net_pnl
        for g in oos.seed_stats().by_regime:
            row = by_regime.setdefault(g.label, [0, 0, Decimal(0)])
            row[0] += g.trades
            row[1] += g.wins
            row[2] += g.net
        lines += [f"## Window {k}: train {w.train_start}..{w.train_end} ({len(bars)} five-minute bars), "
                  f"test {w.test_start}..{w.test_end}", "", "In sample:", "```",
                  render_seed_table(ins.seed_stats()), "```", "Out of sample:", "```",
                  render_seed_table(oos.seed_stats()), "```", ""]
    lines += ["## Out of sample, all windows", "", f"Net ${oos_total:,.2f}.", "",
              "| regime | trades | win rate | net $ |", "|---|---|---|---|"]
    for label, (n, won, net) in sorted(by_regime.items(), key=lambda kv: kv[1][2]):
        lines.append(f"| {label} | {n} | {won / n:.0%} | {net:,.2f} |" if n else f"| {label} | 0 | - | 0 |")
    text = "\n".join(lines) + "\n"
    (out / "walk_forward_regime.md").write_text(text)
    print(text)
    print(f"written: {out}/walk_forward_regime.md and the window models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
