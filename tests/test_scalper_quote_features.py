"""Quote features of the ML scalper (issue 22, item 1): incremental = batch on real MBP-1 quotes,
the bar-end rule, and the strategy reading them from recorded quotes.

Data: tests/data/databento_es/ (Databento GLBX.MDP3 ESU4 trades and MBP-1 top of book of
2024-07-01 23:58-00:02 UTC; provenance in its README.md).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from domain.bars import aggregate_bars
from domain.messages import Bar, QuoteTick
from domain.scalper.features import bars_frame
from domain.scalper.quote_features import (QUOTE_FEATURES, QuoteFeatureBuilder, batch_quote_features, quote_row,
                                           quotes_frame)
from infra.replay import load_databento_quotes, load_databento_trades

DATA = Path(__file__).parent / "data" / "databento_es"
TICK = Decimal("0.25")


def _real():
    trades, rejects = load_databento_trades(DATA / "ES_trades.csv.gz")
    quotes, qrejects = load_databento_quotes(DATA / "ES_mbp-1.csv.gz")
    assert not rejects and len(trades) > 100 and len(quotes) > 2000
    return aggregate_bars(trades, 1), quotes  # 1-second bars, the seed's period


def test_incremental_equals_batch_on_real_quotes_and_one_second_bars():
    bars, quotes = _real()
    builder = QuoteFeatureBuilder(TICK)
    rows, qi = [], 0
    for bar in bars:  # as the node delivers them: the quotes before the bar closes, then the bar
        while qi < len(quotes) and quotes[qi].ts_ns < bar.end_ns + 250_000_000:  # quotes run ahead
            builder.on_quote(quotes[qi])
            qi += 1
        rows.append(builder.at_bar(bar))
    batch = batch_quote_features(bars_frame(bars), quotes_frame(quotes), TICK)
    assert list(batch.columns) == list(QUOTE_FEATURES) and len(batch) == len(bars) > 40
    for i, row in enumerate(rows):
        if row is None:
            assert batch.iloc[i].isna().all()
        else:
            np.testing.assert_array_equal(row, batch.iloc[i].to_numpy())
    got = np.array([r for r in rows if r is not None])
    assert len(got) > 40 and (got[:, 0] >= 1.0).all() and (np.abs(got[:, 1]) <= 1.0).all()
    # the row is the last quote strictly before the bar's end
    bar = bars[10]
    last = max((q for q in quotes if q.ts_ns < bar.end_ns), key=lambda q: (q.ts_ns, q.seq))
    assert tuple(rows[10]) == quote_row(last.bid, last.ask, last.bid_size, last.ask_size, TICK)


def _record(root: Path) -> tuple[list, list]:
    """The sample's trades and quotes through the tick recorder into ``root``; returns both."""
    from infra.tick_recorder import TickRecorder
    trades, _ = load_databento_trades(DATA / "ES_trades.csv.gz")
    quotes, _ = load_databento_quotes(DATA / "ES_mbp-1.csv.gz")
    recorder = TickRecorder(root)
    for t in sorted(trades + quotes, key=lambda t: (t.ts_ns, t.seq)):
        recorder.handle(t)
    recorder.close()
    return trades, quotes


def _bar(start_s: int) -> Bar:
    ns = 1_000_000_000
    p = Decimal("5000")
    return Bar("MES", 1, start_s * ns, (start_s + 1) * ns, p, p, p, p, 1, (start_s + 1) * ns)


def _quote(ts_ns: int, bid: str, ask: str, bs: int, as_: int) -> QuoteTick:
    return QuoteTick("MES", ts_ns, Decimal(bid), Decimal(ask), bs, as_)


