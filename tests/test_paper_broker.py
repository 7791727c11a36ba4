"""PaperBroker matching, fees, position book and persistence. Prices come from the real demo data."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from domain.instruments import get_instrument
from domain.messages import (Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderRejected, OrderType,
                             QuoteTick, Side, TradeTick)
from infra.paper_broker import PaperBroker
from infra.replay import ReplaySource, load_bar_csv

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
TICK = Decimal("0.25")


@pytest.fixture(scope="module")
def base() -> Decimal:
    """A real MES price: the close of the first demo bar (6,600-ish)."""
    rows, _ = load_bar_csv(DEMO / "ES_2min.csv.gz")
    return rows[0].close


_n = 0


def order(side: Side, kind: OrderType, qty: int = 1, limit: Decimal | None = None, stop: Decimal | None = None,
          coid: str | None = None, inst: str = "MES") -> OrderIntent:
    global _n
    _n += 1
    return OrderIntent(coid or f"c{_n}", "grid", inst, side, qty, kind, 0, limit_price=limit, stop_price=stop)


def trade(px: Decimal, ts: int = 1, inst: str = "MES") -> TradeTick:
    return TradeTick(inst, ts, px, 1)


def test_trade_through_vs_touch(base):
    b = PaperBroker()
    b.on_trade(trade(base))
    buy = order(Side.BUY, OrderType.LIMIT, limit=base - 1)
    sell = order(Side.SELL, OrderType.LIMIT, limit=base + 1)
    assert [type(m) for m in b.submit(buy, 1)] == [OrderAccepted]
    b.submit(sell, 1)
    assert b.on_trade(trade(base - 1, 2)) == []           # touch only: no fill by default
    assert b.on_trade(trade(base + 1, 3)) == []
    [f] = b.on_trade(trade(base - 1 - TICK, 4))           # trades through: fills at the limit
    assert (f.client_order_id, f.price, f.qty, f.leaves_qty, f.ts_ns) == (buy.client_order_id, base - 1, 1, 0, 4)
    [f] = b.on_trade(trade(base + 1 + TICK, 5))
    assert (f.side, f.price) == (Side.SELL, base + 1)

    t = PaperBroker(fill_on_touch=True)
    t.on_trade(trade(base))
    t.submit(order(Side.BUY, OrderType.LIMIT, limit=base - 1), 1)
    t.submit(order(Side.SELL, OrderType.LIMIT, limit=base + 1), 1)
    assert [f.price for f in t.on_trade(trade(base - 1, 2))] == [base - 1]
    assert [f.price for f in t.on_trade(trade(base + 1, 3))] == [base + 1]


def test_one_big_move_fills_every_crossed_limit_in_arrival_order(base):
    b = PaperBroker(id_prefix="X")
    b.on_trade(trade(base))
    limits = [base - 2, base - 1, base - 3]
    orders = [order(Side.BUY, OrderType.LIMIT, limit=p) for p in limits]
    accepted = [b.submit(o, 10 + i)[0] for i, o in enumerate(orders)]
    assert [a.venue_order_id for a in accepted] == ["X-O1", "X-O2", "X-O3"]
    far = order(Side.BUY, OrderType.LIMIT, limit=base - 10)
    b.submit(far, 13)
    fills = b.on_trade(trade(base - 5, 20))
    assert [f.client_order_id for f in fills] == [o.client_order_id for o in orders]
    assert [f.price for f in fills] == limits                  # each at its own limit, never the print
    assert [f.trade_id for f in fills] == ["X-T1", "X-T2", "X-T3"]
    assert [f.venue_order_id for f in fills] == ["X-O1", "X-O2", "X-O3"]
    assert b.working_orders() == [far]
    pos = b.positions()["MES"]
    assert pos.qty == 3 and pos.avg_price == base - 2 and pos.ts_ns == 20


def test_stops_trigger_and_fill_with_slippage(base):
    b = PaperBroker(slippage_ticks=1)
    b.on_trade(trade(base))
    sell_stop = order(Side.SELL, OrderType.STOP, stop=base - 2)
    b.submit(sell_stop, 1)
    assert b.on_trade(trade(base - Decimal("1.75"), 2)) == []
    [f] = b.on_trade(trade(base - Decimal("2.5"), 3))           # gaps through the stop
    assert f.price == base - Decimal("2.75") and f.side is Side.SELL

    b2 = PaperBroker(slippage_ticks=2)
    b2.on_trade(trade(base))
    b2.submit(order(Side.BUY, OrderType.STOP, qty=2, stop=base + 1), 1)
    [f] = b2.on_trade(trade(base + 1, 2))                       # at the stop: triggers
    assert (f.price, f.qty) == (base + Decimal("1.5"), 2)

    # a stop already through the market on arrival takes the next print, like a market order
    [acc] = b2.submit(order(Side.SELL, OrderType.STOP, stop=base + 2), 3)
    [f] = b2.on_trade(trade(base + 3, 4))                       # above the stop, still fills: triggered
    assert isinstance(acc, OrderAccepted) and f.price == base + 3 - 2 * TICK
    # ... or at once on an exchange with a standing book (the sandbox's model)
    x = PaperBroker(slippage_ticks=2, fill_on_arrival=True)
    x.on_trade(trade(base))
    [acc, f] = x.submit(order(Side.SELL, OrderType.STOP, stop=base + 2), 3)
    assert isinstance(acc, OrderAccepted) and f.price == base - 2 * TICK

    # stops on quotes: buy triggers on the ask, sell on the bid
    b3 = PaperBroker()
    b3.submit(order(Side.BUY, OrderType.STOP, stop=base + 1), 1)
    b3.submit(order(Side.SELL, OrderType.STOP, stop=base - 1), 1)
    [f] = b3.on_quote(QuoteTick("MES", 2, base + Decimal("0.75"), base + 1))   # ask at the stop
    assert (f.side, f.price) == (Side.BUY, base + 1 + TICK)
    assert b3.on_quote(QuoteTick("MES", 3, base - Decimal("0.75"), base - Decimal("0.5"))) == []
    [f] = b3.on_quote(QuoteTick("MES", 4, base - 1, base - Decimal("0.75")))
    assert f.price == base - 1 - TICK


def test_market_orders(base):
    b = PaperBroker(slippage_ticks=1)
    mkt = order(Side.BUY, OrderType.MARKET, qty=2)
    out = b.submit(mkt, 5)                                      # no last price yet: waits
    assert [type(m) for m in out] == [OrderAccepted] and b.working_orders() == [mkt]
    assert b.on_trade(trade(base, 6, inst="MNQ")) == []         # other instrument: not filled
    [f] = b.on_trade(trade(base, 7))
    assert (f.price, f.qty, f.ts_ns) == (base + TICK, 2, 7) and b.working_orders() == []

    [acc] = b.submit(order(Side.SELL, OrderType.MARKET), 8)    # never at a price from before it arrived
    assert isinstance(acc, OrderAccepted)
    [f] = b.on_trade(trade(base - 1, 9))                        # ... but on the next print
    assert (f.price, f.ts_ns) == (base - 1 - TICK, 9)

    q = PaperBroker(slippage_ticks=1)
    q.submit(order(Side.SELL, OrderType.MARKET), 1)
    q.submit(order(Side.BUY, OrderType.MARKET), 1)
    fills = q.on_quote(QuoteTick("MES", 2, base, base + TICK, 5, 5))
    assert [(f.side, f.price) for f in fills] == [(Side.SELL, base - TICK), (Side.BUY, base + 2 * TICK)]
    assert q.last_price("MES") is None                         # quotes are not trades

    # a limit marketable on arrival takes the next print still at or better than its limit, with
    # slippage capped at the limit; if the market moved away it rests as a passive limit
    b.on_trade(trade(base, 10))
    [_] = b.submit(order(Side.BUY, OrderType.LIMIT, limit=base + 3), 11)
    [f] = b.on_trade(trade(base + 1, 12))
    assert f.price == base + 1 + TICK
    capped = order(Side.BUY, OrderType.LIMIT, limit=base + 1)
    b.submit(capped, 13)
    [f] = b.on_trade(trade(base + 1, 14))
    assert f.price == base + 1                                  # slippage never past the limit
    away = order(Side.SELL, OrderType.LIMIT, limit=base + 1)
    b.submit(away, 15)                                          # marketable against the last print
    assert b.on_trade(trade(base, 16)) == []                    # the market moved away: it rests
    assert b.on_trade(trade(base + 1, 17)) == []                # a passive sell needs a print through it
    [f] = b.on_trade(trade(base + 2, 18))
    assert (f.client_order_id, f.price) == (away.client_order_id, base + 1)
    # a last print older than max_price_age_ns is not used to judge marketability: it rests
    aged = PaperBroker(slippage_ticks=0, max_price_age_ns=5)
    aged.on_trade(trade(base, 100))
    stale = order(Side.BUY, OrderType.LIMIT, limit=base + 1)
    aged.submit(stale, 200)
    [f] = aged.on_trade(trade(base, 201))                       # a resting limit: filled at its limit
    assert f.price == base + 1


def test_limits_on_quotes(base):
    b = PaperBroker()
    buy = order(Side.BUY, OrderType.LIMIT, limit=base)
    sell = order(Side.SELL, OrderType.LIMIT, limit=base + 2)
    b.submit(buy, 1)
    b.submit(sell, 1)
    assert b.on_quote(QuoteTick("MES", 2, base - TICK, base)) == []       # ask at the limit: touch
    [f] = b.on_quote(QuoteTick("MES", 3, base - Decimal("0.5"), base - TICK))
    assert (f.client_order_id, f.price) == (buy.client_order_id, base)
    [f] = b.on_quote(QuoteTick("MES", 4, base + Decimal("2.25"), base + Decimal("2.5")))
    assert (f.client_order_id, f.price) == (sell.client_order_id, base + 2)
    t = PaperBroker(fill_on_touch=True)
    t.submit(order(Side.BUY, OrderType.LIMIT, limit=base), 1)
    assert len(t.on_quote(QuoteTick("MES", 2, base - TICK, base))) == 1


def test_fees_per_side_times_qty(base):
    b = PaperBroker(slippage_ticks=0)
    b.submit(order(Side.BUY, OrderType.MARKET, qty=3), 1)
    b.submit(order(Side.SELL, OrderType.MARKET, qty=2, inst="MNQ"), 1)
    [f1] = b.on_trade(trade(base, 2))
    [f2] = b.on_trade(trade(base * 4, 2, inst="MNQ"))
    assert f1.fee == Decimal("1.83") == get_instrument("MES").fee_per_side * 3
    assert f2.fee == Decimal("1.22")
    assert b.fees_paid() == Decimal("3.05") and b.fees_paid("MNQ") == Decimal("1.22")
    b.submit(order(Side.BUY, OrderType.MARKET, inst="ES"), 2)
    [f3] = b.on_trade(trade(base, 3, inst="ES"))
    assert f3.fee == Decimal("1.89")


def test_position_average_price_and_realized_flip(base):
    b = PaperBroker(slippage_ticks=0)
    for px, side, qty in ((base, Side.BUY, 1), (base + 1, Side.BUY, 1)):
        b.submit(order(side, OrderType.MARKET, qty=qty), 1)
        b.on_trade(trade(px))
    assert b.positions()["MES"].avg_price == base + Decimal("0.5") and b.position("MES") == 2
    b.submit(order(Side.SELL, OrderType.MARKET, qty=3), 5)     # closes 2 and opens 1 short
    b.on_trade(trade(base + 2, 5))
    pos = b.positions()["MES"]
    assert (pos.qty, pos.avg_price) == (-1, base + 2)
    assert b.realized_pnl("MES") == Decimal("15.00")            # (2 + 1) points x $5
    b.submit(order(Side.BUY, OrderType.MARKET), 6)              # short loses a point
    b.on_trade(trade(base + 3, 6))
    assert b.positions() == {} and b.realized_pnl() == Decimal("10.00")

    # FIFO partial close: realized is exact, the average of the remaining lots is exact
    f = PaperBroker(slippage_ticks=0)
    f.submit(order(Side.BUY, OrderType.MARKET), 1)
    f.on_trade(trade(base))
    f.submit(order(Side.BUY, OrderType.MARKET, qty=2), 1)
    f.on_trade(trade(base + TICK))
    avg = f.positions()["MES"].avg_price
    assert abs(avg * 3 - (3 * base + 2 * TICK)) < Decimal("1e-25")   # base + 1/6 point
    f.submit(order(Side.SELL, OrderType.MARKET), 2)
    f.on_trade(trade(base + 1))
    assert f.realized_pnl() == Decimal("5.00")                  # the oldest lot (base) closes first
    assert f.positions()["MES"].avg_price == base + TICK


def test_cancel_is_idempotent(base):
    b = PaperBroker()
    b.on_trade(trade(base))
    o = order(Side.BUY, OrderType.LIMIT, limit=base - 1)
    b.submit(o, 1)
    assert b.cancel(o.client_order_id, 2) == [OrderCancelled(o.client_order_id, "grid", 2, "cancelled")]
    assert b.cancel(o.client_order_id, 3) == []
    assert b.cancel("never-seen", 3) == []
    assert b.on_trade(trade(base - 5, 4)) == []                 # a cancelled order never fills
    filled = order(Side.BUY, OrderType.LIMIT, limit=base)
    assert len(b.submit(filled, 5)) == 1 and len(b.on_trade(trade(base - 1, 5))) == 1
    assert b.cancel(filled.client_order_id, 6) == []
    a1, a2 = (order(Side.SELL, OrderType.LIMIT, limit=base + k) for k in (1, 2))
    b.submit(a1, 7)
    b.submit(a2, 7)
    assert [c.client_order_id for c in b.cancel_all(8)] == [a1.client_order_id, a2.client_order_id]
    assert b.cancel_all(9) == [] and b.working_orders() == []


def test_rejections(base):
    b = PaperBroker()
    o = order(Side.BUY, OrderType.LIMIT, limit=base - 1, coid="dup")
    assert isinstance(b.submit(o, 1)[0], OrderAccepted)
    [r] = b.submit(order(Side.SELL, OrderType.LIMIT, limit=base + 1, coid="dup"), 2)
    assert isinstance(r, OrderRejected) and r.reason == "duplicate client_order_id"
    b.cancel("dup", 3)
    assert b.submit(o, 4)[0].reason == "duplicate client_order_id"   # still a duplicate once terminal
    cases = {
        "unknown instrument": order(Side.BUY, OrderType.MARKET, inst="ZZ"),
        "qty <= 0": order(Side.BUY, OrderType.MARKET, qty=0),
        "missing or off-tick limit price": order(Side.BUY, OrderType.LIMIT),
        "missing or off-tick stop price": order(Side.BUY, OrderType.STOP, stop=base + Decimal("0.1")),
    }
    for reason, intent in cases.items():
        [r] = b.submit(intent, 5)
        assert isinstance(r, OrderRejected) and r.reason == reason and r.client_order_id == intent.client_order_id
    assert b.submit(order(Side.BUY, OrderType.LIMIT, limit=base, coid=cases["qty <= 0"].client_order_id), 6)[0].reason \
        == "duplicate client_order_id"
    assert b.rejects["order:duplicate client_order_id"] == 3 and b.rejects["order:qty <= 0"] == 1
    assert b.working_orders() == []                             # rejected orders never rest
    # bad ticks are ignored and counted, never raised
    assert b.on_trade(TradeTick("MES", 7, base + Decimal("0.1"), 1)) == []
    assert b.on_trade(TradeTick("ZZ", 7, base, 1)) == []
    assert b.on_quote(QuoteTick("MES", 7, base, base)) == []
    assert b.last_price("MES") is None
    assert (b.rejects["trade:bad_price"], b.rejects["trade:unknown_instrument"], b.rejects["quote:crossed"]) == (1, 1, 1)


def _drive(b: PaperBroker, ticks: list[TradeTick], start: int) -> list:
    """Deterministic little strategy on real ticks: a bracket of limits and stops every 40 ticks,
    cancel-all every 150, a flattening market order every 400. Returns every broker output."""
    out: list = []
    for i, t in enumerate(ticks, start):
        out.extend(b.on_trade(t))
        if i % 40 == 0:
            for side, kind, off in ((Side.BUY, OrderType.LIMIT, -1), (Side.SELL, OrderType.LIMIT, 1),
                                    (Side.BUY, OrderType.STOP, 2), (Side.SELL, OrderType.STOP, -2)):
                px = t.price + off
                o = OrderIntent(f"{t.instrument}-{i}-{side.value}-{kind.value}", "grid", t.instrument, side,
                                1 + i % 3, kind, t.ts_ns, limit_price=px if kind is OrderType.LIMIT else None,
                                stop_price=px if kind is OrderType.STOP else None)
                out.extend(b.submit(o, t.ts_ns))
        if i % 150 == 0:
            out.extend(b.cancel_all(t.ts_ns))
        if i % 400 == 0 and b.position(t.instrument):
            q = b.position(t.instrument)
            out.extend(b.submit(OrderIntent(f"flat-{i}", "grid", t.instrument, Side.for_qty(-q), abs(q),
                                            OrderType.MARKET, t.ts_ns, reduce_only=True), t.ts_ns))
    return out


def test_snapshot_restore_is_equivalent():
    src = ReplaySource({"MES": DEMO / "ES_2min.csv.gz", "MNQ": DEMO / "NQ_2min.csv.gz"})
    ticks = list(src.events())[:6000]
    mid = 3087
    straight = PaperBroker(slippage_ticks=1, id_prefix="S")
    expected = _drive(straight, ticks, 0)

    first = PaperBroker(slippage_ticks=1, id_prefix="S")
    got = _drive(first, ticks[:mid], 0)
    saved = json.loads(json.dumps(first.snapshot()))            # must survive JSON
    assert first.working_orders() and first.positions()         # the cut is mid-activity
    restored = PaperBroker.restore(saved)
    assert restored.snapshot() == saved
    got += _drive(restored, ticks[mid:], mid)

    fills = [m for m in expected if isinstance(m, Fill)]
    assert len(fills) > 50 and got == expected
    assert restored.fills() == straight.fills()
    assert restored.positions() == straight.positions()
    assert restored.snapshot() == straight.snapshot()
    trade_ids = [f.trade_id for f in restored.fills()]
    assert len(set(trade_ids)) == len(trade_ids)                 # counters restored: ids never repeat
    snap = restored.broker_snapshot(ticks[-1].ts_ns, max_fills=5)
    assert snap.fills == tuple(straight.fills()[-5:]) and len(snap.working) == len(straight.working_orders())
    assert {p.instrument: p.qty for p in snap.positions} == {i: p.qty for i, p in straight.positions().items()}
    with pytest.raises(ValueError):
        PaperBroker.restore({"version": 99})


def test_incremental_history_restores_like_the_whole_snapshot():
    """A venue persisted as small state + appended fills/ids (history_since) restores to the
    same broker as the whole snapshot, at any cut."""
    src = ReplaySource({"MES": DEMO / "ES_2min.csv.gz", "MNQ": DEMO / "NQ_2min.csv.gz"})
    ticks = list(src.events())[:3000]
    b = PaperBroker(slippage_ticks=1, id_prefix="S")
    log_fills: list = []
    log_ids: list = []
    counts = b.history_counts()
    for start in range(0, len(ticks), 500):  # persist after every chunk, as the venue does after changes
        _drive(b, ticks[start:start + 500], start)
        new_fills, new_ids = b.history_since(*counts)
        log_fills += json.loads(json.dumps(new_fills))
        log_ids += new_ids
        counts = b.history_counts()
        small = json.loads(json.dumps(b.snapshot(history=False)))
        assert "fills" not in small and "seen" not in small
        restored = PaperBroker.restore(small, log_fills, log_ids)
        assert restored.snapshot() == b.snapshot()
    assert len(log_fills) > 20 and len(log_ids) == len(set(log_ids))
