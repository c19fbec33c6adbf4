"""Schema migrations for the global database and every logical shard schema.

Each target (the global database; each shard schema on PostgreSQL; the one
shared schema of a SQLite file) records its own version in its own table, in
the same transaction as the DDL that reached it, so a migration interrupted
anywhere leaves every schema at a version it really has.

A new target is created straight at the head version from the table
definitions in ``metadata.py`` and stamped (what Alembic recommends for a fresh
database); an existing one applies each later ``Migration`` in order. A
released migration never changes: a schema change is a table definition edit
plus a new entry in ``GLOBAL_UPGRADES`` or ``SHARD_UPGRADES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Insert, MetaData, Table, insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from photogram.concurrency import gather
from photogram.db.engines import WRITE_OPTION, Engines
from photogram.db.ids import SQLITE_COUNTER_TABLE, pg_next_id_ddl, pg_next_ids_ddl
from photogram.db.metadata import (
    OUTBOX_STATE_COLUMNS,
    SHARD_SCHEMA,
    cluster,
    global_metadata,
    global_migrations,
    outbox,
    shard_map,
    shard_metadata,
    shard_migrations,
)
from photogram.db.router import connect_or_explain
from photogram.db.shardmap import (
    ShardMap,
    check_placement,
    initial_placement,
    read_shard_map,
    schema_name,
)
from photogram.errors import ClusterMismatchError
from photogram.settings import Settings


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    #: Runs inside the target's transaction, with the shard schema already translated.
    upgrade: Callable[[Connection], None]


BASELINE = 1


def create_tables(metadata: MetaData, *names: str) -> Callable[[Connection], None]:
    """An upgrade that adds whole new tables (with their indexes) to an existing target."""

    def upgrade(sync: Connection) -> None:
        prefix = f"{metadata.schema}." if metadata.schema else ""
        tables = [metadata.tables[prefix + name] for name in names]
        metadata.create_all(sync, tables=tables)
        if metadata is shard_metadata and sync.dialect.name == "postgresql":
            _default_ids(
                sync, sync.get_execution_options()["schema_translate_map"][SHARD_SCHEMA], tables
            )

    return upgrade


def add_next_ids(sync: Connection) -> None:
    """Block ID reservation (``next_ids``) for a shard schema made before it had it."""
    # SQLite's block function is registered on every connection: nothing to store.
    if sync.dialect.name != "postgresql":
        return
    schema = sync.get_execution_options()["schema_translate_map"][SHARD_SCHEMA]
    shard = int(schema.removeprefix("s"))
    if schema_name(shard) != schema:
        raise ValueError(f"not a shard schema: {schema!r}")
    for ddl in pg_next_ids_ddl(schema, shard):
        sync.exec_driver_sql(ddl)


def add_outbox_states(sync: Connection) -> None:
    """The outbox columns a broker and dead tasks need, on a shard made before them."""
    schema = sync.get_execution_options()["schema_translate_map"][SHARD_SCHEMA]
    prefix = f"{schema}." if schema else ""
    present = {c["name"] for c in inspect(sync).get_columns("outbox", schema=schema)}
    for name in OUTBOX_STATE_COLUMNS:
        if name in present:
            continue
        column = outbox.c[name]
        sync.exec_driver_sql(
            f"ALTER TABLE {prefix}outbox ADD COLUMN {name} {column.type.compile(sync.dialect)}"
        )


# Later schema changes, in version order (the first is version 2).
GLOBAL_UPGRADES: Sequence[Migration] = (
    Migration(
        2,
        "accounts directory and OAuth",
        create_tables(
            global_metadata, "usernames", "emails", "oauth_apps", "oauth_tokens", "oauth_codes"
        ),
    ),
    Migration(3, "accounts not fanned out", create_tables(global_metadata, "big_accounts")),
    Migration(
        4,
        "media store migration",
        create_tables(
            global_metadata,
            "media_migration",
            "media_migration_progress",
            "media_migration_quarantine",
        ),
    ),
    Migration(5, "feature gates", create_tables(global_metadata, "gates")),
    Migration(6, "shard moves", create_tables(global_metadata, "shard_moves")),
)
SHARD_UPGRADES: Sequence[Migration] = (
    Migration(
        2,
        "accounts and the follow graph",
        create_tables(
            shard_metadata,
            "accounts",
            "follows",
            "followers",
            "follow_requests_out",
            "follow_requests_in",
            "blocks",
            "blocked_by",
            "mutes",
        ),
    ),
    Migration(3, "media", create_tables(shard_metadata, "media_attachments", "media_objects")),
    Migration(
        4,
        "posts, likes, bookmarks and notifications",
        create_tables(
            shard_metadata,
            "statuses",
            "status_tags",
            "status_mentions",
            "favourites",
            "account_favourites",
            "bookmarks",
            "notifications",
            "idempotency_keys",
        ),
    ),
    Migration(5, "block ID reservation", add_next_ids),
    Migration(6, "task states", add_outbox_states),
)


def head(upgrades: Sequence[Migration]) -> int:
    return upgrades[-1].version if upgrades else BASELINE


@dataclass
class InitReport:
    logical_shards: int
    map_version: int
    created_cluster: bool
    #: database name -> {"created": n, "upgraded": n, "current": n}
    schemas: dict[str, dict[str, int]] = field(default_factory=dict)


async def _version(conn: AsyncConnection, table: str, schema: str | None) -> int | None:
    def probe(sync: Connection) -> bool:
        return inspect(sync).has_table(table, schema=schema)

    if not await conn.run_sync(probe):
        return None
    name = f"{schema}.{table}" if schema else table
    return int(await conn.scalar(text(f"SELECT max(version) FROM {name}")) or 0)


async def _apply(
    conn: AsyncConnection,
    current: int | None,
    upgrades: Sequence[Migration],
    create: Callable[[Connection], None],
    record: Callable[[int, str], Insert],
) -> str:
    """Bring one target to head inside the caller's transaction; 'created'/'upgraded'/'current'."""
    if current is None:
        await conn.run_sync(create)
        await conn.execute(record(head(upgrades), "baseline"))
        return "created"
    pending = [m for m in upgrades if m.version > current]
    for migration in pending:
        await conn.run_sync(migration.upgrade)
        await conn.execute(record(migration.version, migration.name))
    return "upgraded" if pending else "current"


