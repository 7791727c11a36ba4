"""The backtest report folder: ``{run_dir}/reports/<run>/`` with report.html, summary.json,
trades.csv and PNG plots (docs/report.md describes each file and plot).

- ``<run>`` = ``<mode>_<first day>_<last day>_<profile>_<YYYYMMDD-HHMMSS>`` (the wall-clock time the
  report was started, America/Chicago), ``-2``, ``-3``... appended if that folder exists
  (:func:`new_report_dir`), so runs never overwrite each other.
- Sources: the session's trades CSV (``SessionSummary.trades_csv``, :mod:`infra.trade_log`: every
  fill with its time and purpose), the summary's account figures (risk's book), the profile's
  limits (``cfg.profile``) and the replayed bar files of the data folder (``cfg.runtime.data_dir``,
  :data:`infra.feeds.DATA_FILES`: the 1-min bars when there, else the 2-min bars): the price chart
  draws the bars, and the equity curve is marked at every print the run replayed from them
  (:func:`print_marks`), as risk marked the account.
- Trades and metrics come from :mod:`domain.trade_stats` (pure); this module only reads, draws
  and writes. Money is exact ``Decimal`` dollars in the CSV and JSON (as strings); times are
  America/Chicago.

matplotlib is imported here, inside the plotting functions (Agg canvas, no pyplot state), and this
module only by the code that writes a report: the actors' import time does not grow.
"""

from __future__ import annotations

import base64
import bisect
import csv
import datetime as dt
import html
import io
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

from domain.calendar import CT, NS, UTC, trading_day
from domain.risk_rules import mll_floor
from domain.trade_stats import (
    ENTRY,
    EXIT,
    RISK,
    STOP,
    BacktestStats,
    RoundTrip,
    TradeMatch,
    drawdowns,
    eod_mll_floors,
    equity_curve,
    match_round_trips,
    money,
    render_seed_table,
)
from infra.trade_log import TradeRow, read_records

FIG_SIZE = (9.0, 4.5)
"""Figure size, inches; at :data:`DPI` a plot is 900 x 450 px."""
DPI = 100
TRADE_COLUMNS = ("entry_time_ct", "exit_time_ct", "strategy", "instrument", "side", "qty", "entry_price",
                 "exit_price", "gross_pnl", "fees", "net_pnl", "entry_purpose", "exit_purpose", "closed_by",
                 "regime")
"""trades.csv columns: times ISO-8601 America/Chicago, qty contracts, prices points, P&L and fees
dollars (exact), ``closed_by`` the closing fill's owner (the strategy, ``risk``, ``emergency``)."""

GREEN, RED, DARK_RED, BLUE, GREY, ORANGE = "#2e7d32", "#e57373", "#8b0000", "#1f5fa8", "#8a8a8a", "#ef6c00"


