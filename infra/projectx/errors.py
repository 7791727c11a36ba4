"""Typed errors of the ProjectX Gateway client.

Every failure the client raises is a :class:`ProjectXError` carrying the ``endpoint`` (``"Order/place"``),
the gateway ``code`` (the envelope's ``errorCode``, or the HTTP status for transport-level failures),
a readable ``code_name`` and the gateway's ``message``. The subclasses answer the one question an
order-changing caller must ask, *did it happen?*:

- :class:`RequestNotSent` (and :class:`RateLimited`): the request provably never reached the
  server's business logic (connection refused, HTTP 429, HTTP 4xx). Nothing happened.
- :class:`AmbiguousOutcome`: the action may or may not have happened (timeout, dropped connection,
  HTTP 5xx, unparsable body, or the gateway's own Pending/UnknownError codes). Reconcile before
  acting again; never retry blindly (docs/reference/projectx-gateway.md#ambiguous-outcomes,
  #rate-limits).
- business rejections named after the per-endpoint ``errorCode`` enum
  (docs/reference/projectx-gateway.md#error-codes), e.g.
  :class:`OrderRejected` (``Order/place`` code 2), :class:`AccountNotFound`, :class:`ContractNotFound`.
  Nothing happened; do not retry unchanged.

:class:`MalformedPayload` is separate (a ``ValueError``): a gateway JSON object that fails
validation in :mod:`infra.projectx.mapping`; ``reason`` is a short counter key.
"""

from __future__ import annotations

from infra.redact import redact


class ProjectXError(Exception):
    """Base of every gateway client error.

    Attributes:
        endpoint: REST path below ``/api/`` (``"Order/place"``), or ``"hub"``.
        code: the envelope ``errorCode``, the HTTP status, or None (transport failure).
        code_name: the enum name for ``code`` on this endpoint
            (docs/reference/projectx-gateway.md#error-codes), or a descriptive name such as
            ``"HTTP503"`` / ``"ReadTimeout"``.
        message: the gateway's ``errorMessage`` or a description (never contains the token).
    """

    def __init__(self, endpoint: str, code: int | None, code_name: str, message: str = "") -> None:
        self.endpoint = endpoint
        self.code = code
        self.code_name = code_name
        self.message = redact(message or "")  # a gateway message may echo the request (the API key)
        super().__init__(f"{endpoint}: {code_name}" + (f" (code {code})" if code is not None else "")
                         + (f": {self.message}" if self.message else ""))


class AuthenticationFailed(ProjectXError):
    """``Auth/loginKey`` refused the credentials (``code_name`` from LoginErrorCode,
    docs/reference/projectx-gateway.md#authentication), or a call still got HTTP 401 after one
    token refresh. Nothing was executed."""


class RequestNotSent(ProjectXError):
    """The request was provably not processed: connection refused / connect timeout (it never left),
    or HTTP 4xx other than 401 (refused before any business logic). Safe to report "not placed"."""


