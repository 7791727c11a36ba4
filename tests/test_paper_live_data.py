"""Paper mode on live market data: with ProjectX credentials set, ``--mode paper`` takes quotes and
trades from the (sandbox) market hub and fills orders in the paper venue; nothing is ever sent to
the gateway's order endpoints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

from infra.state_store import StateStore
from tests.live_support import E2E_PROFILE, ROOT, supervisor_env


def test_paper_mode_trades_live_hub_data_with_simulated_fills(gw, redis_url, tmp_path):
    ns = f"test:pl:{uuid.uuid4().hex[:6]}"
    env = supervisor_env(redis_url)
    args = ["--mode", "paper", "--profile", E2E_PROFILE, "--base-url", gw.base_url, "--namespace", ns,
            "--run-dir", str(tmp_path),
            "--metrics-port", "0", "--ops-port", "0"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = StateStore.from_url(redis_url, ns)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if store.client.scard(store.key("fills", "seen")) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "paper mode on live data exited early"
        assert store.client.scard(store.key("fills", "seen")) >= 2, "no simulated fills from live hub data"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "paper-live session" in out and "market data: ProjectX market hub" in out and "venue: simulated" in out
    assert "=== session summary (paper)" in out and "open positions at exit: none" in out
    # the gateway saw market-data traffic only: no order was placed there
    assert gw.orders_received == []
    venue_fills, _ = store.load_blob_history("paper_broker")
    assert venue_fills, "the fills came from the paper venue"
    # the tick recorder (runtime.record_ticks, on by default with hub data) wrote the hub's trades and
    # quotes to {run_dir}/ticks/<trading day>/, and the replay's loaders read them back whole
    from infra.tick_recorder import find_recordings, read_recording
    recorded = find_recordings(tmp_path / "ticks")
    assert recorded, "nothing recorded"
    counts = {}
    for files in recorded.values():
        for (sym, kind), path in files.items():
            ticks, rejects = read_recording(path)
            assert not rejects, (path, rejects)
            assert all(t.instrument == sym for t in ticks) and [t.ts_ns for t in ticks] == sorted(t.ts_ns for t in ticks)
            counts[sym, kind] = counts.get((sym, kind), 0) + len(ticks)
    assert counts.get(("MES", "trades"), 0) > 0 and counts.get(("MES", "quotes"), 0) > 0, counts
    assert "tick recorder:" in out and "trades and" in out
