"""The sandbox gateway's REST API (aiohttp): every path of
docs/reference/projectx-gateway.md#rest-endpoints.

Conventions (docs/reference/projectx-gateway.md, sections "Conventions", "Error codes", "Rate
limits"):

- ``POST /api/<path>`` with a JSON body (reads included); ``GET /api/Status/ping`` answers
  ``pong`` (text/plain; the real body is undocumented).
- Answers are the envelope ``{"success", "errorCode", "errorMessage", <payload>}``; a business
  failure is HTTP 200 ``success: false`` with the endpoint's own errorCode number (the tables
  below) and the payload field null (e.g. ``orderId: null``).
- HTTP 400 with an RFC 7807 ProblemDetails body (``errors: {field: [message]}``) when the body is
  not a JSON object, a required field is missing or null, or a field has the wrong JSON type
  (ASP.NET Core model validation). Required fields follow the request column of "REST endpoints":
  everything without a ``?`` (``Order/modify``: size/limitPrice/stopPrice/trailPrice optional;
  ``Order/place``: prices, customTag, brackets and linkedOrderId optional; ``endTimestamp``
  optional; ``Order/v2/query``: only ``filter.accountId``). ``linkedOrderId`` and ``live`` are
  accepted and ignored.
- HTTP 401 (``WWW-Authenticate: Bearer``, empty body) without a valid ``Authorization: Bearer``
  token, except on ``Auth/loginKey`` and ``Status/ping``.
- HTTP 429 past the rate limits (sliding windows per token, or per client address without one):
  ``History/retrieveBars`` has its own limit, every other path shares the general one. Checked
  before authentication; refused calls do not count. No ``Retry-After`` header.
- Faults (:mod:`infra.sandbox.faults`) are applied first.

Every ``Order/place`` request is recorded in ``orders_received`` as
``(time.perf_counter_ns() at arrival, body)`` before anything else (``{"_raw": text}`` when the
body is not a JSON object), and every ``/api`` request is counted by path in ``requests_received``
(refused ones included). Money and prices are JSON numbers; times ISO-8601 UTC; the sandbox
clock (the replay time) stamps orders and trades, so search windows must use replay time.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Awaitable, Callable

from aiohttp import web
from loguru import logger

from infra.sandbox.auth import RateLimiter, TokenStore, bearer
from infra.sandbox.contracts import ContractCatalog
from infra.sandbox.errors import GatewayError, Reason
from infra.sandbox.exchange import Exchange, OrderStatus
from infra.sandbox.faults import Faults, RestFault
from infra.sandbox.hubs import Hubs
from infra.sandbox.marketdata import MarketData
from infra.sandbox.wire import dumps, loads, parse_time

R = Reason
_ACCOUNT_CODES = {R.ACCOUNT_NOT_FOUND: 1}
_CODES: dict[str, dict[Reason, int]] = {
    "Auth/loginKey": {R.INVALID_CREDENTIALS: 3},
    "Contract/searchById": {R.CONTRACT_NOT_FOUND: 1},
    "History/retrieveBars": {R.CONTRACT_NOT_FOUND: 1, R.UNIT_INVALID: 2, R.UNIT_NUMBER_INVALID: 3,
                             R.LIMIT_INVALID: 4},
    "Order/place": {R.ACCOUNT_NOT_FOUND: 1, R.ORDER_REJECTED: 2, R.INSUFFICIENT_FUNDS: 3, R.CONTRACT_NOT_FOUND: 8,
                    R.CONTRACT_NOT_ACTIVE: 9, R.ACCOUNT_REJECTED: 10},
    "Order/modify": {R.ACCOUNT_NOT_FOUND: 1, R.ORDER_NOT_FOUND: 2, R.ORDER_REJECTED: 3, R.ACCOUNT_REJECTED: 6,
                     R.CONTRACT_NOT_FOUND: 7},
    "Order/cancel": {R.ACCOUNT_NOT_FOUND: 1, R.ORDER_NOT_FOUND: 2, R.ORDER_REJECTED: 3, R.ACCOUNT_REJECTED: 6},
    "Order/search": _ACCOUNT_CODES,
    "Order/searchOpen": _ACCOUNT_CODES,
    "Order/searchById": {R.ACCOUNT_NOT_FOUND: 1, R.ORDER_NOT_FOUND: 1},
    "Order/v2/query": _ACCOUNT_CODES,
    "Position/searchOpen": _ACCOUNT_CODES,
    "Position/closeContract": {R.ACCOUNT_NOT_FOUND: 1, R.POSITION_NOT_FOUND: 2, R.CONTRACT_NOT_FOUND: 3,
                               R.CONTRACT_NOT_ACTIVE: 4, R.ORDER_REJECTED: 5, R.NO_PRICE: 5,
                               R.ACCOUNT_REJECTED: 8},
    "Position/partialCloseContract": {R.ACCOUNT_NOT_FOUND: 1, R.POSITION_NOT_FOUND: 2, R.CONTRACT_NOT_FOUND: 3,
                                      R.CONTRACT_NOT_ACTIVE: 4, R.INVALID_CLOSE_SIZE: 5, R.ORDER_REJECTED: 6,
                                      R.NO_PRICE: 6, R.ACCOUNT_REJECTED: 9},
    "Trade/search": _ACCOUNT_CODES,
}
"""Per-endpoint errorCode numbers (docs/reference/projectx-gateway.md#error-codes) for each failure
reason."""

_PROBLEM_TYPE = "https://tools.ietf.org/html/rfc9110#section-15.5.1"
_ACCOUNT = {"accountId": ("int", True)}
_OPTIONAL_RANGE = {"startTimestamp": ("time", True), "endTimestamp": ("time", False)}
_QUERY_FILTER = {"accountId": ("int", True), "statuses": ("int_list", False), "contractId": ("str", False),
                 "createdAfter": ("time", False), "createdBefore": ("time", False)}
_MAX_PAGE_SIZE = 1000
_DEFAULT_PAGE_SIZE = 100


class _BadRequest(Exception):
    """Answered as HTTP 400 ProblemDetails with ``errors``."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "number": lambda v: _is_int(v) or isinstance(v, Decimal),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "time": lambda v: parse_time(v) is not None,
    "int_list": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
}
"""JSON type checks of request fields (``time`` = ISO-8601 text)."""