class RateLimited(RequestNotSent):
    """HTTP 429 (docs/reference/projectx-gateway.md#rate-limits): the gateway refused the request
    without processing it.

    ``retry_after_s`` is the server's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(self, endpoint: str, message: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(endpoint, 429, "RateLimited", message)
        self.retry_after_s = retry_after_s


class ClientRateLimited(RequestNotSent):
    """A new entry (``Order/place`` not risk-reducing) was not sent: the client's own rate window
    had no slot left for entries (``ProjectXClient`` ``entry_headroom``). Nothing reached the
    gateway; the strategy may propose the order again later."""

    def __init__(self, endpoint: str, message: str = "") -> None:
        super().__init__(endpoint, None, "ClientRateLimited", message)


class AmbiguousOutcome(ProjectXError):
    """An order-changing call may or may not have been executed (timeout, connection lost after the
    request was sent, HTTP 5xx, unreadable body, or a Pending/UnknownError business code).
    The caller must reconcile (query the venue by ``customTag``) instead of retrying."""


class TransportFailure(ProjectXError):
    """A read call failed after all its retries (HTTP 5xx, timeouts, connection errors, bad JSON).
    Reads change nothing, so this is never ambiguous."""


class ContractResolutionError(ProjectXError):
    """No unique active contract matched a symbol (none, or several: ambiguity is refused,
    docs/reference/projectx-gateway.md#contract-ids)."""


# ------------------------------- business errors (docs/reference/projectx-gateway.md#error-codes)

class AccountNotFound(ProjectXError):
    """errorCode AccountNotFound (code 1 on every account-scoped endpoint)."""


class OrderRejected(ProjectXError):
    """``Order/place`` code 2 (every validation failure: bad type/side/size/price, duplicate
    ``customTag``, bracket mode...; read ``message``) or ``closeContract`` 5 / ``partialClose`` 6."""


class InsufficientFunds(ProjectXError):
    """``Order/place`` code 3."""


class AccountViolation(ProjectXError):
    """``Order/place`` code 4 (the account broke a rule and may not trade)."""


class OutsideTradingHours(ProjectXError):
    """``Order/place`` code 5."""


class ContractNotFound(ProjectXError):
    """ContractNotFound on place (8), modify (7), closeContract (3), partialClose (3),
    ``Contract/searchById`` (1) and ``History/retrieveBars`` (1)."""


class ContractNotActive(ProjectXError):
    """ContractNotActive on place (9), closeContract (4), partialClose (4)."""


class AccountRejected(ProjectXError):
    """AccountRejected on place (10), modify (6), cancel (6; e.g. "Live accounts not supported",
    "Follower accounts cannot cancel orders"), closeContract (8), partialClose (9)."""


class OrderNotFound(ProjectXError):
    """``Order/modify``/``Order/cancel`` code 2, ``Order/searchById`` code 1."""


class Rejected(ProjectXError):
    """``Order/modify``/``Order/cancel`` code 3."""


class PositionNotFound(ProjectXError):
    """``closeContract``/``partialCloseContract`` code 2 (already flat)."""


class InvalidCloseSize(ProjectXError):
    """``partialCloseContract`` code 5."""


class UnitInvalid(ProjectXError):
    """``History/retrieveBars`` code 2."""


class UnitNumberInvalid(ProjectXError):
    """``History/retrieveBars`` code 3."""


class LimitInvalid(ProjectXError):
    """``History/retrieveBars`` code 4."""


class OrderPending(AmbiguousOutcome):
    """``Order/place`` 6, ``closeContract`` 6, ``partialClose`` 7: may still happen. Reconcile."""


class Pending(AmbiguousOutcome):
    """``Order/modify``/``Order/cancel`` code 4: may still happen. Reconcile."""


class UnknownError(AmbiguousOutcome):
    """UnknownError on place (7), modify (5), cancel (5), closeContract (7), partialClose (8)."""


class MalformedPayload(ValueError):
    """A gateway JSON object failed validation (missing field, NaN, negative size, off-tick price...).

    ``reason`` is a short stable key (``"missing:price"``, ``"nan:bestBid"``) used as a counter key.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


ERROR_CODES: dict[str, dict[int, str]] = {
    "Order/place": {1: "AccountNotFound", 2: "OrderRejected", 3: "InsufficientFunds", 4: "AccountViolation",
                    5: "OutsideTradingHours", 6: "OrderPending", 7: "UnknownError", 8: "ContractNotFound",
                    9: "ContractNotActive", 10: "AccountRejected"},
    "Order/modify": {1: "AccountNotFound", 2: "OrderNotFound", 3: "Rejected", 4: "Pending", 5: "UnknownError",
                     6: "AccountRejected", 7: "ContractNotFound"},
    "Order/cancel": {1: "AccountNotFound", 2: "OrderNotFound", 3: "Rejected", 4: "Pending", 5: "UnknownError",
                     6: "AccountRejected"},
    "Position/closeContract": {1: "AccountNotFound", 2: "PositionNotFound", 3: "ContractNotFound",
                               4: "ContractNotActive", 5: "OrderRejected", 6: "OrderPending", 7: "UnknownError",
                               8: "AccountRejected"},
    "Position/partialCloseContract": {1: "AccountNotFound", 2: "PositionNotFound", 3: "ContractNotFound",
                                      4: "ContractNotActive", 5: "InvalidCloseSize", 6: "OrderRejected",
                                      7: "OrderPending", 8: "UnknownError", 9: "AccountRejected"},
    "Contract/searchById": {1: "ContractNotFound"},
    "History/retrieveBars": {1: "ContractNotFound", 2: "UnitInvalid", 3: "UnitNumberInvalid", 4: "LimitInvalid"},
    "Order/search": {1: "AccountNotFound"},
    "Order/searchOpen": {1: "AccountNotFound"},
    "Order/v2/query": {1: "AccountNotFound"},
    "Order/searchById": {1: "OrderNotFound"},
    "Position/searchOpen": {1: "AccountNotFound"},
    "Trade/search": {1: "AccountNotFound"},
    "Auth/loginKey": {1: "UserNotFound", 2: "PasswordVerificationFailed", 3: "InvalidCredentials",
                      4: "AppNotFound", 5: "AppVerificationFailed", 6: "InvalidDevice", 7: "AgreementsNotSigned",
                      8: "UnknownError", 9: "ApiSubscriptionNotFound", 10: "ApiKeyAuthenticationDisabled"},
    "Auth/validate": {1: "InvalidSession", 2: "SessionNotFound", 3: "ExpiredToken", 4: "UnknownError"},
}
"""Per-endpoint ``errorCode`` enums (docs/reference/projectx-gateway.md#error-codes; #authentication
for the Auth codes)."""

WRITE_ENDPOINTS = frozenset({"Order/place", "Order/modify", "Order/cancel", "Position/closeContract",
                             "Position/partialCloseContract"})
"""Order-changing endpoints: never retried blindly; unclear outcomes raise :class:`AmbiguousOutcome`."""

_BY_NAME: dict[str, type[ProjectXError]] = {
    cls.__name__: cls for cls in (
        AccountNotFound, OrderRejected, InsufficientFunds, AccountViolation, OutsideTradingHours, ContractNotFound,
        ContractNotActive, AccountRejected, OrderNotFound, Rejected, PositionNotFound, InvalidCloseSize,
        UnitInvalid, UnitNumberInvalid, LimitInvalid, OrderPending, Pending, UnknownError)
}


def error_for(endpoint: str, code: int | None, message: str | None) -> ProjectXError:
    """The typed exception for a ``success:false`` envelope on ``endpoint``.

    Auth endpoints give :class:`AuthenticationFailed`. A code this table does not know gives
    :class:`AmbiguousOutcome` on an order-changing endpoint (we cannot tell whether it acted) and a
    plain :class:`ProjectXError` elsewhere.
    """
    name = ERROR_CODES.get(endpoint, {}).get(code) if code is not None else None
    if endpoint.startswith("Auth/"):
        return AuthenticationFailed(endpoint, code, name or f"Code{code}", message or "")
    cls = _BY_NAME.get(name or "")
    if cls is not None:
        return cls(endpoint, code, name, message or "")
    if endpoint in WRITE_ENDPOINTS:
        return AmbiguousOutcome(endpoint, code, f"Code{code}", message or "")
    return ProjectXError(endpoint, code, f"Code{code}", message or "")
