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
personal_dll           equity <= fixed / trailing personal DLL threshold             NOTIFY / FLATTEN_ONCE /
                                                                                     FLATTEN_HALT_DAY
daily_loss_cap         day net P&L <= -cap                                           FLATTEN_HALT_DAY
trailing_kill_switch   equity <= high-water mark - X                                 FLATTEN_HALT_DAY
session_loss_cap       sub-session (ETH/RTH) net P&L <= -cap                         FLATTEN_REDUCE_SESSION
consecutive_losses     N consecutive losing closed trades today                      REDUCE_DAY
=====================  ===========================================================  ========================

Order checks (:func:`check_order`), in order: max contracts (mini-equivalents, worst case with
working orders), per-trade risk, open-risk cap, net 1-ATR exposure cap. An order that strictly
reduces its instrument's position passes every check.

Sweep guard (:func:`check_sweep`, after :func:`check_order` for entries): the loss of one move
through every working order to a stress distance beyond the farthest (:func:`sweep_loss`) must fit
in :func:`loss_headroom` (daily / session caps, kill switch, DLLs, MLL). Topstep consistency:
:func:`effective_target`, :func:`consistency_met`, :func:`target_reached`.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import itertools
import math
from dataclasses import dataclass, fields
from decimal import ROUND_CEILING, Decimal
from typing import Mapping

