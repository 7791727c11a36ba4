"""Why a sandbox operation failed, independent of the endpoint that reports it.

The gateway's ``errorCode`` enums are per endpoint (the same failure has different numbers on
different endpoints), so the exchange and the history service raise :class:`GatewayError` with a
:class:`Reason`, and :mod:`infra.sandbox.rest` maps each reason to the endpoint's own number.
"""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    INVALID_CREDENTIALS = "invalid_credentials"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_REJECTED = "account_rejected"  # the account may not do this (e.g. cancel on a live account)
    CONTRACT_NOT_FOUND = "contract_not_found"
    CONTRACT_NOT_ACTIVE = "contract_not_active"  # listed but not streamed/tradable in the sandbox
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_REJECTED = "order_rejected"  # any validation failure of an order or modify
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the account's margin does not carry the order
    POSITION_NOT_FOUND = "position_not_found"
    INVALID_CLOSE_SIZE = "invalid_close_size"
    NO_PRICE = "no_price"  # a market close needs a last trade price
    UNIT_INVALID = "unit_invalid"
    UNIT_NUMBER_INVALID = "unit_number_invalid"
    LIMIT_INVALID = "limit_invalid"


class GatewayError(Exception):
    """A business failure: answered as HTTP 200 ``success: false`` with the endpoint's errorCode.

    Attributes:
        reason: what went wrong.
        message: the ``errorMessage`` text (None where the gateway sends null).
        payload: the endpoint's payload field despite the failure (None: null), as ``Order/place``
            returns an ``orderId`` when it refuses brackets in Position Brackets mode.
    """

    def __init__(self, reason: Reason, message: str | None, payload: object = None) -> None:
        super().__init__(message or reason.value)
        self.reason = reason
        self.message = message
        self.payload = payload