async def migrate_global(engine: AsyncEngine) -> str:
    async with connect_or_explain(engine, "global") as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            current = await _version(conn, global_migrations.name, None)
            return await _apply(
                conn,
                current,
                GLOBAL_UPGRADES,
                lambda sync: global_metadata.create_all(sync),
                lambda v, n: insert(global_migrations).values(version=v, name=n),
            )


def _create_shard_tables(sync: Connection, schema: str | None, shard: int | None) -> None:
    if schema is not None and shard is not None:
        for ddl in pg_next_id_ddl(schema, shard):
            sync.exec_driver_sql(ddl)
    shard_metadata.create_all(sync)
    if schema is None:
        sync.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {SQLITE_COUNTER_TABLE} "
            "(shard INTEGER PRIMARY KEY, counter INTEGER NOT NULL)"
        )
        return
    _default_ids(sync, schema, shard_metadata.sorted_tables)


def _default_ids(sync: Connection, schema: str, tables: Sequence[Table]) -> None:
    # Raw SQL and bulk INSERT … SELECT get IDs too: the column default calls this
    # schema's own next_id(), bound by OID when the default is set.
    for table in tables:
        if "id" in table.c and table.c.id.info.get("shard_id"):
            sync.exec_driver_sql(
                f"ALTER TABLE {schema}.{table.name} ALTER COLUMN id SET DEFAULT {schema}.next_id()"
            )


async def migrate_shard_schema(conn: AsyncConnection, shard: int | None) -> str:
    """Bring one logical shard's schema to head (PostgreSQL), or a SQLite file's shared schema
    when ``shard`` is None. Runs in its own transaction on ``conn``."""
    schema = None if shard is None else schema_name(shard)
    await conn.execution_options(
        schema_translate_map={SHARD_SCHEMA: schema}, **{WRITE_OPTION: True}
    )
    async with conn.begin():
        if schema is not None:
            await conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        current = await _version(conn, shard_migrations.name, schema)
        return await _apply(
            conn,
            current,
            SHARD_UPGRADES,
            lambda sync: _create_shard_tables(sync, schema, shard),
            lambda v, n: insert(shard_migrations).values(version=v, name=n),
        )


async def ensure_cluster(
    engines: Engines, settings: Settings, requested_shards: int | None
) -> tuple[ShardMap, bool]:
    """The cluster row and shard map, creating them on first run; (map, created)."""
    async with connect_or_explain(engines.global_engine, "global") as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            existing = await conn.scalar(select(cluster.c.logical_shards))
            created = existing is None
            if created:
                count = requested_shards or settings.logical_shards
                placement = initial_placement(count, list(engines.shard_engines))
                await conn.execute(
                    insert(cluster).values(id=1, logical_shards=count, map_version=1)
                )
                await conn.execute(
                    insert(shard_map),
                    [
                        {"shard": k, "database": db, "since_version": 1}
                        for k, db in enumerate(placement)
                    ],
                )
            elif requested_shards is not None and requested_shards != existing:
                raise ClusterMismatchError(
                    f"the cluster was initialised with {existing} logical shards; "
                    f"--shards {requested_shards} cannot change that"
                )
            shard_map_now = await read_shard_map(conn)
    assert shard_map_now is not None
    return shard_map_now, created


async def init_cluster(
    settings: Settings,
    requested_shards: int | None = None,
    on_schema: Callable[[str, int | None, str], None] | None = None,
) -> InitReport:
    """Create or upgrade the global database and every shard schema. Idempotent."""
    engines = Engines(settings)
    try:
        await migrate_global(engines.global_engine)
        shard_map_now, created = await ensure_cluster(engines, settings, requested_shards)
        check_placement(shard_map_now, engines.shard_engines)
        report = InitReport(shard_map_now.logical_shards, shard_map_now.version, created)

        async def one_database(name: str, shards: Sequence[int]) -> None:
            engine = engines.shard_engines[name]
            counts = report.schemas.setdefault(name, {"created": 0, "upgraded": 0, "current": 0})
            targets: Sequence[int | None] = [None] if engine.dialect.name == "sqlite" else shards
            async with connect_or_explain(engine, name) as conn:
                for shard in targets:
                    outcome = await migrate_shard_schema(conn, shard)
                    counts[outcome] += 1
                    if on_schema is not None:
                        on_schema(name, shard, outcome)

        # A SQLite file is one schema however many names point at it: migrate it once.
        seen: set[str] = set()
        jobs = []
        for name, shards in shard_map_now.by_database.items():
            url = engines.dsns[name]
            if url.startswith("sqlite") and url in seen:
                continue
            seen.add(url)
            jobs.append(one_database(name, shards))
        await gather(*jobs)
        return report
    finally:
        await engines.dispose()