from domain.calendar import ns_to_ct, trading_day
from domain.instruments import INSTRUMENTS
from domain.messages import RiskState, slot_init

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
        personal_dll: TopstepX personal daily loss limit (dollars), ``None`` = not set.
        personal_dll_mode: ``fixed`` (day start balance - X) or ``trailing`` (today's peak - X).
        personal_dll_trail: for ``trailing``: the peak of ``unrealized`` equity or of ``realized`` balance.
        personal_dll_action: ``none`` (alert only), ``liquidate`` (flatten once, then nothing more that
            day), ``liquidate_and_block`` (flatten and halt until 17:00 CT).
        consistency_share: Combine consistency: best day <= share x total profit (0.55), ``None`` = off.
        mll_trailing: ``eod`` (floor trails the highest end-of-day balance) or ``intraday`` (trails the
            highest marked equity).
        sweep_atr_multiple / sweep_min_ticks / sweep_min_pct: stress distance of the sweep guard
            (:func:`sweep_distance`): ``max(k x ATR, n ticks, pct % of price)`` beyond the farthest
            working entry; all ``None`` = guard off.

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
    personal_dll: Decimal | None = None
    personal_dll_mode: str = "fixed"
    personal_dll_trail: str = "unrealized"
    personal_dll_action: str = "none"
    consistency_share: Decimal | None = None
    mll_trailing: str = "eod"
    sweep_atr_multiple: Decimal | None = None
    sweep_min_ticks: int | None = None
    sweep_min_pct: Decimal | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("consecutive_loss_limit", "sweep_min_ticks"):
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                    raise ValueError(f"RiskLimits.{f.name} must be an int >= 1 or None, got {v!r}")
                continue
            if f.name in _CHOICES:
                if v not in _CHOICES[f.name]:
                    raise ValueError(f"RiskLimits.{f.name} must be one of {_CHOICES[f.name]}, got {v!r}")
                continue
            if v is None:
                if f.name in ("starting_balance", "mll_amount", "max_contracts_minis"):
                    raise ValueError(f"RiskLimits.{f.name} is required")
                continue
            d = _to_decimal(f.name, v)
            if d <= 0:
                raise ValueError(f"RiskLimits.{f.name} must be > 0, got {d}")
            if f.name == "consistency_share" and d > 1:
                raise ValueError(f"RiskLimits.consistency_share must be in (0, 1], got {d}")
            object.__setattr__(self, f.name, d)

    @property
    def sweep_guard(self) -> bool:
        """True when the working-entry sweep guard is on (:func:`sweep_loss`)."""
        return (self.sweep_atr_multiple is not None or self.sweep_min_ticks is not None
                or self.sweep_min_pct is not None)


PDLL_MODES = ("fixed", "trailing")
"""Personal DLL threshold: ``fixed`` (day start balance - X) or ``trailing`` (today's peak - X)."""
PDLL_TRAILS = ("unrealized", "realized")
"""What the trailing personal DLL trails: today's peak equity (incl. open profit) or peak balance."""
PDLL_ACTIONS = ("none", "liquidate", "liquidate_and_block")
"""TopstepX personal DLL actions: Do Nothing, Liquidate (once, then Do Nothing), Liquidate and Block."""
MLL_TRAILING = ("eod", "intraday")
"""MLL floor trails the highest end-of-day balance (``eod``, Topstep's article) or intraday equity."""
_CHOICES = {"personal_dll_mode": PDLL_MODES, "personal_dll_trail": PDLL_TRAILS,
            "personal_dll_action": PDLL_ACTIONS, "mll_trailing": MLL_TRAILING}


class Action(enum.Enum):
    """What the risk handler must do about a breach.

    LIQUIDATE: MLL touched: cancel all, flatten, halt permanently; the account has failed.
    FLATTEN_HALT_DAY: cancel all, flatten, HALTED until the next trading day (17:00 CT).
    FLATTEN_REDUCE_SESSION: cancel all, flatten, REDUCING (no new exposure) until the next sub-session.
    REDUCE_DAY: no flatten; REDUCING for the rest of the trading day.
    FLATTEN_ONCE: cancel all, flatten, no hold: trading goes on (TopstepX personal DLL "Liquidate").
    NOTIFY: alert only (TopstepX personal DLL "Do Nothing").
    """

    LIQUIDATE = "LIQUIDATE"
    FLATTEN_HALT_DAY = "FLATTEN_HALT_DAY"
    FLATTEN_REDUCE_SESSION = "FLATTEN_REDUCE_SESSION"
    REDUCE_DAY = "REDUCE_DAY"
    FLATTEN_ONCE = "FLATTEN_ONCE"
    NOTIFY = "NOTIFY"

    @property
    def flatten(self) -> bool:
        """True when the action requires cancelling working orders and closing positions."""
        return self not in (Action.REDUCE_DAY, Action.NOTIFY)

    @property
    def risk_state(self) -> RiskState:
        """The risk state the action leads to."""
        if self in (Action.LIQUIDATE, Action.FLATTEN_HALT_DAY):
            return RiskState.HALTED
        if self in (Action.FLATTEN_ONCE, Action.NOTIFY):
            return RiskState.ACTIVE
        return RiskState.REDUCING

    @property
    def severity(self) -> int:
        """Higher = stricter (LIQUIDATE 3 ... REDUCE_DAY 0, FLATTEN_ONCE -1, NOTIFY -2)."""
        return {Action.LIQUIDATE: 3, Action.FLATTEN_HALT_DAY: 2, Action.FLATTEN_REDUCE_SESSION: 1,
                Action.REDUCE_DAY: 0, Action.FLATTEN_ONCE: -1, Action.NOTIFY: -2}[self]


@dataclass(frozen=True)
class Breach:
    """One breached rule. ``rule`` is one of ``mll``, ``dll``, ``personal_dll``, ``daily_loss_cap``,
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


_LEDGER_VERSIONS = itertools.count(1)
"""Source of :attr:`AccountLedger.version`, shared by every ledger of the process."""


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
        best_day: highest net P&L (realized - fees) of a closed trading day, 0 before the first
            winning day (Topstep consistency: losing days do not lower it).
        day_peak_balance: highest balance (realized) of the current trading day (personal DLL
            trailing on realized gains).
        day_fills: fills folded in the current trading day (a day with fills is a traded day).
        pdll_fired: the personal DLL acted today (``none``/``liquidate`` act once a day).
        version: a number no other state of any ledger had: every attribute set takes a new one
            (the risk handler's print band keys on it, docs/decisions/0020).
    """

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "version", next(_LEDGER_VERSIONS))

    _DECIMALS = ("balance", "max_eod_balance", "floor", "day_start_balance", "day_realized", "day_fees",
                 "sub_session_start_balance", "sub_session_start_unrealized", "intraday_peak_equity",
                 "best_day", "day_peak_balance")
    _OPTIONAL = {"sub_session_start_unrealized": "0", "best_day": "0", "day_peak_balance": None}
    """Fields a mirror written by an older version may lack, with their default (None: the day start balance)."""

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
        self.best_day: Decimal = ZERO
        self.day_peak_balance: Decimal = start
        self.day_fills: int = 0
        self.pdll_fired: bool = False

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
        self.day_fills += 1
        if self.balance > self.day_peak_balance:
            self.day_peak_balance = self.balance
        if closed_trade:
            if realized < 0:
                self.consecutive_losses += 1
            elif realized > 0:
                self.consecutive_losses = 0

    def roll_day(self, new_day: dt.date, sub_session: str) -> tuple[dt.date, Decimal, int] | None:
        """End of trading day ``self.trading_day``; start ``new_day`` in ``sub_session``.

        Returns the closed day as ``(trading_day, net P&L = realized - fees, fills)``, or None when
        nothing rolled. The closed day's net P&L raises :attr:`best_day` (consistency).

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
            return None
        closed = (self.trading_day, self.day_realized - self.day_fees, self.day_fills)
        self.best_day = max(self.best_day, closed[1])
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
        self.day_peak_balance = self.balance
        self.day_fills = 0
        self.pdll_fired = False
        return closed

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
        """Equity at this mark; raises ``intraday_peak_equity`` if it is a new high. Returns equity.

        With ``limits.mll_trailing == "intraday"`` a new high also raises the MLL floor at once
        (:func:`mll_floor` of the highest marked equity; it still locks at the starting balance)."""
        eq = self.equity(unrealized)
        if eq > self.intraday_peak_equity:
            self.intraday_peak_equity = eq
            if self.limits.mll_trailing == "intraday":
                self.floor = max(self.floor, mll_floor(self.limits.starting_balance, self.limits.mll_amount,
                                                       max(eq, self.max_eod_balance)))
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
        d["day_fills"] = str(self.day_fills)
        d["pdll_fired"] = "1" if self.pdll_fired else "0"
        return d

    @classmethod
    def from_dict(cls, limits: RiskLimits, d: Mapping[str, str]) -> "AccountLedger":
        """Rebuild a ledger from :meth:`to_dict` output. Raises ValueError on a malformed dict."""
        try:
            led = cls(limits, dt.date.fromisoformat(d["trading_day"]), d["sub_session"])
            for k in cls._DECIMALS:
                if k in cls._OPTIONAL and k not in d:
                    continue  # a mirror without this field keeps the default
                setattr(led, k, Decimal(d[k]))
            if "day_peak_balance" not in d:
                led.day_peak_balance = max(led.day_start_balance, led.balance)
            led.consecutive_losses = int(d["consecutive_losses"])
            led.failed = str(d["failed"]).lower() in ("1", "true")
            led.day_fills = int(d.get("day_fills", "0"))
            led.pdll_fired = str(d.get("pdll_fired", "0")).lower() in ("1", "true")
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
    pdll = personal_dll_threshold(ledger)
    if pdll is not None and eq <= pdll and not ledger.pdll_fired:
        action = {"none": Action.NOTIFY, "liquidate": Action.FLATTEN_ONCE,
                  "liquidate_and_block": Action.FLATTEN_HALT_DAY}[lim.personal_dll_action]
        out.append(Breach("personal_dll", action,
                          f"equity {eq} <= personal DLL threshold {pdll} ({lim.personal_dll_mode} "
                          f"{lim.personal_dll}, action {lim.personal_dll_action})"))
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


def breach_free_above(ledger: AccountLedger) -> Decimal | None:
    """The unrealized P&L (dollars) above which :func:`evaluate_account` finds no breach, while the
    ledger stands as it is and the mark makes no new intraday equity high; None when a rule is
    breached whatever the mark (the account failed; consecutive losses at the limit).

    Every rule of :func:`evaluate_account` is a threshold that equity (``balance + u``), day P&L
    (``day_pnl(0) + u``) or sub-session P&L (``sub_session_pnl(0) + u``) crosses from above, so
    no rule is breached exactly when ``u`` is above the highest of those thresholds moved to
    ``u``. A rule added there must be added here (``tests/test_fast_paths.py`` checks both on
    random ledgers)."""
    lim = ledger.limits
    if ledger.failed or (lim.consecutive_loss_limit is not None
                         and ledger.consecutive_losses >= lim.consecutive_loss_limit):
        return None
    bal, day, sub = ledger.balance, ledger.day_pnl(ZERO), ledger.sub_session_pnl(ZERO)
    levels = [ledger.floor - bal]
    if lim.dll is not None:
        levels.append(-lim.dll - day)
    pdll = personal_dll_threshold(ledger)
    if pdll is not None and not ledger.pdll_fired:
        levels.append(pdll - bal)
    if lim.daily_loss_cap is not None:
        levels.append(-lim.daily_loss_cap - day)
    if lim.trailing_kill_switch is not None:
        levels.append(ledger.high_water_mark() - lim.trailing_kill_switch - bal)
    if lim.session_loss_cap is not None:
        levels.append(-lim.session_loss_cap - sub)
    return max(levels)


def personal_dll_threshold(ledger: AccountLedger) -> Decimal | None:
    """Equity at or below which the TopstepX personal DLL acts, or None when none is set.

    ``fixed``: ``day start balance - X`` (HC 9772296). ``trailing``: ``today's peak - X`` where the
    peak is today's highest marked equity (``unrealized``, incl. open profit) or highest balance
    (``realized``), starting at the day start balance; it only rises during the day (HC 10490293).
    """
    lim = ledger.limits
    if lim.personal_dll is None:
        return None
    if lim.personal_dll_mode == "fixed":
        return ledger.day_start_balance - lim.personal_dll
    peak = ledger.intraday_peak_equity if lim.personal_dll_trail == "unrealized" else ledger.day_peak_balance
    return max(peak, ledger.day_start_balance) - lim.personal_dll


def best_day(ledger: AccountLedger, unrealized: Decimal | None = ZERO) -> Decimal:
    """Best day for consistency: the best closed day, and today's net P&L (incl. ``unrealized``)
    unless ``unrealized`` is None. Losing days do not lower it; 0 before a winning day."""
    b = ledger.best_day
    if unrealized is not None:
        b = max(b, ledger.day_pnl(unrealized))
    return b


def effective_target(ledger: AccountLedger, unrealized: Decimal | None = ZERO) -> Decimal | None:
    """The profit target after the consistency raise: ``max(profit_target, best_day / share)``.

    Topstep (HC 8284208): a best day above ``share`` of the total profit does not fail the Combine;
    the target rises to ``best_day / share`` (50K, 55 %: a $1,800 best day -> $3,272.73).
    None when the profile has no target."""
    lim = ledger.limits
    if lim.profit_target is None:
        return None
    if lim.consistency_share is None:
        return lim.profit_target
    return max(lim.profit_target, best_day(ledger, unrealized) / lim.consistency_share)


def consistency_met(ledger: AccountLedger, unrealized: Decimal | None = ZERO) -> bool:
    """``best_day <= share x total profit`` with a positive total profit (True when the rule is off)."""
    share = ledger.limits.consistency_share
    if share is None:
        return True
    total = ledger.total_pnl(unrealized or ZERO)
    return total > 0 and best_day(ledger, unrealized) <= share * total


def target_reached(ledger: AccountLedger, unrealized: Decimal = ZERO) -> bool:
    """Combine passed on P&L: the target is set and ``equity - start >= effective_target`` (the
    target raised by consistency, so a pass implies :func:`consistency_met`). Today's P&L counts
    as a candidate best day."""
    t = effective_target(ledger, unrealized)
    return t is not None and ledger.total_pnl(unrealized) >= t


# --------------------------------------------------------------------------- exposure measures


def _atr(atr_points: Mapping[str, float], instrument: str) -> Decimal | None:
    """ATR in points as Decimal, or None when missing / not a positive finite number."""
    v = atr_points.get(instrument)
    if v is None:
        return None
    if isinstance(v, Decimal):
        return v if v.is_finite() and v > 0 else None
    if type(v) is float:
        return _float_atr(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f) or f <= 0:
        return None
    return Decimal(str(v))


@functools.lru_cache(maxsize=4096)
def _float_atr(v: float) -> Decimal | None:
    """:func:`_atr` of a float, memoized: risk holds each instrument's last ATR as the float a
    ``StrategyStatus`` carried and reads it several times per order check."""
    if not math.isfinite(v) or v <= 0:
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


# --------------------------------------------------------------------------- sweep guard


@slot_init  # risk builds one per working order and intent of a batch
@dataclass(frozen=True, slots=True)
class WorkingOrder:
    """A working order as the sweep guard sees it: instrument, signed leaves quantity (+ buy),
    its type (``LIMIT``, ``STOP``, ``MARKET``...) and its limit or stop price in points (None for
    a market order)."""

    instrument: str
    signed_qty: int
    order_type: str
    price: Decimal | None


def sweep_distance(instrument: str, atr_points: Mapping[str, float], limits: RiskLimits,
                   price: Decimal | None = None) -> Decimal:
    """Stress distance S in points beyond the farthest working entry:
    ``max(sweep_atr_multiple x ATR, sweep_min_ticks x tick_size, sweep_min_pct / 100 x price)``,
    rounded up to a whole tick; a part whose input is missing (no ATR from the strategy, no price)
    or whose parameter is None is left out (0 when nothing is left)."""
    spec = _spec(instrument)
    s = ZERO
    a = _atr(atr_points, instrument)
    if a is not None and limits.sweep_atr_multiple is not None:
        s = limits.sweep_atr_multiple * a
    if limits.sweep_min_ticks is not None:
        s = max(s, limits.sweep_min_ticks * spec.tick_size)
    if limits.sweep_min_pct is not None and price is not None and price > 0:
        s = max(s, limits.sweep_min_pct / 100 * price)
    return (s / spec.tick_size).to_integral_value(rounding=ROUND_CEILING) * spec.tick_size


def sweep_loss(positions: Mapping[str, int], orders: list[WorkingOrder], marks: Mapping[str, Decimal],
               atr_points: Mapping[str, float], limits: RiskLimits) -> tuple[Decimal, str]:
    """Worst-case loss, in dollars from the current marks, of one move through every working order.

    Per instrument i and direction (down / up): every working order that such a move fills fills
    at its price (:func:`_instrument_sweep`), and price ends at ``X = farthest fill - S_i`` (down) or
    ``+ S_i`` (up), with ``S_i`` = :func:`sweep_distance` (ATR from StrategyStatus, tick floor):

        loss_i = -(p_i (X - M_i) + sum_j q_j (X - F_j)) x point_value_i
                 + fee_per_side_i x (sum_j |q_j| + |p_i + sum_j q_j|)

    (existing position p marked from M to X, each filled order q_j from its fill F_j to X, fees of
    those fills and of closing the resulting position). All instruments move the same way (ES/NQ
    correlation ~0.95), so the book's loss is ``max(sum_i loss_i(down), sum_i loss_i(up), 0)``: a
    hedge leg's gain offsets. Instruments without a mark (and no priced order) are skipped.
    Returns ``(loss, "down"|"up")``.
    """
    by_sym = _by_instrument(orders)
    down = up = ZERO
    for sym in set(positions) | set(by_sym):
        d, u = _instrument_sweep(sym, positions.get(sym, 0), by_sym.get(sym, ()), marks, atr_points, limits)
        down += d
        up += u
    return _worst(down, up)


def _by_instrument(orders: list[WorkingOrder]) -> dict[str, list[WorkingOrder]]:
    by_sym: dict[str, list[WorkingOrder]] = {}
    for o in orders:
        by_sym.setdefault(o.instrument, []).append(o)
    return by_sym


def _worst(down: Decimal, up: Decimal) -> tuple[Decimal, str]:
    """The larger of the two directions' losses (down on a tie), floored at 0."""
    return (max(down, ZERO), "down") if down >= up else (max(up, ZERO), "up")


