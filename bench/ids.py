"""What a shard ID costs per insert, compared with a plain ``bigserial``.

Every sharded table takes its primary key from its schema's plpgsql
``next_id()`` (``photogram.db.ids.pg_next_id_ddl``), which locks, bumps a
sequence, reads the clock and unlocks for each row; bulk inserts can instead
reserve a block of IDs with ``next_ids(n)`` (``photogram.db.ids.reserve_ids``),
one lock and one counter write for the whole block. This measures both against
``bigserial`` on two tables of the same post-like shape, in three modes:

* ``request``: how API requests insert. One row a transaction (one INSERT, one
  COMMIT) with the id left to its default, from ``--concurrency`` asyncio tasks
  sharing one SQLAlchemy async engine over asyncpg, until ``--request-rows``
  rows are in. A request inserts one row, so there is no block to reserve.
* ``client``: how bulk paths insert (seeding, imports). SQLAlchemy Core over
  asyncpg, batches of ``executemany`` inserts, one commit a batch, on one
  connection. ``next_id`` leaves the id to its default; ``next_ids`` reserves
  the batch's IDs with one ``reserve_ids`` call and inserts them explicitly.
* ``server``: one ``INSERT … SELECT … FROM generate_series(1, N)``. No client
  or commit cost at all, so the per-row cost shows undiluted. ``next_id``
  leaves the id to its default; ``next_ids`` reserves N IDs once and converts
  ``first + g - 1`` with the schema's inlined ``id_from_counter``.

Runs rotate between the ways of making IDs and each figure is the median of the
repeats, so noise on a shared machine lands on every side alike. Everything
happens in a scratch database that is dropped at the end, also on error.

    .venv/bin/python bench/ids.py [--rows 200000] [--request-rows 20000]
        [--concurrency 8] [--repeats 3] [--batch 1000] [--dsn postgresql://...] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    Table,
    Text,
    func,
    insert,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from photogram.db.ids import SHARD_MASK, SHARD_SHIFT, pg_next_id_ddl, reserve_ids
from photogram.db.metadata import SHARD_SCHEMA
from photogram.db.shardmap import schema_name

SHARD = 7
SCHEMA = schema_name(SHARD)
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
OWNERS = 5_000

metadata = MetaData(schema=SCHEMA)


def _post_table(name: str, id_column: Column[int]) -> Table:
    return Table(
        name,
        metadata,
        id_column,
        Column("owner_id", BigInteger, nullable=False),
        Column("caption", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index(f"ix_{name}_owner_id", "owner_id"),
    )


# BigInteger + primary key + autoincrement renders as BIGSERIAL on PostgreSQL.
serial_posts = _post_table("posts_bigserial", Column("id", BigInteger, primary_key=True))
shard_posts = _post_table(
    "posts_shard_id",
    Column(
        "id",
        BigInteger,
        primary_key=True,
        autoincrement=False,
        server_default=text(f"{SCHEMA}.next_id()"),
    ),
)
TABLES = {"bigserial": serial_posts, "shard_id": shard_posts}
#: How each side makes its IDs, and the table it fills.
KINDS = {"bigserial": serial_posts, "next_id": shard_posts, "next_ids": shard_posts}


class BenchError(RuntimeError):
    pass


@dataclass
class Mode:
    name: str
    description: str
    rows: int
    kinds: tuple[str, ...]
    runs: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def median(self, kind: str) -> float:
        return statistics.median(self.runs[kind])

    def ratio(self, kind: str) -> float:
        return self.median(kind) / self.median("bigserial")

    def as_json(self) -> dict[str, Any]:
        shard_kinds = [k for k in self.kinds if k != "bigserial"]
        return {
            "description": self.description,
            "rows": self.rows,
            "runs_s": {k: [round(t, 4) for t in self.runs[k]] for k in self.kinds},
            "median_s": {k: round(self.median(k), 4) for k in self.kinds},
            "ratio": {k: round(self.ratio(k), 4) for k in shard_kinds},
            "overhead_pct": {k: round((self.ratio(k) - 1) * 100, 2) for k in shard_kinds},
            "extra_us_per_row": {
                k: round((self.median(k) - self.median("bigserial")) / self.rows * 1e6, 3)
                for k in shard_kinds
            },
        }


def make_rows(n: int) -> list[dict[str, Any]]:
    return [{"owner_id": i % OWNERS + 1, "caption": f"photo {i} #sunset #bench"} for i in range(n)]


async def insert_request(
    engine: AsyncEngine, table: Table, rows: list[dict[str, Any]], concurrency: int
) -> None:
    """Each row its own transaction, from ``concurrency`` tasks sharing ``engine``'s pool."""
    pending = iter(rows)  # shared: each task takes the next row; no await between checks

    async def worker() -> None:
        for row in pending:
            async with engine.begin() as conn:
                await conn.execute(insert(table).values(**row))

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def insert_client(
    conn: AsyncConnection, kind: str, rows: list[dict[str, Any]], batch: int
) -> None:
    stmt = insert(KINDS[kind])
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        async with conn.begin():
            if kind == "next_ids":
                block = await reserve_ids(conn, SHARD, len(chunk))
                chunk = [dict(row, id=id_) for row, id_ in zip(chunk, block, strict=True)]
            await conn.execute(stmt, chunk)


