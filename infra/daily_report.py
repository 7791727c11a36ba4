"""The daily report of a paper or live session: ``{run_dir}/reports/daily/<day>.html`` with its
PNG charts, written when a trading day ends (17:00 CT roll), at shutdown for the last day, and on
demand (the ops ``report`` command: docs/operations.md, "Daily report").

For one trading day (America/Chicago; the day starts 17:00 CT the evening before):

- the day's net P&L, fills, round-trip trades (FIFO per strategy and instrument, risk's closes
  attributed to the holder: :func:`domain.trade_stats.match_round_trips`), wins, losses, the
  largest loss, net per strategy;
- rule checks: the day's loss against the daily loss cap, the MLL headroom, flat by 15:10 CT
  (risk's flat-time violations), contracts against the limit, risk's state;
- risk's breaches and the operator's commands of that day, with CT times;
- per traded instrument a PNG of the day's prices (the replayed bars in a replay, the panel's
  last-price samples live) with every fill marked (:func:`infra.reporting._plot_price`, the
  backtest report's chart);
- a one-line summary the node sends to Slack (:func:`summary_line`).

Money in dollars (exact Decimal in, two decimals out); times CT.
"""

from __future__ import annotations

import datetime as dt
import html
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from domain.calendar import trading_day
from domain.trade_stats import match_round_trips, money
from infra.trade_log import TradeRow

NS = 1_000_000_000


def _e(v: Any) -> str:
    return html.escape(str(v))


def day_rows(rows: Iterable[TradeRow], day: str) -> list[TradeRow]:
    """The trades CSV rows of trading day ``day`` (ISO)."""
    return [r for r in rows if r.trading_day == day]


def day_figures(rows: list[TradeRow], day: str, strategies: list[str]) -> dict[str, Any]:
    """Round-trip figures of ``day`` from the session's rows up to and including that day."""
    upto = [r for r in rows if r.trading_day <= day]
    match = match_round_trips([r.fill for r in upto], strategies, {r.fill.trade_id: r.purpose for r in upto})
    trades = [t for t in match.trades if trading_day(t.exit_ns).isoformat() == day]
    nets = [t.gross - t.fees for t in trades]
    by_strategy: dict[str, Decimal] = {}
    for t, n in zip(trades, nets):
        by_strategy[t.strategy] = by_strategy.get(t.strategy, Decimal(0)) + n
    return {"match": match, "trades": trades, "wins": sum(1 for n in nets if n > 0),
            "losses": sum(1 for n in nets if n < 0), "largest_loss": min(nets, default=Decimal(0)),
            "by_strategy": by_strategy}


