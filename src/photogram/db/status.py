"""What `photogram shards status` reports: placement, reachability, schemas and row counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from photogram.concurrency import gather
from photogram.db.metadata import shard_data_tables
from photogram.db.router import Router, connect_or_explain, describe_connect_error
from photogram.db.shardmap import schema_name
from photogram.errors import DatabaseUnavailableError
from photogram.settings import redact_dsn


@dataclass
class DatabaseStatus:
    name: str
    url: str
    logical_shards: int
    shard_ranges: str
    reachable: bool = True
    error: str | None = None
    missing_schemas: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def ranges(shards: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts: list[str] = []
    start = prev = None
    for shard in shards:
        if prev is not None and shard == prev + 1:
            prev = shard
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if start != prev else f"{start}")
        start = prev = shard
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ",".join(parts)


async def _database_status(router: Router, name: str, shards: Sequence[int]) -> DatabaseStatus:
    engine = router.engines.shard_engines[name]
    status = DatabaseStatus(name, redact_dsn(str(engine.url)), len(shards), ranges(shards))
    tables = [t.name for t in shard_data_tables()]
    try:
        async with connect_or_explain(engine, name) as conn:
            if engine.dialect.name == "sqlite":
                present: Sequence[int] = shards
                counts = [
                    f"SELECT '{t}' AS tbl, count(*) AS n FROM {t}" for t in tables
                ]  # identifiers from our own metadata, never from input
            else:
                names = [schema_name(s) for s in shards]
                found = set(
                    (
                        await conn.execute(
                            text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"),
                            {"names": names},
                        )
                    ).scalars()
                )
                status.missing_schemas = [n for n in names if n not in found]
                present = [s for s in shards if schema_name(s) in found]
                counts = [
                    f"SELECT '{t}' AS tbl, count(*) AS n FROM {schema_name(s)}.{t}"
                    for s in present
                    for t in tables
                ]
            status.rows = dict.fromkeys(tables, 0)
            if present and counts:
                query = " UNION ALL ".join(counts)
                for row in (await conn.execute(text(query))).all():
                    status.rows[row[0]] += int(row[1])
    except DatabaseUnavailableError as exc:
        status.reachable, status.error = False, str(exc)
    except DBAPIError as exc:
        status.error = f"database {name!r}: {describe_connect_error(exc)}"
    return status


async def cluster_status(router: Router) -> dict[str, Any]:
    by_db = router.shard_map.by_database
    databases = await gather(
        *(
            _database_status(router, name, by_db.get(name, []))
            for name in router.engines.shard_engines
        )
    )
    problems = [d.error for d in databases if d.error] + [
        f"database {d.name!r} lacks schemas {', '.join(d.missing_schemas[:5])}"
        + (f" and {len(d.missing_schemas) - 5} more" if len(d.missing_schemas) > 5 else "")
        + ": run `photogram init`"
        for d in databases
        if d.missing_schemas
    ]
    return {
        "map_version": router.shard_map.version,
        "logical_shards": router.logical_shards,
        "databases": [asdict(d) | {"total_rows": d.total_rows} for d in databases],
        "problems": problems,
    }