async def insert_server(conn: AsyncConnection, kind: str, n: int) -> None:
    table = f"{SCHEMA}.{KINDS[kind].name}"
    values = f"g % {OWNERS} + 1, 'photo ' || g || ' #sunset #bench'"
    series = f"generate_series(1, {int(n)}) AS g"
    if kind == "next_ids":
        # MATERIALIZED: the block is reserved once, never re-run per row of the join.
        sql = (
            f"WITH b AS MATERIALIZED (SELECT {SCHEMA}.next_ids({int(n)}) AS first) "
            f"INSERT INTO {table} (id, owner_id, caption) "
            f"SELECT {SCHEMA}.id_from_counter(b.first + g - 1), {values} FROM b, {series}"
        )
    else:
        sql = f"INSERT INTO {table} (owner_id, caption) SELECT {values} FROM {series}"
    async with conn.begin():
        await conn.execute(text(sql))


async def truncate(conn: AsyncConnection) -> None:
    async with conn.begin():
        names = ", ".join(f"{SCHEMA}.{t.name}" for t in TABLES.values())
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))


async def verify_shard_ids(conn: AsyncConnection, expected: int) -> None:
    async with conn.begin():
        result = await conn.execute(
            text(
                "SELECT count(*), count(DISTINCT id), "
                f"count(*) FILTER (WHERE (id >> {SHARD_SHIFT}) & {SHARD_MASK} <> {SHARD}), "
                "count(*) FILTER (WHERE id <= 0) "
                f"FROM {SCHEMA}.{shard_posts.name}"
            )
        )
        total, distinct, wrong_shard, not_positive = result.one()
    problems = []
    if total != expected:
        problems.append(f"{total} rows instead of {expected}")
    if distinct != total:
        problems.append(f"{total - distinct} repeated IDs")
    if wrong_shard:
        problems.append(f"{wrong_shard} IDs whose shard field is not {SHARD}")
    if not_positive:
        problems.append(f"{not_positive} IDs that are not positive")
    if problems:
        raise BenchError(f"{SCHEMA}.{shard_posts.name}: " + "; ".join(problems))


