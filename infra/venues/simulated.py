"""The simulated venue: one matching engine for backtest, paper and paper on live data, so a
backtest and a paper run on the same data fill the same orders at the same prices.

- :class:`SimulatedVenue` implements :class:`domain.ports.ExecutionVenue` over
  :class:`infra.paper_broker.PaperBroker` (fill model: docs/strategies/grid-and-hedge.md, "Replay
  model"), thread-safe behind one lock so that the emergency flatten can use it without the actors,
  mirrored in the state store (its small state whole, its fills and order ids appended).
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from domain.messages import BrokerSnapshot, Fill, OrderIntent, PositionSnapshot, QuoteTick, TradeTick
from infra.paper_broker import PaperBroker


class SimulatedVenue:
    """:class:`domain.ports.ExecutionVenue` over a :class:`PaperBroker`, mirrored in the state store.

    Both the broker actor and the emergency flatten (which must not depend on actors) use it, so
    every call holds one lock. Ticks at or before the last processed one (key: ts_ns, instrument,
    seq; the replay's merge order) are ignored, so a replay that resumes slightly behind the venue
    never fills an order twice.

    Args:
        store: the :class:`domain.ports.StateStore`, or None (backtest: nothing mirrored).
        slippage_ticks: market and stop orders fill this many ticks worse than the trigger print.
        slippage_by_tag: ``{purpose text: ticks}`` overriding ``slippage_ticks`` per order
            (:class:`PaperBroker`).
        fill_on_touch: a limit fills when touched (True) or only when traded through (False).
        writer: the :class:`infra.persistence.WriteBehind` for the once-a-minute clock record.
        max_price_age_s: a last print older than this (event time, seconds) never decides whether
            an arriving order is marketable (:class:`PaperBroker`); None = no limit.
        partial_fills: a fill on a print is at most the print's size, contracts (:class:`PaperBroker`,
            ``runtime.partial_fills``); False (default): whole fills. A restored venue keeps its own.
    """

    BLOB = "paper_broker"
    CLOCK_BLOB = "paper_broker_clock"
    matches_ticks = True

    def __init__(self, store: Any | None, slippage_ticks: int = 1, fill_on_touch: bool = False,
                 writer: Any | None = None, max_price_age_s: float | None = None,
                 slippage_by_tag: dict[str, int] | None = None, partial_fills: bool = False) -> None:
        self.store = store
        self.writer = writer
        self.lock = threading.RLock()
        saved = store.load_blob(self.BLOB) if store is not None else None
        if saved:
            fills, seen = store.load_blob_history(self.BLOB)
            self.broker = PaperBroker.restore(saved["broker"], fills, seen)
            self.last_ts = int(saved.get("last_ts", 0))
            self.last_key = tuple(saved["last_key"]) if saved.get("last_key") else None
            clock = store.load_blob(self.CLOCK_BLOB) or {}
            if clock.get("last_key") and (self.last_key is None or tuple(clock["last_key"]) > self.last_key):
                # ticks without fills after the last full save: how far matching got, last prices
                self.last_key, self.last_ts = tuple(clock["last_key"]), int(clock["last_ts"])
                self.broker.set_last_prices({k: Decimal(v) for k, v in clock.get("last", {}).items()},
                                            {k: int(v) for k, v in clock.get("last_times", {}).items()})
        else:
            self.broker = PaperBroker(slippage_ticks=slippage_ticks, fill_on_touch=fill_on_touch,
                                      slippage_by_tag=slippage_by_tag, partial_fills=partial_fills,
                                      max_price_age_ns=None if max_price_age_s is None
                                      else int(max_price_age_s * 1_000_000_000))
            self.last_ts = 0
            self.last_key: tuple | None = None
        self._saved_minute = -1
        # a snapshot that holds its fills inline has them re-written to the log at the first save
        self._saved_history = (0, 0) if saved and "fills" in saved["broker"] else self.broker.history_counts()

    def start(self) -> None:
        """Nothing to connect."""

    def connected(self, timeout_s: float) -> bool:
        """Always connected: the venue is in this process."""
        return True

    def stop(self) -> None:
        """Nothing to disconnect."""

    def set_event_sink(self, sink: Any) -> None:
        """The simulated venue answers every call synchronously; it has no asynchronous events."""

    def _save(self) -> None:
        """Mirror the venue: its small state whole, its fills and order ids by what is new."""
        if self.store is not None:
            new_fills, new_seen = self.broker.history_since(*self._saved_history)
            self.store.save_blob_incremental(
                self.BLOB, {"broker": self.broker.snapshot(history=False), "last_ts": self.last_ts,
                            "last_key": list(self.last_key) if self.last_key else None}, new_fills, new_seen)
            self._saved_history = self.broker.history_counts()

    def submit(self, intent: OrderIntent, ts_ns: int) -> list:
        with self.lock:
            out = self.broker.submit(intent, ts_ns)
            self._save()
            return out

    def cancel(self, client_order_id: str, ts_ns: int, reason: str = "cancelled") -> list:
        with self.lock:
            out = self.broker.cancel(client_order_id, ts_ns, reason)
            if out:
                self._save()
            return out

    def modify(self, client_order_id: str, ts_ns: int, *, qty: int | None = None,
               limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> list:
        """:meth:`PaperBroker.modify` under the lock, mirrored when it changed something:
        ``[OrderModified]`` (plus a ``Fill`` if now marketable), or ``[]`` (refused or not working:
        the order stays as it was). Qty in contracts, prices in points, ``ts_ns`` epoch ns UTC."""
        with self.lock:
            out = self.broker.modify(client_order_id, ts_ns, qty=qty, limit_price=limit_price,
                                     stop_price=stop_price)
            if out:
                self._save()
            return out

    def on_tick(self, tick: TradeTick | QuoteTick) -> list:
        """Match resting orders against a print or quote. Ticks ordered at or before the last one
        processed (key: ts_ns, instrument, seq; the replay's merge order) are ignored."""
        key = (tick.ts_ns, tick.instrument, tick.seq)
        with self.lock:
            if self.last_key is not None and key <= self.last_key:
                return []
            self.last_key = key
            self.last_ts = tick.ts_ns
            fills = self.broker.on_trade(tick) if isinstance(tick, TradeTick) else self.broker.on_quote(tick)
            if fills:
                self._save()
            elif self.store is not None and (minute := tick.ts_ns // 60_000_000_000) != self._saved_minute:
                # once a minute, only the matching position and last prices (small): the full
                # snapshot (every fill of the session) is written when orders or fills change
                self._saved_minute = minute
                clock = {"last_ts": self.last_ts, "last_key": list(self.last_key),
                         "last": {k: str(v) for k, v in self.broker.last_prices().items()},
                         "last_times": self.broker.last_times()}
                write = lambda: self.store.save_blob(self.CLOCK_BLOB, clock)  # noqa: E731
                self.writer.put(self.CLOCK_BLOB, write) if self.writer is not None else write()
            return fills

    def open_orders(self) -> list[OrderIntent]:
        with self.lock:
            return self.broker.working_orders()

    def positions(self) -> dict[str, PositionSnapshot]:
        with self.lock:
            return self.broker.positions()

    def fills_since(self, ts_ns: int) -> list[Fill]:
        with self.lock:
            return [f for f in self.broker.fills() if f.ts_ns >= ts_ns]

    def snapshot(self, ts_ns: int) -> BrokerSnapshot:
        with self.lock:
            return self.broker.broker_snapshot(ts_ns)

    def flatten(self, ts_ns: int) -> list:
        """Emergency path: cancel everything and close every position at market, under the lock."""
        from domain.messages import OrderType, Side
        with self.lock:
            events = self.broker.cancel_all(ts_ns)
            for sym, pos in self.broker.positions().items():
                intent = OrderIntent(client_order_id=f"emergency-{sym}-{ts_ns}", strategy_id="emergency",
                                     instrument=sym, side=Side.for_qty(-pos.qty), qty=abs(pos.qty),
                                     order_type=OrderType.MARKET, ts_ns=ts_ns, reduce_only=True,
                                     purpose="emergency flatten")
                events += self.broker.submit(intent, ts_ns)
            self._save()
            return events
