"""The migration runner: fresh schemas at head, older ones upgraded in place."""

from __future__ import annotations

from sqlalchemy import inspect, text

from photogram.db.ids import from_counter, reserve_ids, shard_of
from photogram.db.metadata import OUTBOX_STATE_COLUMNS, global_metadata, shard_metadata
from photogram.db.migrations import GLOBAL_UPGRADES, SHARD_UPGRADES, head, init_cluster
from photogram.db.router import Router
from photogram.db.shardmap import schema_name
from tests.conftest import MakeSettings

V2_GLOBAL = ["usernames", "emails", "oauth_apps", "oauth_tokens", "oauth_codes"]
V2_SHARD = [
    "accounts",
    "follows",
    "followers",
    "follow_requests_out",
    "follow_requests_in",
    "blocks",
    "blocked_by",
    "mutes",
]


async def _tables(conn: object, schema: str | None) -> set[str]:
    return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names(schema=schema)))  # type: ignore[attr-defined]


async def test_an_older_schema_is_upgraded_to_head(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    await init_cluster(settings, 8)
    router = await Router.open(settings)
    postgres = router.engine_for(0).dialect.name == "postgresql"
    shard = 5
    schema = schema_name(shard) if postgres else None
    prefix = f"{schema}." if schema else ""
    try:
        # Take shard 5 (and the global database) back to version 1 by hand.
        async with router.begin(shard) as conn:
            for table in V2_SHARD:
                await conn.exec_driver_sql(f"DROP TABLE {prefix}{table}")
            for column in OUTBOX_STATE_COLUMNS:
                await conn.exec_driver_sql(f"ALTER TABLE {prefix}outbox DROP COLUMN {column}")
            await conn.exec_driver_sql(f"DELETE FROM {prefix}shard_migrations WHERE version > 1")
        async with router.global_begin() as conn:
            for table in [*V2_GLOBAL, "big_accounts"]:
                await conn.exec_driver_sql(f"DROP TABLE {table}")
            await conn.exec_driver_sql("DELETE FROM global_migrations WHERE version > 1")
    finally:
        await router.close()

    report = await init_cluster(settings)
    upgraded = sum(counts["upgraded"] for counts in report.schemas.values())
    assert upgraded == 1

    router = await Router.open(settings)
    try:
        async with router.connect(shard) as conn:
            assert set(V2_SHARD) <= await _tables(conn, schema)
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("outbox", schema=schema)}
            )
            assert set(OUTBOX_STATE_COLUMNS) <= columns
            version = await conn.scalar(text(f"SELECT max(version) FROM {prefix}shard_migrations"))
            assert version == head(SHARD_UPGRADES)
            if postgres:
                # Tables added by an upgrade get the schema's ID default like the others.
                new_id = await conn.scalar(
                    text(
                        f"INSERT INTO {prefix}mutes (account_id, target_id) VALUES (1, 2) "
                        "RETURNING id"
                    )
                )
                assert (int(new_id) >> 10) & 0x1FFF == shard
                await conn.rollback()
        async with router.global_connect() as conn:
            assert {*V2_GLOBAL, "big_accounts", "media_migration"} <= await _tables(conn, None)
            version = await conn.scalar(text("SELECT max(version) FROM global_migrations"))
            assert version == head(GLOBAL_UPGRADES)
    finally:
        await router.close()


def test_head_tables_are_exactly_baseline_plus_upgrades() -> None:
    """What a fresh schema gets (metadata) equals what an upgraded one gets (migrations)."""
    v4_global = {"media_migration", "media_migration_progress", "media_migration_quarantine"}
    v5_global = {"gates", "shard_moves"}
    assert set(V2_GLOBAL) | v4_global | v5_global | {
        "big_accounts",
        "cluster",
        "shard_map",
        "global_migrations",
    } == set(global_metadata.tables)
    v3_shard = ["media_attachments", "media_objects"]
    v4_shard = [
        "statuses",
        "status_tags",
        "status_mentions",
        "favourites",
        "account_favourites",
        "bookmarks",
        "notifications",
        "idempotency_keys",
    ]
    upgraded = [*V2_SHARD, *v3_shard, *v4_shard, "outbox", "shard_migrations"]
    assert {f"shard.{t}" for t in upgraded} == set(shard_metadata.tables)


async def test_an_older_shard_schema_gains_block_reservation(make_settings: MakeSettings) -> None:
    """A schema from before ``next_ids`` (version 5) gets it from the upgrade."""
    settings = await make_settings()
    await init_cluster(settings, 4)
    router = await Router.open(settings)
    postgres = router.engine_for(0).dialect.name == "postgresql"
    shard = 2
    schema = schema_name(shard)
    prefix = f"{schema}." if postgres else ""
    try:
        async with router.begin(shard) as conn:
            if postgres:
                await conn.exec_driver_sql(f"DROP FUNCTION {schema}.next_ids(integer)")
                await conn.exec_driver_sql(f"DROP FUNCTION {schema}.id_from_counter(bigint)")
            await conn.exec_driver_sql(f"DELETE FROM {prefix}shard_migrations WHERE version >= 5")
    finally:
        await router.close()

    report = await init_cluster(settings)
    assert sum(counts["upgraded"] for counts in report.schemas.values()) == 1

    router = await Router.open(settings)
    try:
        async with router.begin(shard) as conn:
            version = await conn.scalar(text(f"SELECT max(version) FROM {prefix}shard_migrations"))
            assert version == head(SHARD_UPGRADES) >= 5
            block = await reserve_ids(conn, shard, 3)
            assert [shard_of(id_) for id_ in block] == [shard] * 3
            assert block == sorted(set(block))
            if postgres:
                first = await conn.scalar(text(f"SELECT {schema}.next_ids(2)"))
                converted = await conn.scalar(text(f"SELECT {schema}.id_from_counter({first})"))
                assert converted == from_counter(first, shard) > block[-1]
    finally:
        await router.close()
