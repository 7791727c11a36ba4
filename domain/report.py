"""The end-of-run session summary, account-wide and per strategy.

:class:`SessionSummary` holds trades, gross and net P&L, fees, max drawdown, MLL headroom, the rule
checks (MLL floor never touched, flat by 15:10 CT, contract limit never exceeded; rules:
docs/risk.md), actor restarts, and one :class:`StrategyResult` per strategy.

Per-strategy P&L is a FIFO fold over the session's fills (:class:`domain.portfolio.Portfolio`, exact
Decimal dollars). Risk's own orders (the 15:10 CT flatten, loss-limit liquidations, shutdown) and
the emergency flatten close positions the strategies opened, so each of their fills is split among
the strategies that hold the opposite position in that instrument, oldest holder first, with the
fee split per contract (:func:`attribute_fills`). The per-strategy figures then add up to the
account's realized P&L and fees.

The summary also holds the session's round-trip trades (FIFO per strategy and instrument, risk's
closes attributed the same way: :mod:`domain.trade_stats`) and :meth:`SessionSummary.render` ends
with seed 002's results table (win rate, average win/loss, trades per day, days hitting the daily
loss cap, P&L by strategy, by regime when trades carry one; docs/report.md). The backtest's report
folder (HTML, JSON, trades CSV, plots) is written by :mod:`infra.reporting`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from domain.messages import Fill, Side
from domain.portfolio import Portfolio

if TYPE_CHECKING:
    from domain.trade_stats import BacktestStats

SYSTEM_OWNERS = frozenset({"risk", "emergency"})
"""Strategy ids of orders that close strategy positions (risk's flatten, the emergency flatten)."""


@dataclass
class StrategyResult:
    """One strategy's figures: fills (its own and its share of risk's closes), dollars."""

    name: str
    kind: str
    instruments: tuple[str, ...]
    fills: int = 0
    closes_by_risk: int = 0
    gross_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    open_positions: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees


def booked_fills(fills: Iterable[Fill], strategies: list[str],
                 books: dict[str, Portfolio] | None = None) -> Iterator[tuple[Fill, Fill]]:
    """Each fill as booked to a strategy, in execution order: ``(source fill, booked fill)``.

    A fill of a strategy is booked to it unchanged. A fill of :data:`SYSTEM_OWNERS` (it only ever
    reduces) is split among ``strategies`` holding the opposite position in its instrument, in the
    order given, each up to its open quantity: one booked fill per share, with the strategy's name
    as ``strategy_id``, trade id ``"<trade id>/<strategy>"`` and the fee split per contract (exact:
    the fee per contract is constant within a fill). What no strategy holds (a position not ours)
    is left out, and so is a fill whose trade id was already booked (a duplicate).

    Args:
        fills: ``Fill`` messages, in execution order.
        strategies: strategy names, in config order.
        books: ``{name: Portfolio}`` the booked fills are folded into (the positions the split
            reads); a fresh one per name when None.
    Yields: ``(source fill, booked fill)``; a split source fill yields once per share.
    """
    if books is None:
        books = {name: Portfolio() for name in strategies}
    for f in fills:
        if f.strategy_id in books:
            if books[f.strategy_id].apply_fill(f) is not None:
                yield f, f
            continue
        if f.strategy_id not in SYSTEM_OWNERS:
            continue
        left = f.qty
        fee_per = f.fee / f.qty if f.qty else Decimal(0)
        for name in strategies:
            held = books[name].qty(f.instrument)
            if left == 0:
                break
            if held == 0 or (held > 0) == (f.side is Side.BUY):
                continue
            take = min(left, abs(held))
            share = replace(f, qty=take, fee=fee_per * take, strategy_id=name, trade_id=f"{f.trade_id}/{name}")
            if books[name].apply_fill(share) is not None:
                yield f, share
            left -= take


def attribute_fills(fills: Iterable[Fill], strategies: list[str]) -> dict[str, Portfolio]:
    """A portfolio per strategy from the session's fills, in execution order.

    A fill of a strategy goes to its portfolio. A fill of :data:`SYSTEM_OWNERS` (it only ever
    reduces) is split among ``strategies`` holding the opposite position in its instrument, in the
    order given, each up to its open quantity; the fee is split per contract (exact: the fee per
    contract is constant within a fill). What no strategy holds (a position not ours) is left out
    (:func:`booked_fills`).

    Args:
        fills: ``Fill`` messages (trade ids unique).
        strategies: strategy names, in config order.
    Returns: ``{strategy name: Portfolio}`` for every name in ``strategies``.
    """
    books = {name: Portfolio() for name in strategies}
    for _ in booked_fills(fills, strategies, books):
        pass
    return books


@dataclass
class SessionSummary:
    """End-of-run report. Money in dollars; ``days`` ISO dates (America/Chicago trading days)."""

    mode: str
    days: list[str]
    fills: int = 0
    gross_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    net_pnl: Decimal = Decimal(0)
    max_drawdown: Decimal = Decimal(0)
    mll_floor: Decimal = Decimal(0)
    min_mll_headroom: Decimal | None = None
    max_contracts_minis: Decimal = Decimal(0)
    contract_limit: Decimal = Decimal(0)
    flat_violations: int = 0
    mll_touched: bool = False
    breaches: list = field(default_factory=list)
    denials: int = 0
    strategies: list[StrategyResult] = field(default_factory=list)
    restarts: dict = field(default_factory=dict)
    rejected_inputs: dict = field(default_factory=dict)
    trade_paths: dict = field(default_factory=dict)
    """Bars replayed from recorded trades instead of a path, and bars the trades did not match
    (infra/replay.py ``ReplaySource.trade_paths``); empty when no trade file was given."""
    open_positions: dict | None = field(default_factory=dict)  # None: could not be read
    trades_csv: str = ""
    events: int = 0
    seconds: float = 0.0
    exit_reason: str = "end of data"
    path_nets: dict = field(default_factory=dict)
    """Backtest: net P&L (dollars) under each intra-bar path, this run's first (infra/replay.py
    ``bar_path``): how much the result owes to the guessed order of high and low inside a bar."""
    # --- per-day P&L and the two rule layers (filled by fill_from_risk)
    day_pnls: list = field(default_factory=list)  # [(ISO trading day, net P&L after fees, fills)]
    daily_loss_cap: Decimal | None = None
    session_loss_cap: Decimal | None = None
    profit_target: Decimal | None = None
    effective_target: Decimal | None = None  # the target after the consistency raise
    consistency_share: Decimal | None = None
    best_day: Decimal = Decimal(0)
    consistency_met: bool = True
    target_reached: bool = False
    denials_by_rule: dict = field(default_factory=dict)
    round_trips: list = field(default_factory=list)
    """Closed round-trip trades (:class:`domain.trade_stats.RoundTrip`), FIFO per strategy and
    instrument, risk's closes attributed (:meth:`add_strategies`)."""

    @property
    def rules_ok(self) -> bool:
        return (not self.mll_touched and self.flat_violations == 0
                and self.max_contracts_minis <= self.contract_limit)

    def fill_from_risk(self, risk: object, limit: Decimal) -> None:
        """Copy the account figures of a :class:`domain.risk.RiskManager`."""
        pf = risk.portfolio  # type: ignore[attr-defined]
        self.gross_pnl = pf.realized
        self.fees = pf.fees
        self.net_pnl = risk.ledger.balance - risk.limits.starting_balance + risk.unrealized()  # type: ignore[attr-defined]
        self.max_drawdown = risk.max_drawdown  # type: ignore[attr-defined]
        self.mll_floor = risk.ledger.floor  # type: ignore[attr-defined]
        self.min_mll_headroom = risk.min_headroom  # type: ignore[attr-defined]
        self.max_contracts_minis = risk.max_contracts_seen  # type: ignore[attr-defined]
        self.contract_limit = limit
        self.flat_violations = len(risk.flat_violations)  # type: ignore[attr-defined]
        self.mll_touched = any(b[1] == "mll" for b in risk.breaches)  # type: ignore[attr-defined]
        self.breaches = list(risk.breaches)  # type: ignore[attr-defined]
        self.denials = risk.denials  # type: ignore[attr-defined]
        self.open_positions = pf.net_positions()
        self._fill_days_and_layers(risk)

    def _fill_days_and_layers(self, risk: object) -> None:
        """Per-day P&L (risk's day table) and the Combine status (consistency, raised target)."""
        from domain.risk_rules import best_day, consistency_met, effective_target, target_reached
        lim = risk.limits  # type: ignore[attr-defined]
        led = risk.ledger  # type: ignore[attr-defined]
        unreal = risk.unrealized()  # type: ignore[attr-defined]
        table = getattr(risk, "day_table", None)
        self.day_pnls = list(table()) if table else []
        self.daily_loss_cap = lim.daily_loss_cap
        self.session_loss_cap = lim.session_loss_cap
        self.profit_target = lim.profit_target
        self.consistency_share = lim.consistency_share
        self.effective_target = effective_target(led, unreal)
        self.best_day = best_day(led, unreal)
        self.consistency_met = consistency_met(led, unreal)
        self.target_reached = target_reached(led, unreal)
        self.denials_by_rule = dict(getattr(risk, "denials_by_rule", {}))

    @property
    def traded_days(self) -> list[tuple[str, Decimal, int]]:
        """The days of :attr:`day_pnls` with at least one fill."""
        return [d for d in self.day_pnls if d[2] > 0]

    @property
    def worst_day(self) -> tuple[str, Decimal, int] | None:
        """The traded day with the lowest net P&L (None before any fill)."""
        return min(self.traded_days, key=lambda d: d[1], default=None)

    def days_beyond_cap(self, tolerance: Decimal = Decimal(0)) -> list[tuple[str, Decimal, int]]:
        """Traded days whose net P&L is below ``-daily_loss_cap x (1 + tolerance)``."""
        if self.daily_loss_cap is None:
            return []
        return [d for d in self.traded_days if d[1] < -self.daily_loss_cap * (1 + tolerance)]

    def _combine_lines(self) -> list[str]:
        """The "Combine passed" line: target (raised by consistency) reached and consistency met."""
        if self.profit_target is None:
            return ["Combine passed: n/a (no profit target)"]
        share = f"{(self.consistency_share * 100).normalize():f}%" if self.consistency_share is not None else "off"
        raised = self.effective_target is not None and self.effective_target > self.profit_target
        return [f"Combine passed: {'YES' if self.target_reached else 'NO'} (net P&L ${self.net_pnl:,.2f} vs target "
                f"${(self.effective_target or 0):,.2f}"
                + (f", raised from ${self.profit_target:,.2f} by consistency" if raised else "")
                + f"; consistency: best day ${self.best_day:,.2f} <= {share} of profit: "
                + ("met" if self.consistency_met else "not met") + ")"]

    def _day_lines(self) -> list[str]:
        """The per-day P&L table against the daily loss cap (days with fills or P&L)."""
        out: list[str] = []
        if self.day_pnls:
            cap = self.daily_loss_cap
            beyond = self.days_beyond_cap()
            out.append(f"daily loss cap ${cap:,.2f}: {len(self.traded_days)} traded days, {len(beyond)} beyond the cap"
                       if cap is not None else "daily loss cap: none")
            out.append("  day          net P&L     vs cap   fills")
            for day, pnl, n in self.day_pnls:
                if n == 0 and pnl == 0:
                    continue
                pct = f"{(-pnl / cap):>7.0%}" if cap is not None and pnl < 0 else "      -"
                out.append(f"  {day}  {pnl:>10,.2f}  {pct}  {n:>6}")
        return out

    def add_strategies(self, entries: list[tuple[str, str, tuple[str, ...], dict]], fills: list[Fill],
                       purposes: Mapping[str, str] | None = None) -> None:
        """One :class:`StrategyResult` per ``(name, kind, instruments, stats)``, P&L from ``fills``,
        and the session's round-trip trades (:attr:`round_trips`; ``purposes``: ``{trade id: order
        purpose}`` of the fills, for the trades' entry/exit purposes and regimes)."""
        from domain.trade_stats import match_round_trips
        books = attribute_fills(fills, [e[0] for e in entries])
        own = {e[0]: 0 for e in entries}
        for f in fills:
            if f.strategy_id in own:
                own[f.strategy_id] += 1
        for name, kind, instruments, stats in entries:
            pf = books[name]
            self.strategies.append(StrategyResult(
                name, kind, instruments, fills=own[name], closes_by_risk=pf.fills_applied - own[name],
                gross_pnl=pf.realized, fees=pf.fees, open_positions=pf.net_positions(), stats=dict(stats)))
        self.round_trips = match_round_trips(fills, [e[0] for e in entries], purposes).trades

    @property
    def cap_breach_days(self) -> list[str]:
        """ISO trading days on which risk's ``daily_loss_cap`` rule fired (from :attr:`breaches`)."""
        from domain.calendar import trading_day
        return sorted({trading_day(b[0]).isoformat() for b in self.breaches if b[1] == "daily_loss_cap"})

    def seed_stats(self, trades: list | None = None) -> "BacktestStats":
        """The figures of seed 002's results table (:func:`domain.trade_stats.compute_stats`) over
        ``trades`` (default :attr:`round_trips`) and this summary's account figures."""
        from domain.trade_stats import compute_stats
        return compute_stats(self.round_trips if trades is None else trades, days=self.days, total_pnl=self.net_pnl,
                             max_drawdown=self.max_drawdown, day_pnls=self.day_pnls,
                             daily_loss_cap=self.daily_loss_cap, cap_breach_days=self.cap_breach_days,
                             strategies=[r.name for r in self.strategies])

    def render(self) -> str:
        ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
        lines = [
            f"=== session summary ({self.mode}) {self.days[0] if self.days else ''} .. {self.days[-1] if self.days else ''} ===",
            f"exit: {self.exit_reason}",
            f"fills: {self.fills}",
            f"gross P&L: ${self.gross_pnl:,.2f}   fees: ${self.fees:,.2f}   net P&L: ${self.net_pnl:,.2f}",
            *([("net P&L by intra-bar path: " + "   ".join(
                f"{p} ${v:,.2f}" + (" (this run)" if i == 0 else "") for i, (p, v) in enumerate(self.path_nets.items())))]
              if self.path_nets else []),
            *([f"bars replayed from recorded trades (the same under both paths): "
               f"{self.trade_paths.get('bars from trades', 0)} of {self.trade_paths.get('bars replayed', 0)}"
               + (f" ({self.trade_paths['bars not matched by trades']} reached by the trades did not match them)"
                  if self.trade_paths.get('bars not matched by trades') else "")]
              if self.trade_paths.get('bars from trades') or self.trade_paths.get('bars not matched by trades')
              else []),
            f"max drawdown: ${self.max_drawdown:,.2f}   MLL floor: ${self.mll_floor:,.2f}   "
            f"min MLL headroom: ${(self.min_mll_headroom or Decimal(0)):,.2f}",
            "Topstep rules (the account fails or halts on these; docs/reference/topstep-rules.md):",
            f"rule check - MLL floor never touched: {ok(not self.mll_touched)}",
            f"rule check - flat by 15:10 CT every day: {ok(self.flat_violations == 0)}",
            f"rule check - contract limit never exceeded: {ok(self.max_contracts_minis <= self.contract_limit)} "
            f"(max {self.max_contracts_minis} of {self.contract_limit} mini-equivalents)",
            *self._combine_lines(),
            "our guardrails (stricter, our own; docs/risk.md):",
            f"guardrail breaches: {len(self.breaches)} {[b[1] for b in self.breaches]}  risk denials: {self.denials}"
            + (f" {self.denials_by_rule}" if self.denials_by_rule else ""),
            *self._day_lines(),
            f"open positions at exit: "
            f"{'UNKNOWN (risk not readable; check the venue)' if self.open_positions is None else self.open_positions or 'none'}",
        ]
        if self.strategies:
            lines.append("per strategy (own fills, + closes by risk's flatten; P&L in dollars):")
            for r in self.strategies:
                stats = "  ".join(f"{k} {v}" for k, v in r.stats.items())
                lines.append(f"  {r.name:<12} {r.kind:<9} {','.join(r.instruments):<9} fills {r.fills:>5} "
                             f"(+{r.closes_by_risk} by risk)  gross ${r.gross_pnl:,.2f}  fees ${r.fees:,.2f}  "
                             f"net ${r.net_pnl:,.2f}" + (f"  [{stats}]" if stats else ""))
        lines += [
            f"actor restarts: {self.restarts or 'none'}",
            f"rejected inputs: {self.rejected_inputs or 'none'}",
            f"trades csv: {self.trades_csv}",
            f"events: {self.events}  wall time: {self.seconds:.2f}s",
        ]
        if self.mode in ("backtest", "paper") and self.days:
            from domain.trade_stats import render_seed_table
            lines += ["", render_seed_table(self.seed_stats())]
        return "\n".join(lines)
