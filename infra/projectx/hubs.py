"""ProjectX SignalR hubs (market data and user events) on signalrcore, with our own reconnect loop.

Why not signalrcore's ``with_automatic_reconnect``: it reconnects to the URL it was built with, and
the token travels in that URL (``?access_token=``, skip-negotiation mode,
docs/reference/projectx-gateway.md#authentication), so every reconnect after the 24 h token expiry
would fail; and its ``on_close`` does not always fire
(docs/reference/projectx-gateway.md#connection-and-reconnects). So each hub runs one supervisor thread that:

- builds a **fresh** connection for every (re)connect, with the **current** token from
  ``token_provider`` (forcing a refresh after a 401 handshake, a ``GatewayLogout`` or repeated
  failures), waits for the SignalR handshake, then **re-subscribes everything** (subscriptions do not
  survive a reconnect, docs/reference/projectx-gateway.md#connection-and-reconnects);
- sends a keep-alive ping every ``keepalive_s`` (signalrcore only pings when its own reconnect
  handler is configured) and treats ``silence_timeout_s`` without any received frame (server pings
  included) as a dead connection: the socket is shut down and a new connection is built;
- reconnects with backoff (``reconnect_delays_s``) and reports ``on_state("connected" |
  "disconnected" | "reconnected")``. There is no replay after a gap
  (docs/reference/projectx-gateway.md#connection-and-reconnects): on "reconnected" the owner must
  reconcile over REST.

Event payloads are validated by :mod:`infra.projectx.mapping`. A malformed payload is logged, counted
in :attr:`_Hub.malformed` (``"<event>:<reason>"``) and dropped; an exception from an owner callback is
logged and counted in :attr:`_Hub.callback_errors`; nothing ever raises into signalrcore.

Threads: ``px-<name>-hub`` (supervisor) plus signalrcore's receive thread, on which the owner
callbacks run; callbacks must be quick and thread-safe (e.g. an actor ``tell``).
"""

from __future__ import annotations

import abc
import collections
import itertools
import logging
import socket
import threading
import time
import uuid
from typing import Any, Callable, Mapping
from urllib.parse import quote

from loguru import logger
from signalrcore.hub.base_hub_connection import BaseHubConnection
from signalrcore.messages.ping_message import PingMessage
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol

from domain.instruments import get_instrument
from domain.messages import QuoteTick, TradeTick
from infra.projectx.errors import MalformedPayload
from infra.projectx.mapping import (DepthEntry, GatewayAccount, GatewayOrder, GatewayPosition, GatewayTrade,
                                    parse_account, parse_depth, parse_order, parse_position, parse_trade,
                                    quote_to_tick, trade_print_to_tick, unwrap)
from infra.redact import RedactFilter

DEFAULT_RTC_URL = "https://rtc.topstepx.com"
"""TopstepX hub host (docs/reference/projectx-gateway.md#hosts); hubs live at ``/hubs/market`` and ``/hubs/user``."""

TokenProvider = Callable[[bool], str]
"""``token_provider(refresh) -> token``; ``refresh=True`` asks for a new one (validate/login),
e.g. :meth:`infra.projectx.rest.ProjectXClient.token`."""


class _RedactTokens(RedactFilter):
    """signalrcore logs URLs at DEBUG (``start url:...?access_token=...``): never let a token out
    (the one redaction of log lines and alerts, :mod:`infra.redact`)."""


logging.getLogger("SignalRCoreClient").addFilter(_RedactTokens())


class _Connection(BaseHubConnection):
    """A skip-negotiation JSON hub connection that reports every received frame (pings included)."""

    def __init__(self, url: str, on_frame: Callable[[], None]) -> None:
        super().__init__(url=url, skip_negotiation=True, headers={}, protocol=JsonHubProtocol())
        self._on_frame = on_frame

    def on_message(self, messages: list) -> None:
        self._on_frame()
        super().on_message(messages)