def iso_ct(ts_ns: int) -> str:
    """Epoch ns -> ISO-8601 in America/Chicago, exact to the microsecond (no float rounding)."""
    sec, rest = divmod(ts_ns, NS)
    return (dt.datetime.fromtimestamp(sec, tz=UTC) + dt.timedelta(microseconds=rest // 1000)).astimezone(CT).isoformat()


def new_report_dir(run_dir: Path | str, summary: Any, profile: str, now: dt.datetime | None = None) -> Path:
    """Create and return ``{run_dir}/reports/<mode>_<first>_<last>_<profile>_<YYYYMMDD-HHMMSS>``
    (``now`` in America/Chicago, default the wall clock), with ``-2``, ``-3``... when it exists."""
    now = (now or dt.datetime.now(tz=CT)).astimezone(CT)
    days = summary.days or ["no-day"]
    base = Path(run_dir) / "reports" / f"{summary.mode}_{days[0]}_{days[-1]}_{profile}_{now:%Y%m%d-%H%M%S}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{base}: 999 report folders of this name already exist")


@dataclass
class _Data:
    """Everything the report draws from (built once by :func:`write_report`)."""

    rows: list[TradeRow]
    match: TradeMatch
    stats: BacktestStats
    bars: dict[str, list]  # instrument -> infra.replay.BarRow of the simulated days
    bars_note: str
    curve: list  # domain.trade_stats.EquityPoint
    day: str | None


def _load_bars(cfg: Any, instruments: list[str], days: list[str]) -> tuple[dict[str, list], str]:
    """The replayed bars of ``instruments`` over ``days`` from ``cfg.runtime.data_dir`` (the finest
    bar file, as the backtest replayed; parsed files are cached by :mod:`infra.replay`). Returns
    ``(bars by instrument, note)``; a missing or unreadable folder gives no bars and a note."""
    src, note = _replay_source(cfg, instruments, days)
    return ({s: src.bars(s) for s in src.instruments} if src is not None else {}), note


def _replay_source(cfg: Any, instruments: list[str], days: list[str]) -> tuple[Any, str]:
    """``(ReplaySource or None, note)``: the replay of ``instruments`` over ``days`` from
    ``cfg.runtime.data_dir`` (:func:`_load_bars`), no warm-up day."""
    from infra.feeds import DATA_FILES
    from infra.replay import ReplaySource
    data_dir = Path(cfg.runtime.data_dir)
    files = {}
    for sym in instruments:
        path = next((data_dir / n for n in DATA_FILES.get(sym, ()) if (data_dir / n).is_file()), None)
        if path is not None:
            files[sym] = path
    missing = [s for s in instruments if s not in files]
    if not files or not days:
        return None, f"no bar file in {data_dir} for {', '.join(missing) or 'the traded instruments'}"
    try:
        src = ReplaySource(files, start=dt.date.fromisoformat(days[0]), end=dt.date.fromisoformat(days[-1]),
                           warmup_days=0)
    except (OSError, ValueError, KeyError) as exc:  # KeyError: an instrument infra.replay does not know
        return None, f"bars not readable: {exc}"
    names = ", ".join(f"{s}: {p.name}" for s, p in files.items())
    return src, f"bars from {data_dir} ({names})" + (f"; none for {', '.join(missing)}" if missing else "")


def print_marks(src: Any, cfg: Any, fills: list) -> Iterator[tuple[int, str, Decimal]]:
    """``(ts_ns, instrument, price in points)`` of every print the run replayed, in replay order:
    the prices risk marked the account at (the run's intra-bar path ``cfg.runtime.bar_path`` and
    continuous path ``cfg.runtime.path_step_bp``, :meth:`infra.replay.ReplaySource.events` of
    ``src``).

    The ``adverse`` path orders a bar by the position held when the bar is made, which the replay
    reads as the position in the instrument before its previous print was matched
    (:meth:`infra.replay.ReplaySource.events`): here the net of the run's ``fills``
    (:class:`domain.messages.Fill`, execution order) of the instrument before that print."""
    path = cfg.runtime.bar_path
    last_print: dict[str, int] = {}  # instrument -> time of its last print handed out
    position: Callable[[str], int] | None = None  # the adaptive path reads no position
    if path != "adaptive":
        by_sym: dict[str, tuple[list[int], list[int]]] = {}
        for f in fills:  # per instrument: fill times and the net position after each
            times, nets = by_sym.setdefault(f.instrument, ([], []))
            times.append(f.ts_ns)
            nets.append((nets[-1] if nets else 0) + f.side.sign * f.qty)

        def held(sym: str) -> int:
            times, nets = by_sym.get(sym, ([], []))
            i = bisect.bisect_left(times, last_print.get(sym, 0))  # the fills before that print
            return nets[i - 1] if i else 0

        position = held

    for t in src.events(path=path, position=position, step_bp=cfg.runtime.path_step_bp):
        last_print[t.instrument] = t.ts_ns
        yield t.ts_ns, t.instrument, t.price


def _collect(summary: Any, cfg: Any, day: str | None) -> _Data:
    """Read the trades CSV and the bars; match the trades, compute the table's figures and the
    equity curve (account fills, marked at every replayed print of every traded or configured
    instrument, :func:`print_marks`)."""
    path = Path(summary.trades_csv) if summary.trades_csv else None
    rows = read_records(path.read_text()) if path is not None and path.is_file() else []
    fills = [r.fill for r in rows]
    names = [r.name for r in summary.strategies] or [e.name for e in cfg.enabled_strategies()]
    match = match_round_trips(fills, names, {r.fill.trade_id: r.purpose for r in rows})
    stats = summary.seed_stats(match.trades)
    instruments = sorted({f.instrument for f in fills} | set(cfg.instruments()))
    src, note = _replay_source(cfg, instruments, list(summary.days))
    bars = {s: src.bars(s) for s in src.instruments} if src is not None else {}
    curve = equity_curve(fills, print_marks(src, cfg, fills) if src is not None else (),
                         cfg.profile.starting_balance)
    if day is None:
        worst = summary.worst_day
        day = worst[0] if worst else (summary.days[-1] if summary.days else None)
    return _Data(rows, match, stats, bars, note, curve, day)


def check_report_day(summary: Any, day: str | None) -> None:
    """Raise ValueError unless ``day`` (ISO) is None or one of the summary's simulated days."""
    if day is not None and day not in summary.days:
        shown = f"{summary.days[0]}..{summary.days[-1]}" if summary.days else "none"
        raise ValueError(f"--report-day {day} is not a simulated trading day (simulated: {shown})")


def write_report(summary: Any, cfg: Any, out_dir: Path | str, day: str | None = None) -> Path:
    """Write the report of a finished backtest into ``out_dir`` (created if needed); returns it.

    Files: ``report.html`` (self-contained: inline CSS, plots as base64 PNG data URIs, no script,
    no external link), ``summary.json``, ``trades.csv`` (:data:`TRADE_COLUMNS`), ``equity.png``,
    ``drawdown.png``, ``daily_pnl.png``, ``strategies.png`` and ``price_<day>_<instrument>.png`` per
    traded instrument (docs/report.md).

    Args:
        summary: the :class:`domain.report.SessionSummary` of the run (its ``trades_csv`` is read).
        cfg: the run's :class:`config.settings.AppConfig` (profile limits, data folder).
        out_dir: the report folder (:func:`new_report_dir` makes a fresh one).
        day: ISO trading day (America/Chicago) of the price charts; default the worst traded day
            (lowest net P&L), else the last simulated day.
    Raises:
        ValueError: ``day`` is not a simulated trading day.
        OSError: the folder or a file cannot be written, the trades CSV cannot be read.
    """
    check_report_day(summary, day)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _collect(summary, cfg, day)
    _write_trades_csv(out / "trades.csv", data.match.trades)
    plots = _plots(summary, cfg, data, out)
    (out / "summary.json").write_text(json.dumps(_summary_dict(summary, cfg, data, plots), indent=2,
                                                 default=_json_default) + "\n")
    (out / "report.html").write_text(_html(summary, cfg, data, plots, out), encoding="utf-8")
    return out


# --------------------------------------------------------------------------- files


def _write_trades_csv(path: Path, trades: list[RoundTrip]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRADE_COLUMNS)
        for t in trades:
            w.writerow((iso_ct(t.entry_ns), iso_ct(t.exit_ns), t.strategy, t.instrument, t.side, t.qty,
                        str(t.entry_price), str(t.exit_price), str(t.gross), str(t.fees), str(t.net),
                        t.entry_purpose, t.exit_purpose, t.closed_by, t.regime or ""))


def _json_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (Path, dt.date)):
        return str(v)
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def _opt(v: Decimal | None, places: int | None = None) -> str | None:
    """``str(v)`` (None stays None); a ratio or mean rounded to ``places`` decimals."""
    if v is None:
        return None
    return str(v if places is None else v.quantize(Decimal(1).scaleb(-places)))