async def setup(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        for ddl in pg_next_id_ddl(SCHEMA, SHARD):
            await conn.exec_driver_sql(ddl)
        await conn.run_sync(metadata.create_all)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def bench(
    engine: AsyncEngine,
    rows: int,
    request_rows: int,
    concurrency: int,
    repeats: int,
    batch: int,
) -> dict[str, Any]:
    await setup(engine)
    data = make_rows(max(rows, request_rows))
    everything = tuple(KINDS)
    request = Mode(
        "request",
        f"one row a transaction (INSERT + COMMIT), {concurrency} asyncio tasks "
        "sharing one SQLAlchemy async engine (asyncpg)",
        request_rows,
        ("bigserial", "next_id"),
    )
    client = Mode(
        "client",
        f"SQLAlchemy Core + asyncpg, executemany, {batch} rows a commit; "
        "next_ids: one reserve_ids call a batch, explicit IDs",
        rows,
        everything,
    )
    server = Mode(
        "server",
        "one INSERT … SELECT … FROM generate_series(1, N); "
        "next_ids: one next_ids(N), id_from_counter(first + g - 1)",
        rows,
        everything,
    )

    async with engine.connect() as conn:
        # reserve_ids names the shard's schema through the translation, as the router does.
        await conn.execution_options(schema_translate_map={SHARD_SCHEMA: SCHEMA})
        version = await conn.scalar(text("SHOW server_version"))
        await conn.commit()
        # Untimed warm-up: plpgsql compiles next_id() on its first call in a session and
        # asyncpg prepares each statement once per connection; neither belongs in a timing.
        # The request warm-up opens all of the pool's other connections and primes each.
        for table in TABLES.values():
            await insert_request(engine, table, data[: concurrency * 50], concurrency)
        for kind in KINDS:
            await insert_client(conn, kind, data[: batch * 5], batch)
            await insert_server(conn, kind, batch * 5)
        await truncate(conn)

        async def timed(mode: Mode, kind: str, run: Callable[[], Awaitable[None]]) -> None:
            await truncate(conn)
            start = time.perf_counter()
            await run()
            elapsed = time.perf_counter() - start
            mode.runs[kind].append(elapsed)
            log(f"  {mode.name:7} {kind:9} {elapsed:7.3f} s")
            if kind != "bigserial":
                await verify_shard_ids(conn, mode.rows)

        def rotated(kinds: tuple[str, ...], round_: int) -> list[str]:
            # Rotate which side goes first each round so that none always runs straight
            # after another's writes (WAL, dirty pages, autovacuum).
            shift = round_ % len(kinds)
            return list(kinds[shift:] + kinds[:shift])

        for round_ in range(repeats):
            log(f"round {round_ + 1}/{repeats}")
            for kind in rotated(request.kinds, round_):
                await timed(
                    request,
                    kind,
                    partial(insert_request, engine, KINDS[kind], data[:request_rows], concurrency),
                )
            for kind in rotated(client.kinds, round_):
                await timed(client, kind, partial(insert_client, conn, kind, data[:rows], batch))
            for kind in rotated(server.kinds, round_):
                await timed(server, kind, partial(insert_server, conn, kind, rows))

    return {
        "rows": rows,
        "request_rows": request_rows,
        "concurrency": concurrency,
        "repeats": repeats,
        "batch": batch,
        "postgres": version,
        "cpus": os.cpu_count(),
        "modes": {m.name: m.as_json() for m in (request, client, server)},
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"IDs: median of {result['repeats']} rotated runs, "
        f"PostgreSQL {result['postgres']}, {result['cpus']} CPUs",
        "",
        f"{'mode':8} {'rows':>8} {'ids':>9} {'time':>9} {'ratio':>7} "
        f"{'overhead':>9} {'extra/row':>10}",
    ]
    for name, mode in result["modes"].items():
        med = mode["median_s"]
        lines.append(f"{name:8} {mode['rows']:8,} {'bigserial':>9} {med['bigserial']:8.3f}s")
        for kind in mode["ratio"]:
            lines.append(
                f"{'':8} {'':8} {kind:>9} {med[kind]:8.3f}s {mode['ratio'][kind]:7.3f} "
                f"{mode['overhead_pct'][kind]:+8.1f}% {mode['extra_us_per_row'][kind]:7.2f} µs"
            )
    lines.append("")
    for name, mode in result["modes"].items():
        lines.append(f"{name}: {mode['description']}")
        for kind, runs in mode["runs_s"].items():
            lines.append(f"  {kind:9} runs: " + ", ".join(f"{t:.3f}s" for t in runs))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = make_url(args.dsn).set(drivername="postgresql+asyncpg")
    scratch = f"bench_ids_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        log(f"scratch database {scratch}")
        # One pooled connection for setup, truncates, checks and the bulk modes, plus one
        # per request task; no overflow, so the request tasks always reuse warm connections.
        engine = create_async_engine(
            base.set(database=scratch), pool_size=args.concurrency + 1, max_overflow=0
        )
        try:
            return await bench(
                engine, args.rows, args.request_rows, args.concurrency, args.repeats, args.batch
            )
        finally:
            await engine.dispose()
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
            log(f"dropped {scratch}")
    finally:
        await admin.dispose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rows", type=int, default=200_000, help="rows per client/server run (200,000)"
    )
    parser.add_argument(
        "--request-rows", type=int, default=20_000, help="rows per request run (20,000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="concurrent tasks in request mode (8)"
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"server to use ({DEFAULT_DSN})")
    parser.add_argument("--repeats", type=int, default=3, help="runs per table and mode (3)")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per client batch (1,000)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if min(args.rows, args.request_rows, args.concurrency, args.repeats, args.batch) < 1:
        parser.error(
            "--rows, --request-rows, --concurrency, --repeats and --batch must be positive"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = asyncio.run(main_async(args))
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
