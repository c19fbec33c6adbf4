from __future__ import annotations

import asyncio
import gc
import random

import asyncpg
import pytest
from sqlalchemy import event, func, insert, select, update

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import cluster, outbox, shard_map
from photogram.db.router import Router
from photogram.db.shardmap import initial_placement, schema_name
from photogram.errors import ClusterMismatchError, NotInitialisedError
from tests.conftest import MakeSettings, init_test_cluster


def _asyncpg_dsn(router: Router, database: str) -> str:
    return router.engines.dsns[database].replace("postgresql+asyncpg://", "postgresql://")


async def _write(router: Router, shard: int, task: str) -> int:
    async with router.begin(shard) as conn:
        return int(
            await conn.scalar(
                insert(outbox)
                .values(id=next_id(shard), task=task, payload={"shard": shard})
                .returning(outbox.c.id)
            )
        )


def test_initial_placement_is_even_contiguous_blocks() -> None:
    assert initial_placement(8, ["a", "b"]) == ("a",) * 4 + ("b",) * 4
    placement = initial_placement(4096, ["a", "b", "c"])
    counts = {name: placement.count(name) for name in "abc"}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert list(placement) == sorted(placement)


async def test_rows_land_in_the_schema_and_database_the_map_names(router: Router) -> None:
    written = {shard: await _write(router, shard, "placement") for shard in (0, 7, 8, 15)}
    for shard, id_ in written.items():
        assert shard_of(id_) == shard
        async with router.connect_for(id_) as conn:
            found = await conn.scalar(select(outbox.c.payload).where(outbox.c.id == id_))
        assert found == {"shard": shard}

    if router.engine_for(0).dialect.name != "postgresql":
        return
    # Look from outside photogram: each physical database holds exactly its shards' rows.
    databases = set(router.shard_map.placement)
    assert databases == {"pg_a", "pg_b"}
    for database in databases:
        conn = await asyncpg.connect(_asyncpg_dsn(router, database))
        try:
            for shard, id_ in written.items():
                schema = schema_name(shard)
                exists = await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema)
                here = router.shard_map.database_of(shard) == database
                assert exists == here
                if here:
                    count = await conn.fetchval(
                        f"SELECT count(*) FROM {schema}.outbox WHERE id = $1", id_
                    )
                    assert count == 1
        finally:
            await conn.close()


async def test_scatter_returns_the_global_top_n(router: Router) -> None:
    rng = random.Random(7)
    written = [
        await _write(router, rng.randrange(router.logical_shards), "scatter") for _ in range(120)
    ]
    mine = outbox.c.task == "scatter"
    newest = select(outbox.c.id, outbox.c.payload).where(mine).order_by(outbox.c.id.desc())

    top = await router.scatter(newest.limit(25), limit=25)
    assert [row.id for row in top] == sorted(written, reverse=True)[:25]

    oldest = select(outbox.c.id).where(mine).order_by(outbox.c.id).limit(10)
    bottom = await router.scatter(oldest, limit=10, order="asc")
    assert [row.id for row in bottom] == sorted(written)[:10]

    some = {1, 2, 9, 14}
    narrowed = await router.scatter(
        newest.where(outbox.c.payload["shard"].as_integer().in_(some)).limit(5),
        limit=5,
        shards=some,
    )
    expected = sorted((i for i in written if shard_of(i) in some), reverse=True)[:5]
    assert [row.id for row in narrowed] == expected

    everything = await router.scatter(newest.limit(1000), limit=1000)
    assert len(everything) == len(written)


async def test_scatter_queries_each_physical_database_once(router: Router) -> None:
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "outbox" in statement:
            statements.append(statement)

    engines = {id(e): e for e in router.engines.shard_engines.values()}.values()
    for engine in engines:
        event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await router.scatter(select(outbox.c.id).order_by(outbox.c.id.desc()).limit(3), limit=3)
    finally:
        for engine in engines:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == len(engines)


async def test_shard_map_changes_reach_the_router(router: Router) -> None:
    before = router.shard_map.version
    async with router.global_begin() as conn:
        await conn.execute(
            update(shard_map).where(shard_map.c.shard == 0).values(database="nowhere")
        )
        await conn.execute(update(cluster).values(map_version=cluster.c.map_version + 1))
    try:
        with pytest.raises(ClusterMismatchError, match="nowhere"):
            await router.refresh(force=True)
        assert router.shard_map.version == before  # a bad map is never adopted
    finally:
        async with router.global_begin() as conn:
            await conn.execute(
                update(shard_map)
                .where(shard_map.c.shard == 0)
                .values(database=router.shard_map.placement[0])
            )
    await router.refresh(force=True)
    assert router.shard_map.version == before + 1


async def test_opening_a_router_before_init_says_so(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    with pytest.raises(NotInitialisedError, match="photogram init"):
        await Router.open(settings)


async def test_by_ids_is_one_query_per_database(router: Router) -> None:
    rng = random.Random(11)
    written = [
        await _write(router, rng.randrange(router.logical_shards), "by-ids") for _ in range(40)
    ]
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "outbox" in statement:
            statements.append(statement)

    engines = {id(e): e for e in router.engines.shard_engines.values()}.values()
    for engine in engines:
        event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        rows = await router.by_ids(
            lambda ids: select(outbox.c.id).where(outbox.c.id.in_(ids)),
            [*written, 5, 2**62],  # IDs that name nothing are simply not found
        )
    finally:
        for engine in engines:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert sorted(row.id for row in rows) == sorted(written)
    assert len(statements) == len(engines)


async def test_closing_waits_for_connections_still_in_use(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    await init_test_cluster(settings, 8)
    router = await Router.open(settings)
    holding, release = asyncio.Event(), asyncio.Event()

    async def late_reader() -> int:
        async with router.connect(3) as conn:
            holding.set()
            await release.wait()
            return int(await conn.scalar(select(func.count()).select_from(outbox)))

    reader = asyncio.create_task(late_reader())
    await holding.wait()
    closing = asyncio.create_task(router.close())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not closing.done()  # waiting for the reader's connection
    release.set()
    assert await reader == 0
    await closing
    # A connection stranded by a pool disposed under it would warn here, and warnings
    # fail tests.
    gc.collect()
    assert router.engines.in_use() == 0
