"""StateStore against a real redis-server (session fixture ``redis_url``)."""

from __future__ import annotations

import socket
import threading
from decimal import Decimal

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from domain import codec
from domain.messages import (
    Alert, Fill, OrderAccepted, OrderCancelled, OrderIntent, OrderType, RiskState, Side, TradeTick,
)
from infra.state_store import EVENTS_MAXLEN, MAX_CLIENT_ORDER_ID_LEN, StateStore


def make_intent(coid: str = "grid-MNQ-1-1", *, price: str = "21500.25", qty: int = 2,
                ts_ns: int = 1_700_000_000_000_000_000) -> OrderIntent:
    return OrderIntent(
        client_order_id=coid, strategy_id="grid", instrument="MNQ", side=Side.BUY, qty=qty,
        order_type=OrderType.LIMIT, ts_ns=ts_ns, limit_price=Decimal(price),
        reduce_only=False, purpose="grid-entry",
    )


def make_fill(trade_id: str, *, price: str = "21500.25", ts_ns: int = 1_700_000_000_5) -> Fill:
    return Fill(
        client_order_id="grid-MNQ-1-1", strategy_id="grid", trade_id=trade_id, instrument="MNQ",
        side=Side.BUY, qty=1, price=Decimal(price), fee=Decimal("0.37"), leaves_qty=1,
        ts_ns=ts_ns, venue_order_id="V1",
    )


# --------------------------------------------------------------------------- construction


def test_requires_decode_responses(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)  # bytes client
    with pytest.raises(ValueError, match="decode_responses"):
        StateStore(raw, "tsx:x")
    raw.close()


@pytest.mark.parametrize("ns", ["", "a b", "tsx:"])
def test_rejects_bad_namespace(redis_url: str, ns: str) -> None:
    with pytest.raises(ValueError):
        StateStore.from_url(redis_url, ns)


