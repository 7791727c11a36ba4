"""Redis mirror of the trading state: what must survive a crash, and the event journal.

Every key is prefixed ``{ns}:`` where ``ns`` is the namespace (e.g. ``tsx:paper``, ``tsx:live``).
Every value is a string; prices and money are exact decimal strings (never floats).

Key schema (read it with ``redis-cli``)::

    {ns}:meta                    HASH    mode, config_hash, started_ns, incarnation; live: armed,
                                         account; escalation, escalated_ns; finished (replay done)
    {ns}:incarnation             STRING  counter, INCR once per process start (new_incarnation)
    {ns}:seq:orders              STRING  counter, INCR once per client order id (never reused)
    {ns}:order:{client_order_id} HASH    intent          codec.dumps(OrderIntent) (JSON)
                                         status          e.g. PENDING/SUBMITTED/ACCEPTED/
                                                         PARTIALLY_FILLED/FILLED/CANCELLED/
                                                         REJECTED/DENIED
                                         venue_order_id  "" until the venue accepts
                                         filled_qty      int contracts
                                         avg_fill_price  decimal string, "" before any fill
                                         updated_ns      int ns since epoch (event time)
                                         reason          free text ("" if none)
    {ns}:orders:working          SET     client order ids whose status is not terminal
                                         (terminal: FILLED, CANCELLED, REJECTED, DENIED)
    {ns}:fills:seen              SET     venue trade ids already applied (fill de-duplication)
    {ns}:positions               HASH    instrument -> JSON {"qty": int (signed),
                                         "avg_price": str, "realized": str, "fees": str}
    {ns}:risk                    HASH    risk counters, str -> str
    {ns}:strategy:{strategy_id}  STRING  JSON snapshot of one strategy
    {ns}:blob:{name}             STRING  JSON snapshot of anything else (paper broker, feed
                                         cursor, ...)
    {ns}:blob:{name}:log         LIST    append-only JSON entries of a blob (the paper broker's
                                         fills, in execution order)
    {ns}:blob:{name}:ids         LIST    append-only ids of a blob (the paper broker's client
                                         order ids, in arrival order)
    {ns}:events                  STREAM  journal, fields type, ts_ns, json (codec.dumps);
                                         capped at ~200,000 entries (XADD MAXLEN ~)
    {ns}:ops:armed               STRING  live: "1" armed / "0" disarmed; the operator sets it (README)
    {ns}:heartbeat:node          STRING  last heartbeat ts_ns of the node's timer (every heartbeat_s),
                                         expires after 5 x heartbeat_s (at least 5 s): gone = process
                                         down or its timer stuck

Useful commands: ``HGETALL tsx:paper:order:<id>``, ``SMEMBERS tsx:paper:orders:working``,
``HGETALL tsx:paper:positions``, ``XREVRANGE tsx:paper:events + - COUNT 20``,
``GET tsx:paper:heartbeat:node``.

Durability: every write method returns only after Redis acknowledged it (the embedded server
fsyncs its append-only file once a second, see :mod:`infra.embedded_redis`), and
multi-key writes are atomic (MULTI/EXEC or a Lua script), so "written before it is sent" holds.

Thread safety: methods share only the ``redis.Redis`` client (its connection pool is
thread-safe); every transaction/pipeline is created per call.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from domain import codec
from domain.messages import Fill, OrderIntent

class StoreUnavailable(ConnectionError):
    """Redis cannot be reached or the URL is malformed (:meth:`StateStore.open`)."""


def shown_url(url: str) -> str:
    """``url`` without user and password (``REDIS_URL`` may carry a password), for messages."""
    try:
        p = urlsplit(url)
        netloc = (p.hostname or "") + (f":{p.port}" if p.port else "")
        return urlunsplit((p.scheme, netloc, p.path, "", ""))
    except ValueError:
        return "<unparsable URL>"


TERMINAL_STATUSES = frozenset({"FILLED", "CANCELLED", "REJECTED", "DENIED"})
"""Order statuses after which an order is no longer in ``{ns}:orders:working``."""

EVENTS_MAXLEN = 200_000
"""Approximate cap of the ``{ns}:events`` stream (XADD MAXLEN ~)."""

MAX_CLIENT_ORDER_ID_LEN = 50
"""Upper bound for client order ids (they are also sent to the venue as ``customTag``)."""

_ORDER_FIELDS = ("venue_order_id", "filled_qty", "avg_fill_price", "reason", "ts_ns", "updated_ns")

# KEYS[1] = fills:seen, KEYS[2] = events; ARGV = trade_id, maxlen, type, ts_ns, json.
# Optionally KEYS[3] = the order hash, KEYS[4] = orders:working and ARGV[6..10] = coid, qty,
# status, updated_ns, working ("1"/"0"): the order (if it exists) gets filled_qty += qty and
# the status. Returns the stream entry id, or false (None in Python) for an already-seen trade id.
_RECORD_FILL_LUA = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
                        'type', ARGV[3], 'ts_ns', ARGV[4], 'json', ARGV[5])
  if #KEYS == 4 and redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HINCRBY', KEYS[3], 'filled_qty', ARGV[7])
    redis.call('HSET', KEYS[3], 'status', ARGV[8], 'updated_ns', ARGV[9])
    if ARGV[10] == '1' then redis.call('SADD', KEYS[4], ARGV[6]) else redis.call('SREM', KEYS[4], ARGV[6]) end
  end
  return id
end
return false
"""

