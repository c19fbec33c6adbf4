"""The versioned shard map: which physical database holds each logical shard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.metadata import cluster, shard_map, shard_moves
from photogram.errors import ClusterMismatchError


def schema_name(shard: int) -> str:
    """The PostgreSQL schema of a logical shard: ``s0000`` … ``s8191``."""
    return f"s{shard:04d}"


@dataclass(frozen=True)
class ShardMap:
    version: int
    #: placement[k] is the name of the physical database holding logical shard k.
    placement: tuple[str, ...]
    #: Shards being moved whose writes wait for the move to switch the map.
    frozen: frozenset[int] = frozenset()

    @property
    def logical_shards(self) -> int:
        return len(self.placement)

    def database_of(self, shard: int) -> str:
        if not 0 <= shard < len(self.placement):
            raise ValueError(f"logical shard {shard} does not exist (0-{len(self.placement) - 1})")
        return self.placement[shard]

    @cached_property
    def by_database(self) -> Mapping[str, Sequence[int]]:
        grouped: dict[str, list[int]] = {}
        for shard, database in enumerate(self.placement):
            grouped.setdefault(database, []).append(shard)
        return grouped


def check_placement(shard_map: ShardMap, known: Iterable[str]) -> None:
    """ClusterMismatchError unless every database the map names is one settings know."""
    unknown = sorted(set(shard_map.placement) - set(known))
    if unknown:
        raise ClusterMismatchError(
            f"the shard map places shards on {', '.join(map(repr, unknown))}, "
            "which settings do not name under `databases`"
        )


def initial_placement(logical_shards: int, databases: Sequence[str]) -> tuple[str, ...]:
    """Contiguous, even blocks of logical shards per database, in the order settings name them.

    Blocks rather than round-robin: moving a block's tail to a new server later keeps
    each server's shards contiguous and the map easy to read.
    """
    count = len(databases)
    return tuple(databases[shard * count // logical_shards] for shard in range(logical_shards))


async def read_map_version(conn: AsyncConnection) -> int | None:
    """The current map version, or None where the global database is not initialised."""
    try:
        return await conn.scalar(select(cluster.c.map_version).where(cluster.c.id == 1))
    except DBAPIError as exc:
        if _missing_table(exc):
            await conn.rollback()
            return None
        raise


async def read_shard_map(conn: AsyncConnection) -> ShardMap | None:
    version = await read_map_version(conn)
    if version is None:
        return None
    rows = (await conn.execute(select(shard_map.c.shard, shard_map.c.database))).all()
    placement = [""] * len(rows)
    for shard, database in rows:
        placement[shard] = database
    try:
        frozen = frozenset(
            await conn.scalars(select(shard_moves.c.shard).where(shard_moves.c.phase == "frozen"))
        )
    except DBAPIError as exc:  # a global database not yet upgraded to shard moves
        if not _missing_table(exc):
            raise
        await conn.rollback()
        frozen = frozenset()
    return ShardMap(version=version, placement=tuple(placement), frozen=frozen)


def _missing_table(exc: DBAPIError) -> bool:
    # PostgreSQL says undefined_table by SQLSTATE; SQLite has only its message.
    return getattr(exc.orig, "sqlstate", None) == "42P01" or "no such table" in str(exc.orig)
