"""ProjectX REST client against a real scripted HTTP server on 127.0.0.1 (no mocks of httpx).

:class:`ScriptedGateway` is a small aiohttp server on its own thread: by default it logs users in,
validates tokens and answers ``success:true``; a test scripts per-path replies (status, body,
headers, delay) and reads back every request that reached it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import pytest
from aiohttp import web
from loguru import logger

from actors.core import wait_until
from infra.projectx import errors as pxe
from infra.projectx.mapping import BarUnit, GwOrderType, GwSide
from infra.projectx.ratelimit import RateLimit, SlidingWindowLimiter
from infra.projectx.rest import ProjectXClient

UTC = dt.timezone.utc


@dataclass
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"success": True, "errorCode": 0, "errorMessage": None})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def ok(**payload: Any) -> Reply:
    """A ``success:true`` envelope with ``payload``."""
    return Reply(body={"success": True, "errorCode": 0, "errorMessage": None, **payload})


def fail(code: int, message: str | None = None, **payload: Any) -> Reply:
    """A ``success:false`` envelope (HTTP 200)."""
    return Reply(body={"success": False, "errorCode": code, "errorMessage": message, **payload})


@dataclass
class Request:
    path: str
    body: Any
    auth: str | None


class ScriptedGateway:
    """A real HTTP server scripted per path. Tokens: ``Auth/loginKey`` issues ``tok-<n>``,
    ``Auth/validate`` swaps a valid token for a new one; other paths answer 401 to unknown tokens."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.scripts: dict[str, list[Reply | Callable[[Any], Reply]]] = {}
        self.valid: set[str] = set()
        self.issued = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-gw", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ScriptedGateway":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def script(self, path: str, *replies: Reply | Callable[[Any], Reply]) -> None:
        """Queue replies for ``path`` (e.g. ``"Order/place"``), used once each, in order."""
        self.scripts.setdefault(path, []).extend(replies)

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def expire_tokens(self) -> None:
        self.valid.clear()

    def _issue(self) -> str:
        self.issued += 1
        token = f"tok-{self.issued}"
        self.valid.add(token)
        return token

    def _default(self, path: str, auth: str | None) -> Reply:
        bearer = (auth or "").removeprefix("Bearer ")
        if path == "Auth/loginKey":
            return ok(token=self._issue())
        if bearer not in self.valid:
            return Reply(status=401, body="")
        if path == "Auth/validate":
            self.valid.discard(bearer)
            return ok(newToken=self._issue())
        return ok()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix("/api/")
        raw = await request.read()
        body = json.loads(raw, parse_float=Decimal) if raw else None
        auth = request.headers.get("Authorization")
        self.requests.append(Request(path, body, auth))
        queued = self.scripts.get(path)
        reply = queued.pop(0) if queued else self._default(path, auth)
        if callable(reply):
            reply = reply(body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body, default=float)
        return web.Response(status=reply.status, text=text, headers=reply.headers, content_type="application/json")


