"""A local ProjectX Gateway (TopstepX) sandbox: REST + SignalR hubs on 127.0.0.1 with recorded data.

    gw = SandboxGateway(SandboxConfig(data_dir=Path("data/demo"), speed=600.0))
    gw.start()                      # own asyncio loop in a daemon thread; returns once listening
    gw.base_url                     # "http://127.0.0.1:PORT": REST /api/..., hubs /hubs/user, /hubs/market
    ...
    gw.stop()

What it serves (details in the modules and ``docs/sandbox.md``): the REST API
(:mod:`infra.sandbox.rest`), the user and market hubs (:mod:`infra.sandbox.hubs`), a venue
(:mod:`infra.sandbox.exchange`) fed by a replay of recorded bars (:mod:`infra.sandbox.marketdata`),
fault injection (:mod:`infra.sandbox.faults`, ``gw.faults`` or ``POST /sandbox/faults``) and a small
control API under ``/sandbox`` (no auth, no rate limit, no faults):

- ``GET /sandbox/state``: clock, replay progress, connection counts;
- ``GET /sandbox/faults`` (what is armed) and ``POST /sandbox/faults`` ``{"fault": "<name>", ...args}``;
- ``POST /sandbox/advance`` ``{"ticks": n}``: manual mode only (below).

The clock (:class:`ReplayClock`) is the replay time, epoch ns UTC: it stands still at the first
streamed tick until the replay starts, which happens on the first successful market-hub
``SubscribeContractQuotes``/``SubscribeContractTrades``. Then tick ``k`` is written
``(ts_k - ts_0) / speed`` seconds after the start (late ticks are sent at once, none skipped),
and between ticks the clock flows with wall time x ``speed`` (never past the next pending tick).
``speed=inf``: ticks back to back (the loop still serves REST and sockets between ticks).
``speed=0``: **manual mode**, the replay never starts by itself and advances only through
:meth:`SandboxGateway.advance` (or ``POST /sandbox/advance``), for deterministic tests. After the
last tick the clock rests at the end of the last bar and ``replay_done`` is set.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import json
import math
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web
from loguru import logger

from domain.messages import TradeTick
from infra.sandbox.auth import RateLimiter, TokenStore
from infra.sandbox.contracts import SERIES_OF, ContractCatalog
from infra.sandbox.exchange import DEFAULT_ACCOUNTS, AccountSpec, Exchange
from infra.sandbox.faults import FAULT_NAMES, Faults
from infra.sandbox.hubprotocol import encode, invocation
from infra.sandbox.hubs import Hubs
from infra.sandbox.marketdata import MarketData, QuoteState
from infra.sandbox.rest import RestApi
from infra.sandbox.wire import dumps, iso

DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "demo"
"""The bundled recorded data (ES/NQ 2-minute bars, 2026-04-07..10)."""

_CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Settings of a :class:`SandboxGateway`.

    Attributes:
        data_dir: folder with ``ES_2min.csv.gz`` / ``NQ_2min.csv.gz``.
        speed: replay speed as a multiple of real time; ``float("inf")`` = as fast as possible;
            ``0`` = manual mode (only :meth:`SandboxGateway.advance` moves the replay).
        start: first trading day to stream (America/Chicago); None = the 2nd trading day in the
            data (the days before are history only).
        end: last trading day to stream (inclusive); None = to the end of the data.
        username, api_key: the credentials ``Auth/loginKey`` accepts.
        token_ttl_s: token lifetime, wall-clock seconds (gateway: 24 h).
        host, port: where to listen (port 0 = any free port).
        ping_interval_s: server Ping interval on the hubs, seconds (ASP.NET Core default 15).
        client_timeout_s: a hub connection silent for this long is closed (ASP.NET Core default 30).
        rate_limit: ``(requests, window seconds)`` for every REST path but retrieveBars (gateway: 200/60).
        bars_rate_limit: the same for ``History/retrieveBars`` (gateway: 50/30).
        wrap_events: user-event kinds (``order``, ``position``, ``trade``, ``account``) sent in an
            ``{action, data}`` envelope; default orders and positions, as observed live.
        accounts: the accounts served.
        answer_delay_s: every REST answer is written this long after the request was processed
            (0 = at once): a stand-in for the network between a client and the real gateway, whose
            round trip loopback lacks (``scripts/benchmark_gateway.py --answer-delay-ms``). Other
            requests are served meanwhile, as the real gateway's servers do.

    Raises ValueError (from the constructor) for a negative or NaN speed, a negative answer delay or
    non-positive intervals/limits.
    """

    data_dir: Path = DEMO_DATA
    speed: float = 600.0
    start: dt.date | None = None
    end: dt.date | None = None
    username: str = "sandbox"
    api_key: str = "sandbox-key"
    token_ttl_s: float = 86_400.0
    host: str = "127.0.0.1"
    port: int = 0
    ping_interval_s: float = 15.0
    client_timeout_s: float = 30.0
    rate_limit: tuple[int, float] = (200, 60.0)
    bars_rate_limit: tuple[int, float] = (50, 30.0)
    wrap_events: frozenset[str] = field(default_factory=lambda: frozenset({"order", "position"}))
    accounts: tuple[AccountSpec, ...] = DEFAULT_ACCOUNTS
    answer_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.answer_delay_s >= 0:
            raise ValueError(f"answer_delay_s must be >= 0, got {self.answer_delay_s}")
        if math.isnan(self.speed) or self.speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = manual, inf = as fast as possible), got {self.speed}")
        if self.ping_interval_s <= 0 or self.client_timeout_s <= 0 or self.token_ttl_s <= 0:
            raise ValueError("ping_interval_s, client_timeout_s and token_ttl_s must be > 0")
        for requests, window in (self.rate_limit, self.bars_rate_limit):
            if requests < 1 or window <= 0:
                raise ValueError("rate limits need requests >= 1 and a window > 0 s")
        unknown = set(self.wrap_events) - {"account", "order", "position", "trade"}
        if unknown:
            raise ValueError(f"unknown wrap_events {sorted(unknown)}")


