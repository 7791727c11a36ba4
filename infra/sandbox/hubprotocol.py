"""The SignalR JSON hub protocol, version 1 (ASP.NET Core ``HubProtocol.md``), server side.

Pure functions, no I/O. Framing: every JSON record ends with the record separator ``\\x1e``; one
WebSocket frame may carry several records and a record may span frames, so incoming text goes
through a :class:`RecordReader`. The first record of a connection is the handshake request
``{"protocol":"json","version":1}`` (version 0 is accepted too, as ASP.NET Core does: signalrcore
sends it), answered with ``{}`` or ``{"error": "..."}``.

Message types (``type`` field): 1 Invocation, 2 StreamItem, 3 Completion, 4 StreamInvocation,
5 CancelInvocation, 6 Ping, 7 Close, 8 Ack, 9 Sequence.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from infra.sandbox.wire import dumps

RS = "\x1e"
"""Record separator that terminates every JSON record."""

PROTOCOL_NAME = "json"
PROTOCOL_VERSION = 1


class MessageType(enum.IntEnum):
    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


class ProtocolError(ValueError):
    """A record that violates the protocol; the server closes the connection with this text."""


class RecordReader:
    """Splits incoming text into complete records; an unterminated tail waits for the next frame."""

    def __init__(self) -> None:
        self._tail = ""

    def feed(self, text: str) -> list[str]:
        """Append ``text``; return the complete records (without separators), in order."""
        *records, self._tail = (self._tail + text).split(RS)
        return records


def encode(message: dict[str, Any]) -> str:
    """One record: compact JSON (Decimals as numbers) + ``\\x1e``."""
    return dumps(message) + RS


def handshake_error(record: str) -> str | None:
    """Check a handshake request. Returns None if it is valid, else the error text to send back."""
    try:
        msg = json.loads(record)
    except ValueError:
        return "Handshake request is not valid JSON."
    if not isinstance(msg, dict) or "protocol" not in msg or "version" not in msg:
        return "Expected a handshake request ({\"protocol\":\"json\",\"version\":1}) as the first message."
    protocol, version = msg["protocol"], msg["version"]
    if protocol != PROTOCOL_NAME:
        return f"The protocol '{protocol}' is not supported."
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        return f"Invalid version {version!r} for the 'json' protocol."
    if version > PROTOCOL_VERSION:
        return f"The server does not support version {version} of the 'json' protocol."
    return None


def parse_message(record: str) -> dict[str, Any]:
    """Decode and validate one record after the handshake.

    Returns the message dict (``type`` is a :class:`MessageType`). Raises :class:`ProtocolError`
    for invalid JSON, a non-object, a missing/unknown ``type``, or an Invocation without a string
    ``target`` / array ``arguments``, a non-string ``invocationId`` or a non-object ``headers``.
    """
    try:
        msg = json.loads(record)
    except ValueError as exc:
        raise ProtocolError(f"Error reading JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("Message is not a JSON object.")
    kind = msg.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in MessageType._value2member_map_:
        raise ProtocolError(f"Unknown message type {kind!r}.")
    msg["type"] = MessageType(kind)
    if "headers" in msg and not isinstance(msg["headers"], dict):
        raise ProtocolError("Expected 'headers' to be of type Object.")
    if "invocationId" in msg and not isinstance(msg["invocationId"], str):
        raise ProtocolError("Expected 'invocationId' to be of type String.")
    if msg["type"] in (MessageType.INVOCATION, MessageType.STREAM_INVOCATION):
        if not isinstance(msg.get("target"), str):
            raise ProtocolError("Missing required property 'target'.")
        if not isinstance(msg.get("arguments"), list):
            raise ProtocolError("Missing required property 'arguments'.")
    return msg


def invocation(target: str, arguments: list[Any]) -> dict[str, Any]:
    """A server-to-client event: Invocation without ``invocationId`` (no reply expected)."""
    return {"type": MessageType.INVOCATION.value, "target": target, "arguments": arguments}


def completion(invocation_id: str, error: str | None = None) -> dict[str, Any]:
    """Completion of a void hub method: ``result`` null on success, else ``error`` (never both)."""
    if error is None:
        return {"type": MessageType.COMPLETION.value, "invocationId": invocation_id, "result": None}
    return {"type": MessageType.COMPLETION.value, "invocationId": invocation_id, "error": error}


PING: dict[str, Any] = {"type": MessageType.PING.value}


def close(error: str | None = None, allow_reconnect: bool | None = None) -> dict[str, Any]:
    """Close message; optional ``error`` text and ``allowReconnect`` flag."""
    msg: dict[str, Any] = {"type": MessageType.CLOSE.value}
    if error is not None:
        msg["error"] = error
    if allow_reconnect is not None:
        msg["allowReconnect"] = allow_reconnect
    return msg