def _summary_dict(summary: Any, cfg: Any, data: _Data, plots: list[tuple[str, str, str]]) -> dict:
    """summary.json: every figure of the report, Decimal dollars as strings."""
    s = data.stats
    trades_by_day: dict[str, list[RoundTrip]] = {}
    for t in data.match.trades:
        trades_by_day.setdefault(trading_day(t.exit_ns).isoformat(), []).append(t)
    cap = summary.daily_loss_cap
    by_name = {g.label: g for g in s.by_strategy}
    return {
        "run": {"mode": summary.mode, "profile": cfg.profile.name, "data_dir": str(cfg.runtime.data_dir),
                "first_day": s.first_day, "last_day": s.last_day, "days": list(summary.days),
                "bar_path": next(iter(summary.path_nets), cfg.runtime.bar_path), "trades_csv": summary.trades_csv,
                "exit_reason": summary.exit_reason, "events": summary.events, "seconds": round(summary.seconds, 3),
                "price_chart_day": data.day},
        "seed_table": {
            "text": render_seed_table(s), "period": [s.first_day, s.last_day], "total_pnl": s.total_pnl,
            "max_drawdown": s.max_drawdown, "win_rate": _opt(s.win_rate, 6), "avg_win": _opt(s.avg_win, 4),
            "avg_loss": _opt(s.avg_loss, 4), "win_loss_ratio": _opt(s.win_loss_ratio, 4), "total_trades": s.trades,
            "wins": s.wins, "losses": s.losses, "trades_per_day": _opt(s.trades_per_day, 4),
            "days_simulated": s.days_simulated, "daily_loss_cap": _opt(s.daily_loss_cap),
            "days_hitting_cap": list(s.days_hitting_cap),
            "pnl_by_strategy": [{"strategy": g.label, "net_pnl": g.net, "trades": g.trades, "wins": g.wins,
                                 "gross_pnl": g.gross, "fees": g.fees} for g in s.by_strategy],
            "pnl_by_regime": [{"regime": g.label, "net_pnl": g.net, "trades": g.trades, "wins": g.wins}
                              for g in s.by_regime]},
        "account": {"starting_balance": cfg.profile.starting_balance, "fills": summary.fills,
                    "gross_pnl": summary.gross_pnl, "fees": summary.fees, "net_pnl": summary.net_pnl,
                    "max_drawdown": summary.max_drawdown, "mll_amount": cfg.profile.mll_amount,
                    "mll_floor": summary.mll_floor, "min_mll_headroom": _opt(summary.min_mll_headroom),
                    "open_positions": summary.open_positions, "open_lots": {
                        f"{k[0]}/{k[1]}": v for k, v in data.match.open_lots.items()}},
        "combine": {"passed": bool(summary.target_reached and summary.rules_ok), "target_reached": summary.target_reached,
                    "profit_target": _opt(summary.profit_target), "effective_target": _opt(summary.effective_target),
                    "best_day": summary.best_day, "consistency_share": _opt(summary.consistency_share),
                    "consistency_met": summary.consistency_met, "verdict": summary._combine_lines()[0]},
        "rules": {"mll_touched": summary.mll_touched, "flat_violations": summary.flat_violations,
                  "max_contracts_minis": summary.max_contracts_minis, "contract_limit": summary.contract_limit,
                  "rules_ok": summary.rules_ok},
        "guardrails": {"breaches": [{"time_ct": iso_ct(b[0]), "rule": b[1], "detail": b[2]} for b in summary.breaches],
                       "denials": summary.denials, "denials_by_rule": summary.denials_by_rule,
                       "daily_loss_cap": _opt(cap), "session_loss_cap": _opt(summary.session_loss_cap)},
        "path_nets": dict(summary.path_nets),
        "days": [{"day": d, "net_pnl": pnl, "fills": n, "trades_closed": len(trades_by_day.get(d, [])),
                  "wins": sum(1 for t in trades_by_day.get(d, []) if t.net > 0),
                  "beyond_cap": cap is not None and pnl < -cap} for d, pnl, n in summary.day_pnls],
        "strategies": [{"name": r.name, "kind": r.kind, "instruments": list(r.instruments), "fills": r.fills,
                        "closes_by_risk": r.closes_by_risk, "gross_pnl": r.gross_pnl, "fees": r.fees,
                        "net_pnl": r.net_pnl, "trades": by_name[r.name].trades if r.name in by_name else 0,
                        "wins": by_name[r.name].wins if r.name in by_name else 0,
                        "open_positions": r.open_positions, "stats": r.stats} for r in summary.strategies],
        "files": {"trades": "trades.csv", "plots": [name for name, _t, _c in plots]},
        "bars": data.bars_note,
    }


