"""Operator alerts to a Slack incoming webhook, with de-duplication and a rate limit.

Messages are Slack Block Kit (https://api.slack.com/block-kit): a header with the severity and
what happened, fields with the account, mode, severity, event time (CT) and alert key, the text
with its numbers, and the action taken; plus a plain ``text`` fallback for notifications
(:meth:`SlackAlerter.blocks`).

Every alert that is not de-duplicated is also written to the loguru log at its level, so the log
is the complete record and Slack only the notification channel.

Secrets: the webhook URL is one (its path after ``/services/`` is the credential). It is registered
with the process-wide :data:`infra.redact.REDACTOR`, so it never appears in our log lines, in our
error descriptions (a webhook's error body may echo the path, or only its last segment: replaced by
``<webhook>``) or in ``repr``; the ``httpx`` stdlib logger (it logs every request URL) gets the same
redaction. Alert text is redacted too before it is posted or logged (an alert may quote an
exception that quoted a token): one redaction, :mod:`infra.redact`, for log lines and alerts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Callable

from loguru import logger

from domain.calendar import ns_to_ct
from domain.messages import Alert
from infra.redact import WEBHOOK, RedactFilter, redact, register_webhook

if TYPE_CHECKING:
    import httpx

REDACTED = WEBHOOK
"""What the webhook URL (or its path, or its secret segment) is replaced with."""

_EMOJI = {"CRITICAL": ":rotating_light:", "ERROR": ":red_circle:", "WARNING": ":warning:", "INFO": ":information_source:",
          "DEBUG": ":mag:"}

_LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
}


def log_level(level: str) -> str:
    """loguru level name for an :class:`Alert` level (case-insensitive); unknown -> WARNING."""
    return _LEVELS.get(level.strip().lower(), "WARNING")


def log_alert(alert: Alert) -> None:
    """Write ``alert`` to the log at its level with its event time (America/Chicago), redacted, and
    post it nowhere: the alerts of a backtest, which has no watchdog (:class:`actors.dispatcher.Dispatcher`
    ``on_alert``)."""
    when = ns_to_ct(alert.ts_ns).strftime("%Y-%m-%d %H:%M:%S CT") if alert.ts_ns > 0 else "no event time"
    logger.log(log_level(alert.level), "ALERT at {} {}", when, redact(SlackAlerter.format(alert)))


class SlackAlerter:
    """Send :class:`~domain.messages.Alert` messages to Slack.

    ``webhook_url``: Slack incoming-webhook URL, or None/"" to only log. ``dedupe_window_s``:
    an alert whose ``key`` was *sent* less than this many seconds ago is dropped.
    ``max_per_minute``: at most this many POSTs in any 60 s window. ``timeout_s``: HTTP timeout.
    ``clock``: monotonic seconds (injectable for tests). ``context``: ``{"account": ..., "mode":
    ...}`` shown in every message (:meth:`set_context` updates it once the account is known).

    De-duplication is by :meth:`dedupe_key`: the alert's key and the trading day of its event
    time (America/Chicago, 17:00 CT roll), so the same event on another day is a new alert (a
    replay at ``--speed max`` crosses days within the wall-clock window). Never suppressed, by the
    window or the rate limit: CRITICAL alerts and a HALT (a key naming ``HALTED``). Every suppressed
    alert is logged at INFO with its text.

    ``suppressed`` counts, per alert key, every alert dropped by de-duplication or the rate
    limit (cumulative). The next alert sent for that key carries a "(N similar suppressed)" note.
    Thread-safe. Call :meth:`close` (or use as a context manager) to release the HTTP client.
    """

    def __init__(self, webhook_url: str | None, *, dedupe_window_s: float = 300.0,
                 max_per_minute: int = 10, timeout_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic, context: dict[str, str] | None = None) -> None:
        self._url = webhook_url or None
        self.context: dict[str, str] = dict(context or {})
        self.dedupe_window_s = float(dedupe_window_s)
        self.max_per_minute = int(max_per_minute)
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._post_times: deque[float] = deque()
        self._unreported: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()
        self._client: httpx.Client | None = None
        self._filter: RedactFilter | None = None
        if self._url:
            import httpx  # only with a webhook: a backtest logs its alerts (log_alert) without it
            register_webhook(self._url)  # before any request, so httpx's first log line is redacted
            self._client = httpx.Client(timeout=timeout_s)
            self._filter = RedactFilter()
            logging.getLogger("httpx").addFilter(self._filter)

    def __repr__(self) -> str:
        target = REDACTED if self._url else "log-only"
        return f"SlackAlerter({target}, dedupe_window_s={self.dedupe_window_s}, " \
               f"max_per_minute={self.max_per_minute})"

    @property
    def configured(self) -> bool:
        """True if a webhook URL was given."""
        return self._url is not None

    @staticmethod
    def dedupe_key(alert: Alert) -> str:
        """``"<key>|<trading day>"`` (event time ``ts_ns`` > 0), else the key alone."""
        if alert.ts_ns > 0:
            from domain.calendar import trading_day
            return f"{alert.key}|{trading_day(alert.ts_ns).isoformat()}"
        return alert.key

    ALWAYS_KEYS = frozenset({"daily-report"})
    """Alert keys sent whatever the window and the rate limit: one a trading day by construction."""

    @classmethod
    def never_suppressed(cls, alert: Alert) -> bool:
        """CRITICAL alerts, HALTs and the daily report always go out (no de-duplication, no rate limit)."""
        return log_level(alert.level) == "CRITICAL" or "HALTED" in alert.key.upper() or alert.key in cls.ALWAYS_KEYS

    def set_context(self, **fields: str) -> None:
        """Set what every message shows beside the alert (``account``, ``mode``)."""
        with self._lock:
            self.context.update({k: str(v) for k, v in fields.items() if v is not None})

    def blocks(self, alert: Alert, suppressed: int = 0) -> dict:
        """The Block Kit payload for ``alert`` (already redacted text in, nothing secret added):
        ``{"text": fallback, "blocks": [header, fields, text, action?, context]}``."""
        level = log_level(alert.level)
        title = alert.key.replace("-", " ")
        when = ns_to_ct(alert.ts_ns).strftime("%Y-%m-%d %H:%M:%S CT") if alert.ts_ns > 0 else "n/a"
        fields = [("Account", self.context.get("account", "n/a")), ("Mode", self.context.get("mode", "n/a")),
                  ("Severity", level), ("Event time", when)]
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": f"{level}: {title}"[:150], "emoji": True}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{_EMOJI.get(level, '')} {alert.text}"[:3000]}},
        ]
        if alert.action:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Action taken:* {alert.action}"}})
        note = f"key `{alert.key}`" + (f" · {suppressed} similar suppressed" if suppressed else "")
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        return {"text": self.format(alert, suppressed), "blocks": blocks}

    @staticmethod
    def format(alert: Alert, suppressed: int = 0) -> str:
        """Slack message text for ``alert``; mentions ``suppressed`` earlier repeats if > 0."""
        text = f"[{alert.level.upper()}] {alert.text} (key={alert.key})"
        if suppressed:
            text += f" ({suppressed} similar suppressed)"
        return text

    def send(self, alert: Alert) -> str:
        """Deliver ``alert``; never raises. Returns one of:

        ``"logged"`` (no webhook: logged at the alert's level), ``"sent"`` (Slack answered 2xx;
        also logged), ``"deduplicated"`` (key sent within ``dedupe_window_s``; debug log only),
        ``"rate_limited"`` (over ``max_per_minute`` POSTs in 60 s; logged), ``"failed"``
        (HTTP error status, timeout or connection error; logged, URL redacted).
        """
        level = log_level(alert.level)
        if self._client is None:
            logger.log(level, "ALERT {}", redact(self.format(alert)))
            return "logged"

        key = self.dedupe_key(alert)
        always = self.never_suppressed(alert)
        with self._lock:
            now = self._clock()
            last = self._last_sent.get(key)
            if not always and last is not None and now - last < self.dedupe_window_s:
                self.suppressed[alert.key] += 1
                self._unreported[alert.key] += 1
                logger.info("ALERT (deduplicated, not sent to Slack; {} suppressed so far) {}",
                            self.suppressed[alert.key], redact(self.format(alert)))
                return "deduplicated"
            while self._post_times and now - self._post_times[0] >= 60.0:
                self._post_times.popleft()
            if not always and len(self._post_times) >= self.max_per_minute:
                self.suppressed[alert.key] += 1
                self._unreported[alert.key] += 1
                logger.log(level, "ALERT (rate limited, not sent to Slack) {}", redact(self.format(alert)))
                return "rate_limited"
            # Reserve the slot and the key before posting, so concurrent senders see them.
            self._post_times.append(now)
            self._last_sent[key] = now
            pending = self._unreported.pop(alert.key, 0)

        safe = Alert(alert.level, alert.key, redact(alert.text), alert.ts_ns, redact(alert.action))
        text = redact(self.format(safe, pending))
        error = self._post(self.blocks(safe, pending))
        if error is None:
            logger.log(level, "ALERT (sent to Slack) {}", text)
            return "sent"
        with self._lock:
            if self._last_sent.get(key) == now:
                del self._last_sent[key]  # let the next one through
            if pending:
                self._unreported[alert.key] += pending
        logger.log(level, "ALERT (Slack delivery failed: {}) {}", error, text)
        return "failed"

    def _post(self, payload: dict) -> str | None:
        """POST the Block Kit ``payload`` (already redacted) to the webhook; None on success, else a
        redacted error description (exception text or status and body: either may contain the URL
        or its path)."""
        assert self._client is not None and self._url is not None
        try:
            resp = self._client.post(self._url, json=payload)
        except Exception as exc:  # httpx errors, invalid URL, ...: never propagate
            return redact(f"{type(exc).__name__}: {exc}")
        if not resp.is_success:
            return f"HTTP {resp.status_code} {redact(resp.text)[:200]!r}"  # redact, then truncate
        return None

    def close(self) -> None:
        """Close the HTTP client and detach the httpx log redaction filter. Idempotent. (The URL
        stays registered with the redactor: it is still a secret.)"""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._filter is not None:
            logging.getLogger("httpx").removeFilter(self._filter)
            self._filter = None

    def __enter__(self) -> "SlackAlerter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
