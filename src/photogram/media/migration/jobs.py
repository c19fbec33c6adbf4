"""The backfill and the verifier: shard by shard through the database's record of objects.

Both walk ``media_objects`` on every logical shard in (media_id, variant) order, a batch at a
time, many objects in flight, and write a checkpoint per shard after each batch (the last
record finished, and counts) to ``media_migration_progress``. A job that is killed resumes
from its checkpoints; the batch it was in is done again, which is harmless because each
step is idempotent.

- **Backfill** copies every recorded object the target lacks (present = same size, and the
  same MD5 where the store keeps one) from the source, after checking the source's bytes
  against the recorded MD5.
- **Verify** reads every recorded object back from the target (the content's MD5, never a
  listing's ETag), compares size and MD5 with the record, re-copies from the source on a
  mismatch with retries and backoff, and quarantines what still fails. Each pass ends by
  removing objects in the target that the database no longer records (deleted), once
  they are older than ``media_migration_orphan_grace_seconds``.

A copy races a delete: the record goes first (the delete task removes the objects after
the commit), and after each batch the job looks again at the records of what it copied,
removing the copies of any that went meanwhile, so a delete is never undone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, update

from photogram.concurrency import gather
from photogram.db.metadata import media_migration_progress, media_migration_quarantine
from photogram.media.migration import metrics, objects, phases
from photogram.media.migration.objects import Record
from photogram.media.migration.phases import MigrationError, Phase, State
from photogram.media.migration.store import put_verified
from photogram.media.stores import (
    BlobStore,
    ObjectNotFoundError,
    StoreError,
    digest_now,
)
from photogram.runtime import Runtime

log = logging.getLogger(__name__)

Job = Literal["backfill", "verify"]

#: Records read per query and checkpointed together.
BATCH = 200
#: Attempts at an object before it is quarantined, and the first pause between them
#: (doubled each time).
ATTEMPTS = 4
FIRST_BACKOFF = 0.2
#: Keys looked up per query in the clean-up of objects the database no longer records.
SWEEP_CHUNK = 500

Progress = Callable[[int], None]


@dataclass
class Limits:
    """How hard a job may push: objects in flight, and objects and bytes per second."""

    concurrency: int = 16
    objects_per_second: float | None = None
    bytes_per_second: float | None = None


class _Throttle:
    """A token bucket per limit; ``take`` waits until the work fits under both."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._start = time.monotonic()
        self._objects = 0
        self._bytes = 0
        self._lock = asyncio.Lock()

    async def take(self, size: int) -> None:
        if self.limits.objects_per_second is None and self.limits.bytes_per_second is None:
            return
        async with self._lock:
            self._objects += 1
            self._bytes += size
            wait = 0.0
            elapsed = time.monotonic() - self._start
            if self.limits.objects_per_second:
                wait = max(wait, self._objects / self.limits.objects_per_second - elapsed)
            if self.limits.bytes_per_second:
                wait = max(wait, self._bytes / self.limits.bytes_per_second - elapsed)
            if wait > 0:
                await asyncio.sleep(wait)


@dataclass
class _Batch:
    done: int = 0
    bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)  # keys this batch wrote to the target
    quarantine: dict[str, tuple[int, str]] = field(default_factory=dict)  # key: (media id, why)
    cleared: list[str] = field(default_factory=list)  # keys found intact

    def count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n


