#!/usr/bin/env python
"""Quote-to-order latency of the live system over loopback against the sandbox gateway.

Starts an embedded Redis and, for each trading day in ``--days``, a fresh
:class:`infra.sandbox.server.SandboxGateway` (in this process) streaming that day; runs
``supervisor.py --mode live --arm`` against them as a subprocess for ``--seconds`` of wall time,
stops it with SIGTERM, then for every order the gateway received:

- the order's ``customTag`` is our client order id; its Redis record ``{ns}:order:{coid}`` holds
  the intent, whose ``ts_ns`` is the data time of the market event that triggered it;
- the sandbox recorded when it wrote that event's quote: ``gw.quote_sent_ns[(contractId, ts_ns)]``
  (``time.perf_counter_ns``, this process);
- latency = the order's arrival ``perf_counter_ns`` at the sandbox minus that quote's send time.

Orders without a matching quote (risk's time-driven flattens) are counted separately, and so are
the closes of the shutdown the benchmark itself starts with SIGTERM (purpose ``flatten: SIGTERM``):
risk stamps them with the last data time it saw, which is also the time of the last quote the
sandbox sent; matched to that quote they would count as 20-50 ms "risk flattens", though the
signal decided them, not the quote.

Prints n, p50, p99 and max in milliseconds over all matched orders (target p99 <= 20 ms), and the
same over the first order of each triggering event only (a grid rebuild places several orders
from one tick; each is its own REST call, and the sandbox serves them one at a time), then by what
decided the order:

- ``market data``: a quote or trade alone (grid entries on a tick or bar, hedge on a bar);
- ``own fill``: one of our fills at the same data time (the sandbox pushes it on the user hub
  together with the quote): take-profits, levels placed again, the hedge's answer to the new
  exposure. The path is longer: user hub, fill journal, risk, strategy, then the order path;
- ``risk flatten``: a flatten risk decided on a quote (a loss limit); risk closes a position only
  once the venue has confirmed the cancels of the working orders (``domain/risk.py``), so these
  include a cancel round trip and its user-hub confirmation by design.

Last, the order-changing REST calls the sandbox received (places, cancels...), which count
against the gateway's rate limit.

Exit 0, or 1 when no order was matched.

    python scripts/benchmark_gateway.py [--speed 600] [--seconds 40] [--days 2026-04-08,2026-04-09]
        [--answer-delay-ms 20] [--pin]

``--pin`` runs the live system on a CPU of its own and the sandbox (this process) and redis on the
others. Without it all three share the host's CPUs, and on a 2-CPU host a burst of orders has the
supervisor, the sandbox and redis-server all wanting a CPU at once; the sandbox stands in for a
gateway that runs on another machine, and a latency-sensitive live process is best given a core
of its own anyway (``taskset -c N python supervisor.py --mode live ...``).

``--answer-delay-ms`` makes the sandbox write each REST answer that much later, as the network
round trip to the real gateway would (loopback has none): orders that wait for earlier answers
before they can leave show it in their latency; orders sent without waiting do not.
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
from collections import Counter
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.embedded_redis import EmbeddedRedis  # noqa: E402
from infra.replay import parse_utc_ns  # noqa: E402
from infra.sandbox.server import SandboxConfig, SandboxGateway  # noqa: E402
from infra.state_store import StateStore  # noqa: E402


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    k = max(0, min(len(sorted_ms) - 1, int(round(q / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


class Sample(NamedTuple):
    """One order: latency (ms), what decided it (:data:`CAUSES`), its triggering event (day,
    contract id, data time ns)."""

    ms: float
    cause: str
    event: tuple[str, str, int]


CAUSES = ("market data", "own fill", "risk flatten")
"""What decided an order (see the module docstring)."""


class DayResult(NamedTuple):
    """One day's session: the orders matched to a quote, the number without one, the number of
    shutdown closes (not counted as latency samples), the supervisor's exit code and the REST
    requests the sandbox received, by path."""

    samples: list[Sample]
    unmatched: int
    shutdown: int
    exit_code: int | None
    requests: Counter


ORDER_PATHS = ("Order/place", "Order/cancel", "Order/modify", "Position/closeContract")
"""The order-changing REST calls counted in the summary (each counts against the gateway's rate limit)."""

SHUTDOWN_PURPOSE = "flatten: SIGTERM"
"""Purpose of the closes of the shutdown this benchmark starts (:func:`actors.node.run`: the stop
reason is the signal's name; ``domain.risk``: ``flatten: <reason>``)."""


def run_day(day: dt.date, args: argparse.Namespace, redis_url: str, run_dir: str,
            live_cpus: set[int] | None = None) -> DayResult:
    """One live session against a fresh sandbox streaming ``day``."""
    gw = SandboxGateway(SandboxConfig(data_dir=args.data, speed=args.speed, start=day, end=day,
                                      answer_delay_s=args.answer_delay_ms / 1000))
    gw.start()
    ns = f"bench:gw:{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "REDIS_URL": redis_url, "PROJECTX_USERNAME": "sandbox", "PROJECTX_API_KEY": "sandbox-key"}
    env.pop("SLACK_WEBHOOK_URL", None)
    cmd = [sys.executable, str(ROOT / "supervisor.py"), "--mode", "live", "--base-url", gw.base_url,
           "--account", "1001", "--arm", "--namespace", ns, "--run-dir", run_dir, "--metrics-port", "0", "--ops-port", "0",
           "--profile", args.profile] + (["--config", str(args.config)] if args.config else [])
    pin = (lambda: os.sched_setaffinity(0, live_cpus)) if live_cpus else None  # --pin: the supervisor's CPU
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pin)
    try:
        time.sleep(args.seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    store = StateStore.from_url(redis_url, ns)
    fill_ts = {parse_utc_ns(t["creationTimestamp"]) for t in gw.trades(1001)}
    samples: list[Sample] = []
    unmatched = shutdown = 0
    for recv_ns, body in list(gw.orders_received):
        rec = store.load_order(body.get("customTag") or "")
        sent = gw.quote_sent_ns.get((body.get("contractId"), rec["intent"].ts_ns)) if rec else None
        if sent is None:
            unmatched += 1
            continue
        intent = rec["intent"]
        if intent.purpose == SHUTDOWN_PURPOSE:
            shutdown += 1
            continue
        cause = ("risk flatten" if intent.purpose.startswith("flatten") else
                 "own fill" if intent.ts_ns in fill_ts else "market data")
        samples.append(Sample((recv_ns - sent) / 1e6, cause, (day.isoformat(), body.get("contractId"), intent.ts_ns)))
    gw.stop()
    store.flush()
    return DayResult(samples, unmatched, shutdown, proc.returncode, Counter(gw.requests_received))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--speed", type=float, default=600.0, help="sandbox replay speed (x real time)")
    p.add_argument("--seconds", type=float, default=40.0, help="how long the live system runs per day, wall seconds")
    p.add_argument("--days", default="2026-04-08,2026-04-09,2026-04-10",
                   help="comma-separated trading days, one session each (default: the bundled data's "
                        "three streamable days, about 130 orders: a p99 that is not just the maximum)")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "demo")
    p.add_argument("--answer-delay-ms", type=float, default=0.0,
                   help="the sandbox writes every REST answer this long after processing the request: a "
                        "stand-in for the network round trip to the real gateway (default 0: loopback only)")
    p.add_argument("--profile", default="combine-150k",
                   help="risk profile of the live system (default combine-150k: on a 50K Combine the sweep guard "
                        "withholds most grid entries of these days, leaving little to measure)")
    p.add_argument("--config", type=Path, help="the live system's strategy config (default: config/default.yaml's, "
                                               "the grid and the hedge); e.g. a scalper config")
    p.add_argument("--pin", action="store_true",
                   help="run the live system on a CPU of its own and the sandbox and redis on the others "
                        "(Linux, 2+ CPUs): the gateway the sandbox stands in for runs on another machine")
    args = p.parse_args(argv)
    layout = "all processes share every CPU"
    live_cpus: set[int] | None = None
    if args.pin:
        if not hasattr(os, "sched_setaffinity"):
            p.error("--pin needs Linux (os.sched_setaffinity)")
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            p.error(f"--pin needs at least 2 CPUs, this process may use {cpus}")
        live_cpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))  # before any thread or child: the sandbox and redis inherit it
        layout = f"live system on CPU {cpus[0]}, sandbox and redis on CPU {','.join(map(str, cpus[1:]))}"
    days = [dt.date.fromisoformat(d.strip()) for d in args.days.split(",") if d.strip()]

    samples: list[Sample] = []
    unmatched = shutdown = 0
    requests: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        url = redis.ensure_running()
        try:
            for day in days:
                got = run_day(day, args, url, tmp, live_cpus)
                samples += got.samples
                unmatched += got.unmatched
                shutdown += got.shutdown
                requests += got.requests
                print(f"{day}: {len(got.samples)} orders matched, {got.unmatched} unmatched, {got.shutdown} shutdown "
                      f"close(s), supervisor exit {got.exit_code}", flush=True)
        finally:
            redis.stop()
    delay = f", answers delayed {args.answer_delay_ms:g} ms" if args.answer_delay_ms else ""
    print(f"live system vs sandbox gateway (loopback{delay}, speed {args.speed:g}, {len(days)} day(s) x {args.seconds:g} s; "
          f"{layout})")
    print(f"orders received: {len(samples) + unmatched + shutdown}  matched to a quote: {len(samples)}  "
          f"unmatched: {unmatched}  shutdown closes (decided by SIGTERM, not counted): {shutdown}")
    print("REST order calls received: " + ", ".join(f"{p} {requests[p]}" for p in ORDER_PATHS)
          + f"; all REST requests {sum(requests.values())}")
    if not samples:
        print("no order matched a quote: nothing to measure")
        return 1
    lat = sorted(x.ms for x in samples)
    p99 = percentile(lat, 99)
    print(f"quote sent -> order received: {summary(lat)}  (target p99 <= 20 ms: {'PASS' if p99 <= 20 else 'FAIL'})")
    first: dict[tuple, float] = {}
    for x in samples:
        first.setdefault(x.event, x.ms)
    print(f"first order per triggering event:  {summary(list(first.values()))}")
    for cause in CAUSES:
        print(f"  decided on {cause + ':':14s} {summary([x.ms for x in samples if x.cause == cause])}")
    return 0


def summary(values_ms: list[float]) -> str:
    """``n=.. p50=.. p99=.. max=..`` (ms) of ``values_ms``, or ``n=0``."""
    if not values_ms:
        return "n=0"
    v = sorted(values_ms)
    return f"n={len(v)} p50={percentile(v, 50):.2f} ms p99={percentile(v, 99):.2f} ms max={v[-1]:.2f} ms"


if __name__ == "__main__":
    sys.exit(main())