class FakeClock:
    """Monotonic seconds that only move when someone sleeps (records the sleeps)."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


@pytest.fixture
def gw():
    server = ScriptedGateway().start()
    yield server
    server.stop()


def make_client(gw: ScriptedGateway, **kw: Any) -> ProjectXClient:
    kw.setdefault("backoff_base_s", 0.001)
    kw.setdefault("backoff_max_s", 0.01)
    return ProjectXClient(gw.url, "sandbox", "secret-api-key", **kw)


# --------------------------------------------------------------------------- auth

def test_logs_in_once_and_sends_the_bearer_token(gw):
    gw.script("Account/search", ok(accounts=[{"id": 1001, "name": "PRAC", "balance": 50000.0, "canTrade": True,
                                              "isVisible": True, "simulated": True}]))
    with make_client(gw) as c:
        accts = c.accounts()
        c.accounts()
    assert accts[0].id == 1001 and accts[0].balance == Decimal("50000.0") and accts[0].simulated
    logins = gw.calls("Auth/loginKey")
    assert len(logins) == 1 and logins[0].auth is None
    assert logins[0].body == {"userName": "sandbox", "apiKey": "secret-api-key"}
    assert [r.auth for r in gw.calls("Account/search")] == ["Bearer tok-1", "Bearer tok-1"]
    assert gw.calls("Account/search")[0].body == {"onlyActiveAccounts": True}


def test_401_refreshes_once_with_validate_then_retries(gw):
    with make_client(gw) as c:
        c.accounts()
        gw.script("Account/search", Reply(status=401, body=""))
        c.accounts()
    assert [r.path for r in gw.requests] == ["Auth/loginKey", "Account/search", "Account/search", "Auth/validate",
                                             "Account/search"]
    assert gw.requests[3].auth == "Bearer tok-1" and gw.requests[4].auth == "Bearer tok-2"


def test_401_with_failing_validate_logs_in_again(gw):
    with make_client(gw) as c:
        c.accounts()
        gw.expire_tokens()  # validate with the stale token now gets 401 too
        c.accounts()
    assert [r.path for r in gw.requests] == ["Auth/loginKey", "Account/search", "Account/search", "Auth/validate",
                                             "Auth/loginKey", "Account/search"]
    assert gw.requests[-1].auth == "Bearer tok-2"


def test_persistent_401_raises_after_one_refresh(gw):
    gw.script("Account/search", *[Reply(status=401, body="")] * 3)
    with make_client(gw) as c, pytest.raises(pxe.AuthenticationFailed) as err:
        c.accounts()
    assert err.value.code == 401
    assert len(gw.calls("Account/search")) == 2 and len(gw.calls("Auth/validate")) == 1


def test_token_is_validated_before_the_24h_expiry():
    clock = FakeClock()
    server = ScriptedGateway().start()
    try:
        with make_client(server, clock=clock, sleep=clock.sleep, token_refresh_after_s=20 * 3600) as c:
            c.accounts()
            clock.t += 19 * 3600
            c.accounts()
            assert not server.calls("Auth/validate")
            clock.t += 3600
            c.accounts()
        assert [r.path for r in server.requests][-2:] == ["Auth/validate", "Account/search"]
        assert server.requests[-1].auth == "Bearer tok-2"
    finally:
        server.stop()


def test_login_failure_is_typed_and_clear(gw):
    gw.script("Auth/loginKey", fail(3, "Invalid credentials"))
    with make_client(gw) as c, pytest.raises(pxe.AuthenticationFailed) as err:
        c.accounts()
    assert (err.value.endpoint, err.value.code, err.value.code_name) == ("Auth/loginKey", 3, "InvalidCredentials")


def test_secrets_are_never_logged(gw):
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG")
    try:
        gw.script("Account/search", Reply(status=401, body=""), Reply(status=429), Reply(status=503))
        with make_client(gw) as c:
            c.accounts()
            c.token(refresh=True)
    finally:
        logger.remove(sink)
    text = "".join(lines)
    assert "refreshing the token" in text and "retry" in text
    assert "secret-api-key" not in text and "tok-" not in text


# --------------------------------------------------------------------------- retries & ambiguity

def test_reads_back_off_through_a_429_storm_honouring_retry_after(gw):
    clock = FakeClock()
    gw.script("Position/searchOpen", *[Reply(status=429, headers={"Retry-After": "2"})] * 3,
              ok(positions=[{"id": 1, "accountId": 1001, "contractId": "CON.F.US.MES.M26",
                             "creationTimestamp": "2026-04-08T13:30:00+00:00", "type": 2, "size": 3,
                             "averagePrice": 6650.25}]))
    with make_client(gw, clock=clock, sleep=clock.sleep) as c:
        pos = c.open_positions(1001)
    assert pos[0].size == 3 and pos[0].average_price == Decimal("6650.25")
    assert len(gw.calls("Position/searchOpen")) == 4
    assert clock.sleeps == [2.0, 2.0, 2.0]


def test_read_backoff_is_exponential_with_jitter_and_gives_up(gw):
    clock = FakeClock()
    gw.script("Trade/search", *[Reply(status=429)] * 5)
    with make_client(gw, clock=clock, sleep=clock.sleep, backoff_base_s=1.0, backoff_max_s=30.0,
                     read_attempts=5) as c, pytest.raises(pxe.RateLimited):
        c.search_trades(1001, dt.datetime(2026, 4, 8, tzinfo=UTC))
    assert len(gw.calls("Trade/search")) == 5
    assert len(clock.sleeps) == 4
    for n, s in enumerate(clock.sleeps, start=1):
        assert 0.5 * 2 ** (n - 1) <= s < 2 ** (n - 1)


def test_reads_retry_server_errors(gw):
    gw.script("Order/searchOpen", Reply(status=503), Reply(status=500), ok(orders=[]))
    with make_client(gw) as c:
        assert c.search_open_orders(1001) == []
    assert len(gw.calls("Order/searchOpen")) == 3


def test_place_on_503_is_ambiguous_and_sent_exactly_once(gw):
    gw.script("Order/place", Reply(status=503), ok(orderId=1))
    with make_client(gw) as c, pytest.raises(pxe.AmbiguousOutcome) as err:
        c.place_order(1001, "CON.F.US.MES.M26", GwOrderType.LIMIT, GwSide.BID, 1, limit_price=Decimal("6650.25"),
                      custom_tag="grid-MES-1-1")
    assert err.value.code == 503
    assert len(gw.calls("Order/place")) == 1


def test_place_timeout_is_ambiguous(gw):
    gw.script("Order/place", Reply(delay_s=1.0, body={"success": True, "orderId": 5}))
    with make_client(gw, timeout_s=0.3) as c:
        c.accounts()
        with pytest.raises(pxe.AmbiguousOutcome) as err:
            c.place_order(1001, "CON.F.US.MES.M26", GwOrderType.MARKET, GwSide.ASK, 1, custom_tag="grid-MES-1-2")
    assert err.value.code_name == "ReadTimeout"
    assert len(gw.calls("Order/place")) == 1


def test_place_rate_limited_is_not_placed_and_not_retried(gw):
    gw.script("Order/place", Reply(status=429, headers={"Retry-After": "1"}), ok(orderId=1))
    with make_client(gw) as c, pytest.raises(pxe.RateLimited) as err:
        c.place_order(1001, "CON.F.US.MES.M26", GwOrderType.MARKET, GwSide.BID, 1, custom_tag="grid-MES-1-3")
    assert isinstance(err.value, pxe.RequestNotSent) and not isinstance(err.value, pxe.AmbiguousOutcome)
    assert err.value.retry_after_s == 1.0
    assert len(gw.calls("Order/place")) == 1


def test_place_to_an_unreachable_server_is_not_sent(gw):
    c = make_client(gw)
    c.accounts()
    gw.stop()
    with pytest.raises(pxe.RequestNotSent) as err:
        c.place_order(1001, "CON.F.US.MES.M26", GwOrderType.MARKET, GwSide.BID, 1, custom_tag="grid-MES-1-4")
    assert not isinstance(err.value, pxe.AmbiguousOutcome)
    c.close()


def test_cancel_and_close_are_never_retried(gw):
    gw.script("Order/cancel", Reply(status=502))
    gw.script("Position/closeContract", Reply(status=500))
    with make_client(gw) as c:
        with pytest.raises(pxe.AmbiguousOutcome):
            c.cancel_order(1001, 7)
        with pytest.raises(pxe.AmbiguousOutcome):
            c.close_position(1001, "CON.F.US.MES.M26")
    assert len(gw.calls("Order/cancel")) == 1 and len(gw.calls("Position/closeContract")) == 1


# --------------------------------------------------------------------------- envelopes -> typed errors

def test_begin_place_writes_the_order_at_once_and_the_answer_is_read_later(gw):
    gw.script("Order/place", Reply(delay_s=0.3, body={"success": True, "orderId": 7}))
    with make_client(gw) as c:
        c.accounts()  # logged in; its connection stays open
        result = c.begin_place_order(1001, "CON.F.US.MES.M26", GwOrderType.LIMIT, GwSide.BID, 1,
                                     limit_price=Decimal("6650.25"), custom_tag="grid-MES-1-1")
        assert wait_until(lambda: len(gw.calls("Order/place")) == 1, timeout=2)  # at the gateway before result()
        assert result() == 7
    assert gw.calls("Order/place")[0].body["customTag"] == "grid-MES-1-1"


def test_begin_place_that_would_wait_sends_nothing_until_result_and_keeps_the_errors(gw):
    """No token yet (a login is due): nothing is sent by begin_place_order; result() logs in and
    places, once, with the same typed errors as place_order."""
    gw.script("Order/place", Reply(status=503))
    with make_client(gw) as c:
        result = c.begin_place_order(1001, "CON.F.US.MES.M26", GwOrderType.MARKET, GwSide.ASK, 1,
                                     custom_tag="grid-MES-1-2")
        assert gw.requests == []
        with pytest.raises(pxe.AmbiguousOutcome):
            result()
    assert [r.path for r in gw.requests] == ["Auth/loginKey", "Order/place"]


def test_place_rejection_with_an_order_id_is_still_a_rejection(gw):
    msg = "Brackets cannot be used with Position Brackets. You must enable Auto OCO Brackets."
    gw.script("Order/place", fail(2, msg, orderId=9056))
    with make_client(gw) as c, pytest.raises(pxe.OrderRejected) as err:
        c.place_order(1001, "CON.F.US.MES.M26", GwOrderType.MARKET, GwSide.BID, 1, custom_tag="grid-MES-1-5")
    e = err.value
    assert (e.endpoint, e.code, e.code_name, e.message) == ("Order/place", 2, "OrderRejected", msg)
    assert not isinstance(e, pxe.AmbiguousOutcome)


@pytest.mark.parametrize("path,code,cls,ambiguous", [
    ("Order/place", 1, pxe.AccountNotFound, False),
    ("Order/place", 6, pxe.OrderPending, True),
    ("Order/place", 7, pxe.UnknownError, True),
    ("Order/place", 9, pxe.ContractNotActive, False),
    ("Order/place", 99, pxe.AmbiguousOutcome, True),
    ("Order/cancel", 6, pxe.AccountRejected, False),
    ("Order/cancel", 4, pxe.Pending, True),
    ("Position/closeContract", 2, pxe.PositionNotFound, False),
    ("Position/partialCloseContract", 5, pxe.InvalidCloseSize, False),
])
def test_error_codes_are_typed_per_endpoint(gw, path, code, cls, ambiguous):
    gw.script(path, fail(code, "nope"))
    calls = {"Order/place": lambda c: c.place_order(1, "C", 2, 0, 1),
             "Order/cancel": lambda c: c.cancel_order(1, 2),
             "Position/closeContract": lambda c: c.close_position(1, "C"),
             "Position/partialCloseContract": lambda c: c.partial_close_position(1, "C", 3)}
    with make_client(gw) as c, pytest.raises(cls) as err:
        calls[path](c)
    assert err.value.code == code and err.value.endpoint == path
    assert isinstance(err.value, pxe.AmbiguousOutcome) is ambiguous


def test_read_errors_are_typed(gw):
    gw.script("Contract/searchById", fail(1, "Contract not found"))
    gw.script("Order/search", fail(1))
    with make_client(gw) as c:
        with pytest.raises(pxe.ContractNotFound):
            c.contract_by_id("CON.F.US.XXX.Z99")
        with pytest.raises(pxe.AccountNotFound):
            c.search_orders(42, dt.datetime(2026, 4, 8, tzinfo=UTC))
        with pytest.raises(ValueError):
            c.search_orders(42, dt.datetime(2026, 4, 8))  # naive: UTC on the wire must be explicit


def test_malformed_items_raise_malformed_payload(gw):
    gw.script("Position/searchOpen", ok(positions=[{"id": 1, "accountId": 1, "contractId": "C", "type": 1,
                                                    "size": -2, "averagePrice": 1.0}]))
    with make_client(gw) as c, pytest.raises(pxe.MalformedPayload) as err:
        c.open_positions(1)
    assert err.value.reason == "negative:size"


def test_place_body_uses_json_numbers_and_the_custom_tag(gw):
    gw.script("Order/place", ok(orderId=4242))
    with make_client(gw) as c:
        oid = c.place_order(1001, "CON.F.US.MES.M26", GwOrderType.STOP, GwSide.ASK, 2, stop_price=Decimal("6640.75"),
                            custom_tag="grid-MES-3-17")
    assert oid == 4242
    assert gw.calls("Order/place")[0].body == {"accountId": 1001, "contractId": "CON.F.US.MES.M26", "type": 4,
                                               "side": 1, "size": 2, "stopPrice": Decimal("6640.75"),
                                               "customTag": "grid-MES-3-17"}


# --------------------------------------------------------------------------- rate limiting

def test_sliding_window_spaces_requests_and_logs_each_long_wait():
    clock = FakeClock()
    lim = SlidingWindowLimiter(RateLimit(3, 10.0), clock=clock, sleep=clock.sleep, log_wait_s=5.0)
    stamps, lines = [], []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    try:
        for _ in range(7):
            lim.acquire()
            stamps.append(clock.t - 1_000.0)
            clock.t += 1.0
    finally:
        logger.remove(sink)
    assert stamps == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 20.0]
    assert clock.sleeps == [7.0, 7.0] and lim.waited_s == 14.0
    assert lines == ["ProjectX client rate window full (requests: 3 per 10s), waiting 7.0s for a slot\n"] * 2


def test_try_acquire_never_waits_and_give_back_returns_the_slot():
    clock = FakeClock()
    lim = SlidingWindowLimiter(RateLimit(2, 10.0), clock=clock, sleep=clock.sleep)
    assert lim.try_acquire() and lim.try_acquire() and not lim.try_acquire()
    lim.give_back()
    assert lim.try_acquire() and not lim.try_acquire()
    clock.t += 10.0
    assert lim.try_acquire() and clock.sleeps == []


def test_try_acquire_with_headroom_leaves_slots_free():
    clock = FakeClock()
    lim = SlidingWindowLimiter(RateLimit(5, 10.0), clock=clock, sleep=clock.sleep)
    assert all(lim.try_acquire(headroom=2) for _ in range(3)) and not lim.try_acquire(headroom=2)
    assert lim.try_acquire() and lim.try_acquire() and not lim.try_acquire()  # the 2 left free
    clock.t += 10.0
    assert lim.try_acquire(headroom=2) and clock.sleeps == []
    for bad in (-1, 5):
        with pytest.raises(ValueError):
            lim.try_acquire(headroom=bad)


def test_new_entries_never_wait_and_leave_the_last_slots_to_reducing_calls(gw):
    """A new entry (``Order/place`` not risk-reducing) is sent only while ``entry_headroom`` slots
    stay free, and is refused at once otherwise (ClientRateLimited, nothing sent); a take-profit or
    a flatten's close, a cancel and a read still go at once, and wait for the window when it is
    full."""
    clock = FakeClock()
    gw.script("Order/place", *[ok(orderId=i) for i in range(1, 8)])

    def entry(tag: str) -> int:
        return c.place_order(1001, "C", GwOrderType.LIMIT, GwSide.BID, 1, limit_price=Decimal("6650"), custom_tag=tag)
    with make_client(gw, clock=clock, sleep=clock.sleep, general_limit=RateLimit(8, 60.0), entry_headroom=3) as c:
        for i in range(4):  # 1 login + 4 entries: the 5 slots entries may use
            entry(f"grid-MES-1-{i}")
        with pytest.raises(pxe.ClientRateLimited) as err:
            entry("grid-MES-1-5")
        assert isinstance(err.value, pxe.RequestNotSent) and "5 of 8 per 60s" in err.value.message
        assert len(gw.calls("Order/place")) == 4 and clock.sleeps == []
        c.place_order(1001, "C", GwOrderType.MARKET, GwSide.ASK, 1, custom_tag="risk-1-1", risk_reducing=True)
        c.cancel_order(1001, 1)
        c.open_positions(1001)
        assert clock.sleeps == []  # the 3 slots entries left free
        c.place_order(1001, "C", GwOrderType.MARKET, GwSide.ASK, 1, custom_tag="risk-1-2", risk_reducing=True)
        assert clock.sleeps == [60.0]  # the window was full: a risk-reducing order waits for it
        assert entry("grid-MES-1-6") == 7  # the window moved on: entries go again (ids 5, 6: the closes)
    assert [r.body["customTag"] for r in gw.calls("Order/place")][-3:] == ["risk-1-1", "risk-1-2", "grid-MES-1-6"]
    with pytest.raises(ValueError):
        make_client(gw, general_limit=RateLimit(8, 60.0), entry_headroom=8)


def test_client_blocks_on_its_own_limits_before_the_server_says_429(gw):
    clock = FakeClock()
    with make_client(gw, clock=clock, sleep=clock.sleep, general_limit=RateLimit(4, 60.0),
                     bars_limit=RateLimit(2, 30.0)) as c:
        for _ in range(3):  # 1 login + 3 calls fill the general window
            c.accounts()
        assert clock.sleeps == []
        c.accounts()
        assert clock.sleeps == [60.0]
        gw.script("History/retrieveBars", ok(bars=[]), ok(bars=[]), ok(bars=[]))
        start = dt.datetime(2026, 4, 8, tzinfo=UTC)
        for _ in range(3):
            c.retrieve_bars("C", start, start + dt.timedelta(hours=1))
    assert clock.sleeps[-1] == pytest.approx(30.0)


# --------------------------------------------------------------------------- history

def _bar_server(step_s: int, first: dt.datetime, last: dt.datetime) -> Callable[[Any], Reply]:
    """retrieveBars handler over a fixed series (one bar per ``step_s``), newest first, ``limit`` kept."""
    def handle(body: Any) -> Reply:
        start = dt.datetime.fromisoformat(body["startTime"])
        end = dt.datetime.fromisoformat(body["endTime"])
        skip = max(0, -(-int((start - first).total_seconds()) // step_s))  # first series bar >= start
        bars, t = [], first + dt.timedelta(seconds=skip * step_s)
        while t <= min(end, last):
            px = 6600 + (t - first).total_seconds() / step_s * 0.25
            bars.append({"t": t.isoformat(), "o": px, "h": px + 1, "l": px - 1, "c": px, "v": 10})
            t += dt.timedelta(seconds=step_s)
        bars.reverse()
        return ok(bars=bars[:body["limit"]])
    return handle


def test_bars_are_paged_under_the_cap_sorted_and_deduplicated(gw):
    first = dt.datetime(2026, 4, 8, 13, 0, tzinfo=UTC)
    last = first + dt.timedelta(minutes=2 * 119)
    handler = _bar_server(120, first, last)
    gw.script("History/retrieveBars", *[handler] * 10)
    with make_client(gw, bars_per_request=50) as c:
        bars = c.retrieve_bars("CON.F.US.EP.M26", first, last, unit=BarUnit.MINUTE, unit_number=2)
    reqs = gw.calls("History/retrieveBars")
    assert len(reqs) == 3
    assert all(r.body["limit"] == 50 and r.body["unit"] == 2 and r.body["unitNumber"] == 2 for r in reqs)
    assert [b.ts_ns for b in bars] == sorted({b.ts_ns for b in bars}) and len(bars) == 120
    assert bars[0].open == Decimal("6600") and bars[-1].close == Decimal("6629.75")


def test_a_full_bar_page_is_split_so_nothing_is_lost(gw):
    first = dt.datetime(2026, 4, 8, 13, 0, tzinfo=UTC)
    last = first + dt.timedelta(minutes=59)
    handler = _bar_server(60, first, last)  # the server has twice as many bars as 2-minute pages expect
    gw.script("History/retrieveBars", *[handler] * 20)
    with make_client(gw, bars_per_request=20) as c:
        bars = c.retrieve_bars("C", first, last, unit=BarUnit.MINUTE, unit_number=2)
    assert len(bars) == 60


# --------------------------------------------------------------------------- orders & contracts

def _order(oid: int, created: str, status: int = 1, tag: str | None = None) -> dict[str, Any]:
    return {"id": oid, "accountId": 1001, "contractId": "CON.F.US.MES.M26", "creationTimestamp": created,
            "updateTimestamp": created, "status": status, "type": 1, "side": 0, "size": 1, "limitPrice": 6600.25,
            "stopPrice": None, "fillVolume": 0, "filledPrice": None, "customTag": tag}


def test_query_orders_reads_every_page(gw):
    rows = [_order(i, f"2026-04-08T13:00:0{i // 2}+00:00", status=8 if i % 2 else 1) for i in range(1, 8)]

    def handle(body: Any) -> Reply:
        flt = body["filter"]
        after = dt.datetime.fromisoformat(flt["createdAfter"]) if "createdAfter" in flt else None
        hits = [r for r in rows if after is None or dt.datetime.fromisoformat(r["creationTimestamp"]) >= after]
        return ok(orders=hits[:body["pageSize"]])

    gw.script("Order/v2/query", *[handle] * 10)
    with make_client(gw) as c:
        orders = c.query_orders(1001, page_size=3)
    assert [o.id for o in orders] == list(range(1, 8))
    assert gw.calls("Order/v2/query")[0].body["filter"]["statuses"] == [1, 6, 7, 8]


def _contract(cid: str, name: str, active: bool) -> dict[str, Any]:
    root = cid.split(".")[3]
    return {"id": cid, "name": name, "description": name, "tickSize": 0.25, "tickValue": 12.5,
            "activeContract": active, "symbolId": f"F.US.{root}"}


def test_front_month_is_resolved_by_search_and_ambiguity_is_refused(gw):
    listing = [_contract("CON.F.US.EP.M26", "ESM6", True), _contract("CON.F.US.EP.U26", "ESU6", False),
               _contract("CON.F.US.MES.M26", "MESM6", True)]
    second_front = _contract("CON.F.US.EP.Z26", "ESZ6", True)
    gw.script("Contract/search", ok(contracts=listing), ok(contracts=listing + [second_front]), ok(contracts=[]))
    with make_client(gw) as c:
        es = c.resolve_front_month("ES")
        assert es.id == "CON.F.US.EP.M26" and es.tick_value == Decimal("12.5") and es.root == "EP"
        with pytest.raises(pxe.ContractResolutionError, match="2 active contracts for ES"):
            c.resolve_front_month("ES")
        with pytest.raises(pxe.ContractResolutionError, match="no active contract for NQ"):
            c.resolve_front_month("NQ")
    assert gw.calls("Contract/search")[0].body == {"searchText": "ES", "live": False}
