"""Redis for the feeds tests: one server for the session (flushed before each test that
uses it), a three-node Redis Cluster for the tests that ask for one, and servers of a
test's own for the tests that stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.feeds.redis import RedisClusterNodes, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes()
    yield nodes
    nodes.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, empty."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[Callable[[], RedisServer]]:
    """Starts servers for one test (which may kill or pause them), all stopped at its end."""
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
