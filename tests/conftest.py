"""Shared fixtures: an embedded (SQLite) instance and a two-server PostgreSQL cluster.

PostgreSQL is the real server at PHOTOGRAM_TEST_POSTGRES (default: the local one, trust
auth). Each cluster gets its own freshly created databases, dropped at the end of the
session; two databases stand in for two servers and nothing assumes they share one.
Clusters cache in a real memcached, started once for the session; each cluster has a key
space of its own on it (``cache_key_version``), as it has databases of its own. The
embedded instance caches in-process.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from photogram.db.migrations import init_cluster
from photogram.db.router import Router
from photogram.settings import Settings
from tests.memcached import Memcached

ADMIN_DSN = os.environ.get(
    "PHOTOGRAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SESSION_TAG = uuid.uuid4().hex[:8]

BACKENDS = ["sqlite", "postgres"]


def _dsn(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


#: Connections dropping the session's databases at the end.
DROP_CONNECTIONS = 8


class PostgresFactory:
    def __init__(self) -> None:
        self.created: list[str] = []

    async def database(self, label: str) -> str:
        name = f"photogram_test_{SESSION_TAG}_{len(self.created)}_{label}"
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return _dsn(name)

    async def cluster_settings(self, **extra: object) -> Settings:
        return Settings(
            global_database=await self.database("global"),
            databases={"pg_a": await self.database("a"), "pg_b": await self.database("b")},
            **extra,  # type: ignore[arg-type]
        )

    async def drop_all(self) -> None:
        # Hundreds of databases: dropped a few at a time (each drop mostly waits on disk).
        queue = list(self.created)

        async def worker() -> None:
            conn = await asyncpg.connect(ADMIN_DSN)
            try:
                while queue:
                    name = queue.pop()
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        await asyncio.gather(*(worker() for _ in range(DROP_CONNECTIONS)))


@pytest.fixture(scope="session")
def cluster_memcached() -> Iterator[Memcached]:
    """The memcached server the session's cluster instances cache in."""
    server = Memcached(memory_mb=256)
    yield server
    server.stop()


#: A key space of its own on the session's memcached for each cluster instance: databases
#: of different tests hand out the same IDs.
_key_spaces = itertools.count(1)


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[PostgresFactory]:
    factory = PostgresFactory()
    yield factory
    await factory.drop_all()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come only from what each test sets."""
    for name in list(os.environ):
        if name.startswith("PHOTOGRAM_") and name != "PHOTOGRAM_TEST_POSTGRES":
            monkeypatch.delenv(name)


def sqlite_settings(directory: Path, **extra: object) -> Settings:
    return Settings(data_dir=directory, **extra)  # type: ignore[arg-type]


MakeSettings = Callable[..., Awaitable[Settings]]


@pytest.fixture(params=BACKENDS)
def make_settings(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresFactory,
) -> MakeSettings:
    """Fresh, uninitialised settings for the backend under test (each call a new instance):
    the embedded default (SQLite, in-process cache), or a cluster (two PostgreSQL
    databases, the session's memcached)."""
    cache: Memcached | None = None
    if request.param == "postgres":
        cache = request.getfixturevalue("cluster_memcached")

    async def make(**extra: object) -> Settings:
        if request.param == "sqlite" or cache is None:
            return sqlite_settings(tmp_path_factory.mktemp("embedded"), **extra)
        # Files (media, spool) in a directory of the test's own, not the working directory.
        cluster = {
            "data_dir": tmp_path_factory.mktemp("cluster"),
            "cache_servers": [cache.address],
            "cache_key_version": next(_key_spaces),
        }
        return await postgres.cluster_settings(**cluster | extra)

    return make


@pytest.fixture(scope="module", params=BACKENDS)
async def router(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresFactory,
) -> AsyncIterator[Router]:
    """An initialised instance with 16 logical shards, shared by one test module."""
    if request.param == "sqlite":
        settings = sqlite_settings(tmp_path_factory.mktemp("embedded"))
    else:
        settings = await postgres.cluster_settings()
    await init_cluster(settings, 16)
    opened = await Router.open(settings)
    yield opened
    await opened.close()