# KEYS[1] = order hash, KEYS[2] = orders:working, KEYS[3] = events;
# ARGV = coid, working ("1" add / "0" remove), maxlen, event type ("" = no event), ts_ns, json,
#        then field/value pairs for the order hash.
# The order is updated only if it exists and is not terminal yet (a late acknowledgement after a
# fill or cancel must not make it working again); the event is journalled in any case.
# Returns 1 if the order existed, 0 otherwise.
_ORDER_EVENT_LUA = """
local known = redis.call('EXISTS', KEYS[1])
local cur = known == 1 and redis.call('HGET', KEYS[1], 'status') or false
if cur == 'FILLED' or cur == 'CANCELLED' or cur == 'REJECTED' or cur == 'DENIED' then
  -- terminal: status and working set stay as they are
elseif known == 1 then
  if #ARGV > 6 then
    local fields = {}
    for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
    redis.call('HSET', KEYS[1], unpack(fields))
  end
  if ARGV[2] == '1' then redis.call('SADD', KEYS[2], ARGV[1]) else redis.call('SREM', KEYS[2], ARGV[1]) end
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', ARGV[4], 'ts_ns', ARGV[5], 'json', ARGV[6])
end
return known
"""


def _status_str(status: Any) -> str:
    if isinstance(status, enum.Enum):
        status = status.value
    if not isinstance(status, str) or not status:
        raise ValueError(f"order status must be a non-empty string, got {status!r}")
    return status


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return codec.encode(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _to_json(data: Any) -> str:
    return json.dumps(data, default=_json_default, separators=(",", ":"), sort_keys=True)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class StateStore:
    """Typed access to the namespaced Redis mirror described in the module docstring.

    ``client`` must be created with ``decode_responses=True`` (``ValueError`` otherwise);
    ``namespace`` is a non-empty prefix without whitespace, e.g. ``"tsx:paper"``.
    Redis failures surface as ``redis.RedisError`` (callers decide whether to halt).
    """

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        if not namespace or any(c.isspace() for c in namespace) or namespace.endswith(":"):
            raise ValueError(f"invalid namespace {namespace!r}")
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("StateStore needs a redis client with decode_responses=True")
        self.client = client
        self.namespace = namespace
        self._record_fill = client.register_script(_RECORD_FILL_LUA)
        self._order_event = client.register_script(_ORDER_EVENT_LUA)

    @classmethod
    def from_url(cls, url: str, namespace: str) -> "StateStore":
        """Connect to ``url`` (e.g. from :meth:`EmbeddedRedis.ensure_running`)."""
        return cls(redis.Redis.from_url(url, decode_responses=True), namespace)

    @classmethod
    def open(cls, url: str, namespace: str, timeout_s: float = 5.0) -> "StateStore":
        """:meth:`from_url` once the server has answered PING within ``timeout_s`` (connect and read).

        Raises:
            StoreUnavailable: a malformed URL or no answer; the message names the URL without its
                user and password (:func:`shown_url`).
        """
        try:
            probe = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
            try:
                probe.ping()
            finally:
                probe.close()
            return cls.from_url(url, namespace)
        except (redis.RedisError, OSError, ValueError) as e:
            raise StoreUnavailable(f"Redis at {shown_url(url)} is not usable: {type(e).__name__}: {e}") from None

    def key(self, *parts: str) -> str:
        """Full key name: ``key("order", "x")`` -> ``"{ns}:order:x"``."""
        return ":".join((self.namespace, *parts))

    # ------------------------------------------------------------------ meta & counters

    def save_meta(self, *, mode: str, config_hash: str, started_ns: int, incarnation: int) -> None:
        """Write ``{ns}:meta`` (run mode, config hash, start time ns, incarnation)."""
        self.client.hset(self.key("meta"), mapping={
            "mode": mode, "config_hash": config_hash,
            "started_ns": str(int(started_ns)), "incarnation": str(int(incarnation)),
        })

    def load_meta(self) -> dict[str, str]:
        """``{ns}:meta`` as a str -> str dict (empty if never written)."""
        return self.client.hgetall(self.key("meta"))

    def update_meta(self, **fields: Any) -> None:
        """Set fields of ``{ns}:meta`` (``armed``, ``account``, ``escalation``, ``finished``...)."""
        self.client.hset(self.key("meta"), mapping={k: str(v) for k, v in fields.items()})

    def reserve_order_seqs(self, block: int) -> int:
        """Reserve ``block`` order sequence numbers with one INCRBY of ``{ns}:seq:orders``; returns
        the last one reserved (the block is ``last - block + 1 .. last``)."""
        return int(self.client.incrby(self.key("seq", "orders"), int(block)))

    def get_flag(self, name: str) -> str | None:
        """The operator flag ``{ns}:ops:{name}`` (e.g. ``armed``: "1" / "0"), or None."""
        return self.client.get(self.key("ops", name))

    def set_flag(self, name: str, value: str) -> None:
        """Set the operator flag ``{ns}:ops:{name}``."""
        self.client.set(self.key("ops", name), value)

    def pop_ops_command(self) -> str | None:
        """The oldest operator command queued in ``{ns}:ops:commands`` (``"<command> [who]"``,
        pushed with ``redis-cli RPUSH``; docs/operations.md), removed from the list; None if empty."""
        return self.client.lpop(self.key("ops", "commands"))

    def new_incarnation(self) -> int:
        """Increment and return the process incarnation counter (1 on first start)."""
        return int(self.client.incr(self.key("incarnation")))

    def next_client_order_id(self, strategy_id: str, instrument: str, incarnation: int) -> str:
        """A never-reused client order id ``"{strategy_id}-{instrument}-{incarnation}-{seq}"``.

        ``seq`` comes from INCR of ``{ns}:seq:orders``, which alone makes the id unique within
        the namespace. If the id would exceed 50 characters, ``strategy_id`` is cut (keeping its
        start) and then ``instrument`` (keeping its end); uniqueness is kept by ``seq``.
        ``ValueError`` only for an absurdly large incarnation/seq.
        """
        seq = int(self.client.incr(self.key("seq", "orders")))
        tail = f"-{int(incarnation)}-{seq}"
        room = MAX_CLIENT_ORDER_ID_LEN - len(tail) - 1  # minus the '-' between strategy & instr
        if room < 2:
            raise ValueError(f"incarnation {incarnation} leaves no room in a client order id")
        sid, ins = strategy_id, instrument
        if len(sid) + len(ins) > room:
            # Shorten the strategy id first, but keep at least half the room for it.
            sid = sid[: max(room - len(ins), room // 2)]
            ins = ins[-(room - len(sid)):]  # keep the end (contract month) of the instrument
        return f"{sid}-{ins}{tail}"

    # ------------------------------------------------------------------ orders

    def save_order(self, intent: OrderIntent, status: str, *, venue_order_id: str = "",
                   filled_qty: int = 0, avg_fill_price: Decimal | str = "", reason: str = "",
                   ts_ns: int = 0) -> None:
        """Write the whole order record and its working-set membership in one MULTI/EXEC.

        Returns once Redis acknowledged (so the order is durable before it is sent).
        ``updated_ns`` is ``ts_ns``, or ``intent.ts_ns`` when ``ts_ns`` is 0.
        """
        pipe = self.client.pipeline(transaction=True)
        self._queue_order(pipe, intent, status, venue_order_id=venue_order_id, filled_qty=filled_qty,
                          avg_fill_price=avg_fill_price, reason=reason, ts_ns=ts_ns)
        pipe.execute()

    def save_new_orders(self, orders: list[tuple[OrderIntent, str, int]]) -> None:
        """:meth:`save_order` for several new orders ``(intent, status, ts_ns)`` in ONE MULTI/EXEC
        (one round trip): the write-ahead of a decision's orders (:class:`infra.persistence.WriteAhead`)."""
        pipe = self.client.pipeline(transaction=True)
        for intent, status, ts_ns in orders:
            self._queue_order(pipe, intent, status, ts_ns=ts_ns)
        pipe.execute()

    def _queue_order(self, pipe: redis.client.Pipeline, intent: OrderIntent, status: str, *, venue_order_id: str = "",
                     filled_qty: int = 0, avg_fill_price: Decimal | str = "", reason: str = "", ts_ns: int = 0) -> None:
        status = _status_str(status)
        coid = intent.client_order_id
        mapping = {
            "intent": codec.dumps(intent),
            "status": status,
            "venue_order_id": venue_order_id,
            "filled_qty": str(int(filled_qty)),
            "avg_fill_price": "" if avg_fill_price in ("", None) else str(avg_fill_price),
            "updated_ns": str(int(ts_ns or intent.ts_ns)),
            "reason": reason,
        }
        pipe.hset(self.key("order", coid), mapping=mapping)
        self._queue_working(pipe, coid, status)

    @staticmethod
    def _order_mapping(status: str, fields: dict[str, Any]) -> dict[str, str]:
        unknown = set(fields) - set(_ORDER_FIELDS)
        if unknown:
            raise TypeError(f"unknown order field(s): {sorted(unknown)}")
        mapping: dict[str, str] = {"status": _status_str(status)}
        for name, value in fields.items():
            if name in ("ts_ns", "updated_ns"):
                mapping["updated_ns"] = str(int(value))
            elif name == "filled_qty":
                mapping["filled_qty"] = str(int(value))
            elif name == "avg_fill_price":
                mapping["avg_fill_price"] = "" if value in ("", None) else str(value)
            else:
                mapping[name] = str(value)
        return mapping

    def _apply_order_event(self, client_order_id: str, mapping: dict[str, str], event: Any | None) -> bool:
        args: list[Any] = [client_order_id, "0" if mapping["status"] in TERMINAL_STATUSES else "1", EVENTS_MAXLEN]
        if event is None:
            args += ["", "", ""]
        else:
            args += [type(event).__name__, int(event.ts_ns), codec.dumps(event)]
        for k, v in mapping.items():
            args += [k, v]
        keys = [self.key("order", client_order_id), self.key("orders", "working"), self.key("events")]
        return bool(self._order_event(keys=keys, args=args))

    def update_order_status(self, client_order_id: str, status: str, **fields: Any) -> None:
        """Set ``status`` (and any of ``venue_order_id``, ``filled_qty``, ``avg_fill_price``,
        ``reason``, ``updated_ns`` -- or its alias ``ts_ns``) on an existing order, atomically
        with its working-set membership (one Lua script, one round trip). An order already in a
        terminal status (:data:`TERMINAL_STATUSES`) is left as it is: statuses only move forward.

        Raises ``KeyError`` if the order was never saved (nothing is written), ``TypeError`` on
        an unknown field.
        """
        if not self._apply_order_event(client_order_id, self._order_mapping(status, fields), None):
            raise KeyError(client_order_id)

    def record_order_event(self, event: Any, status: str, **fields: Any) -> bool:
        """Journal ``event`` (an order event message with ``client_order_id`` and ``ts_ns``) to
        ``{ns}:events`` and, if the order is known, set its ``status`` and ``fields`` (as
        :meth:`update_order_status`), atomically in one round trip. Returns True if the order was
        known; an unknown one (an emergency flatten, a venue-side order) is journalled only.
        """
        return self._apply_order_event(event.client_order_id, self._order_mapping(status, fields), event)

    def record_fill_and_status(self, fill: Fill) -> bool:
        """:meth:`record_fill` plus, for a new trade id, the order's ``filled_qty`` increased by
        ``fill.qty``, its status (``FILLED`` when ``leaves_qty`` is 0, else ``PARTIALLY_FILLED``),
        ``updated_ns`` and working-set membership: one Lua script, atomic, one round trip.
        Returns False (writing nothing) for a duplicate trade id."""
        status = "FILLED" if fill.leaves_qty == 0 else "PARTIALLY_FILLED"
        coid = fill.client_order_id
        entry = self._record_fill(
            keys=[self.key("fills", "seen"), self.key("events"), self.key("order", coid), self.key("orders", "working")],
            args=[fill.trade_id, EVENTS_MAXLEN, type(fill).__name__, int(fill.ts_ns), codec.dumps(fill),
                  coid, fill.qty, status, int(fill.ts_ns), "0" if status in TERMINAL_STATUSES else "1"])
        return entry is not None

    def _queue_working(self, pipe: redis.client.Pipeline, coid: str, status: str) -> None:
        if status in TERMINAL_STATUSES:
            pipe.srem(self.key("orders", "working"), coid)
        else:
            pipe.sadd(self.key("orders", "working"), coid)

    @staticmethod
    def _decode_order(raw: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = dict(raw)
        out["intent"] = codec.loads(raw["intent"])
        out["filled_qty"] = int(raw.get("filled_qty") or 0)
        out["updated_ns"] = int(raw.get("updated_ns") or 0)
        price = raw.get("avg_fill_price", "")
        out["avg_fill_price"] = Decimal(price) if price else None
        out.setdefault("venue_order_id", "")
        out.setdefault("reason", "")
        return out

    def load_order(self, client_order_id: str) -> dict[str, Any] | None:
        """The order record, or None if unknown.

        Shape: ``{"intent": OrderIntent, "status": str, "venue_order_id": str,
        "filled_qty": int, "avg_fill_price": Decimal | None, "updated_ns": int, "reason": str}``.
        """
        raw = self.client.hgetall(self.key("order", client_order_id))
        return self._decode_order(raw) if raw else None

    def load_working_orders(self) -> dict[str, dict[str, Any]]:
        """All non-terminal orders: client order id -> record as in :meth:`load_order`."""
        coids = sorted(self.client.smembers(self.key("orders", "working")))
        if not coids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for coid in coids:
            pipe.hgetall(self.key("order", coid))
        return {coid: self._decode_order(raw)
                for coid, raw in zip(coids, pipe.execute()) if raw}

    # ------------------------------------------------------------------ fills

    def record_fill(self, fill: Fill) -> bool:
        """Mark ``fill.trade_id`` seen and journal the fill, atomically (Lua).

        Returns True for a new trade id, False (and writes nothing) for a duplicate.
        """
        entry = self._record_fill(
            keys=[self.key("fills", "seen"), self.key("events")],
            args=[fill.trade_id, EVENTS_MAXLEN, type(fill).__name__, int(fill.ts_ns),
                  codec.dumps(fill)],
        )
        return entry is not None

    def fill_seen(self, trade_id: str) -> bool:
        """True if :meth:`record_fill` already accepted ``trade_id``."""
        return bool(self.client.sismember(self.key("fills", "seen"), trade_id))

    # ------------------------------------------------------------------ positions, risk

    def save_positions(self, positions: dict[str, dict[str, Any]]) -> None:
        """Replace ``{ns}:positions`` atomically.

        ``positions``: instrument -> ``{"qty": int (signed), "avg_price": Decimal|str,
        "realized": Decimal|str, "fees": Decimal|str}`` (realized/fees default to "0").
        """
        pipe = self.client.pipeline(transaction=True)
        self._queue_positions(pipe, positions)
        pipe.execute()

    def _queue_positions(self, pipe: Any, positions: dict[str, dict[str, Any]]) -> None:
        mapping = {
            inst: json.dumps({
                "qty": int(p["qty"]),
                "avg_price": str(p.get("avg_price", "0")),
                "realized": str(p.get("realized", "0")),
                "fees": str(p.get("fees", "0")),
            }, separators=(",", ":"), sort_keys=True)
            for inst, p in positions.items()
        }
        pkey = self.key("positions")
        pipe.delete(pkey)
        if mapping:
            pipe.hset(pkey, mapping=mapping)

    def load_positions(self) -> dict[str, dict[str, Any]]:
        """instrument -> ``{"qty": int, "avg_price": Decimal | None, "realized": Decimal,
        "fees": Decimal}`` (empty dict if none); ``avg_price`` is None for a flat instrument."""
        out: dict[str, dict[str, Any]] = {}
        for inst, text in self.client.hgetall(self.key("positions")).items():
            p = json.loads(text)
            out[inst] = {"qty": int(p["qty"]), "avg_price": Decimal(p["avg_price"]) if p["avg_price"] else None,
                         "realized": Decimal(p["realized"]), "fees": Decimal(p["fees"])}
        return out

    def save_risk(self, counters: dict[str, Any]) -> None:
        """Replace ``{ns}:risk`` atomically; values are stored as ``str(value)``."""
        pipe = self.client.pipeline(transaction=True)
        self._queue_risk(pipe, counters)
        pipe.execute()

    def _queue_risk(self, pipe: Any, counters: dict[str, Any]) -> None:
        rkey = self.key("risk")
        pipe.delete(rkey)
        if counters:
            pipe.hset(rkey, mapping={str(k): str(v.value if isinstance(v, enum.Enum) else v)
                                     for k, v in counters.items()})

    def save_risk_mirror(self, strategy_id: str, snapshot_json: str, counters: dict[str, Any],
                         positions: dict[str, dict[str, Any]]) -> None:
        """The risk manager's whole mirror in one MULTI/EXEC (one round trip, never half-written):
        ``{ns}:strategy:{strategy_id}`` = ``snapshot_json`` (see :meth:`encode`), ``{ns}:risk`` =
        ``counters`` (as :meth:`save_risk`) and ``{ns}:positions`` = ``positions`` (as
        :meth:`save_positions`)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.key("strategy", strategy_id), snapshot_json)
        self._queue_risk(pipe, counters)
        self._queue_positions(pipe, positions)
        pipe.execute()

    def load_risk(self) -> dict[str, str]:
        """``{ns}:risk`` as str -> str (empty dict if none)."""
        return self.client.hgetall(self.key("risk"))

    # ------------------------------------------------------------------ snapshots

    def save_strategy(self, strategy_id: str, state: dict[str, Any] | str) -> None:
        """Store a strategy snapshot as JSON. Decimals/enums become strings, tuples lists,
        messages their codec dict; ``TypeError`` for anything else not JSON-able. A ``str`` is
        taken as JSON already encoded with :func:`encode` (so a caller can encode in one thread and
        write in another)."""
        self.client.set(self.key("strategy", strategy_id), state if isinstance(state, str) else _to_json(state))

    @staticmethod
    def encode(state: dict[str, Any]) -> str:
        """The JSON text :meth:`save_strategy` would store for ``state``."""
        return _to_json(state)

    def load_strategy(self, strategy_id: str) -> dict[str, Any] | None:
        """The JSON-decoded snapshot (Decimals come back as strings), or None."""
        text = self.client.get(self.key("strategy", strategy_id))
        return None if text is None else json.loads(text)

    def save_blob(self, name: str, data: dict[str, Any]) -> None:
        """Store any other snapshot under ``{ns}:blob:{name}`` (same encoding as strategies)."""
        self.client.set(self.key("blob", name), _to_json(data))

    def save_blob_incremental(self, name: str, data: dict[str, Any], new_entries: list[dict[str, Any]],
                              new_ids: list[str]) -> None:
        """One MULTI/EXEC: replace ``{ns}:blob:{name}`` with ``data`` and append ``new_entries``
        (JSON) to ``{ns}:blob:{name}:log`` and ``new_ids`` to ``{ns}:blob:{name}:ids``. For a
        snapshot whose history only grows: each write costs the new part, not the whole history."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.key("blob", name), _to_json(data))
        if new_entries:
            pipe.rpush(self.key("blob", name, "log"), *[_to_json(e) for e in new_entries])
        if new_ids:
            pipe.rpush(self.key("blob", name, "ids"), *new_ids)
        pipe.execute()

    def load_blob_history(self, name: str) -> tuple[list[dict[str, Any]], list[str]]:
        """``(entries, ids)`` appended by :meth:`save_blob_incremental`, oldest first, read in
        one MULTI/EXEC (consistent with each other)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(self.key("blob", name, "log"), 0, -1)
        pipe.lrange(self.key("blob", name, "ids"), 0, -1)
        entries, ids = pipe.execute()
        return [json.loads(e) for e in entries], list(ids)

    def load_blob(self, name: str) -> dict[str, Any] | None:
        """The JSON-decoded blob, or None."""
        text = self.client.get(self.key("blob", name))
        return None if text is None else json.loads(text)

    # ------------------------------------------------------------------ event journal

    def append_event(self, msg: Any) -> str:
        """XADD a message to ``{ns}:events`` (capped ~200k); returns the stream entry id."""
        return self.client.xadd(
            self.key("events"),
            {"type": type(msg).__name__, "ts_ns": str(int(getattr(msg, "ts_ns", 0))),
             "json": codec.dumps(msg)},
            maxlen=EVENTS_MAXLEN, approximate=True,
        )

    def read_events(self, count: int = 100) -> list[Any]:
        """The last ``count`` journaled messages, decoded, oldest first (newest last)."""
        entries = self.client.xrevrange(self.key("events"), count=count)
        return [codec.loads(fields["json"]) for _id, fields in reversed(entries)]

    def event_count(self) -> int:
        """Number of entries currently in ``{ns}:events``."""
        return int(self.client.xlen(self.key("events")))

    # ------------------------------------------------------------------ liveness & admin

    def heartbeat(self, actor: str, ts_ns: int, ttl_s: int = 30) -> None:
        """Set ``{ns}:heartbeat:{actor}`` to ``ts_ns``, expiring after ``ttl_s`` seconds."""
        self.client.set(self.key("heartbeat", actor), str(int(ts_ns)), ex=int(ttl_s))

    def last_heartbeat(self, actor: str) -> int | None:
        """The last heartbeat ts_ns of ``actor``, or None if absent/expired."""
        text = self.client.get(self.key("heartbeat", actor))
        return None if text is None else int(text)

    def flush(self) -> int:
        """Delete every key of this namespace (SCAN + UNLINK); returns how many were deleted.
        Keys of other namespaces (even ones sharing a prefix like ``{ns}x``) are untouched."""
        deleted = 0
        batch: list[str] = []
        for k in self.client.scan_iter(match=_glob_escape(self.namespace) + ":*", count=500):
            batch.append(k)
            if len(batch) >= 500:
                deleted += int(self.client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(self.client.unlink(*batch))
        return deleted

    def ping(self) -> bool:
        """True if Redis answers PING; never raises."""
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()
