"""JSON-safe encoding of :mod:`domain.messages` (for the Redis event stream and state mirror).

``encode(msg)`` gives ``{"type": "<ClassName>", ...fields}`` where Decimals become strings (exact),
enums their value, nested messages dicts and tuples lists. ``decode(d)`` reverses it exactly:
``decode(encode(m)) == m`` for every message type. Unknown types raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from decimal import Decimal
from functools import cache
from typing import Any

from domain import messages as M

MESSAGE_TYPES: dict[str, type] = {
    name: obj for name, obj in vars(M).items()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj)
}


def _enc(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, enum.Enum):
        return v.value
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return encode(v)
    if isinstance(v, (tuple, list)):
        return [_enc(x) for x in v]
    return v


def encode(msg: Any) -> dict[str, Any]:
    """Message -> JSON-safe dict with a ``type`` tag."""
    out: dict[str, Any] = {"type": type(msg).__name__}
    for f in dataclasses.fields(msg):
        out[f.name] = _enc(getattr(msg, f.name))
    return out


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(M))


def _dec(tp: Any, v: Any) -> Any:
    if v is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _dec(args[0], v)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_dec(args[0], x) for x in v)
        return tuple(_dec(a, x) for a, x in zip(args, v))
    if tp is Decimal:
        return Decimal(v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(v)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return decode(v)
    return v


def decode(d: dict[str, Any]) -> Any:
    """Dict from :func:`encode` -> message. Raises ValueError on an unknown ``type``."""
    cls = MESSAGE_TYPES.get(d.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown message type {d.get('type')!r}")
    hints = _hints(cls)
    kwargs = {f.name: _dec(hints[f.name], d[f.name]) for f in dataclasses.fields(cls) if f.name in d}
    return cls(**kwargs)


def dumps(msg: Any) -> str:
    """Message -> compact JSON text (sorted keys, so equal messages give equal bytes)."""
    return json.dumps(encode(msg), separators=(",", ":"), sort_keys=True)


def loads(text: str | bytes) -> Any:
    """JSON text from :func:`dumps` -> message."""
    return decode(json.loads(text))