def _instrument_sweep(sym: str, p: int, orders, marks: Mapping[str, Decimal], atr_points: Mapping[str, float],
                      limits: RiskLimits, dist: Decimal | None = None) -> tuple[Decimal, Decimal]:
    """``(loss_i(down), loss_i(up))`` of :func:`sweep_loss` for one instrument: position ``p`` and
    its working ``orders``; ``(0, 0)`` when it has no mark and no priced order. ``dist``: the
    :func:`sweep_distance` at the instrument's mark, when the caller has it."""
    mark = marks.get(sym)
    if mark is None:
        priced = [o.price for o in orders if o.price is not None]
        if not priced:
            return ZERO, ZERO
        mark = priced[0]
        dist = None  # the distance at this price, not at a mark
    if dist is None:
        dist = sweep_distance(sym, atr_points, limits, mark)
    return _sweep_losses(_sweep_fills(orders, mark), p, mark, dist, _spec(sym))


_Fills = tuple[bool, Decimal, int, Decimal, int, bool, Decimal, int, Decimal, int]
"""What one move fills of an instrument's orders, per direction (down, then up): any fill, the
farthest fill price, sum q, sum q x F, sum |q| (:func:`_sweep_fills`)."""


def _sweep_fills(orders, mark: Decimal, after: _Fills | None = None) -> _Fills:
    """:data:`_Fills` of ``orders`` from ``mark``, continuing ``after`` (the fills of orders taken
    before these) when given. Which orders a move fills, and where: market orders at the mark; a
    buy limit or a sell stop in a fall, at min(price, mark), and in a rise (at the mark) only if
    already marketable / triggered (price >= mark); a sell limit or a buy stop the other way round."""
    if after is None:
        d_any = u_any = False
        d_far = u_far = mark
        d_q = u_q = d_n = u_n = 0
        d_qf = u_qf = ZERO
    else:
        d_any, d_far, d_q, d_qf, d_n, u_any, u_far, u_q, u_qf, u_n = after
    for o in orders:
        q, price = o.signed_qty, o.price
        if price is None or o.order_type == "MARKET":
            fd = fu = mark
        elif (q > 0) == (o.order_type == "LIMIT"):  # fills in a fall
            fd = price if price < mark else mark
            fu = mark if price >= mark else None
        else:  # fills in a rise
            fu = price if price > mark else mark
            fd = mark if price <= mark else None
        if fd is not None:
            d_any = True
            if fd < d_far:
                d_far = fd
            d_q += q
            d_qf += q * fd
            d_n += abs(q)
        if fu is not None:
            u_any = True
            if fu > u_far:
                u_far = fu
            u_q += q
            u_qf += q * fu
            u_n += abs(q)
    return d_any, d_far, d_q, d_qf, d_n, u_any, u_far, u_q, u_qf, u_n


