"""Live mode end to end: the real supervisor (subprocess) against the sandbox gateway on real sockets.

The sandbox replays 2026-04-08 at 1000x (one trading day in ~83 s); the system trades it through
REST + the user/market hubs exactly as it would TopstepX.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

from infra.state_store import StateStore
from tests.live_support import placed_tags, start_live, stop_supervisor, supervisor_env, wait_for


def test_live_armed_trades_grid_and_hedge_and_reconciles(gw, redis_url, tmp_path):
    ns = f"test:live:{uuid.uuid4().hex[:6]}"
    store = StateStore.from_url(redis_url, ns)
    p = start_live(gw.base_url, tmp_path, ns, "--account", "1001", "--arm", env=supervisor_env(redis_url))
    try:
        traded = wait_for(lambda: any(t.startswith("grid-MES") for t in placed_tags(gw))
                       and any(t.startswith("hedge") for t in placed_tags(gw)) and len(gw.trades(1001)) >= 3, 90, p)
    finally:
        out = stop_supervisor(p)
    assert traded, (placed_tags(gw), out[-4000:])
    assert p.returncode == 0, out[-4000:]
    assert "=== session summary (live)" in out and "open positions at exit: none" in out, out[-3000:]
    tags = placed_tags(gw)
    assert not [t for t, n in Counter(tags).items() if n > 1], "a customTag was placed twice"
    # the gateway and the Redis mirror agree: flat on both sides, every venue trade journalled once
    assert gw.positions(1001) == [] and gw.open_orders(1001) == []
    risk_pos = store.load_strategy("risk")["portfolio"]["positions"]
    assert all(sum(int(q) for _, q in v.get("lots", [])) == 0 for v in risk_pos.values()), risk_pos
    venue_trades = {str(t["id"]) for t in gw.trades(1001)}
    assert venue_trades == set(store.client.smembers(store.key("fills", "seen"))), out[-3000:]
    assert store.load_working_orders() == {}
    assert store.load_meta()["mode"] == "live"
    store.flush()


def test_live_unarmed_places_nothing_until_armed_by_ops_key(gw, redis_url, tmp_path):
    ns = f"test:live:{uuid.uuid4().hex[:6]}"
    store = StateStore.from_url(redis_url, ns)
    p = start_live(gw.base_url, tmp_path, ns, "--account", "1001", env=supervisor_env(redis_url))
    try:
        holds = lambda: store.client.hget(store.key("risk"), "holds") or ""  # noqa: E731
        # market data flows and risk holds "unarmed", for ~1 h of replay time: no order at all
        assert wait_for(lambda: len(gw.quote_sent_ns) > 200 and "unarmed" in holds(), 40, p), holds()
        time.sleep(4)
        assert gw.orders_received == []
        assert store.client.get(store.key("ops", "armed")) == "0"
        # the operator arms: orders reach the gateway
        store.client.set(store.key("ops", "armed"), "1")
        assert wait_for(lambda: len(gw.orders_received) > 0, 60, p)
        assert wait_for(lambda: "unarmed" not in holds(), 10, p)
        # ... and disarms: working strategy orders are cancelled and no new one is placed
        store.client.set(store.key("ops", "armed"), "0")
        assert wait_for(lambda: gw.open_orders(1001) == [], 15, p), gw.open_orders(1001)
        time.sleep(1)
        n = len(gw.orders_received)
        time.sleep(3)
        assert len(gw.orders_received) == n or all(b.get("customTag", "").startswith("risk")
                                                   for _, b in gw.orders_received[n:])
    finally:
        out = stop_supervisor(p)
    assert p.returncode == 0, out[-4000:]
    assert not [t for t, c in Counter(placed_tags(gw)).items() if c > 1]
    store.flush()


def test_live_funded_account_refused_without_confirm(gw, redis_url, tmp_path):
    p = start_live(gw.base_url, tmp_path, "test:live:funded", "--account", "1002", env=supervisor_env(redis_url))
    out = stop_supervisor(p, 60) if p.wait(60) is None else p.communicate()[0]
    assert p.returncode == 2, out
    assert "funded account" in out and "--confirm-funded" in out
    assert gw.orders_received == []


def test_live_startup_refusals(gw, redis_url, tmp_path):
    # missing credentials: exit 2 before any connection
    p = start_live(gw.base_url, tmp_path, "test:live:x", "--account", "1001", env=supervisor_env(redis_url, creds=False))
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 2 and "PROJECTX_USERNAME" in out and "PROJECTX_API_KEY" in out, out
    # wrong API key: the login is refused, exit 2, and the key is never printed
    env = {**supervisor_env(redis_url), "PROJECTX_API_KEY": "wrong-secret-key"}
    p = start_live(gw.base_url, tmp_path, "test:live:x", "--account", "1001", env=env)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 2 and "login refused" in out, out
    assert "wrong-secret-key" not in out
    # unknown account: exit 2 naming the available ones
    p = start_live(gw.base_url, tmp_path, "test:live:x", "--account", "9999", env=supervisor_env(redis_url))
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 2 and "9999" in out and "1001" in out, out


def test_live_reconnects_and_reconciles_after_dropped_connections(gw, redis_url, tmp_path):
    ns = f"test:live:{uuid.uuid4().hex[:6]}"
    store = StateStore.from_url(redis_url, ns)
    p = start_live(gw.base_url, tmp_path, ns, "--account", "1001", "--arm", env=supervisor_env(redis_url))
    try:
        assert wait_for(lambda: len(gw.trades(1001)) >= 1, 60, p)
        gw.faults.drop_connections()  # both hubs, no close handshake, mid-session
        time.sleep(0.5)
        n = len(gw.orders_received)
        assert wait_for(lambda: len(gw.orders_received) > n or len(gw.trades(1001)) >= 3, 60, p)  # still trading
    finally:
        out = stop_supervisor(p)
    assert p.returncode == 0, out[-4000:]
    assert not [t for t, c in Counter(placed_tags(gw)).items() if c > 1], "a customTag was placed twice"
    assert gw.positions(1001) == [] and gw.open_orders(1001) == []
    assert {str(t["id"]) for t in gw.trades(1001)} == set(store.client.smembers(store.key("fills", "seen")))
    assert "actor restarts: none" in out, out[-3000:]
    # the user hub came back and asked for a reconciliation, which matched
    assert "reconciliation needed: user hub reconnected" in out, out[-4000:]
    after = out[out.index("reconciliation needed: user hub reconnected"):]
    assert "reconciliation ok: user hub reconnected" in after, after[:3000]
    assert "reconciliation MISMATCH" not in out
    store.flush()
