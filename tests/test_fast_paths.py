"""The backtest's shortcuts give exactly what the plain computation gives (issue 19, item 1).

Each shortcut skips work whose result it can prove unchanged; these tests run the plain
computation beside it on real data and on the edge cases (DST hours, breaches, off-grid prints):

- risk: the calendar rules only at the next day / sub-session / flatten boundary, and a print
  whose unrealized P&L (integer cents) stays inside the band where no rule breaches and no
  equity figure moves returns at once (domain/risk.py ``RiskManager._advance``, ``_arm_band``);
  the intents of one batch read the account once (``_Batch``, the sweep guard's
  ``domain.risk_rules.SweepBook``);
- bar files: an hour without a DST transition converted by its cached UTC offset
  (infra/replay.py ``_bar_timestamp``);
- positions: qty, cost and the last mark's unrealized P&L kept instead of summed per print
  (domain/portfolio.py ``Position``);
- the feed validator: the plausible range and tick grid checked inline, the band of the last
  accepted price kept (domain/validation.py ``MarketDataValidator._check_trade``);
- the trading day: the window between two 17:00 CT instants kept (domain/calendar.py
  ``trading_day``);
- the dispatcher: a timestamp's messages handed straight to their handlers, answers queued
  behind them (actors/dispatcher.py ``Dispatcher.run``);
- bar builders: a clock tick before the soonest open bar's end closes nothing (domain/bars.py
  ``BarAggregator.on_time``);
- the venue: prints kept while no order works, the latest per instrument handed over before its
  next message (infra/venues/handler.py ``IdlePrintsDeferred``);
- messages: each field stored through its slot (domain/messages.py ``slot_init``);
- a float price to the nearest tick divided in floats away from ties (domain/instruments.py
  ``InstrumentSpec.round_to_tick``).

The feed's bulk stream has its own file, tests/test_bulk_replay.py.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import random
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from actors.node import Node
from actors.tree import MODES
from config.settings import load_config
from domain.instruments import get_instrument
from domain.messages import TradeTick
from domain.portfolio import Position
from domain.risk import RiskManager
from domain.validation import BAND_REANCHOR_PRINTS, MarketDataValidator, outside_band, price_problem
from infra.replay import _bar_timestamp, local_to_ns

ROOT = Path(__file__).resolve().parents[1]
SPIKE = Path(__file__).parent / "data" / "spike_2026-03-23"


class PlainRisk(RiskManager):
    """Risk without the shortcuts: the calendar on every later event time, every rule on every
    mark, every intent against the account read afresh."""

    def _advance(self, ts: int):
        if ts <= self.now_ns:
            return []
        self.now_ns = ts
        return self._on_time()

    def _arm_band(self):
        self._band = None  # every print through _check_account

    def _on_intent(self, intent):
        self._batch = None
        return super()._on_intent(intent)


def test_risk_on_random_prints_and_fills_answers_and_measures_as_the_plain_risk():
    """Risk with its print shortcuts (the calendar window, the band in integer
    cents) against ``PlainRisk``, message by message: 30,000 random prints of MES and MNQ with
    fills now and then, under caps tight enough to breach. Every answer, the equity figures
    (peak, drawdown, MLL headroom) and the ledger are the same after every message."""
    import datetime as _dt

    from domain.calendar import CT, SessionCalendar, dt_to_ns
    from domain.handler import CounterIds
    from domain.messages import Fill, Side
    from domain.risk_rules import RiskLimits

    lim = RiskLimits(starting_balance=Decimal(50000), mll_amount=Decimal(2000), max_contracts_minis=Decimal(5),
                     daily_loss_cap=Decimal(700), session_loss_cap=Decimal(400), trailing_kill_switch=Decimal(900))
    t = dt_to_ns(_dt.datetime(2026, 4, 7, 18, 0, tzinfo=CT))
    class Counting(RiskManager):
        checks = 0

        def _check_account(self):
            Counting.checks += 1
            return super()._check_account()

    fast, plain = (cls(lim, CounterIds(), SessionCalendar(300), t) for cls in (Counting, PlainRisk))
    rng = random.Random(11)
    px = {"MES": 26000, "MNQ": 92000}
    moves = 0
    for i in range(30000):
        t += rng.choice((1, 1, 1, 30, 600)) * 1_000_000_000
        sym = rng.choice(("MES", "MNQ"))
        if rng.random() < 0.01:
            side = rng.choice((Side.BUY, Side.SELL))
            msg = Fill(f"c{i}", "s", f"t{i}", sym, side, rng.randint(1, 2), Decimal(px[sym]) / 4, Decimal("0.61"), 0, t)
        else:
            px[sym] += rng.choice((-2, -1, 0, 1, 2))
            msg = TradeTick(sym, t, Decimal(px[sym]) / 4, 1)
        a, b = fast.handle(msg), plain.handle(msg)
        assert repr(a) == repr(b), i
        assert (fast.peak_equity, fast.max_drawdown, fast.min_headroom) == \
               (plain.peak_equity, plain.max_drawdown, plain.min_headroom), i
        assert fast.ledger.to_dict() == plain.ledger.to_dict(), i
        moves += bool(a)
    assert len(fast.breaches) > 3 and moves > 20
    assert Counting.checks < 30000 / 4  # most prints took the band


def test_batches_of_intents_are_judged_as_each_intent_alone():
    """Risk judging a batch of intents (one strategy proposing several levels at once) against the
    account read once, against ``PlainRisk`` reading it for every intent: 4,000 random batches of
    1-6 limit entries, closes and hedges of MES and MNQ from two strategies (now and then one
    stamped later, across the RTH open or a day roll), between prints, ATR updates and the venue's
    answers (submitted, partial and full fills, risk's closes, cancels), over about 20 trading days.
    Every answer is the same, message by message, and the run meets the sweep guard, the order
    caps, the flatten time and approvals alike."""
    import datetime as _dt

    from domain.calendar import CT, OPEN_TIME, SessionCalendar, dt_to_ns, next_time_of_day_ns
    from domain.handler import CounterIds
    from domain.messages import (Fill, OrderCancelled, OrderIntent, OrderSubmitted, OrderType, Side,
                                 StrategyStatus)
    from domain.risk_rules import RTH_START, RiskLimits

    D = Decimal
    lim = RiskLimits(starting_balance=D(50000), mll_amount=D(2000), max_contracts_minis=D(5),
                     daily_loss_cap=D(1000), session_loss_cap=D(800), per_trade_risk=D(400), open_risk_cap=D(900),
                     net_exposure_cap=D(700), stress_move_pct=D(1), stress_loss_cap=D(1500),
                     sweep_atr_multiple=D(2), sweep_min_ticks=8)
    t = dt_to_ns(_dt.datetime(2026, 4, 7, 18, 0, tzinfo=CT))
    fast, plain = (cls(lim, CounterIds(), SessionCalendar(300), t) for cls in (RiskManager, PlainRisk))
    rng = random.Random(19)
    px = {"MES": 26000, "MNQ": 92000}  # quarter points (ticks)
    working: dict[str, list] = {}  # client order id -> [intent, leaves]
    to_router: list = []  # what risk sent the router, answered after the message (or batch) behind it
    seq = 0

    def both(msg):
        a, b = fast.handle(msg), plain.handle(msg)
        assert repr(a) == repr(b), (seq, msg)
        to_router.extend(m for dest, m in a if dest == "router")
        return a

    def fill(intent, qty, leaves):
        nonlocal seq
        seq += 1
        both(Fill(intent.client_order_id, intent.strategy_id, f"x{seq}", intent.instrument, intent.side, qty,
                  D(px[intent.instrument]) / 4, D("0.37"), leaves, t))

    def venue():  # the router and venue: orders go working (risk's closes fill at once), cancels are done
        while to_router:
            m = to_router.pop(0)
            if isinstance(m, OrderIntent):
                both(OrderSubmitted(m.client_order_id, m.strategy_id, t))
                if m.strategy_id == "risk":
                    fill(m, m.qty, 0)
                else:
                    working[m.client_order_id] = [m, m.qty]
            elif m.client_order_id in working:
                both(OrderCancelled(m.client_order_id, m.strategy_id, "cancelled", t))
                del working[m.client_order_id]

    for _ in range(4000):
        t += rng.choice((1, 5, 60, 60, 600)) * 1_000_000_000
        for _print in range(rng.randrange(0, 4)):
            sym = rng.choice(("MES", "MNQ"))
            px[sym] += rng.choice((-8, -2, -1, 0, 1, 2, 8))
            both(TradeTick(sym, t, D(px[sym]) / 4, 1))
            venue()
        if rng.random() < 0.2:
            sym = rng.choice(("MES", "MNQ"))
            both(StrategyStatus("grid", sym, t, atr=rng.choice((2.5, 6.0, 11.75, 30.0, 60.0))))
        for coid in rng.sample(sorted(working), k=min(len(working), rng.randrange(0, 3))):
            intent, leaves = working[coid]
            if rng.random() < 0.3:
                both(OrderCancelled(coid, intent.strategy_id, "test", t))
                del working[coid]
            else:
                qty = rng.randint(1, leaves)
                if leaves > qty:
                    working[coid][1] = leaves - qty
                else:
                    del working[coid]
                fill(intent, qty, leaves - qty)
            venue()
        strategy = rng.choice(("grid", "hedge"))
        for _n in range(rng.randint(1, 6)):  # one batch: the router answers after it
            seq += 1
            if rng.random() < 0.03:  # a later intent alone moves event time: across the RTH open, a day roll
                t = next_time_of_day_ns(t, (rng.choice((RTH_START, OPEN_TIME)),)) + rng.choice((0, 1, 60)) * 1_000_000_000
            sym = rng.choice(("MES", "MNQ"))
            side = rng.choice((Side.BUY, Side.SELL))
            price = D(px[sym] + side.sign * -rng.randrange(1, 40)) / 4
            both(OrderIntent(f"{strategy}-{seq}", strategy, sym, side, rng.randint(1, 4), OrderType.LIMIT, t,
                             limit_price=price, reduce_only=rng.random() < 0.1,
                             purpose="grid-entry" if strategy == "grid" else "hedge-open"))
        venue()
    rules = fast.denials_by_rule
    assert rules == plain.denials_by_rule
    assert rules.get("sweep_guard", 0) > 100 and sum(rules.values()) - rules.get("sweep_guard", 0) > 100, rules
    assert fast.ledger.to_dict() == plain.ledger.to_dict() and seq > 10_000


def test_breach_free_above_is_where_evaluate_account_stops_finding_breaches():
    """``breach_free_above`` against ``evaluate_account`` on 3,000 random ledgers (every rule on or
    off, both MLL and personal DLL modes, days of losses and gains, a failed account, consecutive
    losses) and marks around the level: no breach exactly above it, while the mark is no new
    intraday high."""
    import copy
    import datetime as _dt

    from domain.risk_rules import AccountLedger, RiskLimits, breach_free_above, evaluate_account

    rng = random.Random(5)
    D = Decimal
    seen = {"none": 0, "free": 0, "breach": 0}
    for _ in range(3000):
        opt = lambda v: v if rng.random() < 0.6 else None  # noqa: E731
        lim = RiskLimits(starting_balance=D(50000), mll_amount=D(2000), max_contracts_minis=D(5),
                         dll=opt(D(1000)), daily_loss_cap=opt(D(rng.choice([300, 700]))),
                         session_loss_cap=opt(D(rng.choice([200, 400]))), trailing_kill_switch=opt(D(900)),
                         consecutive_loss_limit=opt(rng.choice([2, 5])), personal_dll=opt(D(rng.choice([250, 600]))),
                         personal_dll_mode=rng.choice(["fixed", "trailing"]),
                         personal_dll_trail=rng.choice(["unrealized", "realized"]),
                         personal_dll_action=rng.choice(["none", "liquidate"]),
                         mll_trailing=rng.choice(["eod", "intraday"]))
        led = AccountLedger(lim, _dt.date(2026, 4, 8), rng.choice(["ETH", "RTH"]))
        for _trade in range(rng.randrange(0, 6)):
            led.on_realized(D(rng.randrange(-60000, 60000)) / 100, D("1.22"), True)
        led.mark(D(rng.randrange(0, 80000)) / 100)
        led.failed = rng.random() < 0.03
        led.pdll_fired = rng.random() < 0.1
        free = breach_free_above(led)
        top = led.intraday_peak_equity - led.balance  # above this the mark is a new high
        level = free if free is not None else top
        for u in {level - D("0.01"), level, level + D("0.01"), top, D(rng.randrange(-300000, 80000)) / 100}:
            if u > top:
                continue
            breached = bool(evaluate_account(copy.deepcopy(led), u))
            assert breached == (free is None or u <= free), (free, u)
            seen["none" if free is None else "breach" if breached else "free"] += 1
    assert min(seen.values()) > 100, seen


def _backtest(tmp_path: Path, name: str, profile: dict, monkeypatch, plain: bool):
    if plain:
        monkeypatch.setattr("actors.node.RiskManager", PlainRisk)
    cfg = load_config(None, "combine-50k", {"runtime": {"data_dir": str(ROOT / "data/demo"), "run_dir": str(tmp_path)},
                                           "profile": profile})
    summary = Node(cfg, MODES["backtest"], trades_csv=tmp_path / f"{name}.csv").run_backtest(both_paths=False)
    monkeypatch.undo()
    return summary, (tmp_path / f"{name}.csv").read_bytes()


def test_risk_shortcuts_give_the_plain_runs_fills_breaches_and_figures(tmp_path, monkeypatch):
    # tight caps so the run meets breaches (session and daily caps, the trailing kill switch,
    # a personal DLL) as well as the 15:10 CT flatten and the day rolls
    profile = {"daily_loss_cap": 150, "session_loss_cap": 60, "trailing_kill_switch": 200,
               "personal_dll": 120, "personal_dll_mode": "trailing", "sweep_atr_multiple": None}
    fast, fast_csv = _backtest(tmp_path, "fast", profile, monkeypatch, plain=False)
    plain, plain_csv = _backtest(tmp_path, "plain", profile, monkeypatch, plain=True)
    assert fast_csv == plain_csv and fast.fills > 0
    assert fast.breaches and fast.breaches == plain.breaches
    for field in ("net_pnl", "max_drawdown", "min_mll_headroom", "denials", "rules_ok", "day_pnls"):
        assert getattr(fast, field) == getattr(plain, field), field


def test_bar_timestamps_equal_the_zoneinfo_conversion_around_both_dst_changes():
    zone = ZoneInfo("America/New_York")
    for day in (dt.date(2026, 3, 8), dt.date(2026, 11, 1), dt.date(2026, 4, 9)):
        t = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(20, 0))
        while t < dt.datetime.combine(day, dt.time(5, 0)):
            got = _bar_timestamp(t.isoformat(sep=" "), zone)
            want = local_to_ns(t, zone)
            if want is None:
                assert got == "nonexistent_local_time", t
            else:
                assert got == (t, want), t
            t += dt.timedelta(minutes=1)


def test_position_keeps_qty_cost_and_unrealized_equal_to_the_lots():
    spec = get_instrument("MES")
    rng = random.Random(7)
    pos = Position(spec)
    for _ in range(2000):
        price = Decimal(5000) + spec.tick_size * rng.randint(-400, 400)
        if rng.random() < 0.3:
            pos.apply(rng.choice((1, -1)), rng.randint(1, 3), price, Decimal("0.37"))
        mark = Decimal(5000) + spec.tick_size * rng.randint(-400, 400)
        ticks = spec.to_ticks(mark)
        assert pos.qty == sum(q for _, q in pos.lots)
        want = Decimal(sum((ticks - p) * q for p, q in pos.lots)) * spec.tick_value
        assert pos.unrealized_cents(mark) == want * 100  # a mark seen or not yet (converted here)
        assert pos.unrealized(mark) == want
        assert pos.unrealized(mark) == want  # the kept mark
    assert Position.from_dict(spec, pos.to_dict()).unrealized(mark) == want


class PlainValidator:
    """The trade checks of domain/validation.py's module docstring, written out plainly."""

    def __init__(self) -> None:
        self.ref: dict[str, Decimal] = {}
        self.run: dict[str, tuple[Decimal, int]] = {}
        self.last: dict[str, tuple] = {}

    def check(self, t: TradeTick) -> str | None:
        reason = price_problem((t.price,), t.instrument)
        if reason:
            return reason
        if t.size <= 0:
            return "non_positive_size"
        key = (t.ts_ns, t.seq, t.price, t.size)
        last = self.last.get(t.instrument)
        if last is not None and (t.ts_ns < last[0] or key == last):
            return "out_of_order_ts" if t.ts_ns < last[0] else "duplicate"
        ref = self.ref.get(t.instrument)
        if ref is not None and outside_band(t.price, ref):
            first, n = self.run.get(t.instrument, (t.price, 0))
            if outside_band(t.price, first):
                first, n = t.price, 0
            n += 1
            if n < BAND_REANCHOR_PRINTS:
                self.run[t.instrument] = (first, n)
                return "price_band"
        self.run.pop(t.instrument, None)
        self.last[t.instrument] = key
        self.ref[t.instrument] = t.price
        return None


def test_validator_shortcuts_reject_exactly_what_the_plain_checks_reject():
    rng = random.Random(11)
    fast, plain = MarketDataValidator(), PlainValidator()
    price = {"MES": Decimal("5000"), "MNQ": Decimal("18000")}
    ts = 1_700_000_000_000_000_000
    reasons = set()
    for i in range(20_000):
        sym = rng.choice(("MES", "MNQ"))
        r = rng.random()
        if r < 0.02:  # a jump: out of the band, re-anchored after enough consistent prints
            price[sym] = price[sym] * Decimal(rng.choice(("1.2", "0.8")))
            price[sym] -= price[sym] % Decimal("0.25")
        else:
            price[sym] += Decimal("0.25") * rng.randint(-8, 8)
        p = price[sym]
        if r > 0.995:
            p = p + Decimal("0.1")  # off the tick grid
        elif r > 0.99:
            p = Decimal(rng.choice(("0", "-5", "1E9", "NaN")))
        ts += rng.choice((0, 1, 1_000_000))
        tick = TradeTick(sym, ts, p, rng.choice((1, 1, 2, 0)), i)
        want = plain.check(tick)
        assert fast.check_trade(tick) == want, (i, tick)
        reasons.add(want)
    assert {None, "price_band", "off_tick_price", "non_positive_size", "non_positive_price"} <= reasons


def test_trading_day_window_equals_the_per_minute_rule_across_dst_and_weekends():
    from domain import calendar
    rng = random.Random(3)
    ns = 1_000_000_000
    ts = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()) * ns
    for _ in range(60_000):  # ~14 months of jumps forward and back, through both DST changes
        ts += rng.choice((1, 60 * ns, 7 * 60 * ns, 3600 * ns, 17 * 3600 * ns + 1, -5 * 60 * ns))
        assert calendar.trading_day(ts) == calendar._trading_day_of_minute(ts // (60 * ns)), ts


class _Echo:
    """A handler that logs what it got and answers twice to another topic, until depth 3; ``c``
    rejects what comes at depth 2."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def handle(self, msg):
        from domain.handler import RejectedMessage
        if self.name == "c" and msg[0] == 2:
            raise RejectedMessage("depth 2")
        self.log.append((self.name, msg))
        if msg[0] >= 3:
            return []
        return [("fan", (msg[0] + 1, f"{self.name}<{msg[1]}")), ("b", (msg[0] + 1, f"{self.name}!{msg[1]}"))]


def test_dispatcher_run_delivers_in_the_order_of_send_then_drain():
    from actors.dispatcher import Dispatcher
    logs = []
    for direct in (True, False):
        log: list = []
        disp = Dispatcher({n: _Echo(n, log) for n in "abc"}, {"fan": ("a", "c"), "ghost": ("nobody",)})
        out = [("fan", (0, "x")), ("ghost", (0, "y")), ("b", (0, "z"))]
        if direct:
            disp.run(out)
        else:
            disp.send(out)
            disp.drain()
        logs.append((log, dict(disp.dead_letters), dict(disp.rejected)))
    assert logs[0] == logs[1]
    assert len(logs[0][0]) > 20 and logs[0][1] == {"nobody": 1} and logs[0][2] == {"c:tuple": 9}


def test_dispatcher_replace_takes_effect_on_the_next_message():
    """Routes keep bound handles; :meth:`Dispatcher.replace` swaps one between two messages."""
    from actors.dispatcher import Dispatcher
    log: list = []
    disp = Dispatcher({n: _Echo(n, log) for n in "ab"}, {"fan": ("a", "b")})
    disp.run([("fan", (3, "first"))])
    disp.replace("b", _Echo("B", log))
    disp.run([("fan", (3, "second")), ("b", (3, "direct"))])
    assert log == [("a", (3, "first")), ("b", (3, "first")), ("a", (3, "second")), ("B", (3, "second")),
                   ("B", (3, "direct"))]


def test_dispatcher_hands_alerts_no_handler_takes_to_on_alert():
    """The backtest has no watchdog: an Alert sent to a name without a handler goes to ``on_alert``
    (and counts as a dead letter); other dead letters and handled alerts do not."""
    from actors.dispatcher import Dispatcher
    from domain.messages import Alert, ClockTick
    got: list = []
    seen: list = []

    class Recorder:
        def handle(self, msg):
            got.append(msg)
            return []

    disp = Dispatcher({"a": Recorder()}, {"watch": ("a", "watchdog")}, on_alert=seen.append)
    lost, handled = Alert("warning", "k", "lost", 5), Alert("warning", "k", "handled", 6)
    disp.run([("watchdog", lost), ("watchdog", ClockTick(7)), ("a", handled), ("watch", handled)])
    assert seen == [lost, handled] and disp.dead_letters == {"watchdog": 3}
    assert got == [handled, handled]


_NASTY_ROWS = """datetime,open,high,low,close,volume,symbol
2026-03-08 01:58:00,5000.00,5001.00,4999.00,5000.50,10,ES
2026-03-08 02:00:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-03-08 03:00:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:30:00,5000.50,5001.00,4999.00,5000.50,12.0,ES
2026-03-09 09:32:00,5000.5,5001,4999.0,5000.50,3,ES=F
2026-03-09T09:34:00,5000.50,5001.00,4999.00,5000.50,10,ES
 2026-03-09 09:36:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:38:00-04:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:40:00,5000.50,5001.00,4999.00,5000.50,10,NQ
2026-03-09 09:42:00,5000.50,5001.00,4999.00,5000.50,10,
2026-03-09 09:44:00,5000.50,5001.00,4999.00,5000.50,10
2026-03-09 09:46:00,5000.50,4999.00,5001.00,5000.50,10,ES
2026-03-09 09:48:00,5002.50,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:50:00,5000.60,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:52:00,NaN,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:54:00,,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:56:00,-5,5001.00,4999.00,5000.50,10,ES
2026-03-09 09:58:00,400000,5001.00,4999.00,5000.50,10,ES
2026-03-09 10:00:00,5000.50,5001.00,4999.00,5000.50,-1,ES
2026-03-09 10:02:00,5000.50,5001.00,4999.00,5000.50,2.5,ES
2026-03-09 10:04:00,5000.50,5001.00,4999.00,5000.50,99999999999,ES
2026-03-09 10:06:00,5000.50,5001.00,4999.00,5000.50,x,ES
2026-03-09 24:00:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-13-09 10:08:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-03-09 10:10:00,5000.50,5001.00,4999.00,5000.50,10,ES,extra

2026-03-09 10:10:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-03-09 10:08:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-11-01 00:58:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-11-01 01:00:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-11-01 01:58:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-11-01 01:00:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-11-01 01:02:00,5000.50,5001.00,4999.00,5000.50,10,ES
2026-11-01 02:00:00,5000.50,5001.00,4999.00,5000.50,10,ES
"""


def test_bar_file_table_path_gives_the_per_record_checks_results(tmp_path):
    """The bulk reading of a bar file (distinct texts parsed once, timestamps converted in bulk)
    against ``_bar_record`` on each ``csv.DictReader`` record: every row kept or dropped alike, on
    a file of every problem the loader names, both DST changes (New York) and the real files."""
    import csv

    from infra.replay import BAR_COLUMNS, _bar_record, _read_table, _table_records, load_bar_csv
    path = tmp_path / "ES_2min.csv"
    path.write_text(_NASTY_ROWS)
    files = [path, *sorted((ROOT / "data" / "demo").glob("*_2min.csv.gz")), *sorted(SPIKE.glob("*.csv.gz"))]
    for f in files:
        for inst in ("MES", "MNQ"):
            zone = ZoneInfo("America/New_York")
            table = list(_table_records(*_read_table(f, BAR_COLUMNS[:-1]), inst, zone))
            with (gzip.open(f, "rt", newline="") if f.suffix == ".gz" else open(f, newline="")) as fh:
                plain = [_bar_record(rec, inst, zone, {}) for rec in csv.DictReader(fh)]
            # (epoch ns, instrument, prices as spelled, volume) or the reason; the naive time aside
            assert [repr(r if isinstance(r, str) else r[:7]) for r in table] == \
                   [repr(r if isinstance(r, str) else r[:7]) for r in plain]
    rows, rejects = load_bar_csv(path, "MES")
    assert len(rows) == 16  # both 01:00-01:58 hours of 1 November 2026 kept, the second as the later one
    assert rows[-3].start_ns - rows[-4].start_ns == 120 * 1_000_000_000  # 01:58 EDT -> 01:00 EST
    assert dict(rejects) == {
        "nonexistent_local_time": 1, "wrong_symbol": 1, "high_below_low": 1, "open_close_outside_range": 1,
        "off_tick": 1, "nan": 1, "missing_or_bad_number": 2, "non_positive_price": 1, "price_out_of_range": 1,
        "negative_size": 1, "non_integral_size": 1, "volume_out_of_range": 1, "bad_timestamp": 2,
        "duplicate_timestamp": 1, "out_of_order": 1}


def test_a_strategy_off_the_clock_topic_trades_as_one_on_it(tmp_path, monkeypatch):
    """EMA 10/30 declares ``wants_clock=False`` (it ignores ClockTick): the node leaves it off the
    clock topic, and a backtest with it put back on gives the same trade log, byte for byte."""
    import dataclasses

    from domain import strategies as plugins
    from domain.handler import CLOCK_TOPIC
    from domain.strategies import ema_cross
    strategies = [{"name": "ema-ES", "kind": "ema_cross", "instruments": ["MES"], "params": {"fast": 5, "slow": 12}}]
    logs = {}
    for wants in (False, True):
        plugin = dataclasses.replace(ema_cross.PLUGIN, wants_clock=wants)
        monkeypatch.setattr(plugins, "_plugin", lambda kind, p=plugin: p)  # ema_cross is the only kind here
        cfg = load_config(None, "practice-150k", {"strategies": strategies,
                                                  "runtime": {"data_dir": str(ROOT / "data/demo"),
                                                              "run_dir": str(tmp_path / str(wants))}})
        node = Node(cfg, MODES["backtest"], trades_csv=tmp_path / f"{wants}.csv")
        assert ("ema-ES" in node.topics()[CLOCK_TOPIC]) is wants
        s = node.run_backtest(both_paths=False)
        logs[wants] = ((tmp_path / f"{wants}.csv").read_bytes(), s.fills, s.net_pnl)
    assert logs[False] == logs[True] and logs[False][1] > 10


def test_a_venue_handed_idle_prints_late_fills_and_ends_as_one_that_saw_every_print(tmp_path, monkeypatch):
    """The backtest's venue handler keeps prints that arrive with no order working
    (``IdlePrintsDeferred``). Against the plain handler, on the grid+hedge default (limits resting
    most of the time), the EMA cross (market orders, idle between them) and the regime strategy
    (native brackets): the same trade log byte for byte, and the venue ends with the same clock,
    last prices and their times."""
    from infra.venues.handler import IdlePrintsDeferred, VenueHandler

    runs = {"grid-hedge": (None, "combine-50k"),
            "ema": ([{"name": "ema-ES", "kind": "ema_cross", "instruments": ["MES"], "params": {"fast": 5, "slow": 12}},
                     {"name": "ema-NQ", "kind": "ema_cross", "instruments": ["MNQ"], "params": {"fast": 5, "slow": 12}}],
                    "practice-150k"),
            "regime": (str(ROOT / "config/regime.yaml"), "combine-50k")}
    for name, (strategies, profile) in runs.items():
        seen = {}
        for deferred in (True, False):
            if not deferred:
                monkeypatch.setattr(Node, "_make_broker", lambda self: VenueHandler(self.venue, self.write_ahead))
            overrides = {"runtime": {"data_dir": str(ROOT / "data/demo"), "run_dir": str(tmp_path / f"{name}{deferred}")}}
            path = None
            if isinstance(strategies, list):
                overrides["strategies"] = strategies
            elif strategies:
                path = strategies
            cfg = load_config(path, profile, overrides)
            node = Node(cfg, MODES["backtest"], trades_csv=tmp_path / f"{name}{deferred}.csv")
            assert isinstance(node._make_broker(), IdlePrintsDeferred) is deferred
            s = node.run_backtest(both_paths=False)
            b = node.venue.broker
            seen[deferred] = ((tmp_path / f"{name}{deferred}.csv").read_bytes(), s.fills, s.net_pnl,
                              node.venue.last_key, node.venue.last_ts, b.last_prices(), b.last_times())
            monkeypatch.undo()
        assert seen[True] == seen[False], name
        assert seen[True][1] > 5, name


def test_idle_prints_reach_the_venue_in_arrival_order_before_its_next_message():
    """Prints of two instruments interleaved while nothing works, then a market order: the venue
    behind ``IdlePrintsDeferred`` has the clock and last prices of one that saw every print (the
    latest MES print came after the latest MNQ print), and fills the order at the same price."""
    from domain.messages import OrderIntent, OrderType, Side
    from infra.venues.handler import IdlePrintsDeferred, VenueHandler
    from infra.venues.simulated import SimulatedVenue

    t0 = 1_775_000_000_000_000_000
    prints = [TradeTick("MES", t0, Decimal("6500.25"), 1), TradeTick("MNQ", t0 + 1, Decimal("23000.5"), 1),
              TradeTick("MES", t0 + 2, Decimal("6500.75"), 2), TradeTick("MES", t0 + 3, Decimal("6501"), 1)]
    after = TradeTick("MNQ", t0 + 5, Decimal("23001"), 1)
    order = OrderIntent("c1", "s", "MNQ", Side.BUY, 1, OrderType.MARKET, t0 + 4)
    seen = []
    for cls in (IdlePrintsDeferred, VenueHandler):
        h = cls(SimulatedVenue(None, slippage_ticks=0))
        assert all(h.handle(t) == [] for t in prints)
        acks = h.handle(order)
        b = h.venue.broker
        state = (h.venue.last_key, h.venue.last_ts, b.last_prices(), b.last_times())
        fills = h.handle(after)
        seen.append((state, [type(e).__name__ for _, e in acks], [(f.price, f.ts_ns) for _, f in fills]))
    assert seen[0] == seen[1]
    assert seen[0][0][2] == {"MES": Decimal("6501"), "MNQ": Decimal("23000.5")}
    assert seen[0][2] == [(Decimal("23001"), t0 + 5)]


def test_a_clock_tick_before_the_soonest_bar_end_closes_what_the_full_check_closes():
    """``BarAggregator.on_time`` returns at once before the soonest end of an open bar. Against an
    aggregator that checks every period on every clock tick: 20,000 random prints (gaps, late
    prints) and clock ticks over three periods, and a restored aggregator, give the same bars."""
    from domain.bars import BarAggregator

    rng = random.Random(7)
    fast, plain = BarAggregator("MES", (60, 120, 300)), BarAggregator("MES", (60, 120, 300))
    ts, closed = 1_775_000_000_000_000_000, 0
    for i in range(20000):
        ts += rng.choice((1, 5, 20, 59, 61, 600, 3600)) * 1_000_000_000
        if i == 10000:  # a restart in the middle: both resume from the snapshot
            fast, plain = BarAggregator.restore(fast.snapshot()), BarAggregator.restore(plain.snapshot())
        if rng.random() < 0.4:
            plain._ends_from = 0  # no soonest end known: every period is checked
            got = fast.on_time(ts), plain.on_time(ts)
        else:
            late = ts - rng.choice((0, 0, 0, 90)) * 1_000_000_000
            tick = TradeTick("MES", late, Decimal(6500) + Decimal(rng.randrange(-40, 40)) / 4, 1)
            got = fast.on_trade(tick), plain.on_trade(tick)
        assert got[0] == got[1]
        closed += len(got[0])
    assert closed > 5000


def test_messages_built_through_their_slots_are_what_the_dataclass_builds():
    """Every message class and the other value objects built through ``slot_init``: the parameters and defaults are the dataclass fields,
    positional and keyword construction store each argument in its field as
    ``object.__setattr__`` does (the dataclass's own way), defaults fill the rest, and the instance
    is still frozen, hashable and picklable."""
    import dataclasses
    import inspect
    import pickle

    import pytest

    from domain.messages import MESSAGE_TYPES
    from domain.risk_rules import OrderCheck, WorkingOrder
    from infra.replay import BarRow

    assert len(MESSAGE_TYPES) >= 30
    for cls in (*MESSAGE_TYPES, BarRow, WorkingOrder, OrderCheck):
        fields = dataclasses.fields(cls)
        params = list(inspect.signature(cls).parameters.values())
        assert [(p.name, p.default) for p in params] == [
            (f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default) for f in fields]
        values = [f"{cls.__name__}.{f.name}" for f in fields]  # distinct, hashable, picklable
        expected = object.__new__(cls)
        for f, v in zip(fields, values, strict=True):
            object.__setattr__(expected, f.name, v)
        built = cls(*values)
        assert built == expected and cls(**dict(zip([f.name for f in fields], values, strict=True))) == expected
        assert all(getattr(built, f.name) is v for f, v in zip(fields, values, strict=True))
        required = [v for f, v in zip(fields, values, strict=True) if f.default is dataclasses.MISSING]
        assert all(getattr(cls(*required), f.name) == f.default for f in fields if f.default is not dataclasses.MISSING)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(built, fields[0].name, "changed")
        assert hash(built) == hash(expected) and pickle.loads(pickle.dumps(built)) == built


def _round_to_tick_decimal(spec, price: float) -> Decimal:
    """The tick rule in Decimals alone: ``Decimal(str(price)) / tick_size``, ties away from zero."""
    ticks = Decimal(str(price)) / spec.tick_size
    return spec.tick_size * int(ticks.to_integral_value(rounding="ROUND_HALF_UP"))


def test_round_to_tick_of_a_float_equals_the_decimal_rule_at_ties_and_near_them():
    rng = random.Random(7)
    for sym in ("MES", "MNQ", "CL", "MCL"):
        spec = get_instrument(sym)
        tick = float(spec.tick_size)
        prices = [rng.uniform(-100, 30000) for _ in range(20000)]
        for _ in range(20000):  # exact ties, and floats a few ulps and a few 1e-7 ticks either side
            n = rng.randrange(-1000, 200000)
            tie = (n + 0.5) * tick
            prices += [tie, math.nextafter(tie, math.inf), math.nextafter(tie, -math.inf),
                       tie + rng.choice((-1, 1)) * rng.uniform(0, 3e-6) * tick]
        prices += [0.0, -0.0, 1e7 + 0.125, -1e7 - 0.125, 5000.125, 70.005, 70.015]
        for p in prices:
            assert spec.round_to_tick(p) == _round_to_tick_decimal(spec, p), (sym, repr(p))
    spec = get_instrument("MES")
    for bad in (math.nan, math.inf):  # the Decimal rule's own error
        with pytest.raises((ValueError, ArithmeticError)):
            spec.round_to_tick(bad)


def test_can_open_spans_equal_the_plain_rule_across_dst_weekends_and_holidays():
    from domain import calendar
    rng = random.Random(5)
    ns = 1_000_000_000
    cals = [calendar.SessionCalendar(m) for m in (0, 300, 1800)]

    def plain(ts: int, margin: int) -> bool:  # the rule as docs/risk.md states it, no span kept
        day = calendar._trading_day_of_minute(ts // (60 * ns))
        if day in calendar.EXCHANGE_CLOSED_DAYS:
            return False
        open_ns, _ = calendar._session_bounds_ns(day)
        return open_ns <= ts < calendar._flatten_ns(day, margin)

    ts = int(dt.datetime(2025, 12, 20, tzinfo=dt.timezone.utc).timestamp()) * ns
    seen = set()
    for _ in range(80_000):  # ~16 months of jumps forward and back: both DST changes, Good Friday, Christmas
        ts += rng.choice((1, 60 * ns, 7 * 60 * ns, 3600 * ns, 17 * 3600 * ns + 1, -5 * 60 * ns, -1))
        for cal in cals:
            want = plain(ts, cal.flat_margin_s)
            assert cal.can_open(ts) == want, (ts, cal.flat_margin_s)
            seen.add(want)
    # the instants themselves (session open, flatten time, the 17:00 CT window ends, each +-1 ns),
    # each asked right after a time inside the span before it and the span after it (the kept span)
    for day in (dt.date(2026, 1, 1), dt.date(2026, 3, 9), dt.date(2026, 4, 3), dt.date(2026, 4, 6),
                dt.date(2026, 11, 2), dt.date(2026, 12, 25), dt.date(2026, 12, 28)):
        open_ns, _ = calendar._session_bounds_ns(day)
        for cal in cals:
            flat = calendar._flatten_ns(day, cal.flat_margin_s)
            lo, hi, _ = calendar._day_window_of(flat)
            for edge in (open_ns, flat, lo, hi):
                for t in (edge - 1, edge, edge + 1):
                    for before in (edge - 60 * ns, edge + 60 * ns):
                        cal.can_open(before)
                        assert cal.can_open(t) == plain(t, cal.flat_margin_s), (day, edge, t, before)
    assert seen == {True, False}