def closed_port() -> int:
    """A port number nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ping(store: StateStore) -> None:
    assert store.ping() is True
    dead = StateStore(redis.Redis(port=closed_port(), decode_responses=True, socket_timeout=0.5,
                                  retry=Retry(NoBackoff(), 0)), "tsx:dead")
    assert dead.ping() is False
    dead.close()


# --------------------------------------------------------------------------- meta & ids


def test_meta_and_incarnation(store: StateStore) -> None:
    assert store.load_meta() == {}
    assert store.new_incarnation() == 1
    assert store.new_incarnation() == 2
    store.save_meta(mode="paper", config_hash="abc123", started_ns=42, incarnation=2)
    assert store.client.hgetall(f"{store.namespace}:meta") == {
        "mode": "paper", "config_hash": "abc123", "started_ns": "42", "incarnation": "2"}
    assert store.load_meta()["mode"] == "paper"
    assert store.client.get(f"{store.namespace}:incarnation") == "2"


def test_client_order_ids_unique_and_formatted(store: StateStore, redis_url: str) -> None:
    a = store.next_client_order_id("grid", "MNQ", 3)
    b = store.next_client_order_id("grid", "MNQ", 3)
    assert a == "grid-MNQ-3-1" and b == "grid-MNQ-3-2"
    # A new StateStore on the same namespace (process restart) continues the sequence.
    again = StateStore.from_url(redis_url, store.namespace)
    assert again.next_client_order_id("grid", "MNQ", 4) == "grid-MNQ-4-3"
    again.close()


def test_client_order_id_length_capped(store: StateStore) -> None:
    coid = store.next_client_order_id("s" * 60, "CON.F.US.MNQ.Z25", 123456)
    assert len(coid) <= MAX_CLIENT_ORDER_ID_LEN
    assert coid.endswith("-CON.F.US.MNQ.Z25-123456-1")
    coid2 = store.next_client_order_id("grid", "I" * 80, 1)
    assert len(coid2) <= MAX_CLIENT_ORDER_ID_LEN and coid2.startswith("grid-") \
        and coid2.endswith("-1-2")


def test_client_order_ids_unique_across_threads(store: StateStore) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [store.next_client_order_id("grid", "MNQ", 1) for _ in range(50)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 400 and len(set(ids)) == 400
    assert store.client.get(f"{store.namespace}:seq:orders") == "400"


# --------------------------------------------------------------------------- orders


def test_save_order_writes_schema_visible_to_other_clients(store: StateStore, redis_url: str) -> None:
    intent = make_intent()
    store.save_order(intent, "PENDING")
    # An independent connection sees it as soon as save_order returned.
    other = redis.Redis.from_url(redis_url, decode_responses=True)
    raw = other.hgetall(f"{store.namespace}:order:{intent.client_order_id}")
    other_working = other.smembers(f"{store.namespace}:orders:working")
    other.close()
    assert raw == {
        "intent": codec.dumps(intent), "status": "PENDING", "venue_order_id": "",
        "filled_qty": "0", "avg_fill_price": "", "updated_ns": str(intent.ts_ns), "reason": "",
    }
    assert other_working == {intent.client_order_id}


def test_load_order_round_trip_exact(store: StateStore) -> None:
    intent = make_intent(price="21500.250")
    store.save_order(intent, "PARTIALLY_FILLED", venue_order_id="V9", filled_qty=1,
                     avg_fill_price=Decimal("21500.250"), reason="", ts_ns=99)
    rec = store.load_order(intent.client_order_id)
    assert rec is not None
    assert rec["intent"] == intent
    assert rec["intent"].limit_price.as_tuple() == Decimal("21500.250").as_tuple()
    assert rec["status"] == "PARTIALLY_FILLED"
    assert rec["venue_order_id"] == "V9"
    assert rec["filled_qty"] == 1
    assert rec["avg_fill_price"] == Decimal("21500.250")
    assert str(rec["avg_fill_price"]) == "21500.250"
    assert rec["updated_ns"] == 99
    assert store.load_order("nope") is None


def test_status_updates_move_working_set(store: StateStore) -> None:
    a, b, c = make_intent("a"), make_intent("b"), make_intent("c")
    for i in (a, b, c):
        store.save_order(i, "SUBMITTED")
    assert set(store.load_working_orders()) == {"a", "b", "c"}

    store.update_order_status("a", "ACCEPTED", venue_order_id="V1", ts_ns=5)
    store.update_order_status("b", "FILLED", filled_qty=2, avg_fill_price="21500.50", ts_ns=6)
    store.update_order_status("c", "REJECTED", reason="price out of band", ts_ns=7)

    working = store.load_working_orders()
    assert set(working) == {"a"}
    assert working["a"]["status"] == "ACCEPTED" and working["a"]["venue_order_id"] == "V1"
    assert working["a"]["intent"] == a
    b_rec = store.load_order("b")
    assert b_rec is not None and b_rec["filled_qty"] == 2
    assert b_rec["avg_fill_price"] == Decimal("21500.50") and b_rec["updated_ns"] == 6
    c_rec = store.load_order("c")
    assert c_rec is not None and c_rec["reason"] == "price out of band"
    assert c_rec["intent"] == c  # untouched fields survive a partial update

    store.update_order_status("a", "CANCELLED")
    assert store.load_working_orders() == {}
    assert store.client.scard(f"{store.namespace}:orders:working") == 0


def test_update_accepts_updated_ns_alias(store: StateStore) -> None:
    store.save_order(make_intent("u"), "SUBMITTED")
    store.update_order_status("u", "ACCEPTED", updated_ns=123, venue_order_id="V7")
    rec = store.load_order("u")
    assert rec is not None and rec["updated_ns"] == 123 and rec["venue_order_id"] == "V7"


@pytest.mark.parametrize("status", ["FILLED", "CANCELLED", "REJECTED", "DENIED"])
def test_terminal_save_not_working(store: StateStore, status: str) -> None:
    store.save_order(make_intent("t"), status)
    assert store.load_working_orders() == {}
    rec = store.load_order("t")
    assert rec is not None and rec["status"] == status


def test_update_unknown_order_raises_and_writes_nothing(store: StateStore) -> None:
    with pytest.raises(KeyError):
        store.update_order_status("ghost", "ACCEPTED", venue_order_id="V")
    assert store.client.exists(f"{store.namespace}:order:ghost") == 0
    assert store.client.sismember(f"{store.namespace}:orders:working", "ghost") == 0


def test_update_rejects_unknown_field_and_bad_status(store: StateStore) -> None:
    store.save_order(make_intent("x"), "SUBMITTED")
    with pytest.raises(TypeError, match="bogus"):
        store.update_order_status("x", "ACCEPTED", bogus=1)
    with pytest.raises(ValueError):
        store.update_order_status("x", "")
    rec = store.load_order("x")
    assert rec is not None and rec["status"] == "SUBMITTED"


def test_save_order_accepts_enum_status(store: StateStore) -> None:
    store.save_order(make_intent("e"), RiskState.HALTED)  # any str-valued enum
    rec = store.load_order("e")
    assert rec is not None and rec["status"] == "HALTED"


# --------------------------------------------------------------------------- fills


def test_record_order_event_updates_known_orders_and_journals_all(store: StateStore) -> None:
    store.save_order(make_intent("k"), "SUBMITTED")
    acc = OrderAccepted("k", "grid", "V9", 11)
    assert store.record_order_event(acc, "ACCEPTED", venue_order_id="V9", ts_ns=11) is True
    rec = store.load_order("k")
    assert rec is not None and rec["status"] == "ACCEPTED" and rec["venue_order_id"] == "V9" and rec["updated_ns"] == 11
    assert set(store.load_working_orders()) == {"k"}
    ghost = OrderCancelled("ghost", "risk", 12, "emergency flatten")
    assert store.record_order_event(ghost, "CANCELLED", reason="x", ts_ns=12) is False
    assert store.client.exists(f"{store.namespace}:order:ghost") == 0   # unknown order: journal only
    assert store.read_events() == [acc, ghost]
    store.record_order_event(OrderCancelled("k", "grid", 13, "by strategy"), "CANCELLED", reason="by strategy")
    assert store.load_working_orders() == {}


def test_record_fill_and_status_counts_filled_qty_once(store: StateStore) -> None:
    store.save_order(make_intent("grid-MNQ-1-1", qty=2), "ACCEPTED")
    part = make_fill("T1")                                               # leaves 1
    assert store.record_fill_and_status(part) is True
    rec = store.load_order("grid-MNQ-1-1")
    assert rec is not None and rec["status"] == "PARTIALLY_FILLED" and rec["filled_qty"] == 1
    assert store.record_fill_and_status(part) is False                   # duplicate: nothing written
    last = Fill(**{**{f: getattr(part, f) for f in part.__dataclass_fields__}, "trade_id": "T2", "leaves_qty": 0})
    assert store.record_fill_and_status(last) is True
    rec = store.load_order("grid-MNQ-1-1")
    assert rec is not None and rec["status"] == "FILLED" and rec["filled_qty"] == 2
    assert store.load_working_orders() == {} and store.event_count() == 2


def test_record_fill_dedupes_and_journals(store: StateStore) -> None:
    f1 = make_fill("T1")
    assert store.record_fill(f1) is True
    assert store.record_fill(f1) is False
    assert store.record_fill(make_fill("T1", price="1.00")) is False  # same trade id
    assert store.record_fill(make_fill("T2")) is True
    assert store.fill_seen("T1") and store.fill_seen("T2") and not store.fill_seen("T3")
    assert store.event_count() == 2
    events = store.read_events()
    assert events == [f1, make_fill("T2")]
    entries = store.client.xrange(f"{store.namespace}:events")
    assert entries[0][1]["type"] == "Fill" and entries[0][1]["ts_ns"] == str(f1.ts_ns)


def test_record_fill_concurrent_duplicates_once(store: StateStore) -> None:
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        r = store.record_fill(make_fill("SAME"))
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.event_count() == 1


# --------------------------------------------------------------------------- positions & risk


def test_positions_replace_and_exact(store: StateStore) -> None:
    store.save_positions({
        "MNQ": {"qty": -3, "avg_price": Decimal("21500.25"), "realized": Decimal("-12.50"),
                "fees": Decimal("2.22")},
        "MES": {"qty": 1, "avg_price": "5900.00"},
    })
    raw = store.client.hgetall(f"{store.namespace}:positions")
    assert raw["MNQ"] == '{"avg_price":"21500.25","fees":"2.22","qty":-3,"realized":"-12.50"}'
    pos = store.load_positions()
    assert pos["MNQ"] == {"qty": -3, "avg_price": Decimal("21500.25"),
                          "realized": Decimal("-12.50"), "fees": Decimal("2.22")}
    assert str(pos["MES"]["avg_price"]) == "5900.00"
    assert pos["MES"]["realized"] == 0 and pos["MES"]["fees"] == 0

    store.save_positions({"MES": {"qty": 0, "avg_price": "0", "realized": "7.5", "fees": "1"}})
    assert set(store.load_positions()) == {"MES"}  # MNQ gone: whole hash replaced
    store.save_positions({})
    assert store.load_positions() == {}


def test_risk_replace(store: StateStore) -> None:
    store.save_risk({"state": RiskState.REDUCING, "day_pnl": Decimal("-150.25"), "trades": 7})
    assert store.load_risk() == {"state": "REDUCING", "day_pnl": "-150.25", "trades": "7"}
    store.save_risk({"state": "ACTIVE"})
    assert store.load_risk() == {"state": "ACTIVE"}


# --------------------------------------------------------------------------- snapshots


def test_strategy_and_blob_snapshots(store: StateStore) -> None:
    assert store.load_strategy("grid") is None and store.load_blob("paper") is None
    state = {"mid": Decimal("21500.125"), "levels": (1, 2, 3), "side": Side.SELL,
             "last_tick": TradeTick("MNQ", 5, Decimal("1.25"), 2)}
    store.save_strategy("grid", state)
    got = store.load_strategy("grid")
    assert got == {"mid": "21500.125", "levels": [1, 2, 3], "side": "SELL",
                   "last_tick": codec.encode(TradeTick("MNQ", 5, Decimal("1.25"), 2))}
    assert codec.decode(got["last_tick"]) == TradeTick("MNQ", 5, Decimal("1.25"), 2)

    store.save_blob("feed_cursor", {"ts_ns": 123, "seq": 4})
    assert store.load_blob("feed_cursor") == {"ts_ns": 123, "seq": 4}
    assert store.client.type(f"{store.namespace}:blob:feed_cursor") == "string"
    with pytest.raises(TypeError):
        store.save_blob("bad", {"x": object()})


# --------------------------------------------------------------------------- events


def test_events_newest_last(store: StateStore) -> None:
    msgs = [Alert("info", f"k{i}", f"text {i}", ts_ns=i) for i in range(10)]
    ids = [store.append_event(m) for m in msgs]
    assert len(set(ids)) == 10
    assert store.event_count() == 10
    assert store.read_events(count=3) == msgs[-3:]
    assert store.read_events() == msgs
    fields = store.client.xrange(f"{store.namespace}:events", count=1)[0][1]
    assert fields == {"type": "Alert", "ts_ns": "0", "json": codec.dumps(msgs[0])}


def test_events_stream_is_capped(store: StateStore) -> None:
    key = f"{store.namespace}:events"
    extra = 1_000
    # Fill the stream past the cap server-side (one round trip instead of 200k).
    store.client.eval(
        "for i = 1, tonumber(ARGV[1]) do "
        "redis.call('XADD', KEYS[1], '*', 'type', 'x', 'ts_ns', '0', 'json', '{}') end",
        1, key, EVENTS_MAXLEN + extra)
    assert store.client.xlen(key) == EVENTS_MAXLEN + extra
    store.append_event(Alert("info", "k", "last", 1))
    n = store.event_count()
    assert EVENTS_MAXLEN <= n < EVENTS_MAXLEN + extra  # trimmed (approximately) to the cap
    assert store.read_events(count=1) == [Alert("info", "k", "last", 1)]


# --------------------------------------------------------------------------- heartbeat & flush


def test_heartbeat_has_ttl(store: StateStore) -> None:
    assert store.last_heartbeat("risk") is None
    store.heartbeat("risk", 1_700_000_000_000_000_000, ttl_s=30)
    key = f"{store.namespace}:heartbeat:risk"
    assert store.client.get(key) == "1700000000000000000"
    assert 0 < store.client.ttl(key) <= 30
    assert store.last_heartbeat("risk") == 1_700_000_000_000_000_000


def test_flush_only_own_namespace(store: StateStore, redis_url: str) -> None:
    neighbour = StateStore.from_url(redis_url, store.namespace + "x")  # shares a prefix
    try:
        store.save_order(make_intent(), "SUBMITTED")
        store.record_fill(make_fill("T1"))
        store.save_blob("b", {"a": 1})
        store.new_incarnation()
        neighbour.save_blob("b", {"keep": True})
        assert store.flush() == 6  # order, working, fills:seen, events, blob, incarnation
        assert list(store.client.scan_iter(match=f"{store.namespace}:*")) == []
        assert neighbour.load_blob("b") == {"keep": True}
    finally:
        neighbour.flush()
        neighbour.close()


def test_positions_roundtrip_with_a_flat_instrument(store):
    """A flat instrument's position (realized P&L kept) is saved with an empty average price."""
    from domain.instruments import get_instrument
    from domain.portfolio import Position
    flat = Position(get_instrument("MES"))
    flat.realized = Decimal("12.50")
    store.save_positions({"MES": flat.to_dict(), "MNQ": {"qty": -2, "avg_price": "25100.25"}})
    got = store.load_positions()
    assert got["MES"] == {"qty": 0, "avg_price": None, "realized": Decimal("12.50"), "fees": Decimal("0")}
    assert got["MNQ"]["qty"] == -2 and got["MNQ"]["avg_price"] == Decimal("25100.25")


