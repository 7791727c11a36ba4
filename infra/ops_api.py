"""The ops HTTP API (aiohttp), served by the node in every mode on 127.0.0.1 by default.

| method, path | what | auth |
|---|---|---|
| ``GET /health`` | liveness and readiness: 200 ``{"live": true, "ready": true}``; 503 with ``reason`` when not ready | none |
| ``GET /ops/status`` | :meth:`actors.ops.OpsDesk.status` as JSON | none (read-only; bound to localhost) |
| ``POST /ops/pause`` ``/ops/resume`` ``/ops/flatten`` ``/ops/arm`` ``/ops/disarm`` | :meth:`actors.ops.OpsDesk.command` | ``Authorization: Bearer $OPS_TOKEN`` |
| ``GET /metrics`` | the Prometheus text of :class:`infra.metrics.Metrics` | none |
| ``GET /`` | the compliance panel (``infra/ops_static/panel.html``; vendored scripts under ``/vendor/``) | none; its buttons send the token typed into the page |
| ``GET /ops/stream`` | server-sent events: the status document once a second | none |

Any other path is 404. A POST without the right token is 401; with no ``OPS_TOKEN`` in the
node's environment every POST is 503 (commands switched off). The optional ``X-Operator`` header
names who gave the command in the journal (default: the peer address). A command that does not
apply (``arm`` in paper mode) is 409. docs/operations.md shows the curl and redis-cli forms.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from domain.ports import COMMANDS, CommandRefused, OperatorDesk

STATIC = Path(__file__).resolve().parent / "ops_static"
STREAM_INTERVAL_S = 1.0


class OpsServer:
    """Serves the ops API from a daemon thread with its own event loop.

    Args:
        desk: the node's desk (:class:`domain.ports.OperatorDesk`; :class:`actors.ops.OpsDesk`).
        readiness: ``f() -> reason or None``: None when the node is ready to trade.
        token: the bearer token POSTs need (from ``OPS_TOKEN``); None switches commands off.
        registry: the Prometheus registry ``GET /metrics`` serves, or None (404).
    """

    def __init__(self, desk: OperatorDesk, readiness: Callable[[], str | None], token: str | None,
                 registry: Any | None = None) -> None:
        self.desk = desk
        self.readiness = readiness
        self.token = token or None
        self.registry = registry
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/health", self._health), web.get("/ops/status", self._status),
                        web.get("/ops/stream", self._stream), web.get("/metrics", self._metrics),
                        web.get("/", self._panel), web.static("/vendor", STATIC / "vendor")]
                       + [web.post(f"/ops/{c}", self._command) for c in COMMANDS])
        return app

    def start(self, port: int, host: str = "127.0.0.1") -> int:
        """Bind ``host:port`` (0 = a free port) and serve; returns the port. Raises OSError if taken."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner = web.AppRunner(self.app(), access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, host, port)
                loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            except BaseException as e:  # noqa: BLE001 - reported to the caller
                failure.append(e)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="ops-http", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self.port

    def stop(self) -> None:
        """Stop serving (no-op if not started)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop = self._thread = None

    # ------------------------------------------------------------------ handlers
    async def _health(self, _request: web.Request) -> web.Response:
        reason = self.readiness()
        body = {"live": True, "ready": reason is None, **({"reason": reason} if reason else {})}
        return web.json_response(body, status=200 if reason is None else 503)

    async def _status(self, _request: web.Request) -> web.Response:
        try:
            status = await asyncio.get_running_loop().run_in_executor(None, self.desk.status)
        except Exception as e:  # noqa: BLE001 - an actor restarting or busy
            return web.json_response({"error": f"status unavailable: {type(e).__name__}: {e}"}, status=503)
        return web.Response(text=json.dumps(status, default=str), content_type="application/json")

    async def _panel(self, _request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "panel.html", headers={"Cache-Control": "no-store"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one ``data: <status JSON>`` a second until the client goes."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    status = await loop.run_in_executor(None, self.desk.status)
                    await resp.write(b"data: " + json.dumps(status, default=str).encode() + b"\n\n")
                except (ConnectionResetError, asyncio.CancelledError):
                    raise
                except Exception as e:  # noqa: BLE001 - an actor restarting: tell the page, go on
                    await resp.write(b"event: unavailable\ndata: " + json.dumps(str(e)).encode() + b"\n\n")
                await asyncio.sleep(STREAM_INTERVAL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.registry is None:
            raise web.HTTPNotFound()
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _command(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        if self.token is None:
            return web.json_response({"error": "ops commands are off: start the node with OPS_TOKEN set"}, status=503)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            logger.warning("ops: {} refused: missing or wrong bearer token (from {})", name, request.remote)
            return web.json_response({"error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        who = request.headers.get("X-Operator") or f"http {request.remote}"
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, self.desk.command, name, who, "http")
        except CommandRefused as e:
            return web.json_response({"command": name, "error": str(e)}, status=409)
        return web.json_response({"command": name, "result": result, "by": who})
