"""ProjectX hubs: payload mapping, a scripted SignalR server (malformed payloads, silent connections,
401 handshakes, logout) and the real sandbox gateway (quotes/trades, dropped connections, expired tokens).

Everything runs over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import pytest
from aiohttp import web

from domain.messages import QuoteTick, TradeTick
from infra.projectx.errors import MalformedPayload
from infra.projectx.hubs import MarketHub, UserHub
from infra.projectx.mapping import GatewayOrder, quote_to_tick, trade_print_to_tick, unwrap
from infra.projectx.rest import ProjectXClient
from infra.sandbox.server import SandboxConfig, SandboxGateway

RS = "\x1e"
FAST = dict(keepalive_s=0.2, silence_timeout_s=1.0, connect_timeout_s=3.0, reconnect_delays_s=(0.05, 0.1))
TICK = Decimal("0.25")


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# --------------------------------------------------------------------------- mapping

def test_quote_maps_to_decimal_tick_and_merges_partial_updates():
    data = {"symbol": "F.US.MES", "bestBid": 6650.25, "bestAsk": 6650.5, "lastPrice": 6650.25,
            "timestamp": "2026-04-08T13:30:00.1234567+00:00"}
    q = quote_to_tick("MES", TICK, data, seq=4)
    assert q == QuoteTick("MES", 1775655000123456700, Decimal("6650.25"), Decimal("6650.5"), 0, 0, 4)
    later = quote_to_tick("MES", TICK, {"bestAsk": 6650.75, "timestamp": "2026-04-08T13:30:01Z"}, seq=5, prev=q)
    assert (later.bid, later.ask) == (Decimal("6650.25"), Decimal("6650.75"))


@pytest.mark.parametrize("data,reason", [
    ({"bestBid": "NaN", "bestAsk": 1.0, "timestamp": "2026-04-08T13:30:00Z"}, "nan:bestBid"),
    ({"bestBid": 6650.1, "bestAsk": 6650.5, "timestamp": "2026-04-08T13:30:00Z"}, "off_tick:bestBid"),
    ({"bestBid": 6650.5, "bestAsk": 6650.5, "timestamp": "2026-04-08T13:30:00Z"}, "crossed"),
    ({"bestBid": -1, "bestAsk": 6650.5, "timestamp": "2026-04-08T13:30:00Z"}, "negative:bestBid"),
    ({"bestAsk": 6650.5, "timestamp": "2026-04-08T13:30:00Z"}, "missing:bestBid"),
    ({"bestBid": 6650.25, "bestAsk": 6650.5, "timestamp": "yesterday"}, "bad_timestamp:timestamp"),
    ([1, 2], "not_an_object"),
])
def test_bad_quotes_are_malformed(data, reason):
    with pytest.raises(MalformedPayload) as err:
        quote_to_tick("MES", TICK, data, seq=0)
    assert err.value.reason == reason


def test_trade_print_maps_and_validates():
    item = {"symbolId": "F.US.MES", "price": 6650.75, "timestamp": "2026-04-08T13:30:00+00:00", "type": 0,
            "volume": 3}
    assert trade_print_to_tick("MES", TICK, item, seq=9) == TradeTick("MES", 1775655000000000000,
                                                                      Decimal("6650.75"), 3, 9)
    for bad, reason in (({**item, "volume": 0}, "out_of_range:volume"), ({**item, "volume": 1.5}, "bad_int:volume"),
                        ({**item, "price": None}, "missing:price"), ({**item, "price": True}, "bad_number:price")):
        with pytest.raises(MalformedPayload) as err:
            trade_print_to_tick("MES", TICK, bad, seq=0)
        assert err.value.reason == reason


def test_user_payload_envelopes_are_unwrapped():
    assert unwrap({"action": 1, "data": {"id": 5}}) == (1, {"id": 5})
    assert unwrap({"id": 5, "status": 1}) == (None, {"id": 5, "status": 1})


def test_signalrcore_debug_logs_never_show_the_token():
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    sr_logger = logging.getLogger("SignalRCoreClient")
    handler, level = Capture(), sr_logger.level
    sr_logger.addHandler(handler)
    sr_logger.setLevel(logging.DEBUG)
    try:
        sr_logger.debug("start url:%s", "ws://h/hubs/user?access_token=eyJ.secret.sig&x=1")
        sr_logger.debug("headers {'Authorization': 'Bearer eyJ.secret.sig'}")
    finally:
        sr_logger.removeHandler(handler)
        sr_logger.setLevel(level)
    assert records == ["start url:ws://h/hubs/user?access_token=<redacted>&x=1",
                       "headers {'Authorization': 'Bearer <redacted>'}"]


# --------------------------------------------------------------------------- scripted SignalR server

@dataclass
class HubConn:
    path: str
    token: str | None
    ws: web.WebSocketResponse
    invocations: list[tuple[str, list]] = field(default_factory=list)
    silent: bool = False


class ScriptedHub:
    """Minimal SignalR JSON hub server: handshake, a Ping every ``ping_s`` (unless the connection is
    made silent), completions for invocations, and frames pushed by the test."""

    def __init__(self, ping_s: float = 0.2) -> None:
        self.ping_s = ping_s
        self.conns: list[HubConn] = []
        self.reject_tokens: set[str] = set()
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> "ScriptedHub":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/hubs/{name}", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("access_token")
        if token in self.reject_tokens:
            self.refused += 1
            return web.Response(status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = HubConn(request.path, token, ws)
        self.conns.append(conn)
        pinger = asyncio.ensure_future(self._ping(conn))
        try:
            async for msg in ws:
                for record in filter(None, msg.data.split(RS)):
                    obj = json.loads(record)
                    if "protocol" in obj:
                        await ws.send_str("{}" + RS)
                    elif obj.get("type") == 1:
                        conn.invocations.append((obj["target"], obj["arguments"]))
                        if obj.get("invocationId"):
                            await ws.send_str(json.dumps({"type": 3, "invocationId": obj["invocationId"],
                                                          "result": None}) + RS)
        finally:
            pinger.cancel()
        return ws

    async def _ping(self, conn: HubConn) -> None:
        while True:
            await asyncio.sleep(self.ping_s)
            if not conn.silent and not conn.ws.closed:
                await conn.ws.send_str('{"type":6}' + RS)

    def push(self, target: str, args: list, conn: int = -1) -> None:
        ws = self.conns[conn].ws
        frame = json.dumps({"type": 1, "target": target, "arguments": args}) + RS
        asyncio.run_coroutine_threadsafe(ws.send_str(frame), self._loop).result(5)


@pytest.fixture
def hub_server():
    server = ScriptedHub().start()
    yield server
    server.stop()


class Tokens:
    """token_provider double: ``t1`` until asked to refresh, then ``t2``, ``t3``..."""

    def __init__(self) -> None:
        self.n = 1
        self.calls: list[bool] = []

    def __call__(self, refresh: bool) -> str:
        self.calls.append(refresh)
        if refresh:
            self.n += 1
        return f"t{self.n}"


def _quote(price: float) -> dict[str, Any]:
    return {"symbol": "F.US.MES", "bestBid": price, "bestAsk": price + 0.25, "timestamp": "2026-04-08T13:30:00Z"}


def test_market_hub_delivers_good_payloads_and_counts_bad_ones(hub_server):
    quotes, trades = [], []

    def on_quote(q: QuoteTick) -> None:
        if q.bid == Decimal("6651"):
            raise RuntimeError("owner bug")
        quotes.append(q)

    hub = MarketHub(hub_server.url, Tokens(), on_quote=on_quote, on_trade=trades.append, **FAST)
    hub.subscribe("CON.F.US.MES.M26", "MES")
    hub.start()
    try:
        assert hub.wait_connected(5)
        assert wait_for(lambda: len(hub_server.conns[0].invocations) == 2)
        assert hub_server.conns[0].invocations == [("SubscribeContractQuotes", ["CON.F.US.MES.M26"]),
                                                   ("SubscribeContractTrades", ["CON.F.US.MES.M26"])]
        cid = "CON.F.US.MES.M26"
        good = {"price": 6650.5, "volume": 2, "timestamp": "2026-04-08T13:30:00Z", "type": 0}
        hub_server.push("GatewayQuote", [cid, {**_quote(6650), "bestBid": "NaN"}])
        hub_server.push("GatewayQuote", [cid, _quote(6651)])  # the owner callback raises
        hub_server.push("GatewayTrade", [cid, [good, {**good, "volume": -1}, {**good, "price": 6650.75}]])
        hub_server.push("GatewayTrade", [cid, good])  # a single object is accepted too
        hub_server.push("GatewayQuote", ["CON.F.US.XXX.Z26", _quote(6650)])
        hub_server.push("GatewayQuote", [cid])
        hub_server.push("GatewayQuote", [cid, _quote(6650)])
        assert wait_for(lambda: len(quotes) == 1 and len(trades) == 3)
        assert quotes[0].bid == Decimal("6650") and [t.price for t in trades] == [Decimal("6650.5"),
                                                                                  Decimal("6650.75"),
                                                                                  Decimal("6650.5")]
        assert hub.malformed == {"GatewayQuote:nan:bestBid": 1, "GatewayTrade:out_of_range:volume": 1,
                                 "GatewayQuote:unknown_contract": 1, "GatewayQuote:bad_arguments": 1}
        assert hub.callback_errors == {"GatewayQuote": 1}
        assert hub.connected and hub.connects == 1
    finally:
        hub.stop()


def test_silent_connection_is_replaced_and_resubscribed(hub_server):
    states: list[str] = []
    hub = MarketHub(hub_server.url, Tokens(), on_quote=lambda q: None, on_trade=lambda t: None,
                    on_state=states.append, **FAST)
    hub.subscribe("CON.F.US.MES.M26", "MES", trades=False)
    hub.start()
    try:
        assert hub.wait_connected(5)
        hub_server.conns[0].silent = True  # socket stays open, nothing arrives: on_close never fires
        assert wait_for(lambda: len(hub_server.conns) == 2 and hub.connected, timeout=5)
        assert wait_for(lambda: hub_server.conns[1].invocations == [("SubscribeContractQuotes",
                                                                     ["CON.F.US.MES.M26"])])
        assert states == ["connected", "disconnected", "reconnected"]
        assert wait_for(lambda: hub_server.conns[0].ws.closed)
    finally:
        hub.stop()


def test_401_handshake_gets_a_fresh_token(hub_server):
    tokens = Tokens()
    hub_server.reject_tokens.add("t1")
    hub = MarketHub(hub_server.url, tokens, on_quote=lambda q: None, on_trade=lambda t: None, **FAST)
    hub.start()
    try:
        assert hub.wait_connected(5)
        assert hub_server.refused == 1 and hub_server.conns[0].token == "t2"
        assert tokens.calls == [False, True]
    finally:
        hub.stop()


def test_user_hub_unwraps_filters_and_reconnects_after_logout(hub_server):
    tokens, orders, logouts = Tokens(), [], []
    hub = UserHub(hub_server.url, tokens, 1001, on_order=orders.append, on_position=lambda p: None,
                  on_trade=lambda t: None, on_logout=lambda: logouts.append(1), **FAST)
    hub.start()
    try:
        assert hub.wait_connected(5)
        assert wait_for(lambda: len(hub_server.conns[0].invocations) == 4)
        assert hub_server.conns[0].invocations == [("SubscribeAccounts", []), ("SubscribeOrders", [1001]),
                                                   ("SubscribePositions", [1001]), ("SubscribeTrades", [1001])]
        order = {"id": 7, "accountId": 1001, "contractId": "CON.F.US.MES.M26", "creationTimestamp":
                 "2026-04-08T13:30:00Z", "status": 1, "type": 1, "side": 0, "size": 1, "limitPrice": 6650.25,
                 "fillVolume": 0, "customTag": "grid-MES-1-1"}
        hub_server.push("GatewayUserOrder", [{"action": 0, "data": order}])
        hub_server.push("GatewayUserOrder", [{**order, "id": 8, "accountId": 2002}])  # another account
        hub_server.push("GatewayUserOrder", [{**order, "id": 9, "side": 7}])
        hub_server.push("GatewayUserOrder", [{**order, "id": 10}])
        assert wait_for(lambda: len(orders) == 2)
        assert [o.id for o in orders] == [7, 10] and isinstance(orders[0], GatewayOrder)
        assert orders[0].limit_price == Decimal("6650.25") and orders[0].custom_tag == "grid-MES-1-1"
        assert hub.malformed == {"GatewayUserOrder:unknown_enum:side": 1}
        hub_server.push("GatewayLogout", [])
        assert wait_for(lambda: len(hub_server.conns) == 2 and hub.connected)
        assert logouts == [1] and hub_server.conns[1].token == "t2" and tokens.calls[-1] is True
        assert wait_for(lambda: len(hub_server.conns[1].invocations) == 4)
    finally:
        hub.stop()


# --------------------------------------------------------------------------- the sandbox gateway

@pytest.fixture
def sandbox():
    gw = SandboxGateway(SandboxConfig(speed=0, port=0, ping_interval_s=0.2,
                                      client_timeout_s=2.0))
    gw.start()
    yield gw
    gw.stop()


def test_sandbox_market_hub_streams_ticks_and_survives_drops_and_token_expiry(sandbox):
    client = ProjectXClient(sandbox.base_url, "sandbox", "sandbox-key", backoff_base_s=0.01)
    mes = client.resolve_front_month("MES")
    quotes, trades, states = [], [], []
    hub = MarketHub(sandbox.base_url, client.token, on_quote=quotes.append, on_trade=trades.append,
                    on_state=states.append, **FAST)
    hub.subscribe(mes.id, "MES")
    hub.start()
    try:
        assert hub.wait_connected(5)
        sandbox.advance(4)
        assert wait_for(lambda: quotes and trades)
        assert all(isinstance(t.price, Decimal) and t.price % TICK == 0 for t in trades)
        assert all(q.bid < q.ask for q in quotes)
        seqs = [t.seq for t in sorted(quotes + trades, key=lambda x: x.seq)]
        assert seqs == list(range(len(seqs)))

        sandbox.faults.drop_connections()  # TCP abort: no close frame
        assert wait_for(lambda: hub.connects == 2 and hub.connected)
        n = len(trades)
        sandbox.advance(4)
        assert wait_for(lambda: len(trades) > n), "re-subscribed after the reconnect"

        old = client.token()
        sandbox.faults.expire_tokens()  # hub closed; reconnecting with the old token gets 401
        assert wait_for(lambda: hub.connects == 3 and hub.connected, timeout=8)
        assert client.token() != old
        n = len(trades)
        sandbox.advance(4)
        assert wait_for(lambda: len(trades) > n)
        assert states == ["connected", "disconnected", "reconnected", "disconnected", "reconnected"]
        assert not hub.malformed and not hub.invoke_errors
    finally:
        hub.stop()
        client.close()


def test_sandbox_refused_subscription_is_counted_not_fatal(sandbox):
    client = ProjectXClient(sandbox.base_url, "sandbox", "sandbox-key")
    hub = MarketHub(sandbox.base_url, client.token, on_quote=lambda q: None, on_trade=lambda t: None, **FAST)
    hub.subscribe("CON.F.US.NOPE.Z26", "MES", trades=False)
    hub.start()
    try:
        assert hub.wait_connected(5)
        assert hub.invoke_errors == {"SubscribeContractQuotes": 1} and hub.connected
    finally:
        hub.stop()
        client.close()
