"""The ML scalper (domain/strategies/ml_scalper.py, domain/scalper/model.py; docs/strategies/scalper.md):
model save / load and its refusals, training reproducibility, every signal branch of seed 003's
generator on a scripted model, the entry's bracket, the time-out and signal exits, a reversal that
opens the new side only once the close filled, and a backtest of the bundled model."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from domain.calendar import SessionCalendar
from domain.handler import RISK, CounterIds
from domain.messages import (Bar, Bracket, CancelOrder, Fill, OrderCancelled, OrderIntent, OrderType, RiskState, RiskStateChanged,
                             Side)
from domain.scalper.features import FEATURES
from domain.scalper.model import ModelMismatch, load_model, save_model, train_model
from domain.strategies.ml_scalper import MlScalperParams, MlScalperStrategy

ROOT = Path(__file__).resolve().parent.parent
ET = ZoneInfo("America/New_York")
NS = 1_000_000_000
D = Decimal


def _tiny_model(tmp_path: Path, seed: int = 3):
    rng = np.random.RandomState(0)
    x = rng.normal(size=(300, len(FEATURES)))
    y = np.sign(x[:, 0]).astype(int)  # a learnable rule: the sign of the first feature
    model, fit = train_model(x[:200], y[:200], x[200:], y[200:], features=FEATURES, max_epochs=200, patience=20,
                             lr=1e-2, seed=seed)
    model.meta["labels"] = {"take_ticks": 8, "stop_ticks": 6, "horizon_bars": 3}
    return model, fit, x


def test_save_load_round_trip_and_refusals(tmp_path):
    model, fit, x = _tiny_model(tmp_path)
    ident = save_model(model, tmp_path / "m")
    back = load_model(tmp_path / "m", FEATURES)
    assert back.identifier == ident and back.predict(x[0]) == model.predict(x[0])
    np.testing.assert_allclose(back.probabilities(x[:20]), model.probabilities(x[:20]), rtol=1e-6)
    with pytest.raises(ModelMismatch, match="features"):
        load_model(tmp_path / "m", FEATURES[:-1])
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    for key, value, match in (("torch", "1.13.0", "torch"), ("format_version", 99, "format")):
        bad = dict(meta, **{key: value})
        (tmp_path / "m" / "model.json").write_text(json.dumps(bad))
        with pytest.raises(ModelMismatch, match=match):
            load_model(tmp_path / "m", FEATURES)


def test_training_is_reproducible_with_a_seed(tmp_path):
    a, _, x = _tiny_model(tmp_path, seed=5)
    b, _, _ = _tiny_model(tmp_path, seed=5)
    np.testing.assert_array_equal(a.probabilities(x[:50]), b.probabilities(x[:50]))
    assert (a.probabilities(x[200:]).argmax(axis=1) == np.sign(x[200:, 0]).astype(int) + 1).mean() > 0.8


class Scripted:
    """A stand-in model: ``predict`` returns the next scripted ``(direction, confidence)``."""

    def __init__(self) -> None:
        self.next: tuple[int, float] = (0, 0.5)
        self.meta = {"labels": {"take_ticks": 8, "stop_ticks": 6, "horizon_bars": 3}, "instrument": "MES"}
        self.identifier = "scripted"
        self.features = FEATURES

    def predict(self, x):
        return self.next


def _ts(h: int, m: int) -> int:
    return int(dt.datetime(2026, 4, 8, h, m, tzinfo=ET).timestamp()) * NS


def _bar(t: int, c: float = 5000.0) -> Bar:
    return Bar("MES", 120, t, t + 120 * NS, D(str(c)), D(str(c + 1)), D(str(c - 1)), D(str(c)), 100, t + 120 * NS)


def _strategy(**params) -> tuple[MlScalperStrategy, Scripted, int]:
    model = Scripted()
    s = MlScalperStrategy("MES", "scalper-MES", MlScalperParams(**params), CounterIds(), SessionCalendar(), model)
    t = _ts(9, 0)
    for _ in range(25):  # warm the features up (20 bars), before the session window
        s.handle(_bar(t))
        t += 120 * NS
    return s, model, _ts(10, 0)


def _intents(out) -> list[OrderIntent]:
    return [m for d, m in out if d == RISK and isinstance(m, OrderIntent)]


def _fill(i: OrderIntent, price: str, tid: str, ts: int) -> Fill:
    return Fill(i.client_order_id, i.strategy_id, tid, i.instrument, i.side, i.qty, D(price), D("0.37"), 0, ts)


def test_entries_need_the_confidence_the_session_and_an_active_risk():
    s, model, t = _strategy()
    model.next = (1, 0.64)
    assert s.handle(_bar(t)) == []                              # below min_confidence
    model.next = (1, 0.70)
    s.handle(RiskStateChanged(RiskState.REDUCING, "test", t))
    assert s.handle(_bar(t + 120 * NS)) == []                   # risk forbids new positions
    s.handle(RiskStateChanged(RiskState.ACTIVE, "test", t))
    late, _, _ = _strategy()
    late_model = late.model
    late_model.next = (-1, 0.9)
    assert late.handle(_bar(_ts(16, 2))) == []                  # after last_entry_et
    entry, = _intents(s.handle(_bar(t + 240 * NS)))
    assert (entry.side, entry.order_type, entry.bracket) == (Side.BUY, OrderType.MARKET, Bracket(6, 8))
    assert entry.purpose.startswith("scalper-entry; signal=LONG_ENTRY; conf=0.70")
    assert s.counters["long_entry"] == 1
    short, _, _ = _strategy(brackets="managed")
    short.model.next = (-1, 0.8)
    sell, = _intents(short.handle(_bar(t)))
    assert sell.side is Side.SELL and sell.bracket is None      # managed: stop and target after the fill
    stop, target = _intents(short.handle(_fill(sell, "5000.00", "T1", t + 121 * NS)))
    assert (stop.stop_price, target.limit_price) == (D("5001.50"), D("4998.00"))


def _long(s, model, t):
    model.next = (1, 0.7)
    entry, = _intents(s.handle(_bar(t)))
    s.handle(_fill(entry, "5000.00", "T1", t + 121 * NS))
    return entry


def test_exit_on_an_opposite_signal_cancels_the_legs_first():
    s, model, t = _strategy(brackets="managed")
    entry = _long(s, model, t)
    stop_id, target_id = s.trade["stop"], s.trade["target"]
    model.next = (-1, 0.70)                                     # opposite, not enough to reverse
    out = s.handle(_bar(t + 240 * NS))
    assert [type(m).__name__ for _, m in out] == ["CancelOrder", "CancelOrder", "OrderIntent"]
    assert {m.client_order_id for _, m in out[:2]} == {stop_id, target_id}
    exit_ = out[2][1]
    assert (exit_.side, exit_.reduce_only, exit_.order_type) == (Side.SELL, True, OrderType.MARKET)
    assert s.counters["exit_long"] == 1
    s.handle(_fill(exit_, "5001.00", "T2", t + 241 * NS))
    assert s.trade is not None                                  # until both legs' cancels are confirmed
    for leg in (stop_id, target_id):
        s.handle(OrderCancelled(leg, "scalper-MES", t + 242 * NS, "exit"))
    assert s.trade is None and s.counters["wins"] == 1 and entry.client_order_id


def test_a_reversal_opens_the_new_side_when_the_close_fills():
    from domain.orders import bracket_leg_ids
    s, model, t = _strategy()
    entry = _long(s, model, t)
    model.next = (-1, 0.80)
    out = s.handle(_bar(t + 240 * NS))
    close, = _intents(out)
    assert close.reduce_only and close.side is Side.SELL and s.counters["reverse_to_short"] == 1
    assert not _intents(s.handle(_bar(t + 360 * NS)))           # no new entry while the close works
    out = s.handle(_fill(close, "4999.00", "T2", t + 361 * NS))
    stop_leg = bracket_leg_ids(entry.client_order_id)[0]
    assert [(type(m), m.client_order_id) for _, m in out] == [(CancelOrder, stop_leg)]  # the kept stop goes ...
    new, = _intents(s.handle(OrderCancelled(stop_leg, "scalper-MES", t + 362 * NS, "oco: sibling filled")))
    assert (new.side, new.bracket, new.reduce_only) == (Side.SELL, Bracket(6, 8), False)
    assert "REVERSE_TO_SHORT" in new.purpose


def test_the_time_out_barrier_closes_after_the_models_horizon():
    s, model, t = _strategy()
    _long(s, model, t)
    model.next = (0, 0.9)
    assert _intents(s.handle(_bar(t + 240 * NS))) == [] and _intents(s.handle(_bar(t + 360 * NS))) == []
    out = s.handle(_bar(t + 480 * NS))                          # the 3rd bar held: max_hold_bars = horizon 3
    legs = [m for _, m in out if isinstance(m, CancelOrder)]
    exit_, = _intents(out)
    assert len(legs) == 2 and exit_.reduce_only and "time-out after 3 bars" in exit_.purpose
    assert s.counters["timeouts"] == 1


def test_snapshot_restore_keeps_the_trade_and_a_pending_reversal():
    s, model, t = _strategy()
    _long(s, model, t)
    model.next = (-1, 0.8)
    s.handle(_bar(t + 240 * NS))
    back = MlScalperStrategy("MES", "scalper-MES", MlScalperParams(), CounterIds(), SessionCalendar(), model)
    back.restore(json.loads(json.dumps(s.snapshot())))
    assert back.reverse_to == -1 and back.trade == s.trade and back.book.qty == 1


def test_a_backtest_of_the_bundled_model_runs_through_the_node(tmp_path):
    from actors.node import Node
    from actors.tree import MODES
    from config.settings import load_config
    cfg = load_config(ROOT / "config" / "scalper.yaml", "combine-50k",
                      {"runtime": {"data_dir": str(ROOT / "data" / "demo"), "run_dir": str(tmp_path)}})
    summary = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv").run_backtest(both_paths=False)
    stats = summary.strategies[0].stats
    assert stats["predictions"] > 1000 and summary.rules_ok
    assert stats["entries"] == stats["long_entry"] + stats["short_entry"] + stats["reverse_to_long"] + stats["reverse_to_short"]


def test_kill9_with_a_bracket_working_then_resume_ends_protected_and_flat(redis_url, tmp_path):
    """kill -9 of a paper session while the scalper holds a position with its native bracket legs
    working; the restart (same Redis) keeps them: every entry is closed by exactly one exit, no
    leg ever opens a position, nothing is left working or open at the end."""
    import uuid

    from tests.live_support import assert_each_entry_closed_once, kill9_with_bracket_then_resume
    config = tmp_path / "scalper.yaml"
    config.write_text("strategies:\n  - name: scalper-MES\n    kind: ml_scalper\n    instruments: [MES]\n"
                      "    params: {min_confidence: 0.3, reverse_confidence: 0.6}\n")
    store = kill9_with_bracket_then_resume(config, "combine-50k", redis_url, tmp_path, f"test:sck:{uuid.uuid4().hex[:6]}")
    assert_each_entry_closed_once(store, "scalper-entry")


def test_a_retrained_model_reaches_the_strategy_without_a_restart(tmp_path):
    """The node's heartbeat check (``Node.check_models``) sends a model whose files changed to its
    strategy (``ModelUpdate``); the strategy uses it from then on. A model that cannot be loaded
    (a half-written or mismatched file) is logged and nothing is sent; a model with other
    features is refused by the strategy itself."""
    import shutil

    from actors.node import Node
    from actors.tree import MODES
    from config.settings import load_config
    from domain.messages import Alert, ModelUpdate
    folder = tmp_path / "model"
    shutil.copytree(ROOT / "data" / "models" / "scalper-mes-2min", folder)
    cfg = load_config(None, "combine-50k", {
        "strategies": [{"name": "scalper-MES", "kind": "ml_scalper", "instruments": ["MES"],
                        "params": {"model": str(folder)}}],
        "runtime": {"data_dir": str(ROOT / "data" / "demo"), "run_dir": str(tmp_path)}})
    node = Node(cfg, MODES["backtest"], trades_csv=tmp_path / "t.csv")
    sent: list = []
    node.directory.tell = lambda dest, msg: sent.append((dest, msg))
    node.check_models()
    assert sent == []                                           # the first check records the model in use
    new, _, _ = _tiny_model(tmp_path, seed=11)
    ident = save_model(new, folder)
    node.check_models()
    [(dest, update)] = sent
    assert dest == "scalper-MES" and isinstance(update, ModelUpdate) and update.identifier == ident
    node.check_models()
    assert len(sent) == 1                                       # unchanged since: nothing more
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "features": ["x"], "note": "broken"}))
    node.check_models()
    assert len(sent) == 1                                       # not loadable: the strategy keeps its model
    s, _, t = _strategy()
    out = s.handle(ModelUpdate("scalper-MES", update.model, ident, t))
    assert s.model is update.model and s.counters["reloads"] == 1 and isinstance(out[0][1], Alert)
    class Other:
        features = ("x",)
        identifier = "other"
    refused = s.handle(ModelUpdate("scalper-MES", Other(), "other", t))
    assert s.model is update.model and "refused" in refused[0][1].text
