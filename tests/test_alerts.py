"""SlackAlerter against a real local HTTP server (no internet, no mocks)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loguru import logger

from domain.messages import Alert
from infra.alerts import REDACTED, SlackAlerter, log_alert, log_level

SECRET = "T000SECRET/B000SECRET/xoxSECRETtoken"


@dataclass
class Hook:
    """A fake Slack webhook: records POST bodies; ``status``/``delay_s`` set its behaviour."""

    url: str
    bodies: list[dict] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            if state.delay_s:
                time.sleep(state.delay_s)
            state.bodies.append(body)
            payload = b"ok" if state.status == 200 else b"invalid_token"
            self.send_response(state.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/services/{SECRET}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Everything loguru writes during the test (formatted with level)."""
    lines: list[str] = []
    sink_id = logger.add(lambda m: lines.append(str(m)), level="DEBUG",
                         format="{level} | {message}")
    yield lines
    logger.remove(sink_id)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def alert(key: str = "mll", text: str = "MLL headroom below $300", level: str = "critical") -> Alert:
    return Alert(level=level, key=key, text=text, ts_ns=1)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/{SECRET}"


def assert_no_secret(lines: list[str]) -> None:
    joined = "\n".join(lines)
    assert SECRET not in joined
    assert "services/" not in joined


# --------------------------------------------------------------------------- tests


def test_no_webhook_logs_at_alert_level(logs: list[str]) -> None:
    alerter = SlackAlerter(None)
    assert not alerter.configured
    assert alerter.send(alert(level="critical")) == "logged"
    assert alerter.send(alert(level="critical")) == "logged"  # nothing sent, nothing deduped
    assert alerter.send(alert(key="x", text="just so you know", level="info")) == "logged"
    crit = [l for l in logs if "MLL headroom below $300" in l]
    assert len(crit) == 2 and all(l.startswith("CRITICAL |") for l in crit)
    assert any(l.startswith("INFO |") and "just so you know" in l for l in logs)


def test_log_alert_writes_level_event_time_in_chicago_and_redacts(logs: list[str]) -> None:
    """The backtest's alerts (no watchdog): logged with their event time, posted nowhere."""
    import datetime as dt
    from zoneinfo import ZoneInfo
    ts = int(dt.datetime(2026, 4, 6, 9, 31, tzinfo=ZoneInfo("America/Chicago")).timestamp()) * 1_000_000_000
    url = f"https://hooks.slack.com/services/{SECRET}"
    SlackAlerter(url).close()  # registers the webhook with the redactor, as the live node does
    log_alert(Alert("warning", "hedge-low-correlation", f"correlation 0.52 < 0.6 (posting to {url})", ts))
    log_alert(Alert("critical", "k", "no time", 0))
    line, crit = logs[-2:]
    assert line.startswith("WARNING |") and "ALERT at 2026-04-06 09:31:00 CT [WARNING]" in line
    assert "key=hedge-low-correlation" in line and REDACTED in line
    assert crit.startswith("CRITICAL |") and "no event time" in crit
    assert_no_secret(logs)


def test_level_mapping() -> None:
    assert log_level("warning") == "WARNING" and log_level("INFO") == "INFO"
    assert log_level("critical") == "CRITICAL" and log_level("weird") == "WARNING"


