"""ProjectX Gateway REST client (TopstepX), synchronous, on httpx; safe to share between threads.

Behaviour (gateway facts: ``docs/reference/projectx-gateway.md``, cited below by section name;
``docs/projectx.md`` has the full policy):

- **Auth** ("Authentication"): ``Auth/loginKey`` on first use; the token is refreshed with
  ``Auth/validate`` (``newToken``) once it is older than ``token_refresh_after_s`` (default 20 h,
  the token lives 24 h), and exactly once when a call gets HTTP 401; if validate fails the client
  logs in again. The token and the API key are never logged.
- **Envelope** ("Conventions"): every call is a ``POST`` with a JSON body; ``success:false``
  becomes the typed exception for that endpoint's ``errorCode``
  (:func:`infra.projectx.errors.error_for`). Response numbers are decoded as ``Decimal``
  (``parse_float``); Decimals are sent as JSON numbers.
- **Rate limits** ("Rate limits"): two client-side sliding windows (all calls; plus
  History/retrieveBars), blocking the caller until a slot frees; except a new entry order, which
  leaves a sixth of the window free for cancels, closes and reads and is refused at once
  (:class:`ClientRateLimited`, not sent) when it finds no slot.
- **Retries**: reads (and login/validate) are retried on HTTP 429 (honouring ``Retry-After``),
  HTTP 5xx, timeouts and connection errors, with exponential backoff and jitter, up to
  ``read_attempts`` tries. Order-changing calls (place, modify, cancel, closeContract,
  partialCloseContract) are **never** retried: a connection refused/connect timeout, HTTP 429 or
  another 4xx raises :class:`RequestNotSent` (nothing happened), while a timeout, a dropped
  connection, HTTP 5xx or an unreadable body raises :class:`AmbiguousOutcome` (reconcile first).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import re
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping, Sequence

import httpx
from loguru import logger

from domain.instruments import INSTRUMENTS, MONTH_CODES
from infra.projectx import errors as pxe
from infra.projectx.mapping import (UNIT_SECONDS, WORKING_STATUSES, BarUnit, GatewayAccount, GatewayBar,
                                    GatewayContract, GatewayOrder, GatewayPosition, GatewayTrade, parse_account,
                                    parse_bar, parse_contract, parse_order, parse_position, parse_trade)
from infra.projectx.ratelimit import (DEFAULT_BARS, DEFAULT_GENERAL, RateLimit, SlidingWindowLimiter,
                                     default_entry_headroom)
from infra.projectx.transport import StdlibHTTPTransport
from infra.redact import redact, register

DEFAULT_BASE_URL = "https://api.topstepx.com"
"""TopstepX REST host (docs/reference/projectx-gateway.md#hosts)."""

MAX_BARS_PER_REQUEST = 20_000
"""``History/retrieveBars`` returns at most this many bars per request
(docs/reference/projectx-gateway.md#history-bars)."""

_BARS = "History/retrieveBars"
_HEADERS = ((b"Accept", b"application/json"), (b"Content-Type", b"application/json"),
            (b"Accept-Encoding", b"gzip, deflate"), (b"User-Agent", f"python-httpx/{httpx.__version__}".encode()))
"""Headers of every request (those httpx.Client would add, and the JSON content type)."""
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)  # the JSON boundary: tick prices have far fewer than 15 significant digits
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def iso_utc(t: dt.datetime) -> str:
    """Aware datetime -> ISO-8601 UTC text with offset (``2026-04-01T13:30:00+00:00``).
    Raises ValueError for a naive datetime (the wire is UTC; a naive time is a bug)."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: pass an aware datetime (UTC on the wire)")
    return t.astimezone(dt.timezone.utc).isoformat()


def ns_to_iso(ts_ns: int) -> str:
    """Epoch ns UTC -> ISO-8601 UTC text (microsecond precision, truncated)."""
    return (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ts_ns // 1000)).isoformat()


def _retry_after(resp: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None if absent/unparsable."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - dt.datetime.now(dt.timezone.utc)).total_seconds(), 0.0)


class ProjectXClient:
    """REST client for one ProjectX user (all accounts of that user).

    Args:
        base_url: REST host, e.g. ``https://api.topstepx.com`` (paths ``/api/...`` are appended).
        username: the platform login name (not the e-mail address, "Authentication").
        api_key: the API key. Both come from the environment; neither is ever logged.
        timeout_s: per-request timeout (connect, read, write), seconds.
        clock: monotonic seconds, for token age and the rate limiter (injectable for tests).
        sleep: blocking sleep used for backoff and the rate limiter (injectable for tests).
        token_refresh_after_s: validate the token once it is this old (tokens live 24 h,
            "Authentication").
        general_limit / bars_limit: client-side rate limits (defaults 10 % under the documented
            "Rate limits").
        entry_headroom: slots of ``general_limit`` that a new entry (``Order/place`` not
            ``risk_reducing``) leaves free for cancels, closes, risk-reducing orders and reads.
            An entry never waits for the window: with fewer free slots it raises
            ``ClientRateLimited``. None = a sixth of the window (30 of 180,
            :func:`infra.projectx.ratelimit.default_entry_headroom`).
        read_attempts: total tries of a read before its error is raised.
        backoff_base_s / backoff_max_s: exponential backoff ``base * 2**(n-1)`` capped at ``max``,
            times a jitter factor in [0.5, 1); a server ``Retry-After`` takes precedence.
        bars_per_request: the history request `limit` (3..20,000, "History bars").
        rng: random source for the jitter (seedable).
    """

    def __init__(self, base_url: str, username: str, api_key: str, *, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 token_refresh_after_s: float = 20 * 3600.0, general_limit: RateLimit = DEFAULT_GENERAL,
                 bars_limit: RateLimit = DEFAULT_BARS, entry_headroom: int | None = None,
                 read_attempts: int = 5, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 30.0, bars_per_request: int = MAX_BARS_PER_REQUEST,
                 rng: random.Random | None = None) -> None:
        if not username or not api_key:
            raise ValueError("ProjectX username and api_key are required")
        if entry_headroom is None:
            entry_headroom = default_entry_headroom(general_limit)
        if not 0 <= entry_headroom < general_limit.max_requests:
            raise ValueError(f"entry_headroom must be 0..{general_limit.max_requests - 1}")
        if not 3 <= bars_per_request <= MAX_BARS_PER_REQUEST:
            raise ValueError(f"bars_per_request must be 3..{MAX_BARS_PER_REQUEST}")
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._api_key = register(api_key)  # redacted from every log line and alert
        # An httpx transport called directly: httpx.Client's per-request machinery (URL merging,
        # cookies, auth and redirect flows, event hooks) costs ~0.3 ms of CPU per call, and this API
        # needs none of it; the transport is http.client's (infra/projectx/transport.py), about half
        # the CPU of httpx's own per order call
        # (docs/decisions/0009-rest-transport-http-client-warm-connections.md). Requests and
        # responses stay httpx objects, errors httpx exceptions; no proxy is read from the
        # environment.
        self._transport = StdlibHTTPTransport()
        self._timeout = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._urls: dict[str, httpx.URL] = {}
        self._clock = clock
        self._sleep = sleep
        self._refresh_after = token_refresh_after_s
        self._general = SlidingWindowLimiter(general_limit, clock=clock, sleep=sleep)
        self._bars = SlidingWindowLimiter(bars_limit, clock=clock, sleep=sleep, name=_BARS)
        self._entry_headroom = entry_headroom
        self._read_attempts = max(1, read_attempts)
        self._backoff_base = backoff_base_s
        self._backoff_max = backoff_max_s
        self._bars_per_request = bars_per_request
        self._rng = rng or random.Random()
        self._token: str | None = None
        self._token_at = 0.0
        self._token_lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle / auth

    def close(self) -> None:
        """Close the HTTP connections (and stop :meth:`keep_warm`)."""
        self._transport.close()

    def keep_warm(self, n: int) -> None:
        """Keep ``n`` connections to the gateway open ahead of need, so that up to ``n`` concurrent
        calls (the live broker's order pool) never wait for a TCP and TLS handshake; no request is
        sent for it (``StdlibHTTPTransport.keep_warm``). Stopped by :meth:`close`."""
        self._transport.keep_warm(self.base_url, n)

    def __enter__(self) -> "ProjectXClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProjectXClient({self.base_url!r}, user={self._username!r})"

    def token(self, refresh: bool = False) -> str:
        """The current session token: logs in on first use, validates when older than
        ``token_refresh_after_s`` or when ``refresh`` (e.g. after a hub ``GatewayLogout``).
        Also the ``token_provider`` for the hubs. Raises AuthenticationFailed."""
        with self._token_lock:
            if self._token is None:
                self._login()
            elif refresh or self._clock() - self._token_at >= self._refresh_after:
                self._refresh()
            assert self._token is not None
            return self._token

    def _login(self) -> None:
        data = self._post("Auth/loginKey", {"userName": self._username, "apiKey": self._api_key}, auth=False)
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise pxe.AuthenticationFailed("Auth/loginKey", None, "NoToken", "login succeeded without a token")
        self._token, self._token_at = register(token), self._clock()
        logger.info("ProjectX: logged in as {}", self._username)

    def _refresh(self) -> None:
        """Auth/validate for a new token; on any failure log in again ("Authentication")."""
        try:
            data = self._post("Auth/validate", None, auth=False, bearer=self._token)
            token = data.get("newToken")
            if not isinstance(token, str) or not token:
                raise pxe.AuthenticationFailed("Auth/validate", None, "NoToken", "validate returned no newToken")
            self._token, self._token_at = register(token), self._clock()
            logger.info("ProjectX: session token refreshed (validate)")
        except pxe.ProjectXError as e:
            logger.warning("ProjectX: validate failed ({}), logging in again", e.code_name)
            self._login()

    def _after_401(self, used_token: str | None) -> None:
        """Refresh once per stale token: a thread that lost the race just retries with the new one."""
        with self._token_lock:
            if self._token == used_token:
                self._refresh()

    # ------------------------------------------------------------------ transport

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)) * (0.5 + self._rng.random() / 2)

    def _send(self, endpoint: str, content: str | None, token: str | None) -> httpx.Response:
        """``POST {base_url}/api/{endpoint}`` with the JSON text ``content``; returns the response,
        body read, connection back in the pool. Raises ``httpx.TransportError`` subclasses
        (connect/read/write errors and timeouts, protocol errors)."""
        resp = self._transport.handle_request(self._request(endpoint, content, token))
        try:
            resp.read()
        finally:
            resp.close()
        return resp

    def _request(self, endpoint: str, content: str | None, token: str | None) -> httpx.Request:
        """The ``POST {base_url}/api/{endpoint}`` request with the JSON text ``content``."""
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = httpx.URL(f"{self.base_url}/api/{endpoint}")
        headers = list(_HEADERS)
        if token:
            headers.append((b"Authorization", f"Bearer {token}".encode()))
        return httpx.Request("POST", url, headers=headers, content=(content or "").encode(), extensions=self._timeout)

    def _post(self, endpoint: str, body: Mapping[str, Any] | None, *, auth: bool = True,
              bearer: str | None = None) -> dict[str, Any]:
        """One API call with rate limiting, the 401 refresh, retries for reads, and envelope checks.

        Returns the decoded response object (``success`` was true). Raises a :class:`ProjectXError`
        subclass as described in the module docstring.
        """
        return self._complete(endpoint, self._content(body), auth, bearer, None)

    def _begin(self, endpoint: str, body: Mapping[str, Any], entry: bool = False) -> Callable[[], dict[str, Any]]:
        """Write the request of an authenticated call now if that needs no wait, and return
        ``result()``, which reads the answer and does the rest of :meth:`_post` (same outcome, same
        errors, raised by ``result()``). So a thread can send a decision's orders one after the other
        and read the answers afterwards (or on other threads) instead of waiting for each.

        "Now" only when a rate-limit slot is free, the token is fresh (no login or validate due, no
        refresh running) and an idle connection is open (``StdlibHTTPTransport.keep_warm``);
        otherwise nothing is sent and ``result()`` makes the whole call, waits included. The caller
        (the broker actor) therefore never blocks here on the limiter, a token refresh or a TCP/TLS
        connect; it must call ``result()`` exactly once. ``entry``: a new entry, which leaves the
        window's ``entry_headroom`` free and never waits for it (see :meth:`_complete`)."""
        content = self._content(body)
        first = self._send_now(endpoint, content, entry)
        return lambda: self._complete(endpoint, content, True, None, first, entry)

    @staticmethod
    def _content(body: Mapping[str, Any] | None) -> str | None:
        return None if body is None else json.dumps(body, default=_json_default, separators=(",", ":"))

    def _send_now(self, endpoint: str, content: str | None,
                  entry: bool) -> tuple[str, Callable[[], httpx.Response]] | None:
        """``(token, response())`` of a request written now without waiting (see :meth:`_begin`), or
        None when that would wait. A write failure is returned as a ``response()`` that raises it."""
        if endpoint == _BARS or not self._token_lock.acquire(blocking=False):
            return None
        try:
            token = self._token
            if token is None or self._clock() - self._token_at >= self._refresh_after:
                return None
        finally:
            self._token_lock.release()
        if not self._general.try_acquire(self._entry_headroom if entry else 0):
            return None
        try:
            response = self._transport.send(self._request(endpoint, content, token), idle_only=True)
        except httpx.TransportError as e:
            def failed(e: httpx.TransportError = e) -> httpx.Response:
                raise e
            return token, failed
        if response is None:
            self._general.give_back()
            return None
        return token, response

    def _complete(self, endpoint: str, content: str | None, auth: bool, bearer: str | None,
                  first: tuple[str, Callable[[], httpx.Response]] | None, entry: bool = False) -> dict[str, Any]:
        """The body of :meth:`_post`; ``first``: the first attempt's request was already written by
        :meth:`_send_now` (its token and ``response()``). ``entry``: a new entry takes a rate-limit
        slot only while ``entry_headroom`` slots stay free, and raises ``ClientRateLimited`` (not
        sent) instead of waiting: an entry held back for up to a minute would arrive stale, and
        the pool threads it held would delay the answers of cancels and closes."""
        write = endpoint in pxe.WRITE_ENDPOINTS
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            if first is not None:
                token, response = first
                first = None
            else:
                if not entry:
                    self._general.acquire()
                elif not self._general.try_acquire(self._entry_headroom):
                    limit = self._general.limit
                    raise pxe.ClientRateLimited(endpoint, f"not sent: client rate window full for new entries "
                                                          f"({limit.max_requests - self._entry_headroom} of "
                                                          f"{limit.max_requests} per {limit.window_s:g}s used)")
                if endpoint == _BARS:
                    self._bars.acquire()
                token = self.token() if auth else bearer
                response = None
            failure: pxe.ProjectXError
            try:
                resp = response() if response is not None else self._send(endpoint, content, token)
            except _NOT_SENT as e:
                failure = pxe.RequestNotSent(endpoint, None, type(e).__name__, "request not sent: connection failed")
            except httpx.TransportError as e:
                kind = pxe.AmbiguousOutcome if write else pxe.TransportFailure
                failure = kind(endpoint, None, type(e).__name__,
                               "no complete response (the request may have been processed)")
            else:
                status = resp.status_code
                if status == 401 and auth and not refreshed:
                    refreshed = True
                    logger.info("ProjectX: {} got HTTP 401, refreshing the token once", endpoint)
                    self._after_401(token)
                    attempt -= 1
                    continue
                if status == 401:
                    raise pxe.AuthenticationFailed(endpoint, 401, "Unauthorized", "HTTP 401")
                if status == 429:
                    failure = pxe.RateLimited(endpoint, "HTTP 429 Too Many Requests", _retry_after(resp))
                elif status >= 500:
                    kind = pxe.AmbiguousOutcome if write else pxe.TransportFailure
                    failure = kind(endpoint, status, f"HTTP{status}", redact(resp.text)[:200])
                elif status != 200:
                    raise pxe.RequestNotSent(endpoint, status, f"HTTP{status}", redact(resp.text)[:200])
                else:
                    try:
                        data = resp.json(parse_float=Decimal)
                    except ValueError:
                        data = None
                    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
                        kind = pxe.AmbiguousOutcome if write else pxe.TransportFailure
                        failure = kind(endpoint, 200, "MalformedResponse", redact(resp.text)[:200])
                    elif not data["success"]:
                        code = data.get("errorCode")
                        raise pxe.error_for(endpoint, code if isinstance(code, int) else None,
                                            data.get("errorMessage"))
                    else:
                        return data
            if write or isinstance(failure, pxe.AmbiguousOutcome) or attempt >= self._read_attempts:
                raise failure
            delay = self._backoff(attempt, failure.retry_after_s if isinstance(failure, pxe.RateLimited) else None)
            logger.warning("ProjectX: {} failed ({}), retry {}/{} in {:.2f}s", endpoint, failure.code_name,
                           attempt, self._read_attempts - 1, delay)
            self._sleep(delay)

    @staticmethod
    def _items(data: Mapping[str, Any], key: str, endpoint: str) -> list[Any]:
        items = data.get(key)
        if items is None:
            return []
        if not isinstance(items, list):
            raise pxe.MalformedPayload(f"not_a_list:{key}", endpoint)
        return items

    # ------------------------------------------------------------------ accounts & contracts

    def accounts(self, only_active: bool = True) -> list[GatewayAccount]:
        """``Account/search`` ("REST endpoints"). Raises ProjectXError / MalformedPayload."""
        data = self._post("Account/search", {"onlyActiveAccounts": only_active})
        return [parse_account(a) for a in self._items(data, "accounts", "Account/search")]

    def search_contracts(self, text: str, live: bool = False) -> list[GatewayContract]:
        """``Contract/search`` (max 20 results, no paging, "REST endpoints"). ``live``: live vs sim
        data subscription."""
        data = self._post("Contract/search", {"searchText": text, "live": live})
        return [parse_contract(c) for c in self._items(data, "contracts", "Contract/search")]

    def contract_by_id(self, contract_id: str) -> GatewayContract:
        """``Contract/searchById`` (also resolves expired contracts, "REST endpoints"). Raises
        ContractNotFound."""
        data = self._post("Contract/searchById", {"contractId": contract_id})
        if data.get("contract") is None:
            raise pxe.ContractNotFound("Contract/searchById", None, "ContractNotFound", contract_id)
        return parse_contract(data["contract"])

    def available_contracts(self, live: bool = False) -> list[GatewayContract]:
        """``Contract/available`` ("REST endpoints")."""
        data = self._post("Contract/available", {"live": live})
        return [parse_contract(c) for c in self._items(data, "contracts", "Contract/available")]

    def resolve_front_month(self, symbol: str, live: bool = False) -> GatewayContract:
        """The one active contract for our ticker ``symbol`` (``ES``, ``MES``...), found by search,
        never by building an id ("Contract ids"): candidates are contracts whose ``symbolId`` root
        is the instrument's ProjectX root (ES -> ``EP``, NQ -> ``ENQ``) or whose name is ``symbol`` +
        month code + year digit(s); only ``activeContract`` ones are kept.

        Raises ContractResolutionError if none or more than one remains (ambiguity is refused).
        """
        sym = symbol.strip().upper()
        spec = INSTRUMENTS.get(sym)
        root = spec.projectx_root if spec is not None else sym
        name_re = re.compile(rf"{re.escape(sym)}[{MONTH_CODES}]\d{{1,2}}")
        found = self.search_contracts(sym, live=live)
        matching = [c for c in found if c.root == root or name_re.fullmatch(c.name)]
        active = [c for c in matching if c.active]
        if len(active) == 1:
            return active[0]
        if not active:
            seen = ", ".join(f"{c.id}{'' if c.active else ' (inactive)'}" for c in matching) or "none"
            raise pxe.ContractResolutionError("Contract/search", None, "NoActiveContract",
                                              f"no active contract for {sym} (root {root}); matching: {seen}")
        raise pxe.ContractResolutionError("Contract/search", None, "AmbiguousContract",
                                          f"{len(active)} active contracts for {sym}: "
                                          + ", ".join(c.id for c in active))

    # ------------------------------------------------------------------ history

    def iter_bar_pages(self, contract_id: str, start: dt.datetime, end: dt.datetime,
                       unit: BarUnit | int = BarUnit.MINUTE, unit_number: int = 1, *, live: bool = False,
                       include_partial: bool = False) -> Iterator[list[GatewayBar]]:
        """``History/retrieveBars`` over ``[start, end]`` as consecutive time pages, oldest first.

        Each page spans ``bars_per_request - 2`` bar periods, so even with both ends inclusive it holds
        fewer bars than the 20,000-bar cap ("History bars") whatever the server's ordering or
        ``limit`` semantics; a page that still comes back full is split in two and re-read. Bars of
        a page are sorted ascending by time and de-duplicated (the API returns newest first). Bars on
        a page boundary may appear in two pages; :meth:`retrieve_bars` de-duplicates across pages.

        ``unit``: :class:`BarUnit` 1 Second .. 6 Month (7 Tick is not supported: pages are sized in time).
        Raises ValueError (naive datetimes, unknown unit, ``unit_number < 1``), ProjectXError, MalformedPayload.
        """
        if unit_number < 1:
            raise ValueError("unit_number must be >= 1")
        unit = BarUnit(unit)
        period = dt.timedelta(seconds=UNIT_SECONDS[unit] * unit_number)
        for t in (start, end):
            iso_utc(t)  # raises for a naive datetime
        span = period * (self._bars_per_request - 2)
        t = start
        while t < end:
            page_end = min(t + span, end)
            yield from self._bars_between(contract_id, t, page_end, unit, unit_number, live, include_partial)
            t = page_end

    def _bars_between(self, contract_id: str, start: dt.datetime, end: dt.datetime, unit: BarUnit,
                      unit_number: int, live: bool, include_partial: bool) -> Iterator[list[GatewayBar]]:
        body = {"contractId": contract_id, "live": live, "startTime": iso_utc(start), "endTime": iso_utc(end),
                "unit": int(unit), "unitNumber": unit_number, "limit": self._bars_per_request,
                "includePartialBar": include_partial}
        data = self._post(_BARS, body)
        raw = self._items(data, "bars", _BARS)
        if len(raw) >= self._bars_per_request and end - start > dt.timedelta(seconds=1):
            mid = start + (end - start) / 2
            logger.warning("ProjectX: bar page {} .. {} came back full, splitting", start, end)
            yield from self._bars_between(contract_id, start, mid, unit, unit_number, live, include_partial)
            yield from self._bars_between(contract_id, mid, end, unit, unit_number, live, include_partial)
            return
        yield sorted({b.ts_ns: b for b in map(parse_bar, raw)}.values(), key=lambda b: b.ts_ns)

    def retrieve_bars(self, contract_id: str, start: dt.datetime, end: dt.datetime,
                      unit: BarUnit | int = BarUnit.MINUTE, unit_number: int = 1, *, live: bool = False,
                      include_partial: bool = False) -> list[GatewayBar]:
        """All bars in ``[start, end]`` (aware datetimes), ascending by time, one per timestamp.
        Pages as :meth:`iter_bar_pages`; each request goes through the 50/30 s history limiter."""
        bars: dict[int, GatewayBar] = {}
        for page in self.iter_bar_pages(contract_id, start, end, unit=unit, unit_number=unit_number, live=live,
                                        include_partial=include_partial):
            bars.update((b.ts_ns, b) for b in page)
        return [bars[k] for k in sorted(bars)]

    # ------------------------------------------------------------------ orders (writes)

    def place_order(self, account_id: int, contract_id: str, order_type: int, side: int, size: int, *,
                    limit_price: Decimal | None = None, stop_price: Decimal | None = None,
                    trail_price: Decimal | None = None, custom_tag: str | None = None,
                    risk_reducing: bool = False, stop_loss_bracket: Mapping[str, int] | None = None,
                    take_profit_bracket: Mapping[str, int] | None = None) -> int:
        """``Order/place`` ("Order placement"): ``order_type`` 1 Limit / 2 Market / 4 Stop /
        5 TrailingStop..., ``side`` 0 buy / 1 sell, ``size`` contracts, absolute prices in points,
        ``custom_tag`` our client order id (unique per account). Returns the gateway order id.
        ``stop_loss_bracket`` / ``take_profit_bracket``: ``{"ticks": signed ticks from the fill,
        "type": 4 | 1}``, sent as ``stopLossBracket`` / ``takeProfitBracket`` (needs the account's
        Auto OCO Brackets mode, else ``OrderRejected``).

        ``risk_reducing`` (not sent; the gateway has no such flag): the order can only shrink a
        position (a take-profit, a flatten's close); it may use the whole rate window and waits
        for a slot like any other call. Any other order is a new entry: it leaves
        ``entry_headroom`` slots free and raises ``ClientRateLimited`` (not sent) rather than wait.

        Never retried. Raises the typed business error (``OrderRejected`` even when the gateway
        also returned an ``orderId``: success is never inferred from the id), AmbiguousOutcome
        (timeout/5xx/Pending/Unknown: reconcile by ``customTag``) or RequestNotSent (not placed).
        """
        return self.begin_place_order(account_id, contract_id, order_type, side, size, limit_price=limit_price,
                                      stop_price=stop_price, trail_price=trail_price, custom_tag=custom_tag,
                                      risk_reducing=risk_reducing, stop_loss_bracket=stop_loss_bracket,
                                      take_profit_bracket=take_profit_bracket)()

    def begin_place_order(self, account_id: int, contract_id: str, order_type: int, side: int, size: int, *,
                          limit_price: Decimal | None = None, stop_price: Decimal | None = None,
                          trail_price: Decimal | None = None, custom_tag: str | None = None,
                          risk_reducing: bool = False, stop_loss_bracket: Mapping[str, int] | None = None,
                          take_profit_bracket: Mapping[str, int] | None = None) -> Callable[[], int]:
        """:meth:`place_order` in two halves: the request is written now when that needs no wait
        (:meth:`_begin`), and the returned ``result()`` reads the answer: the gateway order id, or the
        errors of :meth:`place_order`. Call ``result()`` exactly once (any thread)."""
        body = self._place_body(account_id, contract_id, order_type, side, size, limit_price, stop_price,
                                trail_price, custom_tag)
        for key, bracket in (("stopLossBracket", stop_loss_bracket), ("takeProfitBracket", take_profit_bracket)):
            if bracket is not None:
                body[key] = {"ticks": int(bracket["ticks"]), "type": int(bracket["type"])}
        sent = self._begin("Order/place", body, entry=not risk_reducing)
        return lambda: self._order_id(sent())

    @staticmethod
    def _place_body(account_id: int, contract_id: str, order_type: int, side: int, size: int,
                    limit_price: Decimal | None, stop_price: Decimal | None, trail_price: Decimal | None,
                    custom_tag: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"accountId": account_id, "contractId": contract_id, "type": int(order_type),
                                "side": int(side), "size": int(size)}
        for key, value in (("limitPrice", limit_price), ("stopPrice", stop_price), ("trailPrice", trail_price),
                           ("customTag", custom_tag)):
            if value is not None:
                body[key] = value
        return body

    @staticmethod
    def _order_id(data: Mapping[str, Any]) -> int:
        """The ``orderId`` of a successful ``Order/place`` answer (AmbiguousOutcome without one)."""
        order_id = data.get("orderId")
        if isinstance(order_id, bool) or not isinstance(order_id, int):
            raise pxe.AmbiguousOutcome("Order/place", None, "NoOrderId", "success without an orderId")
        return order_id

    def modify_order(self, account_id: int, order_id: int, *, size: int | None = None,
                     limit_price: Decimal | None = None, stop_price: Decimal | None = None,
                     trail_price: Decimal | None = None) -> None:
        """``Order/modify`` with absolute prices ("Working orders, modify and cancel"); only the given
        fields are sent. Never retried."""
        body: dict[str, Any] = {"accountId": account_id, "orderId": order_id}
        for key, value in (("size", size), ("limitPrice", limit_price), ("stopPrice", stop_price),
                           ("trailPrice", trail_price)):
            if value is not None:
                body[key] = value
        self._post("Order/modify", body)

    def cancel_order(self, account_id: int, order_id: int) -> None:
        """``Order/cancel`` ("Working orders, modify and cancel"; documented for simulated accounts
        only). Never retried."""
        self._post("Order/cancel", {"accountId": account_id, "orderId": order_id})

    def begin_cancel_order(self, account_id: int, order_id: int) -> Callable[[], None]:
        """:meth:`cancel_order` in two halves, as :meth:`begin_place_order`: ``result()`` returns None
        or raises the errors of :meth:`cancel_order`."""
        sent = self._begin("Order/cancel", {"accountId": account_id, "orderId": order_id})

        def result() -> None:
            sent()

        return result

    def close_position(self, account_id: int, contract_id: str) -> None:
        """``Position/closeContract``: closes the whole position with a market order (no order id
        returned). Never retried. Raises PositionNotFound when already flat."""
        self._post("Position/closeContract", {"accountId": account_id, "contractId": contract_id})

    def partial_close_position(self, account_id: int, contract_id: str, size: int) -> None:
        """``Position/partialCloseContract`` for ``size`` contracts. Never retried."""
        self._post("Position/partialCloseContract", {"accountId": account_id, "contractId": contract_id,
                                                     "size": int(size)})

    # ------------------------------------------------------------------ orders, positions, trades (reads)

    def search_orders(self, account_id: int, start: dt.datetime, end: dt.datetime | None = None) -> list[GatewayOrder]:
        """``Order/search`` over ``[start, end]`` (every status). Times are aware datetimes."""
        body: dict[str, Any] = {"accountId": account_id, "startTimestamp": iso_utc(start)}
        if end is not None:
            body["endTimestamp"] = iso_utc(end)
        data = self._post("Order/search", body)
        return [parse_order(o) for o in self._items(data, "orders", "Order/search")]

    def search_open_orders(self, account_id: int) -> list[GatewayOrder]:
        """``Order/searchOpen``: status Open only, **without** Suspended bracket children ("Working
        orders, modify and cancel"); use :meth:`query_orders` for reconciliation."""
        data = self._post("Order/searchOpen", {"accountId": account_id})
        return [parse_order(o) for o in self._items(data, "orders", "Order/searchOpen")]

    def query_orders(self, account_id: int, statuses: Sequence[int] = WORKING_STATUSES, *,
                     contract_id: str | None = None, page_size: int = 500) -> list[GatewayOrder]:
        """``Order/v2/query`` ("Working orders, modify and cancel"): every order in ``statuses``
        (default the working ones 1, 6, 7, 8, Suspended bracket children included), all pages.

        Paging does not rely on ``pageOffset`` (its base is unconfirmed): pages are sorted by creation
        time ascending and each next page asks ``createdAfter`` = the last creation time seen, until a
        page is short or brings no new order id. Returns orders in creation order.
        """
        orders: dict[int, GatewayOrder] = {}
        created_after: str | None = None
        while True:
            flt: dict[str, Any] = {"accountId": account_id, "statuses": [int(s) for s in statuses]}
            if contract_id is not None:
                flt["contractId"] = contract_id
            if created_after is not None:
                flt["createdAfter"] = created_after
            data = self._post("Order/v2/query", {"filter": flt, "pageSize": page_size, "pageOffset": 0,
                                                 "sortBy": 0, "sortDirection": 0})
            page = [parse_order(o) for o in self._items(data, "orders", "Order/v2/query")]
            new = [o for o in page if o.id not in orders]
            orders.update((o.id, o) for o in new)
            if len(page) < page_size or not new:
                return sorted(orders.values(), key=lambda o: (o.created_ns, o.id))
            # one microsecond early: works whether createdAfter is inclusive or exclusive (ids de-duplicate)
            created_after = ns_to_iso(max(o.created_ns for o in page) - 1000)

    def order_by_id(self, account_id: int, order_id: int) -> GatewayOrder:
        """``Order/searchById`` [S]. Raises OrderNotFound."""
        data = self._post("Order/searchById", {"accountId": account_id, "orderId": order_id})
        if data.get("order") is None:
            raise pxe.OrderNotFound("Order/searchById", None, "OrderNotFound", str(order_id))
        return parse_order(data["order"])

    def open_positions(self, account_id: int) -> list[GatewayPosition]:
        """``Position/searchOpen`` (one row per contract; ``size`` positive, direction in ``type``)."""
        data = self._post("Position/searchOpen", {"accountId": account_id})
        return [parse_position(p) for p in self._items(data, "positions", "Position/searchOpen")]

    def search_trades(self, account_id: int, start: dt.datetime, end: dt.datetime | None = None) -> list[GatewayTrade]:
        """``Trade/search``: fills (half-turns) in ``[start, end]``, ascending by (time, id)."""
        body: dict[str, Any] = {"accountId": account_id, "startTimestamp": iso_utc(start)}
        if end is not None:
            body["endTimestamp"] = iso_utc(end)
        data = self._post("Trade/search", body)
        trades = [parse_trade(t) for t in self._items(data, "trades", "Trade/search")]
        return sorted(trades, key=lambda t: (t.ts_ns, t.id))
