"""Daily-cap report: do the guardrails hold? Backtests every profile on one or more data sets.

For each profile and data set it runs the deterministic backtest (``actors.node.Node`` in
``backtest`` mode, default strategies of the profile) and prints, from risk's per-day table
(net P&L after fees per trading day, day roll at 17:00 CT): traded days, days beyond the daily
loss cap, the worst day against the cap (dollars and percent beyond it), whether the MLL was
touched, the net P&L and the Combine status. The target of docs/risk.md ("Sweep guard"): no day
more than 10 % beyond its cap, and the MLL never touched.

Usage::

    python scripts/daily_cap_report.py                          # data/demo and ../shared/data/..., all profiles
    python scripts/daily_cap_report.py --data data/demo --profiles combine-50k
    python scripts/daily_cap_report.py --days                   # also each profile's per-day table

Exit status 1 when a run misses the target (a day beyond 110 % of the cap, or the MLL touched).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import list_profiles, load_config  # noqa: E402

DEFAULT_DATA = [ROOT / "data/demo", ROOT.parent / "shared/data/es_nq_yahoo_2m_5m"]
TOLERANCE = Decimal("0.10")
"""A day may end at most this far beyond its daily cap (10 %)."""


def run(profile: str, data_dir: Path, run_dir: Path):
    """One backtest; returns the :class:`domain.report.SessionSummary`."""
    from loguru import logger

    from actors.node import Node
    from actors.tree import MODES
    logger.remove()
    cfg = load_config(None, profile, {"runtime": {"data_dir": str(data_dir), "run_dir": str(run_dir)}})
    return Node(cfg, MODES["backtest"], trades_csv=run_dir / f"trades-{profile}.csv").run_backtest()


def row(profile: str, data: str, s) -> tuple[str, bool]:
    """One report line and whether the run meets the target."""
    cap = s.daily_loss_cap
    worst = s.worst_day
    beyond = s.days_beyond_cap()
    far = s.days_beyond_cap(TOLERANCE)
    if worst is None or cap is None:
        wtxt = "no traded day" if worst is None else f"worst {worst[0]} ${worst[1]:,.2f} (no cap)"
    else:
        pct = (-worst[1] / cap - 1) * 100
        wtxt = f"worst {worst[0]} ${worst[1]:>9,.2f} vs cap ${cap:,.0f} ({pct:+.1f}% beyond)" if worst[1] < 0 else \
            f"worst {worst[0]} ${worst[1]:>9,.2f} (no losing day)"
    ok = not far and not s.mll_touched
    line = (f"{profile:<14} {data:<22} traded {len(s.traded_days):>2}  beyond cap {len(beyond):>2} "
            f"(>10%: {len(far)})  {wtxt}  MLL touched {'YES' if s.mll_touched else 'no '}  "
            f"net ${s.net_pnl:>10,.2f}  Combine passed {'YES' if s.target_reached else 'no'}  "
            f"denials {s.denials} ({s.denials_by_rule.get('sweep_guard', 0)} sweep)  {'OK' if ok else 'MISS'}")
    return line, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", type=Path,
                    help="data folder (repeatable); default data/demo and ../shared/data/es_nq_yahoo_2m_5m")
    ap.add_argument("--profiles", nargs="+", default=None, help=f"profiles (default all: {', '.join(list_profiles())})")
    ap.add_argument("--days", action="store_true", help="print each run's per-day table too")
    a = ap.parse_args(argv)
    datas = a.data or [d for d in DEFAULT_DATA if d.exists()]
    profiles = a.profiles or list_profiles()
    all_ok = True
    for data in datas:
        for profile in profiles:
            with tempfile.TemporaryDirectory() as tmp:
                s = run(profile, data, Path(tmp))
            line, ok = row(profile, data.name, s)
            all_ok &= ok
            print(line, flush=True)
            if a.days:
                for day, pnl, n in s.day_pnls:
                    if n:
                        print(f"    {day}  {pnl:>10,.2f}  fills {n}")
    print("target met: no day more than 10% beyond its cap, MLL never touched" if all_ok else
          "target MISSED (see MISS lines)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
