"""memcached servers of the tests' own, and caches of both kinds over them.

Each server is a real memcached (>= 1.6) on a free loopback port, started and stopped by the
fixtures; a test may kill, pause or resume one mid-test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from photogram.cache import LeaseCache, LocalLeaseCache, MemcachedLeaseCache
from tests.memcached import Memcached

#: Generous on purpose: no test may depend on how fast this machine is.
LEASE_WAIT = 5.0
TIMEOUT = 5.0


@pytest.fixture
def memcached() -> Iterator[Callable[[], Memcached]]:
    """Starts memcached servers for one test, all stopped at its end."""
    started: list[Memcached] = []

    def start() -> Memcached:
        server = Memcached()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def shared_memcached(cluster_memcached: Memcached) -> Memcached:
    """The session's server, for the tests that do not stop it; each cache has its own key
    prefix."""
    return cluster_memcached


@pytest.fixture
async def pool() -> AsyncIterator[Callable[..., MemcachedLeaseCache]]:
    """Makes memcached caches (as memcached_cache does), closed at the end of the test."""
    made: list[MemcachedLeaseCache] = []

    def make(servers: list[str], **overrides: Any) -> MemcachedLeaseCache:
        made.append(memcached_cache(servers, **overrides))
        return made[-1]

    yield make
    for cache in made:
        await cache.close()


def memcached_cache(servers: list[str], **overrides: Any) -> MemcachedLeaseCache:
    options: dict[str, Any] = {
        "prefix": f"t{uuid.uuid4().hex[:8]}:",
        "lease_ttl_seconds": 30,
        "lease_wait_seconds": LEASE_WAIT,
        "ttl_seconds": 3600,
        "failover_ttl_seconds": 10,
        "retry_seconds": 10.0,
        "timeout_seconds": TIMEOUT,
    }
    return MemcachedLeaseCache(servers, **options | overrides)


def local_cache(**overrides: Any) -> LocalLeaseCache:
    options: dict[str, Any] = {
        "lease_ttl_seconds": 30,
        "lease_wait_seconds": LEASE_WAIT,
        "ttl_seconds": 3600,
        "max_entries": 10_000,
    }
    return LocalLeaseCache(**options | overrides)


MakeCache = Callable[..., Awaitable[LeaseCache]]


@pytest.fixture(params=["local", "memcached"])
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[MakeCache]:
    """Makes caches of the kind under test (keyword arguments override their settings)."""
    made: list[LeaseCache] = []
    server: Memcached | None = None
    if request.param == "memcached":
        server = request.getfixturevalue("shared_memcached")

    async def make(**overrides: Any) -> LeaseCache:
        cache: LeaseCache
        if server is None:
            cache = local_cache(**overrides)
        else:
            cache = memcached_cache([server.address], **overrides)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


class Database:
    """Stands in for the database: values by key, and every load it served."""

    def __init__(self, rows: dict[str, Any] | None = None) -> None:
        self.rows: dict[str, Any] = dict(rows or {})
        self.loads: list[list[str]] = []

    @property
    def loaded(self) -> list[str]:
        return [key for batch in self.loads for key in batch]

    async def load(self, keys: list[str]) -> dict[str, Any]:
        self.loads.append(list(keys))
        return {key: self.rows[key] for key in keys if key in self.rows}
