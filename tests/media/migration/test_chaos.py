"""The media migration under chaos: people use photogram the whole time while every phase
goes by, into a new store that fails writes, silently keeps wrong bytes and is slow, and
the backfill is killed (SIGKILL) half-way and resumed.

Both directions: from the filesystem to S3 and from S3 to the filesystem (S3 being moto's
server on loopback). The global database is PostgreSQL, written by the app and by each
`photogram media migrate` process at once.

What must hold at the end: no request failed (no 5xx, no unexpected 4xx, no photo shown
with bytes other than the recorded ones), every photo uploaded was processed, every live
object is in the new store with the MD5 the database records, no deleted object (nor any
other object the database does not record) is left there, and `rclone check` finds the
two stores identical for every live object they were both meant to hold, differing only
as the retirement explains.

The new store misbehaves until the retirement, not after it (``_faults_off``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from photogram.db.metadata import (
    media_attachments,
    media_migration_quarantine,
    media_objects,
    outbox,
)
from photogram.media.faulty import FaultyStore
from photogram.media.migration import jobs
from photogram.media.migration.objects import owner_of
from photogram.media.migration.tasks import SYNC
from photogram.media.stores import ObjectNotFoundError
from photogram.settings import FaultyStoreSettings, Settings
from tests.api import Client, User, api_client
from tests.conftest import PostgresFactory
from tests.media.migration.load import KINDS, Load, summary
from tests.media.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, create_bucket
from tests.test_cli import PHOTOGRAM, Ran, env_for, photogram

#: What the new store does wrong, on top of being slow. Until the migration trusts the new
#: store, it reads back what it writes there or verifies it later and reads fall back to
#: the source: these must cost people nothing (retries, repairs and fallbacks only).
FAULTS = {
    "write_error_rate": 0.05,
    "corrupt_rate": 0.05,
    "read_error_rate": 0.02,
    "latency_seconds": 0.02,
}
#: An object in the new store with no record is removed by the verifier only once this old
#: (an upload writes its objects before it commits their records): an hour by default, a
#: few seconds here so that the verifier's clean-up has work during the test.
ORPHAN_GRACE_SECONDS = 5
#: The first backfill run copies at most this many objects a second, so that it is still
#: under way when some shards are done.
SLOW_BACKFILL_RATE = "25"
#: People using the app (each on a random home shard, so their photos are too), and the
#: posts each has made before the migration starts: different counts, so shards of
#: different sizes finish the backfill at different times. About 40 photos, 200 objects:
#: at 5% corruption the backfill leaves some for the verifier to find, all but certainly.
PEOPLE = 6
KEPT_BEFORE = (2, 3, 4, 5, 6, 7)
DOOMED_BEFORE = 2
#: Each kind of step (upload, read, delete) is seen this many times in every phase.
STEPS_PER_PHASE = 2
#: The shares of reads served by the new store, one step after the other.
RAMP = (10, 50, 100)
#: Verification passes allowed before one is clean (a pass quarantines what it could not
#: repair in four attempts, and the next retries it).
VERIFY_PASSES = 3
#: How long the end waits for background work before failing (a hang guard, never a
#: measure of speed: the work is normally done in well under a second).
SETTLE_GUARD_SECONDS = 180


def _s3(endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "kind": "s3",
        "endpoint_url": endpoint,
        "bucket": bucket,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }


@asynccontextmanager
async def _cluster(
    postgres: PostgresFactory, tmp_path: Path, stores: dict[str, dict[str, Any]]
) -> AsyncIterator[tuple[Settings, dict[str, str]]]:
    """A PostgreSQL cluster's settings for the app, and the same for the CLI's environment."""
    shared = {
        "media_store": "old",
        "media_migration_refresh_seconds": 0.1,
        "media_migration_orphan_grace_seconds": ORPHAN_GRACE_SECONDS,
    }
    settings = await postgres.cluster_settings(
        data_dir=tmp_path / "data",
        media_stores=stores,
        # Background work that failed (a photo whose write failed) is retried soon; and a
        # task is as likely to be started again while it runs as with ten servers sweeping
        # every five seconds (the default), where it happens too.
        outbox_sweep_seconds=0.5,
        rate_limit_per_token=10**6,
        rate_limit_per_ip=10**6,
        **shared,
    )
    env = env_for(
        settings,
        PHOTOGRAM_MEDIA_STORES=json.dumps(stores),
        **{f"PHOTOGRAM_{name.upper()}": str(value) for name, value in shared.items()},
    )
    try:
        yield settings, env
    finally:
        postgres.drop_soon(settings)


def _step(what: str) -> None:
    """A line of the test's output, shown if it fails: how far the migration had got."""
    print(f"{time.strftime('%H:%M:%S')} {what}", flush=True)


