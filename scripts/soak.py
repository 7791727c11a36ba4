"""Soak: a long paper session of the grid and the ML scalper together, watching the process for
growth (issue 22 item 8; seed 003 "Memory stable over 8-hour session").

Usage::

    python scripts/soak.py                         # bundled days, --speed 600: ~69 event hours in ~7 min
    python scripts/soak.py --speed 1440 --config config/examples/grid-and-scalper.yaml

Runs ``supervisor.py --mode paper`` (embedded Redis unless ``REDIS_URL``) as a child process and
samples, once a second, its resident set size (``/proc/<pid>/status`` VmRSS), threads
(``/proc/<pid>/task``) and open files (``/proc/<pid>/fd``). The "start" figures are taken after
``--settle`` seconds (imports, warm-up, the first day's indicator history), the "end" ones at the
last sample before the replay finishes. Prints both, the growth, the largest values and the event
hours the replay covered. Target: RSS growth <= 5 %, threads and open files not growing.
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sample(pid: int) -> tuple[float, int, int] | None:
    """``(RSS MiB, threads, open files)`` of ``pid``, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
        return rss, len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "examples" / "grid-and-scalper.yaml")
    ap.add_argument("--profile", default="combine-150k")
    ap.add_argument("--speed", default="600")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds before the start sample")
    args = ap.parse_args(argv)
    if not Path("/proc/self/status").exists():
        print("error: needs Linux /proc", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        cmd = [sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper", "--profile", args.profile,
               "--config", str(args.config), "--speed", str(args.speed), "--namespace", f"soak:{uuid.uuid4().hex[:6]}",
               "--run-dir", tmp, "--metrics-port", "0", "--ops-port", "0"]
        log = Path(tmp) / "soak.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            t0 = time.monotonic()
            samples: list[tuple[float, float, int, int]] = []
            while proc.poll() is None:
                s = sample(proc.pid)
                if s is not None:
                    samples.append((time.monotonic() - t0, *s))
                time.sleep(1.0)
        text = log.read_text()
    if proc.returncode != 0 or not samples:
        print(text[-3000:])
        print(f"error: the session exited with {proc.returncode}", file=sys.stderr)
        return 1
    settled = [s for s in samples if s[0] >= args.settle] or samples
    start, end = settled[0], settled[-1]
    times = re.findall(r"at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) CT", text)
    hours = ""
    if len(times) >= 2:
        import datetime as dt
        span = dt.datetime.fromisoformat(times[-1]) - dt.datetime.fromisoformat(times[0])
        hours = f"{span.total_seconds() / 3600:.1f} event hours logged, "
    print(f"soak: {args.config.name}, {args.profile}, speed {args.speed}: {hours}{samples[-1][0]:.0f} s wall, "
          f"{len(samples)} samples")
    print(f"  RSS MiB   start {start[1]:.1f} (at {start[0]:.0f} s)  end {end[1]:.1f}  max {max(s[1] for s in settled):.1f}  "
          f"growth {100 * (end[1] - start[1]) / start[1]:+.1f} % (target <= 5 %)")
    path = "  ".join(f"{settled[min(len(settled) - 1, int(q * (len(settled) - 1)))][1]:.0f}" for q in (0, .25, .5, .75, 1))
    print(f"  RSS MiB at 0/25/50/75/100 % of the run after the start: {path}")
    print(f"  threads   start {start[2]}  end {end[2]}  max {max(s[2] for s in settled)}")
    print(f"  open files start {start[3]}  end {end[3]}  max {max(s[3] for s in settled)}")
    summary = [line for line in text.splitlines() if "net P&L" in line][:1]
    print("  " + (summary[0].strip() if summary else "(no summary line)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
