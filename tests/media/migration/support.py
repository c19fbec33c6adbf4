"""Helpers for the media migration's tests: stores with faults on tap, the database's record
of objects, what each store holds, and running every queued task to the end."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from photogram.db.metadata import media_objects, outbox
from photogram.media.faulty import FaultyStore
from photogram.media.migration import jobs, phases, store
from photogram.media.migration.jobs import Mover
from photogram.media.migration.phases import Phase, State
from photogram.runtime import Runtime
from photogram.settings import FaultyStoreSettings, FilesystemStoreSettings

#: The source and the target each wrap a directory in a faulty store, so a test can make
#: either fail its writes at any moment; their objects are files under SOURCE_DIR and
#: TARGET_DIR in the data dir.
SOURCE_DIR = "old"
TARGET_DIR = "new"
STORES = {
    "old_disk": {"kind": "filesystem", "path": SOURCE_DIR},
    "new_disk": {"kind": "filesystem", "path": TARGET_DIR},
    "old": {"kind": "faulty", "store": "old_disk"},
    "new": {"kind": "faulty", "store": "new_disk"},
}
SOURCE = "old"
TARGET = "new"
SOURCE_DISK = "old_disk"
TARGET_DISK = "new_disk"

#: The settings every migration test runs with (besides the backend's).
MIGRATION_SETTINGS: dict[str, object] = {
    "media_stores": STORES,
    "media_store": SOURCE,
    "media_migration_refresh_seconds": 0.1,
    "media_migration_orphan_grace_seconds": 0,
}


def no_retry_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries of failed writes at once: a store made to fail every write fails them fast."""
    monkeypatch.setattr(store, "TARGET_RETRY_PAUSE", 0.0)
    monkeypatch.setattr(jobs, "FIRST_BACKOFF", 0.0)


def set_writes_failing(runtime: Runtime, name: str, failing: bool) -> None:
    """Make every write to store ``name`` (one of the faulty ones) fail, or none."""
    faulty = runtime.stores[name]
    assert isinstance(faulty, FaultyStore)
    faulty.config = FaultyStoreSettings(
        kind="faulty", store=faulty.config.store, write_error_rate=1.0 if failing else 0.0
    )


def directory(runtime: Runtime, name: str) -> Path:
    """Where filesystem store ``name`` keeps its objects."""
    config = runtime.settings.media_stores[name]
    assert isinstance(config, FilesystemStoreSettings)
    return Path(config.path)


def held(root: Path) -> dict[str, str]:
    """Every object in a filesystem store's directory: key → MD5 of its content."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.md5(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


async def records(runtime: Runtime) -> dict[str, str]:
    """Every live object the database records, on every shard: key → recorded MD5."""
    found: dict[str, str] = {}
    router = runtime.router
    for shard in range(router.logical_shards):
        async with router.connect(shard) as conn:
            for row in await conn.execute(select(media_objects.c.key, media_objects.c.md5)):
                found[row.key] = row.md5
    return found


async def photo_keys(runtime: Runtime, media_id: int) -> set[str]:
    """The keys recorded for one photo (none until it is processed, none once deleted)."""
    async with runtime.router.connect_for(media_id) as conn:
        return set(
            await conn.scalars(
                select(media_objects.c.key).where(media_objects.c.media_id == media_id)
            )
        )


async def drain(runtime: Runtime, rounds: int = 20) -> None:
    """Run queued tasks until none is left that can succeed: work started in the
    background first, then every pending outbox row at once, its retry backoff waived."""
    router = runtime.router
    for _ in range(rounds):
        while runtime._background:
            await asyncio.gather(*list(runtime._background), return_exceptions=True)
        now = datetime.now(UTC)
        for shard in range(router.logical_shards):
            async with router.begin(shard) as conn:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.done_at.is_(None), outbox.c.dead_at.is_(None))
                    .values(available_at=now)
                )
        if not await runtime.relay.sweep() and not runtime._background:
            return


# --- the operator's steps, in this process (what the CLI commands run) -----------------------


async def start(runtime: Runtime) -> State:
    """``migrate start --to new``."""
    async with runtime.router.global_begin() as conn:
        await phases.start(conn, runtime.settings.media_store, TARGET)
    return await runtime.media.refresh()


async def run_pass(runtime: Runtime, job: jobs.Job, mover: Mover | None = None) -> Mover:
    """One whole pass of ``job`` (resumed if one is unfinished); the mover that ran it."""
    if mover is None:
        mover = Mover(runtime, await runtime.media.refresh())
    await mover.prepare(job)
    assert await mover.run(job), f"the {job} pass stopped before the end"
    return mover


async def backfill(runtime: Runtime) -> None:
    """``migrate backfill`` (without waiting for other processes: there are none)."""
    await jobs.enter(runtime, Phase.BACKFILL)
    await run_pass(runtime, "backfill")


async def verify(runtime: Runtime) -> bool:
    """``migrate verify``: one pass, its sweep of deleted objects; whether it was clean."""
    await jobs.begin_verify(runtime)
    mover = await run_pass(runtime, "verify")
    await mover.sweep(runtime.settings.media_migration_orphan_grace_seconds)
    clean, _ = await mover.finish_pass()
    await runtime.media.refresh()
    return clean


async def rollback(runtime: Runtime, to: Phase = Phase.LEGACY) -> State:
    """``migrate rollback --to PHASE``."""
    async with runtime.router.global_begin() as conn:
        await phases.rollback(conn, runtime.settings.media_store, to)
    return await runtime.media.refresh()
