"""Shared pytest fixtures.

- ``redis_url`` (session): ONE real redis-server (via :class:`infra.embedded_redis.EmbeddedRedis`)
  in a temporary directory, stopped at the end of the session.
- ``store`` (function): a :class:`infra.state_store.StateStore` on a unique namespace
  ``test:<8 hex>``, flushed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from infra.embedded_redis import EmbeddedRedis
from infra.state_store import StateStore


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
