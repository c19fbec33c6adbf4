from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from photogram.db import ids
from photogram.db.ids import next_id
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
