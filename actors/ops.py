"""The operator's desk: the commands an operator may give a running node and the status it shows.

Commands (docs/operations.md): ``pause`` (risk REDUCING: no new positions; working exits stay),
``resume``, ``flatten`` (cancel everything, close every position at market), ``report`` (write
the daily report of the current trading day so far), and in live mode ``arm`` / ``disarm``
(README, "Arming").

Daily reports (:mod:`infra.daily_report`): :meth:`OpsDesk.report_closed_days` (each heartbeat)
writes ``{run_dir}/reports/daily/<day>.html`` for every trading day risk has closed and sends its
one-line summary to Slack (the node's alerter); :meth:`OpsDesk.report_day` does one day (on demand, and
for the last day at shutdown). They arrive over the ops HTTP API
(:mod:`infra.ops_api`, bearer token) or from Redis (``RPUSH {ns}:ops:commands "pause alice"``,
read once a heartbeat), and each is journalled in the ``{ns}:events`` stream as an
:class:`domain.messages.OperatorCommand` with who, where from and what happened.

:meth:`OpsDesk.status` is the JSON the panel and ``GET /ops/status`` show: mode, account, armed,
risk state and holds, positions, working orders, day P&L, MLL headroom, Combine progress and each
strategy's counters, read from the actors themselves (money as strings of dollars, exact).
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from loguru import logger

from actors.core import ask
from domain.calendar import flat_deadline, ns_to_ct, trading_day
from domain.handler import RISK
from domain.messages import Alert, Fill, Flatten, OperatorCommand, Pause, Resume
from domain.ports import COMMANDS, CommandRefused
from domain.risk_rules import mini_equivalents

CHART_POINTS = 1500
"""Last prices kept per instrument for the panel's chart (one sample a heartbeat, by event time)."""


