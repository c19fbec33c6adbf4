"""Shared fixtures: an embedded (SQLite) instance and a two-server PostgreSQL cluster.

PostgreSQL is the real server at PHOTOGRAM_TEST_POSTGRES (default: the local one, trust
auth). Each cluster gets its own freshly created databases, dropped once no test needs
them (in a thread of their own, while later tests run; the rest at the end of the
session); two databases stand in for two servers and nothing assumes they share one.
Clusters cache in a real memcached, started once for the session; each cluster has a key
space of its own on it (``cache_key_version``), as it has databases of its own. The
embedded instance caches in-process.

Most tests want an initialised instance and are not about initialising one:
``init_test_cluster`` gives them a copy of one the session initialised once (a SQLite
file's bytes; PostgreSQL databases cloned with ``CREATE DATABASE … TEMPLATE``), which
takes a fraction of the time ``init_cluster``'s DDL for 16 shard schemas does. Anything
the copy cannot stand in for (databases already used, other shard names) runs
``init_cluster`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

from photogram.db.migrations import init_cluster
from photogram.db.router import Router
from photogram.settings import SQLITE_FILE, Settings, normalise_dsn
from tests.memcached import Memcached

# Tests never pass or fail on wall-clock time: a loaded machine runs an example slower,
# and that is no bug.
hypothesis_settings.register_profile("photogram", deadline=None)
hypothesis_settings.load_profile("photogram")

#: Tests that stop, restart or share the machine's RabbitMQ run one after another on one
#: pytest-xdist worker (``--dist loadgroup``); everything else runs on any.
SHARED_BROKER = ("tasks", "cluster")


def _shares_the_broker(item: pytest.Item) -> bool:
    parts = item.path.relative_to(Path(__file__).parent).parts
    return bool(parts) and parts[0] in SHARED_BROKER


# First: xdist reads the group marks in its own hook of the same name, on every worker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _shares_the_broker(item):
            item.add_marker(pytest.mark.xdist_group("rabbitmq"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run if xdist did not group them (it marks a test's ID with its group):
    tests restarting RabbitMQ would break others running beside them."""
    if not session.config.getoption("loadgroup", default=False):
        return
    ungrouped = [
        item.nodeid
        for item in session.items
        if _shares_the_broker(item) and not item.nodeid.endswith("@rabbitmq")
    ]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {ungrouped[0]} with the other broker tests "
            "(an incompatible pytest and pytest-xdist pair?)"
        )


