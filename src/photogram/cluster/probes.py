"""Whether a part answers, each asked in its own protocol: a port that accepts connections
proves little (PgBouncer accepts before its server is up, nginx before its upstreams)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

import asyncpg  # type: ignore[import-untyped]

from photogram.cluster.layout import HOST, SHARD_DATABASE, Layout, Part
from photogram.concurrency import gather

#: How long one probe may take before the part counts as not answering.
PROBE_SECONDS = 3.0


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def http_status(port: int, path: str) -> int:
    """The status code of ``GET path`` on a loopback port."""
    line = await _exchange(port, f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


async def postgres_answers(port: int, database: str) -> bool:
    conn = await asyncpg.connect(
        host=HOST, port=port, user="postgres", database=database, timeout=PROBE_SECONDS
    )
    try:
        await conn.execute("SELECT 1")  # the simple protocol: nothing prepared, fine for PgBouncer
    finally:
        await conn.close()
    return True


def _rabbitmq_answers(url: str) -> bool:
    from kombu import Connection

    with Connection(url, connect_timeout=PROBE_SECONDS) as conn:
        conn.ensure_connection(max_retries=1)
    return True


def _ask(layout: Layout, part: Part) -> Awaitable[bool]:
    async def memcached() -> bool:
        return (await _exchange(part.port, b"version\r\n")).startswith(b"VERSION ")

    async def redis() -> bool:
        return (await _exchange(part.port, b"PING\r\n")).startswith(b"+PONG")

    async def http(path: str) -> bool:
        return await http_status(part.port, path) == 200

    match part.kind:
        case "postgresql":
            return postgres_answers(part.port, "postgres")
        case "pgbouncer":
            return postgres_answers(part.port, SHARD_DATABASE)
        case "memcached":
            return memcached()
        case "redis":
            return redis()
        case "rabbitmq":
            return asyncio.to_thread(_rabbitmq_answers, layout.broker_url)
        case "worker":
            return http("/metrics")
        case _:  # app servers, and nginx in front of them: ready, databases and all
            return http("/readyz")


async def answers(layout: Layout, part: Part) -> bool:
    """Whether ``part`` answers now, as its clients would ask it."""
    try:
        return await asyncio.wait_for(_ask(layout, part), PROBE_SECONDS)
    except Exception:  # any failure to answer is "does not answer"
        return False


async def answering(layout: Layout, parts: list[Part]) -> dict[str, bool]:
    """``answers`` for every part at once."""
    results = await gather(*(answers(layout, part) for part in parts))
    return {part.name: result for part, result in zip(parts, results, strict=True)}