def _sweep_losses(fills: _Fills, p: int, mark: Decimal, dist: Decimal, spec) -> tuple[Decimal, Decimal]:
    """``(loss down, loss up)`` of position ``p`` and the ``fills`` (:func:`_sweep_fills`) when price
    ends ``dist`` beyond the farthest fill: ``-(p (X - M) + sum q (X - F)) x point value`` plus the
    fees of the fills and of the close (:func:`sweep_loss`)."""
    d_any, d_far, d_q, d_qf, d_n, u_any, u_far, u_q, u_qf, u_n = fills
    down = up = ZERO
    if d_any or p:
        x = d_far - dist
        down = -(p * (x - mark) + x * d_q - d_qf) * spec.point_value + spec.fee_per_side * (d_n + abs(p + d_q))
    if u_any or p:
        x = u_far + dist
        up = -(p * (x - mark) + x * u_q - u_qf) * spec.point_value + spec.fee_per_side * (u_n + abs(p + u_q))
    return down, up


def loss_headroom(ledger: AccountLedger, unrealized: Decimal) -> tuple[Decimal, str] | None:
    """Dollars the account may still lose from here before the nearest halting loss rule acts:
    the minimum of ``daily_loss_cap + day P&L``, ``session_loss_cap + sub-session P&L``,
    ``equity - (high-water mark - trailing_kill_switch)``, ``DLL + day P&L``, ``equity - personal DLL
    threshold`` (unless its action is ``none``) and ``equity - MLL floor``. Returns
    ``(headroom, rule)`` or None when no rule is set (the MLL always is)."""
    lim = ledger.limits
    eq = ledger.equity(unrealized)
    day = ledger.day_pnl(unrealized)
    cands = [(eq - ledger.floor, "mll")]
    if lim.daily_loss_cap is not None:
        cands.append((lim.daily_loss_cap + day, "daily_loss_cap"))
    if lim.session_loss_cap is not None:
        cands.append((lim.session_loss_cap + ledger.sub_session_pnl(unrealized), "session_loss_cap"))
    if lim.trailing_kill_switch is not None:
        cands.append((eq - (ledger.high_water_mark() - lim.trailing_kill_switch), "trailing_kill_switch"))
    if lim.dll is not None:
        cands.append((lim.dll + day, "dll"))
    pdll = personal_dll_threshold(ledger)
    if pdll is not None and lim.personal_dll_action != "none" and not ledger.pdll_fired:
        cands.append((eq - pdll, "personal_dll"))
    return min(cands, key=lambda c: c[0])


