"""The shard router: the one way code reaches sharded tables.

It hands out, for a logical shard (or any ID, which carries its shard), a
connection to the physical database the shard map names, with the shard's
schema rendered into every statement by ``schema_translate_map`` (pooler-safe,
unlike ``SET search_path``). ``scatter`` runs one read on every physical
database concurrently and merges the rows by ID under a global limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any, Literal, cast

from sqlalchemy import Column, Row, Select, Table, column, select, text, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import TableClause

from photogram.concurrency import gather
from photogram.db.engines import WRITE_OPTION, Engines
from photogram.db.ids import MAX_ID, shard_of
from photogram.db.metadata import SHARD_SCHEMA
from photogram.db.shardmap import (
    ShardMap,
    check_placement,
    read_map_version,
    read_shard_map,
    schema_name,
)
from photogram.errors import DatabaseUnavailableError, NotInitialisedError
from photogram.observe import SHARD_OPTION
from photogram.settings import Settings, redact_dsn

#: The table of every shard schema a write to a frozen shard locks (ROW SHARE), which a
#: move's copy holds EXCLUSIVE (photogram.db.moves): any shard table would do.
MOVE_GUARD = "shard_migrations"
#: PostgreSQL's SQLSTATE for a lock not granted within ``lock_timeout``.
LOCK_NOT_AVAILABLE = "55P03"


class _BranchTable(TableClause):
    """A light copy of a sharded table under a per-branch symbolic schema.

    ``scatter`` unions one SELECT per logical shard on a database; each branch
    needs its own schema placeholder so the compiled statement stays cacheable
    and the real schemas arrive through ``schema_translate_map``.
    """

    _use_schema_map = True
    inherit_cache = True


@cache
def _branch_table(table: Table, branch: int) -> _BranchTable:
    return _BranchTable(
        table.name, *(column(c.name, c.type) for c in table.c), schema=f"{SHARD_SCHEMA}_{branch}"
    )


def _for_branch(stmt: Select[Any], branch: int) -> Select[Any]:
    def replace(element: Any, **_kw: Any) -> Any:
        if isinstance(element, Table) and element.schema == SHARD_SCHEMA:
            return _branch_table(element, branch)
        if (
            isinstance(element, Column)
            and isinstance(element.table, Table)
            and element.table.schema == SHARD_SCHEMA
        ):
            return _branch_table(element.table, branch).c[element.name]
        return None

    return cast(Select[Any], visitors.replacement_traverse(stmt, {}, replace))


class Router:
    def __init__(self, settings: Settings, engines: Engines, shard_map: ShardMap) -> None:
        self.settings = settings
        self.engines = engines
        self.shard_map = shard_map
        self._map_checked = time.monotonic()
        self._refresh_lock = asyncio.Lock()
        check_placement(shard_map, self.engines.shard_engines)

    @classmethod
    async def open(cls, settings: Settings) -> Router:
        engines = Engines(settings)
        try:
            async with connect_or_explain(engines.global_engine, "global") as conn:
                shard_map = await read_shard_map(conn)
            if shard_map is None:
                raise NotInitialisedError(
                    "the cluster is not initialised: run `photogram init` first"
                )
            return cls(settings, engines, shard_map)
        except BaseException:
            await engines.dispose()
            raise

    async def close(self) -> None:
        await self.engines.dispose()

    # --- placement ----------------------------------------------------------------------------

    @property
    def logical_shards(self) -> int:
        return self.shard_map.logical_shards

    def holds(self, id_: int) -> bool:
        """Whether ``id_`` could name something here: a valid ID on one of this cluster's shards."""
        return 0 < id_ <= MAX_ID and shard_of(id_) < self.logical_shards

    def engine_for(self, shard: int) -> AsyncEngine:
        return self.engines.shard_engines[self.shard_map.database_of(shard)]

    def schema_translate(self, engine: AsyncEngine, shard: int) -> dict[str | None, str | None]:
        # SQLite keeps every logical shard in the one schema of its file.
        if engine.dialect.name == "sqlite":
            return {SHARD_SCHEMA: None}
        return {SHARD_SCHEMA: schema_name(shard)}

    async def refresh(self, *, force: bool = False) -> None:
        """Re-read the shard map if its version moved (at most every refresh interval)."""
        interval = self.settings.shard_map_refresh_seconds
        if not force and time.monotonic() - self._map_checked < interval:
            return
        async with self._refresh_lock:
            if not force and time.monotonic() - self._map_checked < interval:
                return
            async with self.engines.global_engine.connect() as conn:
                version = await read_map_version(conn)
                if version is not None and version != self.shard_map.version:
                    fresh = await read_shard_map(conn)
                    if fresh is not None:
                        check_placement(fresh, self.engines.shard_engines)
                        self.shard_map = fresh
            self._map_checked = time.monotonic()

    # --- connections --------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, shard: int) -> AsyncIterator[AsyncConnection]:
        """A connection for reads on ``shard``; commit explicitly if you write."""
        await self.refresh()
        engine = self.engine_for(shard)
        async with connect_or_explain(engine, self.shard_map.database_of(shard)) as conn:
            await conn.execution_options(
                schema_translate_map=self.schema_translate(engine, shard), **{SHARD_OPTION: shard}
            )
            yield conn

    @asynccontextmanager
    async def begin(self, shard: int) -> AsyncIterator[AsyncConnection]:
        """A write transaction on ``shard``: committed when the block ends, rolled back on error.

        While the shard is being moved to another database (frozen), the transaction first
        takes a share lock the move's copy conflicts with, so it waits out the copy, then
        looks at the map again: if the shard has gone meanwhile, it starts over at the
        new place (docs/sharding.md#moving-a-shard).
        """
        await self.refresh()
        while True:
            database = self.shard_map.database_of(shard)
            engine = self.engine_for(shard)
            async with connect_or_explain(engine, database) as conn:
                await conn.execution_options(
                    schema_translate_map=self.schema_translate(engine, shard),
                    **{WRITE_OPTION: True, SHARD_OPTION: shard},
                )
                async with conn.begin():
                    if shard in self.shard_map.frozen and await self._moved_away(
                        conn, shard, database
                    ):
                        continue  # this empty transaction ends; the next goes to the new place
                    yield conn
                    return

    async def _moved_away(self, conn: AsyncConnection, shard: int, database: str) -> bool:
        """In a write transaction on a frozen shard: wait until no move is copying it, then
        whether the map now puts it elsewhere. A move that holds the shard longer than
        ``shard_move_pause_seconds`` fails the write with DatabaseUnavailableError."""
        timeout_ms = max(1, int(self.settings.shard_move_pause_seconds * 1000))
        await conn.execute(text(f"SET LOCAL lock_timeout = {timeout_ms}"))
        try:
            await conn.execute(
                text(f"LOCK TABLE {schema_name(shard)}.{MOVE_GUARD} IN ROW SHARE MODE")
            )
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise DatabaseUnavailableError(
                    f"logical shard {shard} is being moved and still takes no writes"
                ) from exc
            raise
        # The caller's own statements wait on locks as long as they always do.
        await conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
        await self.refresh(force=True)
        return self.shard_map.database_of(shard) != database

    def begin_for(self, id_: int) -> Any:
        """``begin`` on the shard that ``id_`` lives on."""
        return self.begin(shard_of(id_))

    def connect_for(self, id_: int) -> Any:
        return self.connect(shard_of(id_))

    @asynccontextmanager
    async def global_connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection to the global database for reads."""
        async with connect_or_explain(self.engines.global_engine, "global") as conn:
            yield conn

    @asynccontextmanager
    async def global_begin(self) -> AsyncIterator[AsyncConnection]:
        async with connect_or_explain(self.engines.global_engine, "global") as conn:
            await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                yield conn

    # --- scatter-gather -----------------------------------------------------------------------

    async def scatter(
        self,
        stmt: Select[Any],
        *,
        limit: int,
        shards: Iterable[int] | None = None,
        order: Literal["desc", "asc"] = "desc",
        key: str = "id",
    ) -> list[Row[Any]]:
        """The global top ``limit`` rows by ``key`` of a read run on every shard it may match.

        ``stmt`` is written as for one shard and must itself select the right rows
        (include its own ORDER BY and LIMIT so each shard returns only its top rows);
        ``shards`` only narrows where to look. Each physical database gets one query
        (a UNION ALL over its shards' schemas), all databases at once.
        """
        await self.refresh()
        wanted = set(range(self.logical_shards)) if shards is None else set(shards)
        plan: dict[str, list[int]] = {}
        for shard in sorted(wanted):
            plan.setdefault(self.shard_map.database_of(shard), []).append(shard)
        results = await gather(
            *(
                self._scatter_one(name, on_db, stmt, limit, order, key)
                for name, on_db in plan.items()
            )
        )
        merged = heapq.merge(*results, key=lambda row: row._mapping[key], reverse=(order == "desc"))
        return [row for _, row in zip(range(limit), merged, strict=False)]

    async def _scatter_one(
        self,
        database: str,
        shards: Sequence[int],
        stmt: Select[Any],
        limit: int,
        order: str,
        key: str,
    ) -> list[Row[Any]]:
        engine = self.engines.shard_engines[database]
        translate: dict[str | None, str | None]
        if engine.dialect.name == "sqlite" or len(shards) == 1:
            query = stmt
            translate = self.schema_translate(engine, shards[0])
        else:
            union = union_all(*(_for_branch(stmt, i) for i in range(len(shards)))).subquery()
            sort = union.c[key].desc() if order == "desc" else union.c[key].asc()
            query = select(union).order_by(sort).limit(limit)
            translate = {f"{SHARD_SCHEMA}_{i}": schema_name(s) for i, s in enumerate(shards)}
        async with connect_or_explain(engine, database) as conn:
            await conn.execution_options(schema_translate_map=translate)
            return list((await conn.execute(query)).all())

    async def by_ids(
        self, build: Callable[[list[int]], Select[Any]], ids: Iterable[int]
    ) -> list[Row[Any]]:
        """The rows ``build(ids_on_one_shard)`` selects, for IDs on any shards: one query per
        physical database (a UNION ALL of one branch per logical shard), all at once.

        For bulk hydration: a page of 40 IDs spread over 30 shards costs one round trip to
        each database, not 30. IDs whose shard does not exist here are ignored.
        """
        await self.refresh()
        plan: dict[str, dict[int, list[int]]] = {}
        for id_ in set(ids):
            if self.holds(id_):
                shard = shard_of(id_)
                database = self.shard_map.database_of(shard)
                plan.setdefault(database, {}).setdefault(shard, []).append(id_)

        async def one(database: str, wanted: dict[int, list[int]]) -> list[Row[Any]]:
            engine = self.engines.shard_engines[database]
            translate: dict[str | None, str | None]
            if engine.dialect.name == "sqlite":
                query = build([i for group in wanted.values() for i in group])
                translate = {SHARD_SCHEMA: None}
            elif len(wanted) == 1:
                ((shard, group),) = wanted.items()
                query, translate = build(group), self.schema_translate(engine, shard)
            else:
                branches = [_for_branch(build(group), i) for i, group in enumerate(wanted.values())]
                query = union_all(*branches)  # type: ignore[assignment]
                translate = {f"{SHARD_SCHEMA}_{i}": schema_name(s) for i, s in enumerate(wanted)}
            async with connect_or_explain(engine, database) as conn:
                await conn.execution_options(schema_translate_map=translate)
                return list((await conn.execute(query)).all())

        results = await gather(*(one(db, wanted) for db, wanted in plan.items()))
        return [row for rows in results for row in rows]

    # --- health -------------------------------------------------------------------------------

    async def ping(self) -> dict[str, str | None]:
        """Each physical database (and the global one) by name: None if it answers, else why not."""
        targets = {"global": self.engines.global_engine, **self.engines.shard_engines}
        answers = await gather(*(_ping(e) for e in targets.values()))
        return dict(zip(targets, answers, strict=True))


async def _ping(engine: AsyncEngine) -> str | None:
    try:
        async with asyncio.timeout(5), engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    except (OSError, DBAPIError, TimeoutError) as exc:
        return describe_connect_error(exc)
    return None


def describe_connect_error(exc: BaseException) -> str:
    detail = getattr(exc, "orig", None) or exc
    lines = str(detail).strip().splitlines()
    return lines[0] if lines else type(detail).__name__


@asynccontextmanager
async def connect_or_explain(engine: AsyncEngine, name: str) -> AsyncIterator[AsyncConnection]:
    """``engine.connect()``, turning a failure to connect into one line naming the database."""
    try:
        conn = await engine.connect().start()
    except (OSError, DBAPIError, TimeoutError) as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to database {name!r} ({redact_dsn(str(engine.url))}): "
            f"{describe_connect_error(exc)}"
        ) from exc
    try:
        yield conn
    except DBAPIError as exc:
        # Connected, then lost: the server went away, or PgBouncer cannot log in to it.
        if not lost_connection(exc):
            raise
        raise DatabaseUnavailableError(
            f"lost database {name!r} ({redact_dsn(str(engine.url))}): {describe_connect_error(exc)}"
        ) from exc
    finally:
        with contextlib.suppress(Exception):  # closing a broken connection may fail too
            await conn.close()


#: SQLSTATE classes of a database that is not there (08: connection exception; 57P0x:
#: shutting down, cannot connect now), and what PgBouncer says when it cannot reach one.
_LOST_STATES = ("08", "57P01", "57P02", "57P03")
_LOST_MESSAGES = ("server login has been failing", "connection was closed", "no more connections")


def lost_connection(exc: DBAPIError) -> bool:
    """Whether ``exc`` means the database went away (not that the statement was wrong)."""
    if exc.connection_invalidated:
        return True
    state = str(getattr(exc.orig, "sqlstate", "") or "")
    if state.startswith(_LOST_STATES):
        return True
    text = str(exc.orig).lower()
    return any(message in text for message in _LOST_MESSAGES)