async def _migrate(env: dict[str, str], *args: str) -> Ran:
    ran = await photogram("media", "migrate", *args, env=env)
    _step(f"migrate {' '.join(args)}: exit {ran.code} {ran.err.strip()}")
    assert ran.code == 0, f"migrate {' '.join(args)}: {ran.err}"
    return ran


async def _status(env: dict[str, str]) -> dict[str, Any]:
    found = (await _migrate(env, "status", "--json")).json
    assert isinstance(found, dict)
    return found


async def _enter(load: Load, env: dict[str, str], phase: str, *args: str) -> None:
    """Run a phase step, then wait until the app follows it and people have used it."""
    await _migrate(env, *args)
    while load.phase() != phase:
        await load.client.runtime.media.state()  # re-read every refresh interval
        await asyncio.sleep(0.05)
    await load.wait_for(phase, STEPS_PER_PHASE)
    _step(f"people have used phase {phase} ({load.requests} requests so far)")


async def _backfill_killed_and_resumed(load: Load, env: dict[str, str], logs: Path) -> None:
    """Start the backfill slowly, SIGKILL it once some shards are done, then resume it."""
    with (logs / "backfill-killed.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            PHOTOGRAM,
            *("media", "migrate", "backfill", "--concurrency", "4", "--rate", SLOW_BACKFILL_RATE),
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        # What `status --json` shows, read in-process: the CLI takes seconds to start, and
        # the moment to kill is when the first shard with objects has checkpointed.
        while True:
            progress = (await jobs.status(load.client.runtime))["jobs"]["backfill"]
            if progress["done"] > 0 and not progress["finished"]:
                break
            assert proc.returncode is None, (
                f"the backfill ended before it could be killed: {progress}\n"
                + (logs / "backfill-killed.log").read_text()
            )
            await asyncio.sleep(0.02)
    finally:
        if proc.returncode is None:
            proc.kill()  # SIGKILL: no chance to checkpoint the batches in flight
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    killed = await _status(env)
    assert killed["phase"] == "backfill"
    half = killed["jobs"]["backfill"]
    assert half["done"] > 0, half
    assert not half["finished"], half
    assert 0 < half["shards_finished"] < half["shards"], half

    await _migrate(env, "backfill", "--concurrency", "4")
    resumed = (await jobs.status(load.client.runtime))["jobs"]["backfill"]
    assert resumed["finished"], resumed
    # The same pass, carried on from its checkpoints, not a new one.
    assert resumed["started_at"] == half["started_at"]
    assert resumed["done"] >= resumed["total"] >= half["total"]


COUNT = re.compile(r"([\d,]+) (mismatched|repaired|quarantined)")


async def _verify_until_clean(client: Client, env: dict[str, str]) -> dict[str, int]:
    """Run verification passes until one is clean, as an operator does; the objects found
    damaged or missing and repaired, over every pass."""
    found = {"mismatched": 0, "repaired": 0}
    for _ in range(VERIFY_PASSES):
        ran = await photogram("media", "migrate", "verify", "--concurrency", "4", env=env)
        _step(f"migrate verify: exit {ran.code} {ran.err.strip()}")
        for number, outcome in COUNT.findall(ran.err):
            if outcome in found:
                found[outcome] += int(number.replace(",", ""))
        if ran.code == 0:
            assert "every live object is intact" in ran.out, ran.out
            return found
        assert "quarantined" in ran.err, ran.err  # retried by the next pass
    router = client.runtime.router
    async with router.global_connect() as conn:
        quarantined = list(await conn.execute(select(media_migration_quarantine)))
    lines = []
    for row in quarantined:
        async with router.connect_for(row.media_id) as conn:
            state = await conn.scalar(
                select(media_attachments.c.state).where(media_attachments.c.id == row.media_id)
            )
        photo = "no such photo" if state is None else f"photo {state}"
        lines.append(f"{row.key}: {row.reason} ({row.attempts} attempts; {photo})")
    raise AssertionError(
        f"no clean verification pass in {VERIFY_PASSES}: {ran.err}\n" + "\n".join(lines)
    )


async def _records(client: Client) -> dict[str, tuple[int, str]]:
    """Every object the database records, on every shard: key → (size, MD5)."""
    router = client.runtime.router
    found: dict[str, tuple[int, str]] = {}
    for shard in range(router.logical_shards):
        async with router.connect(shard) as conn:
            for row in await conn.execute(
                select(media_objects.c.key, media_objects.c.size, media_objects.c.md5)
            ):
                found[row.key] = (row.size, row.md5)
    return found


async def _settle(client: Client) -> None:
    """Wait until no photo is still processing and no background work that matters is
    pending (the app's sweeper retries it). Repairs of objects the database no longer
    records wait out their own grace period and only ever delete: they are left."""
    router = client.runtime.router

    async def pending() -> list[str]:
        left = []
        for shard in range(router.logical_shards):
            async with router.connect(shard) as conn:
                processing = await conn.scalar(
                    select(func.count())
                    .select_from(media_attachments)
                    .where(media_attachments.c.state == "processing")
                )
                if processing:
                    left.append(f"shard {shard}: {processing} photos processing")
                rows = await conn.execute(
                    select(outbox.c.task, outbox.c.payload, outbox.c.last_error).where(
                        outbox.c.done_at.is_(None), outbox.c.dead_at.is_(None)
                    )
                )
                for row in rows:
                    if row.task == SYNC and owner_of(row.payload["key"]) is not None:
                        recorded = await conn.scalar(
                            select(func.count())
                            .select_from(media_objects)
                            .where(media_objects.c.key == row.payload["key"])
                        )
                        if not recorded:
                            continue
                    left.append(f"{row.task} {row.payload}: {row.last_error}")
        return left

    deadline = asyncio.get_running_loop().time() + SETTLE_GUARD_SECONDS
    while left := await pending():
        assert asyncio.get_running_loop().time() < deadline, left
        await asyncio.sleep(0.2)


def _faults_off(client: Client) -> None:
    """The new store stops misbehaving: the drill ends with the migration.

    Once retired, the new store is the only one, and trusted: writes to it are no longer
    read back, and there is no other store to read from. A store that still failed
    writes, damaged them silently or failed reads would lose photos whatever photogram
    did, so faults past this point would test the store, not the migration.
    """
    faulty = client.runtime.stores["new"]
    assert isinstance(faulty, FaultyStore)
    faulty.config = FaultyStoreSettings(kind="faulty", store=faulty.config.store)


def _rclone_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    prefix = "RCLONE_CONFIG_CHAOS_"
    # The remote is configured here alone: no AWS_* setting of the environment (a CA
    # bundle, a profile) reaches rclone's S3 client.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    return inherited | {
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),  # none: the remote is below
        f"{prefix}TYPE": "s3",
        f"{prefix}PROVIDER": "Other",
        f"{prefix}ENDPOINT": endpoint,
        f"{prefix}REGION": REGION,
        f"{prefix}ACCESS_KEY_ID": ACCESS_KEY_ID,
        f"{prefix}SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        f"{prefix}FORCE_PATH_STYLE": "true",
    }


