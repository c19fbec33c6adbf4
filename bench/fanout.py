"""Home feeds in Redis: fan-out throughput, and the home timeline pushed vs. read-time.

On a two-database PostgreSQL cluster seeded by ``photogram demo`` (defaults: 10,000
accounts following ~150 each, 200,000 posts), in one run:

1. **Home timeline, read-time**: ``photogram serve`` without Redis; ``--concurrency``
   clients loop over ``GET /api/v1/timelines/home`` with random accounts' tokens (as
   ``bench/timeline.py``): requests per second, p50, p99.
2. **Home timeline, pushed**: the same server with ``redis_url`` (a private redis-server
   this script starts). First one page per token, unmeasured (each feed is built from the
   shards on its first read; that pass is timed and reported), then the same load.
3. **Fan-out throughput**: ``--workers`` ``photogram worker`` processes on a RabbitMQ
   vhost of this run's own. Every account gets a built, empty feed (complete from now
   on) in a separate Redis database; then the newest ``--fanout-posts`` posts are queued
   for fan-out at once (outbox rows, published to the broker) and the clock runs until
   every fan-out task is done. Feed inserts per second = members added to feeds / time.

    .venv/bin/python bench/fanout.py [--users 10000] [--posts 200000] [--follows 150]
        [--photo-size 320] [--shards 1024] [--concurrency 16] [--duration 60]
        [--warmup 10] [--limit 20] [--tokens 1000] [--workers 2] [--worker-threads 2]
        [--fanout-posts 2000] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent))
from photogram.db.ids import shard_of
from photogram.db.metadata import accounts, outbox, statuses
from photogram.feeds.store import FeedStore, feed_key
from photogram.feeds.tasks import enqueue_fanout
from photogram.runtime import Runtime
from photogram.settings import Settings
from timeline import (
    backend,
    dataset_and_load_arguments,
    free_port,
    load,
    make_tokens,
    seed,
    serving,
)

PHOTOGRAM = str(Path(sys.executable).with_name("photogram"))
RABBITMQCTL = "/usr/sbin/rabbitmqctl"


@contextlib.contextmanager
def redis_server(workdir: Path) -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True
                ).returncode
                == 0
            ):
                break
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@contextlib.contextmanager
def rabbitmq_vhost() -> Any:
    vhost = f"photogram_bench_{secrets.token_hex(4)}"
    subprocess.run([RABBITMQCTL, "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [RABBITMQCTL, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([RABBITMQCTL, "delete_vhost", vhost], capture_output=True)


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(
        data_dir=Path(env["PHOTOGRAM_DATA_DIR"]),
        global_database=env["PHOTOGRAM_GLOBAL_DATABASE"],
        databases=json.loads(env["PHOTOGRAM_DATABASES"]),
        broker_url=env.get("PHOTOGRAM_BROKER_URL"),
        redis_url=env.get("PHOTOGRAM_REDIS_URL"),
    )


async def warm(base: str, tokens: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One home page per token, ``--concurrency`` at a time: each builds its feed."""
    queue = list(tokens)
    errors = 0
    limits = httpx.Limits(max_connections=args.concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def one() -> None:
            nonlocal errors
            while queue:
                token = queue.pop()
                response = await client.get(
                    "/api/v1/timelines/home",
                    params={"limit": args.limit},
                    headers={"Authorization": f"Bearer {token}"},
                )
                errors += response.status_code != 200

        await asyncio.gather(*(one() for _ in range(args.concurrency)))
    took = time.perf_counter() - started
    return {
        "feeds_built": len(tokens),
        "build_s": took,
        "builds_per_s": len(tokens) / took,
        "build_errors": errors,
    }


@contextlib.asynccontextmanager
async def workers(env: dict[str, str], args: argparse.Namespace) -> AsyncIterator[None]:
    procs = [
        await asyncio.create_subprocess_exec(
            PHOTOGRAM,
            "worker",
            "--queues",
            "fanout,default",
            "--concurrency",
            str(args.worker_threads),
            "--loglevel",
            "WARNING",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(args.workers)
    ]
    try:
        await asyncio.sleep(5)  # connected and consuming before the clock starts
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()


async def fanout_throughput(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_of(env)
    runtime = await Runtime.open(settings)
    store = runtime.feeds
    assert store is not None
    try:
        router = runtime.router
        rows = await router.scatter(
            select(statuses.c.id, statuses.c.account_id)
            .where(statuses.c.in_reply_to_id.is_(None))
            .order_by(statuses.c.id.desc())
            .limit(args.fanout_posts),
            limit=args.fanout_posts,
        )
        everyone = 10**8
        account_ids = [
            int(r.id)
            for r in await router.scatter(
                select(accounts.c.id).order_by(accounts.c.id).limit(everyone),
                limit=everyone,
                order="asc",
            )
        ]
        # A built, empty feed for everyone, complete from the oldest post to fan out:
        # the fan-out pushes every post from there on (this Redis database is used for
        # nothing else).
        await _empty_feeds(store, account_ids, horizon=min(int(r.id) for r in rows))
        followers_of = await _followers(runtime, {int(r.account_id) for r in rows})
        expected = sum(followers_of[int(r.account_id)] + 1 for r in rows)

        by_shard: dict[int, list[int]] = {}
        for r in rows:
            by_shard.setdefault(shard_of(int(r.id)), []).append(int(r.id))
        queued: list[int] = []
        for shard, ids in by_shard.items():
            async with router.begin(shard) as conn:
                queued += [await enqueue_fanout(conn, shard, i) for i in ids]
        async with workers(env, args):
            started = time.perf_counter()
            await runtime.relay.hand_over(queued)
            while True:  # until every fan-out task (and batch) is done
                if not await _pending(runtime):
                    break
                await asyncio.sleep(0.2)
            took = time.perf_counter() - started
        inserted = await _members(store, account_ids) - len(account_ids)
        return {
            "fanout_posts": len(rows),
            "expected_inserts": expected,
            "feed_inserts": inserted,
            "fanout_s": took,
            "inserts_per_s": inserted / took,
            "posts_per_s": len(rows) / took,
        }
    finally:
        await runtime.close()


async def _followers(runtime: Runtime, authors: set[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for author in authors:
        async with runtime.router.connect_for(author) as conn:
            found[author] = int(
                await conn.scalar(select(accounts.c.followers_count).where(accounts.c.id == author))
                or 0
            )
    return found


async def _empty_feeds(store: FeedStore, account_ids: list[int], horizon: int) -> None:
    for at in range(0, len(account_ids), 50):
        chunk = account_ids[at : at + 50]

        async def build(account_id: int) -> None:
            marker = await store.begin_build(account_id)
            if marker is not None:
                await store.finish_build(account_id, marker, [], horizon=horizon)

        await asyncio.gather(*(build(a) for a in chunk))


async def _members(store: FeedStore, account_ids: list[int]) -> int:
    total = 0
    for at in range(0, len(account_ids), 1000):
        pipe = store.client.pipeline(transaction=False)
        for account_id in account_ids[at : at + 1000]:
            pipe.zcard(feed_key(account_id))
        total += sum(int(n) for n in await pipe.execute())
    return total


async def _pending(runtime: Runtime) -> int:
    rows = await runtime.router.scatter(
        select(outbox.c.id)
        .where(outbox.c.done_at.is_(None), outbox.c.task.like("feeds.%"))
        .order_by(outbox.c.id)
        .limit(1),
        limit=1,
    )
    return len(rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with backend("cluster", args.dsn, args.workdir) as env:
        results: dict[str, Any] = await seed(env, args, "cluster")
        tokens = await make_tokens(env, args.tokens, args.seed)
        results["tokens"] = len(tokens)
        with redis_server(args.workdir) as redis_url, rabbitmq_vhost() as broker_url:
            print("read-time home timeline …", file=sys.stderr)
            async with serving(env) as base:
                results["read_time"] = await load(base, tokens, args)
            pushed = env | {"PHOTOGRAM_REDIS_URL": f"{redis_url}/0"}
            print("pushed home timeline: building feeds …", file=sys.stderr)
            async with serving(pushed) as base:
                results["build"] = await warm(base, tokens, args)
                print("pushed home timeline …", file=sys.stderr)
                results["pushed"] = await load(base, tokens, args)
            print("fan-out …", file=sys.stderr)
            fan = env | {
                "PHOTOGRAM_REDIS_URL": f"{redis_url}/1",
                "PHOTOGRAM_BROKER_URL": broker_url,
            }
            results["fanout"] = await fanout_throughput(fan, args)
        results["speedup"] = (
            results["pushed"]["requests_per_s"] / results["read_time"]["requests_per_s"]
        )
        return results


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    f = r["fanout"]
    b = r["build"]
    lines = [
        f"{args.users:,} users following ~{args.follows}, {args.posts:,} posts, "
        f"{args.shards} logical shards; {args.concurrency} clients, limit={args.limit}, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up",
        "",
        f"{'home timeline':<16}{'req/s':>9}{'p50':>11}{'p99':>11}{'per page':>10}{'errors':>8}",
    ]
    for name in ("read_time", "pushed"):
        x = r[name]
        lines.append(
            f"{name.replace('_', '-'):<16}{x['requests_per_s']:>9.1f}{x['p50_ms']:>9.1f}ms"
            f"{x['p99_ms']:>9.1f}ms{x['statuses_per_page']:>10.1f}{x['errors']:>8}"
        )
    lines += [
        f"pushed / read-time: {r['speedup']:.1f}x",
        f"feeds built on first read: {b['feeds_built']} in {b['build_s']:.1f} s "
        f"({b['builds_per_s']:.1f}/s, {b['build_errors']} errors)",
        f"fan-out: {f['fanout_posts']} posts, {f['feed_inserts']:,} feed inserts "
        f"(expected {f['expected_inserts']:,}) in {f['fanout_s']:.1f} s with {args.workers} "
        f"workers x {args.worker_threads} threads: {f['inserts_per_s']:,.0f} inserts/s, "
        f"{f['posts_per_s']:.1f} posts/s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dataset_and_load_arguments(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=2)
    parser.add_argument("--fanout-posts", type=int, default=2000)
    args = parser.parse_args(argv)
    random.seed(args.seed)
    results = asyncio.run(run(args))
    print(json.dumps(results, indent=2) if args.json else report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
