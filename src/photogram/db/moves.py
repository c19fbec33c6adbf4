"""Moving a logical shard to another physical database while the app keeps serving.

1. The shard's schema is made (or emptied) on the target at the head migration.
2. The shard is *frozen*: a ``shard_moves`` row, and a new map version, so every router
   learns of it within ``shard_map_refresh_seconds``; from then on each of their write
   transactions on the shard first takes a ROW SHARE lock on one of its tables and, once
   it has it, looks at the map again (``Router.begin``). Writes go on meanwhile, and so
   do reads.
3. After every router has had time to see it, the shard's tables are locked against
   writes on the source (a transaction still in flight finishes first; new ones wait on
   the lock), copied whole, the ID counter with them, and compared table by table: row
   count and a checksum of every row, on both sides.
4. Only if they agree: the map names the target and the shard thaws (one transaction in
   the global database), then the lock goes. The writes that waited find the map moved
   and start over at the target.
5. After every router has had time to re-read the map, the old copy is dropped.

Writes to the shard pause for steps 3-4 only (the copy and its check); nothing fails.
A move that fails before step 4 thaws the shard where it was, and leaves the source as
it was (docs/sharding.md#moving-a-shard).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from photogram.db.metadata import SHARD_SCHEMA, cluster, shard_map, shard_metadata, shard_moves
from photogram.db.migrations import migrate_shard_schema
from photogram.db.router import MOVE_GUARD, Router
from photogram.db.shardmap import schema_name
from photogram.errors import PhotogramError

#: Rows copied per INSERT.
COPY_BATCH = 1000


class MoveError(PhotogramError):
    """A shard move that cannot start, or that stopped with nothing changed."""


@dataclass
class MoveReport:
    shard: int
    source: str
    target: str
    rows: dict[str, int]
    write_pause_seconds: float


def _translate(shard: int) -> dict[str | None, str | None]:
    return {SHARD_SCHEMA: schema_name(shard)}


def _tables() -> list[Table]:
    return list(shard_metadata.sorted_tables)


async def _bump(conn: AsyncConnection) -> int:
    version = int(await conn.scalar(select(cluster.c.map_version).where(cluster.c.id == 1)) or 0)
    await conn.execute(update(cluster).where(cluster.c.id == 1).values(map_version=version + 1))
    return version + 1


async def checksums(conn: AsyncConnection, shard: int) -> dict[str, tuple[int, str]]:
    """Each table of ``shard``: (rows, MD5 over every row's text in primary-key order)."""
    schema = schema_name(shard)
    found: dict[str, tuple[int, str]] = {}
    for table in _tables():
        order = ", ".join(f"t.{c.name}" for c in table.primary_key.columns)
        row = (
            await conn.execute(
                text(
                    f"SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY {order})),"
                    f" '') FROM {schema}.{table.name} t"
                )
            )
        ).one()
        found[table.name] = (int(row[0]), str(row[1]))
    return found


async def _copy(source: AsyncConnection, target: AsyncConnection, shard: int) -> dict[str, int]:
    schema = schema_name(shard)
    names = ", ".join(f"{schema}.{t.name}" for t in _tables())
    await target.execute(text(f"TRUNCATE {names}"))
    copied: dict[str, int] = {}
    for table in _tables():
        count = 0
        result = await source.stream(select(table))
        try:
            async for chunk in result.mappings().partitions(COPY_BATCH):
                await target.execute(insert(table), [dict(row) for row in chunk])
                count += len(chunk)
        finally:
            await result.close()  # its server-side cursor, before the schema can go
        copied[table.name] = count
    # The ID counter only goes up: the target's starts where the source's is.
    counter = f"{schema}.id_counter"
    last, called = (
        await source.execute(text(f"SELECT last_value, is_called FROM {counter}"))
    ).one()
    await target.execute(
        text("SELECT setval(:seq, :value, :called)"),
        {
            "seq": counter,
            "value": last,
            "called": called,
        },
    )
    return copied


async def move_shard(
    router: Router,
    shard: int,
    target: str,
    say: Callable[[str], None] = lambda _: None,
) -> MoveReport:
    """Move logical ``shard`` to the physical database ``target`` (see the module doc)."""
    settings = router.settings
    if not 0 <= shard < router.logical_shards:
        raise MoveError(f"logical shard {shard} does not exist (0-{router.logical_shards - 1})")
    if target not in router.engines.shard_engines:
        known = ", ".join(sorted(router.engines.shard_engines))
        raise MoveError(f"unknown database {target!r} (databases: {known})")
    await router.refresh(force=True)
    source = router.shard_map.database_of(shard)
    if source == target:
        raise MoveError(f"logical shard {shard} is already on {target!r}")
    source_engine: AsyncEngine = router.engines.shard_engines[source]
    target_engine: AsyncEngine = router.engines.shard_engines[target]
    if "postgresql" not in (source_engine.dialect.name, target_engine.dialect.name) or (
        source_engine.dialect.name != target_engine.dialect.name
    ):
        raise MoveError("moving a shard needs a cluster of PostgreSQL databases")
    if source_engine.url == target_engine.url:
        raise MoveError(f"{source!r} and {target!r} are the same database")
    settle = 2 * settings.shard_map_refresh_seconds + 1

    async with router.global_begin() as conn:
        if await conn.scalar(select(shard_moves.c.shard).where(shard_moves.c.shard == shard)):
            raise MoveError(f"logical shard {shard} is already being moved")
        await conn.execute(
            insert(shard_moves).values(
                shard=shard, target=target, phase="copying", started_at=datetime.now(UTC)
            )
        )
    switched = False
    try:
        say(f"making schema {schema_name(shard)} on {target!r}")
        async with target_engine.connect() as conn:
            await migrate_shard_schema(conn, shard)

        say(f"freezing shard {shard}: its writes will wait for the copy")
        async with router.global_begin() as conn:
            await conn.execute(
                update(shard_moves).where(shard_moves.c.shard == shard).values(phase="frozen")
            )
            await _bump(conn)
        await asyncio.sleep(settle)  # every router now holds its writes to the shard back

        paused_at = time.monotonic()
        async with source_engine.connect() as src, target_engine.connect() as dst:
            await src.execution_options(schema_translate_map=_translate(shard))
            await dst.execution_options(schema_translate_map=_translate(shard))
            await src.begin()
            schema = schema_name(shard)
            # The table writes to a frozen shard lock first goes first here too: a write
            # holding it and then wanting another table could otherwise deadlock with us.
            tables = sorted((t.name for t in _tables()), key=lambda name: name != MOVE_GUARD)
            names = ", ".join(f"{schema}.{name}" for name in tables)
            # Waits for any write still in flight; readers are not blocked.
            await src.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
            await dst.begin()
            say(f"copying shard {shard} from {source!r} to {target!r}")
            rows = await _copy(src, dst, shard)
            before, after = await checksums(src, shard), await checksums(dst, shard)
            if before != after:
                differ = sorted(t for t in before if before[t] != after.get(t))
                raise MoveError(
                    f"the copy of shard {shard} differs from its source in {', '.join(differ)}; "
                    "nothing was switched"
                )
            await dst.commit()
            say(f"verified {sum(rows.values()):,} rows in {len(rows)} tables; switching the map")
            async with router.global_begin() as conn:
                version = await _bump(conn)
                await conn.execute(
                    update(shard_map)
                    .where(shard_map.c.shard == shard)
                    .values(database=target, since_version=version)
                )
                await conn.execute(delete(shard_moves).where(shard_moves.c.shard == shard))
            switched = True
            # The lock goes: writes that waited on it find the map moved and go to the target.
            await src.commit()
            pause = time.monotonic() - paused_at
            await router.refresh(force=True)
            # Readers that have not re-read the map still read the old copy (the same rows):
            # it goes once every router has had time to.
            await asyncio.sleep(settle)
            say(f"dropping the old copy of shard {shard} from {source!r}")
            await src.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            await src.commit()
    finally:
        if not switched:
            async with router.global_begin() as conn:
                await conn.execute(delete(shard_moves).where(shard_moves.c.shard == shard))
                await _bump(conn)
    return MoveReport(shard, source, target, rows, pause)


# --- rebalancing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedMove:
    shard: int
    source: str
    target: str
    bytes: int


async def shard_sizes(router: Router) -> dict[int, int]:
    """Bytes on disk of every logical shard (tables and indexes), by shard."""
    sizes: dict[int, int] = {}
    for database, shards in router.shard_map.by_database.items():
        engine = router.engines.shard_engines[database]
        if engine.dialect.name != "postgresql":
            raise MoveError("rebalancing needs a cluster of PostgreSQL databases")
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT n.nspname, coalesce(sum(pg_total_relation_size(c.oid)), 0) "
                    "FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid "
                    "AND c.relkind = 'r' WHERE n.nspname = ANY(:names) GROUP BY n.nspname"
                ),
                {"names": [schema_name(s) for s in shards]},
            )
            by_name = {name: int(size) for name, size in rows}
        for shard in shards:
            sizes[shard] = by_name.get(schema_name(shard), 0)
    return sizes


