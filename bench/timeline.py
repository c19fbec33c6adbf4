"""Home timeline throughput: a seeded community, served by a real ``photogram serve``.

For each backend, the embedded default (SQLite) and a two-database PostgreSQL cluster
(both databases on the local server), in one run:

1. ``photogram init`` and ``photogram demo --users U --posts P --follows K`` (timed), as
   an operator runs them (separate processes, settings from the environment);
2. access tokens for ``--tokens`` random demo accounts, written to the global database in
   one statement (signing each in would hash the password a thousand times);
3. ``photogram serve`` (one uvicorn process) on a free port, rate limits raised out of
   the way;
4. ``--concurrency`` clients, each a loop of ``GET /api/v1/timelines/home?limit=L`` with
   a random account's token: ``--warmup`` seconds unrecorded, then ``--duration``
   seconds measured: requests per second, p50 and p99 latency, and statuses per page.

The load comes from this process and the server is another, on the same machine: they
share its cores, so compare the backends, not the absolute figures.

    .venv/bin/python bench/timeline.py [--users 10000] [--posts 200000] [--follows 150]
        [--photo-size 320] [--shards 1024] [--concurrency 16] [--duration 60] [--warmup 10]
        [--limit 20] [--tokens 1000] [--backends embedded,cluster]
        [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import insert, select

from photogram.db.metadata import emails, oauth_apps, oauth_tokens
from photogram.db.router import Router
from photogram.demo import EMAIL_DOMAIN
from photogram.settings import Settings

PHOTOGRAM = str(Path(sys.executable).with_name("photogram"))


def environment(data_dir: Path, global_dsn: str | None, shards: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    env |= {
        "PHOTOGRAM_DATA_DIR": str(data_dir),
        "PHOTOGRAM_RATE_LIMIT_PER_TOKEN": str(10**9),
        "PHOTOGRAM_RATE_LIMIT_PER_IP": str(10**9),
    }
    if global_dsn:
        env["PHOTOGRAM_GLOBAL_DATABASE"] = global_dsn
        env["PHOTOGRAM_DATABASES"] = json.dumps(shards)
    return env


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(
        data_dir=Path(env["PHOTOGRAM_DATA_DIR"]),
        global_database=env.get("PHOTOGRAM_GLOBAL_DATABASE"),
        databases=json.loads(env.get("PHOTOGRAM_DATABASES", "{}")),
    )


@contextlib.asynccontextmanager
async def backend(name: str, dsn: str, workdir: Path) -> AsyncIterator[dict[str, str]]:
    """The environment of a fresh instance of ``name``; removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"photogram-timeline-{name}-", dir=workdir))
    names: list[str] = []
    admin = None
    try:
        if name == "embedded":
            yield environment(data_dir, None, {})
            return
        tag = secrets.token_hex(4)
        names = [f"photogram_bench_{tag}_{part}" for part in ("global", "a", "b")]
        base = dsn.rsplit("/", 1)[0]
        admin = await asyncpg.connect(dsn)
        for db in names:
            await admin.execute(f'CREATE DATABASE "{db}"')
        shards = {"pg_a": f"{base}/{names[1]}", "pg_b": f"{base}/{names[2]}"}
        yield environment(data_dir, f"{base}/{names[0]}", shards)
    finally:
        if admin is not None:
            for db in names:
                await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()
        shutil.rmtree(data_dir, ignore_errors=True)