async def _rclone_check(env: dict[str, str], source: str, target: str, *args: str) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        "rclone",
        "check",
        source,
        target,
        # Both stores' hashes are MD5s (S3's ETag of a single-part upload is one).
        "--checkers",
        "4",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


DIRECTIONS = ["filesystem-to-s3", "s3-to-filesystem"]


@pytest.mark.postgres
@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_migration_under_chaos(
    direction: str, tmp_path: Path, postgres: PostgresFactory, s3_endpoint: str
) -> None:
    """Move the media from one store to the other (direction: "<from>-to-<to>")."""
    bucket = f"chaos-{uuid.uuid4().hex[:12]}"
    await create_bucket(s3_endpoint, bucket)
    directory = tmp_path / "store"
    # Each kind of store: its settings, and its name for rclone.
    kinds = {
        "filesystem": ({"kind": "filesystem", "path": str(directory)}, str(directory)),
        "s3": (_s3(s3_endpoint, bucket), f"chaos:{bucket}"),
    }
    from_kind, _, to_kind = direction.partition("-to-")
    (source, source_path), (target, target_path) = kinds[from_kind], kinds[to_kind]
    stores: dict[str, dict[str, Any]] = {
        "old": source,
        "new_real": target,
        "new": {"kind": "faulty", "store": "new_real", **FAULTS},
    }

    async with (
        _cluster(postgres, tmp_path, stores) as (settings, env),
        api_client(settings) as client,
        httpx.AsyncClient(timeout=30) as direct,
    ):
        # Background work (retries of failed processing, repairs) runs as on a server.
        client.runtime.start_background()
        people = [await client.sign_up(f"person{n}") for n in range(PEOPLE)]
        load = Load(client, people, direct=direct, s3_endpoint=s3_endpoint, seed=7)
        await _before(load)
        load.start()
        _step("people are using the app")
        try:
            recorded_before_retire = await _migrate_all_the_way(load, env, tmp_path)
        except BaseException:
            await load.halt()
            raise
        await load.stop()
        _step(f"people stopped after {load.requests} requests")
        assert not load.failures, summary(load.failures)
        await _settle(client)

        records = await _records(client)
        await _check_photos(load, records)
        await _check_new_store(load, records)
        await _check_with_rclone(
            load,
            records,
            recorded_before_retire,
            _rclone_env(s3_endpoint, tmp_path),
            source_path,
            target_path,
            tmp_path,
        )