# --------------------------------------------------------------------------- plots


def _x(ts_ns: Any) -> Any:
    """Epoch ns -> matplotlib date numbers (days since 1970-01-01 UTC, its default epoch)."""
    import numpy as np
    return np.asarray(ts_ns, dtype=np.float64) / (86400.0 * NS)


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure
    fig = Figure(figsize=FIG_SIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _dollars(ax: Any, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter
    fmt = FuncFormatter(lambda v, _p: f"{'-' if v < 0 else ''}${abs(v):,.0f}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _ct_dates(ax: Any, fmt: str | None = None) -> None:
    import matplotlib.dates as mdates
    loc = mdates.AutoDateLocator(tz=CT, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=CT) if fmt else
                                 mdates.ConciseDateFormatter(loc, tz=CT))


def _save(fig: Any, path: Path) -> None:
    """Write ``fig`` as a 256-colour PNG (Pillow's fast octree palette: a quarter of the RGBA size,
    colours kept; the HTML embeds every plot)."""
    from PIL import Image
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, format="PNG",
                                                                                      optimize=True)


def warm_up_plotting() -> None:
    """Load the plotting stack (matplotlib, its fonts, Pillow) and draw one tiny figure, so a
    long-running node pays for it at start-up rather than at its first day-end report (about
    30-40 MiB and 0.3 s, once; scripts/soak.py measures the memory growth from start-up)."""
    from matplotlib.figure import Figure
    from PIL import Image  # noqa: F401 - _save's
    fig = Figure(figsize=(2, 1), dpi=50)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.set_title("warm-up $1,000")
    fig.savefig(io.BytesIO(), format="png")


def _day_close_ns(day: str) -> int:
    """17:00 CT on ``day``: the trading day's roll (end-of-day for the MLL)."""
    d = dt.date.fromisoformat(day)
    return int(dt.datetime.combine(d, dt.time(17, 0), tzinfo=CT).timestamp()) * NS


def _plot_equity(summary: Any, cfg: Any, data: _Data, path: Path) -> str:
    prof = cfg.profile
    start = prof.starting_balance
    curve = data.curve
    if not curve:
        first = _day_close_ns(summary.days[0]) if summary.days else 0
        ts, eq = [first - 86400 * NS, first], [start, start]
    else:
        ts, eq = [p.ts_ns for p in curve], [p.equity for p in curve]
    fig, ax = _figure()
    x = _x(ts)
    ax.plot(x, [float(v) for v in eq], drawstyle="steps-post", color=BLUE, lw=1.2, label="equity (marked at every replayed print)")
    if prof.mll_trailing == "intraday":
        peak, floors = start, []
        for v in eq:
            peak = max(peak, v)
            floors.append(float(mll_floor(start, prof.mll_amount, peak)))
        fx, fy = x, floors
    else:
        fts, fy = [ts[0]], [float(mll_floor(start, prof.mll_amount, start))]
        for d, floor in eod_mll_floors(summary.day_pnls, start, prof.mll_amount):
            t = _day_close_ns(d)
            if ts[0] < t < ts[-1]:
                fts.append(t)
                fy.append(float(floor))
        fts.append(ts[-1])
        fy.append(fy[-1])
        fx = _x(fts)
    ax.plot(fx, fy, drawstyle="steps-post", color=DARK_RED, lw=1.5, ls="--",
            label=f"MLL floor ({prof.mll_trailing} trailing, ${prof.mll_amount:,.0f})")
    ax.axhline(float(start), color=GREY, lw=0.8, ls=":", label=f"start ${start:,.0f}")
    if summary.profit_target is not None:
        ax.axhline(float(start + summary.profit_target), color=GREEN, lw=1.5, ls="--",
                   label=f"profit target (+${summary.profit_target:,.0f})")
        if summary.effective_target is not None and summary.effective_target > summary.profit_target:
            ax.axhline(float(start + summary.effective_target), color=GREEN, lw=1, ls=":",
                       label=f"target raised by consistency (+${summary.effective_target:,.0f})")
    ax.set_title(f"Equity {summary.days[0]} .. {summary.days[-1]}: net {money(summary.net_pnl)}"
                 if summary.days else "Equity")
    ax.set_ylabel("account equity")
    _dollars(ax)
    _ct_dates(ax)
    ax.set_xlabel("America/Chicago")
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)
    return ("Account equity (balance plus open P&L at every replayed print and fill) against the MLL floor "
            "(touching it fails the Combine) and the profit target: how near the run came to failing or passing.")


