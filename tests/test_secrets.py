"""No secret reaches a log line, the console or an alert (:mod:`infra.redact`, :mod:`infra.logs`).

Canary secrets are planted in the environment; a local server (127.0.0.1 only) plays a ProjectX
gateway whose login fails with an error body echoing the request (API key included), a gateway that
drops the connection, and a Slack webhook whose error body echoes its secret path. Every output is
then searched for the canaries: the supervisor subprocess's stdout/stderr and log files, and, in
process, the console (stderr) and file sinks set up by :func:`infra.logs.setup_logging`. Each test
also shows the canary *was* in the raw material (a sink without the redaction, the server's view),
so a no-op redactor fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from loguru import logger

from domain.messages import Alert
from infra.alerts import SlackAlerter
from infra.logs import setup_logging
from infra.projectx.rest import ProjectXClient
from infra.redact import REDACTED, WEBHOOK, RedactFilter, Redactor

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "canary-api-key-XYZ"
HOOK_PATH = "TCANARY/BCANARY/canarysecretpath"
CANARIES = (API_KEY, HOOK_PATH, "canarysecretpath", quote(HOOK_PATH, safe=""))
USERNAME = "canaryuser"  # not a secret: stays readable


@dataclass
class Server:
    """What the fake gateway / webhook saw: request paths and bodies."""

    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    """127.0.0.1 HTTP server: ``/close/...`` drops the connection without answering; ``/api/...``
    (the gateway) answers 500 echoing the request body; anything else (the webhook) answers 500
    echoing the path, its last segment and its percent-encoded form."""
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            state.requests.append((self.path, body))
            if self.path.startswith("/close/"):
                self.close_connection = True
                return
            if self.path.startswith("/api/"):
                payload = f"error: could not process {body}"
            else:
                path = self.path.split("/services/", 1)[-1]
                payload = (f"error at {self.path}; token {path.rsplit('/', 1)[-1]} invalid; "
                           f"see {quote(path, safe='')}")
            data = payload.encode()
            self.send_response(500)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_port}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def canary_env(server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The canaries in this process's environment (the redactor reads them there) and for children."""
    env = {"PROJECTX_USERNAME": USERNAME, "PROJECTX_API_KEY": API_KEY,
           "SLACK_WEBHOOK_URL": f"{server.url}/services/{HOOK_PATH}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return env


@pytest.fixture
def logging_as_supervisor(tmp_path: Path) -> Iterator[Path]:
    """Call ``setup_logging(log_dir, debug=...)`` like the supervisor; yields the log dir. Restores
    loguru's default afterwards."""
    yield tmp_path / "logs"
    logger.remove()
    logger.configure(patcher=None)
    logger.add(sys.stderr)


def raw_sink() -> tuple[list[str], int]:
    """A sink with neither the sink wrapper nor ``diagnose`` off: what the log would hold without
    the redaction of the formatted text (the patcher still redacts the message itself)."""
    lines: list[str] = []
    sink_id = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message}\n{exception}",
                         diagnose=True, backtrace=True, colorize=False)
    return lines, sink_id


def log_files(log_dir: Path) -> str:
    logger.complete()  # the file sink is enqueued
    files = sorted(log_dir.rglob("*.log"))
    assert files, f"no log file under {log_dir}"
    return "\n".join(f.read_text() for f in files)


def assert_clean(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary!r} leaked into {where}:\n{text[-3000:]}"


# --------------------------------------------------------------------------- the supervisor


def test_supervisor_login_failure_prints_and_logs_no_secret(server: Server, canary_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # exits before any Redis
    procs = {}
    for debug in (False, True):
        run_dir = tmp_path / f"run-debug-{debug}"
        args = ["--mode", "live", "--base-url", server.url, "--account", "1", "--run-dir", str(run_dir),
                *(["--debug"] if debug else [])]
        procs[debug] = (run_dir, subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), *args], env=env,
                                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                  text=True))
    for debug, (run_dir, p) in procs.items():
        out, err = p.communicate(timeout=30)
        assert p.returncode == 4, (p.returncode, out, err)  # gateway failing at start
        logs = log_files(run_dir / "logs")
        for text, where in ((out, "stdout"), (err, "stderr"), (logs, "the log file")):
            assert_clean(text, f"{where} (--debug {debug})")
            # where the echoed key was, the marker is; the user name stays readable
            assert f'"apiKey":"{REDACTED}"' in text or where == "stdout", (where, text)
        assert USERNAME in err and "cannot start" in logs
    # the control: the key went out and came back in the error body; only redaction kept it out
    assert all(API_KEY in body for path, body in server.requests if path == "/api/Auth/loginKey")
    assert len(server.requests) == 4  # a login and its one retry, per process


# --------------------------------------------------------------------------- in process: tracebacks