class Mover:
    """Runs a job for one migration: the runtime's router, and its source and target stores."""

    def __init__(
        self,
        runtime: Runtime,
        state: State,
        limits: Limits | None = None,
        progress: Progress | None = None,
    ) -> None:
        if state.target is None:
            raise MigrationError("no migration is under way")
        self.runtime = runtime
        self.router = runtime.router
        self.state = state
        self.source: BlobStore = runtime.stores[state.source]
        self.target: BlobStore = runtime.stores[state.target]
        self.limits = limits or Limits()
        self.throttle = _Throttle(self.limits)
        self.progress = progress
        self._slots = asyncio.Semaphore(self.limits.concurrency)
        self._stop = False

    # --- progress rows ------------------------------------------------------------------------

    async def prepare(self, job: Job) -> tuple[int, int]:
        """Make sure ``job`` has a pass under way; (objects in it, objects already done).

        An unfinished pass is resumed from its checkpoints; otherwise a new one starts,
        every shard's total counted now.
        """
        async with self.router.global_connect() as conn:
            rows = (
                await conn.execute(
                    select(media_migration_progress).where(media_migration_progress.c.job == job)
                )
            ).all()
        shards = range(self.router.logical_shards)
        if rows and len(rows) == len(shards) and any(r.finished_at is None for r in rows):
            return sum(r.total for r in rows), sum(r.done for r in rows)
        totals = await self._gather(shards, lambda shard: objects.count(self.router, shard))
        now = datetime.now(UTC)
        async with self.router.global_begin() as conn:
            await conn.execute(
                delete(media_migration_progress).where(media_migration_progress.c.job == job)
            )
            await conn.execute(
                insert(media_migration_progress),
                [
                    {
                        "job": job,
                        "shard": shard,
                        "pass_started_at": now,
                        "total": total,
                        "updated_at": now,
                    }
                    for shard, total in zip(shards, totals, strict=True)
                ],
            )
        return sum(totals), 0

    async def _gather(self, items: Sequence[int] | range, work: Callable[[int], Any]) -> list[Any]:
        async def one(item: int) -> Any:
            async with self._slots:
                return await work(item)

        return list(await gather(*(one(i) for i in items)))

    async def _unfinished(self, job: Job) -> list[Any]:
        async with self.router.global_connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(media_migration_progress)
                        .where(media_migration_progress.c.job == job)
                        .where(media_migration_progress.c.finished_at.is_(None))
                        .order_by(media_migration_progress.c.shard)
                    )
                ).all()
            )

    async def _checkpoint(
        self,
        job: Job,
        shard: int,
        pass_started_at: datetime,
        after: tuple[int, str],
        batch: _Batch,
        finished: bool,
    ) -> None:
        p = media_migration_progress.c
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "after_media_id": after[0],
            "after_variant": after[1],
            "done": p.done + batch.done,
            "bytes": p.bytes + batch.bytes,
            "updated_at": now,
            "finished_at": now if finished else None,
        }
        for outcome, n in batch.counts.items():
            values[outcome] = getattr(p, outcome) + n
        async with self.router.global_begin() as conn:
            await conn.execute(
                update(media_migration_progress)
                # Only this pass's row: a job left running from an earlier pass (or
                # migration) cannot move the current one's checkpoint.
                .where(p.job == job, p.shard == shard, p.pass_started_at == pass_started_at)
                .values(**values)
            )
            if batch.cleared:
                await conn.execute(
                    delete(media_migration_quarantine).where(
                        media_migration_quarantine.c.key.in_(batch.cleared)
                    )
                )
            for key, (media_id, why) in batch.quarantine.items():
                await _quarantine(conn, key, media_id, why)
        for outcome, n in batch.counts.items():
            metrics.OBJECTS.labels(job, outcome).inc(n)
        metrics.BYTES.labels(job).inc(batch.bytes)

    # --- running ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batches in flight, checkpoint them and return."""
        self._stop = True

    async def run(self, job: Job) -> bool:
        """Work through every unfinished shard of ``job``'s pass; True if the pass finished."""
        work = self._backfill_one if job == "backfill" else self._verify_one
        pending = await self._unfinished(job)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for row in pending:
            queue.put_nowait(row)

        async def worker() -> None:
            while not self._stop:
                try:
                    row = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self._run_shard(job, row, work)

        workers = max(1, min(self.limits.concurrency, len(pending)))
        await gather(*(worker() for _ in range(workers)))
        return not self._stop and not await self._unfinished(job)

    async def _run_shard(self, job: Job, row: Any, work: Callable[[Record, _Batch], Any]) -> None:
        shard = row.shard
        after = (row.after_media_id, row.after_variant)
        while not self._stop:
            now = await self.runtime.media.state()
            if not now.active or now.target != self.state.target:
                log.warning("media migration: now in phase %s; stopping", now.phase)
                self._stop = True
                return
            records = await objects.page(self.router, shard, after, BATCH)
            batch = _Batch()
            await gather(*(self._one(work, record, batch) for record in records))
            await self._undo_deleted(batch)
            if batch.written:
                # The batch's copies are durable before its checkpoint says they are done.
                await self.target.flush()
            if records:
                after = (records[-1].media_id, records[-1].variant)
            finished = len(records) < BATCH
            await self._checkpoint(job, shard, row.pass_started_at, after, batch, finished)
            if self.progress is not None:
                self.progress(batch.done)
            if finished:
                return

    async def _one(
        self, work: Callable[[Record, _Batch], Any], record: Record, batch: _Batch
    ) -> None:
        async with self._slots:
            await self.throttle.take(record.size)
            await work(record, batch)
            batch.done += 1

    async def _undo_deleted(self, batch: _Batch) -> None:
        """Remove this batch's copies of objects deleted while it ran (never resurrect one)."""
        if not batch.written and not batch.quarantine:
            return
        still = await objects.live(self.router, [*batch.written, *batch.quarantine])
        for key in batch.written:
            if key not in still:
                await self._remove(key)
                batch.count("removed")
        for key in [k for k in batch.quarantine if k not in still]:
            del batch.quarantine[key]

    async def _remove(self, key: str) -> None:
        for attempt in range(ATTEMPTS):
            try:
                await self.target.delete(key)
                return
            except StoreError:
                await asyncio.sleep(FIRST_BACKOFF * 2**attempt)
        await self.target.delete(key)

    # --- one object ---------------------------------------------------------------------------

    async def _good_copy(self, record: Record) -> bytes | None:
        """The object's bytes from the source, if the source holds the recorded ones."""
        try:
            data = await self.source.get(record.key)
        except ObjectNotFoundError:
            return None
        sent = digest_now(data)
        if sent.size != record.size or sent.md5_hex != record.md5:
            return None
        return data

    async def _backfill_one(self, record: Record, batch: _Batch) -> None:
        why = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(FIRST_BACKOFF * 2 ** (attempt - 1))
            try:
                outcome = await self.target.copy_from(
                    self.source, record.key, record.size, record.md5
                )
            except StoreError as exc:
                why = str(exc)
                continue
            if outcome == "source-differs":
                why = f"the source {self.source.name!r} lacks the recorded bytes"
                break
            batch.count(outcome)
            if outcome == "copied":
                batch.bytes += record.size
                batch.written.append(record.key)
            return
        batch.count("quarantined")
        batch.quarantine[record.key] = (record.media_id, f"not copied: {why}")

    async def _verify_one(self, record: Record, batch: _Batch) -> None:
        why = ""
        mismatched = False
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(FIRST_BACKOFF * 2 ** (attempt - 1))
            try:
                held = await self.target.digest(record.key)
            except ObjectNotFoundError:
                held = None
            except StoreError as exc:
                why = str(exc)
                continue
            batch.bytes += record.size
            if held is not None and held.size == record.size and held.md5_hex == record.md5:
                batch.count("repaired" if mismatched else "verified")
                batch.cleared.append(record.key)
                return
            if not mismatched:
                mismatched = True
                batch.count("mismatched")
            why = "missing" if held is None else f"MD5 {held.md5_hex}, size {held.size}"
            data = await self._good_copy(record)
            if data is None:
                why = f"{why}; the source {self.source.name!r} lacks the recorded bytes"
                break
            try:
                await put_verified(self.target, record.key, data, digest_now(data), attempts=1)
            except StoreError as exc:
                why = f"{why}; re-copy failed: {exc}"
                continue
            batch.written.append(record.key)
            batch.count("repaired")
            batch.cleared.append(record.key)
            return
        batch.count("quarantined")
        batch.quarantine[record.key] = (record.media_id, why)

    # --- the end of a verification pass -------------------------------------------------------

    async def sweep(self, grace_seconds: float) -> int:
        """Remove objects in the target that the database no longer records; how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
        removed = 0
        chunk: list[str] = []

        async def flush() -> int:
            still = await objects.live(self.router, chunk)
            gone = [key for key in chunk if key not in still and objects.owner_of(key) is not None]
            for key in gone:
                await self._remove(key)
            chunk.clear()
            return len(gone)

        async for info in self.target.iterate():
            if info.modified is not None and info.modified > cutoff:
                continue  # perhaps an upload whose record is not committed yet
            chunk.append(info.key)
            if len(chunk) >= SWEEP_CHUNK:
                removed += await flush()
        if chunk:
            removed += await flush()
        metrics.OBJECTS.labels("verify", "removed").inc(removed)
        return removed

    async def finish_pass(self) -> tuple[bool, int]:
        """Close a finished verification pass: drop quarantined keys the database no
        longer records, record the pass as clean if nothing is left quarantined; (clean,
        objects still quarantined)."""
        async with self.router.global_connect() as conn:
            keys = list(await conn.scalars(select(media_migration_quarantine.c.key)))
            began = await conn.scalar(
                select(func.min(media_migration_progress.c.pass_started_at)).where(
                    media_migration_progress.c.job == "verify"
                )
            )
        still = await objects.live(self.router, keys) if keys else set()
        async with self.router.global_begin() as conn:
            gone = [key for key in keys if key not in still]
            if gone:
                await conn.execute(
                    delete(media_migration_quarantine).where(
                        media_migration_quarantine.c.key.in_(gone)
                    )
                )
            if not still and began is not None:
                await phases.record_clean_pass(conn, began, datetime.now(UTC))
        return not still, len(still)


async def _quarantine(conn: Any, key: str, media_id: int, why: str) -> None:
    q = media_migration_quarantine.c
    now = datetime.now(UTC)
    changed = await conn.execute(
        update(media_migration_quarantine)
        .where(q.key == key)
        .values(reason=why, attempts=q.attempts + 1, updated_at=now)
    )
    if changed.rowcount == 0:
        await conn.execute(
            insert(media_migration_quarantine).values(
                key=key, media_id=media_id, reason=why, updated_at=now
            )
        )


# --- status -------------------------------------------------------------------------------------


@dataclass
class JobStatus:
    total: int
    done: int
    shards: int
    shards_finished: int
    counts: dict[str, int]
    bytes: int
    objects_per_second: float | None
    eta_seconds: float | None
    started_at: datetime | None
    updated_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.shards > 0 and self.shards_finished == self.shards


COUNTS = ("copied", "present", "verified", "mismatched", "repaired", "quarantined", "removed")


async def job_status(conn: Any, job: Job) -> JobStatus:
    p = media_migration_progress.c
    row = (
        await conn.execute(
            select(
                func.count(),
                func.count(p.finished_at),
                func.coalesce(func.sum(p.total), 0),
                func.coalesce(func.sum(p.done), 0),
                func.coalesce(func.sum(p.bytes), 0),
                func.min(p.pass_started_at),
                func.max(p.updated_at),
                *(func.coalesce(func.sum(getattr(p, name)), 0) for name in COUNTS),
            ).where(p.job == job)
        )
    ).one()
    # PostgreSQL sums bigints as numeric (Decimal): counts are ints here.
    shards, finished, total, done, nbytes = (int(n) for n in row[:5])
    started, updated = row[5:7]
    rate = eta = None
    if started is not None and updated is not None and done:
        seconds = (updated - started).total_seconds()
        if seconds > 0:
            rate = done / seconds
            eta = max(0, total - done) / rate if shards != finished else 0.0
    return JobStatus(
        total=total,
        done=done,
        shards=shards,
        shards_finished=finished,
        counts={name: int(n) for name, n in zip(COUNTS, row[7:], strict=True)},
        bytes=nbytes,
        objects_per_second=rate,
        eta_seconds=eta,
        started_at=started,
        updated_at=updated,
    )


async def status(runtime: Runtime) -> dict[str, Any]:
    """Everything ``photogram media migrate status`` shows, as plain data."""
    async with runtime.router.global_connect() as conn:
        state = await phases.load(conn, runtime.settings.media_store)
        jobs = {job: await job_status(conn, job) for job in ("backfill", "verify")}
        quarantined = int(
            await conn.scalar(select(func.count()).select_from(media_migration_quarantine)) or 0
        )

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "phase": state.phase.value,
        "source": state.source,
        "target": state.target,
        "read_percent": state.read_percent,
        "primary": state.primary,
        "phase_changed_at": when(state.phase_changed_at),
        "verified_at": when(state.verified_at),
        "quarantined": quarantined,
        "jobs": {
            job: {
                "total": s.total,
                "done": s.done,
                "finished": s.finished,
                "shards": s.shards,
                "shards_finished": s.shards_finished,
                **s.counts,
                "bytes": s.bytes,
                "objects_per_second": s.objects_per_second,
                "eta_seconds": s.eta_seconds,
                "started_at": when(s.started_at),
                "updated_at": when(s.updated_at),
            }
            for job, s in jobs.items()
        },
    }


# --- phase steps that run a job -------------------------------------------------------------


def propagation_seconds(runtime: Runtime) -> float:
    """How long after a phase change every process is sure to follow it."""
    return 2 * runtime.settings.media_migration_refresh_seconds + 1


async def wait_for_everyone(runtime: Runtime, state: State, say: Callable[[str], None]) -> None:
    """Wait until every process has read the current phase (its change is old enough)."""
    if state.phase_changed_at is None:
        return
    ready = state.phase_changed_at + timedelta(seconds=propagation_seconds(runtime))
    wait = (ready - datetime.now(UTC)).total_seconds()
    if wait > 0:
        say(f"waiting {wait:.1f} s for every server to follow phase {state.phase}")
        await asyncio.sleep(wait)


async def enter(runtime: Runtime, to: Phase, **kwargs: Any) -> State:
    """Move the migration to phase ``to`` (checked) and make this process follow it now."""
    async with runtime.router.global_begin() as conn:
        state = await phases.move(conn, runtime.settings.media_store, to, **kwargs)
    await runtime.media.refresh()
    return state


async def begin_backfill(runtime: Runtime, say: Callable[[str], None]) -> State:
    async with runtime.router.global_connect() as conn:
        state = await phases.load(conn, runtime.settings.media_store)
    if state.phase is Phase.DUAL_WRITE:
        # Everything uploaded from now on is written to both: wait until that is true on
        # every server, so the copy leaves nothing behind.
        await wait_for_everyone(runtime, state, say)
    return await enter(runtime, Phase.BACKFILL)


async def begin_verify(runtime: Runtime) -> State:
    async with runtime.router.global_connect() as conn:
        state = await phases.load(conn, runtime.settings.media_store)
        backfill = await job_status(conn, "backfill")
    if state.phase in (Phase.VERIFY, Phase.READ_RAMP, Phase.NEW_PRIMARY):
        return state
    if state.phase is Phase.BACKFILL:
        if not backfill.finished:
            raise MigrationError(
                f"the backfill has finished {backfill.shards_finished} of "
                f"{backfill.shards or runtime.router.logical_shards} shards; run "
                "`photogram media migrate backfill` to the end first"
            )
        return await enter(runtime, Phase.VERIFY)
    if state.phase is Phase.DUAL_WRITE:
        raise MigrationError("nothing is copied yet; run `photogram media migrate backfill` first")
    raise MigrationError(
        "no migration is under way; start one with `photogram media migrate start --to STORE`"
    )


async def still_active(runtime: Runtime) -> State:
    state = await runtime.media.refresh()
    if not state.active:
        raise MigrationError(f"the migration is now in phase {state.phase}; stopping")
    return state