def _plot_drawdown(summary: Any, cfg: Any, data: _Data, path: Path) -> str:
    import numpy as np
    fig, ax = _figure()
    curve = data.curve
    ts = [p.ts_ns for p in curve] or [0, 1]
    dd = drawdowns([p.equity for p in curve]) or [Decimal(0), Decimal(0)]
    x = _x(ts)
    y = -np.asarray([float(v) for v in dd])
    ax.fill_between(x, y, 0, step="post", color=RED, alpha=0.6, lw=0, label="below the running peak")
    ax.plot(x, y, drawstyle="steps-post", color=DARK_RED, lw=0.8)
    worst = max(dd)
    ax.set_title(f"Drawdown from the equity peak: max {money(worst)} "
                 f"(risk's max drawdown: {money(summary.max_drawdown)})")
    ax.set_ylabel("drawdown")
    _dollars(ax)
    _ct_dates(ax)
    ax.set_xlabel("America/Chicago")
    ax.set_ylim(top=max(1.0, float(worst) * 0.03))
    _save(fig, path)
    return (f"How far equity stood below its best level so far; the deepest trough is the maximum drawdown "
            f"(the MLL allows ${cfg.profile.mll_amount:,.0f} from the end-of-day high).")


def _plot_daily(summary: Any, cfg: Any, data: _Data, path: Path) -> str:
    fig, ax = _figure()
    days = list(summary.day_pnls)
    cap = summary.daily_loss_cap
    xs = list(range(len(days)))
    vals = [float(p) for _d, p, _n in days]
    colors = [GREEN if p >= 0 else (DARK_RED if cap is not None and p < -cap else RED) for _d, p, _n in days]
    bars = ax.bar(xs, vals, color=colors, width=0.7)
    if len(days) <= 12:
        ax.bar_label(bars, labels=[money(p, 0) for _d, p, _n in days], fontsize=7, padding=2)
    if cap is not None:
        ax.axhline(-float(cap), color=DARK_RED, ls="--", lw=1.2, label=f"daily loss cap -${cap:,.0f}")
        ax.legend(loc="best", fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    step = max(1, len(days) // 20)
    ax.set_xticks(xs[::step], [d[5:] for d, _p, _n in days][::step], rotation=45, ha="right", fontsize=8)
    beyond = sum(1 for _d, p, _n in days if cap is not None and p < -cap)
    ax.set_title(f"Net P&L per trading day (after fees): {sum(1 for d in days if d[2])} traded, "
                 f"{beyond} beyond the cap")
    ax.set_xlabel("trading day (America/Chicago, MM-DD)")
    ax.set_ylabel("net P&L")
    _dollars(ax)
    _save(fig, path)
    return ("Each trading day's net P&L after fees; the dashed line is the daily loss cap, and dark red bars "
            "lost more than it (risk flattens at the cap: the overshoot is what the market moved past it).")


def _plot_strategies(summary: Any, cfg: Any, data: _Data, path: Path) -> str:
    import numpy as np
    fig, ax = _figure()
    rs = summary.strategies
    x = np.arange(len(rs))
    w = 0.27
    series = [("gross", [float(r.gross_pnl) for r in rs], BLUE), ("fees", [-float(r.fees) for r in rs], GREY),
              ("net", [float(r.net_pnl) for r in rs], None)]
    for k, (label, vals, color) in enumerate(series):
        cols = color or [GREEN if v >= 0 else DARK_RED for v in vals]
        bars = ax.bar(x + (k - 1) * w, vals, w, color=cols, label=label if color else "net (gross - fees)")
        ax.bar_label(bars, labels=[f"{'-' if v < 0 else ''}${abs(v):,.0f}" for v in vals], fontsize=7, padding=2)
    ax.axhline(0, color="black", lw=0.6)
    trades = {g.label: g.trades for g in data.stats.by_strategy}
    ax.set_xticks(x, [f"{r.name}\n({trades.get(r.name, 0)} trades)" for r in rs])
    ax.set_ylabel("P&L")
    _dollars(ax)
    ax.margins(y=0.15)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("P&L by strategy (its own fills and risk's closes of its positions)")
    _save(fig, path)
    return ("What each strategy made: gross P&L, fees (shown negative) and net = gross - fees; the nets add up "
            "to the account's net P&L.")


REGIME_COLOURS = {"strong_bull": "#1b5e20", "bull": "#66bb6a", "neutral": "#9e9e9e", "bear": "#ef5350",
                  "crash": "#7f0000"}
"""Background shade of each regime on the price chart (docs/strategies/regime.md)."""


def _regime_overlay(cfg: Any, sym: str, bars: list) -> list | None:
    """For a ``regime_vwap`` strategy trading ``sym``: ``(end_ns, regime, VWAP, lower, upper)`` at
    each 1-minute close of the day, from the strategy's own indicators fed the day's bars
    (:meth:`domain.strategies.regime_vwap.RegimeVwapStrategy.indicator_series`; the trading day
    starts 17:00 CT, so the 5- and 30-minute indicators are warm by the 09:30 ET session and the
    forward filter forgets its start within ~20 bars). None for other strategies or no bars."""
    entry = next((e for e in cfg.enabled_strategies() if e.kind == "regime_vwap" and e.instruments[0] == sym), None)
    if entry is None or not bars:
        return None
    from domain.bars import aggregate_bars
    from domain.calendar import SessionCalendar
    from domain.handler import CounterIds
    from domain.strategies.base import StrategyContext
    from infra.replay import bar_to_ticks
    ticks = [t for b in bars for t in bar_to_ticks(b)]
    strategy = entry.plugin().build(StrategyContext(entry.name, entry.instruments, CounterIds(),
                                                    SessionCalendar(cfg.profile.flat_margin_s),
                                                    cfg.profile.limits()), entry.params)
    p = entry.params
    series = [b for period in (60, p.regime_bar_s, p.macro_bar_s) for b in aggregate_bars(ticks, period)]
    return strategy.indicator_series(series)


def _plot_price(summary: Any, data: _Data, sym: str, path: Path, overlay: list | None = None) -> str:
    import numpy as np
    day = data.day
    assert day is not None
    bars = [b for b in data.bars.get(sym, ()) if trading_day(b.start_ns).isoformat() == day]
    rows = [r for r in data.rows if r.fill.instrument == sym and r.trading_day == day]
    fig, ax = _figure()
    if overlay:
        runs: list[list] = []  # [start_ns, end_ns, regime] of each run of one regime (1-minute bars)
        for t, label, *_rest in overlay:
            if runs and runs[-1][2] == label:
                runs[-1][1] = t
            else:
                runs.append([t - 60 * NS, t, label])
        shaded: set[str] = set()
        for start, end, label in runs:
            if label in REGIME_COLOURS:
                ax.axvspan(_x(start), _x(end), color=REGIME_COLOURS[label], alpha=0.13, lw=0,
                           label=None if label in shaded else f"regime {label}")
                shaded.add(label)
        pts = [(t, vw, lo, hi) for t, _lab, vw, lo, hi in overlay if vw is not None]
        if pts:
            ax.plot(_x([q[0] for q in pts]), [q[1] for q in pts], color="#6a1b9a", lw=1.0, label="session VWAP (09:30 ET)")
            band = [q for q in pts if q[2] is not None]
            if band:
                ax.plot(_x([q[0] for q in band]), [q[2] for q in band], color="#6a1b9a", lw=0.7, ls="--",
                        label="VWAP +/- 1 std band")
                ax.plot(_x([q[0] for q in band]), [q[3] for q in band], color="#6a1b9a", lw=0.7, ls="--")
    if bars:
        xs = _x([b.start_ns for b in bars] + [bars[-1].end_ns])
        lo = [float(b.low) for b in bars] + [float(bars[-1].low)]
        hi = [float(b.high) for b in bars] + [float(bars[-1].high)]
        ax.fill_between(xs, lo, hi, step="post", color=GREY, alpha=0.4, lw=0, label="bar range (high-low)")
        ax.plot(_x([b.end_ns for b in bars]), [float(b.close) for b in bars], color="black", lw=0.8,
                label=f"close ({bars[0].period_s // 60}-min bars)")
    groups = [
        ("entry buy", "^", GREEN, 40, lambda r, role: role == ENTRY and r.fill.side.value == "BUY"),
        ("entry sell", "v", RED, 40, lambda r, role: role == ENTRY and r.fill.side.value == "SELL"),
        ("exit (take-profit, close)", "x", BLUE, 40, lambda r, role: role == EXIT),
        ("risk flatten / stop", "X", ORANGE, 70, lambda r, role: role in (RISK, STOP)),
    ]
    for label, marker, color, size, pick in groups:
        sel = [r for r in rows if pick(r, data.match.roles.get(r.fill.trade_id))]
        if sel:
            ax.scatter(_x([r.fill.ts_ns for r in sel]), np.asarray([float(r.fill.price) for r in sel]),
                       marker=marker, c=color, s=size, zorder=3, label=f"{label} ({len(sel)})",
                       edgecolors="black" if marker == "X" else None, linewidths=0.5)
    day_net = next((p for d, p, _n in summary.day_pnls if d == day), None)
    ax.set_title(f"{sym} on trading day {day}: {len(rows)} fills"
                 + (f", day net {money(day_net)}" if day_net is not None else "")
                 + ("" if bars else " (no bars)"))
    _ct_dates(ax, "%H:%M")
    ax.set_xlabel("America/Chicago (the trading day starts 17:00 CT the evening before)")
    ax.set_ylabel(f"{sym} price (points)")
    from matplotlib.ticker import StrMethodFormatter
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.2f}"))
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)
    why = "the worst day" if summary.worst_day and summary.worst_day[0] == day else "the chosen day"
    return (f"{sym} on {day} ({why}) with every fill: green triangles buy and red triangles sell to open, "
            f"blue crosses close, orange crosses are risk's flattens and stops."
            + (" The background is the regime the strategy's forward filter saw (5-minute bars); the purple "
               "lines are its session VWAP and +/- 1 std band." if overlay else ""))