def test_sent_posts_block_kit_with_account_mode_severity_action_and_numbers(hook: Hook, logs: list[str]) -> None:
    """The local receiver gets Block Kit: header, fields (account, mode, severity, event time),
    the text with its numbers, the action taken, the key; and the plain fallback text."""
    import datetime as dt
    ts = int(dt.datetime(2026, 4, 9, 14, 30, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000  # 09:30 CT
    halt = Alert("warning", "risk-daily_loss_cap", "daily_loss_cap breached: day P&L -912.50 <= -900", ts,
                 "flattening every position; trading HALTED for the rest of the trading day")
    with SlackAlerter(hook.url, context={"account": "PRAC-50K (1001)", "mode": "live"}) as alerter:
        assert alerter.send(halt) == "sent"
    body = hook.bodies[0]
    assert set(body) == {"text", "blocks"} and "-912.50" in body["text"]
    header, fields, text, action, context = body["blocks"]
    assert header["type"] == "header" and header["text"]["text"] == "WARNING: risk daily_loss_cap"
    assert [f["text"] for f in fields["fields"]] == ["*Account*\nPRAC-50K (1001)", "*Mode*\nlive",
                                                     "*Severity*\nWARNING", "*Event time*\n2026-04-09 09:30:00 CT"]
    assert "day P&L -912.50 <= -900" in text["text"]["text"]
    assert action["text"]["text"] == "*Action taken:* flattening every position; trading HALTED for the rest of the trading day"
    assert context["type"] == "context" and "risk-daily_loss_cap" in context["elements"][0]["text"]


def test_sent_posts_json_text(hook: Hook, logs: list[str]) -> None:
    with SlackAlerter(hook.url) as alerter:
        assert alerter.send(alert()) == "sent"
    assert len(hook.bodies) == 1
    assert set(hook.bodies[0]) == {"text", "blocks"}
    assert "MLL headroom below $300" in hook.bodies[0]["text"]
    assert "CRITICAL" in hook.bodies[0]["text"]
    assert any(l.startswith("CRITICAL |") and "sent to Slack" in l for l in logs)
    assert_no_secret(logs)


def test_deduplicated_within_window_then_summary(hook: Hook, logs: list[str]) -> None:
    clock = FakeClock()
    warn = lambda key="mll": alert(key=key, level="warning")  # noqa: E731
    with SlackAlerter(hook.url, dedupe_window_s=300, clock=clock) as alerter:
        assert alerter.send(warn()) == "sent"
        clock.t += 10
        assert alerter.send(warn()) == "deduplicated"
        clock.t += 10
        assert alerter.send(warn()) == "deduplicated"
        assert any(l.startswith("INFO |") and "deduplicated" in l and "MLL headroom" in l for l in logs)
        assert alerter.send(warn(key="other")) == "sent"  # different key is independent
        assert alerter.suppressed["mll"] == 2 and alerter.suppressed["other"] == 0
        assert len(hook.bodies) == 2
        clock.t += 300
        assert alerter.send(warn()) == "sent"  # window elapsed
        assert "(2 similar suppressed)" in hook.bodies[-1]["text"]
        assert alerter.suppressed["mll"] == 2  # cumulative count stays
        clock.t += 400
        assert alerter.send(warn()) == "sent"
        assert "suppressed" not in hook.bodies[-1]["text"]  # summary only once
    assert len(hook.bodies) == 4
    assert_no_secret(logs)


def test_critical_alerts_and_halts_are_never_suppressed_and_days_are_apart(hook: Hook) -> None:
    """The audit's case: at --speed max day 2's HALT came within the wall-clock window of day 1's
    and was hidden. The trading day is part of the key, and a HALT or a CRITICAL always goes out."""
    clock = FakeClock()
    day1 = 1_775_660_000 * 10**9  # 2026-04-08 10:13 CT
    day2 = day1 + 86_400 * 10**9
    with SlackAlerter(hook.url, dedupe_window_s=300, max_per_minute=2, clock=clock) as alerter:
        assert alerter.send(Alert("warning", "risk-daily_loss_cap", "day 1", day1)) == "sent"
        assert alerter.send(Alert("warning", "risk-daily_loss_cap", "day 2", day2)) == "sent"  # another day
        assert alerter.send(Alert("warning", "risk-daily_loss_cap", "day 2 again", day2)) == "deduplicated"
        assert alerter.send(Alert("warning", "risk-session_loss_cap", "session", day2)) == "rate_limited"
        for text in ("halt 1", "halt 2"):  # over the rate limit and within the window: still sent
            assert alerter.send(Alert("warning", "risk-state-HALTED", text, day2)) == "sent"
        assert alerter.send(Alert("critical", "mll", "MLL 1", day2)) == "sent"
        assert alerter.send(Alert("critical", "mll", "MLL 2", day2)) == "sent"
    assert [b["text"].split("] ")[1].split(" (")[0] for b in hook.bodies] == [
        "day 1", "day 2", "halt 1", "halt 2", "MLL 1", "MLL 2"]


def test_rate_limited_over_max_per_minute(hook: Hook, logs: list[str]) -> None:
    clock = FakeClock()
    with SlackAlerter(hook.url, max_per_minute=3, clock=clock) as alerter:
        results = [alerter.send(alert(key=f"k{i}", text=f"alert number {i}", level="warning")) for i in range(5)]
        assert results == ["sent", "sent", "sent", "rate_limited", "rate_limited"]
        assert len(hook.bodies) == 3
        assert alerter.suppressed["k3"] == 1 and alerter.suppressed["k4"] == 1
        assert any("rate limited" in l and "alert number 4" in l for l in logs)
        clock.t += 59.9
        assert alerter.send(alert(key="k5", level="warning")) == "rate_limited"
        clock.t += 0.2  # the first three POSTs are now older than 60 s
        assert alerter.send(alert(key="k3", level="warning")) == "sent"  # not deduped: it was never sent
        assert "(1 similar suppressed)" in hook.bodies[-1]["text"]
    assert len(hook.bodies) == 4
    assert_no_secret(logs)


def test_http_500_fails_without_raising_and_retries_later(hook: Hook, logs: list[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    hook.status = 500
    caplog.set_level(logging.INFO, logger="httpx")
    with SlackAlerter(hook.url) as alerter:
        assert alerter.send(alert()) == "failed"
        assert any("HTTP 500" in l and "MLL headroom" in l for l in logs)
        hook.status = 200
        assert alerter.send(alert()) == "sent"  # a failure does not arm de-duplication
    assert len(hook.bodies) == 2
    assert_no_secret(logs)
    # httpx's own request log line is redacted too.
    assert caplog.records, "httpx should have logged its requests"
    assert SECRET not in caplog.text and REDACTED in caplog.text


def test_closed_port_fails_and_redacts(logs: list[str]) -> None:
    url = closed_port_url()
    with SlackAlerter(url, timeout_s=1.0) as alerter:
        assert alerter.send(alert()) == "failed"
        assert SECRET not in repr(alerter)
    assert any("delivery failed" in l and "ConnectError" in l for l in logs)
    assert_no_secret(logs)


def test_timeout_fails(hook: Hook, logs: list[str]) -> None:
    hook.delay_s = 1.0
    with SlackAlerter(hook.url, timeout_s=0.2) as alerter:
        t0 = time.monotonic()
        assert alerter.send(alert()) == "failed"
        assert time.monotonic() - t0 < 0.9
    assert any("Timeout" in l for l in logs)
    assert_no_secret(logs)


def test_close_detaches_httpx_filter(hook: Hook) -> None:
    httpx_logger = logging.getLogger("httpx")
    before = len(httpx_logger.filters)
    alerter = SlackAlerter(hook.url)
    assert len(httpx_logger.filters) == before + 1
    alerter.close()
    alerter.close()
    assert len(httpx_logger.filters) == before
