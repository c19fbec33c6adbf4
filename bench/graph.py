"""Follow graph throughput: one user follows, then unfollows, thousands of accounts.

The accounts are spread over every logical shard, so each follow writes the follower's
shard and (through the outbox) the followee's. Measured through the HTTP API in process
(the app over ASGI, no sockets), on the embedded default (SQLite) and on a two-database
PostgreSQL cluster, in one run:

* follow and unfollow throughput (requests per second, ``--concurrency`` at once);
* ``GET /api/v1/accounts/relationships`` latency (p50/p99) for 40 IDs a request, while
  the user follows them all.

    .venv/bin/python bench/graph.py [--accounts 5000] [--shards 256] [--concurrency 8]
        [--requests 300] [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import insert

from photogram.app import create_app
from photogram.db.ids import next_id
from photogram.db.metadata import accounts, usernames
from photogram.db.migrations import init_cluster
from photogram.db.router import Router
from photogram.settings import Settings

PASSWORD = "benchmark password"


def _settings(**extra: Any) -> Settings:
    return Settings(
        rate_limit_per_token=10**9,
        rate_limit_per_ip=10**9,
        password_time_cost=1,
        password_memory_kib=8,
        **extra,
    )


@asynccontextmanager
async def embedded() -> AsyncIterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="photogram-bench-") as directory:
        yield _settings(data_dir=Path(directory))


@asynccontextmanager
async def cluster(admin_dsn: str) -> AsyncIterator[Settings]:
    tag = secrets.token_hex(4)
    names = [f"photogram_bench_{tag}_{part}" for part in ("global", "a", "b")]
    base = admin_dsn.rsplit("/", 1)[0]
    conn = await asyncpg.connect(admin_dsn)
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
        yield _settings(
            global_database=f"{base}/{names[0]}",
            databases={"pg_a": f"{base}/{names[1]}", "pg_b": f"{base}/{names[2]}"},
        )
    finally:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def seed_accounts(settings: Settings, count: int) -> list[str]:
    """``count`` accounts, round-robin over every logical shard, written straight to the shards."""
    router = await Router.open(settings)
    try:
        by_shard: dict[int, list[int]] = {}
        for n in range(count):
            by_shard.setdefault(n % router.logical_shards, []).append(n)
        ids: list[str] = []
        for shard, numbers in by_shard.items():
            async with router.begin(shard) as conn:
                made = await conn.execute(
                    insert(accounts)
                    .values(id=next_id(shard))
                    .returning(accounts.c.id, accounts.c.username),
                    [
                        {
                            "username": f"target{n}",
                            "email": f"target{n}@example.com",
                            "password_hash": "x",
                        }
                        for n in numbers
                    ],
                )
                rows = made.all()
            async with router.global_begin() as conn:
                await conn.execute(
                    insert(usernames),
                    [{"username": r.username, "account_id": r.id, "confirmed": True} for r in rows],
                )
            ids.extend(str(r.id) for r in rows)
        return ids
    finally:
        await router.close()


async def sign_up(client: httpx.AsyncClient) -> dict[str, str]:
    scopes = "read write follow"
    app = (
        await client.post(
            "/api/v1/apps",
            data={
                "client_name": "bench",
                "redirect_uris": "urn:ietf:wg:oauth:2.0:oob",
                "scopes": scopes,
            },
        )
    ).json()
    credentials = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    app_token = (
        await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": scopes, **credentials},
        )
    ).json()["access_token"]
    user = await client.post(
        "/api/v1/accounts",
        headers={"Authorization": f"Bearer {app_token}"},
        data={
            "username": "follower",
            "email": "f@example.com",
            "password": PASSWORD,
            "agreement": "true",
        },
    )
    user.raise_for_status()
    return {"Authorization": f"Bearer {user.json()['access_token']}"}


async def timed_all(
    jobs: list[Callable[[], Awaitable[None]]], concurrency: int
) -> tuple[float, list[float]]:
    """Run ``jobs`` with ``concurrency`` workers; (wall seconds, each job's seconds)."""
    queue = list(reversed(jobs))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            job = queue.pop()
            started = time.perf_counter()
            await job()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_backend(name: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    await init_cluster(settings, args.shards)
    targets = await seed_accounts(settings, args.accounts)
    app = create_app(settings, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            headers = await sign_up(client)

            def post(path: str) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    response = await client.post(path, headers=headers)
                    response.raise_for_status()

                return call

            follow_s, _ = await timed_all(
                [post(f"/api/v1/accounts/{t}/follow") for t in targets], args.concurrency
            )
            me = (await client.get("/api/v1/accounts/verify_credentials", headers=headers)).json()
            assert me["following_count"] == len(targets), me["following_count"]

            rng = random.Random(1)

            def relationships() -> Callable[[], Awaitable[None]]:
                wanted = rng.sample(targets, 40)

                async def call() -> None:
                    response = await client.get(
                        "/api/v1/accounts/relationships",
                        params=[("id[]", i) for i in wanted],
                        headers=headers,
                    )
                    response.raise_for_status()
                    assert all(r["following"] for r in response.json())

                return call

            _, latencies = await timed_all([relationships() for _ in range(args.requests)], 1)

            unfollow_s, _ = await timed_all(
                [post(f"/api/v1/accounts/{t}/unfollow") for t in targets], args.concurrency
            )
            me = (await client.get("/api/v1/accounts/verify_credentials", headers=headers)).json()
            assert me["following_count"] == 0, me["following_count"]
    return {
        "backend": name,
        "accounts": len(targets),
        "follows_per_s": len(targets) / follow_s,
        "unfollows_per_s": len(targets) / unfollow_s,
        "relationships_p50_ms": percentile(latencies, 0.50) * 1000,
        "relationships_p99_ms": percentile(latencies, 0.99) * 1000,
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"graph: {args.accounts} accounts over {args.shards} logical shards, "
        f"concurrency {args.concurrency}, {args.requests} relationships requests of 40 IDs",
        "",
        f"{'backend':<10}{'follow/s':>10}{'unfollow/s':>12}{'rel p50':>10}{'rel p99':>10}",
    ]
    for r in results:
        lines.append(
            f"{r['backend']:<10}{r['follows_per_s']:>10.0f}{r['unfollows_per_s']:>12.0f}"
            f"{r['relationships_p50_ms']:>8.1f}ms{r['relationships_p99_ms']:>8.1f}ms"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    async with embedded() as settings:
        print("embedded …", file=sys.stderr)
        results.append(await run_backend("embedded", settings, args))
    async with cluster(args.dsn) as settings:
        print("cluster …", file=sys.stderr)
        results.append(await run_backend("cluster", settings, args))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--shards", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2) if args.json else report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