async def photogram(env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        PHOTOGRAM, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"photogram {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode()


async def make_tokens(env: dict[str, str], count: int, seed: int) -> list[str]:
    """Read-scoped tokens for ``count`` random demo accounts, as the password grant stores
    them (sha256 of the token), in one INSERT."""
    router = await Router.open(settings_of(env))
    try:
        async with router.global_begin() as conn:
            found = await conn.scalars(
                select(emails.c.account_id).where(emails.c.email.like(f"%@{EMAIL_DOMAIN}"))
            )
            account_ids = sorted(int(i) for i in found)
            app_id = await conn.scalar(
                insert(oauth_apps)
                .values(
                    client_id=secrets.token_urlsafe(32),
                    client_secret_hash=hashlib.sha256(b"bench").hexdigest(),
                    name="bench",
                    redirect_uris="urn:ietf:wg:oauth:2.0:oob",
                    scopes="read",
                )
                .returning(oauth_apps.c.id)
            )
            chosen = random.Random(seed).sample(account_ids, min(count, len(account_ids)))
            tokens = [secrets.token_urlsafe(32) for _ in chosen]
            await conn.execute(
                insert(oauth_tokens),
                [
                    {
                        "token_hash": hashlib.sha256(t.encode()).hexdigest(),
                        "app_id": app_id,
                        "account_id": a,
                        "scopes": "read",
                    }
                    for t, a in zip(tokens, chosen, strict=True)
                ],
            )
        return tokens
    finally:
        await router.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        PHOTOGRAM,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/api/v1/instance")).status_code == 200:
                        break
                if proc.returncode is not None:
                    raise SystemExit("photogram serve exited before it answered")
                await asyncio.sleep(0.2)
            else:
                raise SystemExit("photogram serve did not answer within 120 s")
        yield base
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def load(base: str, tokens: list[str], args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    latencies: list[float] = []
    sizes: list[int] = []
    errors = 0
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        measure_from = started + args.warmup
        stop_at = measure_from + args.duration

        async def worker() -> None:
            nonlocal errors
            while (now := time.perf_counter()) < stop_at:
                token = rng.choice(tokens)
                response = await client.get(
                    "/api/v1/timelines/home",
                    params={"limit": args.limit},
                    headers={"Authorization": f"Bearer {token}"},
                )
                took = time.perf_counter() - now
                if now < measure_from:
                    continue
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(took)
                sizes.append(len(response.json()))

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / args.duration,
        "p50_ms": ordered[len(ordered) // 2] * 1000 if ordered else None,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        if ordered
        else None,
        "statuses_per_page": statistics.mean(sizes) if sizes else 0,
    }


async def seed(env: dict[str, str], args: argparse.Namespace, name: str) -> dict[str, Any]:
    """``photogram init`` and ``photogram demo`` as an operator runs them, each timed."""
    print(f"{name}: init …", file=sys.stderr)
    started = time.perf_counter()
    await photogram(env, "init", "--shards", str(args.shards), "--json")
    init_s = time.perf_counter() - started
    print(f"{name}: demo …", file=sys.stderr)
    started = time.perf_counter()
    sizes = {
        "--users": args.users,
        "--posts": args.posts,
        "--follows": args.follows,
        "--photo-size": args.photo_size,
        "--seed": args.seed,
    }
    demo = json.loads(
        await photogram(env, "demo", *(f"{k}={v}" for k, v in sizes.items()), "--json")
    )
    return {"init_s": init_s, "seed_s": time.perf_counter() - started, "demo": demo}


async def run_backend(name: str, args: argparse.Namespace) -> dict[str, Any]:
    async with backend(name, args.dsn, args.workdir) as env:
        seeded = await seed(env, args, name)
        tokens = await make_tokens(env, args.tokens, args.seed)
        print(f"{name}: serving, {args.concurrency} clients …", file=sys.stderr)
        async with serving(env) as base:
            figures = await load(base, tokens, args)
    return {"backend": name, **seeded, "tokens": len(tokens), **figures}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"home timeline: {args.users:,} users following ~{args.follows}, {args.posts:,} posts, "
        f"{args.shards} logical shards; {args.concurrency} clients, limit={args.limit}, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up",
        "",
        f"{'backend':<10}{'seed':>9}{'req/s':>9}{'p50':>10}{'p99':>10}"
        f"{'per page':>10}{'errors':>8}",
    ]
    for r in results:
        lines.append(
            f"{r['backend']:<10}{r['seed_s']:>8.0f}s{r['requests_per_s']:>9.1f}"
            f"{r['p50_ms']:>8.1f}ms{r['p99_ms']:>8.1f}ms{r['statuses_per_page']:>10.1f}"
            f"{r['errors']:>8}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [await run_backend(name, args) for name in args.backends.split(",")]


def dataset_and_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this benchmark shares with others on the same dataset and load."""
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--follows", type=int, default=150)
    parser.add_argument("--photo-size", type=int, default=320)
    parser.add_argument("--shards", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", action="store_true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dataset_and_load_arguments(parser)
    parser.add_argument("--backends", default="embedded,cluster")
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2) if args.json else report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