class ReplayClock:
    """Sandbox time in epoch ns UTC (see the module docstring). Written by the replay on the loop
    thread, read from any thread.

    Args:
        first_tick_ns: time of the first streamed tick (the clock starts 1 ns before it).
        end_ns: end of the last streamed bar (the clock after the replay).
        speed: as :attr:`SandboxConfig.speed`.
    """

    def __init__(self, first_tick_ns: int, end_ns: int, speed: float) -> None:
        self._realtime = 0 < speed < math.inf
        self._speed = speed
        self._emitted = first_tick_ns - 1
        self._next = first_tick_ns
        self._end_ns = end_ns
        self._anchor: tuple[int, int] | None = None  # (data ns, perf_counter ns) at the replay start
        self._done = False

    def start(self) -> None:
        """The replay starts now (anchors real-time pacing)."""
        if self._realtime:
            self._anchor = (self._next, time.perf_counter_ns())

    def now_ns(self) -> int:
        """The current sandbox time."""
        if self._done:
            return self._end_ns
        if self._anchor is None:
            return self._emitted
        data0, perf0 = self._anchor
        flowing = data0 + int((time.perf_counter_ns() - perf0) * self._speed)
        return max(self._emitted, min(flowing, self._next - 1))

    def due_in_s(self, ts_ns: int) -> float:
        """Record ``ts_ns`` as the next pending tick; seconds to wait before emitting it (0 unless real-time)."""
        self._next = ts_ns
        if self._anchor is None:
            return 0.0
        data0, perf0 = self._anchor
        due = perf0 + (ts_ns - data0) / self._speed
        return max(0.0, (due - time.perf_counter_ns()) / 1e9)

    def emitted(self, ts_ns: int) -> None:
        """A tick at ``ts_ns`` has been processed."""
        self._emitted = ts_ns

    def finish(self) -> None:
        """The replay is over: the clock rests at the end of the data."""
        self._done = True


