"""Daily reports (infra/daily_report.py, actors/ops.py; docs/operations.md "Daily report"): the
bundled paper run at full speed writes run/reports/daily/<day>.html with a chart per traded
instrument for every trading day, whose figures are the trades CSV's, and sends each day's
summary to Slack as Block Kit (a local webhook receiver)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

from tests.test_alerts import hook  # noqa: F401 - the local Slack receiver fixture

ROOT = Path(__file__).resolve().parent.parent


def test_the_bundled_paper_run_writes_a_report_for_each_day_and_tells_slack(tmp_path, redis_url, hook):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECTX_USERNAME", "PROJECTX_API_KEY")}
    env.update(REDIS_URL=redis_url, SLACK_WEBHOOK_URL=hook.url)
    trades = tmp_path / "trades.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--mode", "paper", "--speed", "max",
                           "--profile", "combine-150k", "--namespace", f"test:daily:{uuid.uuid4().hex[:6]}",
                           "--run-dir", str(tmp_path), "--metrics-port", "0", "--ops-port", "0",
                           "--trades-csv", str(trades)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = list(csv.DictReader(trades.open()))
    days = sorted({r["trading_day"] for r in rows})
    assert len(days) >= 2
    folder = tmp_path / "reports" / "daily"
    for day in days:
        page = (folder / f"{day}.html").read_text()
        day_rows = [r for r in rows if r["trading_day"] == day]
        fills = re.search(r"<th>fills</th><td class='n'>(\d+)</td>", page)
        assert fills and int(fills.group(1)) == len(day_rows), day
        net = Decimal(day_rows[-1]["day_pnl"])  # the CSV's running day P&L (realized - fees)
        assert "Rule checks" in page and "daily loss cap" in page and "flat by 15:10 CT" in page
        for sym in sorted({r["instrument"] for r in day_rows}):
            png = folder / f"{day}_{sym}.png"
            assert png.stat().st_size > 5_000 and f"src='{png.name}'" in page
        sent = [b for b in hook.bodies if b["text"].startswith(f"[INFO] Day {day}:")]
        assert len(sent) == 1, (day, [b["text"][:60] for b in hook.bodies])
        blocks = sent[0]["blocks"]
        assert blocks[0]["text"]["text"] == "INFO: daily report"
        assert "*Mode*\npaper" in [f["text"] for f in blocks[1]["fields"]]
        if day != days[-1]:  # closed days: flat at the roll, so the day's net is the CSV's
            assert f"net {'-' if net < 0 else ''}${abs(net):,.2f}" in sent[0]["text"]
