"""One redaction for every log line and every alert: secrets are replaced before text leaves the process.

Why: an audit found the ProjectX API key in a log (loguru's ``diagnose`` printed the local
variables of a traceback under the login) and the Slack webhook's secret path in a log (the
webhook's error body echoed it back). Redacting at each call site misses such cases, so the text is
redacted where it is written: :func:`infra.logs.setup_logging` installs :data:`REDACTOR` on every
loguru sink (message *and* formatted traceback), :class:`infra.alerts.SlackAlerter` passes alert
text and its error descriptions through it, :class:`RedactFilter` does the same for stdlib loggers
(``httpx``, ``SignalRCoreClient``), and :class:`infra.projectx.errors.ProjectXError` redacts the
gateway's message (which may echo the request) when it is built, so that a ``print`` of it is clean.

What is redacted (:meth:`Redactor.redact`):

- **known values**, replaced wherever they occur:
  - ``PROJECTX_API_KEY`` (read from the environment at start and again at most once a second);
    ``PROJECTX_USERNAME`` is deliberately *not* a secret: the login name is needed to read the logs;
  - ``SLACK_WEBHOOK_URL``: the whole URL, the path after ``/services/`` (``T.../B.../xxxx``, also
    percent-encoded) and its last segment (the actual secret), each replaced by ``<webhook>``,
    because a webhook's error body may echo only the path or only the token;
  - every value given to :func:`register` at run time (the ProjectX client registers its API key and
    each session token it receives). Values shorter than :data:`MIN_SECRET_LEN` are ignored (they
    would shred ordinary text; real keys and tokens are far longer).
- **shapes**, whatever their value: JWTs (``eyJ...`` three dot-separated base64url parts: ProjectX
  session tokens), ``Bearer <x>``, ``access_token=<x>``, the value of a field whose name ends in
  ``api_key``/``apiKey``, ``token``, ``password``, ``secret`` or ``webhook_url`` (quoted JSON/repr
  values ``"apiKey": "<x>"``, and ``name=<x>`` as in a query string; this also covers a value that
  loguru's ``diagnose`` truncated, e.g. in a dump of ``os.environ``), and Slack webhook paths
  ``/services/T.../B.../...``.

Markers: ``<webhook>`` for Slack webhook material, ``<redacted>`` for everything else; the
surrounding text (``Bearer ``, ``access_token=``, ``"apiKey":"``) is kept so a reader knows what was
there.

Limits: text written with ``print`` or by a stdlib logger without :class:`RedactFilter` is not
covered, and a known value that was cut off mid-way (a truncated repr) is found only in a named
field or by its shape. Hence ``diagnose`` stays off outside ``--debug``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

REDACTED = "<redacted>"
"""Marker for a redacted API key, token or registered value."""
WEBHOOK = "<webhook>"
"""Marker for a redacted Slack webhook URL, path or path segment."""
MIN_SECRET_LEN = 8
"""Registered values shorter than this are ignored (see the module docstring)."""
ENV_SECRETS: Mapping[str, str] = {"PROJECTX_API_KEY": "key", "SLACK_WEBHOOK_URL": "webhook"}
"""Environment variables whose values are secrets: name -> kind (``key`` or ``webhook``)."""

_NAMES = r"(?:api_?key|token|password|secret|webhook_url)"
"""Field names whose value is a secret (suffix match: ``apiKey``, ``newToken``, ``PROJECTX_API_KEY``)."""
_NAME_HINTS = ("apikey", "api_key", "token", "password", "secret", "webhook_url")
_SHAPES: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    # (hints: one of them must occur in the lower-cased text, else the pattern is skipped; pattern; replacement)
    # Slack webhook path, on any host: keep "/services/", drop the rest.
    (("/services/",), re.compile(r"(/services/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"), r"\1" + WEBHOOK),
    (("bearer",), re.compile(r"(?i)(\bbearer\s+)[^\s'\",;}\]]+"), r"\1" + REDACTED),
    (("access_token=",), re.compile(r"(?i)(\baccess_token=)[^&\s'\"]+"), r"\1" + REDACTED),
    # a field named like a secret: "apiKey": "v" / 'SLACK_WEBHOOK_URL': 'v' (quoted value), or apiKey=v
    (_NAME_HINTS, re.compile(r"(?i)([\"']\w*" + _NAMES + r"[\"']\s*:\s*[\"'])(?!<redacted>|<webhook>)[^\"']+"),
     r"\1" + REDACTED),
    (_NAME_HINTS, re.compile(r"(?i)(\b\w*" + _NAMES + r"=[\"']?)(?!<redacted>|<webhook>)[^\s\"'&,;)}\]]+"),
     r"\1" + REDACTED),
    (("eyj",), re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), REDACTED),
)


def webhook_parts(url: str) -> list[str]:
    """The pieces of a webhook URL that are secret on their own: the URL, the path after
    ``/services/`` (or the whole path) and its percent-encoded form, and the last path segment."""
    parts = [url]
    path = urlsplit(url).path.strip("/")
    if "services/" in path:
        path = path.split("services/", 1)[1]
    if path:
        parts += [path, quote(path, safe=""), path.rsplit("/", 1)[-1]]
    return parts


class Redactor:
    """Replaces secrets in text (see the module docstring for what and why). Thread-safe.

    ``environ``: where :data:`ENV_SECRETS` are read (:meth:`load_env`; None: not at all). Cost:
    a few microseconds for a typical log line (each pattern runs only if a cheap substring hint of
    it occurs in the text).
    """

    def __init__(self, secrets: Iterable[str] = (), *, environ: Mapping[str, str] | None = os.environ) -> None:
        self._environ = environ
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}  # secret -> marker
        self._env_seen: tuple[str | None, ...] = ()
        self._literal: re.Pattern[str] | None = None
        self._env_at = 0.0
        for s in secrets:
            self.register(s)
        self.load_env()

    def register(self, secret: str | None, marker: str = REDACTED) -> str | None:
        """Redact ``secret`` from now on (ignored if None or shorter than :data:`MIN_SECRET_LEN`).
        Returns ``secret``, so it can wrap an assignment."""
        if secret and len(secret) >= MIN_SECRET_LEN:
            with self._lock:
                if self._values.get(secret) != marker:
                    self._values[secret] = marker
                    self._compile()
        return secret

    def register_webhook(self, url: str | None) -> None:
        """Redact a Slack webhook URL and its secret pieces (:func:`webhook_parts`) as ``<webhook>``."""
        if url:
            for part in webhook_parts(url):
                self.register(part, WEBHOOK)

    def _compile(self) -> None:
        values = sorted(self._values, key=len, reverse=True)  # longest first: the URL before its path
        self._literal = re.compile("|".join(map(re.escape, values))) if values else None

    def load_env(self) -> None:
        """Register the current values of :data:`ENV_SECRETS` (done at construction, by
        :func:`infra.logs.setup_logging`, and by :meth:`redact` at most once a second)."""
        self._env_at = time.monotonic()
        if self._environ is None:
            return
        current = tuple(self._environ.get(name) for name in ENV_SECRETS)
        if current == self._env_seen:
            return
        self._env_seen = current
        for (name, kind), value in zip(ENV_SECRETS.items(), current):
            if kind == "webhook":
                self.register_webhook(value)
            else:
                self.register(value)

    def redact(self, text: str) -> str:
        """``text`` with every known secret and every secret-shaped value replaced by a marker."""
        if not text:
            return text
        if time.monotonic() - self._env_at >= 1.0:
            self.load_env()
        literal = self._literal
        if literal is not None:
            values = self._values
            text = literal.sub(lambda m: values.get(m.group(0), REDACTED), text)
        low = text.lower()
        for hints, pattern, repl in _SHAPES:
            for hint in hints:
                if hint in low:
                    text = pattern.sub(repl, text)
                    break
        return text

    __call__ = redact

    # ------------------------------------------------------------------ loguru

    def patch(self, record: dict[str, Any]) -> None:
        """loguru patcher: redact ``record["message"]`` (for every sink, also ones added later)."""
        record["message"] = self.redact(record["message"])

    def sink(self, inner: Any) -> RedactingSink:
        """A loguru sink object that redacts the fully formatted text (message and traceback) and
        hands it to ``inner`` (a stream, or loguru's file sink)."""
        return RedactingSink(inner, self)


class _Message(str):
    """A formatted loguru message whose text was redacted; ``record`` is kept (the file sink's
    rotation reads ``record["time"]``)."""

    __slots__ = ("record",)


class RedactingSink:
    """Wraps a loguru sink target: every formatted message (including the exception traceback with
    ``diagnose`` values) goes through the :class:`Redactor` before ``inner.write``."""

    def __init__(self, inner: Any, redactor: Redactor) -> None:
        self._inner = inner
        self._redactor = redactor
        self.encoding = getattr(inner, "encoding", None)
        self.name = getattr(inner, "name", None) or getattr(inner, "_path", None) or repr(inner)

    def write(self, message: str) -> None:
        text = self._redactor.redact(str(message))
        if text != message:
            redacted = _Message(text)
            redacted.record = getattr(message, "record", None)
            message = redacted
        self._inner.write(message)

    def flush(self) -> None:
        if callable(getattr(self._inner, "flush", None)):
            self._inner.flush()

    def stop(self) -> None:
        if callable(getattr(self._inner, "stop", None)):
            self._inner.stop()

    def isatty(self) -> bool:
        try:
            return bool(self._inner.isatty())
        except Exception:
            return False

    def __repr__(self) -> str:
        return f"RedactingSink({self.name})"


# ---------------------------------------------------------------------- stdlib logging

class RedactFilter(logging.Filter):
    """stdlib logging filter: the record's formatted message goes through the :class:`Redactor`
    (httpx logs every request URL at INFO, signalrcore the hub URL with ``?access_token=``)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor or REDACTOR

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # malformed record: leave it to logging's own error handling
            return True
        clean = self._redactor.redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def install_filter(logger_name: str, redactor: Redactor | None = None) -> None:
    """Attach a :class:`RedactFilter` (of ``redactor``, default :data:`REDACTOR`) to the stdlib
    logger ``logger_name`` for the life of the process, unless this function already did."""
    log = logging.getLogger(logger_name)
    if not any(getattr(f, "_installed", False) for f in log.filters):
        f = RedactFilter(redactor)
        f._installed = True  # type: ignore[attr-defined]
        log.addFilter(f)


# ---------------------------------------------------------------------- the process-wide redactor

REDACTOR = Redactor()
"""The process-wide redactor: the environment's secrets plus everything :func:`register`-ed."""


def redact(text: str) -> str:
    """:meth:`Redactor.redact` of the process-wide :data:`REDACTOR`."""
    return REDACTOR.redact(text)


def register(secret: str | None) -> str | None:
    """Register a secret known only at run time (e.g. a session token) with :data:`REDACTOR`;
    returns it."""
    return REDACTOR.register(secret)


def register_webhook(url: str | None) -> None:
    """Register a Slack webhook URL and its secret pieces with :data:`REDACTOR`."""
    REDACTOR.register_webhook(url)