class OpsDesk:
    """Operator commands and status for one :class:`actors.node.Node` (thread-safe: every action
    is a message to an actor or a query answered in the actor's thread): the
    :class:`domain.ports.OperatorDesk` port.

    Args:
        node: the running node (its directory, store, mode spec, clock and arming).
    """

    def __init__(self, node: Any) -> None:
        self.node = node
        self._prices: dict[str, collections.deque] = {}
        self._lock = threading.Lock()
        self.reported: set[str] = set()  # trading days whose report was written after they closed
        self._report_lock = threading.Lock()

    def sample(self) -> None:
        """Record each instrument's last price at the current event time (the panel's chart);
        called once a heartbeat. A sample at an event time already recorded replaces it."""
        try:
            marks = self.node.risk_query(lambda r: {k: float(v) for k, v in r.marks.items()}, timeout=1)
        except Exception:  # noqa: BLE001 - a busy or restarting risk actor: skip this sample
            return
        t = self.node.now_ns() // 1_000_000_000
        with self._lock:
            for sym, price in marks.items():
                dq = self._prices.setdefault(sym, collections.deque(maxlen=CHART_POINTS))
                if dq and dq[-1][0] >= t:
                    dq.pop()
                dq.append((t, price))

    # ------------------------------------------------------------------ commands
    def command(self, name: str, who: str, source: str) -> str:
        """Carry out ``name`` for operator ``who`` (from ``source``: ``http`` / ``redis``); returns
        what was done. Raises :class:`CommandRefused` for an unknown command, or ``arm`` /
        ``disarm`` outside live mode. Every command carried out or refused is journalled."""
        node = self.node
        ts = node.now_ns()
        reason = f"operator {who} via {source}"
        try:
            if name not in COMMANDS:
                raise CommandRefused(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
            if name == "report":
                path, _line = self.report_day(None)
                result = f"report written: {path}"
            elif name in ("arm", "disarm"):
                if not node.spec.arming:
                    raise CommandRefused(f"{name}: {node.spec.name} mode sends no orders to a broker; "
                                         "arming applies to live mode only")
                node.set_armed(name == "arm", reason)
                result = "armed" if name == "arm" else "disarmed"
            else:
                msg = {"pause": Pause, "resume": Resume, "flatten": Flatten}[name](reason, ts)
                node.directory.tell(RISK, msg)
                result = {"pause": "risk REDUCING (no new positions)", "resume": "pause lifted",
                          "flatten": "flatten started"}[name]
        except CommandRefused as e:
            self._journal(name, who, source, f"refused: {e}", ts)
            raise
        logger.warning("ops: {} by {} via {}: {}", name, who, source, result)
        self._journal(name, who, source, result, ts)
        return result

    def _journal(self, name: str, who: str, source: str, result: str, ts: int) -> None:
        try:
            self.node.store.append_event(OperatorCommand(name, who, source, result, ts))
        except Exception as e:  # noqa: BLE001 - the command stands even if the journal write failed
            logger.error("ops: {} by {} not journalled: {}", name, who, e)

    def poll_redis(self) -> None:
        """Carry out the commands queued in ``{ns}:ops:commands`` (oldest first;
        :meth:`infra.state_store.StateStore.pop_ops_command`)."""
        while True:
            try:
                text = self.node.store.pop_ops_command()
            except Exception as e:  # noqa: BLE001 - Redis trouble must not stop the timer
                logger.warning("ops: cannot read the command queue: {}", e)
                return
            if text is None:
                return
            name, _, who = text.strip().partition(" ")
            try:
                self.command(name.lower(), who.strip() or "redis-cli", "redis")
            except CommandRefused as e:
                logger.error("ops: {} from Redis refused: {}", text, e)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """The node's state as JSON-safe values (module docstring); raises ``pykka`` errors /
        ``TimeoutError`` if an actor does not answer within 2 s."""
        node = self.node
        risk = node.risk_query(_risk_view, timeout=2)
        strategies = {}
        for e in node.entries:
            try:
                stats = ask(node.directory, e.name, lambda h: h.stats(), 2)
            except Exception as exc:  # noqa: BLE001 - a restarting strategy shows as such
                stats = {"error": type(exc).__name__}
            strategies[e.name] = {"kind": e.kind, "instruments": list(e.instruments), "stats": stats}
        now = node.now_ns()
        gateway = getattr(node, "gateway", None)
        account = getattr(gateway, "account", None)
        journal = self._journal_tail()
        status = {"mode": node.spec.name, "namespace": node.cfg.runtime.namespace, "profile": node.cfg.profile.name,
                  "broker_account": {"id": account.id, "name": account.name} if account is not None else None,
                  "armed": node.armed.is_set() if node.spec.arming else None,
                  "event_time": ns_to_ct(now).isoformat(), "wall_time": time.time(),
                  "flat_deadline": flat_deadline(trading_day(now)).isoformat(),
                  "data_done": node.data_done.is_set(), **risk, "strategies": strategies}
        status["rules"] = _rules(status, node, now)
        status["actions"] = sorted(risk["risk"]["breaches"] + journal["commands"], key=lambda a: a["time"])[-20:]
        with self._lock:
            status["chart"] = {"prices": {k: list(v) for k, v in self._prices.items()}, "fills": journal["fills"]}
        return status

    # ------------------------------------------------------------------ daily reports
    def report_closed_days(self) -> None:
        """Write the report of every trading day risk has closed and that has none yet (each
        heartbeat; a fast replay can close several days between two). Errors are logged."""
        try:
            days = self.node.risk_query(lambda r: [d for d, _p, _n in r.day_history], timeout=2)
        except Exception:  # noqa: BLE001 - risk busy or restarting: next heartbeat
            return
        for day in days:
            if day not in self.reported:
                try:
                    self.report_day(day, alert=True)
                except Exception as e:  # noqa: BLE001 - a report must never stop the node
                    logger.error("daily report of {} not written: {}", day, e)
                self.reported.add(day)

    def report_day(self, day: str | None, alert: bool = False) -> tuple[Any, str]:
        """Write the daily report of ``day`` (ISO; None = the current trading day so far); with
        ``alert`` its summary line goes to the watchdog (Slack). Returns ``(path, summary line)``.
        Raises OSError if the report folder is not writable."""
        from infra.daily_report import bars_from_samples, write_daily_report
        from infra.reporting import _load_bars
        node = self.node
        with self._report_lock:
            status = self.status()
            day = day or status["days"][-1]["day"]
            rows = node.trade_log.records() if node.trade_log is not None else []
            instruments = sorted({r.fill.instrument for r in rows if r.trading_day == day}) or list(node.instruments)
            if node.spec.data == "replay":
                bars, note = _load_bars(node.cfg, instruments, [day])
            else:
                with self._lock:
                    samples = {k: list(v) for k, v in self._prices.items()}
                bars = {s: bars_from_samples(s, samples.get(s, ())) for s in instruments}
                note = "prices: the node's last-price samples, one a heartbeat (1-minute bars of them)"
            out_dir = Path(node.cfg.runtime.run_dir) / "reports" / "daily"
            path, line = write_daily_report(day, status, rows, bars, out_dir, [e.name for e in node.entries], note)
        logger.info("daily report: {}", line)
        if alert and node.alerter is not None:  # straight to Slack (thread-safe): also at shutdown
            node.alerter.send(Alert("info", "daily-report", line, _day_end_ns(day)))
        return path, line

    def _journal_tail(self) -> dict[str, list]:
        """The last fills and operator commands of the ``{ns}:events`` stream (the panel's chart
        markers and action list)."""
        fills: list[dict] = []
        commands: list[dict] = []
        try:
            events = self.node.store.read_events(500)
        except Exception:  # noqa: BLE001 - Redis trouble: the panel shows no markers
            events = []
        for e in events:
            if isinstance(e, Fill):
                fills.append({"time": e.ts_ns // 1_000_000_000, "instrument": e.instrument, "side": e.side.value,
                              "qty": e.qty, "price": str(e.price), "client_order_id": e.client_order_id})
            elif isinstance(e, OperatorCommand):
                commands.append({"time": ns_to_ct(e.ts_ns).isoformat(), "what": f"operator {e.command}",
                                 "detail": f"{e.who} via {e.source}: {e.result}"})
        fills.sort(key=lambda f: f["time"])
        return {"fills": fills[-200:], "commands": commands}


def _rules(s: dict[str, Any], node: Any, now: int) -> list[dict[str, str]]:
    """The panel's checklist: ``{rule, status (ok / warn / breach), detail}``."""
    acct, lim = s["account"], s["limits"]
    state = s["risk"]["state"]
    out = [{"rule": "risk", "status": {"ACTIVE": "ok", "REDUCING": "warn"}.get(state, "breach"),
            "detail": "; ".join(h["reason"] for h in s["risk"]["holds"].values()) or state}]
    headroom, mll = Decimal(acct["mll_headroom"]), Decimal(lim["mll_amount"])
    out.append({"rule": "MLL", "status": "breach" if headroom <= 0 else "warn" if headroom < mll / 4 else "ok",
                "detail": f"${headroom:,} above the floor"})
    cap = acct["daily_loss_cap"]
    if cap is not None:
        used = -Decimal(acct["day_pnl"]) / Decimal(cap)
        out.append({"rule": "daily loss cap", "status": "breach" if used >= 1 else "warn" if used >= Decimal("0.8") else "ok",
                    "detail": f"{max(used, Decimal(0)):.0%} used"})
    can_open = s["can_open"]
    out.append({"rule": "hours", "status": "ok" if can_open else "warn",
                "detail": "inside the trading window" if can_open else "outside the trading window: no new positions"})
    out.append({"rule": "news filter", "status": "ok",
                "detail": "strategy blackouts (regime_vwap: high-impact times)"
                if any(e.kind == "regime_vwap" for e in node.entries) else "none configured"})
    contracts, most = Decimal(s["contracts"]), Decimal(lim["max_contracts_minis"])
    out.append({"rule": "scaling", "status": "breach" if contracts > most else "warn" if contracts == most else "ok",
                "detail": f"{contracts} of {most} minis"})
    try:
        connected = bool(node.venue.connected(0))
    except Exception:  # noqa: BLE001 - a venue that cannot say is not connected
        connected = False
    out.append({"rule": "connectivity", "status": "ok" if connected else "breach",
                "detail": f"{node.spec.venue} venue {'connected' if connected else 'NOT connected'}"})
    return out


def _day_end_ns(day: str) -> int:
    """15:10 CT of trading day ``day``: the event time a day's report alert carries."""
    from domain.calendar import dt_to_ns
    return dt_to_ns(flat_deadline(dt.date.fromisoformat(day)))


def _money(v: Decimal | None) -> str | None:
    return None if v is None else str(v.quantize(Decimal("0.01")))


def _risk_view(r: Any) -> dict[str, Any]:
    """Runs in the risk actor's thread: its state as JSON-safe values."""
    st = r.account_status()
    lim = r.limits
    target = lim.profit_target
    profit = st.equity - lim.starting_balance
    days = r.day_table()
    closed = [pnl for _, pnl, fills in days[:-1] if fills]
    expectancy = sum(closed) / len(closed) if closed else None
    eta = (None if target is None or expectancy is None or expectancy <= 0 or profit >= target
           else int(-(-(target - profit) // expectancy)))
    return {
        "limits": {"mll_amount": _money(lim.mll_amount), "daily_loss_cap": _money(lim.daily_loss_cap),
                   "trailing_kill_switch": _money(lim.trailing_kill_switch),
                   "net_exposure_cap": _money(lim.net_exposure_cap), "open_risk_cap": _money(lim.open_risk_cap),
                   "max_contracts_minis": str(lim.max_contracts_minis),
                   "consecutive_loss_limit": lim.consecutive_loss_limit},
        "eta_days": eta if profit < (target or 0) else 0 if target is not None else None,
        "marks": {k: str(v) for k, v in r.marks.items()},
        "contracts": str(mini_equivalents(dict(st.positions))),
        "day_fills": r.ledger.day_fills, "consecutive_losses": r.ledger.consecutive_losses,
        "can_open": r.calendar.can_open(r.now_ns),
        "flat_violations": [ns_to_ct(t).isoformat() for t in r.flat_violations],
        "max_contracts_seen": str(r.max_contracts_seen),
        "risk": {"state": st.state.value, "holds": {k: {"state": s.value, "reason": why}
                                                      for k, (s, why) in r.holds.items()},
                 "flattening": r.flattening or None,
                 "breaches": [{"time": ns_to_ct(ts).isoformat(), "what": rule, "detail": detail}
                              for ts, rule, detail in r.breaches[-20:]]},
        "account": {"balance": _money(st.balance), "equity": _money(st.equity), "unrealized": _money(st.unrealized),
                    "day_pnl": _money(st.day_pnl), "mll_floor": _money(st.mll_floor),
                    "mll_headroom": _money(st.headroom), "drawdown": _money(st.drawdown),
                    "daily_loss_cap": _money(lim.daily_loss_cap), "exposure_1atr": _money(st.exposure_1atr),
                    "profit_target": _money(target), "profit": _money(profit),
                    "target_progress": float(profit / target) if target else None},
        "positions": {sym: qty for sym, qty in st.positions},
        "working_orders": [{"client_order_id": o.intent.client_order_id, "strategy": o.intent.strategy_id,
                            "instrument": o.intent.instrument, "side": o.intent.side.value,
                            "qty": o.leaves_qty, "type": o.intent.order_type.value,
                            "price": str(o.intent.limit_price or o.intent.stop_price or "") or None,
                            "purpose": o.intent.purpose, "status": o.status.value} for o in r.book.working()],
        "days": [{"day": d, "net": _money(pnl), "fills": n} for d, pnl, n in days],
    }
