"""A hot post under a thundering herd: memcached with leases against a plain look-aside cache.

One post row in PostgreSQL. ``--readers`` asyncio tasks read it through the cache in a
closed loop (each starts its next read when the last returns). A writer updates the row
(its favourites count) and then invalidates its key, every ``--interval`` seconds. The
run takes ``--seconds`` for each side, one side after the other, in one process, against
one memcached:

* ``leases``: ``MemcachedLeaseCache.read_through``. A miss hands one reader the lease
  (``mg … N``), the rest wait and re-read, and the fill carries the lease's CAS value.
* ``plain``: the classic look-aside cache on the same client and server. It does
  ``mg`` without a lease, every reader that misses queries the database, and every one
  of them sets the key (``ms`` without CAS).

For each side the figures are: the database queries per second (the mean, and the peak
over any one second), the read latency (p50 and p99), the database queries per
invalidation, and how many invalidation windows ended with a stale value in the cache
(a fill that read the row before the write and landed after its invalidation). The
database is a scratch one, dropped at the end. memcached is a process of the script's
own unless ``--memcached`` names one.

    .venv/bin/python bench/herd.py [--seconds 30] [--readers 200] [--interval 0.1]
        [--dsn postgresql://...] [--memcached host:port] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import asyncpg
from meta_memcache_socket import RequestFlags, build_meta_set
from prometheus_client import REGISTRY

from photogram.cache import MemcachedLeaseCache, status_key
from photogram.cache.base import Loader, decode, encode
from photogram.cache.memcached import VALUE_FLAG

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
HOT = 1_000_001
KEY = status_key(HOT)
POOL = 10  # photogram's default database_pool_size


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PlainLookAside(MemcachedLeaseCache):
    """Look-aside without leases: every miss loads, and every load sets, unconditionally."""

    async def read_through(
        self, keys: Any, loader: Loader, *, ttl: int | None = None
    ) -> dict[str, Any]:
        wanted = list(dict.fromkeys(keys))
        lookups = await self.get_many(wanted, lease=False)
        found = {k: decode(v.value) for k, v in lookups.items() if v.value is not None}
        missing = [key for key in wanted if key not in found]
        if missing:
            loaded = await loader(missing)
            found.update({key: loaded.get(key) for key in missing})
            by_server: dict[str, list[bytes]] = {}
            for key in missing:
                server = self.server_for(key)
                if server is None:
                    continue
                value = encode(found[key])
                flags = RequestFlags(client_flag=VALUE_FLAG, cache_ttl=ttl or self.ttl_seconds)
                by_server.setdefault(server, []).append(
                    build_meta_set(self._wire(key), len(value), flags) + value + b"\r\n"
                )
            for server, commands in by_server.items():
                await self._exchange(self._servers[server], b"".join(commands), len(commands))
        return {key: found[key] for key in wanted if found.get(key) is not None}


def fills() -> float:
    return REGISTRY.get_sample_value("photogram_cache_fills_total", {"dataset": "status"}) or 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_side(
    name: str,
    cache: MemcachedLeaseCache,
    pool: asyncpg.Pool,
    *,
    seconds: float,
    readers: int,
    interval: float,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    latencies: list[float] = []
    query_times: list[float] = []
    #: Database queries by invalidation window (window 0: before the first write).
    per_window: Counter[int] = Counter()
    window = 0
    stale_windows = 0
    invalidations = 0

    async def load(keys: list[str]) -> Mapping[str, Any]:
        query_times.append(loop.time())
        per_window[window] += 1
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, caption, favourites_count FROM statuses WHERE id = ANY($1::bigint[])",
                [int(key.rpartition(":")[2]) for key in keys],
            )
        return {status_key(row["id"]): dict(row) for row in rows}

    async def reader() -> None:
        while not stop.is_set():
            started = loop.time()
            got = await cache.read_through([KEY], load)
            latencies.append(loop.time() - started)
            assert KEY in got

    async def writer() -> None:
        nonlocal window, stale_windows, invalidations
        # On a fixed schedule, not `interval` after the last write finished: a busy loop
        # would otherwise stretch the interval and flatter both sides.
        next_write = loop.time()
        while not stop.is_set():
            next_write += interval
            await asyncio.sleep(max(0.0, next_write - loop.time()))
            # Before the next write: is what the cache holds what the database holds?
            cached = (await cache.get_many([KEY], lease=False))[KEY]
            async with pool.acquire() as conn:
                current = await conn.fetchval(
                    "SELECT favourites_count FROM statuses WHERE id = $1", HOT
                )
                if cached.value is not None and decode(cached.value)["favourites_count"] != current:
                    stale_windows += 1
                await conn.execute(
                    "UPDATE statuses SET favourites_count = favourites_count + 1 WHERE id = $1",
                    HOT,
                )
            window += 1
            await cache.invalidate([KEY])
            invalidations += 1

    await cache.invalidate([KEY])
    fills_before = fills()
    log(f"{name}: {readers} readers, a write every {interval * 1000:.0f} ms, {seconds:.0f} s")
    began = loop.time()
    tasks = [asyncio.create_task(reader()) for _ in range(readers)]
    tasks.append(asyncio.create_task(writer()))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = loop.time() - began

    seconds_buckets = Counter(int((t - began) * 10) for t in query_times)  # 100 ms buckets
    peak = max(
        (sum(seconds_buckets[b + i] for i in range(10)) for b in range(int(elapsed * 10))),
        default=0,
    )
    # Complete windows only: the last one was cut short by the end of the run.
    windows = [per_window[w] for w in range(1, window)]
    return {
        "reads": len(latencies),
        "reads_per_s": len(latencies) / elapsed,
        "db_queries": len(query_times),
        "db_queries_per_s": len(query_times) / elapsed,
        "db_queries_peak_per_s": peak,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
        "invalidations": invalidations,
        "db_queries_per_invalidation": statistics.mean(windows) if windows else 0.0,
        "max_db_queries_in_a_window": max(windows, default=0),
        "windows": len(windows),
        "windows_with_exactly_one_query": sum(1 for n in windows if n == 1),
        "fills": fills() - fills_before,
        "stale_windows": stale_windows,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def memcached_server(address: str | None) -> Iterator[str]:
    if address:
        yield address
        return
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    port = _free_port()
    command = [binary, "-p", str(port), "-U", "0", "-l", "127.0.0.1", "-m", "64"]
    if os.geteuid() == 0:
        command += ["-u", "root"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.025)
        log(f"memcached on 127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def make_cache(kind: type[MemcachedLeaseCache], address: str) -> MemcachedLeaseCache:
    return kind(
        [address],
        prefix=f"bench{secrets.token_hex(3)}:",
        lease_ttl_seconds=5,
        lease_wait_seconds=0.5,
        ttl_seconds=3600,
        failover_ttl_seconds=10,
        retry_seconds=10.0,
        timeout_seconds=2.0,
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    scratch = f"bench_herd_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{scratch}"')
        log(f"scratch database {scratch}")
        base, _, _ = args.dsn.rpartition("/")
        pool = await asyncpg.create_pool(f"{base}/{scratch}", min_size=POOL, max_size=POOL)
        assert pool is not None
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    "CREATE TABLE statuses (id bigint PRIMARY KEY, caption text NOT NULL,"
                    " favourites_count integer NOT NULL)"
                )
                await conn.execute(
                    "INSERT INTO statuses VALUES ($1, 'a photo everyone looks at', 0)", HOT
                )
            sides: dict[str, Any] = {}
            with memcached_server(args.memcached) as address:
                for name, kind in (("leases", MemcachedLeaseCache), ("plain", PlainLookAside)):
                    cache = make_cache(kind, address)
                    try:
                        sides[name] = await run_side(
                            name,
                            cache,
                            pool,
                            seconds=args.seconds,
                            readers=args.readers,
                            interval=args.interval,
                        )
                    finally:
                        await cache.close()
        finally:
            await pool.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
            log(f"dropped {scratch}")
    finally:
        await admin.close()
    leases, plain = sides["leases"], sides["plain"]
    return {
        "seconds": args.seconds,
        "readers": args.readers,
        "interval_s": args.interval,
        "sides": sides,
        "peak_db_load_cut": plain["db_queries_peak_per_s"]
        / max(leases["db_queries_peak_per_s"], 1),
        "mean_db_load_cut": plain["db_queries_per_s"] / max(leases["db_queries_per_s"], 1e-9),
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['readers']} readers, a write every {result['interval_s'] * 1000:.0f} ms, "
        f"{result['seconds']:.0f} s a side",
        "",
        f"{'side':8} {'reads/s':>9} {'db q/s':>8} {'peak q/s':>9} {'p50':>8} {'p99':>8} "
        f"{'q/inval':>8} {'=1 q':>6} {'fills':>6} {'stale':>6}",
    ]
    for name, side in result["sides"].items():
        lines.append(
            f"{name:8} {side['reads_per_s']:9.0f} {side['db_queries_per_s']:8.1f} "
            f"{side['db_queries_peak_per_s']:9d} {side['p50_ms']:6.2f}ms {side['p99_ms']:6.2f}ms "
            f"{side['db_queries_per_invalidation']:8.2f} "
            f"{side['windows_with_exactly_one_query']:4d}/{side['windows']:<4d}"
            f"{side['fills']:6.0f} {side['stale_windows']:6d}"
        )
    lines += [
        "",
        f"peak database load cut by leases: {result['peak_db_load_cut']:.1f}x "
        f"(mean {result['mean_db_load_cut']:.1f}x)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each side (30)")
    parser.add_argument("--readers", type=int, default=200, help="concurrent readers (200)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between writes")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"server to use ({DEFAULT_DSN})")
    parser.add_argument("--memcached", help="host:port of a memcached to use (default: own)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.readers < 1 or args.interval <= 0:
        parser.error("--seconds, --readers and --interval must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
