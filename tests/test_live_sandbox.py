"""Live mode end to end: the real supervisor (subprocess) against the sandbox gateway on real sockets.

The sandbox replays 2026-04-08 at 1000x (one trading day in ~83 s); the system trades it through
REST + the user/market hubs exactly as it would TopstepX.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from infra.sandbox.server import SandboxConfig, SandboxGateway
from infra.state_store import StateStore

ROOT = Path(__file__).resolve().parents[1]
CREDS = {"PROJECTX_USERNAME": "sandbox", "PROJECTX_API_KEY": "sandbox-key"}


@pytest.fixture
def gw():
    g = SandboxGateway(SandboxConfig(data_dir=ROOT / "data" / "demo", speed=1000.0, start=dt.date(2026, 4, 8),
                                     end=dt.date(2026, 4, 8)))
    g.start()
    try:
        yield g
    finally:
        g.stop()


def _env(redis_url: str | None, creds: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLACK_WEBHOOK_URL", "PROJECTX_USERNAME", "PROJECTX_API_KEY", "REDIS_URL")}
    if redis_url:
        env["REDIS_URL"] = redis_url
    if creds:
        env.update(CREDS)
    return env


def _live(base_url: str, tmp_path: Path, ns: str, *extra: str, env: dict[str, str]) -> subprocess.Popen:
    args = ["--mode", "live", "--base-url", base_url, "--rtc-url", base_url, "--namespace", ns,
            "--run-dir", str(tmp_path), "--metrics-port", "0", *extra]
    return subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(cond, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def _stop(proc: subprocess.Popen, timeout: float = 60) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return out


def _tags(gw: SandboxGateway) -> list[str]:
    return [body.get("customTag") or "" for _, body in gw.orders_received]


def test_live_armed_trades_grid_and_hedge_and_reconciles(gw, redis_url, tmp_path):
    ns = f"test:live:{uuid.uuid4().hex[:6]}"
    store = StateStore.from_url(redis_url, ns)
    p = _live(gw.base_url, tmp_path, ns, "--account", "1001", "--arm", env=_env(redis_url))
    try:
        traded = _wait(lambda: any(t.startswith("grid-MES") for t in _tags(gw))
                       and any(t.startswith("hedge") for t in _tags(gw)) and len(gw.trades(1001)) >= 3, 90, p)
    finally:
        out = _stop(p)
    assert traded, (_tags(gw), out[-4000:])
    assert p.returncode == 0, out[-4000:]
    assert "=== session summary (live)" in out and "open positions at exit: none" in out, out[-3000:]
    tags = _tags(gw)
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
    p = _live(gw.base_url, tmp_path, ns, "--account", "1001", env=_env(redis_url))
    try:
        holds = lambda: store.client.hget(store.key("risk"), "holds") or ""  # noqa: E731
        # market data flows and risk holds "unarmed", for ~1 h of replay time: no order at all
        assert _wait(lambda: len(gw.quote_sent_ns) > 200 and "unarmed" in holds(), 40, p), holds()
        time.sleep(4)
        assert gw.orders_received == []
        assert store.client.get(store.key("ops", "armed")) == "0"
        # the operator arms: orders reach the gateway
        store.client.set(store.key("ops", "armed"), "1")
        assert _wait(lambda: len(gw.orders_received) > 0, 60, p)
        assert _wait(lambda: "unarmed" not in holds(), 10, p)
        # ... and disarms: working strategy orders are cancelled and no new one is placed
        store.client.set(store.key("ops", "armed"), "0")
        assert _wait(lambda: gw.open_orders(1001) == [], 15, p), gw.open_orders(1001)
        time.sleep(1)
        n = len(gw.orders_received)
        time.sleep(3)
        assert len(gw.orders_received) == n or all(b.get("customTag", "").startswith("risk")
                                                   for _, b in gw.orders_received[n:])
    finally:
        out = _stop(p)
    assert p.returncode == 0, out[-4000:]
    assert not [t for t, c in Counter(_tags(gw)).items() if c > 1]
    store.flush()


def test_live_funded_account_refused_without_confirm(gw, redis_url, tmp_path):
    p = _live(gw.base_url, tmp_path, "test:live:funded", "--account", "1002", env=_env(redis_url))
    out = _stop(p, 60) if p.wait(60) is None else p.communicate()[0]
    assert p.returncode == 2, out
    assert "funded account" in out and "--confirm-funded" in out
    assert gw.orders_received == []


def test_live_startup_refusals(gw, redis_url, tmp_path):
    # missing credentials: exit 2 before any connection
    p = _live(gw.base_url, tmp_path, "test:live:x", "--account", "1001", env=_env(redis_url, creds=False))
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 2 and "PROJECTX_USERNAME" in out and "PROJECTX_API_KEY" in out, out
    # wrong API key: the login is refused, exit 2, and the key is never printed
    env = {**_env(redis_url), "PROJECTX_API_KEY": "wrong-secret-key"}
    p = _live(gw.base_url, tmp_path, "test:live:x", "--account", "1001", env=env)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 2 and "login refused" in out, out
    assert "wrong-secret-key" not in out
    # unknown account: exit 2 naming the available ones
    p = _live(gw.base_url, tmp_path, "test:live:x", "--account", "9999", env=_env(redis_url))
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 2 and "9999" in out and "1001" in out, out


def test_live_reconnects_and_reconciles_after_dropped_connections(gw, redis_url, tmp_path):
    ns = f"test:live:{uuid.uuid4().hex[:6]}"
    store = StateStore.from_url(redis_url, ns)
    p = _live(gw.base_url, tmp_path, ns, "--account", "1001", "--arm", env=_env(redis_url))
    try:
        assert _wait(lambda: len(gw.trades(1001)) >= 1, 60, p)
        gw.faults.drop_connections()  # both hubs, no close handshake, mid-session
        time.sleep(0.5)
        n = len(gw.orders_received)
        assert _wait(lambda: len(gw.orders_received) > n or len(gw.trades(1001)) >= 3, 60, p)  # still trading
    finally:
        out = _stop(p)
    assert p.returncode == 0, out[-4000:]
    assert not [t for t, c in Counter(_tags(gw)).items() if c > 1], "a customTag was placed twice"
    assert gw.positions(1001) == [] and gw.open_orders(1001) == []
    assert {str(t["id"]) for t in gw.trades(1001)} == set(store.client.smembers(store.key("fills", "seen")))
    assert "actor restarts: none" in out, out[-3000:]
    # the user hub came back and asked for a reconciliation, which matched
    assert "reconciliation needed: user hub reconnected" in out, out[-4000:]
    after = out[out.index("reconciliation needed: user hub reconnected"):]
    assert "reconciliation ok: user hub reconnected" in after, after[:3000]
    assert "reconciliation MISMATCH" not in out
    store.flush()
