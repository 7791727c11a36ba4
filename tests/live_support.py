"""What the end-to-end tests of the real supervisor against the sandbox gateway share
(``tests/test_live_sandbox.py``, ``tests/test_live_faults.py``, ``tests/test_paper_live_data.py``).

- :func:`replay_gateway`: a started :class:`SandboxGateway` replaying the bundled 2026-04-08 at
  1000x (one trading day in ~83 s) on 127.0.0.1; the ``gw`` fixture of ``tests/conftest.py``.
- :func:`supervisor_env`, :func:`start_live`: ``supervisor.py`` as a subprocess, output captured.
- :func:`wait_for`, :func:`stop_supervisor`, :func:`kill_supervisor`, :func:`supervisor_log`,
  :func:`placed_tags`: synchronising on what the test can observe, and collecting the evidence.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from typing import Any
from collections.abc import Callable
from pathlib import Path

from infra.sandbox.server import SandboxConfig, SandboxGateway

ROOT = Path(__file__).resolve().parents[1]
CREDS = {"PROJECTX_USERNAME": "sandbox", "PROJECTX_API_KEY": "sandbox-key"}
"""The sandbox's credentials (``SandboxConfig`` defaults)."""
ACCOUNT = 1001
"""The sandbox's practice account (``simulated: true``); 1002 is its funded one."""
REPLAY_DAY = dt.date(2026, 4, 8)


def replay_gateway(**config: Any) -> SandboxGateway:
    """A started sandbox gateway replaying :data:`REPLAY_DAY` of the bundled data at 1000x, with
    other :class:`SandboxConfig` fields from ``config`` (the caller stops it)."""
    g = SandboxGateway(SandboxConfig(data_dir=ROOT / "data" / "demo", speed=1000.0, start=REPLAY_DAY,
                                     end=REPLAY_DAY, **config))
    g.start()
    return g


def supervisor_env(redis_url: str | None, creds: bool = True) -> dict[str, str]:
    """This process's environment without Slack, ProjectX credentials or a Redis URL of its own;
    then ``REDIS_URL`` = ``redis_url`` (when given) and the sandbox's credentials (``creds``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLACK_WEBHOOK_URL", "PROJECTX_USERNAME", "PROJECTX_API_KEY", "REDIS_URL")}
    if redis_url:
        env["REDIS_URL"] = redis_url
    if creds:
        env.update(CREDS)
    return env


E2E_PROFILE = "combine-150k"
"""The profile of the end-to-end tests: they need orders and fills on the replayed 2026-04-08, and
on a 50K Combine the sweep guard (docs/risk.md) withholds almost every grid entry that day."""


def start_live(base_url: str, run_dir: Path, ns: str, *extra: str, env: dict[str, str]) -> subprocess.Popen:
    """``supervisor.py --mode live`` against the gateway at ``base_url`` (REST and hubs), namespace
    ``ns``, run dir ``run_dir``, metrics and ops API on free ports, profile :data:`E2E_PROFILE`, then
    ``extra`` arguments; stdout and stderr captured together as text."""
    args = ["--mode", "live", "--base-url", base_url, "--rtc-url", base_url, "--namespace", ns,
            "--run-dir", str(run_dir), "--metrics-port", "0", "--ops-port", "0", "--profile", E2E_PROFILE, *extra]
    return subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(cond: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
             interval: float = 0.05) -> bool:
    """Poll ``cond`` every ``interval`` seconds until it holds (True) or ``timeout`` seconds pass
    (its last value); False at once if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if cond():
            return True
        time.sleep(interval)
    return cond()