@pytest.mark.parametrize("debug", [False, True])
def test_traceback_under_the_login_is_redacted(debug: bool, server: Server, canary_env: dict[str, str],
                                               logging_as_supervisor: Path, capsys: pytest.CaptureFixture) -> None:
    setup_logging(logging_as_supervisor, debug=debug)
    raw, raw_id = raw_sink()

    def login_with(api_key: str) -> None:
        probe = 424242
        raise RuntimeError("login refused for key " + api_key, probe)

    try:
        login_with(os.environ["PROJECTX_API_KEY"])
    except RuntimeError:
        logger.exception("login failed with {}", os.environ["PROJECTX_API_KEY"])
    client = ProjectXClient(f"{server.url}/close", USERNAME, API_KEY, read_attempts=1)
    try:
        client.token()  # the gateway drops the connection under _login, which holds the key
    except Exception:
        logger.exception("ProjectX login failed")
    finally:
        client.close()
    logger.remove(raw_id)
    err = capsys.readouterr().err
    logs = log_files(logging_as_supervisor)

    # without the redaction of the formatted text, the key is in the traceback
    raw_text = "\n".join(raw)
    assert f"RuntimeError: ('login refused for key {API_KEY}', 424242)" in raw_text
    assert f"login failed with {REDACTED}" in raw_text  # the message itself: the patcher, every sink
    for text, where in ((err, "stderr"), (logs, "the log file")):
        assert_clean(text, where)
        assert f"RuntimeError: ('login refused for key {REDACTED}', 424242)" in text
        assert f"login failed with {REDACTED}" in text
        assert "ProjectX login failed" in text and "RemoteProtocolError" in text
        # --debug: loguru's diagnose shows variable values (redacted); without it, none
        assert ("└ 424242" in text) is debug, where
        if debug:
            assert f"'{REDACTED}'" in text  # the dumped value of api_key / self._api_key


def test_debug_flag_reaches_the_parser() -> None:
    sys.path.insert(0, str(ROOT))
    import supervisor

    assert supervisor.parse_args(["--debug"]).debug is True
    assert supervisor.parse_args([]).debug is False


# --------------------------------------------------------------------------- Slack


def test_failing_webhook_and_alert_text_are_redacted(server: Server, canary_env: dict[str, str],
                                                     logging_as_supervisor: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    setup_logging(logging_as_supervisor)
    raw, raw_id = raw_sink()
    url = canary_env["SLACK_WEBHOOK_URL"]
    with SlackAlerter(url) as alerter:
        assert alerter.send(Alert(level="critical", key="login", text=f"login refused for {API_KEY}",
                                  ts_ns=1)) == "failed"
        assert HOOK_PATH not in repr(alerter)
    logger.remove(raw_id)
    err = capsys.readouterr().err
    logs = log_files(logging_as_supervisor)

    # the server saw the secret path (and would echo it), but not the key in the alert text
    [(path, body)] = server.requests
    assert path == f"/services/{HOOK_PATH}"
    posted = json.loads(body)
    assert posted["text"] == f"[CRITICAL] login refused for {REDACTED} (key=login)"
    assert API_KEY not in body and HOOK_PATH not in body  # the Block Kit blocks too
    assert f"login refused for {REDACTED}" in json.dumps(posted["blocks"])
    for text, where in ((err, "stderr"), (logs, "the log file"), ("\n".join(raw), "a sink added later")):
        assert_clean(text, where)
        line = next(line for line in text.splitlines() if "Slack delivery failed" in line)
        assert (f"HTTP 500 'error at /services/{WEBHOOK}; token {WEBHOOK} invalid; see {WEBHOOK}'" in line
                and f"login refused for {REDACTED}" in line), line


# --------------------------------------------------------------------------- the Redactor


def test_redactor_shapes_and_registered_values() -> None:
    r = Redactor(environ=None)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl"
    assert r.redact(f"token {jwt} expired") == f"token {REDACTED} expired"
    assert r.redact("{'Authorization': 'Bearer abc.def'}") == f"{{'Authorization': 'Bearer {REDACTED}'}}"
    assert r.redact("wss://h/hubs/user?access_token=abc&x=1") == f"wss://h/hubs/user?access_token={REDACTED}&x=1"
    assert r.redact('{"userName":"bob","apiKey":"k1","token":"t1"}') == \
        f'{{"userName":"bob","apiKey":"{REDACTED}","token":"{REDACTED}"}}'
    assert r.redact("POST https://hooks.slack.com/services/T0ABC123/B0DEF456/abcdEFGH1234 failed") == \
        f"POST https://hooks.slack.com/services/{WEBHOOK} failed"
    # registered at run time; too short to be a secret: ignored
    assert r.register("session-value-123") == "session-value-123"
    r.register("short")
    assert r.redact("got session-value-123, short") == f"got {REDACTED}, short"
    # a webhook on any host: the URL, the path, the secret segment
    r.register_webhook("http://127.0.0.1:9/services/TX1/BX2/secretsegment99")
    assert r.redact("http://127.0.0.1:9/services/TX1/BX2/secretsegment99 | /services/TX1/BX2/secretsegment99 "
                    "| secretsegment99") == f"{WEBHOOK} | /services/{WEBHOOK} | {WEBHOOK}"


def test_redactor_reads_the_environment_and_filters_stdlib_records() -> None:
    import logging
    env = {"PROJECTX_API_KEY": "env-key-value-1", "PROJECTX_USERNAME": "plainuser"}
    r = Redactor(environ=env)
    assert r.redact("plainuser env-key-value-1") == f"plainuser {REDACTED}"
    env["PROJECTX_API_KEY"] = "env-key-value-2"  # a value set later counts too (at most 1 s later)
    r.load_env()
    assert r.redact("env-key-value-2") == REDACTED
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "POST %s", ("x?access_token=abc",), None)
    assert RedactFilter(r).filter(record) and record.getMessage() == f"POST x?access_token={REDACTED}"
