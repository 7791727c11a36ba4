"""EmbeddedRedis with the real redis-server binary: start, reuse, crash survival, AOF restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from infra.embedded_redis import PIDFILE, PORTFILE, EmbeddedRedis, find_redis_server

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh data dir; whatever server is still recorded in it is stopped afterwards."""
    d = tmp_path / "redis"
    yield d
    EmbeddedRedis(d).stop()


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def pid_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # zombie (exited, waiting to be reaped) counts as gone
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


def test_find_redis_server_is_executable() -> None:
    path = find_redis_server()
    assert os.path.isfile(path) and os.access(path, os.X_OK)
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    assert "Redis server" in out.stdout


def test_missing_binary_is_a_clear_error(data_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        EmbeddedRedis(data_dir, binary=str(data_dir / "no-such-redis-server")).ensure_running()


def test_start_configures_durable_local_server(data_dir: Path) -> None:
    er = EmbeddedRedis(data_dir)
    url = er.ensure_running()
    assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
    port = int(url.split(":")[2].split("/")[0])
    assert (data_dir / PORTFILE).read_text().strip() == str(port)
    pid = int((data_dir / PIDFILE).read_text().strip())
    assert pid == er.pid
    c = client(url)
    assert c.ping()
    assert c.config_get("appendonly") == {"appendonly": "yes"}
    assert c.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert c.config_get("save") == {"save": ""}
    assert c.config_get("bind") == {"bind": "127.0.0.1"}
    assert Path(c.config_get("dir")["dir"]).resolve() == data_dir.resolve()
    c.close()
    # Own session: a kill of our process group / terminal does not reach it.
    assert os.getsid(pid) == pid != os.getsid(0)
    assert er.ensure_running() == url  # idempotent


def test_reuse_then_stop_then_restart_from_aof(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir)
    url = first.ensure_running()
    pid = first.pid
    c = client(url)
    c.set("tsx:test:key", "42")
    c.close()

    # "Parent died": a second instance on the same dir must reuse the running server.
    second = EmbeddedRedis(data_dir)
    assert second.ensure_running() == url
    assert second.pid == pid
    c = client(url)
    assert c.get("tsx:test:key") == "42"
    c.close()

    second.stop()
    assert pid is not None and pid_gone(pid)
    assert not (data_dir / PIDFILE).exists() and not (data_dir / PORTFILE).exists()
    assert not second.is_running() and not first.is_running()
    second.stop()  # idempotent

    third = EmbeddedRedis(data_dir)
    url3 = third.ensure_running()
    assert third.pid != pid
    c = client(url3)
    assert c.get("tsx:test:key") == "42"  # reloaded from the AOF
    c.close()
    assert (data_dir / "appendonly.aof").stat().st_size > 0
    third.stop()


def test_server_survives_kill_9_of_parent(data_dir: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        import redis
        from infra.embedded_redis import EmbeddedRedis
        url = EmbeddedRedis(Path({str(data_dir)!r})).ensure_running()
        redis.Redis.from_url(url).set("order:1", "SUBMITTED")
        print(url, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    url = proc.stdout.strip()
    assert url.startswith("redis://127.0.0.1:")

    er = EmbeddedRedis(data_dir)
    assert er.ensure_running() == url  # the orphaned server is reused, not replaced
    c = client(url)
    assert c.get("order:1") == "SUBMITTED"
    c.close()
    er.stop()
    assert not er.is_running()


def test_stale_files_are_not_trusted(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    # Our own pid is alive, but it is not a redis-server listening on that port.
    (data_dir / PIDFILE).write_text(f"{os.getpid()}\n")
    (data_dir / PORTFILE).write_text("1\n")
    er = EmbeddedRedis(data_dir)
    url = er.ensure_running()
    assert er.pid != os.getpid()
    assert int((data_dir / PIDFILE).read_text()) == er.pid
    c = client(url)
    assert c.ping()
    c.close()
    er.stop()


def test_other_dirs_server_is_not_reused(tmp_path: Path) -> None:
    a, b = EmbeddedRedis(tmp_path / "a"), EmbeddedRedis(tmp_path / "b")
    try:
        url_a = a.ensure_running()
        # Point b's files at a's server: same pid/port, but it serves another directory.
        (tmp_path / "b").mkdir()
        for name in (PIDFILE, PORTFILE):
            (tmp_path / "b" / name).write_text((tmp_path / "a" / name).read_text())
        url_b = b.ensure_running()
        assert url_b != url_a and b.pid != a.pid
    finally:
        b.stop()
        a.stop()
