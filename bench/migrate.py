"""Media store migration: photogram's backfill and verification against rclone's copy and check.

One run, one dataset, one pair of stores, both sides in turn:

- **photogram**: ``photogram media migrate start --to target``, then the backfill pass and
  one full verification pass, as the CLI runs them (the same calls, in this process),
  timed from ``start`` to the pass found clean. The backfill reads each object from the
  source, checks it against the MD5 its record holds, and writes it to the target (the
  files of each batch made durable with one ``syncfs`` before its checkpoint); the
  verifier reads every object back from the target and compares it with the record,
  then sweeps the target for objects the database no longer records.
  Both walk ``media_objects`` shard by shard: no listing of the source is needed.
- **rclone**: ``rclone copy --checksum SRC DST`` then ``rclone check SRC DST`` on the same
  pair, timed together. rclone lists both trees and, for a filesystem target, hashes both
  sides' every file in ``check``.

The dataset is ``--objects`` objects of random sizes (``--min-kb`` to ``--max-kb``,
random bytes, seeded), five variants a photo, written straight into the source store's
directory in photogram's key layout (``{shard:04d}/{media_id}/{variant}.jpg``), and their
``media_objects`` records (key, size, MD5) inserted in bulk on every logical shard of a
fresh cluster: PostgreSQL (a global database and two shard databases on the local
server) by default, or the embedded SQLite with ``--backend embedded``.

Before each run the target is emptied, everything is flushed (``sync``) and, when this
process may, the page cache is dropped (``echo 3 > /proc/sys/vm/drop_caches``, as root),
so every run starts cold; otherwise every run starts with the source read once into the
cache. ``--rounds`` runs each side that many times, the order rotated each round, and
reports medians. Every run is checked: photogram must copy and verify every object with
nothing quarantined, rclone's check must find no differences. Besides wall time, each
run's CPU time (user and system) is reported: this process's for photogram, the rclone
processes' for rclone (PostgreSQL's own is in neither), and how long a ``sync`` right
after the run took (what it left unwritten).

``--pair fs-s3`` makes the target an S3 bucket on moto's server (a subprocess, restarted
empty for every run); moto is Python in one process, so use a small ``--objects``.

    .venv/bin/python bench/migrate.py [--objects 100000] [--min-kb 20] [--max-kb 200]
        [--pair fs-fs] [--backend cluster] [--shards 1024] [--concurrency 16]
        [--rounds 1] [--seed 1] [--workdir DIR]
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
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiobotocore.session import get_session
from sqlalchemy import insert

from photogram.db.ids import compose
from photogram.db.metadata import media_objects
from photogram.db.migrations import init_cluster
from photogram.db.router import Router
from photogram.media.migration import jobs, phases
from photogram.media.migration.jobs import Limits, Mover
from photogram.runtime import Runtime
from photogram.settings import Settings

VARIANTS = ("original", "1080", "640", "320", "thumb")
SOURCE, TARGET = "source", "target"
#: Photos a seeding worker makes per task.
SEED_CHUNK = 200
#: Records inserted per statement.
INSERT_ROWS = 1000
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
S3_KEY_ID, S3_SECRET, S3_REGION, S3_BUCKET = "bench", "bench-secret", "us-east-1", "migrate"
MB = 1_000_000


# --- the dataset ------------------------------------------------------------------------------


def media_id(photo: int, shards: int) -> int:
    """Photo ``photo``'s ID: round-robin over the logical shards, unique by its time field."""
    return compose(1_000_000 + photo // shards, photo % shards, 0)


def seed_photos(
    root: str, first: int, count: int, objects: int, shards: int, sizes: tuple[int, int], seed: int
) -> list[tuple[int, int, str, str, int, str]]:
    """Write photos ``first`` … ``first + count - 1`` (their variants, up to ``objects`` in
    all) under ``root``; their records as (shard, media id, variant, key, size, md5)."""
    records = []
    for photo in range(first, first + count):
        rng = random.Random(seed * 1_000_003 + photo)
        mid = media_id(photo, shards)
        shard = photo % shards
        directory = Path(root, f"{shard:04d}", str(mid))
        directory.mkdir(parents=True, exist_ok=True)
        for n, variant in enumerate(VARIANTS):
            if photo * len(VARIANTS) + n >= objects:
                break
            data = rng.randbytes(rng.randint(*sizes))
            key = f"{shard:04d}/{mid}/{variant}.jpg"
            (directory / f"{variant}.jpg").write_bytes(data)
            records.append((shard, mid, variant, key, len(data), hashlib.md5(data).hexdigest()))
    return records


async def seed(settings: Settings, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The source objects (two processes write them) and their records, in bulk."""
    photos = -(-args.objects // len(VARIANTS))
    sizes = (args.min_kb * 1000, args.max_kb * 1000)
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        chunks = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool,
                    seed_photos,
                    str(source),
                    first,
                    min(SEED_CHUNK, photos - first),
                    args.objects,
                    args.shards,
                    sizes,
                    args.seed,
                )
                for first in range(0, photos, SEED_CHUNK)
            )
        )
    await asyncio.to_thread(os.sync)
    files_s = time.perf_counter() - started
    by_shard: dict[int, list[dict[str, Any]]] = {}
    total_bytes = 0
    for chunk in chunks:
        for shard, mid, variant, key, size, md5 in chunk:
            total_bytes += size
            by_shard.setdefault(shard, []).append(
                {
                    "media_id": mid,
                    "variant": variant,
                    "store": SOURCE,
                    "key": key,
                    "size": size,
                    "md5": md5,
                    "width": 1080,
                    "height": 1080,
                    "content_type": "image/jpeg",
                }
            )
    started = time.perf_counter()
    router = await Router.open(settings)
    try:
        slots = asyncio.Semaphore(8)

        async def one(shard: int, rows: list[dict[str, Any]]) -> None:
            async with slots, router.begin(shard) as conn:
                for at in range(0, len(rows), INSERT_ROWS):
                    await conn.execute(insert(media_objects), rows[at : at + INSERT_ROWS])

        if router.engine_for(0).dialect.name == "sqlite":
            for shard, rows in by_shard.items():  # one writer at a time anyway
                await one(shard, rows)
        else:
            await asyncio.gather(*(one(shard, rows) for shard, rows in by_shard.items()))
    finally:
        await router.close()
    return {
        "objects": sum(len(rows) for rows in by_shard.values()),
        "bytes": total_bytes,
        "files_s": files_s,
        "records_s": time.perf_counter() - started,
    }


# --- the cluster and the stores --------------------------------------------------------------


@contextlib.asynccontextmanager
async def databases(backend: str, dsn: str) -> AsyncIterator[dict[str, Any]]:
    """Settings for a fresh cluster's databases (PostgreSQL ones are dropped afterwards)."""
    if backend == "embedded":
        yield {}
        return
    tag = secrets.token_hex(4)
    names = [f"photogram_bench_{tag}_{part}" for part in ("global", "a", "b")]
    base = dsn.rsplit("/", 1)[0]
    admin = await asyncpg.connect(dsn)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield {
            "global_database": f"{base}/{names[0]}",
            "databases": {"pg_a": f"{base}/{names[1]}", "pg_b": f"{base}/{names[2]}"},
        }
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def moto_server(log: Path) -> AsyncIterator[str]:
    """moto's S3 server on a free loopback port, with an empty bucket; its endpoint URL."""
    port = free_port()
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            for _ in range(300):
                if process.returncode is not None:
                    raise SystemExit(f"moto server exited at start-up; see {log}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(endpoint)).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("moto server did not answer in 30 s")
        await _create_bucket(endpoint)
        yield endpoint
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _create_bucket(endpoint: str) -> None:
    async with get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
    ) as client:
        await client.create_bucket(Bucket=S3_BUCKET)


def make_settings(
    workdir: Path, cluster: dict[str, Any], target: dict[str, Any], shards: int
) -> Settings:
    return Settings(
        data_dir=workdir / "data",
        logical_shards=shards,
        media_stores={
            SOURCE: {"kind": "filesystem", "path": str(workdir / SOURCE)},
            TARGET: target,
        },
        media_store=SOURCE,
        **cluster,
    )


# --- cache state ------------------------------------------------------------------------------


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access(DROP_CACHES, os.W_OK)


def settle(source: Path, drop: bool) -> None:
    """Flush dirty pages; then drop the page cache, or else read the source into it."""
    os.sync()
    if drop:
        DROP_CACHES.write_text("3\n")
    else:
        for directory, _dirs, files in os.walk(source):
            for name in files:
                Path(directory, name).read_bytes()


# --- the two sides ----------------------------------------------------------------------------


async def photogram_side(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Start a migration to the target, backfill, verify once; rolled back afterwards."""
    from photogram.tasks.registry import import_tasks

    import_tasks()
    limits = Limits(concurrency=args.concurrency)
    runtime = await Runtime.open(settings)
    try:
        marks = {"begin": time.perf_counter()}
        async with runtime.router.global_begin() as conn:
            state = await phases.start(conn, settings.media_store, TARGET)
        await runtime.media.refresh()
        marks["started"] = time.perf_counter()
        state = await jobs.begin_backfill(runtime, lambda _message: None)
        marks["waited"] = time.perf_counter()
        mover = Mover(runtime, state, limits)
        await mover.prepare("backfill")
        if not await mover.run("backfill"):
            raise SystemExit("photogram: the backfill stopped before the end")
        marks["backfilled"] = time.perf_counter()
        state = await jobs.begin_verify(runtime)
        mover = Mover(runtime, state, limits)
        await mover.prepare("verify")
        if not await mover.run("verify"):
            raise SystemExit("photogram: the verification stopped before the end")
        marks["verified"] = time.perf_counter()
        removed = await mover.sweep(settings.media_migration_orphan_grace_seconds)
        clean, left = await mover.finish_pass()
        marks["done"] = time.perf_counter()
        status = await jobs.status(runtime)
        async with runtime.router.global_begin() as conn:
            await phases.rollback(conn, settings.media_store)
    finally:
        await runtime.close()
    backfill, verify = status["jobs"]["backfill"], status["jobs"]["verify"]
    if not clean or backfill["copied"] != args.objects or verify["verified"] != args.objects:
        raise SystemExit(
            f"photogram: expected {args.objects} objects copied and verified, found "
            f"{backfill['copied']} copied, {verify['verified']} verified, {left} quarantined"
        )
    return {
        "seconds": marks["done"] - marks["begin"],
        "steps": {
            "start": marks["started"] - marks["begin"],
            "wait for every server": marks["waited"] - marks["started"],
            "backfill": marks["backfilled"] - marks["waited"],
            "verify": marks["verified"] - marks["backfilled"],
            "sweep and close": marks["done"] - marks["verified"],
        },
        "copied": backfill["copied"],
        "verified": verify["verified"],
        "removed": removed,
    }


def rclone_env(endpoint: str | None, workdir: Path) -> dict[str, str]:
    # Nothing of the caller's own rclone or AWS set-up (AWS_CA_BUNDLE breaks rclone's S3
    # client on a plain-HTTP endpoint).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "AWS_"))}
    env["RCLONE_CONFIG"] = str(workdir / "rclone.conf")  # none: remotes come from here
    if endpoint is not None:
        env |= {
            "RCLONE_CONFIG_BENCHS3_TYPE": "s3",
            "RCLONE_CONFIG_BENCHS3_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCHS3_ENDPOINT": endpoint,
            "RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID": S3_KEY_ID,
            "RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY": S3_SECRET,
            "RCLONE_CONFIG_BENCHS3_REGION": S3_REGION,
            "RCLONE_CONFIG_BENCHS3_FORCE_PATH_STYLE": "true",
        }
    return env


def rclone_side(source: Path, target: str, env: dict[str, str], objects: int) -> dict[str, Any]:
    """``rclone copy --checksum`` then ``rclone check``, each timed."""
    steps = {}
    outputs = {}
    for step, command in (
        ("copy", ["rclone", "copy", "--checksum", str(source), target]),
        ("check", ["rclone", "check", str(source), target]),
    ):
        started = time.perf_counter()
        ran = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        steps[step] = time.perf_counter() - started
        outputs[step] = ran.stderr
        if ran.returncode != 0:
            raise SystemExit(f"rclone {step} failed ({ran.returncode}): {ran.stderr.strip()}")
    matching = re.search(r"(\d+) matching files", outputs["check"])
    if "0 differences found" not in outputs["check"] or matching is None:
        raise SystemExit(f"rclone check: {outputs['check'].strip()}")
    if int(matching.group(1)) != objects:
        raise SystemExit(f"rclone check matched {matching.group(1)} files, not {objects}")
    return {"seconds": sum(steps.values()), "steps": steps, "matching": int(matching.group(1))}


# --- running ----------------------------------------------------------------------------------


def cpu_seconds() -> dict[str, tuple[float, float]]:
    """CPU time so far (user, system) of this process (photogram's side runs in it) and of
    its finished children (rclone's)."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "photogram": (mine.ru_utime, mine.ru_stime),
        "rclone": (children.ru_utime, children.ru_stime),
    }


def empty_target(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()


def sync() -> float:
    started = time.perf_counter()
    os.sync()
    return time.perf_counter() - started


async def one_run(
    side: str, args: argparse.Namespace, workdir: Path, cluster: dict[str, Any], drop: bool
) -> dict[str, Any]:
    source = workdir / SOURCE
    async with contextlib.AsyncExitStack() as stack:
        endpoint = None
        if args.pair == "fs-s3":
            endpoint = await stack.enter_async_context(moto_server(workdir / "moto.log"))
            target: dict[str, Any] = {
                "kind": "s3",
                "endpoint_url": endpoint,
                "bucket": S3_BUCKET,
                "region": S3_REGION,
                "access_key_id": S3_KEY_ID,
                "secret_access_key": S3_SECRET,
            }
            rclone_target = f"benchs3:{S3_BUCKET}"
        else:
            await asyncio.to_thread(empty_target, workdir / TARGET)
            target = {"kind": "filesystem", "path": str(workdir / TARGET)}
            rclone_target = str(workdir / TARGET)
        await asyncio.to_thread(settle, source, drop)
        print(f"{side} …", file=sys.stderr)
        cpu = cpu_seconds()
        if side == "photogram":
            settings = make_settings(workdir, cluster, target, args.shards)
            result = await photogram_side(settings, args)
        else:
            env = rclone_env(endpoint, workdir)
            result = await asyncio.to_thread(rclone_side, source, rclone_target, env, args.objects)
        process = "rclone" if side == "rclone" else "photogram"
        (user, system), (user0, system0) = cpu_seconds()[process], cpu[process]
        result["cpu_user_s"], result["cpu_system_s"] = user - user0, system - system0
        # What the run left for the kernel to write (photogram syncs as it goes).
        result["sync_after_s"] = await asyncio.to_thread(sync)
    result["side"] = side
    return result


def summary(runs: list[dict[str, Any]], side: str, seeded: dict[str, Any]) -> dict[str, Any]:
    mine = [r for r in runs if r["side"] == side]
    seconds = statistics.median(r["seconds"] for r in mine)
    return {
        "seconds": seconds,
        "objects_per_s": seeded["objects"] / seconds,
        "mb_per_s": seeded["bytes"] / MB / seconds,
        "steps": {
            step: statistics.median(r["steps"][step] for r in mine) for step in mine[0]["steps"]
        },
        "sync_after_s": statistics.median(r["sync_after_s"] for r in mine),
        "cpu_user_s": statistics.median(r["cpu_user_s"] for r in mine),
        "cpu_system_s": statistics.median(r["cpu_system_s"] for r in mine),
    }


async def main_async(args: argparse.Namespace, workdir: Path, drop: bool) -> dict[str, Any]:
    async with databases(args.backend, args.dsn) as cluster:
        target: dict[str, Any] = {"kind": "filesystem", "path": str(workdir / TARGET)}
        settings = make_settings(workdir, cluster, target, args.shards)
        print("init …", file=sys.stderr)
        started = time.perf_counter()
        await init_cluster(settings, args.shards)
        init_s = time.perf_counter() - started
        print(f"seeding {args.objects:,} objects …", file=sys.stderr)
        (workdir / SOURCE).mkdir()
        seeded = await seed(settings, workdir / SOURCE, args)
        sides = ["photogram", "rclone"]
        runs = []
        for n in range(args.rounds):
            # Each round starts with the next side: the order rotates.
            for side in sides[n % len(sides) :] + sides[: n % len(sides)]:
                runs.append(await one_run(side, args, workdir, cluster, drop))
    found = {side: summary(runs, side, seeded) for side in sides}
    return {
        "objects": seeded["objects"],
        "bytes": seeded["bytes"],
        "pair": args.pair,
        "backend": args.backend,
        "shards": args.shards,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "cache": "dropped before each run" if drop else "source read into it before each run",
        "init_s": init_s,
        "seed": seeded,
        "rclone_version": rclone_version(),
        **found,
        "ratio": found["rclone"]["seconds"] / found["photogram"]["seconds"],
        "runs": runs,
    }


def rclone_version() -> str:
    ran = subprocess.run(["rclone", "version"], capture_output=True, text=True, check=False)
    return ran.stdout.split("\n", 1)[0].strip()


def report(r: dict[str, Any]) -> str:
    lines = [
        f"media store migration, {r['pair']}: {r['objects']:,} objects, "
        f"{r['bytes'] / MB:,.0f} MB; {r['backend']} ({r['shards']} logical shards); "
        f"photogram concurrency {r['concurrency']}; {r['rclone_version']}; "
        f"page cache {r['cache']}; median of {r['rounds']}",
        f"seeded in {r['seed']['files_s']:.0f} s (files) + {r['seed']['records_s']:.0f} s "
        f"(records); init {r['init_s']:.0f} s",
        "",
        f"{'side':<18}{'seconds':>9}{'objects/s':>11}{'MB/s':>8}{'CPU user':>10}{'CPU sys':>9}"
        f"{'sync after':>12}  steps",
    ]
    sides = [side for side in ("photogram", "rclone") if side in r]
    for side in sides:
        s = r[side]
        steps = ", ".join(f"{name} {took:.1f} s" for name, took in s["steps"].items())
        lines.append(
            f"{side:<18}{s['seconds']:>9.1f}{s['objects_per_s']:>11,.0f}{s['mb_per_s']:>8.1f}"
            f"{s['cpu_user_s']:>9.1f}s{s['cpu_system_s']:>8.1f}s{s['sync_after_s']:>11.1f}s"
            f"  {steps}"
        )
    for side in sides:
        each = ", ".join(f"{run['seconds']:.1f}" for run in r["runs"] if run["side"] == side)
        lines.append(f"{side} runs, in order: {each} s")
    lines += ["", f"photogram / rclone throughput: {r['ratio']:.2f}x (target: at least 1.5x)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--min-kb", type=int, default=20)
    parser.add_argument("--max-kb", type=int, default=200)
    parser.add_argument("--pair", choices=["fs-fs", "fs-s3"], default="fs-fs")
    parser.add_argument("--backend", choices=["cluster", "embedded"], default="cluster")
    parser.add_argument("--shards", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=16, help="photogram's, as the CLI's")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side, order alternated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("rclone") is None:
        raise SystemExit("rclone is not installed (scripts/services installs it)")
    drop = can_drop_caches()
    workdir = Path(tempfile.mkdtemp(prefix="photogram-migrate-", dir=args.workdir))
    try:
        result = asyncio.run(main_async(args, workdir, drop))
        # Printed before the clean-up, which takes a while for a big dataset.
        print(json.dumps(result, indent=2) if args.json else report(result), flush=True)
    finally:
        print("removing the dataset …", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
