"""Account risk rules: Topstep limits (MLL, optional DLL, max contracts) and our stricter guardrails.

Pure logic: no I/O, no wall clock, no threads. The risk handler owns one :class:`AccountLedger`
(a mutable fold over realized P&L, fees and day/sub-session boundaries), calls
:func:`evaluate_account` on every mark and :func:`check_order` on every order intent.

Money is ``Decimal`` dollars everywhere. ATR values arrive as floats from the indicators and are
converted with ``Decimal(str(x))`` before any dollar arithmetic.

Rules (details, formulas and sources in ``docs/risk.md``; Topstep's rules in
``docs/reference/topstep-rules.md``, where "HC n" is https://help.topstep.com/en/articles/n):

=====================  ===========================================================  ========================
rule                   breached when                                                action
=====================  ===========================================================  ========================
mll                    equity <= MLL floor (or the ledger is already ``failed``)     LIQUIDATE
dll                    day net P&L (incl. unrealized, after fees) <= -DLL            FLATTEN_HALT_DAY
daily_loss_cap         day net P&L <= -cap                                           FLATTEN_HALT_DAY
trailing_kill_switch   equity <= high-water mark - X                                 FLATTEN_HALT_DAY
session_loss_cap       sub-session (ETH/RTH) net P&L <= -cap                         FLATTEN_REDUCE_SESSION
consecutive_losses     N consecutive losing closed trades today                      REDUCE_DAY
=====================  ===========================================================  ========================

Order checks (:func:`check_order`), in order: max contracts (mini-equivalents, worst case with
working orders), per-trade risk, open-risk cap, net 1-ATR exposure cap. An order that strictly
reduces its instrument's position passes every check.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Mapping

from domain.calendar import ns_to_ct, trading_day
from domain.instruments import INSTRUMENTS
from domain.messages import RiskState

ZERO = Decimal(0)

ETH = "ETH"
"""Overnight sub-session: 17:00 CT (previous business day) to 08:30 CT."""
RTH = "RTH"
"""Regular-hours sub-session: 08:30 CT to 15:10 CT (flat deadline; 15:10-17:00 is still RTH, flat)."""
SUB_SESSIONS = (ETH, RTH)
RTH_START = dt.time(8, 30)
ETH_START = dt.time(17, 0)


# --------------------------------------------------------------------------- limits


def _to_decimal(name: str, v: object) -> Decimal:
    if isinstance(v, Decimal):
        return v
    if isinstance(v, bool) or isinstance(v, float):
        raise TypeError(f"RiskLimits.{name}: money must be Decimal/int/str, not {type(v).__name__} ({v!r})")
    if isinstance(v, (int, str)):
        return Decimal(v)
    raise TypeError(f"RiskLimits.{name}: expected Decimal, got {type(v).__name__}")


@dataclass(frozen=True)
class RiskLimits:
    """Every number the risk rules need. ``None`` switches a rule off.

    Attributes:
        starting_balance: account balance at the start (50,000 for a 50K Combine).
        mll_amount: Topstep Maximum Loss Limit distance (2,000 on 50K).
        max_contracts_minis: Topstep maximum position in mini-equivalents (micros count 0.1).
        dll: Topstep Daily Loss Limit, ``None`` when the account has none (TopstepX default).
        daily_loss_cap: our daily loss cap on day net P&L incl. unrealized.
        trailing_kill_switch: our kill switch distance below the high-water mark.
        session_loss_cap: our loss cap per sub-session (ETH / RTH).
        open_risk_cap: cap on gross 1-ATR open risk ``sum |q| * point_value * ATR``.
        per_trade_risk: cap on one order's ``qty * point_value * ATR``.
        net_exposure_cap: cap on net 1-ATR exposure ``|sum q * point_value * ATR|``.
        consecutive_loss_limit: losing closed trades in a row that stop new exposure for the day.
        stress_move_pct: size of the adverse price shock, percent of price, for the stress check.
        stress_loss_cap: cap on the stress loss ``sum |q| * price * stress_move_pct/100 * point_value``
            of the worst-case position (every working order on the order's side filled).
        profit_target: Combine profit target (informational: :func:`target_reached`).

    Ints and strings are converted to Decimal; floats are rejected (no floats in money).
    """

    starting_balance: Decimal
    mll_amount: Decimal
    max_contracts_minis: Decimal
    dll: Decimal | None = None
    daily_loss_cap: Decimal | None = None
    trailing_kill_switch: Decimal | None = None
    session_loss_cap: Decimal | None = None
    open_risk_cap: Decimal | None = None
    per_trade_risk: Decimal | None = None
    net_exposure_cap: Decimal | None = None
    consecutive_loss_limit: int | None = None
    profit_target: Decimal | None = None
    stress_move_pct: Decimal | None = None
    stress_loss_cap: Decimal | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "consecutive_loss_limit":
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                    raise ValueError(f"RiskLimits.consecutive_loss_limit must be an int >= 1 or None, got {v!r}")
                continue
            if v is None:
                if f.name in ("starting_balance", "mll_amount", "max_contracts_minis"):
                    raise ValueError(f"RiskLimits.{f.name} is required")
                continue
            d = _to_decimal(f.name, v)
            if d <= 0:
                raise ValueError(f"RiskLimits.{f.name} must be > 0, got {d}")
            object.__setattr__(self, f.name, d)


class Action(enum.Enum):
    """What the risk handler must do about a breach.

    LIQUIDATE: MLL touched: cancel all, flatten, halt permanently; the account has failed.
    FLATTEN_HALT_DAY: cancel all, flatten, HALTED until the next trading day (17:00 CT).
    FLATTEN_REDUCE_SESSION: cancel all, flatten, REDUCING (no new exposure) until the next sub-session.
    REDUCE_DAY: no flatten; REDUCING for the rest of the trading day.
    """

    LIQUIDATE = "LIQUIDATE"
    FLATTEN_HALT_DAY = "FLATTEN_HALT_DAY"
    FLATTEN_REDUCE_SESSION = "FLATTEN_REDUCE_SESSION"
    REDUCE_DAY = "REDUCE_DAY"

    @property
    def flatten(self) -> bool:
        """True when the action requires cancelling working orders and closing positions."""
        return self is not Action.REDUCE_DAY

    @property
    def risk_state(self) -> RiskState:
        """The risk state the action leads to."""
        if self in (Action.LIQUIDATE, Action.FLATTEN_HALT_DAY):
            return RiskState.HALTED
        return RiskState.REDUCING

    @property
    def severity(self) -> int:
        """Higher = stricter (LIQUIDATE 3 ... REDUCE_DAY 0)."""
        return {Action.LIQUIDATE: 3, Action.FLATTEN_HALT_DAY: 2, Action.FLATTEN_REDUCE_SESSION: 1,
                Action.REDUCE_DAY: 0}[self]


@dataclass(frozen=True)
class Breach:
    """One breached rule. ``rule`` is one of ``mll``, ``dll``, ``daily_loss_cap``,
    ``trailing_kill_switch``, ``session_loss_cap``, ``consecutive_losses``; ``detail`` has the numbers."""

    rule: str
    action: Action
    detail: str


def worst_action(breaches: list[Breach] | tuple[Breach, ...]) -> Action | None:
    """The strictest action among ``breaches`` (None when empty)."""
    if not breaches:
        return None
    return max((b.action for b in breaches), key=lambda a: a.severity)


# --------------------------------------------------------------------------- MLL


def mll_floor(starting_balance: Decimal, mll_amount: Decimal, max_eod_balance: Decimal) -> Decimal:
    """Topstep Combine MLL floor: ``min(start, max(start - MLL, max_eod_balance - MLL))``.

    Trails the highest end-of-day balance by the MLL amount and locks at the starting balance
    (HC 8284204). Example 50K: max EOD 50,500 -> 48,500; max EOD 52,500 -> 50,000 (locked).
    """
    return min(starting_balance, max(starting_balance - mll_amount, max_eod_balance - mll_amount))


# --------------------------------------------------------------------------- sub-sessions


def sub_session_of(ts_ns: int) -> str:
    """``"RTH"`` from 08:30 to 17:00 CT, ``"ETH"`` from 17:00 to 08:30 CT (and all weekend).

    Trading stops at 15:10 CT (Topstep flat time), so 15:10-17:00 is the flat tail of RTH; at
    17:00 CT the next trading day begins with its ETH sub-session.
    """
    return _sub_session_of_minute(ts_ns // 60_000_000_000)


@functools.lru_cache(maxsize=8192)
def _sub_session_of_minute(minute: int) -> str:
    """Cached per minute: both boundaries (08:30, 17:00 CT) fall on whole minutes."""
    t = ns_to_ct(minute * 60_000_000_000)
    if t.weekday() >= 5:
        return ETH
    return RTH if RTH_START <= t.time() < ETH_START else ETH


def session_key(ts_ns: int) -> tuple[dt.date, str]:
    """``(trading_day, sub_session)`` of a timestamp: when it changes, roll the ledger."""
    return trading_day(ts_ns), sub_session_of(ts_ns)


# --------------------------------------------------------------------------- ledger


class AccountLedger:
    """Mutable account fold owned by the risk handler (mirrored to Redis via :meth:`to_dict`).

    Equity = balance + unrealized, where balance = starting balance + realized P&L - fees since
    the account start (fees hit the balance immediately: HC 8284213).

    Attributes:
        balance: current balance (realized, after fees).
        max_eod_balance: highest end-of-day balance so far (starts at the starting balance).
        floor: current MLL floor; changes only in :meth:`roll_day` and never moves down.
        trading_day: the Topstep trading day being accumulated.
        day_start_balance: balance when the trading day began.
        day_realized / day_fees: realized P&L and fees since the trading day began.
        sub_session: ``"ETH"`` or ``"RTH"``.
        sub_session_start_balance: balance when the sub-session began.
        sub_session_start_unrealized: unrealized P&L carried into the sub-session (0 unless given
            to :meth:`roll_sub_session`), so a carried position's earlier P&L is not charged twice.
        intraday_peak_equity: highest marked equity of the current trading day (reset each day to
            the day's starting balance).
        consecutive_losses: losing closed trades in a row today (reset by a winner and each day).
        failed: True once the MLL was touched (set by the handler after a LIQUIDATE breach).
    """

    _DECIMALS = ("balance", "max_eod_balance", "floor", "day_start_balance", "day_realized", "day_fees",
                 "sub_session_start_balance", "sub_session_start_unrealized", "intraday_peak_equity")

    def __init__(self, limits: RiskLimits, trading_day: dt.date, sub_session: str) -> None:
        _check_sub_session(sub_session)
        self.limits = limits
        start = limits.starting_balance
        self.balance: Decimal = start
        self.max_eod_balance: Decimal = start
        self.floor: Decimal = mll_floor(start, limits.mll_amount, start)
        self.trading_day: dt.date = trading_day
        self.day_start_balance: Decimal = start
        self.day_realized: Decimal = ZERO
        self.day_fees: Decimal = ZERO
        self.sub_session: str = sub_session
        self.sub_session_start_balance: Decimal = start
        self.sub_session_start_unrealized: Decimal = ZERO
        self.intraday_peak_equity: Decimal = start
        self.consecutive_losses: int = 0
        self.failed: bool = False

    # ---- folding events

    def on_realized(self, realized: Decimal, fee: Decimal, closed_trade: bool) -> None:
        """Apply a fill's realized P&L and fee (both Decimal dollars; fee >= 0).

        ``closed_trade`` is True when the fill reduced a position: then a negative ``realized``
        counts one more consecutive loss and a positive one resets the count (fees ignored,
        zero leaves the count unchanged). Opening fills pass ``realized=0, closed_trade=False``.
        """
        realized = _dec(realized)
        fee = _dec(fee)
        self.balance += realized - fee
        self.day_realized += realized
        self.day_fees += fee
        if closed_trade:
            if realized < 0:
                self.consecutive_losses += 1
            elif realized > 0:
                self.consecutive_losses = 0

    def roll_day(self, new_day: dt.date, sub_session: str) -> None:
        """End of trading day ``self.trading_day``; start ``new_day`` in ``sub_session``.

        The current balance is the end-of-day balance (positions are flat by 15:10 CT):
        ``max_eod_balance = max(max_eod_balance, balance)``, the floor is recomputed with
        :func:`mll_floor` and never lowered, and the day counters (day P&L, fees, intraday peak,
        consecutive losses, sub-session) reset. Idempotent: a ``new_day`` that is not after the
        current trading day only rolls the sub-session if it differs (safe after a restart).
        """
        _check_sub_session(sub_session)
        if new_day <= self.trading_day:
            if sub_session != self.sub_session:
                self.roll_sub_session(sub_session)
            return
        self.max_eod_balance = max(self.max_eod_balance, self.balance)
        self.floor = max(self.floor, mll_floor(self.limits.starting_balance, self.limits.mll_amount,
                                               self.max_eod_balance))
        self.trading_day = new_day
        self.day_start_balance = self.balance
        self.day_realized = ZERO
        self.day_fees = ZERO
        self.intraday_peak_equity = self.balance
        self.consecutive_losses = 0
        self.sub_session = sub_session
        self.sub_session_start_balance = self.balance
        self.sub_session_start_unrealized = ZERO

    def roll_sub_session(self, name: str, unrealized: Decimal = ZERO) -> None:
        """Start sub-session ``name`` (``"ETH"``/``"RTH"``). Pass the open position's
        ``unrealized`` P&L at the boundary to attribute it to the previous sub-session
        (default 0: a carried position's whole unrealized P&L counts in the new one)."""
        _check_sub_session(name)
        self.sub_session = name
        self.sub_session_start_balance = self.balance
        self.sub_session_start_unrealized = _dec(unrealized)

    # ---- reading

    def equity(self, unrealized: Decimal) -> Decimal:
        """``balance + unrealized`` (no side effect)."""
        return self.balance + _dec(unrealized)

    def mark(self, unrealized: Decimal) -> Decimal:
        """Equity at this mark; raises ``intraday_peak_equity`` if it is a new high. Returns equity."""
        eq = self.equity(unrealized)
        if eq > self.intraday_peak_equity:
            self.intraday_peak_equity = eq
        return eq

    def day_pnl(self, unrealized: Decimal) -> Decimal:
        """Net P&L of the trading day: realized - fees + unrealized."""
        return self.day_realized - self.day_fees + _dec(unrealized)

    def sub_session_pnl(self, unrealized: Decimal) -> Decimal:
        """Net P&L of the current sub-session (after fees, incl. unrealized)."""
        return (self.balance - self.sub_session_start_balance) + (_dec(unrealized) - self.sub_session_start_unrealized)

    def high_water_mark(self) -> Decimal:
        """``max(starting balance, highest EOD balance, today's highest marked equity)``."""
        return max(self.limits.starting_balance, self.max_eod_balance, self.intraday_peak_equity)

    def headroom(self, unrealized: Decimal) -> Decimal:
        """Dollars above the MLL floor: ``equity - floor`` (<= 0 means breached)."""
        return self.equity(unrealized) - self.floor

    def total_pnl(self, unrealized: Decimal = ZERO) -> Decimal:
        """Net P&L since the account start (equity - starting balance)."""
        return self.equity(unrealized) - self.limits.starting_balance

    # ---- persistence

    def to_dict(self) -> dict[str, str]:
        """All state as strings (Decimals exact); :meth:`from_dict` reverses it exactly."""
        d = {k: str(getattr(self, k)) for k in self._DECIMALS}
        d["trading_day"] = self.trading_day.isoformat()
        d["sub_session"] = self.sub_session
        d["consecutive_losses"] = str(self.consecutive_losses)
        d["failed"] = "1" if self.failed else "0"
        return d

    @classmethod
    def from_dict(cls, limits: RiskLimits, d: Mapping[str, str]) -> "AccountLedger":
        """Rebuild a ledger from :meth:`to_dict` output. Raises ValueError on a malformed dict."""
        try:
            led = cls(limits, dt.date.fromisoformat(d["trading_day"]), d["sub_session"])
            for k in cls._DECIMALS:
                if k == "sub_session_start_unrealized" and k not in d:
                    continue  # a mirror without this field keeps the default 0
                setattr(led, k, Decimal(d[k]))
            led.consecutive_losses = int(d["consecutive_losses"])
            led.failed = str(d["failed"]).lower() in ("1", "true")
        except (KeyError, ArithmeticError, ValueError) as e:
            raise ValueError(f"malformed ledger mirror: {e!r}") from e
        return led

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccountLedger):
            return NotImplemented
        return self.limits == other.limits and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"AccountLedger({self.to_dict()!r})"


def _check_sub_session(name: str) -> None:
    if name not in SUB_SESSIONS:
        raise ValueError(f"sub_session must be one of {SUB_SESSIONS}, got {name!r}")


def _dec(v: Decimal | int) -> Decimal:
    if isinstance(v, Decimal):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return Decimal(v)
    raise TypeError(f"money must be Decimal, got {type(v).__name__} ({v!r})")


# --------------------------------------------------------------------------- account evaluation


def evaluate_account(ledger: AccountLedger, unrealized: Decimal) -> list[Breach]:
    """Every account rule currently breached, MLL first, then dll, daily_loss_cap,
    trailing_kill_switch, session_loss_cap, consecutive_losses.

    ``unrealized`` is the open positions' P&L at the current mark (Decimal dollars). The only
    mutation is :meth:`AccountLedger.mark` (intraday peak equity). The MLL breach is decided on
    equity including unrealized, in real time: where a later exit fills does not matter. Once
    ``ledger.failed`` is set the mll breach is reported on every call.
    """
    lim = ledger.limits
    eq = ledger.mark(unrealized)
    out: list[Breach] = []
    if eq <= ledger.floor:
        out.append(Breach("mll", Action.LIQUIDATE,
                          f"equity {eq} <= MLL floor {ledger.floor} (balance {ledger.balance}, unrealized {unrealized})"))
    elif ledger.failed:
        out.append(Breach("mll", Action.LIQUIDATE,
                          f"account already failed (MLL touched earlier); equity {eq}, MLL floor {ledger.floor}"))
    day = ledger.day_pnl(unrealized)
    if lim.dll is not None and day <= -lim.dll:
        out.append(Breach("dll", Action.FLATTEN_HALT_DAY,
                          f"day net P&L {day} <= -DLL {lim.dll} (realized {ledger.day_realized}, "
                          f"fees {ledger.day_fees}, unrealized {unrealized})"))
    if lim.daily_loss_cap is not None and day <= -lim.daily_loss_cap:
        out.append(Breach("daily_loss_cap", Action.FLATTEN_HALT_DAY,
                          f"day net P&L {day} <= -daily cap {lim.daily_loss_cap} (realized {ledger.day_realized}, "
                          f"fees {ledger.day_fees}, unrealized {unrealized})"))
    if lim.trailing_kill_switch is not None:
        hwm = ledger.high_water_mark()
        trip = hwm - lim.trailing_kill_switch
        if eq <= trip:
            out.append(Breach("trailing_kill_switch", Action.FLATTEN_HALT_DAY,
                              f"equity {eq} <= high-water mark {hwm} - {lim.trailing_kill_switch} = {trip}"))
    if lim.session_loss_cap is not None:
        sp = ledger.sub_session_pnl(unrealized)
        if sp <= -lim.session_loss_cap:
            out.append(Breach("session_loss_cap", Action.FLATTEN_REDUCE_SESSION,
                              f"{ledger.sub_session} sub-session net P&L {sp} <= -session cap {lim.session_loss_cap}"))
    if lim.consecutive_loss_limit is not None and ledger.consecutive_losses >= lim.consecutive_loss_limit:
        out.append(Breach("consecutive_losses", Action.REDUCE_DAY,
                          f"{ledger.consecutive_losses} consecutive losing trades >= limit {lim.consecutive_loss_limit}"))
    return out


def target_reached(ledger: AccountLedger, unrealized: Decimal = ZERO) -> bool:
    """True when the profit target is set and ``equity - starting balance >= target``."""
    t = ledger.limits.profit_target
    return t is not None and ledger.total_pnl(unrealized) >= t


# --------------------------------------------------------------------------- exposure measures


def _atr(atr_points: Mapping[str, float], instrument: str) -> Decimal | None:
    """ATR in points as Decimal, or None when missing / not a positive finite number."""
    v = atr_points.get(instrument)
    if v is None:
        return None
    if isinstance(v, Decimal):
        return v if v.is_finite() and v > 0 else None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f) or f <= 0:
        return None
    return Decimal(str(v))


def _spec(instrument: str):
    spec = INSTRUMENTS.get(instrument)
    if spec is None:
        raise KeyError(instrument)
    return spec


def mini_equivalents(positions: Mapping[str, int]) -> Decimal:
    """``sum |q_i| * mini_equivalent_i`` (micros count 0.1). Raises KeyError on an unknown symbol."""
    return sum((abs(q) * _spec(s).mini_equivalent for s, q in positions.items()), ZERO)


def worst_case_minis(positions: Mapping[str, int], working: Mapping[str, tuple[int, int]]) -> Decimal:
    """Mini-equivalents if, per instrument, every working order on one side fills:
    ``sum_i max(|p_i + buys_i|, |p_i - sells_i|) * mini_equivalent_i``."""
    total = ZERO
    for s in set(positions) | set(working):
        p = positions.get(s, 0)
        b, sl = working.get(s, (0, 0))
        total += max(abs(p + b), abs(p - sl)) * _spec(s).mini_equivalent
    return total


def open_risk(positions: Mapping[str, int], atr_points: Mapping[str, float]) -> Decimal:
    """Gross 1-ATR open risk ``sum |q_i| * point_value_i * ATR_i`` (instruments without ATR skipped)."""
    total = ZERO
    for s, q in positions.items():
        a = _atr(atr_points, s)
        if a is not None and q:
            total += abs(q) * _spec(s).point_value * a
    return total


def net_atr_exposure(positions: Mapping[str, int], atr_points: Mapping[str, float]) -> Decimal:
    """Net 1-ATR dollar exposure ``|sum q_i * point_value_i * ATR_i|``: what the book gains or
    loses if every instrument moves one ATR the same way (instruments without ATR skipped)."""
    total = ZERO
    for s, q in positions.items():
        a = _atr(atr_points, s)
        if a is not None and q:
            total += q * _spec(s).point_value * a
    return abs(total)


# --------------------------------------------------------------------------- order checks


def is_reducing(position: int, signed_qty: int) -> bool:
    """True when an order strictly shrinks ``|position|`` without flipping it:
    opposite sign and ``|signed_qty| <= |position|``."""
    return position != 0 and signed_qty != 0 and (position > 0) != (signed_qty > 0) and abs(signed_qty) <= abs(position)


@dataclass(frozen=True)
class OrderCheck:
    """The part of an order intent the pre-trade checks need."""

    instrument: str
    signed_qty: int
    reduce_only: bool = False


def stress_loss(positions: Mapping[str, int], prices: Mapping[str, Decimal], move_pct: Decimal) -> Decimal:
    """Dollar loss of every position if price gaps ``move_pct`` percent against it at once:
    ``sum |q| * price * move_pct / 100 * point_value`` (instruments without a price count 0).

    Why: ATR-based risk (open_risk_cap) is small in quiet hours, exactly when a grid stacks the
    most inventory; a news gap moves many ATRs in one print (the 28-session ES data of
    docs/benchmarks.md has ES +140 points, 2%, in one 2-minute bar on 2026-03-23 07:04 ET). A percent-of-price shock does not shrink
    with the volatility estimate. Our guardrail, not a Topstep rule (docs/risk.md).
    """
    total = Decimal(0)
    for sym, q in positions.items():
        px = prices.get(sym)
        if q and px is not None and px > 0:
            total += abs(q) * px * move_pct / 100 * _spec(sym).point_value
    return total


def check_order(order: OrderCheck, positions: Mapping[str, int], working: Mapping[str, tuple[int, int]],
                atr_points: Mapping[str, float], limits: RiskLimits,
                prices: Mapping[str, Decimal] | None = None) -> str | None:
    """Pre-trade checks. Returns a denial reason (rule name first, with the numbers) or None.

    Args:
        order: instrument and signed quantity (+ buy, - sell) of the order being checked.
        positions: signed net position per instrument (missing = 0).
        working: per instrument ``(buy_qty_working, sell_qty_working)`` of orders already
            working, NOT including ``order``.
        atr_points: ATR in points (15-minute bars) per instrument; missing / non-positive = unknown.
        limits: the account limits.

    Checks, in order (the first failure is returned):

    0. ``reduce_only``: an order that strictly reduces ``|position|`` (:func:`is_reducing`) passes
       every check immediately. A ``reduce_only`` order that would not reduce is denied.
    1. ``max_contracts``: worst-case mini-equivalents (:func:`worst_case_minis` with the order
       added to its side's working quantity) must be <= max_contracts_minis, unless the order
       does not increase the worst case.
    2. ``per_trade_risk``: ``|qty| * point_value * ATR <= per_trade_risk``.
    3. ``open_risk_cap``: gross open risk after the order fills <= cap, unless the order does
       not increase it (e.g. a flip to a smaller opposite position).
    4. ``net_exposure_cap``: net 1-ATR exposure after the fill <= cap, unless the order strictly
       reduces it (a hedge is always allowed).
    5. ``stress_loss_cap`` (needs ``prices``, last trade per instrument in points): the
       :func:`stress_loss` of the position after the fill <= cap, unless the order does not
       increase it. Callers pass the worst-case position (working orders on the side filled).

    When the order's instrument has no ATR, checks 2-4 are skipped for the order (its risk
    cannot be measured); other instruments without ATR contribute 0 to the sums.
    """
    instr, q = order.instrument, order.signed_qty
    if q == 0:
        return "invalid_order: quantity is 0"
    for s in {instr, *positions, *working}:
        if s not in INSTRUMENTS:
            return f"unknown_instrument: {s!r} is not a supported instrument"
    pos = positions.get(instr, 0)
    if is_reducing(pos, q):
        return None
    if order.reduce_only:
        return f"reduce_only: order {q:+d} {instr} would not reduce position {pos:+d}"

    # 1. max contracts, worst case incl. working orders on the order's side
    b, sl = working.get(instr, (0, 0))
    after_working = dict(working)
    after_working[instr] = (b + q, sl) if q > 0 else (b, sl - q)
    before_mc = worst_case_minis(positions, working)
    after_mc = worst_case_minis(positions, after_working)
    if after_mc > limits.max_contracts_minis and after_mc > before_mc:
        return (f"max_contracts: worst case {after_mc} mini-equivalents (positions + working "
                f"{'buys' if q > 0 else 'sells'} + order {q:+d} {instr}) > limit {limits.max_contracts_minis}")

    atr = _atr(atr_points, instr)
    if atr is None:
        return None
    pv = _spec(instr).point_value

    # 2. per-trade risk
    trade_risk = abs(q) * pv * atr
    if limits.per_trade_risk is not None and trade_risk > limits.per_trade_risk:
        return (f"per_trade_risk: {abs(q)} x ${pv}/pt x ATR {atr} pt = ${trade_risk} "
                f"> ${limits.per_trade_risk}")

    after_pos = dict(positions)
    after_pos[instr] = pos + q

    # 3. gross open risk after fill
    if limits.open_risk_cap is not None:
        before_or = open_risk(positions, atr_points)
        after_or = open_risk(after_pos, atr_points)
        if after_or > limits.open_risk_cap and after_or > before_or:
            return f"open_risk_cap: open risk after fill ${after_or} > ${limits.open_risk_cap} (before ${before_or})"

    # 4. net 1-ATR exposure after fill
    if limits.net_exposure_cap is not None:
        before_ne = net_atr_exposure(positions, atr_points)
        after_ne = net_atr_exposure(after_pos, atr_points)
        if after_ne > limits.net_exposure_cap and not after_ne < before_ne:
            return (f"net_exposure_cap: net 1-ATR exposure after fill ${after_ne} > ${limits.net_exposure_cap} "
                    f"(before ${before_ne})")

    # 5. stress loss of the position after fill (a percent-of-price gap against it)
    if limits.stress_loss_cap is not None and limits.stress_move_pct is not None and prices:
        before_sl = stress_loss(positions, prices, limits.stress_move_pct)
        after_sl = stress_loss(after_pos, prices, limits.stress_move_pct)
        if after_sl > limits.stress_loss_cap and after_sl > before_sl:
            return (f"stress_loss_cap: a {limits.stress_move_pct}% gap against the worst-case position would lose "
                    f"${after_sl.quantize(Decimal('0.01'))} > ${limits.stress_loss_cap}")
    return None
