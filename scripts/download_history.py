"""Download ProjectX (TopstepX) history bars into the bar files the replay and backtest read.

Example::

    PROJECTX_USERNAME=... PROJECTX_API_KEY=... \\
    python scripts/download_history.py --symbol ES --start 2026-04-01 --end 2026-04-10 \\
        --unit minute --unit-number 2 --out data/history

writes ``data/history/ES_2min.csv.gz`` in the format of :func:`infra.replay.load_bar_csv`: columns
``datetime,open,high,low,close,volume,symbol``, ``datetime`` naive US/Eastern wall-clock time of
the bar **start** (the gateway's ``t`` is taken as the bar start,
docs/reference/projectx-gateway.md#history-bars), prices in points.

- ``--start``/``--end`` are CME trading days (America/Chicago): the window runs from 17:00 CT on
  the evening before ``--start`` to 17:00 CT on ``--end`` (capped at now).
- The contract is resolved by ``Contract/search`` (the one active contract of ``--symbol``, ES ->
  root EP; docs/reference/projectx-gateway.md#contract-ids); ``--contract-id`` picks one
  explicitly (e.g. an expired contract).
- Requests page under the 20,000-bar cap and the client waits for the 50 requests / 30 s history
  limit (docs/reference/projectx-gateway.md#history-bars, #rate-limits).
- **Resumable**: bars are appended page by page (each page written to a temporary copy that then
  replaces the file, so an interrupted run never leaves a broken file); a re-run continues after
  the last bar already in the file, so nothing is duplicated.

Credentials come from ``PROJECTX_USERNAME`` / ``PROJECTX_API_KEY`` (never printed); the host from
``--base-url``, else ``PROJECTX_BASE_URL``, else ``https://api.topstepx.com``.

Exit codes: 0 done, 2 bad arguments or missing credentials, 3 authentication failed, 4 unknown or
ambiguous contract, 1 any other gateway/transport error.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import os
import shutil
import sys
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from domain.calendar import CT, NS, OPEN_TIME, session_open
from infra.projectx import errors as pxe
from infra.projectx.mapping import UNIT_SECONDS, BarUnit, GatewayBar
from infra.projectx.rest import DEFAULT_BASE_URL, ProjectXClient
from infra.replay import BAR_COLUMNS, local_to_ns

ET = ZoneInfo("America/New_York")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
UNITS = {"second": (BarUnit.SECOND, "s"), "minute": (BarUnit.MINUTE, "min"), "hour": (BarUnit.HOUR, "h"),
         "day": (BarUnit.DAY, "d"), "week": (BarUnit.WEEK, "w"), "month": (BarUnit.MONTH, "mo")}
"""``--unit`` name -> (gateway unit, file-name suffix): ``--unit minute --unit-number 2`` -> ``_2min``."""


def bar_file(out: Path, symbol: str, unit: str, unit_number: int) -> Path:
    """``{out}/{SYMBOL}_{n}{suffix}.csv.gz`` (``ES_2min.csv.gz``, the replay's naming)."""
    return out / f"{symbol.upper()}_{unit_number}{UNITS[unit][1]}.csv.gz"


def last_bar_ns(path: Path) -> int | None:
    """Start (epoch ns UTC) of the last bar in an existing file, None if the file is absent or empty.
    Naive Eastern times are resolved as :func:`infra.replay.load_bar_csv` does (DST fall-back: a time
    not after the previous one is its second occurrence)."""
    if not path.exists():
        return None
    last: int | None = None
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            naive = dt.datetime.fromisoformat(rec["datetime"])
            ts = local_to_ns(naive, ET)
            if ts is not None and last is not None and ts <= last:
                ts = local_to_ns(naive, ET, fold=1) or ts
            if ts is not None:
                last = ts if last is None else max(last, ts)
    return last


def _price(d: Decimal) -> str:
    """``6650.500000000`` -> ``6650.5``, ``6655`` -> ``6655.0``: the gateway sends nine decimals, the
    bar files carry the shortest form with at least one decimal (as the recorded Yahoo files do)."""
    text = format(d.normalize(), "f")
    return text if "." in text else text + ".0"


def append_bars(path: Path, bars: list[GatewayBar], symbol: str) -> None:
    """Append ``bars`` (ascending) as one gzip member, atomically (temporary copy + rename)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if not path.exists():
        writer.writerow(BAR_COLUMNS)
    for b in bars:
        local = (_EPOCH + dt.timedelta(microseconds=b.ts_ns // 1000)).astimezone(ET).replace(tzinfo=None)
        writer.writerow([local.strftime("%Y-%m-%d %H:%M:%S"), _price(b.open), _price(b.high), _price(b.low),
                         _price(b.close), b.volume, symbol])
    tmp = path.with_name(path.name + ".part")
    if path.exists():
        shutil.copyfile(path, tmp)
    with gzip.open(tmp, "ab") as fh:
        fh.write(buf.getvalue().encode("utf-8"))
    os.replace(tmp, path)


def _et_text(ts_ns: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=ts_ns // 1000)).astimezone(ET).strftime("%Y-%m-%d %H:%M ET")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Download ProjectX history bars (resumable) into replay bar files.")
    p.add_argument("--symbol", required=True, help="our ticker: ES, NQ, MES, MNQ, CL, MCL")
    p.add_argument("--start", required=True, type=dt.date.fromisoformat, help="first trading day, YYYY-MM-DD")
    p.add_argument("--end", required=True, type=dt.date.fromisoformat, help="last trading day, YYYY-MM-DD")
    p.add_argument("--unit", default="minute", choices=sorted(UNITS))
    p.add_argument("--unit-number", type=int, default=1, help="bar length in units (>= 1)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--base-url", default=None, help="REST host (default: $PROJECTX_BASE_URL or TopstepX)")
    p.add_argument("--contract-id", default=None, help="use this contract instead of searching the front month")
    p.add_argument("--live", action="store_true", help="use the live data subscription (default: sim)")
    args = p.parse_args(argv)
    if args.unit_number < 1:
        p.error("--unit-number must be >= 1")
    if args.end < args.start:
        p.error("--end is before --start")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    username, api_key = os.environ.get("PROJECTX_USERNAME"), os.environ.get("PROJECTX_API_KEY")
    if not username or not api_key:
        print("error: set PROJECTX_USERNAME and PROJECTX_API_KEY", file=sys.stderr)
        return 2
    base_url = args.base_url or os.environ.get("PROJECTX_BASE_URL") or DEFAULT_BASE_URL
    unit, _ = UNITS[args.unit]
    period_ns = UNIT_SECONDS[unit] * args.unit_number * NS
    start = session_open(args.start).astimezone(dt.timezone.utc)
    end = min(dt.datetime.combine(args.end, OPEN_TIME, tzinfo=CT).astimezone(dt.timezone.utc),
              dt.datetime.now(dt.timezone.utc))
    args.out.mkdir(parents=True, exist_ok=True)
    path = bar_file(args.out, args.symbol, args.unit, args.unit_number)
    last = last_bar_ns(path)
    if last is not None:
        start = max(start, _EPOCH + dt.timedelta(microseconds=(last + period_ns) // 1000))
        print(f"resuming {path} after {_et_text(last)}", file=sys.stderr)
    if start >= end:
        print(f"{path} is already complete up to {end:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
        return 0
    with ProjectXClient(base_url, username, api_key) as client:
        try:
            contract = (client.contract_by_id(args.contract_id) if args.contract_id
                        else client.resolve_front_month(args.symbol, live=args.live))
            print(f"{args.symbol}: contract {contract.id} ({contract.name}); {start:%Y-%m-%d %H:%M} .. "
                  f"{end:%Y-%m-%d %H:%M} UTC -> {path}", file=sys.stderr)
            written = 0
            span = (end - start).total_seconds() * NS
            for page in client.iter_bar_pages(contract.id, start, end, unit=unit, unit_number=args.unit_number,
                                              live=args.live):
                new = [b for b in page if last is None or b.ts_ns > last]
                if new:
                    append_bars(path, new, args.symbol.upper())
                    last, written = new[-1].ts_ns, written + len(new)
                    done = (last - start.timestamp() * NS) / span if span else 1.0
                    print(f"  {min(done, 1.0):6.1%}  +{len(new)} bars (total {written}), last {_et_text(last)}",
                          file=sys.stderr)
        except pxe.AuthenticationFailed as e:
            print(f"error: authentication failed: {e.code_name} {e.message}".rstrip(), file=sys.stderr)
            return 3
        except (pxe.ContractResolutionError, pxe.ContractNotFound) as e:
            print(f"error: {e}", file=sys.stderr)
            return 4
        except (pxe.ProjectXError, pxe.MalformedPayload) as e:
            print(f"error: {e} (re-run to resume)", file=sys.stderr)
            return 1
    print(f"done: {written} new bars in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
