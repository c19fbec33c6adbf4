"""Async engines for the global database and each physical shard database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from photogram.db.ids import (
    SQLITE_BLOCK_FUNCTION,
    SQLITE_FUNCTION,
    sqlite_next_id_function,
    sqlite_next_ids_function,
)
from photogram.errors import DatabaseUnavailableError
from photogram.observe import instrument_engine
from photogram.settings import Settings

#: Execution option that makes a SQLite transaction take the write lock at BEGIN.
WRITE_OPTION = "photogram_write"

_CONNECT_TIMEOUT_SECONDS = 5

#: How long closing waits for connections still in use to come back to their pools.
DISPOSE_GRACE_SECONDS = 5.0


def create_engine(dsn: str, settings: Settings) -> AsyncEngine:
    if dsn.startswith("sqlite"):
        return _sqlite_engine(dsn)
    connect_args: dict[str, Any] = {
        "timeout": _CONNECT_TIMEOUT_SECONDS,
        # asyncpg asks for client_encoding 'utf-8' (quoted); the server reports it back as
        # UTF8, and PgBouncer, comparing the two as text, would re-send a SET with every
        # transaction it hands to a server connection. Asking for UTF8 itself (it comes
        # after asyncpg's in the startup packet, so it wins) makes them equal.
        "server_settings": {"application_name": "photogram", "client_encoding": "UTF8"},
    }
    if settings.pgbouncer:
        # Transaction pooling hands each transaction to any server connection, where a
        # statement prepared earlier may not exist and a reused name may already be taken.
        connect_args |= {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    return create_async_engine(
        dsn,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        connect_args=connect_args,
    )


def _unique_statement_name() -> str:
    return f"__photogram_{uuid.uuid4().hex}__"


def _sqlite_engine(dsn: str) -> AsyncEngine:
    database = make_url(dsn).database
    if database and database != ":memory:":
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailableError(
                f"cannot create the directory of SQLite database {database}: {exc.strerror}"
            ) from exc
    engine = create_async_engine(dsn, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event below open transactions, so that writers can
        # take the lock up front instead of failing to upgrade a read lock later.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()
        raw: sqlite3.Connection = dbapi_connection.driver_connection._conn
        dbapi_connection.create_function(SQLITE_FUNCTION, 1, sqlite_next_id_function(raw))
        dbapi_connection.create_function(SQLITE_BLOCK_FUNCTION, 2, sqlite_next_ids_function(raw))

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writing = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    return engine


class Engines:
    """One engine per distinct URL: on the embedded default everything is one SQLite file."""

    def __init__(self, settings: Settings) -> None:
        self._by_dsn: dict[str, AsyncEngine] = {}
        self._checked_in = asyncio.Event()
        self.global_engine = self._get(settings.global_dsn, settings, "global")
        self.shard_engines = {
            name: self._get(dsn, settings, name) for name, dsn in settings.shard_dsns.items()
        }
        self.dsns = dict(settings.shard_dsns)

    def _get(self, dsn: str, settings: Settings, name: str) -> AsyncEngine:
        if dsn not in self._by_dsn:
            self._by_dsn[dsn] = engine = create_engine(dsn, settings)
            event.listen(engine.sync_engine, "checkin", lambda *_: self._checked_in.set())
            instrument_engine(engine, name)  # per database: time per shard on /metrics
        return self._by_dsn[dsn]

    async def dispose(self) -> None:
        # A pool disposed while a connection is out never closes that connection: it is
        # checked in to the old pool later and left to the garbage collector. Give work
        # still running a moment to hand its connections back.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DISPOSE_GRACE_SECONDS):
                while self.in_use():
                    self._checked_in.clear()
                    await self._checked_in.wait()
        for engine in self._by_dsn.values():
            await engine.dispose()

    def in_use(self) -> int:
        """Connections checked out of every pool now."""
        return sum(getattr(e.pool, "checkedout", lambda: 0)() for e in self._by_dsn.values())
