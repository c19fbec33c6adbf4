from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db import ids
from photogram.db.ids import next_id, reserve_ids
from photogram.db.metadata import outbox
from photogram.db.router import Router
from photogram.db.shardmap import schema_name

# --- the layout, as pure functions ---------------------------------------------------------

ms_values = st.integers(min_value=0, max_value=ids.MAX_MS)
shards = st.integers(min_value=0, max_value=ids.SHARD_MASK)
sequences = st.integers(min_value=0, max_value=ids.SEQUENCE_MASK)


@given(ms_values, shards, sequences)
def test_compose_decompose_round_trip(ms: int, shard: int, sequence: int) -> None:
    id_ = ids.compose(ms, shard, sequence)
    if id_ == 0:
        return  # the one all-zero value is not an ID anything can be given
    parts = ids.decompose(id_)
    assert (parts.ms, parts.shard, parts.sequence) == (ms, shard, sequence)
    assert ids.shard_of(id_) == shard
    assert ids.parse_id(str(id_)) == id_


@given(ms_values, shards, sequences)
def test_ids_are_positive_signed_bigints(ms: int, shard: int, sequence: int) -> None:
    assert 0 <= ids.compose(ms, shard, sequence) < 2**63


@given(st.integers(min_value=0, max_value=ids.MAX_COUNTER), shards)
def test_counter_order_is_id_order_within_a_shard(counter: int, shard: int) -> None:
    if counter == ids.MAX_COUNTER:
        return
    assert ids.from_counter(counter, shard) < ids.from_counter(counter + 1, shard)
    assert ids.shard_of(ids.from_counter(counter, shard)) == shard


@given(ms_values, shards, shards, sequences, sequences)
def test_later_milliseconds_sort_later_whatever_the_shard(
    ms: int, shard_a: int, shard_b: int, seq_a: int, seq_b: int
) -> None:
    if ms == ids.MAX_MS:
        return
    assert ids.compose(ms, shard_a, seq_a) < ids.compose(ms + 1, shard_b, seq_b)


def test_horizon_is_decades_away_and_documented() -> None:
    assert ids.HORIZON.year == 2060
    assert ids.MAX_ID < 2**63
    assert ids.decompose(ids.MAX_ID).timestamp == ids.HORIZON


def test_decode_json_shape() -> None:
    id_ = ids.compose(1000, 42, 7)
    assert ids.decompose(id_).as_json() == {
        "id": str(id_),
        "timestamp": "2026-01-01T00:00:01.000Z",
        "shard": 42,
        "sequence": 7,
    }


@pytest.mark.parametrize(
    "bad", ["", "abc", "-5", "0", "1.5", "12a", " ", "99999999999999999999", str(2**63)]
)
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(ids.InvalidIdError):
        ids.parse_id(bad)


@given(st.text())
def test_parse_never_crashes(text_: str) -> None:
    try:
        value = ids.parse_id(text_)
    except ids.InvalidIdError:
        return
    assert 0 < value <= ids.MAX_ID


def test_compose_refuses_out_of_range() -> None:
    with pytest.raises(ValueError, match="milliseconds"):
        ids.compose(ids.MAX_MS + 1, 0, 0)
    with pytest.raises(ValueError, match="shard"):
        ids.compose(0, ids.MAX_SHARDS, 0)
    with pytest.raises(ValueError, match="sequence"):
        ids.compose(0, 0, 1024)


# --- IDs made by the database, on both backends ----------------------------------------------


async def _insert(router: Router, shard: int, task: str) -> int:
    async with router.begin(shard) as conn:
        return int(
            await conn.scalar(
                insert(outbox)
                .values(id=next_id(shard), task=task, payload={})
                .returning(outbox.c.id)
            )
        )


async def test_shard_bits_are_the_shard_inserted_into(router: Router) -> None:
    before = datetime.now(UTC)
    for shard in range(router.logical_shards):
        id_ = await _insert(router, shard, "bits")
        parts = ids.decompose(id_)
        assert parts.shard == shard
        assert abs((parts.timestamp - before).total_seconds()) < 60


