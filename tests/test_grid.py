"""Grid strategy handler: order placement against the last trade, one entry per side awaiting
risk's verdict, take-profits, idempotent fills, denial back-off and the snapshot round trip (pure
domain code, no actors)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from domain.strategies.grid import GridConfig, GridStrategy
from domain.handler import RISK, CounterIds
from domain.messages import Bar, Fill, OrderDenied, OrderIntent, OrderSubmitted, Side, TradeTick, WarmupBars

D = Decimal
CT = ZoneInfo("America/Chicago")
T0 = int(datetime(2026, 4, 8, 10, 0, tzinfo=CT).timestamp() * 1e9)  # Wednesday 10:00 CT: trading window open
MIN = 60_000_000_000


def _bar(period_s: int, start_ns: int, lo: str, hi: str, close: str) -> Bar:
    return Bar("MES", period_s, start_ns, start_ns + period_s * 1_000_000_000, D(close), D(hi), D(lo), D(close), 100,
               start_ns + period_s * 1_000_000_000)


def _ready_grid() -> GridStrategy:
    """A grid whose ATR(14, 15-min) is 10 points (every warm-up bar 10 points high to low)."""
    g = GridStrategy("MES", "grid-MES", GridConfig(), CounterIds())
    warm = tuple(_bar(900, T0 - (20 - i) * 900_000_000_000, "4995", "5005", "5000") for i in range(20))
    g.handle(WarmupBars("MES", 900, warm, T0))
    assert g.ready and abs(g.atr.value - 10.0) < 1e-9
    return g


def _intents(out) -> list[OrderIntent]:
    return [m for d, m in out if d == RISK and isinstance(m, OrderIntent)]


def _passed(g: GridStrategy, out) -> list[OrderIntent]:
    """The intents of ``out`` and of what follows when risk passes each one (the router's
    ``OrderSubmitted`` back to the grid), until the grid proposes nothing more."""
    done: list[OrderIntent] = []
    todo = _intents(out)
    while todo:
        intent = todo.pop(0)
        done.append(intent)
        todo += _intents(g.handle(OrderSubmitted(intent.client_order_id, intent.strategy_id, intent.ts_ns)))
    return done


def test_first_tick_places_passive_entries_both_sides_around_the_last_trade():
    g = _ready_grid()
    out = g.handle(TradeTick("MES", T0, D("5000.00"), 1))
    assert sorted(e.limit_price for e in _intents(out)) == [D("4995.50"), D("5004.50")]  # the nearest each side
    entries = _passed(g, out)
    spacing = D("4.50")  # 0.45 x ATR 10, on the 0.25 tick grid
    assert g.spacing == spacing and len(entries) == 10
    assert sorted(e.limit_price for e in entries if e.side is Side.BUY) == [D("5000") - spacing * n for n in (5, 4, 3, 2, 1)]
    assert all(e.limit_price > D("5000") for e in entries if e.side is Side.SELL)


def test_a_bar_closing_before_the_last_tick_does_not_replace_its_price():
    """The 1-min bar reaches the grid after the tick that closed it; judging entries against the
    bar's (older) close would place an entry that is marketable at the venue."""
    g = _ready_grid()
    g.handle(TradeTick("MES", T0, D("5000.00"), 1))
    g.handle(TradeTick("MES", T0 + MIN + 1, D("5012.00"), 1))  # a new minute: the price jumped
    g.handle(_bar(60, T0, "4999", "5001", "5000.00"))  # the bar of the previous minute
    assert g.last == D("5012.00")
    g.handle(_bar(60, T0 + MIN, "5011", "5013", "5012.50"))  # a bar ending after the last tick does
    assert g.last == D("5012.50")


def test_an_entry_fill_gets_one_take_profit_even_when_delivered_twice():
    g = _ready_grid()
    entries = _passed(g, g.handle(TradeTick("MES", T0, D("5000.00"), 1)))
    buy = max((e for e in entries if e.side is Side.BUY), key=lambda e: e.limit_price)
    fill = Fill(buy.client_order_id, "grid-MES", "T1", "MES", Side.BUY, buy.qty, buy.limit_price, D("0.37") * buy.qty,
                0, T0 + 1)
    tps = _intents(g.handle(fill))
    assert len(tps) == 1 and tps[0].side is Side.SELL and tps[0].reduce_only
    assert tps[0].limit_price == buy.limit_price + D("5.00")  # 0.5 x ATR 10
    assert g.handle(fill) == []  # the same trade id again (reconciliation after a restart): nothing new


