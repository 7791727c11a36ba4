"""The sandbox ProjectX gateway over real sockets on 127.0.0.1: REST, SignalR hubs, replay, faults.

Most tests run in manual mode (``speed=0``: the replay moves only with ``gw.advance``) on a tiny
data set written here, so that every price and fill is known:

- history day Tue 2026-04-07: ten ES 2-min bars 09:30..09:48 ET (13:30..13:48 UTC), open
  4990+i, high +1, low -1, close +0.5, volume 100;
- streamed day Wed 2026-04-08 (ticks = O-L-H-C for an up bar, O-H-L-C for a down bar):
  bar 0 13:30 UTC: 5000, 4999, 5001, 5000.5;  bar 1 13:32: 5000.5, 5003, 4998, 4998.5;
  bar 2 13:34: 4998.5, 4997, 5006, 5005;  bars 3-5: 5005, 5004.75, 5005.25, 5005.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import httpx
import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder

from infra.sandbox.server import SandboxConfig, SandboxGateway

RS = "\x1e"
MES = "CON.F.US.MES.M26"
EP = "CON.F.US.EP.M26"
ACCOUNT = 1001
DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"

STREAMED = [  # (ET start, open, high, low, close)
    ("2026-04-08 09:30:00", "5000", "5001", "4999", "5000.5"),
    ("2026-04-08 09:32:00", "5000.5", "5003", "4998", "4998.5"),
    ("2026-04-08 09:34:00", "4998.5", "5006", "4997", "5005"),
    ("2026-04-08 09:36:00", "5005", "5005.25", "5004.75", "5005"),
    ("2026-04-08 09:38:00", "5005", "5005.25", "5004.75", "5005"),
    ("2026-04-08 09:40:00", "5005", "5005.25", "5004.75", "5005"),
]


def _write_es(folder: Path) -> Path:
    rows = [f"2026-04-07 09:{30 + 2 * i}:00,{4990 + i},{4991 + i},{4989 + i},{4990.5 + i},100,ES" for i in range(10)]
    rows += [f"{t},{o},{h},{low},{c},100,ES" for t, o, h, low, c in STREAMED]
    with gzip.open(folder / "ES_2min.csv.gz", "wt") as fh:
        fh.write("datetime,open,high,low,close,volume,symbol\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_es(tmp_path_factory.mktemp("sandbox-data"))


@pytest.fixture
def make_gateway(tiny_data: Path) -> Iterator[Callable[..., SandboxGateway]]:
    """``make_gateway(**config overrides)`` -> a started gateway (manual mode on the tiny data by default)."""
    started: list[SandboxGateway] = []

    def make(**overrides: Any) -> SandboxGateway:
        settings: dict[str, Any] = {"data_dir": tiny_data, "speed": 0.0, "ping_interval_s": 30.0}
        settings.update(overrides)
        gw = SandboxGateway(SandboxConfig(**settings))
        gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gw(make_gateway: Callable[..., SandboxGateway]) -> SandboxGateway:
    return make_gateway()


def login(gw: SandboxGateway) -> str:
    r = httpx.post(gw.base_url + "/api/Auth/loginKey", json={"userName": "sandbox", "apiKey": "sandbox-key"})
    assert r.status_code == 200 and r.json()["success"]
    return r.json()["token"]


class Rest:
    """Synchronous REST client with a bearer token; ``call`` returns the parsed envelope (HTTP 200)."""

    def __init__(self, gw: SandboxGateway, token: str | None = None) -> None:
        self.gw = gw
        self.token = token or login(gw)

    def post(self, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> httpx.Response:
        return httpx.post(f"{self.gw.base_url}/api/{path}", json=body or {},
                          headers={"Authorization": f"Bearer {token or self.token}"})

    def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.post(path, body)
        assert r.status_code == 200, (r.status_code, r.text)
        return json.loads(r.text, parse_float=Decimal)

    def place(self, **fields: Any) -> dict[str, Any]:
        return self.call("Order/place", {"accountId": ACCOUNT, "contractId": MES, "size": 1, **fields})

    def orders(self, statuses: list[int] | None = None) -> list[dict[str, Any]]:
        flt: dict[str, Any] = {"accountId": ACCOUNT}
        if statuses is not None:
            flt["statuses"] = statuses
        return self.call("Order/v2/query", {"filter": flt})["orders"]


def bars(rest: Rest, unit: int = 2, number: int = 2, limit: int = 100, partial: bool = False,
         end: str = "2026-04-09T00:00:00Z", contract: str = MES) -> dict[str, Any]:
    return rest.call("History/retrieveBars", {
        "contractId": contract, "live": False, "startTime": "2026-04-06T00:00:00Z", "endTime": end,
        "unit": unit, "unitNumber": number, "limit": limit, "includePartialBar": partial})


class Hub:
    """A raw SignalR JSON-protocol client over an aiohttp WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._buffer = ""
        self._records: list[str] = []

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, gw: SandboxGateway, hub: str, token: str,
                   handshake: bool = True) -> "Hub":
        ws = await session.ws_connect(f"{gw.base_url.replace('http', 'ws')}/hubs/{hub}?access_token={token}")
        client = cls(ws)
        if handshake:
            await client.send_raw(json.dumps({"protocol": "json", "version": 1}) + RS)
            assert await client.next() == {}
        return client

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def invoke(self, target: str, *args: Any, invocation_id: str | None = "auto") -> None:
        msg: dict[str, Any] = {"type": 1, "target": target, "arguments": list(args)}
        if invocation_id is not None:
            msg["invocationId"] = target if invocation_id == "auto" else invocation_id
        await self.send_raw(json.dumps(msg) + RS)

    async def next(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The next record (pings included); None when the socket closed or nothing came in time."""
        while not self._records:
            try:
                msg = await self.ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                return None
            if msg.type != aiohttp.WSMsgType.TEXT:
                return None
            *done, self._buffer = (self._buffer + msg.data).split(RS)
            self._records.extend(done)
        return json.loads(self._records.pop(0), parse_float=Decimal)

    async def event(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The next record that is not a Ping."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.next(max(0.01, deadline - time.monotonic()))
            if msg is None or msg.get("type") != 6:
                return msg

    async def events(self, count: int, timeout: float = 2.0) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            msg = await self.event(timeout)
            assert msg is not None, f"only {len(out)} of {count} events: {out}"
            out.append(msg)
        return out

    async def subscribe_user(self, account: int = ACCOUNT) -> None:
        for target in ("SubscribeOrders", "SubscribePositions", "SubscribeTrades"):
            await self.invoke(target, account)
        await self.invoke("SubscribeAccounts")
        for _ in range(4):
            assert (await self.event())["type"] == 3


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# =========================================================================== REST: auth and envelope

def test_login_envelope_bad_credentials_and_missing_fields(gw):
    url = gw.base_url + "/api/Auth/loginKey"
    ok = httpx.post(url, json={"userName": "sandbox", "apiKey": "sandbox-key"}).json()
    assert ok["success"] is True and ok["errorCode"] == 0 and ok["errorMessage"] is None
    assert ok["token"].count(".") == 2  # a JWT
    bad = httpx.post(url, json={"userName": "sandbox", "apiKey": "wrong"})
    assert bad.status_code == 200
    assert bad.json() == {"success": False, "errorCode": 3, "errorMessage": "Invalid credentials.", "token": None}
    missing = httpx.post(url, json={"userName": "sandbox"})
    assert missing.status_code == 400 and "apiKey" in missing.json()["errors"]
    assert httpx.post(url, content=b"not json").status_code == 400


def test_auth_401_validate_new_token_and_logout(gw):
    rest = Rest(gw)
    assert httpx.post(gw.base_url + "/api/Account/search", json={"onlyActiveAccounts": True}).status_code == 401
    assert rest.post("Account/search", {"onlyActiveAccounts": True}, token="garbage").status_code == 401
    new = rest.call("Auth/validate")["newToken"]
    assert new != rest.token
    assert rest.post("Account/search", {"onlyActiveAccounts": True}, token=new).status_code == 200
    assert rest.call("Auth/logout")["success"]
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 401
    assert rest.post("Account/search", {"onlyActiveAccounts": True}, token=new).status_code == 200
    assert httpx.get(gw.base_url + "/api/Status/ping").text == "pong"


def test_token_expires_after_ttl(make_gateway):
    gw = make_gateway(token_ttl_s=0.3)
    rest = Rest(gw)
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 200
    time.sleep(0.35)
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 401


def test_accounts(gw):
    accounts = Rest(gw).call("Account/search", {"onlyActiveAccounts": True})["accounts"]
    assert accounts == [
        {"id": 1001, "name": "PRAC-50K-SANDBOX", "balance": 50000, "canTrade": True, "isVisible": True,
         "simulated": True},
        {"id": 1002, "name": "FUNDED-50K-SANDBOX", "balance": 50000, "canTrade": True, "isVisible": True,
         "simulated": False}]


def test_contract_search_front_month_and_roots(make_gateway):
    rest = Rest(make_gateway(data_dir=DEMO))  # 2026-04-08: June (M) is the front quarter
    mes = rest.call("Contract/search", {"searchText": "MES", "live": False})["contracts"]
    assert mes == [
        {"id": "CON.F.US.MES.M26", "name": "MESM6", "description": "Micro E-mini S&P 500: June 2026",
         "tickSize": Decimal("0.25"), "tickValue": Decimal("1.25"), "activeContract": True, "symbolId": "F.US.MES"},
        {"id": "CON.F.US.MES.U26", "name": "MESU6", "description": "Micro E-mini S&P 500: September 2026",
         "tickSize": Decimal("0.25"), "tickValue": Decimal("1.25"), "activeContract": False, "symbolId": "F.US.MES"}]
    enq = rest.call("Contract/search", {"searchText": "ENQ", "live": False})["contracts"]
    assert [(c["id"], c["name"], c["tickValue"]) for c in enq] == [
        ("CON.F.US.ENQ.M26", "NQM6", Decimal("5")), ("CON.F.US.ENQ.U26", "NQU6", Decimal("5"))]
    assert {c["id"] for c in rest.call("Contract/available", {"live": False})["contracts"]} == {
        f"CON.F.US.{root}.{m}26" for root in ("MES", "MNQ", "EP", "ENQ") for m in "MU"}
    assert rest.call("Contract/searchById", {"contractId": EP})["contract"]["name"] == "ESM6"
    assert rest.call("Contract/searchById", {"contractId": "CON.F.US.XX.Z99"}) == {
        "success": False, "errorCode": 1, "errorMessage": "Contract 'CON.F.US.XX.Z99' not found.", "contract": None}


# =========================================================================== REST: history

def test_history_newest_first_limit_paging_and_no_future_bars(gw):
    rest = Rest(gw)
    before = bars(rest)["bars"]  # replay not started: only the history day
    assert [b["t"] for b in before[:2]] == ["2026-04-07T13:48:00+00:00", "2026-04-07T13:46:00+00:00"]
    assert len(before) == 10 and before[0] == {"t": "2026-04-07T13:48:00+00:00", "o": 4999, "h": 5000,
                                                "l": 4998, "c": Decimal("4999.5"), "v": 100}
    assert [b["t"][11:16] for b in bars(rest, limit=3)["bars"]] == ["13:48", "13:46", "13:44"]
    page2 = bars(rest, limit=3, end="2026-04-07T13:43:00Z")["bars"]  # page back by moving endTime
    assert [b["t"][11:16] for b in page2] == ["13:42", "13:40", "13:38"]
    gw.advance(1)  # first tick of 13:30 on 04-08: the bar is forming, not closed
    assert len(bars(rest)["bars"]) == 10
    forming = bars(rest, partial=True)["bars"][0]
    assert forming == {"t": "2026-04-08T13:30:00+00:00", "o": 5000, "h": 5000, "l": 5000, "c": 5000, "v": 25}
    gw.advance(3)  # all four ticks of bar 0 played, clock 13:31:30: still not closed
    assert len(bars(rest)["bars"]) == 10
    gw.advance(1)  # 13:32: bar 0 closed
    latest = bars(rest)["bars"]
    assert len(latest) == 11 and latest[0]["t"] == "2026-04-08T13:30:00+00:00" and latest[0]["v"] == 100
    partial = bars(rest, partial=True)["bars"]  # the forming bar holds only the tick already played
    assert len(partial) == 12 and (partial[0]["t"], partial[0]["v"]) == ("2026-04-08T13:32:00+00:00", 25)


def test_history_aggregation_units_and_errors(gw):
    rest = Rest(gw)
    five = bars(rest, unit=2, number=5)["bars"]  # 2-min bars counted in the 5-min bucket they start in
    assert [(b["t"][11:16], b["v"]) for b in five] == [("13:45", 200), ("13:40", 300), ("13:35", 200), ("13:30", 300)]
    assert five[-1] == {"t": "2026-04-07T13:30:00+00:00", "o": 4990, "h": 4993, "l": 4989, "c": Decimal("4992.5"),
                        "v": 300}
    assert [b["v"] for b in bars(rest, unit=3, number=1)["bars"]] == [1000]
    day = bars(rest, unit=4, number=1)["bars"]
    assert day == [{"t": "2026-04-06T22:00:00+00:00", "o": 4990, "h": 5000, "l": 4989, "c": Decimal("4999.5"),
                    "v": 1000}]
    assert bars(rest, unit=2, number=1)["errorCode"] == 3  # 1-min from 2-min data: refused
    assert bars(rest, unit=7)["errorCode"] == 2
    assert bars(rest, limit=0)["errorCode"] == 4 and bars(rest, limit=20_001)["errorCode"] == 4
    assert bars(rest, contract="CON.F.US.NOPE.M26")["errorCode"] == 1
    assert bars(rest, contract="CON.F.US.MES.U26")["bars"] == []  # listed, no data


def test_rate_limits_per_token_with_separate_bars_window(make_gateway):
    gw = make_gateway(rate_limit=(3, 60.0), bars_rate_limit=(2, 60.0))
    rest = Rest(gw)
    assert [bars(rest)["success"] for _ in range(2)] == [True, True]
    assert rest.post("History/retrieveBars", {}).status_code == 429
    codes = [rest.post("Account/search", {"onlyActiveAccounts": True}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    other = Rest(gw)  # another token has its own windows
    assert other.post("Account/search", {"onlyActiveAccounts": True}).status_code == 200


# =========================================================================== REST: orders, positions, trades

def test_limit_orders_rest_fill_positions_and_half_trades(gw):
    rest = Rest(gw)
    gw.advance(1)  # last 5000
    buy = rest.place(type=1, side=0, limitPrice=4999.5, customTag="buy-1")
    assert buy["success"] and isinstance(buy["orderId"], int)
    assert [o["id"] for o in rest.call("Order/searchOpen", {"accountId": ACCOUNT})["orders"]] == [buy["orderId"]]
    gw.advance(1)  # 4999 trades through 4999.5
    order = rest.call("Order/searchById", {"accountId": ACCOUNT, "orderId": buy["orderId"]})["order"]
    assert (order["status"], order["fillVolume"], order["filledPrice"], order["customTag"]) == (
        2, 1, Decimal("4999.5"), "buy-1")
    [pos] = rest.call("Position/searchOpen", {"accountId": ACCOUNT})["positions"]
    assert (pos["contractId"], pos["type"], pos["size"], pos["averagePrice"]) == (MES, 1, 1, Decimal("4999.5"))
    sell = rest.place(type=1, side=1, limitPrice=5000.75)
    gw.advance(1)  # 5001 trades through 5000.75
    trades = rest.call("Trade/search", {"accountId": ACCOUNT, "startTimestamp": "2026-04-08T00:00:00Z"})["trades"]
    assert [(t["orderId"], t["side"], t["price"], t["profitAndLoss"], t["fees"]) for t in trades] == [
        (buy["orderId"], 0, Decimal("4999.5"), None, Decimal("0.61")),
        (sell["orderId"], 1, Decimal("5000.75"), Decimal("6.25"), Decimal("0.61"))]  # 5 ticks x $1.25
    assert trades[0]["creationTimestamp"] == "2026-04-08T13:30:30+00:00"
    assert rest.call("Position/searchOpen", {"accountId": ACCOUNT})["positions"] == []
    assert gw.account(ACCOUNT)["balance"] == Decimal("50005.03")
    assert rest.call("Trade/search", {"accountId": ACCOUNT, "startTimestamp": "2026-04-09T00:00:00Z"})["trades"] == []


def test_market_orders_fill_at_last_and_position_closes(gw):
    rest = Rest(gw)
    gw.advance(1)  # last 5000
    assert rest.place(type=2, side=0, size=2)["success"]
    assert gw.positions(ACCOUNT)[0]["size"] == 2 and gw.trades(ACCOUNT)[0]["price"] == 5000
    partial = {"accountId": ACCOUNT, "contractId": MES}
    assert rest.call("Position/partialCloseContract", {**partial, "size": 5})["errorCode"] == 5
    assert rest.call("Position/partialCloseContract", {**partial, "size": 1})["success"]
    assert gw.positions(ACCOUNT)[0]["size"] == 1
    assert gw.trades(ACCOUNT)[-1]["profitAndLoss"] == 0  # a closing fill at the entry price: 0, not null
    gw.advance(1)  # 4999
    assert rest.call("Position/closeContract", {"accountId": ACCOUNT, "contractId": MES})["success"]
    assert gw.positions(ACCOUNT) == [] and gw.trades(ACCOUNT)[-1]["profitAndLoss"] == Decimal("-5")
    assert rest.call("Position/closeContract", {"accountId": ACCOUNT, "contractId": MES})["errorCode"] == 2
    assert rest.call("Position/closeContract", {"accountId": ACCOUNT, "contractId": "CON.F.US.X.Z26"})["errorCode"] == 3


def test_modify_and_cancel(gw):
    rest = Rest(gw)
    gw.advance(1)
    oid = rest.place(type=1, side=0, limitPrice=4990)["orderId"]
    assert rest.call("Order/modify", {"accountId": ACCOUNT, "orderId": oid, "limitPrice": 4995.25})["success"]
    assert gw.open_orders(ACCOUNT)[0]["limitPrice"] == Decimal("4995.25")
    assert rest.call("Order/modify", {"accountId": ACCOUNT, "orderId": oid, "stopPrice": 4990})["errorCode"] == 3
    assert rest.call("Order/cancel", {"accountId": ACCOUNT, "orderId": oid})["success"]
    assert rest.call("Order/searchById", {"accountId": ACCOUNT, "orderId": oid})["order"]["status"] == 3
    assert rest.call("Order/cancel", {"accountId": ACCOUNT, "orderId": oid})["errorCode"] == 3
    assert rest.call("Order/cancel", {"accountId": ACCOUNT, "orderId": 42})["errorCode"] == 2
    live = rest.call("Order/place", {"accountId": 1002, "contractId": MES, "type": 1, "side": 0, "size": 1,
                                     "limitPrice": 4990})
    assert live["success"]
    assert rest.call("Order/cancel", {"accountId": 1002, "orderId": live["orderId"]}) == {
        "success": False, "errorCode": 6, "errorMessage": "Live accounts not supported"}


def test_answer_delay_serves_other_requests_meanwhile_and_is_validated(make_gateway):
    """``answer_delay_s`` stands in for the network: the order is processed (and recorded) at once,
    its answer written later, and other requests are answered meanwhile."""
    gw = make_gateway(answer_delay_s=1.0)
    rest = Rest(gw)
    gw.advance(1)
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(rest.place(type=1, side=0, limitPrice=4990)))
               for _ in range(3)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 5
    while len(gw.orders_received) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(gw.orders_received) == 3 and answers == []  # all three processed, no answer yet
    assert len(gw.open_orders(ACCOUNT)) == 3
    for th in threads:
        th.join()
    assert [a["success"] for a in answers] == [True] * 3
    with pytest.raises(ValueError, match="answer_delay_s"):
        SandboxConfig(answer_delay_s=-0.1)


@pytest.mark.parametrize("fields,code,fragment", [
    ({"type": 1, "side": 0, "limitPrice": 4990, "customTag": "dup"}, 2, "customTag must be unique"),
    ({"type": 1, "side": 0, "limitPrice": 4990.1}, 2, "tick size"),
    ({"type": 5, "side": 0, "trailPrice": 4990}, 2, "not supported"),
    ({"type": 2, "side": 3}, 2, "side"),
    ({"type": 2, "side": 0, "size": 0}, 2, "size"),
    ({"type": 2, "side": 0, "accountId": 7}, 1, "Account"),
    ({"type": 2, "side": 0, "contractId": "CON.F.US.MES.Z99"}, 8, "not found"),
    ({"type": 2, "side": 0, "contractId": "CON.F.US.MES.U26"}, 9, "not active"),
    ({"type": 2, "side": 0, "stopLossBracket": {"ticks": 8, "type": 4}}, 2, "negative"),
])
def test_place_rejections(gw, fields, code, fragment):
    rest = Rest(gw)
    assert rest.place(type=1, side=0, limitPrice=4990, customTag="dup")["success"]
    answer = rest.place(**fields)
    assert (answer["success"], answer["errorCode"], answer["orderId"]) == (False, code, None)
    assert fragment in answer["errorMessage"]


def test_place_body_type_errors_are_http_400(gw):
    r = Rest(gw).post("Order/place", {"accountId": ACCOUNT, "contractId": MES, "type": "limit", "side": 0, "size": 1})
    assert r.status_code == 400 and r.json()["errors"]["type"]
    assert Rest(gw).post("Order/place", {"accountId": ACCOUNT}).status_code == 400


def test_brackets_suspended_then_activated_and_oco(gw):
    rest = Rest(gw)
    gw.advance(1)  # last 5000
    entry = rest.place(type=1, side=0, limitPrice=4999.5, customTag="br",
                       stopLossBracket={"ticks": -4, "type": 4}, takeProfitBracket={"ticks": 6, "type": 1})["orderId"]
    working = rest.orders(statuses=[1, 6, 7, 8])
    assert [(o["customTag"], o["status"], o["parentOrderId"]) for o in working] == [
        ("br", 1, None), ("br-SL", 8, entry), ("br-TP", 8, entry)]
    assert working[1]["stopPrice"] is None and working[2]["linkedOrderId"] == working[1]["id"]
    assert [o["id"] for o in rest.call("Order/searchOpen", {"accountId": ACCOUNT})["orders"]] == [entry]
    gw.advance(1)  # 4999: entry fills at 4999.5, legs become Open with absolute prices
    legs = {o["customTag"]: o for o in rest.call("Order/searchOpen", {"accountId": ACCOUNT})["orders"]}
    assert (legs["br-SL"]["type"], legs["br-SL"]["side"], legs["br-SL"]["stopPrice"]) == (4, 1, Decimal("4998.5"))
    assert (legs["br-TP"]["type"], legs["br-TP"]["limitPrice"]) == (1, Decimal("5001"))
    gw.advance(3)  # 5001 (at the TP: no fill without trading through), 5000.5, 5000.5
    assert len(rest.call("Order/searchOpen", {"accountId": ACCOUNT})["orders"]) == 2
    gw.advance(1)  # 5003: TP fills, SL cancelled (OCO)
    final = {o["customTag"]: o["status"] for o in rest.orders()}
    assert final == {"br": 2, "br-TP": 2, "br-SL": 3}
    assert gw.positions(ACCOUNT) == [] and gw.trades(ACCOUNT)[-1]["profitAndLoss"] == Decimal("7.5")
    assert rest.place(type=2, side=0, customTag="br-SL")["errorCode"] == 2  # leg tags are taken too


def test_cancelling_an_entry_cancels_its_suspended_legs(gw):
    rest = Rest(gw)
    entry = rest.place(type=1, side=1, limitPrice=5010, stopLossBracket={"ticks": 8, "type": 4},
                       takeProfitBracket={"ticks": -8, "type": 1})["orderId"]
    rest.call("Order/cancel", {"accountId": ACCOUNT, "orderId": entry})
    assert [o["status"] for o in rest.orders()] == [3, 3, 3] and gw.open_orders(ACCOUNT) == []


def test_order_v2_query_paging_sorting_and_search_window(gw):
    rest = Rest(gw)
    ids = [rest.place(type=1, side=0, limitPrice=4980 + i)["orderId"] for i in range(5)]
    page = rest.call("Order/v2/query", {"filter": {"accountId": ACCOUNT}, "pageSize": 2, "pageOffset": 1,
                                        "sortBy": 1, "sortDirection": 1, "includeTotalCount": True})
    assert [o["id"] for o in page["orders"]] == [ids[3], ids[2]] and page["totalCount"] == 5
    assert rest.post("Order/v2/query", {"filter": {}}).status_code == 400
    assert rest.call("Order/v2/query", {"filter": {"accountId": 5}})["errorCode"] == 1
    created = rest.orders()[0]["creationTimestamp"]
    assert created == "2026-04-08T13:29:59.999999+00:00"  # the replay clock, not the wall clock
    found = rest.call("Order/search", {"accountId": ACCOUNT, "startTimestamp": "2026-04-08T00:00:00Z"})["orders"]
    assert len(found) == 5
    assert rest.call("Order/search", {"accountId": ACCOUNT, "startTimestamp": "2026-04-08T00:00:00Z",
                                      "endTimestamp": "2026-04-08T01:00:00Z"})["orders"] == []


def test_replay_end_sets_replay_done(gw):
    assert gw.advance(100) == 24 and gw.replay_done.is_set()
    assert gw.advance(1) == 0
    assert gw.now_ns() == int(dt.datetime(2026, 4, 8, 13, 42, tzinfo=dt.timezone.utc).timestamp()) * 10**9


# =========================================================================== hubs: protocol

def test_hub_handshake_framing_completions_and_ping(make_gateway):
    gw = make_gateway(ping_interval_s=0.2)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "market", login(gw))
            two = (json.dumps({"type": 1, "invocationId": "a", "target": "SubscribeContractQuotes", "arguments": [MES]})
                   + RS + json.dumps({"type": 1, "invocationId": "b", "target": "SubscribeContractTrades",
                                      "arguments": [MES]}) + RS)
            await hub.send_raw(two)  # two records in one frame
            assert await hub.events(2) == [{"type": 3, "invocationId": "a", "result": None},
                                           {"type": 3, "invocationId": "b", "result": None}]
            await hub.invoke("UnsubscribeContractQuotes", MES, invocation_id=None)  # no reply
            await hub.invoke("SubscribeContractQuotes", MES, invocation_id="c")
            assert await hub.event() == {"type": 3, "invocationId": "c", "result": None}
            await hub.invoke("Nope", invocation_id="d")
            assert await hub.event() == {"type": 3, "invocationId": "d", "error": "Unknown hub method 'Nope'"}
            await hub.invoke("SubscribeContractQuotes", 42, invocation_id="e")
            assert await hub.event() == {"type": 3, "invocationId": "e", "error":
                                         "Failed to invoke 'SubscribeContractQuotes' due to an error on the server."}
            await hub.invoke("SubscribeContractQuotes", "CON.F.US.NOPE.Z26", invocation_id="f")
            assert "HubException: Unknown contract" in (await hub.event())["error"]
            assert await hub.next(timeout=1.0) == {"type": 6}

    run(scenario())


@pytest.mark.parametrize("first,error", [
    ({"protocol": "messagepack", "version": 1}, "The protocol 'messagepack' is not supported."),
    ({"type": 1, "target": "SubscribeAccounts", "arguments": []}, "Expected a handshake request"),
])
def test_hub_refuses_a_bad_handshake(gw, first, error):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "user", login(gw), handshake=False)
            await hub.send_raw(json.dumps(first) + RS)
            assert error in (await hub.next())["error"]
            assert await hub.next() is None and hub.ws.closed

    run(scenario())


def test_hub_needs_a_valid_token_and_closes_on_protocol_errors(gw):
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            for url in (f"{gw.base_url}/hubs/user", f"{gw.base_url}/hubs/user?access_token=bogus"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await session.ws_connect(url)
                assert err.value.status == 401
            hub = await Hub.open(session, gw, "user", login(gw))
            await hub.send_raw("{not json" + RS)
            close = await hub.next()
            assert close["type"] == 7 and close["error"].startswith("Connection closed with an error.")
            assert await hub.next() is None

    run(scenario())


def test_negotiate_then_connect_with_connection_token(gw):
    token = login(gw)
    url = gw.base_url + "/hubs/user/negotiate?negotiateVersion=1"
    assert httpx.post(url).status_code == 401
    neg = httpx.post(url, headers={"Authorization": f"Bearer {token}"}).json()
    assert neg["negotiateVersion"] == 1 and neg["connectionId"] and neg["connectionToken"]
    assert neg["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]

    async def scenario() -> None:
        ws_url = f"{gw.base_url.replace('http', 'ws')}/hubs/user?id={neg['connectionToken']}&access_token={token}"
        async with aiohttp.ClientSession() as session:
            hub = Hub(await session.ws_connect(ws_url))
            await hub.send_raw(json.dumps({"protocol": "json", "version": 1}) + RS)
            assert await hub.next() == {}
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:  # an id is good for one connection
                await session.ws_connect(ws_url)
            assert err.value.status == 404

    run(scenario())


def test_silent_client_is_closed_after_client_timeout(make_gateway):
    gw = make_gateway(client_timeout_s=0.3)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "user", login(gw))
            close = await hub.next(timeout=2.0)
            assert close == {"type": 7, "error": "Server timeout elapsed without receiving a message from the client.",
                             "allowReconnect": True}

    run(scenario())


def test_hub_connection_closes_when_its_token_expires(make_gateway):
    gw = make_gateway(token_ttl_s=0.4, ping_interval_s=0.1)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "user", login(gw))
            assert await hub.event(timeout=2.0) == {"type": 7, "error": "Authentication token expired.",
                                                    "allowReconnect": True}
            assert await hub.next() is None

    run(scenario())


# =========================================================================== hubs: events

def test_user_hub_events_wrapped_and_closed_position(gw):
    rest = Rest(gw)
    gw.advance(1)  # last 5000

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "user", rest.token)
            await hub.subscribe_user()
            await asyncio.to_thread(rest.place, type=2, side=0, customTag="m1")
            got = await hub.events(5)
            assert [m["target"] for m in got] == ["GatewayUserOrder", "GatewayUserOrder", "GatewayUserTrade",
                                                  "GatewayUserPosition", "GatewayUserAccount"]
            opened, filled, trade, position, account = (m["arguments"][0] for m in got)
            assert opened["action"] == 1 and opened["data"]["status"] == 1 and opened["data"]["customTag"] == "m1"
            assert filled["action"] == 2 and filled["data"]["status"] == 2 and filled["data"]["filledPrice"] == 5000
            assert trade["profitAndLoss"] is None and trade["price"] == 5000 and "action" not in trade
            assert position == {"action": 1, "data": {**position["data"], "type": 1, "size": 1}}
            assert account["id"] == ACCOUNT and account["balance"] == Decimal("49999.39")
            await asyncio.to_thread(rest.call, "Position/closeContract", {"accountId": ACCOUNT, "contractId": MES})
            closing = await hub.events(5)
            assert closing[3]["target"] == "GatewayUserPosition"
            closed = closing[3]["arguments"][0]
            assert closed["action"] == 2 and (closed["data"]["type"], closed["data"]["size"]) == (0, 0)
            assert closed["data"]["id"] == position["data"]["id"]

    run(scenario())


def test_market_hub_streams_quotes_and_trades_after_the_first_subscription(make_gateway):
    gw = make_gateway(speed=float("inf"))

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "market", login(gw))
            await asyncio.sleep(0.1)
            assert not gw.quote_sent_ns and not gw.replay_done.is_set()  # nothing before a subscription
            both = [{"type": 1, "invocationId": t, "target": t, "arguments": [MES]}
                    for t in ("SubscribeContractTrades", "SubscribeContractQuotes")]
            await hub.send_raw("".join(json.dumps(m) + RS for m in both))  # one frame: no tick in between
            received = []
            while (msg := await hub.event(timeout=0.5)) is not None:
                received.append(msg)
            received = [m for m in received if m["type"] == 1]
            trades = [m["arguments"] for m in received if m["target"] == "GatewayTrade"]
            quotes = [m["arguments"] for m in received if m["target"] == "GatewayQuote"]
            assert len(quotes) == len(trades) == 24
            cid, [trade] = trades[0]
            assert cid == MES and trade == {"symbolId": "F.US.MES", "contractId": MES, "price": 5000,
                                            "timestamp": "2026-04-08T13:30:00+00:00", "type": 0, "volume": 25}
            cid, quote = quotes[-1]
            assert cid == MES and quote["lastPrice"] == 5005 and quote["symbol"] == "F.US.MES"
            assert (quote["bestBid"], quote["bestAsk"]) == (Decimal("5004.75"), Decimal("5005.25"))
            assert (quote["open"], quote["high"], quote["low"], quote["volume"]) == (5000, 5006, 4997, 600)
            assert quote["change"] == Decimal("5.5")  # vs the history day's last close 4999.5
            assert quote["timestamp"] == "2026-04-08T13:41:30+00:00"

    run(scenario())
    assert gw.replay_done.wait(2.0)
    first = int(dt.datetime(2026, 4, 8, 13, 30, tzinfo=dt.timezone.utc).timestamp()) * 10**9
    assert (MES, first) in gw.quote_sent_ns and len(gw.quote_sent_ns) == 24


def test_realtime_speed_paces_the_replay(make_gateway):
    gw = make_gateway(speed=600.0)  # a 2-min bar in 0.2 s: 4 ticks 50 ms apart

    async def scenario() -> float:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "market", login(gw))
            await hub.invoke("SubscribeContractQuotes", MES)
            t0 = time.monotonic()
            await hub.events(1 + 8, timeout=2.0)
            return time.monotonic() - t0

    elapsed = run(scenario())
    assert 0.3 <= elapsed < 1.0  # 8 ticks: the 8th is due 7 x 50 ms after the first


def test_signalrcore_client_with_skip_negotiation_receives_quotes(make_gateway):
    gw = make_gateway(speed=float("inf"))
    token = login(gw)
    opened, got = threading.Event(), []
    hub = (HubConnectionBuilder()
           .with_url(gw.base_url.replace("http", "ws") + "/hubs/market",
                     options={"skip_negotiation": True, "access_token_factory": lambda: token})
           .build())
    hub.on_open(opened.set)
    hub.on("GatewayQuote", got.append)
    hub.start()
    try:
        assert opened.wait(5.0)
        hub.send("SubscribeContractQuotes", [MES])
        assert gw.replay_done.wait(5.0)
        deadline = time.monotonic() + 3.0
        while len(got) < 24 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        gw.stop()  # signalrcore's stop() joins a receive thread that only ends when the server closes
        hub.stop()
    assert len(got) == 24 and got[0][0] == MES and got[0][1]["lastPrice"] == 5000


def test_signalrcore_client_with_negotiation_and_query_token(make_gateway):
    gw = make_gateway(speed=float("inf"))
    token = login(gw)
    opened, got = threading.Event(), []
    hub = HubConnectionBuilder().with_url(gw.base_url + f"/hubs/market?access_token={token}", options={}).build()
    hub.on_open(opened.set)
    hub.on("GatewayTrade", got.append)
    hub.start()
    try:
        assert opened.wait(5.0)
        hub.send("SubscribeContractTrades", [EP])
        deadline = time.monotonic() + 5.0
        while len(got) < 24 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        gw.stop()
        hub.stop()
    assert len(got) == 24 and got[0][0] == EP and got[0][1][0]["contractId"] == EP


def test_auth_logout_closes_the_tokens_hub_connections(gw):
    rest = Rest(gw)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "user", rest.token)
            await asyncio.to_thread(rest.call, "Auth/logout")
            assert await hub.event() == {"type": 7, "error": "Logged out.", "allowReconnect": False}

    run(scenario())


# =========================================================================== faults

def test_fault_rate_limit_burst(gw):
    rest = Rest(gw)
    gw.faults.rate_limit_burst(2)
    codes = [rest.post("Account/search", {"onlyActiveAccounts": True}).status_code for _ in range(3)]
    assert codes == [429, 429, 200]


def test_fault_server_errors_on_chosen_paths_do_not_process(gw):
    rest = Rest(gw)
    gw.faults.server_errors(1, status=503, paths=["Order/place"])
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 200
    r = rest.post("Order/place", {"accountId": ACCOUNT, "contractId": MES, "type": 1, "side": 0, "size": 1,
                                  "limitPrice": 4990, "customTag": "x"})
    assert r.status_code == 503 and rest.orders() == []
    assert len(gw.orders_received) == 1 and gw.orders_received[0][1]["customTag"] == "x"
    assert rest.place(type=1, side=0, limitPrice=4990, customTag="x")["success"]  # not processed: tag still free


@pytest.mark.parametrize("status", [504, None])
def test_fault_ambiguous_place_executes_the_order(gw, status):
    rest = Rest(gw)
    gw.faults.ambiguous_place(1, status=status)
    body = {"accountId": ACCOUNT, "contractId": MES, "type": 1, "side": 0, "size": 1, "limitPrice": 4990,
            "customTag": "amb"}
    if status is None:
        with pytest.raises(httpx.TransportError):
            rest.post("Order/place", body)
    else:
        assert rest.post("Order/place", body).status_code == 504
    assert [o["customTag"] for o in rest.orders()] == ["amb"]  # it happened
    assert rest.place(**{k: v for k, v in body.items() if k != "accountId"})["errorCode"] == 2  # retry: duplicate tag


def test_fault_drop_connections_no_close_message_and_subscriptions_lost(gw):
    token = login(gw)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            market = await Hub.open(session, gw, "market", token)
            user = await Hub.open(session, gw, "user", token)
            await market.invoke("SubscribeContractQuotes", MES)
            assert (await market.event())["type"] == 3
            await asyncio.to_thread(gw.faults.drop_connections, "market")
            assert await market.next() is None  # no Close record: the socket just died
            await user.invoke("SubscribeAccounts")
            assert (await user.event())["type"] == 3  # the other hub is untouched
            again = await Hub.open(session, gw, "market", token)
            await asyncio.to_thread(gw.advance, 1)
            assert await again.event(timeout=0.3) is None  # nothing survives a reconnect
            await again.invoke("SubscribeContractQuotes", MES)
            assert (await again.event())["type"] == 3
            await asyncio.to_thread(gw.advance, 1)
            assert (await again.event())["target"] == "GatewayQuote"

    run(scenario())


def test_fault_expire_tokens(gw):
    rest = Rest(gw)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "market", rest.token)
            await asyncio.to_thread(gw.faults.expire_tokens)
            assert await hub.event() == {"type": 7, "error": "Authentication token expired.", "allowReconnect": True}
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await Hub.open(session, gw, "market", rest.token)
            assert err.value.status == 401
            await Hub.open(session, gw, "market", await asyncio.to_thread(login, gw))

    run(scenario())
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 401


def test_fault_logout_pushes_gateway_logout_then_closes(gw):
    rest = Rest(gw)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            user = await Hub.open(session, gw, "user", rest.token)
            market = await Hub.open(session, gw, "market", rest.token)
            await asyncio.to_thread(gw.faults.logout)
            assert await user.event() == {"type": 1, "target": "GatewayLogout", "arguments": []}
            assert (await user.event())["type"] == 7 and (await market.event())["type"] == 7

    run(scenario())
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 200  # tokens stay valid


def test_fault_delay_events(gw):
    rest = Rest(gw)
    gw.advance(1)

    async def scenario() -> float:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "user", rest.token)
            await hub.invoke("SubscribeOrders", ACCOUNT)
            assert (await hub.event())["type"] == 3
            gw.faults.delay_events(300, hub="user")
            t0 = time.monotonic()
            await asyncio.to_thread(rest.place, type=1, side=0, limitPrice=4990)
            assert (await hub.event())["target"] == "GatewayUserOrder"
            return time.monotonic() - t0

    assert run(scenario()) >= 0.3


def _order_statuses(gw: SandboxGateway, arm: Callable[[], None]) -> list[int]:
    """Subscribe to orders, arm a fault, place then cancel a resting limit; statuses as received."""
    rest = Rest(gw)

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession() as session:
            hub = await Hub.open(session, gw, "user", rest.token)
            await hub.invoke("SubscribeOrders", ACCOUNT)
            assert (await hub.event())["type"] == 3
            arm()
            oid = (await asyncio.to_thread(rest.place, type=1, side=0, limitPrice=4990))["orderId"]
            await asyncio.to_thread(rest.call, "Order/cancel", {"accountId": ACCOUNT, "orderId": oid})
            out = []
            while (msg := await hub.event(timeout=0.5)) is not None:
                out.append(msg["arguments"][0]["data"]["status"])
            return out

    return run(scenario())


def test_fault_duplicate_events(gw):
    assert _order_statuses(gw, lambda: gw.faults.duplicate_events(1)) == [1, 1, 3]


def test_fault_reorder_events(gw):
    assert _order_statuses(gw, lambda: gw.faults.reorder_events(2)) == [3, 1]


def test_fault_clear_disarms_everything(gw):
    gw.faults.rate_limit_burst(5)
    gw.faults.duplicate_events(5)
    gw.faults.clear()
    assert Rest(gw).post("Account/search", {"onlyActiveAccounts": True}).status_code == 200
    assert _order_statuses(gw, lambda: None) == [1, 3]


def test_faults_over_rest(gw):
    rest = Rest(gw)
    url = gw.base_url + "/sandbox/faults"
    armed = httpx.post(url, json={"fault": "server_errors", "n": 1, "status": 502, "paths": ["Account/search"]})
    assert armed.status_code == 200 and armed.json()["armed"]["server_errors"][0]["status"] == 502
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 502
    assert httpx.post(url, json={"fault": "nope"}).status_code == 400
    assert httpx.post(url, json={"fault": "rate_limit_burst", "n": -1}).status_code == 400
    assert httpx.post(url, json={"fault": "expire_tokens"}).status_code == 200
    assert rest.post("Account/search", {"onlyActiveAccounts": True}).status_code == 401
    state = httpx.get(gw.base_url + "/sandbox/state").json()
    assert state["replayStarted"] is False and state["now"] == "2026-04-08T13:29:59.999999+00:00"
    assert httpx.post(gw.base_url + "/sandbox/advance", json={"ticks": 2}).json()["replayed"] == 2