async def test_ids_increase_within_a_shard(router: Router) -> None:
    made = [await _insert(router, 5, "increase") for _ in range(200)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


async def test_concurrent_connections_never_collide(router: Router) -> None:
    async def worker(n: int) -> list[int]:
        return [await _insert(router, 6, f"concurrent-{n}") for _ in range(60)]

    batches = await asyncio.gather(*(worker(n) for n in range(12)))
    made = [id_ for batch in batches for id_ in batch]
    assert len(set(made)) == len(made) == 12 * 60
    for batch in batches:
        assert batch == sorted(batch)  # each connection sees its own IDs increase


async def test_million_row_single_statement(router: Router) -> None:
    """More than 1,024 rows in a millisecond must neither repeat nor go backwards."""
    shard, rows = 3, 1_000_000
    engine = router.engine_for(shard)
    async with router.begin(shard) as conn:
        if engine.dialect.name == "postgresql":
            table = f"{schema_name(shard)}.outbox"
            # The column default is the schema's own next_id().
            await conn.exec_driver_sql(
                f"INSERT INTO {table} (task, payload) "
                f"SELECT 'million', to_jsonb(g) FROM generate_series(1, {rows}) AS g"
            )
            order = "(payload #>> '{}')::int"
        else:
            table = "outbox"
            await conn.exec_driver_sql(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                f"WHERE n < {rows}) INSERT INTO outbox (id, task, payload) "
                f"SELECT photogram_next_id({shard}), 'million', n FROM g"
            )
            order = "CAST(payload AS INTEGER)"
        total, distinct, wrong_shard = (
            await conn.execute(
                text(
                    f"SELECT count(*), count(DISTINCT id), "
                    f"sum(CASE WHEN ((id >> 10) & 8191) = {shard} THEN 0 ELSE 1 END) "
                    f"FROM {table} WHERE task = 'million'"
                )
            )
        ).one()
        backwards = await conn.scalar(
            text(
                f"SELECT count(*) FROM (SELECT id, lag(id) OVER (ORDER BY {order}) AS prev "
                f"FROM {table} WHERE task = 'million') s WHERE id <= prev"
            )
        )
        await conn.execute(outbox.delete().where(outbox.c.task == "million"))
    assert (total, distinct, wrong_shard, backwards) == (rows, rows, 0, 0)


async def test_clock_behind_the_counter_still_gives_increasing_ids(router: Router) -> None:
    """Borrowed milliseconds (or a clock stepped back) never make an ID repeat."""
    shard = 9
    ahead = ids.counter_floor(int(datetime.now(UTC).timestamp() * 1000)) + (60_000 << 10)
    async with router.begin(shard) as conn:
        if router.engine_for(shard).dialect.name == "postgresql":
            await conn.exec_driver_sql(f"SELECT setval('{schema_name(shard)}.id_counter', {ahead})")
        else:
            await conn.exec_driver_sql(
                f"INSERT OR REPLACE INTO id_counters (shard, counter) VALUES ({shard}, {ahead})"
            )
    first = await _insert(router, shard, "ahead")
    second = await _insert(router, shard, "ahead")
    assert first == ids.from_counter(ahead + 1, shard)
    assert second == ids.from_counter(ahead + 2, shard)


async def test_id_space_exhaustion_raises_rather_than_wrapping(router: Router) -> None:
    shard = 10
    async with router.begin(shard) as conn:
        if router.engine_for(shard).dialect.name == "postgresql":
            await conn.exec_driver_sql(
                f"SELECT setval('{schema_name(shard)}.id_counter', {ids.MAX_COUNTER})"
            )
        else:
            await conn.exec_driver_sql(
                "INSERT OR REPLACE INTO id_counters (shard, counter) "
                f"VALUES ({shard}, {ids.MAX_COUNTER})"
            )
    with pytest.raises(DBAPIError) as raised:
        await _insert(router, shard, "overflow")
    if router.engine_for(shard).dialect.name == "postgresql":
        assert "ID space exhausted" in str(raised.value)
    async with router.connect(shard) as conn:
        count = await conn.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.task == "overflow")
        )
    assert count == 0


