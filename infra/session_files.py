"""Per-day session files (seed 003, "Logging" / "Session Log File"): one folder per session
namespace, per CME trading day ``<day>`` (ISO, America/Chicago, the day starts 17:00 CT the
evening before: :func:`domain.calendar.trading_day`):

- ``trading_<day>.log``: the seed's event lines, one per order event, in event order::

      2026-04-08 09:02:00.000 [INFO] SESSION: trading day 2026-04-08 (America/Chicago), mode backtest, ...
      2026-04-08 09:02:00.000 [INFO] SIGNAL: LONG_ENTRY conf=0.71 price=6050.25 strategy=scalper-MES
      2026-04-08 09:02:00.000 [INFO] ORDER: MARKET BUY 1 MES @ market id=scalper-MES-1-3
      2026-04-08 09:02:00.000 [INFO] FILL: BOUGHT 1 MES @ 6050.50 id=scalper-MES-1-3
      2026-04-08 09:02:00.000 [INFO] ORDER: STOP SELL 1 MES @ 6048.50 id=scalper-MES-1-3-SL
      2026-04-08 09:02:00.000 [INFO] ORDER: LIMIT SELL 1 MES @ 6052.50 id=scalper-MES-1-3-TP
      2026-04-08 09:10:00.000 [INFO] FILL: SOLD 1 MES @ 6052.50 (TARGET HIT) id=scalper-MES-1-3-TP
      2026-04-08 09:10:00.000 [INFO] TRADE CLOSED: +$9.26 (8 ticks) scalper-MES long 1 MES 6050.50 -> 6052.50 gross +$10.00 fees $0.74

  Time stamps are **event time** (the order's or fill's ``ts_ns``; in a replay the recorded
  market's time, live the gateway's) shown in **America/Chicago**, to the millisecond. Levels:
  INFO signals, orders, fills, closed trades; WARNING risk's flatten orders, venue rejections;
  DEBUG cancellations. ``SIGNAL`` lines come from the order's purpose: a strategy that names its
  decision there (``<kind>; signal=<NAME>; conf=<0..1>; price=<points>`` on an entry, the ML
  scalper's ``<kind>: <NAME> (confidence <c>, price <p>)`` on an exit) gets one line per decision
  that reached the router; a signal risk denied never reaches the router (the day's ``denied``
  count in the metrics has it). ``TRADE CLOSED``: the dollar figure is the round trip's **net**
  (after both fills' fees; the gross follows), ticks are the price move per contract in the
  trade's favour (``(exit - entry) / tick size``, signed by side). The seed's example
  (+$17.50 for 14 MES ticks) is a gross figure; ours says which is which.
- ``trades_<day>.csv``: the round trips closed that day (FIFO per strategy and instrument, risk's
  closes attributed to the holder: :class:`domain.trade_stats.RoundTripMatcher`, the report's
  matcher fed one fill at a time), columns :data:`infra.reporting.TRADE_COLUMNS` plus ``ticks``.
- ``metrics_<day>.json``: the day's figures (:meth:`SessionFiles.metrics`): account net, gross
  and fees of every fill (the same fold as risk's day P&L and the trades CSV's ``day_pnl``), the
  closed trades' net (equal to the account net when the day starts and ends flat, which Topstep's
  15:10 CT flatten makes the rule), trades, wins, losses, win rate, average win / loss, ticks,
  max drawdown (equity marked at each fill's price, from the day's start), signals by kind,
  orders by type, fills, rejections, cancellations, risk flattens, risk's denials.

A day's CSV and JSON are written when an event of a later day arrives, and again for every day
of the session by :meth:`SessionFiles.finish` at shutdown (then with risk's denials), which also
writes the session report ``session_<first day>_<last day>.txt`` (the printed summary). Days of
the session without any order get the three files too (a log with its ``SESSION`` line only).

A fresh session (a backtest, a replay started anew) rewrites the logs of the days it writes; a
resumed one (same Redis state after a restart) appends, and its matcher is primed with the
session's trades CSV (:meth:`SessionFiles.prime`) so trades opened before the restart close with
their entry. Signals and orders of an earlier process are not in the trades CSV, so a resumed
day's metrics count those of this process only (fills and trades count every process).

Money is exact ``Decimal`` dollars (strings in the JSON and CSV); prices in points; sizes in
contracts. A file that cannot be written is logged (loguru, once per file) and skipped: the
router that feeds this class must never fail on a full disk.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, TextIO

from loguru import logger

from domain.calendar import CT, ns_to_ct, trading_day
from domain.instruments import get_instrument
from domain.messages import Fill, OrderCancelled, OrderIntent, OrderRejected, OrderType, Side
from domain.portfolio import Portfolio
from domain.report import SYSTEM_OWNERS
from domain.trade_stats import RoundTrip, RoundTripMatcher, drawdowns, money
from infra.reporting import TRADE_COLUMNS, iso_ct

ZERO = Decimal(0)
TIME_ZONE = "America/Chicago"
DAY_COLUMNS = (*TRADE_COLUMNS, "ticks")
"""trades_<day>.csv columns: the backtest report's trades.csv (:data:`infra.reporting.TRADE_COLUMNS`)
plus ``ticks`` (per contract, signed: positive = the trade's favour)."""

_ENTRY_SIGNAL = re.compile(r"^[^;:]+; signal=(?P<sig>[A-Z_]+); conf=(?P<conf>[0-9.]+)(?:; price=(?P<px>-?[0-9.]+))?")
_EXIT_SIGNAL = re.compile(r"^[^;:]+: (?P<sig>[A-Z_]+) \(confidence (?P<conf>[0-9.]+)(?:, price (?P<px>-?[0-9.]+))?\)")


def session_dir(log_dir: Path | str, mode: str, namespace: str) -> Path:
    """The folder of a session's per-day files: ``{log_dir}/backtest`` for a backtest,
    ``{log_dir}/<namespace with ':' as '_'>`` otherwise (``run/logs/tsx_paper``), so paper and live
    days never share a file."""
    return Path(log_dir) / ("backtest" if mode == "backtest" else namespace.replace(":", "_"))


def signal_of(intent: OrderIntent) -> tuple[str, str, str | None] | None:
    """``(signal name, confidence text, price text or None)`` when ``intent``'s purpose names the
    decision that made it (module docstring), else None (a bracket leg, a time-out, a grid order)."""
    p = intent.purpose
    m = (_EXIT_SIGNAL if intent.reduce_only else _ENTRY_SIGNAL).match(p)
    if m is None or p.startswith("bracket-"):
        return None
    return m["sig"], m["conf"], m["px"]


def _dollars(x: Decimal) -> str:
    """``+$17.50`` / ``-$3.24`` (the seed's TRADE CLOSED figure; zero is ``+$0.00``)."""
    s = money(x)
    return s if s.startswith("-") else "+" + s


@dataclass
class DayBook:
    """One trading day's counters (:class:`SessionFiles`); money in dollars, exact."""

    day: str
    trades: list[RoundTrip] = field(default_factory=list)
    signals: Counter = field(default_factory=Counter)
    orders: Counter = field(default_factory=Counter)
    fills: int = 0
    rejected: int = 0
    cancelled: int = 0
    flattens: int = 0
    gross: Decimal = ZERO
    fees: Decimal = ZERO
    equity: list[Decimal] = field(default_factory=list)  # net marked at each fill's price, from 0


class SessionFiles:
    """Writes the per-day files of one session (module docstring) into ``folder``.

    Args:
        folder: where the files go (created; :func:`session_dir`).
        strategies: strategy names in config order (round-trip attribution of risk's closes).
        mode: the mode as shown (``backtest``, ``paper``, ``live``) for the ``SESSION`` lines.
        fresh: True rewrites a day's log the first time this object writes it; False appends.
    Thread-safe (one lock): the router calls it on the decision loop, the node at shutdown.
    """

    def __init__(self, folder: Path, strategies: Iterable[str], mode: str, *, fresh: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.strategies = list(strategies)
        self.mode = mode
        self.fresh = fresh
        self.matcher = RoundTripMatcher(self.strategies)
        self.book = Portfolio()  # account-wide: the day's net as risk counts it
        self.marks: dict[str, Decimal] = {}
        self.days: dict[str, DayBook] = {}
        self.denied: dict[str, int] | None = None
        self._lock = threading.Lock()
        self._day: str | None = None
        self._fh: TextIO | None = None
        self._opened: set[str] = set()
        self._failed: set[str] = set()
        self.lines = 0

    # ------------------------------------------------------------------ events (router)
    def order(self, intent: OrderIntent, ts_ns: int) -> None:
        """SIGNAL (when the purpose names one), a WARNING for risk's flatten orders, then ORDER."""
        with self._lock:
            d = self._roll(ts_ns)
            sig = signal_of(intent)
            if sig is not None:
                name, conf, px = sig
                d.signals[name] += 1
                self._line(ts_ns, "INFO", f"SIGNAL: {name} conf={conf}"
                           + (f" price={self._px(intent.instrument, Decimal(px))}" if px else "")
                           + f" strategy={intent.strategy_id}")
            if intent.strategy_id in SYSTEM_OWNERS:
                d.flattens += 1
                self._line(ts_ns, "WARNING", f"RISK: {intent.purpose or 'flatten'} ({intent.strategy_id})")
            kind = intent.order_type.value
            d.orders[kind] += 1
            price = (intent.stop_price if intent.order_type is OrderType.STOP else intent.limit_price)
            at = "market" if price is None else self._px(intent.instrument, price)
            extra = f" bracket={intent.bracket.stop_ticks}/{intent.bracket.target_ticks}" if intent.bracket else ""
            self._line(ts_ns, "INFO", f"ORDER: {kind} {intent.side.value} {intent.qty} {intent.instrument} @ {at} "
                                      f"id={intent.client_order_id}{extra}")

    def fill(self, fill: Fill, purpose: str = "") -> None:
        """FILL, then one TRADE CLOSED per round trip the fill closed."""
        with self._lock:
            d = self._roll(fill.ts_ns)
            trades = self._book_fill(d, fill, purpose)
            verb = "BOUGHT" if fill.side is Side.BUY else "SOLD"
            why = self._why(purpose, fill) if trades else ""
            self._line(fill.ts_ns, "INFO", f"FILL: {verb} {fill.qty} {fill.instrument} @ "
                                           f"{self._px(fill.instrument, fill.price)}{why} id={fill.client_order_id}")
            for t in trades:
                self._line(fill.ts_ns, "INFO", f"TRADE CLOSED: {_dollars(t.net)} ({self.ticks(t)} ticks) {t.strategy} "
                                               f"{t.side} {t.qty} {t.instrument} {self._px(t.instrument, t.entry_price)}"
                                               f" -> {self._px(t.instrument, t.exit_price)} gross {_dollars(t.gross)} "
                                               f"fees {money(t.fees)}")

    def order_event(self, event: Any) -> None:
        """WARNING for a venue rejection, DEBUG for a cancellation."""
        with self._lock:
            d = self._roll(event.ts_ns)
            if isinstance(event, OrderRejected):
                d.rejected += 1
                self._line(event.ts_ns, "WARNING", f"REJECTED: id={event.client_order_id} {event.reason}")
            elif isinstance(event, OrderCancelled):
                d.cancelled += 1
                self._line(event.ts_ns, "DEBUG", f"CANCELLED: id={event.client_order_id} {event.reason}")

    # ------------------------------------------------------------------ resume, finish
    def prime(self, rows: Iterable[Any]) -> None:
        """Fold an earlier process's trades CSV rows (:class:`infra.trade_log.TradeRow`) of this
        session, writing no line: open trades then close with their entry, and the days' fills and
        trades count every process."""
        with self._lock:
            for r in rows:
                d = self.days.setdefault(r.trading_day, DayBook(r.trading_day))
                self._book_fill(d, r.fill, r.purpose)

    def finish(self, days: Iterable[str], report: str = "", denied: Iterable[tuple[int, str]] = ()) -> Path:
        """At shutdown: every day of ``days`` (ISO) and of the events gets its three files (the
        CSV and JSON rewritten with ``denied``: ``(ts_ns, strategy)`` per order risk denied), and
        ``report`` (the session summary) goes to ``session_<first>_<last>.txt``. Returns that path."""
        with self._lock:
            self.denied = {}
            for ts, _strategy in denied:
                day = trading_day(ts).isoformat()
                self.denied[day] = self.denied.get(day, 0) + 1
            all_days = sorted(set(days) | set(self.days))
            for day in all_days:
                self.days.setdefault(day, DayBook(day))
                if day not in self._opened:
                    self._open_log(day)  # a day without events: its SESSION line
            self._close_log()
            for day in all_days:
                self._write_day(day)
            first, last = (all_days[0], all_days[-1]) if all_days else ("no-day", "no-day")
            path = self.folder / f"session_{first}_{last}.txt"
            self._write(path, report if report.endswith("\n") else report + "\n")
            return path

    # ------------------------------------------------------------------ figures
    def metrics(self, day: str) -> dict[str, Any]:
        """The figures of ``day`` (module docstring): money as strings of exact dollars."""
        d = self.days.get(day) or DayBook(day)
        nets = [t.net for t in d.trades]
        wins = [n for n in nets if n > 0]
        losses = [-n for n in nets if n < 0]
        by_strategy: dict[str, dict[str, Any]] = {}
        for t in d.trades:
            s = by_strategy.setdefault(t.strategy, {"trades": 0, "net": ZERO})
            s["trades"] += 1
            s["net"] += t.net
        return {
            "trading_day": day, "time_zone": TIME_ZONE, "mode": self.mode, "units": "dollars, ticks per contract",
            "net": str(d.gross - d.fees), "gross": str(d.gross), "fees": str(d.fees),
            "trades": len(d.trades), "trades_net": str(sum(nets, ZERO)), "wins": len(wins), "losses": len(losses),
            "win_rate": round(len(wins) / len(nets), 4) if nets else None,
            "avg_win": str(sum(wins, ZERO) / len(wins)) if wins else None,
            "avg_loss": str(sum(losses, ZERO) / len(losses)) if losses else None,
            "ticks": sum(self.ticks(t) * t.qty for t in d.trades),
            "max_drawdown": str(max(drawdowns([ZERO, *d.equity]), default=ZERO)),
            "signals": dict(sorted(d.signals.items())), "orders": dict(sorted(d.orders.items())),
            "fills": d.fills, "rejected": d.rejected, "cancelled": d.cancelled, "risk_flattens": d.flattens,
            "denied": None if self.denied is None else self.denied.get(day, 0),
            "by_strategy": {k: {"trades": v["trades"], "net": str(v["net"])} for k, v in by_strategy.items()},
        }

    @staticmethod
    def ticks(t: RoundTrip) -> int:
        """The trade's move per contract in its favour, in ticks (rounded to whole ticks)."""
        sign = 1 if t.side == "long" else -1
        return int(((t.exit_price - t.entry_price) * sign / get_instrument(t.instrument).tick_size).to_integral_value())

    # ------------------------------------------------------------------ internals
    def _book_fill(self, d: DayBook, fill: Fill, purpose: str) -> list[RoundTrip]:
        effect = self.book.apply_fill(fill)
        if effect is None:  # a duplicate trade id
            return []
        d.fills += 1
        d.gross += effect.realized
        d.fees += effect.fee
        self.marks[fill.instrument] = fill.price
        d.equity.append(d.gross - d.fees + self.book.unrealized(self.marks))
        trades = self.matcher.add(fill, purpose)
        # a trade belongs to the day it closed
        d.trades += trades
        return trades

    def _why(self, purpose: str, fill: Fill) -> str:
        """The closing fill's reason: ``(STOP HIT)``, ``(TARGET HIT)``, ``(FLATTEN: ...)``, ``(EXIT: ...)``."""
        kind, _, rest = purpose.partition(";")[0].partition(":")
        kind = kind.strip()
        if fill.strategy_id in SYSTEM_OWNERS or kind.startswith("flatten"):
            return f" (FLATTEN: {rest.strip() or fill.strategy_id})"
        if kind == "bracket-stop" or "stop" in kind:
            return " (STOP HIT)"
        if kind == "bracket-target" or kind.endswith("-tp"):
            return " (TARGET HIT)"
        return f" (EXIT: {rest.strip()})" if rest.strip() else f" (EXIT: {kind or 'close'})"

    def _px(self, instrument: str, price: Decimal) -> str:
        places = max(2, -get_instrument(instrument).tick_size.normalize().as_tuple().exponent)  # type: ignore[operator]
        return f"{price:.{places}f}"

    def _roll(self, ts_ns: int) -> DayBook:
        """The day of ``ts_ns``; a later day closes the current one (its CSV and JSON written)."""
        day = trading_day(ts_ns).isoformat()
        if day != self._day:
            if self._day is not None and day > self._day:
                self._close_log()
                self._write_day(self._day)
            if day not in self._opened:
                self._open_log(day)
            elif day != self._day:
                self._reopen(day)
            self._day = day
        return self.days.setdefault(day, DayBook(day))

    def _open_log(self, day: str) -> None:
        """Open ``trading_<day>.log`` (rewritten when fresh) and write its SESSION line."""
        self._close_log()
        path = self.folder / f"trading_{day}.log"
        try:
            self._fh = path.open("w" if self.fresh else "a", encoding="utf-8")
        except OSError as e:
            self._fail(path, e)
            self._fh = None
        self._opened.add(day)
        self._day = day
        start = dt.datetime.combine(dt.date.fromisoformat(day) - dt.timedelta(days=1), dt.time(17), CT)
        self._line_at(start.strftime("%Y-%m-%d %H:%M:%S.000"), "INFO",
                      f"SESSION: trading day {day} ({TIME_ZONE}; it began 17:00 CT the evening before), mode "
                      f"{self.mode}, strategies {', '.join(self.strategies)}; times are event times, {TIME_ZONE}")

    def _reopen(self, day: str) -> None:
        """Back to an earlier day's log (an event stamped before the roll, e.g. a late venue event)."""
        self._close_log()
        try:
            self._fh = (self.folder / f"trading_{day}.log").open("a", encoding="utf-8")
        except OSError as e:
            self._fail(self.folder / f"trading_{day}.log", e)

    def _close_log(self) -> None:
        """Close the day's log; a failure to write what was buffered (a full disk) is logged once."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError as e:
                self._fail(Path(fh.name), e)

    def _line(self, ts_ns: int, level: str, text: str) -> None:
        t = ns_to_ct(ts_ns)
        self._line_at(f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d}", level, text)

    def _line_at(self, stamp: str, level: str, text: str) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(f"{stamp} [{level}] {text}\n")
            self.lines += 1
        except OSError as e:
            self._fail(Path(self._fh.name), e)
            self._close_log()  # the handle is released; the day's log stops here

    def _write_day(self, day: str) -> None:
        """``trades_<day>.csv`` and ``metrics_<day>.json`` from the day's book."""
        d = self.days.get(day) or DayBook(day)
        path = self.folder / f"trades_{day}.csv"
        try:
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(DAY_COLUMNS)
                for t in d.trades:
                    w.writerow((iso_ct(t.entry_ns), iso_ct(t.exit_ns), t.strategy, t.instrument, t.side, t.qty,
                                str(t.entry_price), str(t.exit_price), str(t.gross), str(t.fees), str(t.net),
                                t.entry_purpose, t.exit_purpose, t.closed_by, t.regime or "", self.ticks(t)))
        except OSError as e:
            self._fail(path, e)
        self._write(self.folder / f"metrics_{day}.json", json.dumps(self.metrics(day), indent=2) + "\n")

    def _write(self, path: Path, text: str) -> None:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            self._fail(path, e)

    def _fail(self, path: Path, e: OSError) -> None:
        if str(path) not in self._failed:
            self._failed.add(str(path))
            logger.error("session file {} not written: {}", path, e)

