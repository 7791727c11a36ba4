"""Shared pytest fixtures.

- ``redis_url`` (session): ONE real redis-server (via :class:`infra.embedded_redis.EmbeddedRedis`)
  in a temporary directory, stopped at the end of the session.
- ``store`` (function): a :class:`infra.state_store.StateStore` on a unique namespace
  ``test:<8 hex>``, flushed after the test.
- ``gw`` (function): the sandbox gateway replaying the bundled 2026-04-08 at 1000x, for the
  end-to-end tests of the supervisor (``tests/live_support.py``). Modules that need a gateway set up
  otherwise (manual replay, other data) define their own ``gw``, which takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from infra.embedded_redis import EmbeddedRedis
from infra.sandbox.server import SandboxGateway
from infra.state_store import StateStore
from tests.live_support import replay_gateway


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-server shared by the whole test session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.ensure_running()
    finally:
        server.stop()


@pytest.fixture
def store(redis_url: str) -> Iterator[StateStore]:
    """A StateStore on a fresh namespace; every key of it is deleted after the test."""
    st = StateStore.from_url(redis_url, f"test:{uuid4().hex[:8]}")
    try:
        yield st
    finally:
        st.flush()
        st.close()


@pytest.fixture
def gw() -> Iterator[SandboxGateway]:
    """The replaying sandbox gateway (:func:`tests.live_support.replay_gateway`), stopped after the test."""
    g = replay_gateway()
    try:
        yield g
    finally:
        g.stop()
