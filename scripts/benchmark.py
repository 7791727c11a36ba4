#!/usr/bin/env python
"""Benchmark: backtest throughput, paper tick-to-decision latency through the actors, peak RSS.

Usage::

    python scripts/benchmark.py                                  # both parts, the 28-session data (docs/benchmarks.md)
    python scripts/benchmark.py --part backtest --data ../shared/data/es_nq_yahoo_2m_5m
    python scripts/benchmark.py --part latency --latency-speed 2000 --latency-day 2026-04-08
    python scripts/benchmark.py --part backtest --four-prints --no-sweep-guard   # the work of bbd3925, issue 19's start

Figures printed (targets: docs/benchmarks.md):

- **backtest**: wall seconds for the whole data set (target <= 10 s for the 28-session ES/NQ 2-min
  pair), bars/s (recorded 2-min bars of both instruments / s) and events/s (trade ticks / s; every
  bar is replayed as its O, H, L, C prints and the continuous path's steps between them, see
  :mod:`infra.replay`; as the four prints alone with ``--four-prints``).
- **latency**: paper mode, the full supervised actor tree with Redis (``REDIS_URL`` or an embedded
  redis-server in a temporary folder). For every order intent a strategy sends to risk, the time
  from the feed actor sending the triggering tick (``ReplayFeed.sent_wall``, ``time.perf_counter``)
  to the intent leaving the strategy (``Directory.send_hook``). Intents are told apart by the
  message the strategy was handling when it decided (:func:`actors.core.current_message`):

  - *tick -> decision*: decided on a tick, a bar or a clock tick: feed -> bar builder ->
    strategy. The target (p99 <= 5 ms) is judged on these.
  - *fill -> decision*: a take-profit decided on a fill, from the venue (broker actor) sending the
    fill: router journal (Redis) -> strategy.
  - decided on an execution (take-profits, hedges after an exposure change), measured from the
    tick that filled: it adds the venue's match and durable write and the router's journal to the
    decision, so it is printed on its own, and with everything together.

  Also tick -> order at the broker actor (after risk and the router, which persists the order in
  Redis before sending). The replay runs paced (``--latency-speed``, default 2000x: a tick every
  ~7.5 ms across both instruments) so the figure is processing latency, not queueing behind an
  unpaced replay. Run it alone: two cores shared with another job double the tail.
- **peak RSS** of this process (``resource.getrusage``), MiB, after each part.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from config.settings import SWEEP_GUARD_FIELDS, load_config  # noqa: E402
from domain.handler import BROKER, RISK, ROUTER  # noqa: E402
from actors.core import current_message  # noqa: E402
from domain.messages import Bar, ClockTick, Fill, OrderIntent, QuoteTick, TradeTick  # noqa: E402
from domain import native  # noqa: E402
from scripts.host_speed import describe, loop_seconds  # noqa: E402

MARKET_DATA = (TradeTick, QuoteTick, Bar, ClockTick)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "es_nq_yahoo_2m_5m"


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` in [0, 100] of ``values`` (sorted copy)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def work_overrides(four_prints: bool = False, sweep_guard: bool = True) -> dict:
    """``load_config`` overrides of the backtest's work: ``four_prints`` replays each bar as its O, H,
    L, C prints only (``runtime.path_step_bp: null``, no continuous path, docs/decisions/0018);
    ``sweep_guard=False`` turns the profile's sweep guard off (docs/risk.md, "Sweep guard"). Both
    together are the work of the tree issue 19 was filed on (bbd3925; docs/benchmarks.md)."""
    over: dict = {}
    if four_prints:
        over["runtime"] = {"path_step_bp": None}
    if not sweep_guard:
        over["profile"] = dict.fromkeys(SWEEP_GUARD_FIELDS)
    return over


def _backtest_once(data: Path, run_dir: Path, work: dict | None = None) -> dict:
    """One backtest in this process, parsing included (the node parses the files once); figures
    and this process's peak RSS. ``work``: :func:`work_overrides`."""
    from actors.node import Node
    from actors.tree import MODES
    logger.remove()
    work = work or {}
    over = {**work, "runtime": {**work.get("runtime", {}), "data_dir": data, "run_dir": run_dir}}
    cfg = load_config(None, "combine-50k", over)
    t0 = time.perf_counter()
    node = Node(cfg, MODES["backtest"], trades_csv=run_dir / "bench_trades.csv")
    summary = node.run_backtest(both_paths=False)
    secs = time.perf_counter() - t0
    bars = node.data.source.bar_count
    return {"sessions": len(summary.days), "bars": bars, "events": summary.events, "seconds": secs,
            "bars_per_s": bars / secs, "events_per_s": summary.events / secs, "fills": summary.fills,
            "net_pnl": summary.net_pnl, "rules_ok": summary.rules_ok, "peak_rss_mib": peak_rss_mib()}