async def _before(load: Load) -> None:
    """Before the migration: posts only the source holds, for the backfill to copy; some
    kept, some their owners delete as the migration goes."""

    async def posts(person: User, kept: int) -> None:
        made = [await load.post(person, 1) for _ in range(kept + DOOMED_BEFORE)]
        assert all(post is not None for post in made), summary(load.failures)
        load.kept += [post for post in made[:kept] if post is not None]
        load.doomed[person.id] = [post for post in made[kept:] if post is not None]

    await asyncio.gather(*(posts(p, k) for p, k in zip(load.users, KEPT_BEFORE, strict=True)))


async def _migrate_all_the_way(load: Load, env: dict[str, str], logs: Path) -> set[str]:
    """Every phase, one after the other, as an operator goes through them while people use
    the app; the keys recorded just before the retirement."""
    await load.wait_for("legacy", STEPS_PER_PHASE)
    await _enter(load, env, "dual_write", "start", "--to", "new")
    await _backfill_killed_and_resumed(load, env, logs)
    await load.wait_for("backfill", STEPS_PER_PHASE)

    repairs = await _verify_until_clean(load.client, env)  # enters phase verify
    # The backfill writes without reading back: the damage it left is found and mended.
    assert repairs["mismatched"] > 0, repairs
    assert repairs["repaired"] > 0, repairs
    await load.wait_for("verify", STEPS_PER_PHASE)

    for percent in RAMP:
        await _enter(load, env, f"read_ramp {percent}%", "ramp", str(percent))
    await _enter(load, env, "new_primary", "promote")
    await _verify_until_clean(load.client, env)
    await load.wait_for("new_primary", STEPS_PER_PHASE)

    # Everything recorded by now was written to both stores (or copied, or repaired).
    recorded = set(await _records(load.client))
    _faults_off(load.client)
    load.late = True  # a delete finishing from now on may leave the source alone
    await _enter(load, env, "retired", "retire")

    phases = ["legacy", "dual_write", "backfill", "verify"]
    phases += [f"read_ramp {p}%" for p in RAMP] + ["new_primary", "retired"]
    for phase in phases:
        for kind in KINDS:
            assert load.done[phase, kind] >= STEPS_PER_PHASE, (phase, kind, load.done)
    # Photos were served both ways: by photogram (from the filesystem, or wherever a read
    # may need to fall back) and straight from S3 by presigned URLs (when S3 alone holds
    # what is read: the source before the ramp, the new store once retired).
    assert load.fetched["photogram"] > 0, load.fetched
    assert load.fetched["s3"] > 0, load.fetched
    return recorded