def rule_checks(day: str, net: Decimal, status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(rule, ok / warn / breach, detail)`` for ``day`` from the ops status document."""
    lim, acct = status["limits"], status["account"]
    out = []
    cap = Decimal(lim["daily_loss_cap"]) if lim.get("daily_loss_cap") else None
    if cap is not None:
        used = -net / cap if net < 0 else Decimal(0)
        out.append(("daily loss cap", "breach" if used >= 1 else "warn" if used >= Decimal("0.8") else "ok",
                    f"day net {money(net)} against a cap of {money(cap)} ({used:.0%} used)"))
    headroom = Decimal(acct["mll_headroom"])
    out.append(("MLL", "breach" if headroom <= 0 else "ok",
                f"headroom {money(headroom)} above the floor {money(Decimal(acct['mll_floor']))} (now)"))
    flat = [t for t in status.get("flat_violations", []) if t.startswith(day) or _violation_day(t) == day]
    out.append(("flat by 15:10 CT", "breach" if flat else "ok",
                f"positions open at the day roll: {', '.join(flat)}" if flat else "flat at the day's end"))
    out.append(("contract limit", "ok" if Decimal(status["max_contracts_seen"]) <= Decimal(lim["max_contracts_minis"])
                else "breach", f"most held {status['max_contracts_seen']} of {lim['max_contracts_minis']} minis (session)"))
    return out


def _violation_day(iso: str) -> str:
    try:
        ts = int(dt.datetime.fromisoformat(iso).timestamp() * NS)
    except ValueError:
        return ""
    return trading_day(ts - 1).isoformat()  # the roll's instant belongs to the day that ended


def summary_line(day: str, net: Decimal, fills: int, fig: dict[str, Any], checks: list[tuple[str, str, str]],
                 path: Path) -> str:
    """The short Slack summary of a day."""
    bad = [f"{r} {s.upper()}" for r, s, _d in checks if s != "ok"]
    return (f"Day {day}: net {money(net)}, {fills} fills, {len(fig['trades'])} trades "
            f"({fig['wins']} won, {fig['losses']} lost); rules: {', '.join(bad) if bad else 'all ok'}. "
            f"Report: {path}")


def write_daily_report(day: str, status: dict[str, Any], rows: list[TradeRow], bars: dict[str, list],
                       out_dir: Path, strategies: list[str], prices_note: str = "") -> tuple[Path, str]:
    """Write ``out_dir/<day>.html`` and its charts ``out_dir/<day>_<instrument>.png``.

    Args:
        day: ISO trading day.
        status: the ops status document (:meth:`actors.ops.OpsDesk.status`) at writing time.
        rows: the session's trades CSV rows (all days; execution order).
        bars: ``{instrument: [bar rows with start_ns, end_ns, low, high, close]}`` for the chart.
        out_dir: the daily reports folder (created).
        strategies: strategy names in config order.
        prices_note: where the chart's prices come from.
    Returns: ``(html path, the Slack summary line)``. Raises OSError if the folder is not writable.
    """
    from infra.reporting import _CSS, _Data, _plot_price
    out_dir.mkdir(parents=True, exist_ok=True)
    today = day_rows(rows, day)
    fig = day_figures(rows, day, strategies)
    net = next((Decimal(d["net"]) for d in status["days"] if d["day"] == day), None)
    if net is None:  # a day risk has not counted (no fills): 0
        net = Decimal(0)
    checks = rule_checks(day, net, status)
    actions = [a for a in status.get("actions", []) if a["time"][:10] == day or _violation_day(a["time"]) == day]
    charts = []
    data = _Data(today, fig["match"], None, bars, prices_note, [], day)
    shim = SimpleNamespace(day_pnls=[(day, net, len(today))], worst_day=None)
    for sym in sorted({r.fill.instrument for r in today} or set(bars)):
        png = out_dir / f"{day}_{sym}.png"
        caption = _plot_price(shim, data, sym, png)
        charts.append((png.name, caption))
    colour = {"ok": "yes", "warn": "muted", "breach": "no"}
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>Daily report {_e(day)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>Daily report: trading day {_e(day)}</h1>",
            f"<p class='muted'>{_e(status['mode'])} mode, profile {_e(status['profile'])}"
            + (f", account {_e(status['broker_account']['name'])}" if status.get("broker_account") else "")
            + f"; written at event time {_e(status['event_time'][:19])} CT. Money in dollars, times CT.</p>",
            "<h2>P&amp;L and trades</h2><table>",
            f"<tr><th>day net P&amp;L (after fees)</th><td class='n'>{_e(money(net))}</td></tr>",
            f"<tr><th>fills</th><td class='n'>{len(today)}</td></tr>",
            f"<tr><th>round-trip trades closed</th><td class='n'>{len(fig['trades'])} ({fig['wins']} won, "
            f"{fig['losses']} lost)</td></tr>",
            f"<tr><th>largest losing trade</th><td class='n'>{_e(money(fig['largest_loss']))}</td></tr>"]
    page += [f"<tr><th>net of closed trades: {_e(s)}</th><td class='n'>{_e(money(v))}</td></tr>"
             for s, v in sorted(fig["by_strategy"].items())]
    page += ["</table><h2>Rule checks</h2><table><tr><th>rule</th><th>status</th><th></th></tr>"]
    page += [f"<tr><td>{_e(r)}</td><td class='{colour[s]}'>{_e(s.upper())}</td><td>{_e(d)}</td></tr>"
             for r, s, d in checks]
    page += ["</table><h2>Breaches and actions</h2>"]
    if actions:
        page += ["<table><tr><th>time (CT)</th><th>what</th><th></th></tr>"]
        page += [f"<tr><td>{_e(a['time'][:19])}</td><td>{_e(a['what'])}</td><td>{_e(a['detail'])}</td></tr>"
                 for a in actions]
        page += ["</table>"]
    else:
        page += ["<p>None.</p>"]
    page += ["<h2>Prices and fills</h2>"]
    page += [f"<figure><img src='{_e(name)}' alt='{_e(name)}'><figcaption>{_e(cap)}</figcaption></figure>"
             for name, cap in charts]
    if prices_note:
        page += [f"<p class='muted'>{_e(prices_note)}</p>"]
    page += ["</body></html>"]
    path = out_dir / f"{day}.html"
    path.write_text("\n".join(page), encoding="utf-8")
    return path, summary_line(day, net, len(today), fig, checks, path)


def bars_from_samples(instrument: str, samples: Iterable[tuple[int, float]]) -> list:
    """1-minute :class:`domain.messages.Bar` rows from last-price samples ``(epoch s, price)``
    (live mode, where no bar file exists): open, high, low, close of the samples in each minute."""
    from domain.messages import Bar
    minutes: dict[int, list[float]] = {}
    for t, p in samples:
        minutes.setdefault(int(t) // 60, []).append(p)
    out = []
    for m in sorted(minutes):
        ps = [Decimal(str(p)) for p in minutes[m]]
        start = m * 60 * NS
        out.append(Bar(instrument, 60, start, start + 60 * NS, ps[0], max(ps), min(ps), ps[-1], 0, start + 60 * NS))
    return out