def bench_backtest(data: Path, run_dir: Path, work: dict | None = None) -> dict:
    """Run the deterministic backtest over every session in ``data`` in a fresh process (spawned),
    so the files are parsed once, as a user's run parses them, and the peak RSS is that run's alone;
    returns the figures. ``work``: :func:`work_overrides` (None: the default run)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_backtest_once, data, run_dir, work).result()


def bench_latency(data: Path, day: dt.date | None, speed: float, run_dir: Path) -> dict:
    """Paper mode through the supervised actors; returns latency percentiles in milliseconds."""
    from actors.node import Node
    from actors.tree import MODES
    from infra.alerts import SlackAlerter
    from infra.embedded_redis import EmbeddedRedis
    from infra.state_store import StateStore

    runtime: dict = {"data_dir": data, "run_dir": run_dir, "namespace": "bench:latency", "metrics_port": None}
    if day is not None:
        runtime.update(start=day, end=day)
    cfg = load_config(None, "combine-50k", {"runtime": runtime})
    embedded = None
    url = os.environ.get("REDIS_URL")
    if not url:
        embedded = EmbeddedRedis(run_dir / "redis")
        url = embedded.ensure_running()
    store = StateStore.from_url(url, cfg.runtime.namespace)
    store.flush()
    system = Node(cfg, MODES["paper"], store=store, alerter=SlackAlerter(None), speed=speed)
    decided: list[tuple[int, float]] = []
    at_broker: list[tuple[int, float]] = []
    purposes: dict[tuple[int, float], str] = {}
    market_caused: set[tuple[int, float]] = set()
    fill_sent: dict[str, float] = {}  # trade id -> perf_counter when the venue (broker actor) sent the fill
    fill_to_decision: list[float] = []
    lock = threading.Lock()

    def hook(dest: str, msg: object) -> None:
        if isinstance(msg, Fill) and dest == ROUTER and not isinstance(current_message(), Fill):
            fill_sent.setdefault(msg.trade_id, time.perf_counter())  # from the venue, not the router
        if isinstance(msg, OrderIntent):
            now = time.perf_counter()
            with lock:
                (decided if dest == RISK else at_broker if dest == BROKER else []).append((msg.ts_ns, now))
                if dest == RISK:
                    purposes[(msg.ts_ns, now)] = f"{msg.strategy_id} {msg.purpose}"
                    cause = current_message()
                    if isinstance(cause, MARKET_DATA):
                        market_caused.add((msg.ts_ns, now))
                    elif isinstance(cause, Fill) and cause.trade_id in fill_sent:
                        fill_to_decision.append((now - fill_sent[cause.trade_id]) * 1e3)

    system.directory.send_hook = hook
    t0 = time.perf_counter()
    system.start()
    ok = threading.Event()

    def arm() -> None:  # the feed actor is created by the tree; switch recording on as soon as it exists
        while system.feed_handler is None and not system.done.is_set():
            time.sleep(0.001)
        if system.feed_handler is not None:
            system.feed_handler.record_latency = True
            ok.set()

    threading.Thread(target=arm, daemon=True).start()
    last = time.monotonic()
    while not system.data_done.wait(0.5):
        if time.monotonic() - last > 10:
            last = time.monotonic()
            print(f"  ... {system.feed_handler.sent if system.feed_handler else 0} ticks", flush=True)
    system.wait_drained()
    system.shutdown("benchmark end")
    secs = time.perf_counter() - t0
    sent = system.feed_handler.sent_wall if system.feed_handler else {}
    ticks = system.feed_handler.sent if system.feed_handler else 0
    system.stop()
    store.flush()
    if embedded is not None:
        embedded.stop()

    def lat(pairs: list[tuple[int, float]]) -> list[float]:
        return [(t - sent[ts]) * 1e3 for ts, t in pairs if ts in sent]

    d, b = lat(decided), lat(at_broker)
    dm = lat([x for x in decided if x in market_caused])
    dx = lat([x for x in decided if x not in market_caused])
    from domain.calendar import ns_to_ct
    slowest = sorted(((t - sent[ts]) * 1e3, ns_to_ct(ts).strftime("%m-%d %H:%M:%S"), purposes.get((ts, t), ""))
                     for ts, t in decided if ts in sent)[-5:][::-1]
    if not d:
        raise RuntimeError("no order decisions were measured (no intents matched a replayed tick)")
    def split(v: list[float]) -> tuple[int, float, float]:
        return (len(v), pct(v, 50), pct(v, 99)) if v else (0, float("nan"), float("nan"))
    return {"market": split(dm), "execution": split(dx), "fill_to_decision": split(fill_to_decision),
            "ticks": ticks, "seconds": secs, "decisions": len(d), "p50": pct(d, 50), "p99": pct(d, 99),
            "max": max(d), "broker_n": len(b), "broker_p50": pct(b, 50) if b else float("nan"),
            "broker_p99": pct(b, 99) if b else float("nan"), "peak_rss_mib": peak_rss_mib(), "slowest": slowest}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("all", "backtest", "latency"), default="all")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with ES_2min.csv.gz / NQ_2min.csv.gz (default: ../shared/data/es_nq_yahoo_2m_5m)")
    p.add_argument("--latency-data", type=Path, default=ROOT / "data" / "demo",
                   help="data for the latency part (default: the bundled demo data)")
    p.add_argument("--latency-day", type=dt.date.fromisoformat, default=dt.date(2026, 4, 8),
                   help="trading day replayed for the latency part (the day before warms up)")
    p.add_argument("--latency-speed", type=float, default=2000.0, help="replay speed factor for the latency part")
    p.add_argument("--four-prints", action="store_true",
                   help="backtest: replay each bar as its O, H, L, C prints only (runtime.path_step_bp: null)")
    p.add_argument("--no-sweep-guard", action="store_true",
                   help="backtest: the profile's sweep guard off (with --four-prints: the work of bbd3925)")
    p.add_argument("--no-host-loop", action="store_true",
                   help="do not time the host loop before and after (scripts/host_speed.py, about 3 s each)")
    args = p.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if args.part in ("all", "backtest") and not args.data.exists():
        print(f"error: data folder {args.data} not found", file=sys.stderr)
        return 2
    host_before = None if args.no_host_loop else loop_seconds()
    with tempfile.TemporaryDirectory(prefix="tsx-bench-") as tmp:
        run_dir = Path(tmp)
        if args.part in ("all", "backtest"):
            work = work_overrides(args.four_prints, not args.no_sweep_guard)
            shown = ", ".join(n for n, on in (("four prints per bar", args.four_prints),
                                              ("no sweep guard", args.no_sweep_guard)) if on)
            print(f"backtest on {args.data}{f' ({shown})' if shown else ''} ...", flush=True)
            r = bench_backtest(args.data, run_dir, work)
            print(f"backtest: {r['sessions']} sessions, {r['bars']:,} bars, {r['events']:,} events in "
                  f"{r['seconds']:.2f} s -> {r['bars_per_s']:,.0f} bars/s, {r['events_per_s']:,.0f} events/s "
                  f"(target <= 10 s: {'PASS' if r['seconds'] <= 10 else 'FAIL'}); fills {r['fills']}, "
                  f"net ${r['net_pnl']:,.2f}, rules {'PASS' if r['rules_ok'] else 'FAIL'}; "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
        if args.part in ("all", "latency"):
            print(f"paper latency on {args.latency_data} day {args.latency_day} at {args.latency_speed:g}x ...",
                  flush=True)
            r = bench_latency(args.latency_data, args.latency_day, args.latency_speed, run_dir)
            (nm, m50, m99), (nx, x50, x99) = r["market"], r["execution"]
            nf, f50, f99 = r["fill_to_decision"]
            print(f"latency: {r['ticks']:,} ticks in {r['seconds']:.1f} s; peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
            print(f"  tick -> decision (intents decided on a tick, bar or clock tick): n={nm} p50 {m50:.3f} ms "
                  f"p99 {m99:.3f} ms (target p99 <= 5 ms: {'PASS' if m99 <= 5 else 'FAIL'})", flush=True)
            print(f"  fill -> decision (take-profits, from the venue sending the fill): n={nf} p50 {f50:.3f} ms "
                  f"p99 {f99:.3f} ms", flush=True)
            print(f"  tick -> decision for intents decided on an execution, from the tick that filled (venue "
                  f"write, router journal, risk): n={nx} p50 {x50:.3f} ms p99 {x99:.3f} ms", flush=True)
            print(f"  all intents together, from their tick: n={r['decisions']} p50 {r['p50']:.3f} ms "
                  f"p99 {r['p99']:.3f} ms max {r['max']:.3f} ms; tick -> order sent to the broker actor (after risk "
                  f"and the router; the broker then awaits its Redis write-ahead): n={r['broker_n']} p50 {r['broker_p50']:.3f} ms "
                  f"p99 {r['broker_p99']:.3f} ms", flush=True)
            print("  slowest intents (ms from their tick, tick time CT, intent): "
                  + "; ".join(f"{ms:.2f} at {when} {what}" for ms, when, what in r["slowest"]), flush=True)
    if host_before is not None:
        print(describe(host_before, loop_seconds()), flush=True)
    print(native.install().line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