def test_a_quote_at_the_bar_end_belongs_to_the_next_bar_and_none_before_the_first_quote():
    ns = 1_000_000_000
    b = QuoteFeatureBuilder(TICK)
    assert b.at_bar(_bar(0)) is None  # no quote yet: no row, no decision
    b.on_quote(_quote(1 * ns + 5, "5000.00", "5000.25", 30, 10))
    b.on_quote(_quote(3 * ns, "5000.00", "5000.75", 0, 0))  # at bar 2's end: bar 3's
    assert tuple(b.at_bar(_bar(1))) == (1.0, 0.5)
    assert tuple(b.at_bar(_bar(2))) == (1.0, 0.5)  # the book stands until the next quote
    restored = QuoteFeatureBuilder.restore(TICK, b.snapshot())
    assert tuple(restored.at_bar(_bar(3))) == tuple(b.at_bar(_bar(3))) == (3.0, 0.0)
    with pytest.raises(ValueError, match="time order"):
        batch_quote_features(bars_frame([_bar(1)]), quotes_frame([_quote(2 * ns, "1", "2", 1, 1),
                                                                  _quote(ns, "1", "2", 1, 1)]), TICK)


def test_the_scalper_reads_recorded_quotes_when_its_model_was_trained_with_them(tmp_path):
    """A recording of real trades and quotes replayed through the node to a scalper on 1-second
    bars whose model lists the quote features: every bar with a full bar-feature row and a quote
    before its end is predicted on, no other. The model is trained on the recording's own rows for
    two epochs: the test is about the path (quotes replayed, routed to the strategy, joined at
    each bar's close), not the model's skill."""
    from actors.node import Node
    from actors.tree import MODES
    from config.settings import load_config
    from domain.scalper.features import FEATURES, batch_features
    from domain.scalper.model import save_model, train_model
    from domain.strategies.ml_scalper import _load

    trades, quotes = _record(tmp_path / "ticks")

    bars = aggregate_bars(trades, 1)
    frame = bars_frame(bars)
    feats = batch_features(frame).join(batch_quote_features(frame, quotes_frame(quotes), TICK))
    full = feats.notna().all(axis=1).to_numpy()
    x = feats[list(FEATURES + QUOTE_FEATURES)].to_numpy(np.float64)[full]
    y = np.resize(np.array([-1, 0, 1]), len(x))
    model, _ = train_model(x, y, x, y, features=FEATURES + QUOTE_FEATURES, max_epochs=2, seed=1)
    model.meta.update({"instrument": "MES", "bar_period_s": 1,
                       "labels": {"take_ticks": 4, "stop_ticks": 4, "horizon_bars": 5}})
    save_model(model, tmp_path / "model")
    assert _load(str(tmp_path / "model"), 0).features == FEATURES + QUOTE_FEATURES

    cfg = load_config(None, "combine-50k", {
        "strategies": [{"name": "scalper-MES", "kind": "ml_scalper", "instruments": ["MES"],
                        "params": {"model": str(tmp_path / "model"), "bar_s": 1}}],
        "runtime": {"data_dir": str(tmp_path / "ticks"), "run_dir": str(tmp_path / "run")}})
    node = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "trades.csv")
    assert node.topics()["quotes.MES"] == ("scalper-MES",)
    summary = node.run_backtest(both_paths=False)
    stats = next(r for r in summary.strategies if r.name == "scalper-MES").stats
    assert stats["predictions"] == int(full[:-1].sum()) > 10  # the last second's bar never closes


def test_training_reads_a_recording_as_one_second_bars_and_refuses_too_few(tmp_path):
    """``train_scalper.py --recording``: bars of --bar-s seconds from the recorded prints (the sample
    holds 44 seconds with prints: too few to train on, said plainly, exit code 2)."""
    import subprocess
    import sys
    _record(tmp_path / "ticks")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "scripts/train_scalper.py"), "--recording", str(tmp_path / "ticks"),
                          "--out", str(tmp_path / "model")], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 2 and "44 bars in" in out.stderr and "at least 500 needed" in out.stderr
    assert not (tmp_path / "model").exists()