async def _check_photos(load: Load, records: dict[str, tuple[int, str]]) -> None:
    """Every photo uploaded was processed, or deleted; every object recorded belongs to a
    photo that exists."""
    router = load.client.runtime.router
    states: dict[int, str] = {}
    for shard in range(router.logical_shards):
        async with router.connect(shard) as conn:
            rows = await conn.execute(select(media_attachments.c.id, media_attachments.c.state))
            states.update({row.id: row.state for row in rows})
    for media_id, owner in load.uploaded.items():
        state = states.get(int(media_id))
        if media_id in load.deleted_media:
            assert state is None, (media_id, state)
        else:
            assert state == "ready", (media_id, owner.username, state)
    orphans = sorted(
        key for key in records if not key.startswith("avatars/") and owner_of(key) not in states
    )
    assert not orphans, f"records of photos that no longer exist: {orphans}"


async def _check_new_store(load: Load, records: dict[str, tuple[int, str]]) -> None:
    """Every live object is in the new store, read through the store itself (not the
    faulty wrapper), with the recorded size and MD5; nothing else is, deleted or not."""
    real = load.client.runtime.stores["new_real"]
    held: dict[str, tuple[int, str] | None] = {}
    for key in records:
        try:
            digest = await real.digest(key)
        except ObjectNotFoundError:
            held[key] = None
        else:
            held[key] = (digest.size, digest.md5_hex)
    wrong = {key: (held[key], records[key]) for key in records if held[key] != records[key]}
    assert not wrong, f"{len(wrong)} objects missing or wrong (held, recorded): {wrong}"

    in_target = {info.key async for info in real.iterate()}
    assert load.deleted_keys, "the load deleted nothing"
    assert not load.deleted_keys & set(records)
    assert not load.deleted_keys & in_target, sorted(load.deleted_keys & in_target)
    assert in_target == set(records), sorted(in_target ^ set(records))


async def _check_with_rclone(
    load: Load,
    records: dict[str, tuple[int, str]],
    recorded_before_retire: set[str],
    env: dict[str, str],
    source: str,
    target: str,
    tmp_path: Path,
) -> None:
    """rclone, which knows nothing of photogram, compares the two stores.

    They were written alike until the retirement; since then only the new one is. So
    every object live now that was recorded before the retirement must be identical in
    both; and every other difference must be one the retirement explains.
    """
    both = sorted(set(records) & recorded_before_retire)
    assert both
    (tmp_path / "live.txt").write_text("\n".join(both) + "\n")
    checked = await _rclone_check(env, source, target, "--files-from", str(tmp_path / "live.txt"))
    assert checked.code == 0, checked.err
    assert f"{len(both)} matching files" in checked.err, checked.err
    assert "0 differences found" in checked.err, checked.err

    # The whole of both stores: in the source alone, only objects deleted since the
    # retirement (the source is no longer written, deletes included); in the new store
    # alone, only objects recorded since. Nothing differs in content.
    combined = tmp_path / "combined.txt"
    await _rclone_check(
        env,
        source,
        target,
        "--combined",
        str(combined),
        # A LocalStore writes through temporary files named ".*" (a killed backfill can
        # leave one behind); no key starts with ".", so they are no objects.
        "--exclude",
        ".*",
    )
    # Its lines: "= key" identical in both, "+ key" in the source alone, "- key" in the
    # new store alone, "* key" different, "! key" unreadable.
    sides: dict[str, set[str]] = {mark: set() for mark in "=+-*!"}
    for line in combined.read_text().splitlines():
        mark, _, key = line.partition(" ")
        sides[mark].add(key)
    assert not sides["*"], sorted(sides["*"])
    assert not sides["!"], sorted(sides["!"])
    assert set(both) <= sides["="]
    assert sides["+"] <= load.deleted_late, sorted(sides["+"] - load.deleted_late)
    since = set(records) - recorded_before_retire
    assert sides["-"] <= since, sorted(sides["-"] - since)