def check_sweep(order: WorkingOrder, positions: Mapping[str, int], working: list[WorkingOrder],
                marks: Mapping[str, Decimal], atr_points: Mapping[str, float], ledger: AccountLedger,
                unrealized: Decimal) -> str | None:
    """The sweep guard: deny ``order`` (a non-reducing entry) when the :func:`sweep_loss` of the
    book with it exceeds the :func:`loss_headroom` and is larger than without it. A denial reason
    (``sweep_guard: ...``) or None. Off unless the limits set a sweep distance. One order against
    one book; :class:`SweepBook` judges several against the same book."""
    return SweepBook(positions, working, marks, atr_points, ledger, unrealized).check(order)


class SweepBook:
    """:func:`check_sweep` for any number of orders against one book: the arguments of
    :func:`check_sweep` but the order. What does not depend on the order is worked out once, on
    first use: what a move fills of each instrument's working orders (:func:`_sweep_fills`, from
    its mark), each instrument's sweep losses without a new order (:func:`_sweep_losses`), the
    distance at each mark (:func:`sweep_distance`) and the :func:`loss_headroom`; an order's own
    fills are added to its instrument's. The caller must not change the mappings while it uses the
    book (risk builds one per batch of intents with nothing in between,
    :class:`domain.risk.RiskManager`)."""

    __slots__ = ("positions", "marks", "atr_points", "ledger", "unrealized", "by_sym", "syms", "_sweeps", "_dists",
                 "_fills", "_room")

    def __init__(self, positions: Mapping[str, int], working: list[WorkingOrder], marks: Mapping[str, Decimal],
                 atr_points: Mapping[str, float], ledger: AccountLedger, unrealized: Decimal) -> None:
        self.positions, self.marks, self.atr_points = positions, marks, atr_points
        self.ledger, self.unrealized = ledger, unrealized
        self.by_sym = _by_instrument(working)
        self.syms = set(positions) | set(self.by_sym)  # instruments with a position or a working order
        self._sweeps: dict[str, tuple[Decimal, Decimal]] = {}  # instrument -> (down, up) of its book as it is
        self._dists: dict[str, Decimal] = {}  # instrument -> sweep distance at its mark, points
        self._fills: dict[str, _Fills] = {}  # instrument -> what a move fills of its working orders, from its mark
        self._room: tuple[Decimal, str] | None = None

    def _sweep(self, sym: str) -> tuple[Decimal, Decimal]:
        """``(loss down, loss up)`` of ``sym``'s position and working orders (no new order)."""
        got = self._sweeps.get(sym)
        if got is None:
            mark = self.marks.get(sym)
            if mark is None:
                got = _instrument_sweep(sym, self.positions.get(sym, 0), self.by_sym.get(sym, ()),
                                        self.marks, self.atr_points, self.ledger.limits)
            else:
                got = _sweep_losses(self._fills_of(sym, mark), self.positions.get(sym, 0), mark,
                                    self._dist(sym, mark), _spec(sym))
            self._sweeps[sym] = got
        return got

    def _dist(self, sym: str, mark: Decimal) -> Decimal:
        """:func:`sweep_distance` of ``sym`` at its mark."""
        dist = self._dists.get(sym)
        if dist is None:
            dist = self._dists[sym] = sweep_distance(sym, self.atr_points, self.ledger.limits, mark)
        return dist

    def _fills_of(self, sym: str, mark: Decimal) -> _Fills:
        """:func:`_sweep_fills` of ``sym``'s working orders from its mark."""
        got = self._fills.get(sym)
        if got is None:
            got = self._fills[sym] = _sweep_fills(self.by_sym.get(sym, ()), mark)
        return got

    def check(self, order: WorkingOrder) -> str | None:
        """The sweep guard's verdict on ``order``: a denial reason (``sweep_guard: ...``) or None."""
        limits = self.ledger.limits
        if not limits.sweep_guard:
            return None
        instr, marks, positions = order.instrument, self.marks, self.positions
        # the instruments other than the order's lose the same with or without it
        down = up = ZERO
        for sym in self.syms:
            if sym != instr:
                d, u = self._sweep(sym)
                down += d
                up += u
        own = self.by_sym.get(instr, [])
        p = positions.get(instr, 0)
        # the distance at the order's instrument's mark (the denial names it), or at its price
        mark = marks.get(instr)
        if mark is None:
            dist = sweep_distance(instr, self.atr_points, limits, order.price)
            d_with, u_with = _instrument_sweep(instr, p, [*own, order], marks, self.atr_points, limits, dist)
        else:  # the order's fills added to those of the instrument's working orders (taken first)
            dist = self._dist(instr, mark)
            d_with, u_with = _sweep_losses(_sweep_fills((order,), mark, self._fills_of(instr, mark)), p, mark, dist,
                                           _spec(instr))
        after, direction = _worst(down + d_with, up + u_with)
        if self._room is None:
            self._room = loss_headroom(self.ledger, self.unrealized)
        room, rule = self._room
        if after <= room:
            return None
        if mark is None:  # the book's own sweep is measured at its first priced order, not at a mark
            d_without, u_without = _instrument_sweep(instr, p, own, marks, self.atr_points, limits, dist)
        else:
            d_without, u_without = self._sweep(instr)
        before, _ = _worst(down + d_without, up + u_without)
        if after <= before:
            return None
        return (f"sweep_guard: a move {direction} through every working order "
                f"(+ {order.signed_qty:+d} {instr} @ {order.price}) to {dist} pt "
                f"beyond the farthest would lose "
                f"${after.quantize(Decimal('0.01'))} > ${room.quantize(Decimal('0.01'))} left before {rule}")