async def test_concurrent_bulk_statements_never_collide(router: Router) -> None:
    """Several sessions each taking thousands of IDs at once from one shard's counter."""
    shard, sessions, rows = 11, 8, 20_000
    postgres = router.engine_for(shard).dialect.name == "postgresql"

    async def bulk(n: int) -> None:
        async with router.begin(shard) as conn:
            if postgres:
                await conn.exec_driver_sql(
                    f"INSERT INTO {schema_name(shard)}.outbox (task, payload) "
                    f"SELECT 'bulk-{n}', to_jsonb(g) FROM generate_series(1, {rows}) AS g"
                )
            else:
                await conn.exec_driver_sql(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                    f"WHERE n < {rows}) INSERT INTO outbox (id, task, payload) "
                    f"SELECT photogram_next_id({shard}), 'bulk-{n}', n FROM g"
                )

    await asyncio.gather(*(bulk(n) for n in range(sessions)))
    async with router.begin(shard) as conn:
        bulk_rows = outbox.c.task.like("bulk-%")
        total, distinct = (
            await conn.execute(
                select(func.count(), func.count(outbox.c.id.distinct())).where(bulk_rows)
            )
        ).one()
        await conn.execute(outbox.delete().where(bulk_rows))
    assert total == distinct == sessions * rows


# --- blocks: many IDs for one lock and one counter write ------------------------------------


@pytest.mark.parametrize("bad", [0, -1, -1024, True, 2.0, "3", None])
def test_block_size_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        ids.check_block_size(bad)


@given(
    st.integers(min_value=0, max_value=ids.MAX_COUNTER - 5_000),
    st.integers(min_value=1, max_value=5_000),
    shards,
)
def test_block_ids_are_the_ids_of_each_counter_value(first: int, n: int, shard: int) -> None:
    made = ids.block_ids(first, n, shard)
    assert made == [ids.from_counter(c, shard) for c in range(first, first + n)]
    assert made == sorted(set(made))


def _sqlite_counter() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE id_counters (shard INTEGER PRIMARY KEY, counter INTEGER NOT NULL)")
    conn.create_function(ids.SQLITE_FUNCTION, 1, ids.sqlite_next_id_function(conn))
    conn.create_function(ids.SQLITE_BLOCK_FUNCTION, 2, ids.sqlite_next_ids_function(conn))
    return conn


def _now_floor() -> int:
    return ids.counter_floor(int(datetime.now(UTC).timestamp() * 1000))


@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=12), shards)
def test_blocks_and_single_ids_take_consecutive_counter_values(
    sizes: list[int], shard: int
) -> None:
    """Any mix of blocks (n >= 1) and single next_id() calls (0 here) on a counter ahead of
    the clock gives the IDs of one run of consecutive counter values, in call order."""
    conn = _sqlite_counter()
    ahead = _now_floor() + (600_000 << 10)
    conn.execute("INSERT INTO id_counters VALUES (?, ?)", (shard, ahead))
    made: list[int] = []
    for n in sizes:
        if n == 0:
            made.append(conn.execute(f"SELECT {ids.SQLITE_FUNCTION}(?)", (shard,)).fetchone()[0])
        else:
            query = f"SELECT {ids.SQLITE_BLOCK_FUNCTION}(?, ?)"
            (first,) = conn.execute(query, (shard, n)).fetchone()
            made.extend(ids.from_counter(c, shard) for c in range(first, first + n))
    assert made == [ids.from_counter(ahead + 1 + i, shard) for i in range(len(made))]


