"""Positions and P&L as a fold over fills, exact to the cent.

Open lots are kept FIFO in integer ticks, so realized and unrealized P&L are integer ticks x tick
value (Decimal): no float drift, no rounding of average prices. FIFO matching is how futures
clearing (and the Topstep statement) computes realized P&L; the average entry price reported is
for display only.

A fill whose ``trade_id`` was already applied is ignored (``apply_fill`` returns None).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Mapping

from domain.instruments import InstrumentSpec, get_instrument
from domain.messages import Fill

_TICKS_KEPT = 16384
"""Marks a :class:`Position` keeps converted to ticks (a price -> ticks cache, cleared when full):
4,096 points of NQ at 0.25, near its whole range over the bundled 28 sessions (22,961.50 to
27,542.50), so a replay converts most prices once."""


@dataclass(frozen=True, slots=True)
class FillEffect:
    """What one fill did: realized P&L (dollars, before fees), fee (dollars), and whether it
    closed (reduced) any existing position (a closed trade for the consecutive-loss count)."""

    instrument: str
    realized: Decimal
    fee: Decimal
    closed: bool
    position: int  # signed contracts after the fill


class Position:
    """Net position in one instrument. ``qty`` signed contracts (+ long)."""

    __slots__ = ("spec", "lots", "realized", "fees", "_qty", "_cost", "_marked", "_ticks", "_tick_cents")

    def __init__(self, spec: InstrumentSpec) -> None:
        self.spec = spec
        self.lots: deque[list[int]] = deque()  # [price_ticks, signed_qty], all lots share one sign
        self.realized = Decimal(0)
        self.fees = Decimal(0)
        self._qty = 0  # sum of the lots' signed qty, kept by apply (read on every print)
        self._cost = 0  # sum of price_ticks * signed_qty over the lots
        self._marked: tuple[Decimal, Decimal] | None = None  # (mark, unrealized at it) until a fill
        self._ticks: dict[Decimal, int] = {}  # mark -> ticks: a replay marks the same prices again and again
        cents = spec.tick_value * 100
        self._tick_cents = int(cents) if cents == cents.to_integral_value() else None  # one tick, cents

    @property
    def qty(self) -> int:
        return self._qty

    @property
    def avg_price(self) -> Decimal | None:
        """Average entry price in points (display only; may be a non-tick value)."""
        q = self.qty
        if q == 0:
            return None
        return self.spec.tick_size * Decimal(sum(p * lq for p, lq in self.lots)) / q

    def apply(self, side_sign: int, qty: int, price: Decimal, fee: Decimal) -> tuple[Decimal, bool]:
        """Apply a fill of ``qty`` contracts in direction ``side_sign`` at ``price``.

        Returns (realized dollars before fees, closed_any). Raises ValueError for an off-tick price.
        """
        ticks = self.spec.to_ticks(price)
        remaining = qty * side_sign
        realized_ticks = 0
        closed = False
        while remaining and self.lots and (self.lots[0][1] > 0) != (remaining > 0):
            lot = self.lots[0]
            matched = min(abs(lot[1]), abs(remaining))
            lot_sign = 1 if lot[1] > 0 else -1
            realized_ticks += (ticks - lot[0]) * matched * lot_sign
            lot[1] -= matched * lot_sign
            remaining += matched * lot_sign
            closed = True
            if lot[1] == 0:
                self.lots.popleft()
        if remaining:
            self.lots.append([ticks, remaining])
        self._totals()
        realized = Decimal(realized_ticks) * self.spec.tick_value
        self.realized += realized
        self.fees += fee
        return realized, closed

    def unrealized(self, mark: Decimal) -> Decimal:
        """Open P&L in dollars at ``mark`` (points)."""
        marked = self._marked
        if marked is not None and marked[0] is mark:  # the other instrument's print moved the account
            return marked[1]
        ticks = self._ticks.get(mark)
        if ticks is None:
            ticks = self._convert(mark)
        value = Decimal(ticks * self._qty - self._cost) * self.spec.tick_value
        self._marked = (mark, value)
        return value

    def unrealized_cents(self, mark: Decimal) -> int | None:
        """:meth:`unrealized` in integer cents (exact), or None when the instrument's tick value
        is not a whole number of cents."""
        tc = self._tick_cents
        if tc is None:
            return None
        ticks = self._ticks.get(mark)
        if ticks is None:
            ticks = self._convert(mark)
        return (ticks * self._qty - self._cost) * tc

    def _convert(self, mark: Decimal) -> int:
        """``mark`` (points) in ticks, kept in the price -> ticks cache (:data:`_TICKS_KEPT`).
        Raises ValueError for an off-tick price."""
        if len(self._ticks) >= _TICKS_KEPT:
            self._ticks.clear()
        ticks = self._ticks[mark] = self.spec.to_ticks(mark)
        return ticks

    def _totals(self) -> None:
        self._marked = None
        self._qty = sum(q for _, q in self.lots)
        self._cost = sum(p * q for p, q in self.lots)

    def to_dict(self) -> dict:
        """JSON-safe snapshot (exact)."""
        return {"lots": [list(l) for l in self.lots], "realized": str(self.realized), "fees": str(self.fees),
                "qty": self.qty, "avg_price": str(self.avg_price) if self.avg_price is not None else ""}

    @classmethod
    def from_dict(cls, spec: InstrumentSpec, d: Mapping) -> "Position":
        p = cls(spec)
        p.lots = deque([int(a), int(b)] for a, b in d.get("lots", []))
        p._totals()
        p.realized = Decimal(d.get("realized", "0"))
        p.fees = Decimal(d.get("fees", "0"))
        return p


class Portfolio:
    """All positions of one account; the fold over fills with trade-id de-duplication."""

    SEEN_KEPT = 5000
    """Trade ids a snapshot keeps (the latest by arrival); older ones are summarized by
    ``seen_floor_ns``."""

    def __init__(self) -> None:
        self.positions: dict[str, Position] = {}
        self.seen_trade_ids: dict[str, int] = {}  # trade id -> fill ts_ns, in the order applied
        self.seen_floor_ns = 0  # every fill at or before this time was applied (ids not kept)

    def position(self, instrument: str) -> Position:
        pos = self.positions.get(instrument)
        if pos is None:
            pos = self.positions[instrument] = Position(get_instrument(instrument))
        return pos

    def qty(self, instrument: str) -> int:
        pos = self.positions.get(instrument)
        return pos.qty if pos else 0

    def net_positions(self) -> dict[str, int]:
        """Signed contracts per instrument, flat ones omitted."""
        return {k: p.qty for k, p in self.positions.items() if p.qty}

    def apply_fill(self, fill: Fill) -> FillEffect | None:
        """Fold one fill in. Returns None for a duplicate ``trade_id``."""
        if fill.trade_id in self.seen_trade_ids:
            return None
        self.seen_trade_ids[fill.trade_id] = fill.ts_ns
        pos = self.position(fill.instrument)
        realized, closed = pos.apply(fill.side.sign, fill.qty, fill.price, fill.fee)
        return FillEffect(fill.instrument, realized, fill.fee, closed, pos.qty)

    def apply_fills(self, fills: Iterable[Fill]) -> list[FillEffect]:
        return [e for e in (self.apply_fill(f) for f in fills) if e is not None]

    def unrealized(self, marks: Mapping[str, Decimal]) -> Decimal:
        """Open P&L over all positions, dollars; positions without a mark count 0."""
        total = Decimal(0)
        for sym, pos in self.positions.items():
            if pos.lots and sym in marks:
                total += pos.unrealized(marks[sym])
        return total

    @property
    def realized(self) -> Decimal:
        return sum((p.realized for p in self.positions.values()), Decimal(0))

    @property
    def fees(self) -> Decimal:
        return sum((p.fees for p in self.positions.values()), Decimal(0))

    @property
    def fills_applied(self) -> int:
        """Fills folded in since this portfolio (or the snapshot it came from) began keeping ids."""
        return len(self.seen_trade_ids)

    def to_dict(self, kept: int | None = None) -> dict:
        """JSON-safe snapshot: positions, the latest ``kept`` (default :attr:`SEEN_KEPT`) applied
        trade ids with their fill times (``seen``: ``[[trade_id, ts_ns], ...]`` in the order applied)
        and ``seen_floor_ns``: the newest fill time among ids left out (0 if none). A reader may
        treat every fill at or before ``seen_floor_ns`` as applied (fills arrive in time order)."""
        items = list(self.seen_trade_ids.items())
        floor = self.seen_floor_ns
        n = self.SEEN_KEPT if kept is None else kept
        if len(items) > n:
            dropped, items = items[:-n], items[-n:]
            floor = max([floor] + [ts for _, ts in dropped])
        return {"positions": {k: p.to_dict() for k, p in self.positions.items()},
                "seen": [[t, ts] for t, ts in items], "seen_floor_ns": floor}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Portfolio":
        pf = cls()
        for sym, pd in d.get("positions", {}).items():
            pf.positions[sym] = Position.from_dict(get_instrument(sym), pd)
        pf.seen_trade_ids = {t: int(ts) for t, ts in (x if isinstance(x, list) else (x, 0) for x in d.get("seen", []))}
        pf.seen_floor_ns = int(d.get("seen_floor_ns", 0))
        return pf