class _HubActions:
    """The connection faults, run on the gateway loop from another thread (blocking until done)."""

    def __init__(self, gateway: "SandboxGateway") -> None:
        self._gw = gateway

    def drop_connections(self, hub: str | None) -> None:
        logger.warning("sandbox fault: dropping {} hub connections", hub or "all")
        self._gw._call(lambda: self._gw._abort(hub))

    def expire_tokens(self) -> None:
        logger.warning("sandbox fault: expiring every token")
        self._gw._tokens.expire_all()
        self._gw._call(lambda: self._gw._hubs.close_all(error="Authentication token expired.", allow_reconnect=True))

    def logout(self) -> None:
        logger.warning("sandbox fault: GatewayLogout and closing hub connections")
        self._gw._call(lambda: self._gw._hubs.close_all(
            error="Logged out by the server.", allow_reconnect=True,
            before_user=(encode(invocation("GatewayLogout", [])),)))


class SandboxGateway:
    """The sandbox gateway (see the module docstring).

    Attributes:
        config: the settings.
        base_url: ``http://HOST:PORT`` once started.
        faults: :class:`infra.sandbox.faults.Faults`, thread-safe.
        orders_received: ``(time.perf_counter_ns() at arrival, request body dict)`` of every
            ``/api/Order/place`` call, in arrival order (including refused ones).
        requests_received: ``collections.Counter`` of every ``/api`` request by path
            (``"Order/place"``, ``"Order/cancel"``...), refused ones included.
        quote_sent_ns: ``(contractId, data timestamp ns UTC) -> time.perf_counter_ns()`` when the
            first GatewayQuote/GatewayTrade with that timestamp was written to a market-hub socket.
        replay_done: set when the replay has reached the end of the data.

    Raises (constructor): FileNotFoundError / ValueError for unusable data (see
    :class:`infra.sandbox.marketdata.MarketData`).
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._market = MarketData(config.data_dir, config.start, config.end)
        self._catalog = ContractCatalog(self._market.start_day, self._market.series)
        self._clock = ReplayClock(self._market.first_tick_ns, self._market.end_ns, config.speed)
        self._exchange = Exchange(self._catalog, self._clock.now_ns, config.accounts)
        self._tokens = TokenStore(config.username, config.token_ttl_s)
        self._quotes = {s: QuoteState(self._market.prior_close(s), self._catalog.streamed(s)[0].tick_size)
                        for s in self._market.series}
        self._ticks = self._market.ticks()
        self.faults = Faults(_HubActions(self))
        self.orders_received: list[tuple[int, dict[str, Any]]] = []
        self.requests_received: Counter[str] = Counter()
        self.quote_sent_ns: dict[tuple[str, int], int] = {}
        self.replay_done = threading.Event()
        self.base_url = ""
        self._hubs = Hubs(tokens=self._tokens, faults=self.faults, catalog=self._catalog,
                          account_ids={a.id for a in config.accounts}, wrap=frozenset(config.wrap_events),
                          ping_interval_s=config.ping_interval_s, client_timeout_s=config.client_timeout_s,
                          quote_sent_ns=self.quote_sent_ns, on_market_subscribe=self._start_replay)
        self._rest = RestApi(username=config.username, api_key=config.api_key, tokens=self._tokens,
                             limits=(RateLimiter(*config.rate_limit), RateLimiter(*config.bars_rate_limit)),
                             faults=self.faults, exchange=self._exchange, market=self._market, catalog=self._catalog,
                             clock=self._clock.now_ns, hubs=self._hubs, orders_received=self.orders_received,
                             requests_received=self.requests_received, answer_delay_s=config.answer_delay_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._replay_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start listening (in a daemon thread with its own event loop); returns once listening.

        Raises RuntimeError if already started, OSError if the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("sandbox gateway already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="sandbox-gateway", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        logger.info("sandbox gateway listening on {} (data {} .. {}, speed {})", self.base_url,
                    self._market.start_day, self._market.end_day, self.config.speed)

    async def _startup(self) -> None:
        app = web.Application()
        app.router.add_routes(self._rest.routes())
        app.router.add_routes([
            web.post("/hubs/{hub:user|market}/negotiate", self._hubs.negotiate),
            web.get("/hubs/{hub:user|market}", self._hubs.connect),
            web.get("/sandbox/state", self._state),
            web.get("/sandbox/faults", self._faults_state),
            web.post("/sandbox/faults", self._arm_fault),
            web.post("/sandbox/advance", self._advance_route),
        ])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"

    def stop(self) -> None:
        """Close every connection and stop listening. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=_CALL_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_CALL_TIMEOUT_S)
        self._thread = None
        logger.info("sandbox gateway stopped")

    async def _shutdown(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
        self._hubs.abort_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def _call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``make()`` on the gateway loop from another thread and return its result."""
        if self._loop is None:
            raise RuntimeError("sandbox gateway not started")
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking sandbox call from the gateway's own loop")
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout=_CALL_TIMEOUT_S)

    async def _abort(self, hub: str | None) -> None:
        self._hubs.abort_all(hub)

    # ------------------------------------------------------------------ manual market (tests)

    def print_trade(self, instrument: str, price: Any, size: int = 1, seq: int = 0, *,
                    drop_user_hub: bool = False) -> int:
        """Make the exchange trade ``size`` contracts of ``instrument`` at ``price`` (points) now,
        1 ms after the sandbox clock, and push the user events of the fills, as one replayed tick
        does (only the market hub's quote is not sent). For tests that need a chosen print.

        ``drop_user_hub``: first abort the user hub's sockets, in the same turn of the gateway's
        loop, so the fill is surely made while no client is subscribed (a client reconnects at
        once after a plain drop). Returns the print's time, epoch ns UTC."""
        ts = (self.now_ns() // 1000 + 1000) * 1000

        async def emit() -> None:
            if drop_user_hub:
                self._hubs.abort_all("user")
            self._clock.emitted(ts)
            self._hubs.publish_user(self._exchange.on_trade(TradeTick(instrument, ts, price, size, seq)))
        self._call(emit)
        return ts

    def publish_user_event(self, account_id: int, kind: str, data: dict[str, Any], action: Any,
                           clock_ns: int | None = None) -> None:
        """Push one user-hub event (``GatewayUserOrder`` / ``...Trade`` / ``...Position`` payload
        ``data``) to the account's subscribers, first moving the sandbox clock to ``clock_ns`` when
        given. For tests of duplicate and out-of-order delivery."""
        from infra.sandbox.exchange import UserEvent

        async def emit() -> None:
            if clock_ns is not None:
                self._clock.emitted(clock_ns)
            self._hubs.publish_user([UserEvent(account_id, kind, data, action)])
        self._call(emit)

    # ------------------------------------------------------------------ replay

    def _start_replay(self) -> None:
        if self._replay_task is None and self.config.speed > 0:
            self._clock.start()
            self._replay_task = asyncio.get_running_loop().create_task(self._replay())
            self._replay_task.add_done_callback(self._replay_ended)
            logger.info("sandbox replay started at {} (speed {})", iso(self._clock.now_ns()), self.config.speed)

    async def _replay(self) -> None:
        for tick in self._ticks:
            await asyncio.sleep(self._clock.due_in_s(tick.ts_ns))
            self._emit(tick)
        self._finish()

    @staticmethod
    def _replay_ended(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("sandbox replay failed")

    def _emit(self, tick: TradeTick) -> None:
        """One replayed tick: fills and user events first, then quotes and trades."""
        self._clock.emitted(tick.ts_ns)
        series = SERIES_OF[tick.instrument]
        state = self._quotes[series]
        state.update(tick)
        contracts = self._catalog.streamed(series)
        for c in contracts:
            self._hubs.publish_user(self._exchange.on_trade(
                TradeTick(c.instrument, tick.ts_ns, tick.price, tick.size, tick.seq)))
        for c in contracts:
            self._hubs.publish_market(c.id, tick.ts_ns, state.quote(c.symbol_id, c.name, tick.ts_ns),
                                      [state.trade(c.symbol_id, c.id, tick)])

    def _finish(self) -> None:
        self._clock.finish()
        self.replay_done.set()
        logger.info("sandbox replay reached the end of the data ({})", iso(self._clock.now_ns()))

    async def _advance(self, ticks: int) -> int:
        count = 0
        for tick in itertools.islice(self._ticks, ticks):
            self._clock.due_in_s(tick.ts_ns)
            self._emit(tick)
            count += 1
        if count < ticks and not self.replay_done.is_set():
            self._finish()
        return count

    def advance(self, ticks: int = 1) -> int:
        """Manual mode (``speed=0``): replay the next ``ticks`` ticks now (all series merged; fills,
        user events and market events are processed and queued before this returns).

        Returns the number of ticks replayed (fewer at the end of the data, then ``replay_done`` is set).
        Raises RuntimeError if not in manual mode or not started; ValueError if ``ticks < 1``.
        """
        if self.config.speed != 0:
            raise RuntimeError("advance() is for manual mode (speed=0)")
        if ticks < 1:
            raise ValueError("ticks must be >= 1")
        return self._call(lambda: self._advance(ticks))

    # ------------------------------------------------------------------ inspection

    def now_ns(self) -> int:
        """The sandbox clock (replay time), epoch ns UTC."""
        return self._clock.now_ns()

    def account(self, account_id: int) -> dict[str, Any]:
        """The ``TradingAccount`` (balance Decimal dollars). Raises GatewayError for an unknown id."""
        return self._exchange.account(account_id)

    def positions(self, account_id: int) -> list[dict[str, Any]]:
        """Open ``Position`` rows (Decimal prices)."""
        return self._exchange.positions(account_id)

    def open_orders(self, account_id: int) -> list[dict[str, Any]]:
        """Working ``Order`` rows: Open *and* Suspended (bracket legs), unlike ``Order/searchOpen``."""
        return self._exchange.working_orders(account_id)

    def orders(self, account_id: int) -> list[dict[str, Any]]:
        """Every ``Order`` row of the account (any status), oldest first."""
        return self._exchange.orders(account_id)

    def trades(self, account_id: int) -> list[dict[str, Any]]:
        """Every ``HalfTrade`` of the account, oldest first (Decimal money)."""
        return self._exchange.trades(account_id)

    # ------------------------------------------------------------------ /sandbox control API

    async def _state(self, _request: web.Request) -> web.Response:
        counts = {hub: sum(1 for c in self._hubs.connections.values() if c.hub == hub) for hub in ("user", "market")}
        speed = self.config.speed
        body = {"now": iso(self._clock.now_ns()), "speed": "max" if math.isinf(speed) else speed,
                "startDay": self._market.start_day.isoformat(), "endDay": self._market.end_day.isoformat(),
                "replayStarted": self._replay_task is not None, "replayDone": self.replay_done.is_set(),
                "connections": counts}
        return web.Response(text=dumps(body), content_type="application/json")

    async def _faults_state(self, _request: web.Request) -> web.Response:
        return web.json_response(self.faults.state())

    async def _arm_fault(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("fault") not in FAULT_NAMES:
            return web.json_response({"error": f"expected {{\"fault\": one of {list(FAULT_NAMES)}, ...arguments}}"},
                                     status=400)
        name = body.pop("fault")
        try:
            arm = functools.partial(getattr(self.faults, name), **body)
            await asyncio.get_running_loop().run_in_executor(None, arm)  # connection faults block
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        logger.warning("sandbox fault armed over REST: {} {}", name, body)
        return web.json_response({"ok": True, "armed": self.faults.state()})

    async def _advance_route(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        ticks = body.get("ticks", 1) if isinstance(body, dict) else None
        if self.config.speed != 0 or not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 1:
            return web.json_response({"error": "manual mode (speed 0) only, body {\"ticks\": n >= 1}"}, status=400)
        return web.json_response({"replayed": await self._advance(ticks), "now": iso(self._clock.now_ns())})