def test_blob_incremental_appends_history_atomically(store: StateStore, redis_url: str) -> None:
    store.save_blob_incremental("venue", {"n": 1}, [{"trade_id": "T1", "px": Decimal("1.25")}], ["c1", "c2"])
    store.save_blob_incremental("venue", {"n": 2}, [], ["c3"])
    store.save_blob_incremental("venue", {"n": 3}, [{"trade_id": "T2"}], [])
    assert store.load_blob("venue") == {"n": 3}
    entries, ids = store.load_blob_history("venue")
    assert entries == [{"px": "1.25", "trade_id": "T1"}, {"trade_id": "T2"}] and ids == ["c1", "c2", "c3"]
    other = redis.Redis.from_url(redis_url, decode_responses=True)  # plain redis-cli view of the schema
    assert other.lrange(store.key("blob", "venue", "ids"), 0, -1) == ["c1", "c2", "c3"]
    assert store.load_blob_history("nothing") == ([], [])


@pytest.mark.parametrize("final", ["FILLED", "CANCELLED", "REJECTED"])
def test_a_late_acknowledgement_never_makes_a_terminal_order_working_again(store: StateStore, final: str) -> None:
    """Live, the user hub's fill and the place answer can reach the router in either order: an
    OrderAccepted after the fill is journalled but leaves the order terminal and out of the
    working set (else a restart would rebuild it into risk's book as working)."""
    from domain.messages import OrderAccepted
    store.save_order(make_intent("late"), "SUBMITTED")
    store.update_order_status("late", final, ts_ns=5)
    assert store.record_order_event(OrderAccepted("late", "grid-MES", "V1", 6), "ACCEPTED", venue_order_id="V1") is True
    rec = store.load_order("late")
    assert rec is not None and rec["status"] == final and rec["venue_order_id"] == ""
    assert store.load_working_orders() == {}
    assert [e.client_order_id for e in store.read_events()] == ["late"]  # journalled all the same
