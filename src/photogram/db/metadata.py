"""Table definitions: the few global tables and the tables every logical shard has.

Sharded tables belong to ``shard_metadata``, whose schema is the symbolic name
``SHARD_SCHEMA``. Nothing ever sets a real schema on these Table objects: the
router renders the shard's schema into each statement with SQLAlchemy's
``schema_translate_map`` (``s0042`` on PostgreSQL, none on SQLite).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

SHARD_SCHEMA = "shard"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSONB(), "postgresql")

global_metadata = MetaData(naming_convention=NAMING)
shard_metadata = MetaData(schema=SHARD_SCHEMA, naming_convention=NAMING)


def shard_id_column() -> Column[int]:
    """The primary key of a sharded table: a 64-bit ID made by the shard's ``next_id()``."""
    return Column("id", BigInteger, primary_key=True, autoincrement=False, info={"shard_id": True})


def created_at_column() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


# --- global (unsharded) ----------------------------------------------------------------------

# One row: what `photogram init` fixed for this cluster.
cluster = Table(
    "cluster",
    global_metadata,
    Column("id", Integer, primary_key=True),
    Column("logical_shards", Integer, nullable=False),
    # Raised on every placement change; app servers poll it to know when to re-read the map.
    Column("map_version", BigInteger, nullable=False),
    created_at_column(),
)

# Logical shard -> physical database name, one row per logical shard.
shard_map = Table(
    "shard_map",
    global_metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("database", String(64), nullable=False),
    # The map_version at which this shard got its current placement.
    Column("since_version", BigInteger, nullable=False),
)


def migrations_table(name: str, metadata: MetaData) -> Table:
    """Where one migration target records the versions it has reached."""
    return Table(
        name,
        metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("name", String(200), nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


global_migrations = migrations_table("global_migrations", global_metadata)

# --- per logical shard -----------------------------------------------------------------------

shard_migrations = migrations_table("shard_migrations", shard_metadata)

# Work to do after a commit, written in the same transaction as the change that needs it,
# so a broker outage delays work and never loses it.
outbox = Table(
    "outbox",
    shard_metadata,
    shard_id_column(),
    Column("task", String(200), nullable=False),
    Column("payload", Json, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("done_at", DateTime(timezone=True)),
    created_at_column(),
    Index(
        "ix_outbox_pending",
        "available_at",
        postgresql_where=text("done_at IS NULL"),
        sqlite_where=text("done_at IS NULL"),
    ),
)


def shard_data_tables() -> list[Table]:
    """The tables that hold a shard's data (for row counts and shard moves)."""
    return [t for t in shard_metadata.sorted_tables if t is not shard_migrations]