ADMIN_DSN = os.environ.get(
    "PHOTOGRAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SESSION_TAG = uuid.uuid4().hex[:8]

BACKENDS = ["sqlite", "postgres"]

#: The shard databases of every cluster the factory makes, in settings order.
CLUSTER_DATABASES = ("pg_a", "pg_b")


def _dsn(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


#: Connections dropping the session's databases at the end, and while tests run: each
#: drop waits on a checkpoint, and concurrent drops share one.
DROP_CONNECTIONS = 24
DROP_CONNECTIONS_MEANWHILE = 4


@asynccontextmanager
async def _admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        yield conn
    finally:
        await conn.close()


class PostgresFactory:
    def __init__(self) -> None:
        self.created: list[str] = []
        self._serial = itertools.count()
        #: Databases made here that no one has initialised through ``init_test_cluster`` yet.
        self._untouched: set[str] = set()
        #: Empty databases no one ever connected to, for the next ``database`` to rename.
        self._spares: list[str] = []
        #: An initialised cluster per shard count: global, then CLUSTER_DATABASES.
        self._templates: dict[int, tuple[str, ...]] = {}
        self._template_lock = asyncio.Lock()
        #: Databases no test needs any more, dropped in a thread of their own meanwhile.
        self._finished: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._dropper: threading.Thread | None = None
        self._not_dropped: list[str] = []

    def _name(self, label: str) -> str:
        return f"photogram_test_{SESSION_TAG}_{next(self._serial)}_{label}"

    async def _make(self, conn: asyncpg.Connection, label: str) -> str:
        name = self._name(label)
        if self._spares:
            spare = self._spares.pop()
            await conn.execute(f'ALTER DATABASE "{spare}" RENAME TO "{name}"')
            self.created.remove(spare)
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        self._untouched.add(name)
        return name

    async def database(self, label: str) -> str:
        """A new, empty database; its DSN."""
        async with _admin() as conn:
            return _dsn(await self._make(conn, label))

    async def cluster_settings(self, **extra: object) -> Settings:
        async with _admin() as conn:
            names = [await self._make(conn, label) for label in ("global", "a", "b")]
        return Settings(
            global_database=_dsn(names[0]),
            databases=dict(zip(CLUSTER_DATABASES, map(_dsn, names[1:]), strict=True)),
            **extra,  # type: ignore[arg-type]
        )

    def _untouched_cluster(self, settings: Settings) -> list[str] | None:
        """The database names of ``settings`` when they are a cluster made here and not
        yet initialised; else None."""
        if settings.global_database is None or tuple(settings.databases) != CLUSTER_DATABASES:
            return None
        names = []
        for dsn in (settings.global_database, *settings.databases.values()):
            name = dsn.rpartition("/")[2]
            if name not in self._untouched or normalise_dsn(_dsn(name)) != normalise_dsn(dsn):
                return None
            names.append(name)
        return names

    async def _template(self, settings: Settings, shards: int) -> tuple[str, ...]:
        async with self._template_lock:
            if shards not in self._templates:
                async with _admin() as conn:
                    names = [await self._make(conn, f"tpl{shards}") for _ in range(3)]
                self._untouched.difference_update(names)
                # model_copy skips validation: the DSNs as the validators would leave them.
                dsns = [normalise_dsn(_dsn(name)) for name in names]
                built = settings.model_copy(
                    update={
                        "global_database": dsns[0],
                        "databases": dict(zip(CLUSTER_DATABASES, dsns[1:], strict=True)),
                    }
                )
                await init_cluster(built, shards)
                self._templates[shards] = tuple(names)
            return self._templates[shards]

    async def initialise(self, settings: Settings, shards: int) -> bool:
        """Make ``settings``' databases an initialised cluster of ``shards`` logical shards
        by cloning the session's template, when they are an untouched cluster of this
        factory; False (nothing done) otherwise."""
        names = self._untouched_cluster(settings)
        if names is None:
            return False
        self._untouched.difference_update(names)
        template = await self._template(settings, shards)
        async with _admin() as conn:
            connected = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = any($1::text[])", names
            )
            if connected:
                return False
            # Renamed aside (which fails while anyone is connected)…
            aside: list[tuple[str, str]] = []
            try:
                for name in names:
                    spare = self._name("spare")
                    await conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{spare}"')
                    aside.append((name, spare))
                # …and never connected to (sessions are counted by the time their
                # backends are gone, which the rename waited for): then they are as
                # empty as they were made, and a clone takes their names.
                sessions = await conn.fetchval(
                    "SELECT CASE WHEN current_setting('track_counts')::bool "
                    "THEN coalesce(sum(sessions), 0) ELSE -1 END "  # -1: not counted
                    "FROM pg_stat_database WHERE datname = any($1::text[])",
                    [spare for _, spare in aside],
                )
                used = sessions != 0
            except asyncpg.ObjectInUseError:
                used = True
            if used:
                for name, spare in aside:
                    await conn.execute(f'ALTER DATABASE "{spare}" RENAME TO "{name}"')
                return False
            for (name, spare), source in zip(aside, template, strict=True):
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
                self.created.append(spare)
                self._spares.append(spare)
        return True

    def drop_soon(self, settings: Settings) -> None:
        """Drop ``settings``' databases (those made here) while later tests run: a drop
        mostly waits on the disk, and hundreds of them left to the end of the session
        add up to a long wait."""
        for dsn in (settings.global_database, *settings.databases.values()):
            name = (dsn or "").rpartition("/")[2]
            if name in self.created:
                self.created.remove(name)
                self._untouched.discard(name)
                self._finished.put(name)
        if self._dropper is None:
            self._dropper = threading.Thread(
                target=asyncio.run, args=(self._drop_finished(),), daemon=True
            )
            self._dropper.start()

    async def _drop_finished(self) -> None:
        """The dropping thread: what has finished, a few at a time (concurrent drops share
        the checkpoint each waits for), until told to stop (None)."""
        while True:
            batch = [self._finished.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < DROP_CONNECTIONS_MEANWHILE:
                    batch.append(self._finished.get_nowait())
            names = [name for name in batch if name is not None]
            dropped = await asyncio.gather(*map(_drop, names), return_exceptions=True)
            # Whatever failed is left for drop_all (an error here is no test's).
            self._not_dropped += [n for n, d in zip(names, dropped, strict=True) if d is not None]
            if None in batch:
                return

    async def drop_all(self) -> None:
        pending = list(self.created)
        if self._dropper is not None:
            # Whatever the thread has not started on is dropped below, many at a time.
            with contextlib.suppress(queue.Empty):
                while (name := self._finished.get_nowait()) is not None:
                    pending.append(name)
            self._finished.put(None)
            await asyncio.to_thread(self._dropper.join)
            pending += self._not_dropped

        async def worker() -> None:
            try:
                conn = await asyncpg.connect(ADMIN_DSN)
            except asyncpg.TooManyConnectionsError:
                return  # a busy server: the other workers drop them all the same
            try:
                while pending:
                    await _drop(pending.pop(), conn)
            finally:
                await conn.close()

        # Hundreds of databases: dropped many at a time (each drop mostly waits on disk).
        await asyncio.gather(*(worker() for _ in range(DROP_CONNECTIONS)))


async def _drop(name: str, conn: asyncpg.Connection | None = None) -> None:
    """DROP DATABASE ``name``, on ``conn`` or on a connection of its own."""
    sql = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    if conn is not None:
        await conn.execute(sql)
        return
    async with _admin() as own:
        await own.execute(sql)


#: The session's factory, for ``init_test_cluster``.
_factory: PostgresFactory | None = None

#: An initialised embedded instance's SQLite file per shard count, as bytes.
_sqlite_templates: dict[int, bytes] = {}


async def _sqlite_template(settings: Settings, shards: int) -> bytes:
    if shards not in _sqlite_templates:
        with tempfile.TemporaryDirectory() as directory:
            built = settings.model_copy(update={"data_dir": Path(directory)})
            await init_cluster(built, shards)
            # Through SQLite (not the file's bytes): whatever is still in the WAL is in it.
            source = sqlite3.connect(Path(directory) / SQLITE_FILE)
            try:
                _sqlite_templates[shards] = source.serialize()
            finally:
                source.close()
    return _sqlite_templates[shards]


async def init_test_cluster(settings: Settings, shards: int = 16) -> None:
    """What ``init_cluster(settings, shards)`` makes of fresh settings, copied from one the
    session made earlier where it can be: an embedded instance whose file does not exist
    yet, or a cluster of the ``postgres`` factory's that no one has used. Anything else
    (databases with something in them, shards elsewhere) runs ``init_cluster``."""
    if settings.global_database is None and not settings.databases:
        target = Path(settings.data_dir) / SQLITE_FILE
        if not target.exists():
            image = await _sqlite_template(settings, shards)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as file:
                file.write(image)
            return
    elif _factory is not None and await _factory.initialise(settings, shards):
        return
    await init_cluster(settings, shards)


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
    global _factory
    factory = _factory = PostgresFactory()
    yield factory
    _factory = None
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
) -> Iterator[MakeSettings]:
    """Fresh, uninitialised settings for the backend under test (each call a new instance):
    the embedded default (SQLite, in-process cache), or a cluster (two PostgreSQL
    databases, the session's memcached). The clusters are dropped after the test."""
    cache: Memcached | None = None
    if request.param == "postgres":
        cache = request.getfixturevalue("cluster_memcached")
    made: list[Settings] = []

    async def make(**extra: object) -> Settings:
        if request.param == "sqlite" or cache is None:
            return sqlite_settings(tmp_path_factory.mktemp("embedded"), **extra)
        # Files (media, spool) in a directory of the test's own, not the working directory.
        cluster = {
            "data_dir": tmp_path_factory.mktemp("cluster"),
            "cache_servers": [cache.address],
            "cache_key_version": next(_key_spaces),
        }
        made.append(await postgres.cluster_settings(**cluster | extra))
        return made[-1]

    yield make
    for settings in made:
        postgres.drop_soon(settings)


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
    await init_test_cluster(settings, 16)
    opened = await Router.open(settings)
    yield opened
    await opened.close()
