"""Round-trip trades and the backtest's headline metrics (seed 002's results table). Pure: no I/O.

A **round-trip trade** is one FIFO match of an opening lot against the fill that closes it, per
``(strategy, instrument)``: a strategy that buys 3 and sells 1 then 2 makes two trades (qty 1 and
2); a fill that closes a long of 2 and opens a short of 1 (a flip) closes two contracts' worth of
trades and opens a lot of 1. Risk's flatten and the emergency flatten (``strategy_id`` in
:data:`domain.report.SYSTEM_OWNERS`) close the strategies' positions: their fills are split among
the strategies holding the opposite position exactly as the session summary's per-strategy P&L
splits them (:func:`domain.report.booked_fills`, the engine of
:func:`domain.report.attribute_fills`), so per-trade nets add up to the per-strategy and account
figures. Money is exact ``Decimal`` dollars: gross = (exit - entry) points x qty x point value
(:data:`domain.instruments.INSTRUMENTS`), fees are each fill's fee shared per contract (a fill
closing several lots gives each its part; the last part takes the remainder, so the trade fees
add up to the fills' fees to the cent). Times are epoch ns (UTC); shown in America/Chicago.

The results table (:func:`render_seed_table`) is the layout required by seed 002, section 2.9
("Required output metrics", /work/shared/seeds/002_2613e4c741f6e65a.txt; in our words:
docs/reference/strategy-seeds.md); metrics and their definitions: docs/report.md.
A trade may carry a **regime** label (a strategy that classifies market regimes puts
``regime=<label>`` in its entry order's ``purpose``, e.g. ``"entry; regime=Strong Bull"``); when any
trade has one the table also breaks P&L down by regime, as the seed asks.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from domain.instruments import get_instrument
from domain.messages import Fill
from domain.portfolio import Portfolio
from domain.report import SYSTEM_OWNERS, booked_fills
from domain.risk_rules import mll_floor

ZERO = Decimal(0)
_REGIME = re.compile(r"regime=([^;]+)")

ENTRY, EXIT, RISK, STOP = "entry", "exit", "risk", "stop"
"""Roles of a fill (:attr:`TradeMatch.roles`): opens or adds to a position; closes (take-profit,
the strategy's own close, also a flip); risk's or the emergency flatten; a close whose purpose
names a stop."""


def regime_of(purpose: str) -> str | None:
    """The ``regime=<label>`` of an order's purpose (up to ``;`` or the end), else None."""
    m = _REGIME.search(purpose or "")
    return m.group(1).strip() or None if m else None


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One closed trade: an opening lot (or part of one) matched FIFO with the fill closing it.

    Attributes:
        strategy: the strategy whose position it was (also when risk's flatten closed it).
        instrument: our symbol (``"MES"``).
        side: ``"long"`` (bought first) or ``"short"``.
        qty: contracts (> 0).
        entry_ns, exit_ns: fill times, epoch ns UTC.
        entry_price, exit_price: points.
        gross: dollars before fees, ``(exit - entry) x qty x point value`` (sign by side).
        fees: dollars, the entry's and the exit's share of their fills' fees.
        entry_purpose, exit_purpose: the orders' purposes (``grid-entry``, ``grid-tp``,
            ``flatten: daily_loss_cap``...; empty when unknown).
        closed_by: ``strategy_id`` of the closing fill: the strategy itself, ``risk`` or ``emergency``.
        regime: the entry's regime label (:func:`regime_of`), None when it has none.
    """

    strategy: str
    instrument: str
    side: str
    qty: int
    entry_ns: int
    exit_ns: int
    entry_price: Decimal
    exit_price: Decimal
    gross: Decimal
    fees: Decimal
    entry_purpose: str = ""
    exit_purpose: str = ""
    closed_by: str = ""
    regime: str | None = None

    @property
    def net(self) -> Decimal:
        """Dollars after fees."""
        return self.gross - self.fees


@dataclass
class TradeMatch:
    """What :func:`match_round_trips` found.

    Attributes:
        trades: closed trades in the order they closed.
        open_lots: lots still open at the end: ``{(strategy, instrument): signed contracts}``.
        roles: ``{trade id of a source fill: role}`` (:data:`ENTRY`, :data:`EXIT`, :data:`RISK`,
            :data:`STOP`), for the price chart's markers.
    """

    trades: list[RoundTrip] = field(default_factory=list)
    open_lots: dict[tuple[str, str], int] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)


def _share(amount: Decimal, take: int, of: int) -> Decimal:
    """``amount x take / of``, rounded to ``amount``'s cents (or finer); all of it when ``take == of``."""
    if take >= of:
        return amount
    exp = min(amount.as_tuple().exponent, -2)  # type: ignore[operator]
    return (amount * take / of).quantize(Decimal(1).scaleb(exp))


class _Lot:
    __slots__ = ("fee", "price", "purpose", "qty", "sign", "ts")

    def __init__(self, sign: int, qty: int, price: Decimal, fee: Decimal, ts: int, purpose: str) -> None:
        self.sign, self.qty, self.price, self.fee, self.ts, self.purpose = sign, qty, price, fee, ts, purpose


class RoundTripMatcher:
    """:func:`match_round_trips` one fill at a time (the per-day session files close trades as
    their fills arrive: :mod:`infra.session_files`). Feeding a session's fills in execution order
    gives the same trades, in the same order, as :func:`match_round_trips` over them.

    Args:
        strategies: strategy names in config order (risk's closes go to the first holder first).
    """

    def __init__(self, strategies: Iterable[str]) -> None:
        self.strategies = list(strategies)
        self._books = {name: Portfolio() for name in self.strategies}
        self._lots: dict[tuple[str, str], deque[_Lot]] = {}
        self.roles: dict[str, str] = {}

    def add(self, fill: Fill, purpose: str = "") -> list[RoundTrip]:
        """Book ``fill`` (``ts_ns`` epoch ns; its order's ``purpose``); returns the trades it closed
        (none for an opening fill, a duplicate trade id or a fill of an owner that is neither a
        strategy nor risk)."""
        closed_trades: list[RoundTrip] = []
        for src, f in booked_fills((fill,), self.strategies, self._books):
            book = self._lots.setdefault((f.strategy_id, f.instrument), deque())
            sign = f.side.sign
            left, fee_left = f.qty, f.fee
            point = get_instrument(f.instrument).point_value
            closed = False
            while left and book and book[0].sign != sign:
                lot = book[0]
                take = min(lot.qty, left)
                entry_fee = _share(lot.fee, take, lot.qty)
                exit_fee = _share(fee_left, take, left)
                lot.fee -= entry_fee
                lot.qty -= take
                fee_left -= exit_fee
                left -= take
                closed = True
                closed_trades.append(RoundTrip(
                    f.strategy_id, f.instrument, "long" if lot.sign > 0 else "short", take, lot.ts, f.ts_ns,
                    lot.price, f.price, (f.price - lot.price) * take * lot.sign * point, entry_fee + exit_fee,
                    lot.purpose, purpose, src.strategy_id, regime_of(lot.purpose)))
                if lot.qty == 0:
                    book.popleft()
            if left:
                book.append(_Lot(sign, left, f.price, fee_left, f.ts_ns, purpose))
            if src.strategy_id in SYSTEM_OWNERS:
                role = RISK
            elif closed:
                role = STOP if "stop" in purpose.lower() else EXIT
            else:
                role = ENTRY
            self.roles.setdefault(src.trade_id, role)
        return closed_trades

    def open_lots(self) -> dict[tuple[str, str], int]:
        """Lots still open: ``{(strategy, instrument): signed contracts}``."""
        return {k: sum(lot.sign * lot.qty for lot in v) for k, v in self._lots.items() if v}


def match_round_trips(fills: Iterable[Fill], strategies: list[str],
                      purposes: Mapping[str, str] | None = None) -> TradeMatch:
    """FIFO round-trip trades per ``(strategy, instrument)`` from a session's fills.

    Args:
        fills: the session's fills in execution order (the trades CSV's rows); ``ts_ns`` epoch ns.
        strategies: strategy names in config order (risk's closes go to the first holder first).
        purposes: ``{trade id: order purpose}`` of the fills (trades CSV ``purpose``), optional.
    Returns: a :class:`TradeMatch`. Fills of an owner that is neither a strategy nor risk, and
    duplicate trade ids, are left out (as in the session summary).
    """
    purposes = purposes or {}
    m = RoundTripMatcher(strategies)
    trades: list[RoundTrip] = []
    for f in fills:
        trades += m.add(f, purposes.get(f.trade_id, ""))
    return TradeMatch(trades, m.open_lots(), m.roles)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class GroupStats:
    """P&L of a group of trades (a strategy, a regime): dollars, counts."""

    label: str
    trades: int
    wins: int
    gross: Decimal
    fees: Decimal

    @property
    def net(self) -> Decimal:
        return self.gross - self.fees


@dataclass(frozen=True)
class BacktestStats:
    """The figures of seed 002's results table (section 2.9).

    Attributes:
        first_day, last_day: ISO trading days (America/Chicago) simulated.
        total_pnl: account net P&L, dollars, after fees and with slippage in the fill prices.
        max_drawdown: dollars from the peak of marked equity (risk's, marked on every print).
        trades, wins, losses: round-trip trades; a win has net P&L (after fees) > 0, a loss < 0.
        win_rate: wins / trades (0..1), None without trades.
        avg_win: mean net of the winners, dollars; avg_loss: mean net of the losers as a positive
            number of dollars; None when there is none.
        win_loss_ratio: avg_win / avg_loss, None when either is missing.
        trades_per_day: trades / days simulated.
        days_simulated: trading days replayed.
        daily_loss_cap: the profile's daily loss cap, dollars (None: none).
        days_hitting_cap: ISO days whose net P&L reached ``-cap`` or on which the cap's breach fired.
        by_strategy: one :class:`GroupStats` per strategy (config order).
        by_regime: one per regime label (``(none)`` for trades without one); empty when no trade
            has a regime.
    """

    first_day: str
    last_day: str
    total_pnl: Decimal
    max_drawdown: Decimal
    trades: int
    wins: int
    losses: int
    win_rate: Decimal | None
    avg_win: Decimal | None
    avg_loss: Decimal | None
    win_loss_ratio: Decimal | None
    trades_per_day: Decimal | None
    days_simulated: int
    daily_loss_cap: Decimal | None
    days_hitting_cap: tuple[str, ...]
    by_strategy: tuple[GroupStats, ...]
    by_regime: tuple[GroupStats, ...]


def _group(label: str, trades: list[RoundTrip]) -> GroupStats:
    return GroupStats(label, len(trades), sum(1 for t in trades if t.net > 0),
                      sum((t.gross for t in trades), ZERO), sum((t.fees for t in trades), ZERO))


def compute_stats(trades: list[RoundTrip], *, days: list[str], total_pnl: Decimal, max_drawdown: Decimal,
                  day_pnls: Iterable[tuple[str, Decimal, int]] = (), daily_loss_cap: Decimal | None = None,
                  cap_breach_days: Iterable[str] = (), strategies: Iterable[str] = ()) -> BacktestStats:
    """The results table's figures.

    Args:
        trades: round-trip trades (:func:`match_round_trips`).
        days: ISO trading days simulated, ascending.
        total_pnl, max_drawdown: the account's figures, dollars (``SessionSummary.net_pnl``,
            ``.max_drawdown``).
        day_pnls: ``(ISO day, net P&L after fees, fills)`` per day (risk's day table).
        daily_loss_cap: dollars, None = no cap.
        cap_breach_days: ISO days on which risk's ``daily_loss_cap`` rule fired.
        strategies: strategy names in config order (each gets a row, also without trades).
    """
    wins = [t.net for t in trades if t.net > 0]
    losses = [-t.net for t in trades if t.net < 0]
    avg_win = sum(wins, ZERO) / len(wins) if wins else None
    avg_loss = sum(losses, ZERO) / len(losses) if losses else None
    hit = set(cap_breach_days)
    if daily_loss_cap is not None:
        hit |= {d for d, pnl, _n in day_pnls if pnl <= -daily_loss_cap}
    names = list(dict.fromkeys([*strategies, *(t.strategy for t in trades)]))
    regimes = list(dict.fromkeys(t.regime or "(none)" for t in trades)) if any(t.regime for t in trades) else []
    return BacktestStats(
        first_day=days[0] if days else "", last_day=days[-1] if days else "",
        total_pnl=total_pnl, max_drawdown=max_drawdown, trades=len(trades), wins=len(wins), losses=len(losses),
        win_rate=Decimal(len(wins)) / len(trades) if trades else None, avg_win=avg_win, avg_loss=avg_loss,
        win_loss_ratio=avg_win / avg_loss if avg_win is not None and avg_loss else None,
        trades_per_day=Decimal(len(trades)) / len(days) if days else None, days_simulated=len(days),
        daily_loss_cap=daily_loss_cap, days_hitting_cap=tuple(sorted(hit)),
        by_strategy=tuple(_group(n, [t for t in trades if t.strategy == n]) for n in names),
        by_regime=tuple(_group(r, [t for t in trades if (t.regime or "(none)") == r]) for r in regimes))


def money(x: Decimal, places: int = 2) -> str:
    """``$1,234.56`` / ``-$1,234.56`` (``places`` decimals; no ``-$0``)."""
    q = Decimal(1).scaleb(-places)
    v = x.quantize(q)
    return f"{'-' if v < 0 else ''}${abs(v):,.{places}f}"


def _dmy(iso: str) -> str:
    return dt.date.fromisoformat(iso).strftime("%d/%m/%Y") if iso else "n/a"


def _cap_text(cap: Decimal) -> str:
    return money(cap, 0 if cap == cap.to_integral_value() else 2)


def render_seed_table(s: BacktestStats) -> str:
    """The results table, seed 002 section 2.9 (/work/shared/seeds/002_2613e4c741f6e65a.txt), e.g.
    the bundled days' backtest (combine-50k)::

        === BACKTEST RESULTS ===
        Period:            08/04/2026 – 10/04/2026
        Total PnL:         -$169.42 (net of slippage + commission)
        ...
        Days hitting $400 limit: 0 (0%)

        PnL by Strategy:
          grid-MES:        -$172  (8 trades)

    Money with thousands separators and a leading minus (``-$1,234.56``); per-group P&L in whole
    dollars; ``n/a`` where a figure is undefined (no trade, no loss). "Avg Loss" is the mean loss as
    a positive amount. "PnL by Regime:" follows "PnL by Strategy:" when trades carry regimes.
    """
    na = "n/a"
    pct = lambda x: f"{x * 100:.1f}%" if x is not None else na
    if s.daily_loss_cap is not None:
        share = f"{Decimal(len(s.days_hitting_cap)) * 100 / s.days_simulated:.0f}%" if s.days_simulated else na
        cap_line = f"Days hitting {_cap_text(s.daily_loss_cap)} limit: {len(s.days_hitting_cap)} ({share})"
    else:
        cap_line = "Days hitting daily loss limit: n/a (no daily loss cap)"
    lines = [
        "=== BACKTEST RESULTS ===",
        f"Period:            {_dmy(s.first_day)} \u2013 {_dmy(s.last_day)}",
        f"Total PnL:         {money(s.total_pnl)} (net of slippage + commission)",
        f"Max Drawdown:      {money(s.max_drawdown)}",
        f"Win Rate:          {pct(s.win_rate)}",
        f"Avg Win:           {money(s.avg_win) if s.avg_win is not None else na}",
        f"Avg Loss:          {money(s.avg_loss) if s.avg_loss is not None else na}",
        f"Win/Loss Ratio:    {f'{s.win_loss_ratio:.2f}' if s.win_loss_ratio is not None else na}",
        f"Total Trades:      {s.trades}",
        f"Trades/Day:        {f'{s.trades_per_day:.1f}' if s.trades_per_day is not None else na}",
        f"Days Simulated:    {s.days_simulated}",
        cap_line,
    ]
    for title, groups in (("PnL by Strategy:", s.by_strategy), ("PnL by Regime:", s.by_regime)):
        if groups:
            lines += ["", title]
            lines += [f"  {(g.label + ':').ljust(16)} {money(g.net, 0)}  ({g.trades} trades)" for g in groups]
    return "\n".join(lines)


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Account value at one time: ``ts_ns`` epoch ns UTC; ``balance`` (realized, after fees) and
    ``equity`` (balance + open P&L at the latest marks), dollars."""

    ts_ns: int
    balance: Decimal
    equity: Decimal


def equity_curve(fills: Iterable[Fill], marks: Iterable[tuple[int, str, Decimal]],
                 starting_balance: Decimal) -> list[EquityPoint]:
    """The account's equity, marked at each fill and at each mark while a position is open.

    Given the prints the run replayed as ``marks`` (``infra.reporting.print_marks``), the points
    are the equity risk computed at each of them (balance after fees plus open P&L at the last
    print of each instrument, ``domain.risk.RiskManager``), so the curve's deepest drawdown is
    risk's max drawdown.

    Args:
        fills: every fill of the account (strategies' and risk's), execution order, ``ts_ns`` set.
        marks: ``(ts_ns, instrument, price in points)`` ascending; a mark at a fill's time comes
            before the fill (a print is marked, then matched). A fill's price marks its instrument
            only until the instrument's first mark, as risk does.
        starting_balance: dollars.
    Returns: points ascending in time: the first event, every fill, every mark while a position is
    open, and the last mark (flat stretches in between are flat: the balance does not move).
    """
    pf = Portfolio()
    last: dict[str, Decimal] = {}
    out: list[EquityPoint] = []
    fill_list = list(fills)
    mark_list = list(marks)
    i = j = 0
    realized_net = ZERO
    while i < len(fill_list) or j < len(mark_list):
        take_mark = j < len(mark_list) and (i >= len(fill_list) or mark_list[j][0] <= fill_list[i].ts_ns)
        if take_mark:
            ts, sym, px = mark_list[j]
            j += 1
            last[sym] = px
            if pf.net_positions() or not out or j == len(mark_list):
                bal = starting_balance + realized_net
                out.append(EquityPoint(ts, bal, bal + pf.unrealized(last)))
            continue
        f = fill_list[i]
        i += 1
        eff = pf.apply_fill(f)
        if eff is None:
            continue
        realized_net += eff.realized - eff.fee
        last.setdefault(f.instrument, f.price)
        bal = starting_balance + realized_net
        out.append(EquityPoint(f.ts_ns, bal, bal + pf.unrealized(last)))
    return out


def drawdowns(equity: list[Decimal]) -> list[Decimal]:
    """Distance below the running peak of ``equity`` (dollars, >= 0), point by point."""
    out, peak = [], None
    for e in equity:
        peak = e if peak is None or e > peak else peak
        out.append(peak - e)
    return out


def eod_mll_floors(day_pnls: Iterable[tuple[str, Decimal, int]], starting_balance: Decimal,
                   mll_amount: Decimal) -> list[tuple[str, Decimal]]:
    """The EOD-trailing MLL floor after each trading day: ``[(ISO day, floor in force from that
    day's close)]``. The balance at each day's end is the starting balance plus the days' net P&L so
    far; the floor trails the highest one by ``mll_amount`` and locks at the starting balance
    (:func:`domain.risk_rules.mll_floor`, HC 8284204)."""
    bal = max_eod = starting_balance
    out = []
    for day, pnl, _n in day_pnls:
        bal += pnl
        max_eod = max(max_eod, bal)
        out.append((day, mll_floor(starting_balance, mll_amount, max_eod)))
    return out