def plan_rebalance(
    sizes: dict[int, int], placement: tuple[str, ...], databases: list[str], limit: int = 64
) -> list[PlannedMove]:
    """Moves that even out bytes per database: the largest shard that narrows the gap
    between the fullest and the emptiest database, again and again (at most ``limit``)."""
    load = dict.fromkeys(databases, 0)
    where = dict(enumerate(placement))
    for shard, size in sizes.items():
        load[where[shard]] = load.get(where[shard], 0) + size
    plan: list[PlannedMove] = []
    while len(plan) < limit:
        fullest = max(load, key=lambda n: (load[n], n))
        emptiest = min(load, key=lambda n: (load[n], n))
        gap = load[fullest] - load[emptiest]
        candidates = [
            (size, shard)
            for shard, size in sizes.items()
            if where[shard] == fullest and 0 < size < gap
        ]
        if not candidates:
            break
        # The largest shard that still narrows the gap (moving size s makes it |gap - 2s|).
        size, shard = max(candidates, key=lambda c: (-abs(gap - 2 * c[0]), c[1]))
        if abs(gap - 2 * size) >= gap:
            break
        plan.append(PlannedMove(shard, fullest, emptiest, size))
        where[shard] = emptiest
        load[fullest] -= size
        load[emptiest] += size
    return plan