@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=12))
def test_blocks_from_a_lagging_counter_start_at_the_clock(sizes: list[int]) -> None:
    """From a counter far behind the clock, every ID is still fresh and increasing."""
    conn = _sqlite_counter()
    conn.execute("INSERT INTO id_counters VALUES (1, 0)")
    before = _now_floor()
    made: list[int] = []
    for n in sizes:
        (first,) = conn.execute(f"SELECT {ids.SQLITE_BLOCK_FUNCTION}(1, ?)", (n or 1,)).fetchone()
        made.extend(ids.from_counter(c, 1) for c in range(first, first + (n or 1)))
    assert made[0] >= ids.from_counter(before, 1)
    assert made == sorted(set(made))


def _set_counter(conn: AsyncConnection, postgres: bool, shard: int, value: int) -> Any:
    if postgres:
        return conn.exec_driver_sql(f"SELECT setval('{schema_name(shard)}.id_counter', {value})")
    return conn.exec_driver_sql(
        f"INSERT OR REPLACE INTO id_counters (shard, counter) VALUES ({shard}, {value})"
    )


def _is_postgres(router: Router, shard: int) -> bool:
    return router.engine_for(shard).dialect.name == "postgresql"


async def _reserve(router: Router, shard: int, n: int) -> list[int]:
    async with router.begin(shard) as conn:
        return await reserve_ids(conn, shard, n)


async def test_a_block_is_what_successive_next_id_calls_would_give(router: Router) -> None:
    """Two shards with the same counter: one reserves a block, the other calls next_id()
    that many times; the IDs differ only in their shard field, and cross milliseconds."""
    block_shard, single_shard, n = 12, 13, 2_500
    postgres = _is_postgres(router, block_shard)
    ahead = _now_floor() + (60_000 << 10)
    for shard in (block_shard, single_shard):
        async with router.begin(shard) as conn:
            await _set_counter(conn, postgres, shard, ahead)
    block = await _reserve(router, block_shard, n)
    async with router.begin(single_shard) as conn:
        if postgres:
            query = f"SELECT {schema_name(single_shard)}.next_id() FROM generate_series(1, {n})"
        else:
            query = (
                f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n}) "
                f"SELECT photogram_next_id({single_shard}) FROM g"
            )
        singles = [int(row[0]) for row in await conn.exec_driver_sql(query)]

    def fields(id_: int) -> tuple[int, int]:
        parts = ids.decompose(id_)
        return parts.ms, parts.sequence

    assert [fields(i) for i in block] == [fields(i) for i in sorted(singles)]
    assert block == [ids.from_counter(ahead + 1 + i, block_shard) for i in range(n)]
    first, last = ids.decompose(block[0]), ids.decompose(block[-1])
    assert last.ms - first.ms == ((ahead + n) >> 10) - ((ahead + 1) >> 10) >= 2
    assert {ids.shard_of(i) for i in block} == {block_shard}
    # The counter goes on after the block, as after the same number of next_id() calls.
    assert await _insert(router, block_shard, "after-block") == ids.from_counter(
        ahead + n + 1, block_shard
    )


async def test_blocks_interleave_with_concurrent_next_id_callers(router: Router) -> None:
    shard = 14
    sizes = [1, 7, 1_024, 1_500, 3]

    async def singles(n: int) -> list[int]:
        return [await _insert(router, shard, f"interleave-{n}") for _ in range(30)]

    async def blocks() -> list[list[int]]:
        return [await _reserve(router, shard, size) for size in sizes]

    got = await asyncio.gather(*(singles(n) for n in range(6)), *(blocks() for _ in range(6)))
    single_runs: list[list[int]] = got[:6]  # type: ignore[assignment]
    block_runs: list[list[list[int]]] = got[6:]  # type: ignore[assignment]
    made = [i for run in single_runs for i in run]
    made += [i for run in block_runs for block in run for i in block]
    assert len(made) == len(set(made)) == 6 * 30 + 6 * sum(sizes)
    assert {ids.shard_of(i) for i in made} == {shard}
    for run in single_runs:
        assert run == sorted(run)  # each caller sees its own IDs increase
    for run in block_runs:
        flat = [i for block in run for i in block]
        assert flat == sorted(flat)
        for block in run:
            # A block is one run of consecutive counter values, however the others interleave.
            counters = [(p.ms << 10) | p.sequence for p in map(ids.decompose, block)]
            assert counters == list(range(counters[0], counters[0] + len(block)))
    async with router.begin(shard) as conn:
        await conn.execute(outbox.delete().where(outbox.c.task.like("interleave-%")))


