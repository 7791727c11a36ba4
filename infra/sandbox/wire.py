"""Wire formats shared by the sandbox's REST API and hubs: JSON numbers and ISO-8601 times.

- Prices and money are ``Decimal`` inside the sandbox and JSON *numbers* on the wire (the gateway
  serializes .NET decimals as numbers). :func:`dumps` writes a Decimal through ``float``, whose
  shortest round-trip text equals the decimal text for every value with up to 15 significant
  digits (all tick prices, fees and P&L here); only non-terminating averages lose digits beyond that.
- Request bodies are parsed with :func:`loads`, which keeps non-integral numbers as ``Decimal``.
- Times on the wire are ISO-8601 UTC with an explicit ``+00:00`` offset (microseconds shown only
  when non-zero), e.g. ``2026-04-08T13:30:00+00:00``. Inside the sandbox times are int ns UTC.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from infra.replay import parse_utc_ns

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """JSON text of ``obj`` with Decimals as JSON numbers (compact separators)."""
    return json.dumps(obj, default=_default, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """Parse JSON; non-integral numbers become ``Decimal`` (exact prices). Raises ValueError."""
    return json.loads(text, parse_float=Decimal)


def iso(ts_ns: int) -> str:
    """Epoch ns UTC -> ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`` (sub-microsecond digits dropped)."""
    return (_EPOCH + dt.timedelta(microseconds=ts_ns // 1000)).isoformat()


def parse_time(value: Any) -> int | None:
    """ISO-8601 text (``Z``, an offset, or none = UTC; up to 9 fractional digits) -> epoch ns UTC.

    Returns None for anything else (wrong type, unparsable text, a bare number)."""
    if not isinstance(value, str) or value.strip().isdigit():
        return None
    return parse_utc_ns(value)
