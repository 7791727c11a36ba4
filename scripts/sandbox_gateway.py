"""Run the sandbox ProjectX gateway on this machine until Ctrl-C (see docs/sandbox.md).

Usage (from anywhere)::

    python scripts/sandbox_gateway.py [--host 127.0.0.1] [--port 8765] [--data data/demo]
                                      [--speed 600|max|0] [--start 2026-04-08] [--end 2026-04-10]

Prints the base URL, the hub URLs and the credentials to log in with, then serves until SIGINT or
SIGTERM. ``--speed max`` replays as fast as possible, ``--speed 0`` is manual mode (advance with
``curl -X POST URL/sandbox/advance -d '{"ticks": 4}'``). Faults: ``curl -X POST URL/sandbox/faults
-d '{"fault": "drop_connections"}'``. Exit status 2 for bad arguments or unusable data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loguru import logger  # noqa: E402

from infra.sandbox.server import DEMO_DATA, SandboxConfig, SandboxGateway  # noqa: E402


def _speed(text: str) -> float:
    if text.lower() in ("max", "inf"):
        return float("inf")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number >= 0 or 'max', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"speed must be >= 0, got {text!r}")
    return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Local ProjectX Gateway (TopstepX) sandbox with recorded data.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 = any free port")
    p.add_argument("--data", type=Path, default=DEMO_DATA, help="folder with ES_2min.csv.gz / NQ_2min.csv.gz")
    p.add_argument("--speed", type=_speed, default=600.0, help="x real time, 'max', or 0 for manual mode")
    p.add_argument("--start", type=dt.date.fromisoformat, help="first trading day to stream (default: the 2nd)")
    p.add_argument("--end", type=dt.date.fromisoformat, help="last trading day to stream (default: the last)")
    p.add_argument("--username", default="sandbox")
    p.add_argument("--api-key", default="sandbox-key")
    p.add_argument("--ping-interval", type=float, default=15.0, help="hub Ping interval, seconds")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="console log level (DEBUG also shows every refused call and subscription)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level,
               format="<green>{time:HH:mm:ss}</green> <level>{level: <8}</level> {message}")
    try:
        gw = SandboxGateway(SandboxConfig(data_dir=args.data, speed=args.speed, start=args.start, end=args.end,
                                          username=args.username, api_key=args.api_key, host=args.host,
                                          port=args.port, ping_interval_s=args.ping_interval))
        gw.start()
    except (OSError, ValueError) as exc:
        print(f"sandbox_gateway: {exc}", file=sys.stderr)
        return 2
    ws = gw.base_url.replace("http", "ws", 1)
    print(f"REST      {gw.base_url}/api/...   (POST /api/Auth/loginKey first)")
    print(f"hubs      {ws}/hubs/user   {ws}/hubs/market   (?access_token=TOKEN)")
    print(f"login     userName={args.username!r} apiKey={args.api_key!r}")
    print(f"accounts  {', '.join(f'{a.id} {a.name}' for a in gw.config.accounts)}")
    print(f"control   {gw.base_url}/sandbox/state | /sandbox/faults | /sandbox/advance   Ctrl-C stops",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        gw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