def stop_supervisor(proc: subprocess.Popen, timeout: float = 120) -> str:
    """SIGTERM and collect the output (kill -9 after ``timeout`` seconds, noted at the end of it).

    The timeout is long because the 1000x replay can fill the client's rate window (180 requests
    / 60 s) within seconds; the shutdown's flat check then waits for a slot (up to 60 s, logged as
    "client rate window full ... waiting") before it may exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        out += "\n[test: killed after SIGTERM timeout]"
    _save(proc, out)
    return out


def kill_supervisor(proc: subprocess.Popen) -> str:
    """kill -9 (the test's own child, by pid) and collect what it printed."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=20)
    _save(proc, out)
    return out


def _save(proc: subprocess.Popen, out: str) -> None:
    """Keep the supervisor's whole output in its run dir, ``supervisor-<pid>.out`` (for post-mortems
    of a failed run); nothing when it was started without ``--run-dir``."""
    args = list(proc.args)
    if "--run-dir" in args:
        (Path(args[args.index("--run-dir") + 1]) / f"supervisor-{proc.pid}.out").write_text(out)


def supervisor_log(run_dir: Path) -> str:
    """The supervisor's log files (``--run-dir``/logs), readable while it runs."""
    return "".join(f.read_text(errors="replace") for f in sorted((run_dir / "logs").glob("*.log")))


def placed_tags(gw: SandboxGateway) -> list[str]:
    """The ``customTag`` of every ``Order/place`` the gateway received, in arrival order ("" for none)."""
    return [body.get("customTag") or "" for _, body in gw.orders_received]


def kill9_with_bracket_then_resume(config: Path, profile: str, redis_url: str, run_dir: Path, ns: str) -> Any:
    """A paper session of ``config`` on 2026-04-08 (1500x) killed with SIGKILL as soon as a
    ``bracket-stop`` order is working in its Redis mirror, then the same session resumed at full
    speed on the same Redis. Asserts the resume exits 0, says ``(resuming)`` and ends flat with
    nothing working; returns the namespace's :class:`infra.state_store.StateStore`."""
    from infra.state_store import StateStore
    env = supervisor_env(redis_url, creds=False)
    args = [sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper", "--profile", profile,
            "--config", str(config), "--start", "2026-04-08", "--end", "2026-04-08", "--namespace", ns,
            "--run-dir", str(run_dir), "--metrics-port", "0", "--ops-port", "0"]
    store = StateStore.from_url(redis_url, ns)
    p = subprocess.Popen(args + ["--speed", "1500"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        working = lambda: any(o["intent"].purpose.startswith("bracket-stop")  # noqa: E731
                              for o in store.load_working_orders().values())
        assert wait_for(working, 150, p, interval=0.005), "no bracket working before the kill"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    q = subprocess.run(args + ["--speed", "max"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = q.stdout + q.stderr
    assert q.returncode == 0, out[-3000:]
    assert "(resuming)" in out and "open positions at exit: none" in out, out[-4000:]
    assert store.load_working_orders() == {}, "an order was left working (an orphaned stop or target)"
    return store


def assert_each_entry_closed_once(store: Any, entry_prefix: str) -> None:
    """Over the paper venue's fills (in order): no order filled twice, an entry (purpose starting
    with ``entry_prefix``) only from flat, every other fill (a leg, a market exit, risk's flatten)
    only shrinks the position, as many exits as entries, flat at the end."""
    fills, _ = store.load_blob_history("paper_broker")
    coids = [f["client_order_id"] for f in fills]
    assert len(coids) == len(set(coids)), "an order filled twice"
    position = entries = exits = 0
    seen: list[str] = []  # the fills so far, for the failure message
    for f in fills:
        rec = store.load_order(f["client_order_id"])
        purpose = rec["intent"].purpose if rec else ""
        signed = f["qty"] if f["side"] == "BUY" else -f["qty"]
        seen.append(f"{f.get('ts_ns')} {f['client_order_id']} {signed:+d} @ {f.get('price')} {purpose!r}")
        if purpose.startswith(entry_prefix):
            assert position == 0, "an entry while not flat, fills so far:\n" + "\n".join(seen)
            entries += 1
        else:
            assert position != 0 and abs(position + signed) < abs(position), \
                f"{purpose!r} at position {position}, fills so far:\n" + "\n".join(seen)
            exits += 1
        position += signed
    assert entries == exits > 0 and position == 0