def _plots(summary: Any, cfg: Any, data: _Data, out: Path) -> list[tuple[str, str, str]]:
    """Draw every plot; returns ``[(file name, title, caption)]``. Dollar signs are text, not
    math (``text.parse_math`` off)."""
    import matplotlib
    with matplotlib.rc_context({"text.parse_math": False, "font.size": 10}):
        return _draw_all(summary, cfg, data, out)


def _draw_all(summary: Any, cfg: Any, data: _Data, out: Path) -> list[tuple[str, str, str]]:
    made = [("equity.png", "Equity, MLL floor and profit target", _plot_equity(summary, cfg, data, out / "equity.png")),
            ("drawdown.png", "Drawdown", _plot_drawdown(summary, cfg, data, out / "drawdown.png")),
            ("daily_pnl.png", "Daily P&L against the daily loss cap",
             _plot_daily(summary, cfg, data, out / "daily_pnl.png")),
            ("strategies.png", "P&L by strategy", _plot_strategies(summary, cfg, data, out / "strategies.png"))]
    if data.day is not None:
        traded = sorted({r.fill.instrument for r in data.rows}) or sorted(data.bars)
        for sym in traded:
            name = f"price_{data.day}_{sym}.png"
            day_bars = [b for b in data.bars.get(sym, ()) if trading_day(b.start_ns).isoformat() == data.day]
            made.append((name, f"{sym} on {data.day}",
                         _plot_price(summary, data, sym, out / name, _regime_overlay(cfg, sym, day_bars))))
    return made


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:3px}
pre{background:#f6f6f6;padding:10px;border:1px solid #e2e2e2;overflow-x:auto;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pos{color:#2e7d32}.neg{color:#b71c1c}.beyond{background:#fde0e0}
figure{margin:14px 0}figure img{max-width:100%;border:1px solid #e2e2e2}figcaption{font-size:13px;color:#444}
.yes{color:#2e7d32;font-weight:bold}.no{color:#b71c1c;font-weight:bold}.muted{color:#777;font-size:12px}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _td_money(v: Decimal, cls: str = "") -> str:
    sign = "pos" if v > 0 else "neg" if v < 0 else ""
    return f'<td class="n {sign} {cls}">{_e(money(v))}</td>'


def _table(head: list[str], rows: list[str]) -> str:
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join(f"<tr>{r}</tr>" for r in rows) + "</table>")


def _html(summary: Any, cfg: Any, data: _Data, plots: list[tuple[str, str, str]], out: Path) -> str:
    s = data.stats
    ok = lambda b: '<span class="yes">PASS</span>' if b else '<span class="no">FAIL</span>'
    passed = summary.target_reached and summary.rules_ok
    cap = summary.daily_loss_cap
    trades_by_day: dict[str, list[RoundTrip]] = {}
    for t in data.match.trades:
        trades_by_day.setdefault(trading_day(t.exit_ns).isoformat(), []).append(t)
    day_rows = []
    for d, pnl, n in summary.day_pnls:
        ts = trades_by_day.get(d, [])
        beyond = cap is not None and pnl < -cap
        pct = f"{(-pnl / cap):.0%}" if cap is not None and pnl < 0 else "-"
        day_rows.append(f'<td{" class=beyond" if beyond else ""}>{_e(d)}</td>{_td_money(pnl)}'
                        f'<td class="n">{pct}</td><td class="n">{n}</td><td class="n">{len(ts)}</td>'
                        f'<td class="n">{sum(1 for t in ts if t.net > 0)}</td>')
    groups = {g.label: g for g in s.by_strategy}
    strat_rows = []
    for r in summary.strategies:
        g = groups.get(r.name)
        wr = f"{g.wins / g.trades:.1%}" if g and g.trades else "n/a"
        strat_rows.append(f"<td>{_e(r.name)}</td><td>{_e(r.kind)}</td><td>{_e(','.join(r.instruments))}</td>"
                          f'<td class="n">{r.fills}</td><td class="n">{r.closes_by_risk}</td>'
                          f'<td class="n">{g.trades if g else 0}</td><td class="n">{wr}</td>'
                          f"{_td_money(r.gross_pnl)}{_td_money(-r.fees)}{_td_money(r.net_pnl)}")
    regime = ""
    if s.by_regime:
        regime = "<h2>P&amp;L by regime</h2>" + _table(
            ["regime", "trades", "wins", "net P&L"],
            [f'<td>{_e(g.label)}</td><td class="n">{g.trades}</td><td class="n">{g.wins}</td>{_td_money(g.net)}'
             for g in s.by_regime])
    paths = "".join(f"<tr><td>{_e(p)}{' (this run)' if i == 0 else ''}</td>{_td_money(v)}</tr>"
                    for i, (p, v) in enumerate(summary.path_nets.items()))
    figs = []
    for name, title, caption in plots:
        b64 = base64.b64encode((out / name).read_bytes()).decode("ascii")
        figs.append(f'<h2>{_e(title)}</h2><figure><img alt="{_e(title)}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{_e(caption)}</figcaption></figure>")
    fig_html = {name: f for (name, _t, _c), f in zip(plots, figs)}
    price_figs = "".join(f for name, f in fig_html.items() if name.startswith("price_"))
    verdict = _e(summary._combine_lines()[0])
    days = f"{summary.days[0]} .. {summary.days[-1]}" if summary.days else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest report {_e(days)} {_e(cfg.profile.name)}</title>
<style>{_CSS}</style></head><body>
<h1>Backtest report: {_e(days)} &middot; {_e(cfg.profile.name)}</h1>
<p class="muted">mode {_e(summary.mode)} &middot; data {_e(cfg.runtime.data_dir)} &middot; {len(summary.days)} trading days
&middot; strategies {_e(', '.join(r.name for r in summary.strategies))} &middot; times America/Chicago
&middot; trades CSV {_e(summary.trades_csv)} &middot; {_e(data.bars_note)}</p>
<h2>Results</h2>
<pre>{_e(render_seed_table(s))}</pre>
<h2>Combine verdict: <span class="{'yes' if passed else 'no'}">{'PASSED' if passed else 'NOT PASSED'}</span></h2>
<p>{verdict}</p>
<table>
<tr><td>MLL floor never touched</td><td>{ok(not summary.mll_touched)}</td></tr>
<tr><td>flat by 15:10 CT every day</td><td>{ok(summary.flat_violations == 0)}</td></tr>
<tr><td>contract limit never exceeded (max {_e(summary.max_contracts_minis)} of {_e(summary.contract_limit)} minis)</td>
<td>{ok(summary.max_contracts_minis <= summary.contract_limit)}</td></tr>
<tr><td>gross P&amp;L / fees / net P&amp;L</td><td>{_e(money(summary.gross_pnl))} / {_e(money(summary.fees))} /
{_e(money(summary.net_pnl))}</td></tr>
<tr><td>MLL floor at the end / min headroom</td><td>{_e(money(summary.mll_floor))} /
{_e(money(summary.min_mll_headroom or Decimal(0)))}</td></tr>
<tr><td>guardrail breaches</td><td>{len(summary.breaches)} {_e(', '.join(sorted({b[1] for b in summary.breaches})))}</td></tr>
</table>
<h2>Net P&amp;L by intra-bar path</h2>
<p>The order of high and low inside a replayed bar is a guess; the same run under the other guess:</p>
<table><tr><th>bar path</th><th>net P&amp;L</th></tr>{paths or '<tr><td colspan=2>one path only</td></tr>'}</table>
{fig_html.get('equity.png', '')}{fig_html.get('drawdown.png', '')}{fig_html.get('daily_pnl.png', '')}
<h2>Per day</h2>
{_table(["trading day", "net P&L", "of cap", "fills", "trades closed", "wins"], day_rows)}
{fig_html.get('strategies.png', '')}
<h2>Per strategy</h2>
{_table(["strategy", "kind", "instruments", "fills", "closes by risk", "trades", "win rate", "gross", "fees",
         "net"], strat_rows)}
{regime}
{price_figs}
<p class="muted">Files in this folder: trades.csv (one row per round-trip trade), summary.json (every figure),
the PNG plots. How each figure is computed: docs/report.md.</p>
</body></html>
"""
