"""Build the bundled demo dataset ``data/demo/{ES,NQ}_2min.csv.gz`` (reproducible, byte for byte).

Usage (from anywhere)::

    python scripts/make_demo_data.py [SOURCE_DIR] [--first 2026-04-07] [--last 2026-04-10]

``SOURCE_DIR`` holds the Yahoo files ``ES_2min.csv.gz`` / ``NQ_2min.csv.gz`` (default
``../shared/data/es_nq_yahoo_2m_5m``, relative to the repository root). The excerpt keeps every
row whose bar start falls in a CME/Topstep trading day (America/Chicago, 17:00 CT boundary, see
:func:`domain.calendar.trading_day`) in ``[first, last]``. Rows are copied verbatim (same header,
same text), and gzip is written with mtime 0 and no file name so reruns give identical bytes.

Before writing, it checks that every requested trading day is present in both files with the
same timestamps, starts at the 17:00 CT open, runs to the 16:00 CT close, and has no gap longer
than ``--max-gap-min`` minutes (default 10: Yahoo leaves out 00:00-00:06 ET every night); it exits
with status 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from domain.calendar import CLOSE_TIME, CT, NS, dt_to_ns, ns_to_ct, session_open, trading_day  # noqa: E402
from infra.replay import local_to_ns  # noqa: E402

FILES = ("ES_2min.csv.gz", "NQ_2min.csv.gz")
ET = ZoneInfo("America/New_York")


def excerpt(src: Path, first: dt.date, last: dt.date) -> tuple[str, list[str], list[int]]:
    """Header, kept raw lines and their bar-start epoch ns for trading days in [first, last]."""
    with gzip.open(src, "rt", encoding="utf-8", newline="") as fh:
        header, *lines = fh.read().splitlines()
    kept, stamps = [], []
    for line in lines:
        ts = local_to_ns(dt.datetime.fromisoformat(line.split(",", 1)[0]), ET)
        if ts is not None and first <= trading_day(ts) <= last:
            kept.append(line)
            stamps.append(ts)
    return header, kept, stamps


def check(name: str, stamps: list[int], first: dt.date, last: dt.date, max_gap_min: int) -> list[str]:
    """Problems with one excerpt: missing trading days or gaps longer than ``max_gap_min``."""
    problems = []
    days = {trading_day(t) for t in stamps}
    d = first
    while d <= last:
        if d.weekday() < 5 and d not in days:
            problems.append(f"{name}: trading day {d} missing")
        d += dt.timedelta(days=1)
    for a, b in zip(stamps, stamps[1:]):
        if trading_day(a) == trading_day(b) and b - a > max_gap_min * 60 * NS:
            problems.append(f"{name}: gap of {(b - a) // NS // 60} min after {_et(a)} ET")
    for day in sorted(days):
        in_day = [t for t in stamps if trading_day(t) == day]
        if dt_to_ns(session_open(day)) != in_day[0]:
            problems.append(f"{name}: trading day {day} starts late, at {_et(in_day[0])} ET")
        close = dt.datetime.combine(day, CLOSE_TIME, tzinfo=CT)
        if in_day[-1] + max_gap_min * 60 * NS < dt_to_ns(close):
            problems.append(f"{name}: trading day {day} ends early, at {_et(in_day[-1])} ET")
    return problems


def _et(ts_ns: int) -> str:
    return ns_to_ct(ts_ns).astimezone(ET).strftime("%Y-%m-%d %H:%M")


def write_gz(path: Path, header: str, lines: list[str]) -> None:
    """Write CSV text gzip-compressed, deterministically (mtime 0, no embedded file name)."""
    data = ("\n".join([header, *lines]) + "\n").encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    path.write_bytes(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", default="../shared/data/es_nq_yahoo_2m_5m")
    ap.add_argument("--first", type=dt.date.fromisoformat, default=dt.date(2026, 4, 7))
    ap.add_argument("--last", type=dt.date.fromisoformat, default=dt.date(2026, 4, 10))
    ap.add_argument("--out", default="data/demo")
    ap.add_argument("--max-gap-min", type=int, default=10)
    args = ap.parse_args(argv)
    src = Path(args.source)
    src = src if src.is_absolute() else REPO / src
    out = Path(args.out)
    out = out if out.is_absolute() else REPO / out

    results, problems = {}, []
    for name in FILES:
        header, lines, stamps = excerpt(src / name, args.first, args.last)
        problems += check(name, stamps, args.first, args.last, args.max_gap_min)
        results[name] = (header, lines, stamps)
    if results[FILES[0]][2] != results[FILES[1]][2]:
        problems.append("ES and NQ excerpts do not have the same timestamps")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for name, (header, lines, _) in results.items():
        write_gz(out / name, header, lines)
        print(f"{out / name}: {len(lines)} rows, {lines[0].split(',')[0]} .. {lines[-1].split(',')[0]} ET")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