# --------------------------------------------------------------------------- order checks


def is_reducing(position: int, signed_qty: int) -> bool:
    """True when an order strictly shrinks ``|position|`` without flipping it:
    opposite sign and ``|signed_qty| <= |position|``."""
    return position != 0 and signed_qty != 0 and (position > 0) != (signed_qty > 0) and abs(signed_qty) <= abs(position)


@slot_init
@dataclass(frozen=True, slots=True)
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

    When the order's instrument has no ATR, checks 2-5 are skipped for the order (its risk
    cannot be measured); other instruments without ATR contribute 0 to the sums.
    """
    reason, measured = order_caps(order, positions, working, atr_points, limits)
    if reason is None and measured and prices:
        return check_stress(order, positions, prices, limits)
    return reason


def order_caps(order: OrderCheck, positions: Mapping[str, int], working: Mapping[str, tuple[int, int]],
               atr_points: Mapping[str, float], limits: RiskLimits) -> tuple[str | None, bool]:
    """Checks 0-4 of :func:`check_order` (the ones without prices), same arguments:
    ``(denial reason or None, measured)``; ``measured`` is True when the order passed them all
    with an ATR, so that check 5 (:func:`check_stress`) applies to it."""
    instr, q = order.instrument, order.signed_qty
    if q == 0:
        return "invalid_order: quantity is 0", False
    for s in {instr, *positions, *working}:
        if s not in INSTRUMENTS:
            return f"unknown_instrument: {s!r} is not a supported instrument", False
    pos = positions.get(instr, 0)
    if is_reducing(pos, q):
        return None, False
    if order.reduce_only:
        return f"reduce_only: order {q:+d} {instr} would not reduce position {pos:+d}", False

    # 1. max contracts, worst case incl. working orders on the order's side
    b, sl = working.get(instr, (0, 0))
    after_working = dict(working)
    after_working[instr] = (b + q, sl) if q > 0 else (b, sl - q)
    before_mc = worst_case_minis(positions, working)
    after_mc = worst_case_minis(positions, after_working)
    if after_mc > limits.max_contracts_minis and after_mc > before_mc:
        return (f"max_contracts: worst case {after_mc} mini-equivalents (positions + working "
                f"{'buys' if q > 0 else 'sells'} + order {q:+d} {instr}) > limit {limits.max_contracts_minis}"), False

    atr = _atr(atr_points, instr)
    if atr is None:
        return None, False
    pv = _spec(instr).point_value

    # 2. per-trade risk
    trade_risk = abs(q) * pv * atr
    if limits.per_trade_risk is not None and trade_risk > limits.per_trade_risk:
        return (f"per_trade_risk: {abs(q)} x ${pv}/pt x ATR {atr} pt = ${trade_risk} "
                f"> ${limits.per_trade_risk}"), False

    after_pos = dict(positions)
    after_pos[instr] = pos + q

    # 3. gross open risk after fill
    if limits.open_risk_cap is not None:
        before_or = open_risk(positions, atr_points)
        after_or = open_risk(after_pos, atr_points)
        if after_or > limits.open_risk_cap and after_or > before_or:
            return f"open_risk_cap: open risk after fill ${after_or} > ${limits.open_risk_cap} (before ${before_or})", False

    # 4. net 1-ATR exposure after fill
    if limits.net_exposure_cap is not None:
        before_ne = net_atr_exposure(positions, atr_points)
        after_ne = net_atr_exposure(after_pos, atr_points)
        if after_ne > limits.net_exposure_cap and not after_ne < before_ne:
            return (f"net_exposure_cap: net 1-ATR exposure after fill ${after_ne} > ${limits.net_exposure_cap} "
                    f"(before ${before_ne})"), False
    return None, True


def check_stress(order: OrderCheck, positions: Mapping[str, int], prices: Mapping[str, Decimal],
                 limits: RiskLimits) -> str | None:
    """Check 5 of :func:`check_order`, for an order that passed checks 0-4 with an ATR
    (:func:`order_caps` says so): the :func:`stress_loss` of the position after the fill (a
    percent-of-price gap against it) <= ``stress_loss_cap``, unless the order does not increase
    it. A denial reason or None; None when the cap or the move is not set."""
    if limits.stress_loss_cap is None or limits.stress_move_pct is None:
        return None
    instr = order.instrument
    after_pos = dict(positions)
    after_pos[instr] = positions.get(instr, 0) + order.signed_qty
    before_sl = stress_loss(positions, prices, limits.stress_move_pct)
    after_sl = stress_loss(after_pos, prices, limits.stress_move_pct)
    if after_sl > limits.stress_loss_cap and after_sl > before_sl:
        return (f"stress_loss_cap: a {limits.stress_move_pct}% gap against the worst-case position would lose "
                f"${after_sl.quantize(Decimal('0.01'))} > ${limits.stress_loss_cap}")
    return None