def _validate(body: dict[str, Any], fields: dict[str, tuple[str, bool]],
              prefix: str = "") -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Check ``body`` against ``{name: (kind, required)}``. Returns ``(args, errors)``; ``args`` has
    every declared field (None when absent) with ``time`` fields converted to epoch ns."""
    args: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, (kind, required) in fields.items():
        value = body.get(name)
        if value is None:
            if required:
                errors[prefix + name] = [f"The {name} field is required."]
            args[name] = None
        elif not _KINDS[kind](value):
            errors[prefix + name] = [f"The JSON value could not be converted to the type of {name} ({kind})."]
        else:
            args[name] = parse_time(value) if kind == "time" else value
    return args, errors


def _problem(errors: dict[str, list[str]]) -> web.Response:
    body = {"type": _PROBLEM_TYPE, "title": "One or more validation errors occurred.", "status": 400,
            "errors": errors}
    return web.Response(status=400, text=dumps(body), content_type="application/problem+json")


def _envelope(payload: dict[str, Any]) -> web.Response:
    return web.Response(text=dumps({"success": True, "errorCode": 0, "errorMessage": None, **payload}),
                        content_type="application/json")


@dataclass(frozen=True, slots=True)
class _Endpoint:
    handler: Callable[[dict[str, Any], str | None], Awaitable[dict[str, Any]]]
    fields: dict[str, tuple[str, bool]]
    payload: str | None  # field that is null in a failure envelope
    auth: bool = True


class RestApi:
    """The ``/api`` routes.

    Args:
        username, api_key: the credentials ``Auth/loginKey`` accepts.
        tokens: session tokens.
        limits: ``(general, retrieveBars)`` rate limiters.
        faults: armed faults.
        exchange, market, catalog: the venue, the recorded data, the contracts.
        clock: the sandbox clock (epoch ns UTC).
        hubs: for closing the connections of a logged-out token and pushing user events.
        orders_received: list receiving ``(perf_counter_ns, body)`` of every ``Order/place``.
        requests_received: counter of every ``/api`` request by path (``"Order/cancel"``...).
        answer_delay_s: how long after processing a request its answer is written, seconds
            (``SandboxConfig.answer_delay_s``).
    """

    def __init__(self, *, username: str, api_key: str, tokens: TokenStore, limits: tuple[RateLimiter, RateLimiter],
                 faults: Faults, exchange: Exchange, market: MarketData, catalog: ContractCatalog,
                 clock: Callable[[], int], hubs: Hubs, orders_received: list[tuple[int, dict[str, Any]]],
                 requests_received: Counter[str] | None = None, answer_delay_s: float = 0.0) -> None:
        self._username, self._api_key = username, api_key
        self._tokens = tokens
        self._limit, self._bars_limit = limits
        self._faults = faults
        self._exchange, self._market, self._catalog = exchange, market, catalog
        self._clock = clock
        self._hubs = hubs
        self._orders_received = orders_received
        self._requests_received = Counter() if requests_received is None else requests_received
        self._answer_delay_s = answer_delay_s
        E = _Endpoint
        self._endpoints: dict[str, _Endpoint] = {
            "Auth/loginKey": E(self._login, {"userName": ("str", True), "apiKey": ("str", True)}, "token", auth=False),
            "Auth/validate": E(self._validate_token, {}, "newToken"),
            "Auth/logout": E(self._logout, {}, None),
            "Account/search": E(self._accounts, {"onlyActiveAccounts": ("bool", True)}, "accounts"),
            "Contract/search": E(self._contract_search, {"searchText": ("str", True), "live": ("bool", True)},
                                 "contracts"),
            "Contract/searchById": E(self._contract_by_id, {"contractId": ("str", True)}, "contract"),
            "Contract/available": E(self._contracts_available, {"live": ("bool", True)}, "contracts"),
            "History/retrieveBars": E(self._bars, {
                "contractId": ("str", True), "live": ("bool", True), "startTime": ("time", True),
                "endTime": ("time", True), "unit": ("int", True), "unitNumber": ("int", True), "limit": ("int", True),
                "includePartialBar": ("bool", True)}, "bars"),
            "Order/place": E(self._place, {
                **_ACCOUNT, "contractId": ("str", True), "type": ("int", True), "side": ("int", True),
                "size": ("int", True), "limitPrice": ("number", False), "stopPrice": ("number", False),
                "trailPrice": ("number", False), "customTag": ("str", False), "stopLossBracket": ("object", False),
                "takeProfitBracket": ("object", False), "linkedOrderId": ("int", False)}, "orderId"),
            "Order/modify": E(self._modify, {
                **_ACCOUNT, "orderId": ("int", True), "size": ("int", False), "limitPrice": ("number", False),
                "stopPrice": ("number", False), "trailPrice": ("number", False)}, None),
            "Order/cancel": E(self._cancel, {**_ACCOUNT, "orderId": ("int", True)}, None),
            "Order/search": E(self._order_search, {**_ACCOUNT, **_OPTIONAL_RANGE}, "orders"),
            "Order/searchOpen": E(self._order_search_open, _ACCOUNT, "orders"),
            "Order/searchById": E(self._order_by_id, {**_ACCOUNT, "orderId": ("int", True)}, "order"),
            "Order/v2/query": E(self._order_query, {
                "filter": ("object", True), "pageSize": ("int", False), "pageOffset": ("int", False),
                "sortBy": ("int", False), "sortDirection": ("int", False), "includeTotalCount": ("bool", False)},
                "orders"),
            "Position/searchOpen": E(self._positions, _ACCOUNT, "positions"),
            "Position/closeContract": E(self._close, {**_ACCOUNT, "contractId": ("str", True)}, None),
            "Position/partialCloseContract": E(self._partial_close, {
                **_ACCOUNT, "contractId": ("str", True), "size": ("int", True)}, None),
            "Trade/search": E(self._trades, {**_ACCOUNT, **_OPTIONAL_RANGE}, "trades"),
        }

    def routes(self) -> list[web.RouteDef]:
        """``POST /api/{path}`` for every endpoint and ``GET /api/Status/ping``."""
        return [web.get("/api/Status/ping", self._ping), web.post("/api/{path:.+}", self._dispatch)]

    # ------------------------------------------------------------------ plumbing

    def _gate(self, request: web.Request, *, auth: bool,
              bars: bool) -> web.Response | tuple[str | None, RestFault | None]:
        """Faults, rate limit and authentication. Returns the refusal to send, else
        ``(token or None, the ambiguous-outcome fault to apply after processing or None)``."""
        fault = self._faults.take_rest_fault(request.path)
        if fault is not None and fault.kind == "rate_limit":
            return web.Response(status=429, text="Too Many Requests")
        if fault is not None and fault.kind == "error":
            return web.Response(status=fault.status or 503, text="Injected server error")
        token = bearer(request.headers.get("Authorization"))
        limiter = self._bars_limit if bars else self._limit
        if not limiter.allow(f"token:{token}" if token else f"addr:{request.remote}"):
            return web.Response(status=429, text="Too Many Requests")
        if auth and not self._tokens.valid(token):
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        return token, fault

    async def _ping(self, request: web.Request) -> web.Response:
        gate = self._gate(request, auth=False, bars=False)
        return gate if isinstance(gate, web.Response) else web.Response(text="pong")

    async def _dispatch(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        if self._answer_delay_s > 0:
            await asyncio.sleep(self._answer_delay_s)
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        arrival = time.perf_counter_ns()
        name = request.match_info["path"]
        self._requests_received[name] += 1
        endpoint = self._endpoints.get(name)
        raw = await request.read()
        try:
            body = loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        if name == "Order/place":
            self._orders_received.append(
                (arrival, body if isinstance(body, dict) else {"_raw": raw.decode("utf-8", errors="replace")}))
        if endpoint is None:
            return web.Response(status=404, text=f"No endpoint /api/{name}")
        gate = self._gate(request, auth=endpoint.auth, bars=name == "History/retrieveBars")
        if isinstance(gate, web.Response):
            logger.debug("sandbox REST {} -> HTTP {}", name, gate.status)
            return gate
        token, ambiguous = gate
        if not isinstance(body, dict):
            return _problem({"$": ["The request body must be a JSON object."]})
        args, errors = _validate(body, endpoint.fields)
        if errors:
            logger.info("sandbox REST {} -> HTTP 400 {}", name, errors)
            return _problem(errors)
        try:
            response = _envelope(await endpoint.handler(args, token))
        except _BadRequest as exc:
            return _problem(exc.errors)
        except GatewayError as exc:
            code = _CODES.get(name, {}).get(exc.reason)
            if code is None:
                logger.error("sandbox REST {}: no errorCode for {}", name, exc.reason)
                return web.Response(status=500, text="Internal Server Error")
            logger.info("sandbox REST {} -> errorCode {} ({})", name, code, exc.message)
            failure = {"success": False, "errorCode": code, "errorMessage": exc.message}
            if endpoint.payload is not None:
                failure[endpoint.payload] = exc.payload
            response = web.Response(text=dumps(failure), content_type="application/json")
        except Exception:
            logger.exception("sandbox REST {} failed", name)
            return web.Response(status=500, text="Internal Server Error")
        if ambiguous is not None:
            logger.warning("sandbox REST {}: processed, answering {} (ambiguous_place fault)", name,
                           ambiguous.status or "nothing (connection dropped)")
            if ambiguous.status is None and request.transport is not None:
                request.transport.abort()  # the response below is never written
            return web.Response(status=ambiguous.status or 504, text="Injected server error")
        return response

    # ------------------------------------------------------------------ auth & reference data

    async def _login(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        ok = hmac.compare_digest(args["userName"].encode(), self._username.encode()) and \
            hmac.compare_digest(args["apiKey"].encode(), self._api_key.encode())
        if not ok:
            raise GatewayError(Reason.INVALID_CREDENTIALS, "Invalid credentials.")
        return {"token": self._tokens.issue()}

    async def _validate_token(self, _args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"newToken": self._tokens.issue()}

    async def _logout(self, _args: dict[str, Any], token: str | None) -> dict[str, Any]:
        assert token is not None
        self._tokens.revoke(token)
        await self._hubs.close_all(error="Logged out.", allow_reconnect=False, token=token)
        return {}

    async def _accounts(self, _args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"accounts": self._exchange.account_list()}

    async def _contract_search(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"contracts": [c.to_json() for c in self._catalog.search(args["searchText"])]}

    async def _contract_by_id(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        contract = self._catalog.by_id(args["contractId"])
        if contract is None:
            raise GatewayError(Reason.CONTRACT_NOT_FOUND, f"Contract {args['contractId']!r} not found.")
        return {"contract": contract.to_json()}

    async def _contracts_available(self, _args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"contracts": [c.to_json() for c in self._catalog.all()]}

    async def _bars(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        contract = self._catalog.by_id(args["contractId"])
        if contract is None:
            raise GatewayError(Reason.CONTRACT_NOT_FOUND, f"Contract {args['contractId']!r} not found.")
        bars = self._market.bars(contract.series, unit=args["unit"], unit_number=args["unitNumber"],
                                 start_ns=args["startTime"], end_ns=args["endTime"], now_ns=self._clock(),
                                 include_partial=args["includePartialBar"], limit=args["limit"])
        return {"bars": bars if contract.active else []}

    # ------------------------------------------------------------------ orders, positions, trades

    async def _place(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        order_id, events = self._exchange.place(
            args["accountId"], args["contractId"], args["type"], args["side"], args["size"],
            limit_price=args["limitPrice"], stop_price=args["stopPrice"], trail_price=args["trailPrice"],
            custom_tag=args["customTag"], stop_loss=args["stopLossBracket"], take_profit=args["takeProfitBracket"])
        self._hubs.publish_user(events)
        return {"orderId": order_id}

    async def _modify(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        self._hubs.publish_user(self._exchange.modify(
            args["accountId"], args["orderId"], size=args["size"], limit_price=args["limitPrice"],
            stop_price=args["stopPrice"], trail_price=args["trailPrice"]))
        return {}

    async def _cancel(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        self._hubs.publish_user(self._exchange.cancel(args["accountId"], args["orderId"]))
        return {}

    async def _order_search(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"orders": self._exchange.orders(args["accountId"], args["startTimestamp"], args["endTimestamp"])}

    async def _order_search_open(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"orders": self._exchange.working_orders(args["accountId"], frozenset({OrderStatus.OPEN}))}

    async def _order_by_id(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"order": self._exchange.order(args["accountId"], args["orderId"])}

    async def _order_query(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        flt, errors = _validate(args["filter"], _QUERY_FILTER, prefix="filter.")
        size = _DEFAULT_PAGE_SIZE if args["pageSize"] is None else args["pageSize"]
        offset = args["pageOffset"] or 0
        if not 1 <= size <= _MAX_PAGE_SIZE:
            errors["pageSize"] = [f"pageSize must be between 1 and {_MAX_PAGE_SIZE}."]
        if offset < 0:
            errors["pageOffset"] = ["pageOffset must be >= 0."]
        for name in ("sortBy", "sortDirection"):
            if args[name] not in (None, 0, 1):
                errors[name] = [f"{name} must be 0 or 1."]
        if errors:
            raise _BadRequest(errors)
        orders = self._exchange.query_orders(
            flt["accountId"], statuses=None if flt["statuses"] is None else set(flt["statuses"]),
            contract_id=flt["contractId"], created_after=flt["createdAfter"], created_before=flt["createdBefore"],
            sort_by_id=args["sortBy"] == 1, descending=args["sortDirection"] == 1)
        out: dict[str, Any] = {"orders": orders[offset:offset + size]}
        if args["includeTotalCount"]:
            out["totalCount"] = len(orders)
        return out

    async def _positions(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"positions": self._exchange.positions(args["accountId"])}

    async def _close(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        self._hubs.publish_user(self._exchange.close_position(args["accountId"], args["contractId"]))
        return {}

    async def _partial_close(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        self._hubs.publish_user(self._exchange.close_position(args["accountId"], args["contractId"], args["size"]))
        return {}

    async def _trades(self, args: dict[str, Any], _token: str | None) -> dict[str, Any]:
        return {"trades": self._exchange.trades(args["accountId"], args["startTimestamp"], args["endTimestamp"])}