def test_snapshot_round_trip_keeps_partial_fills_and_their_trade_ids():
    g = _ready_grid()
    entries = _passed(g, g.handle(TradeTick("MES", T0, D("5000.00"), 1)))
    big = next(e for e in entries if e.qty > 1)
    part = Fill(big.client_order_id, "grid-MES", "T7", "MES", big.side, 1, big.limit_price, D("0.37"), big.qty - 1, T0 + 1)
    g.handle(part)
    back = GridStrategy("MES", "grid-MES", GridConfig(), CounterIds())
    back.restore(g.snapshot())
    assert back.snapshot() == g.snapshot()
    assert back.slots[big.client_order_id].trade_ids == ["T7"] and back.slots[big.client_order_id].filled == 1
    assert back.handle(part) == []  # already applied before the restart


def test_a_level_risk_keeps_denying_waits_twice_as_long_each_time_until_a_fill():
    g = _ready_grid()
    _passed(g, g.handle(TradeTick("MES", T0, D("5000.00"), 1)))
    ts, waits = T0, []
    for _ in range(6):
        coid = next(c for c, s in g.slots.items() if s.level == -1)
        g.handle(OrderDenied(coid, "grid-MES", "open_risk_cap: test", ts))
        waits.append((g.denied_until[-1] - ts) // 1_000_000_000)
        assert g.denied_until[-5] == g.denied_until[-1]  # the levels beyond it on that side wait too
        ts = g.denied_until[-1]
        g.handle(_bar(60, ts - MIN, "4999", "5001", "5000.00"))  # next bar after the wait: proposed again
        assert any(s.level == -1 for s in g.slots.values())
    assert waits == [60, 120, 240, 480, 900, 900]
    sell = next(s for s in g.slots.values() if s.level == 1)
    coid = next(c for c, s in g.slots.items() if s is sell)
    g.handle(Fill(coid, "grid-MES", "T9", "MES", Side.SELL, sell.qty, sell.price, D("0.37"), 0, ts + 1))
    assert g.denied_until == {} and g.denied_streak == {}  # the position changed: start over


def test_a_side_asks_for_its_next_level_only_when_risk_passed_the_nearer_one():
    g = _ready_grid()
    first = _intents(g.handle(TradeTick("MES", T0, D("5000.00"), 1)))
    buy, sell = sorted(first, key=lambda e: e.side is Side.SELL)
    assert (buy.side, sell.side) == (Side.BUY, Side.SELL)
    # a bar while both wait for risk's verdict proposes nothing more
    assert _intents(g.handle(_bar(60, T0, "4999", "5001", "5000.00"))) == []
    nxt = _intents(g.handle(OrderSubmitted(buy.client_order_id, "grid-MES", T0)))
    assert [(e.side, e.limit_price) for e in nxt] == [(Side.BUY, D("4991.00"))]  # level -2, the sell side waits on
    assert g.handle(OrderSubmitted(buy.client_order_id, "grid-MES", T0)) == []  # told twice: nothing more


def test_a_denial_stops_its_side_and_counts_for_the_levels_it_kept_from_being_asked():
    g = _ready_grid()
    out = g.handle(TradeTick("MES", T0, D("5000.00"), 1))
    buy = next(e for e in _intents(out) if e.side is Side.BUY)
    _passed(g, g.handle(OrderDenied(buy.client_order_id, "grid-MES", "sweep_guard: test", T0)))
    assert not any(s.side is Side.BUY for s in g.slots.values())  # levels -2..-5 were not asked
    assert g.denied_streak == {-1: 1, -2: 1, -3: 1, -4: 1, -5: 1}
    assert {lvl: (t - T0) // 1_000_000_000 for lvl, t in g.denied_until.items()} == {-1: 60, -2: 60, -3: 60, -4: 60, -5: 60}
    sell = next(e for e in _intents(out) if e.side is Side.SELL)
    sells = _passed(g, [(RISK, sell)])
    assert len(sells) == 5  # the other side is not held up
    # after the wait, level -1 passes and -2 is denied: only -2..-5 count the second denial
    ts = T0 + 61 * 1_000_000_000
    again = _intents(g.handle(_bar(60, ts - MIN, "4999", "5001", "5000.00")))
    assert [e.limit_price for e in again] == [D("4995.50")]
    two = _intents(g.handle(OrderSubmitted(again[0].client_order_id, "grid-MES", ts)))
    g.handle(OrderDenied(two[0].client_order_id, "grid-MES", "sweep_guard: test", ts))
    assert g.denied_streak == {-1: 1, -2: 2, -3: 2, -4: 2, -5: 2}
    assert (g.denied_until[-5] - ts) // 1_000_000_000 == 120 and g.denied_until[-1] == T0 + 60 * 1_000_000_000