async def test_a_block_past_the_horizon_raises(router: Router) -> None:
    shard = 15
    postgres = _is_postgres(router, shard)
    async with router.begin(shard) as conn:
        await _set_counter(conn, postgres, shard, ids.MAX_COUNTER - 5)
    # The last five counter values are still there to take, up to MAX_ID's time field.
    last_block = await _reserve(router, shard, 5)
    assert last_block[-1] == ids.from_counter(ids.MAX_COUNTER, shard)
    assert ids.decompose(last_block[-1]).timestamp == ids.HORIZON
    with pytest.raises(DBAPIError) as raised:
        await _reserve(router, shard, 1)
    if postgres:
        assert "ID space exhausted" in str(raised.value)
    async with router.begin(shard) as conn:
        await _set_counter(conn, postgres, shard, ids.MAX_COUNTER - 5)
    with pytest.raises(DBAPIError):
        await _reserve(router, shard, 6)  # a block that would straddle the horizon


async def test_a_block_needs_a_positive_size(router: Router) -> None:
    shard = 1
    for bad in (0, -5):
        with pytest.raises(ValueError, match="positive whole number"):
            await _reserve(router, shard, bad)
    # The database function refuses too, for callers that reach it with raw SQL.
    postgres = _is_postgres(router, shard)
    for bad_sql in ("0", "-5", "NULL"):
        if postgres:
            query = f"SELECT {schema_name(shard)}.next_ids({bad_sql})"
        else:
            query = f"SELECT photogram_next_ids({shard}, {bad_sql})"
        # SQLite reports only that the function raised; PostgreSQL passes its message on.
        with pytest.raises(DBAPIError, match="positive" if postgres else "function"):
            await _run(router, shard, query)


async def _run(router: Router, shard: int, query: str) -> None:
    async with router.begin(shard) as conn:
        await conn.exec_driver_sql(query)


async def test_reserved_ids_insert_explicitly_and_server_side(router: Router) -> None:
    """The two bulk paths: explicit IDs from reserve_ids in an executemany, and one
    INSERT … SELECT that converts a block's counter values to IDs in SQL."""
    shard, rows = 2, 3_000
    postgres = _is_postgres(router, shard)
    async with router.begin(shard) as conn:
        block = await reserve_ids(conn, shard, 100)
        await conn.execute(
            insert(outbox), [{"id": i, "task": "explicit", "payload": {}} for i in block]
        )
        if postgres:
            schema = schema_name(shard)
            await conn.exec_driver_sql(
                f"WITH b AS MATERIALIZED (SELECT {schema}.next_ids({rows}) AS first) "
                f"INSERT INTO {schema}.outbox (id, task, payload) "
                f"SELECT {schema}.id_from_counter(b.first + g - 1), 'server', to_jsonb(g) "
                f"FROM b, generate_series(1, {rows}) AS g"
            )
        else:
            await conn.exec_driver_sql(
                "WITH RECURSIVE "
                f"b AS MATERIALIZED (SELECT photogram_next_ids({shard}, {rows}) AS first), "
                f"g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows}) "
                "INSERT INTO outbox (id, task, payload) "
                "SELECT (((b.first + n - 1) >> 10) << 23) | "
                f"({shard} << 10) | ((b.first + n - 1) & 1023), 'server', n FROM b, g"
            )
        server = [
            int(i)
            for i in await conn.scalars(
                select(outbox.c.id).where(outbox.c.task == "server").order_by(outbox.c.id)
            )
        ]
        await conn.execute(outbox.delete().where(outbox.c.task.in_(["explicit", "server"])))
    assert len(server) == rows
    assert server[0] > block[-1]
    counters = [(p.ms << 10) | p.sequence for p in map(ids.decompose, server)]
    assert counters == list(range(counters[0], counters[0] + rows))
