"""The sandbox's contract catalogue: gateway ``Contract`` records for the replayed instruments.

For each instrument (MES, MNQ, ES, NQ) whose recorded series is present, two contracts are
listed: the front month on the first replayed trading day (:func:`domain.instruments.front_month`,
``activeContract: true``, tradable, streamed) and the next quarterly (``activeContract: false``,
listed and searchable but without data; orders on it are refused as ContractNotActive).

Ids follow the observed gateway format ``CON.F.US.<root>.<month code><yy>`` with the ProjectX
roots (ES -> ``EP``, NQ -> ``ENQ``); ``name`` is the CME-style local symbol with a single-digit year
(``MESM6``); ``symbolId`` is ``F.US.<root>``. The recorded ES series drives MES and EP, NQ drives
MNQ and ENQ (same index, same 0.25 tick; only the dollar multiplier differs).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.instruments import INSTRUMENTS, MONTH_CODES, contract_code, front_month

MAX_SEARCH_RESULTS = 20
"""``Contract/search`` returns at most this many contracts (gateway documentation)."""

SERIES_OF: dict[str, str] = {"MES": "ES", "ES": "ES", "MNQ": "NQ", "NQ": "NQ"}
"""Instrument -> the recorded series (data file root) that prices it."""

_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")


@dataclass(frozen=True, slots=True)
class Contract:
    """One listed futures contract.

    Attributes:
        id: gateway contract id (``CON.F.US.MES.M26``).
        name: local symbol (``MESM6``).
        description: human text (``Micro E-mini S&P 500: June 2026``).
        instrument: our ticker (``MES``), key into :data:`domain.instruments.INSTRUMENTS`.
        series: recorded data root that prices it (``ES``).
        tick_size: points per tick; tick_value: dollars per tick per contract.
        active: True for the front month (the only streamed, tradable contract of the instrument).
        symbol_id: ``F.US.MES``.
        root: ProjectX symbol root (``MES``, ``EP``).
    """

    id: str
    name: str
    description: str
    instrument: str
    series: str
    tick_size: Decimal
    tick_value: Decimal
    active: bool
    symbol_id: str
    root: str

    def to_json(self) -> dict[str, Any]:
        """The gateway ``Contract`` model."""
        return {"id": self.id, "name": self.name, "description": self.description, "tickSize": self.tick_size,
                "tickValue": self.tick_value, "activeContract": self.active, "symbolId": self.symbol_id}


def _next_listed(symbol: str, year: int, month: int) -> tuple[int, int]:
    months = INSTRUMENTS[symbol].months
    for _ in range(24):
        year, month = (year, month + 1) if month < 12 else (year + 1, 1)
        if MONTH_CODES[month - 1] in months:
            return year, month
    raise AssertionError("unreachable: every instrument lists a month within two years")


def _contract(symbol: str, year: int, month: int, active: bool) -> Contract:
    spec = INSTRUMENTS[symbol]
    root = spec.projectx_root
    code = f"{MONTH_CODES[month - 1]}{year % 100:02d}"
    return Contract(id=f"CON.F.US.{root}.{code}", name=contract_code(symbol, year, month),
                    description=f"{spec.name}: {_MONTH_NAMES[month - 1]} {year}", instrument=symbol,
                    series=SERIES_OF[symbol], tick_size=spec.tick_size, tick_value=spec.tick_value,
                    active=active, symbol_id=f"F.US.{root}", root=root)


class ContractCatalog:
    """Contracts listed on trading day ``on`` for the instruments priced by ``series``.

    Args:
        on: the first replayed trading day (America/Chicago); fixes the front month.
        series: recorded data roots present (subset of ``{"ES", "NQ"}``).
    """

    def __init__(self, on: dt.date, series: set[str]) -> None:
        contracts: list[Contract] = []
        for symbol in ("MES", "MNQ", "ES", "NQ"):
            if SERIES_OF[symbol] not in series:
                continue
            year, month = front_month(symbol, on)
            contracts.append(_contract(symbol, year, month, active=True))
            contracts.append(_contract(symbol, *_next_listed(symbol, year, month), active=False))
        self._contracts = contracts
        self._by_id = {c.id: c for c in contracts}

    def all(self) -> list[Contract]:
        """Every listed contract (front months first per instrument)."""
        return list(self._contracts)

    def by_id(self, contract_id: Any) -> Contract | None:
        """The contract with this id, None if unknown (or not a string)."""
        return self._by_id.get(contract_id) if isinstance(contract_id, str) else None

    def streamed(self, series: str) -> list[Contract]:
        """The active contracts priced by recorded ``series`` (e.g. ES -> MES and EP front months)."""
        return [c for c in self._contracts if c.series == series and c.active]

    def search(self, text: str) -> list[Contract]:
        """Case-insensitive substring match of ``text`` against name, symbol root, our ticker and
        description; at most :data:`MAX_SEARCH_RESULTS`, active contracts first. Empty text
        matches everything."""
        needle = text.strip().upper()
        hits = [c for c in self._contracts
                if not needle or any(needle in f.upper() for f in (c.name, c.root, c.instrument, c.description))]
        hits.sort(key=lambda c: not c.active)
        return hits[:MAX_SEARCH_RESULTS]
