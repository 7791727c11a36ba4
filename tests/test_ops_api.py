"""The ops API (infra/ops_api.py, actors/ops.py, docs/operations.md) against a real paper node:
health, status read from the actors, pause / resume / flatten with the bearer
token (401 without it), 409 for arm in paper mode, 404 for unknown paths, the same commands from
Redis (as ``redis-cli RPUSH``), and every command journalled with who and where from."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from domain.messages import OperatorCommand
from infra.state_store import StateStore

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-ops-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(cond, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = cond()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


@pytest.fixture
def paper_node(redis_url, tmp_path):
    """A paper node on the bundled data (one day at 300x, slow enough to act on), ops API on a free
    port with ``OPS_TOKEN``; yields ``(base url, store)`` and stops it with SIGTERM."""
    port = _free_port()
    ns = f"test:ops:{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if k not in ("SLACK_WEBHOOK_URL", "PROJECTX_USERNAME",
                                                               "PROJECTX_API_KEY")}
    env.update(REDIS_URL=redis_url, OPS_TOKEN=TOKEN)
    p = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper", "--profile", "combine-150k",
                          "--start", "2026-04-09", "--end", "2026-04-09", "--speed", "300", "--namespace", ns,
                          "--run-dir", str(tmp_path), "--metrics-port", "0", "--ops-port", str(port)],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    store = StateStore.from_url(redis_url, ns)
    try:
        ready = _until(lambda: httpx.get(base + "/health", timeout=2).status_code == 200, 60)
        assert ready, p.stdout.read() if p.poll() is not None else "node not ready in 60 s"
        yield base, store
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
        assert p.returncode == 0, out[-3000:]


def _post(base: str, cmd: str, token: str | None = TOKEN, who: str = "alice") -> httpx.Response:
    headers = {"X-Operator": who}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{base}/ops/{cmd}", headers=headers, timeout=10)


def _commands(store: StateStore) -> list[OperatorCommand]:
    return [e for e in store.read_events(2000) if isinstance(e, OperatorCommand)]


def test_ops_api_controls_a_paper_node_with_a_token_and_from_redis(paper_node):
    base, store = paper_node
    health = httpx.get(base + "/health").json()
    assert health == {"live": True, "ready": True}
    status = httpx.get(base + "/ops/status").json()
    assert status["mode"] == "paper" and status["profile"] == "combine-150k" and status["armed"] is None
    assert status["risk"]["state"] == "ACTIVE" and status["strategies"], status
    assert all("stats" in s and s["kind"] for s in status["strategies"].values())
    assert status["account"]["profit_target"] == "9000.00" and status["account"]["mll_headroom"] is not None
    assert status["namespace"] == store.namespace

    assert _post(base, "pause", token=None).status_code == 401
    assert _post(base, "pause", token="wrong").status_code == 401
    assert not [c for c in _commands(store) if c.command == "pause"]  # refused ones are not carried out
    r = _post(base, "pause")
    assert r.status_code == 200 and r.json()["by"] == "alice"
    paused = _until(lambda: httpx.get(base + "/ops/status").json()["risk"]["state"] == "REDUCING", 10)
    assert paused and "operator" in httpx.get(base + "/ops/status").json()["risk"]["holds"]
    assert httpx.get(base + "/health").status_code == 200  # REDUCING still trades (exits)

    assert _post(base, "arm").status_code == 409  # paper mode has no arming
    assert httpx.post(base + "/ops/nothing", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert httpx.get(base + "/nothing").status_code == 404
    metrics = httpx.get(base + "/metrics")
    assert metrics.status_code == 200 and "tsx_" in metrics.text

    # the same command from Redis, as `redis-cli RPUSH <ns>:ops:commands "resume bob"`
    store.client.rpush(store.key("ops", "commands"), "resume bob")
    resumed = _until(lambda: httpx.get(base + "/ops/status").json()["risk"]["state"] == "ACTIVE", 15)
    assert resumed
    assert _post(base, "flatten", who="carol").status_code == 200
    flat = _until(lambda: httpx.get(base + "/ops/status").json()["positions"] == {}, 20)
    assert flat is not None

    # a daily report of the day so far, on demand
    r = _post(base, "report", who="dave")
    assert r.status_code == 200 and r.json()["result"].startswith("report written: ")
    written = Path(r.json()["result"].removeprefix("report written: "))
    assert written.is_file() and written.parent.name == "daily" and "Rule checks" in written.read_text()
    journal = [(c.command, c.who, c.source) for c in _commands(store)]
    assert ("pause", "alice", "http") in journal and ("resume", "bob", "redis") in journal
    assert ("flatten", "carol", "http") in journal
    assert any(c.command == "arm" and c.result.startswith("refused") for c in _commands(store))


def test_commands_are_off_without_a_token():
    from infra.ops_api import OpsServer

    class Desk:
        def command(self, *a):  # never reached
            raise AssertionError("carried out without a token")

        def status(self):
            return {"mode": "paper"}

    server = OpsServer(Desk(), lambda: "starting: the actor tree is not up yet", token=None)
    port = server.start(0)
    try:
        base = f"http://127.0.0.1:{port}"
        assert _post(base, "flatten").status_code == 503
        h = httpx.get(base + "/health")
        assert h.status_code == 503 and h.json()["reason"].startswith("starting")
        assert httpx.get(base + "/ops/status").json() == {"mode": "paper"}
        assert httpx.get(base + "/metrics").status_code == 404  # no registry given
    finally:
        server.stop()
