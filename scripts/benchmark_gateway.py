#!/usr/bin/env python
"""Quote-to-order latency of the live system over loopback against the sandbox gateway.

Starts a :class:`infra.sandbox.server.SandboxGateway` (in this process) and an embedded Redis,
runs ``supervisor.py --mode live --arm`` against them as a subprocess for ``--seconds`` of wall
time, stops it with SIGTERM, then for every order the gateway received:

- the order's ``customTag`` is our client order id; its Redis record ``{ns}:order:{coid}`` holds
  the intent, whose ``ts_ns`` is the data time of the market event that triggered it;
- the sandbox recorded when it wrote that event's quote: ``gw.quote_sent_ns[(contractId, ts_ns)]``
  (``time.perf_counter_ns``, this process);
- latency = the order's arrival ``perf_counter_ns`` at the sandbox minus that quote's send time.

Orders without a matching quote (risk's time-driven flattens, shutdown closes) are counted
separately. Prints n, p50, p99 and max in milliseconds over all matched orders (target p99 <= 20
ms), and the same over the first order of each triggering event only (a grid rebuild places
several orders from one tick; the broker places them one after the other, so later ones queue).
Exit 0, or 1 when no order was matched.

    python scripts/benchmark_gateway.py [--speed 600] [--seconds 40] [--day 2026-04-08]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.embedded_redis import EmbeddedRedis  # noqa: E402
from infra.sandbox.server import SandboxConfig, SandboxGateway  # noqa: E402
from infra.state_store import StateStore  # noqa: E402


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    k = max(0, min(len(sorted_ms) - 1, int(round(q / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--speed", type=float, default=600.0, help="sandbox replay speed (x real time)")
    p.add_argument("--seconds", type=float, default=40.0, help="how long the live system runs, wall seconds")
    p.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2026, 4, 8), help="trading day to replay")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "demo")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        url = redis.ensure_running()
        gw = SandboxGateway(SandboxConfig(data_dir=args.data, speed=args.speed, start=args.day, end=args.day))
        gw.start()
        ns = f"bench:gw:{uuid.uuid4().hex[:6]}"
        env = {**os.environ, "REDIS_URL": url, "PROJECTX_USERNAME": "sandbox", "PROJECTX_API_KEY": "sandbox-key"}
        env.pop("SLACK_WEBHOOK_URL", None)
        cmd = [sys.executable, str(ROOT / "supervisor.py"), "--mode", "live", "--base-url", gw.base_url,
               "--account", "1001", "--arm", "--namespace", ns, "--run-dir", tmp, "--metrics-port", "0"]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(args.seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        store = StateStore.from_url(url, ns)
        lat_ms: list[float] = []
        first_ms: dict[tuple[str, int], float] = {}
        unmatched = 0
        for recv_ns, body in list(gw.orders_received):
            rec = store.load_order(body.get("customTag") or "")
            sent = gw.quote_sent_ns.get((body.get("contractId"), rec["intent"].ts_ns)) if rec else None
            if sent is None:
                unmatched += 1
                continue
            lat_ms.append((recv_ns - sent) / 1e6)
            first_ms.setdefault((body.get("contractId"), rec["intent"].ts_ns), lat_ms[-1])
        gw.stop()
        store.flush()
        redis.stop()
    print(f"live system vs sandbox gateway (loopback, speed {args.speed:g}, {args.seconds:g} s, exit {proc.returncode})")
    print(f"orders received: {len(lat_ms) + unmatched}  matched to a quote: {len(lat_ms)}  unmatched: {unmatched}")
    if not lat_ms:
        print("no order matched a quote: nothing to measure")
        return 1
    lat_ms.sort()
    p99 = percentile(lat_ms, 99)
    print(f"quote sent -> order received: n={len(lat_ms)} p50={percentile(lat_ms, 50):.2f} ms "
          f"p99={p99:.2f} ms max={lat_ms[-1]:.2f} ms  (target p99 <= 20 ms: {'PASS' if p99 <= 20 else 'FAIL'})")
    first = sorted(first_ms.values())
    print(f"first order per triggering event:  n={len(first)} p50={percentile(first, 50):.2f} ms "
          f"p99={percentile(first, 99):.2f} ms max={first[-1]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
