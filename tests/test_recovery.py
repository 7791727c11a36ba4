"""kill -9 of a paper session with working orders, then a restart against the same Redis."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from infra.state_store import StateStore
from tests.live_support import E2E_PROFILE

ROOT = Path(__file__).resolve().parents[1]


def _run(args, env, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper",
                             "--profile", E2E_PROFILE, *args], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_kill9_then_resume_no_duplicate_no_lost_fill(redis_url, tmp_path):
    ns = f"test:rec:{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "REDIS_URL": redis_url}
    for name in ("PROJECTX_USERNAME", "PROJECTX_API_KEY"):  # replay, not live market data
        env.pop(name, None)
    env.pop("SLACK_WEBHOOK_URL", None)
    args = ["--start", "2026-04-08", "--end", "2026-04-08", "--namespace", ns, "--run-dir", str(tmp_path),
            "--metrics-port", "0", "--ops-port", "0"]
    store = StateStore.from_url(redis_url, ns)
    p = _run(args + ["--speed", "1500"], env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if store.load_working_orders() and store.client.scard(store.key("fills", "seen")) >= 1:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("no working orders and fills before the kill")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    # the kill follows the check within a few ms; orders that filled in between leave fills instead
    assert store.load_working_orders() or store.load_blob_history("paper_broker")[0], \
        "working orders or fills must be mirrored at the kill"
    fills_before = store.client.scard(store.key("fills", "seen"))

    q = _run(args + ["--speed", "max"], env)
    out, _ = q.communicate(timeout=240)
    assert q.returncode == 0, out[-3000:]
    assert "(resuming)" in out  # the venue state was found in Redis
    assert "rule check - MLL floor never touched: PASS" in out
    assert "rule check - flat by 15:10 CT every day: PASS" in out
    assert "open positions at exit: none" in out, out[-5000:]
    # one trades CSV across both runs: every client order id fills at most its qty, trade ids unique
    trades = list(csv.DictReader(next((tmp_path / "trades").glob("*.csv")).open()))
    trade_ids = [r["trade_id"] for r in trades]
    assert len(trade_ids) == len(set(trade_ids)), "a fill was recorded twice"
    assert len(trades) >= fills_before, "a fill recorded before the kill is missing"
    # no lost fill: every venue fill is in the Redis fill journal exactly once (the CSV can lag the
    # journal by the one row being written at the instant of the kill)
    venue_fills, _ = store.load_blob_history("paper_broker")
    venue_trades = {f["trade_id"] for f in venue_fills}
    seen = set(store.client.smembers(store.key("fills", "seen")))
    assert venue_trades == seen, ([f for f in venue_fills if f["trade_id"] not in seen], out[-4000:])
    # no duplicate order: the venue never filled the same client order id twice
    coids = [f["client_order_id"] for f in venue_fills]
    assert len(coids) == len(set(coids))