def _kill(conn: _Connection, join_s: float = 2.0) -> None:
    """Close a connection at any stage without blocking for long: shut the socket down first (a
    plain close does not wake a thread blocked in ``recv``), then stop it on a helper thread."""
    client = getattr(conn.transport, "_client", None) if conn.transport is not None else None
    sock = getattr(client, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    stopper = threading.Thread(target=conn.stop, name="px-hub-stop", daemon=True)
    stopper.start()
    stopper.join(join_s)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


class _Hub(abc.ABC):
    """Connection supervisor shared by :class:`MarketHub` and :class:`UserHub`.

    Args:
        base_url: hub host (``https://rtc.topstepx.com`` or the sandbox ``http://127.0.0.1:PORT``).
        path: ``/hubs/market`` or ``/hubs/user``.
        token_provider: see :data:`TokenProvider`.
        on_state: ``on_state(state)`` with ``"connected"``, ``"disconnected"``, ``"reconnected"``.
        keepalive_s: client ping interval, seconds.
        silence_timeout_s: no frame received for this long = dead connection, seconds.
        connect_timeout_s: TCP + WebSocket + SignalR handshake budget per attempt, seconds.
        reconnect_delays_s: waits between failed attempts (the last one repeats).

    Attributes:
        received: Counter of events received by name.
        malformed: Counter of dropped payloads, ``"<event>:<reason>"``.
        callback_errors: Counter of owner-callback exceptions by event.
        invoke_errors: Counter of failed hub invocations (e.g. a refused subscription) by method.
        connects: successful connections so far (``connects - 1`` = reconnects).
    """

    name = "hub"

    def __init__(self, base_url: str, path: str, token_provider: TokenProvider,
                 on_state: Callable[[str], None] | None = None, *, keepalive_s: float = 10.0,
                 silence_timeout_s: float = 45.0, connect_timeout_s: float = 10.0,
                 reconnect_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)) -> None:
        self._url = base_url.rstrip("/") + path
        self._token_provider = token_provider
        self._on_state = on_state
        self._keepalive_s = keepalive_s
        self._silence_s = silence_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._delays = reconnect_delays_s or (1.0,)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._conn: _Connection | None = None
        self._gen = 0
        self._last_rx = time.monotonic()
        self._last_ping = 0.0
        self._need_fresh_token = False
        self._invocations: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self.received: collections.Counter = collections.Counter()
        self.malformed: collections.Counter = collections.Counter()
        self.callback_errors: collections.Counter = collections.Counter()
        self.invoke_errors: collections.Counter = collections.Counter()
        self.connects = 0

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the supervisor thread (returns at once; see :meth:`wait_connected`)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"px-{self.name}-hub", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reconnecting and close the connection."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        with self._lock:
            self._thread = None
            conn, self._conn = self._conn, None
            self._gen += 1
        self._connected.clear()
        if conn is not None:
            _kill(conn)

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the hub is connected and its subscriptions were answered by the server (True),
        or ``timeout_s`` passed (False)."""
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        """True while a handshaken connection is up."""
        return self._connected.is_set()

    def reconnect(self, reason: str, fresh_token: bool = False) -> None:
        """Drop the current connection and build a new one (with a refreshed token if asked)."""
        with self._lock:
            self._need_fresh_token = self._need_fresh_token or fresh_token
        logger.info("ProjectX {} hub: reconnect requested ({})", self.name, reason)
        self._lost.set()

    # ------------------------------------------------------------------ subclass hooks

    @abc.abstractmethod
    def _handlers(self) -> Mapping[str, Callable[[list], None]]:
        """Event name -> handler of the argument list."""

    @abc.abstractmethod
    def _subscriptions(self) -> list[tuple[str, list]]:
        """``(method, arguments)`` to invoke after every (re)connect."""

    # ------------------------------------------------------------------ helpers for subclasses

    def _invoke(self, method: str, args: list) -> None:
        """Invoke now if connected (subscriptions are also replayed on every reconnect)."""
        with self._lock:
            conn = self._conn if self._connected.is_set() else None
        if conn is not None:
            self._send(conn, method, args)

    def _send(self, conn: _Connection, method: str, args: list) -> str:
        """Invoke ``method``; returns the invocation id (tracked in ``_invocations`` until completed)."""
        invocation_id = uuid.uuid4().hex
        with self._lock:
            self._invocations[invocation_id] = f"{method}({', '.join(map(str, args))})"
        try:
            conn.send(method, args, on_invocation=self._on_invoke_done, invocation_id=invocation_id)
        except Exception as e:  # the connection died under us: the supervisor will notice
            logger.warning("ProjectX {} hub: {} failed to send: {}", self.name, method, e)
            with self._lock:
                self._invocations.pop(invocation_id, None)
            self._lost.set()
        return invocation_id

    def _call(self, event: str, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            self.callback_errors[event] += 1
            logger.exception("ProjectX {} hub: {} callback failed", self.name, event)

    def _drop_malformed(self, event: str, err: MalformedPayload, payload: Any) -> None:
        self.malformed[f"{event}:{err.reason}"] += 1
        logger.warning("ProjectX {} hub: dropped malformed {} ({}): {!r:.300}", self.name, event, err, payload)

    # ------------------------------------------------------------------ supervisor

    def _guard(self, gen: int, event: str, handler: Callable[[list], None]) -> Callable[[list], None]:
        def dispatch(args: list) -> None:
            if gen != self._gen:
                return  # a stale connection still draining
            self.received[event] += 1
            try:
                handler(args if isinstance(args, list) else [args])
            except MalformedPayload as e:
                self._drop_malformed(event, e, args)
            except Exception:
                self.malformed[f"{event}:unexpected"] += 1
                logger.exception("ProjectX {} hub: failed to handle {}", self.name, event)
        return dispatch

    def _touch(self) -> None:
        self._last_rx = time.monotonic()

    def _on_closed(self, gen: int) -> None:
        if gen == self._gen:
            self._lost.set()

    def _on_invoke_done(self, message: Any) -> None:
        with self._lock:
            self._invocations.pop(getattr(message, "invocation_id", ""), None)

    def _on_invoke_error(self, message: Any) -> None:
        with self._lock:
            what = self._invocations.pop(getattr(message, "invocation_id", ""), "invocation")
        self.invoke_errors[what.split("(")[0]] += 1
        logger.error("ProjectX {} hub: {} failed: {}", self.name, what, getattr(message, "error", message))

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._conn is None:
                try:
                    self._connect(refresh=self._need_fresh_token or failures >= 2)
                    failures = 0
                except Exception as e:
                    failures += 1
                    if " 401" in str(e):
                        self._need_fresh_token = True
                    delay = self._delays[min(failures, len(self._delays)) - 1]
                    logger.warning("ProjectX {} hub: connect failed ({}: {:.200}), retry in {:.1f}s",
                                   self.name, type(e).__name__, str(e), delay)
                    self._stop.wait(delay)
                    continue
            now = time.monotonic()
            if self._lost.is_set() or now - self._last_rx > self._silence_s:
                why = "closed" if self._lost.is_set() else f"silent for {now - self._last_rx:.1f}s"
                self._drop(why)
                continue
            if now - self._last_ping >= self._keepalive_s:
                self._last_ping = now
                try:
                    self._conn.transport.send(PingMessage())
                except Exception as e:
                    logger.warning("ProjectX {} hub: ping failed: {}", self.name, e)
                    self._lost.set()
            self._stop.wait(min(0.25, self._keepalive_s / 4, self._silence_s / 4))
        logger.info("ProjectX {} hub: stopped", self.name)

    def _connect(self, refresh: bool) -> None:
        token = self._token_provider(refresh)
        with self._lock:
            self._need_fresh_token = False
            self._gen += 1
            gen = self._gen
        opened, done = threading.Event(), threading.Event()
        conn = _Connection(f"{self._url}?access_token={quote(token, safe='')}", self._touch)
        for event, handler in self._handlers().items():
            conn.on(event, self._guard(gen, event, handler))
        conn.on_open(opened.set)
        conn.on_close(lambda: self._on_closed(gen))
        conn.on_error(self._on_invoke_error)
        failure: list[BaseException] = []

        def start() -> None:
            try:
                conn.start()
            except BaseException as e:  # reported to the supervisor below
                failure.append(e)
            finally:
                done.set()
                if gen != self._gen:
                    _kill(conn)  # abandoned while connecting

        threading.Thread(target=start, name=f"px-{self.name}-connect", daemon=True).start()
        deadline = time.monotonic() + self._connect_timeout_s
        while not opened.is_set() and not failure and time.monotonic() < deadline and not self._stop.is_set():
            opened.wait(0.05)
        if not opened.is_set():
            with self._lock:
                self._gen += 1
            if done.is_set():
                _kill(conn)
            if failure:
                raise failure[0] if isinstance(failure[0], Exception) else RuntimeError(repr(failure[0]))
            raise TimeoutError(f"no SignalR handshake within {self._connect_timeout_s}s")
        with self._lock:
            self._conn = conn
            self._lost.clear()
            self._last_rx = self._last_ping = time.monotonic()
            first = self.connects == 0
            self.connects += 1
        pending = [self._send(conn, method, args) for method, args in self._subscriptions()]
        deadline = time.monotonic() + self._connect_timeout_s
        while any(i in self._invocations for i in pending) and time.monotonic() < deadline and \
                not self._lost.is_set() and not self._stop.is_set():
            time.sleep(0.01)
        if any(i in self._invocations for i in pending):
            logger.warning("ProjectX {} hub: subscriptions not acknowledged within {}s", self.name,
                           self._connect_timeout_s)
        self._connected.set()
        logger.info("ProjectX {} hub: {} to {}", self.name, "connected" if first else "reconnected", self._url)
        self._call("state", self._on_state, "connected" if first else "reconnected")

    def _drop(self, why: str) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._gen += 1
        self._connected.clear()
        logger.warning("ProjectX {} hub: connection lost ({}), reconnecting", self.name, why)
        if conn is not None:
            _kill(conn)
        self._call("state", self._on_state, "disconnected")


class MarketHub(_Hub):
    """Market data hub (``/hubs/market``, docs/reference/projectx-gateway.md#market-hub): quotes and
    trade prints as domain ticks.

    Args:
        base_url, token_provider, on_state, **options: see :class:`_Hub`.
        on_quote: ``on_quote(QuoteTick)`` (Decimal prices, sizes 0: the gateway sends none).
        on_trade: ``on_trade(TradeTick)``, one call per print (``GatewayTrade`` carries a list).
        on_depth: ``on_depth(instrument, [DepthEntry, ...])`` per ``GatewayDepth`` message (type 6 =
            Reset: clear the book).

    ``seq`` of the ticks counts per instrument from 0 for this hub instance.
    """

    name = "market"

    def __init__(self, base_url: str, token_provider: TokenProvider, on_quote: Callable[[QuoteTick], None],
                 on_trade: Callable[[TradeTick], None],
                 on_depth: Callable[[str, list[DepthEntry]], None] | None = None,
                 on_state: Callable[[str], None] | None = None, **options: Any) -> None:
        super().__init__(base_url, "/hubs/market", token_provider, on_state, **options)
        self._on_quote = on_quote
        self._on_trade = on_trade
        self._on_depth = on_depth
        self._subs: dict[str, tuple[str, bool, bool, bool]] = {}
        self._seq: dict[str, itertools.count] = {}
        self._last_quote: dict[str, QuoteTick] = {}

    def subscribe(self, contract_id: str, instrument: str, *, quotes: bool = True, trades: bool = True,
                  depth: bool = False) -> None:
        """Stream ``contract_id`` as our ``instrument`` (must be a known instrument: its tick size
        validates prices). Replayed after every reconnect. Raises UnknownInstrumentError."""
        get_instrument(instrument)
        with self._lock:
            self._subs[contract_id] = (instrument, quotes, trades, depth)
            self._seq.setdefault(instrument, itertools.count())
        for method, args in self._methods(contract_id, "Subscribe"):
            self._invoke(method, args)

    def unsubscribe(self, contract_id: str) -> None:
        """Stop streaming ``contract_id``."""
        methods = self._methods(contract_id, "Unsubscribe")
        with self._lock:
            self._subs.pop(contract_id, None)
        for method, args in methods:
            self._invoke(method, args)

    def _methods(self, contract_id: str, verb: str) -> list[tuple[str, list]]:
        with self._lock:
            sub = self._subs.get(contract_id)
        if sub is None:
            return []
        _, quotes, trades, depth = sub
        kinds = [k for k, on in (("Quotes", quotes), ("Trades", trades), ("MarketDepth", depth)) if on]
        return [(f"{verb}Contract{k}", [contract_id]) for k in kinds]

    def _subscriptions(self) -> list[tuple[str, list]]:
        with self._lock:
            ids = list(self._subs)
        return [m for cid in ids for m in self._methods(cid, "Subscribe")]

    def _handlers(self) -> Mapping[str, Callable[[list], None]]:
        return {"GatewayQuote": self._quote, "GatewayTrade": self._trades, "GatewayDepth": self._depth}

    def _instrument(self, args: list) -> tuple[str, str, Any]:
        if len(args) < 2 or not isinstance(args[0], str):
            raise MalformedPayload("bad_arguments", f"{len(args)} argument(s)")
        with self._lock:
            sub = self._subs.get(args[0])
        if sub is None:
            raise MalformedPayload("unknown_contract", args[0])
        return args[0], sub[0], args[1]

    def _quote(self, args: list) -> None:
        _, instrument, data = self._instrument(args)
        tick_size = get_instrument(instrument).tick_size
        with self._lock:
            tick = quote_to_tick(instrument, tick_size, data, seq=next(self._seq[instrument]),
                                 prev=self._last_quote.get(instrument))
            self._last_quote[instrument] = tick
        self._call("GatewayQuote", self._on_quote, tick)

    def _trades(self, args: list) -> None:
        _, instrument, data = self._instrument(args)
        tick_size = get_instrument(instrument).tick_size
        for item in data if isinstance(data, list) else [data]:
            try:
                with self._lock:
                    tick = trade_print_to_tick(instrument, tick_size, item, seq=next(self._seq[instrument]))
            except MalformedPayload as e:
                self._drop_malformed("GatewayTrade", e, item)
                continue
            self._call("GatewayTrade", self._on_trade, tick)

    def _depth(self, args: list) -> None:
        _, instrument, data = self._instrument(args)
        entries = []
        for item in data if isinstance(data, list) else [data]:
            try:
                entries.append(parse_depth(item))
            except MalformedPayload as e:
                self._drop_malformed("GatewayDepth", e, item)
        if entries:
            self._call("GatewayDepth", self._on_depth, instrument, entries)


class UserHub(_Hub):
    """User hub (``/hubs/user``, docs/reference/projectx-gateway.md#user-hub): orders, positions,
    fills and account updates of one account.

    Args:
        base_url, token_provider, on_state, **options: see :class:`_Hub`.
        account_id: the account to subscribe (``SubscribeOrders/Positions/Trades(accountId)``; also
            ``SubscribeAccounts()``).
        on_order: ``on_order(GatewayOrder)``; on_position: ``on_position(GatewayPosition)``
            (a closed position arrives as type 0, size 0); on_trade: ``on_trade(GatewayTrade)``;
            on_account: ``on_account(GatewayAccount)``.
        on_logout: ``on_logout()`` when the server sends ``GatewayLogout`` (meaning unconfirmed,
            docs/reference/projectx-gateway.md#observed-but-undocumented); the hub then reconnects
            with a refreshed token by itself.

    ``{"action": n, "data": {...}}`` envelopes are unwrapped
    (docs/reference/projectx-gateway.md#observed-but-undocumented).
    """

    name = "user"

    def __init__(self, base_url: str, token_provider: TokenProvider, account_id: int, *,
                 on_order: Callable[[GatewayOrder], None], on_position: Callable[[GatewayPosition], None],
                 on_trade: Callable[[GatewayTrade], None], on_account: Callable[[GatewayAccount], None] | None = None,
                 on_logout: Callable[[], None] | None = None, on_state: Callable[[str], None] | None = None,
                 **options: Any) -> None:
        super().__init__(base_url, "/hubs/user", token_provider, on_state, **options)
        self.account_id = account_id
        self._callbacks: dict[str, tuple[Callable[[Any], Any], Callable[..., None] | None]] = {
            "GatewayUserOrder": (parse_order, on_order), "GatewayUserPosition": (parse_position, on_position),
            "GatewayUserTrade": (parse_trade, on_trade), "GatewayUserAccount": (parse_account, on_account)}
        self._on_logout = on_logout

    def _subscriptions(self) -> list[tuple[str, list]]:
        return [("SubscribeAccounts", []), ("SubscribeOrders", [self.account_id]),
                ("SubscribePositions", [self.account_id]), ("SubscribeTrades", [self.account_id])]

    def _handlers(self) -> Mapping[str, Callable[[list], None]]:
        handlers: dict[str, Callable[[list], None]] = {
            event: (lambda args, event=event: self._user_event(event, args)) for event in self._callbacks}
        handlers["GatewayLogout"] = self._logout
        return handlers

    def _user_event(self, event: str, args: list) -> None:
        parse, callback = self._callbacks[event]
        if not args:
            raise MalformedPayload("bad_arguments", "no argument")
        _, data = unwrap(args[0])
        for item in data if isinstance(data, list) else [data]:
            try:
                model = parse(item)
            except MalformedPayload as e:
                self._drop_malformed(event, e, item)
                continue
            if getattr(model, "account_id", None) not in (None, self.account_id):
                continue  # another account of the same user
            self._call(event, callback, model)

    def _logout(self, args: list) -> None:
        logger.warning("ProjectX user hub: GatewayLogout received, reconnecting with a fresh token")
        self._call("GatewayLogout", self._on_logout)
        self.reconnect("GatewayLogout", fresh_token=True)
