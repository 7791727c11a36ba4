"""The sandbox's SignalR hubs, ``/hubs/user`` and ``/hubs/market``, over WebSockets (aiohttp).

Connecting (both accepted):

- skipNegotiation: ``ws://host/hubs/<hub>?access_token=<token>`` (or an ``Authorization: Bearer``
  header on the upgrade request, which is what signalrcore's ``access_token_factory`` sends);
- negotiation: ``POST /hubs/<hub>/negotiate[?negotiateVersion=1]`` (token as above) returns
  ``connectionId``, ``negotiateVersion``, ``availableTransports`` (WebSockets, Text/Binary) and, for
  version 1, ``connectionToken``; then ``ws://host/hubs/<hub>?id=<connectionToken, or connectionId
  for version 0>`` with the token again. An unknown or reused id gets 404; a negotiation not used
  within :data:`NEGOTIATION_TTL_S` is forgotten.

A missing, unknown or expired token gets HTTP 401 before the upgrade. Then the SignalR JSON
protocol (:mod:`infra.sandbox.hubprotocol`): handshake within :data:`HANDSHAKE_TIMEOUT_S`, a Ping
every ``ping_interval_s``, and a Close with an error when the client is silent for
``client_timeout_s``, sends a protocol-violating record, or its token expires (checked at every
ping), is revoked (``Auth/logout``) or is expired by the ``expire_tokens`` fault.

Hub methods (void; completion ``result: null``, or ``error`` text as ASP.NET Core words it:
``Unknown hub method 'X'``, ``Failed to invoke 'X' due to an error on the server.`` for wrong
argument count/types, ``An unexpected error occurred invoking 'X' on the server. HubException: ...``
for an unknown account or contract id); no reply at all without an ``invocationId``:

- user: ``SubscribeAccounts()``, ``SubscribeOrders|SubscribePositions|SubscribeTrades(accountId: int)``
  and the matching ``Unsubscribe*``. Events ``GatewayUserAccount|Order|Position|Trade`` with one
  argument; kinds listed in ``wrap`` are sent as ``{"action": 0|1|2, "data": {...}}``.
- market: ``SubscribeContractQuotes|SubscribeContractTrades|SubscribeContractMarketDepth(contractId: str)``
  and the matching ``Unsubscribe*``. Events ``GatewayQuote [contractId, quote]`` and
  ``GatewayTrade [contractId, [trade, ...]]``; no depth events are produced (subscribing is accepted).

Subscriptions belong to one connection: nothing survives a reconnect and nothing missed is replayed.
All of this runs on the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import WSMsgType, web
from loguru import logger

from infra.sandbox.auth import TokenStore, bearer
from infra.sandbox.contracts import ContractCatalog
from infra.sandbox.exchange import UserEvent
from infra.sandbox.faults import REORDER_FLUSH_S, Faults
from infra.sandbox.hubprotocol import (PING, RS, MessageType, ProtocolError, RecordReader, close, completion,
                                       encode, handshake_error, invocation, parse_message)

HANDSHAKE_TIMEOUT_S = 15.0
"""Seconds a new connection has to send its handshake (ASP.NET Core default)."""

NEGOTIATION_TTL_S = 60.0
"""Seconds a negotiated connection id stays usable."""

USER_TARGETS = {"account": "GatewayUserAccount", "order": "GatewayUserOrder", "position": "GatewayUserPosition",
                "trade": "GatewayUserTrade"}
"""User-event kind -> hub event name."""


@dataclass(frozen=True, slots=True)
class _Method:
    topic: str  # subscription topic
    subscribe: bool  # False: unsubscribe
    arg: type | None  # int (account id), str (contract id) or None (no argument)


def _methods(pairs: dict[str, tuple[str, type | None]]) -> dict[str, _Method]:
    out = {}
    for name, (topic, arg) in pairs.items():
        out["Subscribe" + name] = _Method(topic, True, arg)
        out["Unsubscribe" + name] = _Method(topic, False, arg)
    return out


METHODS: dict[str, dict[str, _Method]] = {
    "user": _methods({"Accounts": ("account", None), "Orders": ("order", int), "Positions": ("position", int),
                      "Trades": ("trade", int)}),
    "market": _methods({"ContractQuotes": ("quote", str), "ContractTrades": ("trade", str),
                        "ContractMarketDepth": ("depth", str)}),
}
"""Hub -> method name -> what it (un)subscribes."""


class HubConnection:
    """One accepted hub WebSocket: its subscriptions and an ordered, optionally delayed writer.

    ``subscriptions`` holds ``(topic, key)`` pairs: ``("order", 1001)``, ``("account", None)``,
    ``("quote", "CON.F.US.MES.M26")``.
    """

    def __init__(self, hub: str, ws: web.WebSocketResponse, request: web.Request, token: str,
                 sent_ns: dict[tuple[str, int], int]) -> None:
        self.id = uuid.uuid4().hex
        self.hub = hub
        self.token = token
        self.ws = ws
        self.subscriptions: set[tuple[str, Any]] = set()
        self._transport = request.transport
        self._sent_ns = sent_ns
        self._queue: asyncio.Queue[tuple[float, str, tuple[tuple[str, int], ...]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    def start(self, pinger: Callable[["HubConnection"], Any]) -> None:
        """Start the writer and the ping task (after the handshake)."""
        self._tasks = [asyncio.create_task(self._write_loop()), asyncio.create_task(pinger(self))]

    def stop(self) -> None:
        """Cancel the writer and the ping task (queued messages are dropped); the calling task itself
        (the ping task closing an expired connection) is left to finish."""
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    def send(self, text: str, delay_s: float = 0.0, stamps: tuple[tuple[str, int], ...] = ()) -> None:
        """Queue one encoded record, to be written ``delay_s`` seconds from now at the earliest.
        ``stamps``: ``quote_sent_ns`` keys to stamp when it is written."""
        self._queue.put_nowait((asyncio.get_running_loop().time() + delay_s, text, stamps))

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, text, stamps = await self._queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self.ws.send_str(text)
            except ConnectionError:
                return
            if stamps:
                now = time.perf_counter_ns()
                for key in stamps:
                    self._sent_ns.setdefault(key, now)

    async def close(self, error: str | None, allow_reconnect: bool | None, before: tuple[str, ...] = ()) -> None:
        """Drop queued messages, write ``before`` records and a Close message, close the socket."""
        self.stop()
        try:
            for text in before:
                await self.ws.send_str(text)
            await self.ws.send_str(encode(close(error, allow_reconnect)))
            await self.ws.close()
        except ConnectionError:
            pass

    def abort(self) -> None:
        """Kill the TCP connection: no Close message, no WebSocket close frame."""
        self.stop()
        if self._transport is not None:
            self._transport.abort()


class Hubs:
    """Both hubs: connection lifecycle, hub methods and event fan-out.

    Args:
        tokens: session tokens (validity at connect, negotiate and every ping).
        faults: consulted for write delays, duplicated and reordered user events.
        catalog: contracts (market-hub arguments must be listed contract ids).
        account_ids: accounts the user owns (user-hub arguments must be one of them).
        wrap: user-event kinds sent in an ``{action, data}`` envelope.
        ping_interval_s, client_timeout_s: keep-alive settings (seconds).
        quote_sent_ns: ``(contractId, data ts ns) -> perf_counter_ns`` of the first write of a
            GatewayQuote/GatewayTrade with that timestamp; filled here.
        on_market_subscribe: called after every successful quote or trade subscription.
    """

    def __init__(self, *, tokens: TokenStore, faults: Faults, catalog: ContractCatalog, account_ids: set[int],
                 wrap: frozenset[str], ping_interval_s: float, client_timeout_s: float,
                 quote_sent_ns: dict[tuple[str, int], int], on_market_subscribe: Callable[[], None]) -> None:
        self._tokens = tokens
        self._faults = faults
        self._catalog = catalog
        self._account_ids = account_ids
        self._wrap = wrap
        self._ping_interval_s = ping_interval_s
        self._client_timeout_s = client_timeout_s
        self._sent_ns = quote_sent_ns
        self._on_market_subscribe = on_market_subscribe
        self.connections: dict[str, HubConnection] = {}
        self._negotiations: dict[str, tuple[str, float]] = {}  # id to connect with -> (hub, monotonic time)
        self._held: list[UserEvent] = []
        self._flush: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ HTTP handlers

    @staticmethod
    def _token(request: web.Request) -> str | None:
        return request.query.get("access_token") or bearer(request.headers.get("Authorization"))

    async def negotiate(self, request: web.Request) -> web.Response:
        """``POST /hubs/{hub}/negotiate``."""
        hub = request.match_info["hub"]
        if not self._tokens.valid(self._token(request)):
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            version = max(0, min(int(request.query.get("negotiateVersion", "0")), 1))
        except ValueError:
            version = 0
        now = time.monotonic()
        self._negotiations = {k: v for k, v in self._negotiations.items() if now - v[1] < NEGOTIATION_TTL_S}
        transports = [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
        body: dict[str, Any] = {"connectionId": uuid.uuid4().hex, "negotiateVersion": version,
                                "availableTransports": transports}
        if version >= 1:
            body["connectionToken"] = uuid.uuid4().hex
        self._negotiations[body.get("connectionToken", body["connectionId"])] = (hub, now)
        return web.json_response(body)

    async def connect(self, request: web.Request) -> web.StreamResponse:
        """``GET /hubs/{hub}``: the WebSocket upgrade, then the connection until it ends."""
        hub = request.match_info["hub"]
        token = self._token(request)
        if not self._tokens.valid(token):
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        negotiated = request.query.get("id")
        if negotiated is not None:
            entry = self._negotiations.pop(negotiated, None)
            if entry is None or entry[0] != hub or time.monotonic() - entry[1] >= NEGOTIATION_TTL_S:
                return web.Response(status=404, text="No Connection with that ID")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="Expected a WebSocket request")
        await ws.prepare(request)
        assert token is not None
        conn = HubConnection(hub, ws, request, token, self._sent_ns)
        self.connections[conn.id] = conn
        logger.info("sandbox {} hub: connection {} opened", hub, conn.id)
        try:
            await self._serve(conn)
        finally:
            conn.stop()
            self.connections.pop(conn.id, None)
            if not ws.closed:
                try:
                    await ws.close()
                except ConnectionError:
                    pass
            logger.info("sandbox {} hub: connection {} closed", hub, conn.id)
        return ws

    # ------------------------------------------------------------------ protocol

    @staticmethod
    async def _receive(conn: HubConnection, reader: RecordReader, timeout_s: float) -> list[str] | None:
        """The complete records of the next frame (maybe none); None when the socket has ended.

        Raises asyncio.TimeoutError when nothing arrives within ``timeout_s`` seconds."""
        msg = await conn.ws.receive(timeout=timeout_s)
        if msg.type == WSMsgType.TEXT:
            return reader.feed(msg.data)
        if msg.type == WSMsgType.BINARY:
            return reader.feed(msg.data.decode("utf-8", errors="replace"))
        return None

    async def _serve(self, conn: HubConnection) -> None:
        reader = RecordReader()
        records: list[str] = []
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
        while not records:
            try:
                got = await self._receive(conn, reader, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                logger.warning("sandbox {} hub: no handshake within {} s", conn.hub, HANDSHAKE_TIMEOUT_S)
                return
            if got is None:
                return
            records = got
        error = handshake_error(records[0])
        if error is not None:
            logger.warning("sandbox {} hub: handshake refused: {}", conn.hub, error)
            await conn.ws.send_str(encode({"error": error}))
            return
        await conn.ws.send_str("{}" + RS)
        conn.start(self._ping_loop)
        records = records[1:]
        while True:
            for record in records:
                if not await self._handle(conn, record):
                    return
            try:
                got = await self._receive(conn, reader, self._client_timeout_s)
            except asyncio.TimeoutError:
                logger.warning("sandbox {} hub: connection {} silent for {} s, closing", conn.hub, conn.id,
                               self._client_timeout_s)
                await conn.close("Server timeout elapsed without receiving a message from the client.", True)
                return
            if got is None:
                return
            records = got

    async def _handle(self, conn: HubConnection, record: str) -> bool:
        """Process one record; False when the connection must end."""
        try:
            msg = parse_message(record)
        except ProtocolError as exc:
            logger.warning("sandbox {} hub: protocol error from {}: {}", conn.hub, conn.id, exc)
            await conn.close(f"Connection closed with an error. InvalidDataException: {exc}", False)
            return False
        kind = msg["type"]
        if kind is MessageType.INVOCATION:
            try:
                self._invoke(conn, msg)
            except Exception:
                logger.exception("sandbox {} hub: invoking {} failed", conn.hub, msg["target"])
                if "invocationId" in msg:
                    conn.send(encode(completion(
                        msg["invocationId"], f"An unexpected error occurred invoking '{msg['target']}' on the server.")))
        elif kind is MessageType.STREAM_INVOCATION and "invocationId" in msg:
            conn.send(encode(completion(msg["invocationId"], "Streaming hub methods are not supported.")))
        elif kind is MessageType.CLOSE:
            return False
        return True

    def _invoke(self, conn: HubConnection, msg: dict[str, Any]) -> None:
        target, args, invocation_id = msg["target"], msg["arguments"], msg.get("invocationId")
        method = METHODS[conn.hub].get(target)
        error: str | None = None
        if method is None:
            error = f"Unknown hub method '{target}'"
        elif len(args) != (0 if method.arg is None else 1) or (
                method.arg is not None and (not isinstance(args[0], method.arg) or isinstance(args[0], bool))):
            logger.warning("sandbox {} hub: cannot bind arguments {!r} of {}", conn.hub, args, target)
            error = f"Failed to invoke '{target}' due to an error on the server."
        else:
            key = args[0] if args else None
            unexpected = f"An unexpected error occurred invoking '{target}' on the server. HubException:"
            if method.arg is int and key not in self._account_ids:
                error = f"{unexpected} Unknown account {key}."
            elif method.arg is str and self._catalog.by_id(key) is None:
                error = f"{unexpected} Unknown contract '{key}'."
        if error is not None:
            if invocation_id is not None:
                conn.send(encode(completion(invocation_id, error)))
            return
        topic = (method.topic, args[0] if args else None)
        if method.subscribe:
            conn.subscriptions.add(topic)
        else:
            conn.subscriptions.discard(topic)
        logger.debug("sandbox {} hub: {} {}", conn.hub, target, args)
        if invocation_id is not None:
            conn.send(encode(completion(invocation_id)))
        if method.subscribe and conn.hub == "market" and method.topic in ("quote", "trade"):
            self._on_market_subscribe()

    async def _ping_loop(self, conn: HubConnection) -> None:
        while True:
            await asyncio.sleep(self._ping_interval_s)
            if not self._tokens.valid(conn.token):
                await conn.close("Authentication token expired.", True)
                return
            conn.send(encode(PING), self._faults.delay_s(conn.hub))

    # ------------------------------------------------------------------ fan-out

    def _subscribers(self, hub: str, topic: tuple[str, Any]) -> list[HubConnection]:
        return [c for c in self.connections.values() if c.hub == hub and topic in c.subscriptions]

    @staticmethod
    def _user_topic(event: UserEvent) -> tuple[str, Any]:
        return event.kind, None if event.kind == "account" else event.account_id

    def publish_user(self, events: list[UserEvent]) -> None:
        """Deliver user events to their subscribers, applying the duplicate/reorder faults (which
        only count events that have at least one subscriber)."""
        for event in events:
            if not self._subscribers("user", self._user_topic(event)):
                continue
            hold, release = self._faults.take_reorder()
            if not hold:
                self._deliver(event)
                continue
            self._held.append(event)
            if release:
                self._release_held()
            elif self._flush is None:
                self._flush = asyncio.get_running_loop().call_later(REORDER_FLUSH_S, self._release_held)

    def _release_held(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        held, self._held = self._held, []
        for event in reversed(held):
            self._deliver(event)

    def _deliver(self, event: UserEvent) -> None:
        payload = {"action": int(event.action), "data": event.data} if event.kind in self._wrap else event.data
        text = encode(invocation(USER_TARGETS[event.kind], [payload]))
        copies = 2 if self._faults.take_duplicate() else 1
        delay = self._faults.delay_s("user")
        for conn in self._subscribers("user", self._user_topic(event)):
            for _ in range(copies):
                conn.send(text, delay)

    def publish_market(self, contract_id: str, ts_ns: int, quote: dict[str, Any], trades: list[dict[str, Any]]) -> None:
        """Send ``GatewayQuote [contractId, quote]`` and ``GatewayTrade [contractId, trades]`` to
        their subscribers, stamping ``quote_sent_ns[(contractId, ts_ns)]`` on the first write."""
        delay = self._faults.delay_s("market")
        stamp = ((contract_id, ts_ns),)
        for topic, target, payload in (("quote", "GatewayQuote", quote), ("trade", "GatewayTrade", trades)):
            subscribers = self._subscribers("market", (topic, contract_id))
            if subscribers:
                text = encode(invocation(target, [contract_id, payload]))
                for conn in subscribers:
                    conn.send(text, delay, stamp)

    # ------------------------------------------------------------------ connection actions

    async def close_all(self, *, error: str, allow_reconnect: bool, hub: str | None = None, token: str | None = None,
                        before_user: tuple[str, ...] = ()) -> None:
        """Close the connections of ``hub`` (None = both) opened with ``token`` (None = any) with a
        Close message; user-hub connections first get the ``before_user`` records."""
        targets = [c for c in list(self.connections.values())
                   if (hub is None or c.hub == hub) and (token is None or c.token == token)]
        await asyncio.gather(*(c.close(error, allow_reconnect, before_user if c.hub == "user" else ())
                               for c in targets))

    def abort_all(self, hub: str | None = None) -> None:
        """Abort the sockets of ``hub`` (None = both) without any close handshake."""
        for conn in [c for c in self.connections.values() if hub is None or c.hub == hub]:
            conn.abort()
