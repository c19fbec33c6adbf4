"""The outbox: background work written in the same transaction as the change that needs it.

An action calls ``enqueue`` inside its own shard transaction; once that commits, the work
is certain to happen. ``Relay.dispatch`` starts it straight after the commit: it runs it in
this process (the embedded default), or hands it to the broker for a worker
(``broker_url``; docs/tasks.md). If that fails, or the process dies first, the row stays
pending and ``Relay.sweep`` (run periodically by every process) starts it again. Tasks
take IDs, never objects, and must be idempotent: they can run more than once. A task that
keeps failing is retried with backoff, then marked dead for an operator to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import outbox
from photogram.db.router import Router
from photogram.observe import REQUEST_ID
from photogram.tasks import metrics

if TYPE_CHECKING:
    from photogram.runtime import Runtime

log = logging.getLogger(__name__)

Payload = dict[str, Any]
#: The payload key that carries the ID of the request that queued a task (not passed on).
TRACE_KEY = "_request_id"
TaskFunction = Callable[["Relay", Payload], Awaitable[None]]

_TASKS: dict[str, TaskFunction] = {}

#: The broker queues, in the order a worker that serves them all takes them by default.
QUEUES = ("media", "notifications", "default", "fanout", "maintenance")

#: Each task's queue (``default`` unless registered with another).
_QUEUE_OF: dict[str, str] = {}

#: Seconds to wait before retry n (then the last value, until the task is dead).
BACKOFF = (1, 5, 30, 120, 600)

#: How often ``start_and_wait`` looks whether a worker has finished a row.
WAIT_POLL_SECONDS = 0.05

#: How much of a failed task's error the outbox keeps.
ERROR_CHARS = 2000


def task(name: str, *, queue: str = "default") -> Callable[[TaskFunction], TaskFunction]:
    """Register a background task under a stable name (the name is stored in the outbox).

    ``queue`` is the broker queue it goes to (``QUEUES``): work that may come in floods
    (fan-out) has its own, so it cannot hold up the rest.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")

    def register(fn: TaskFunction) -> TaskFunction:
        if name in _TASKS and _TASKS[name] is not fn:
            raise ValueError(f"task {name!r} registered twice")
        _TASKS[name] = fn
        _QUEUE_OF[name] = queue
        return fn

    return register


async def enqueue(conn: AsyncConnection, shard: int, name: str, **payload: Any) -> int:
    """Write task ``name`` to ``shard``'s outbox in ``conn``'s open transaction; its row ID."""
    if _known(name) is None:
        raise ValueError(f"unknown task {name!r}")
    request_id = REQUEST_ID.get()
    if request_id is not None:  # the task's log lines carry the request that queued it
        payload[TRACE_KEY] = request_id
    row_id = await conn.scalar(
        insert(outbox).values(id=next_id(shard), task=name, payload=payload).returning(outbox.c.id)
    )
    assert row_id is not None
    return int(row_id)


class Publisher(Protocol):
    """Hands outbox rows to a broker (``tasks/broker.py``)."""

    async def publish(self, rows: Sequence[tuple[int, str]]) -> int:
        """Publish ``(row_id, queue)`` pairs in order; how many were published before a
        failure (the rest stay pending for the sweep)."""
        ...

    async def close(self) -> None: ...


def _known(name: str) -> TaskFunction | None:
    """Task ``name``'s function. A process need not have imported the module that defines
    it (the command line imports little): on a miss every task module is imported first."""
    if name not in _TASKS:
        from photogram.tasks.registry import import_tasks

        import_tasks()
    return _TASKS.get(name)


def queue_of(name: str) -> str:
    _known(name)
    return _QUEUE_OF.get(name, "default")


class Relay:
    """Runs outbox rows: right after their commit, and again later if that did not finish.

    With no ``publisher`` (the embedded default) it runs them in this process. With one,
    it hands them to the broker instead, and a worker calls ``run``: either way the same
    task functions run, fed by the same outbox rows.
    """

    def __init__(self, router: Router, publisher: Publisher | None = None) -> None:
        self.router = router
        self.publisher = publisher
        #: The process's Runtime, for tasks that need more than the router (media stores).
        self.runtime: Runtime | None = None
        #: Rows this process is running now: a sweep (or a second delivery) that finds one
        #: leaves it to the run under way instead of starting it a second time alongside.
        self._running: set[int] = set()

    async def dispatch(self, row_ids: Iterable[int]) -> None:
        """Start just-committed rows. A failure leaves the row for the sweep, not the caller."""
        if self.publisher is None:
            for row_id in row_ids:
                await self.run(row_id)
        else:
            await self.hand_over(list(row_ids))

    async def start_and_wait(self, row_id: int, seconds: float) -> bool:
        """Start a just-committed row and wait up to ``seconds`` for it to finish;
        whether it did. It goes on past that, in this process or on a worker."""
        if self.publisher is None:
            assert self.runtime is not None
            work = self.runtime.in_background(self.dispatch([row_id]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(work), seconds)
            return work.done()
        if not await self.hand_over([row_id]):
            return False  # the broker is unreachable: no worker will have it soon
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            async with self.router.connect_for(row_id) as conn:
                done = await conn.scalar(select(outbox.c.done_at).where(outbox.c.id == row_id))
            if done is not None:
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(WAIT_POLL_SECONDS)

    async def run(self, row_id: int) -> bool:
        """Run one row's task unless it is done (or dead), or running in this process
        already; whether it ran and succeeded."""
        if row_id in self._running:
            return False
        self._running.add(row_id)
        try:
            return await self._run(row_id)
        finally:
            self._running.discard(row_id)

    async def _run(self, row_id: int) -> bool:
        async with self.router.connect_for(row_id) as conn:
            row = (
                await conn.execute(
                    select(
                        outbox.c.task, outbox.c.payload, outbox.c.done_at, outbox.c.dead_at
                    ).where(outbox.c.id == row_id)
                )
            ).one_or_none()
        if row is None or row.done_at is not None or row.dead_at is not None:
            return False
        fn = _known(row.task)
        payload = dict(row.payload)
        trace = REQUEST_ID.set(payload.pop(TRACE_KEY, None) or REQUEST_ID.get())
        started = time.perf_counter()
        try:
            if fn is None:
                raise LookupError(f"no task named {row.task!r}")
            await fn(self, payload)
            log.info(
                "task %s (%s) done",
                row.task,
                row_id,
                extra={"task": row.task, "row_id": row_id},
            )
        except Exception as error:
            log.exception("outbox task %s (%s) failed; it will be retried", row.task, row_id)
            dead = await self._failed(row_id, error)
            metrics.RUNS.labels(row.task, "dead" if dead else "failed").inc()
            return False
        finally:
            metrics.SECONDS.labels(row.task).observe(time.perf_counter() - started)
            REQUEST_ID.reset(trace)
        metrics.RUNS.labels(row.task, "succeeded").inc()
        async with self.router.begin_for(row_id) as conn:
            await conn.execute(
                update(outbox).where(outbox.c.id == row_id).values(done_at=datetime.now(UTC))
            )
        return True

    # The name the tests and older callers know.
    _run_one = run

    async def _failed(self, row_id: int, error: Exception) -> bool:
        """Record a failure and when to try again; whether the task is now dead."""
        now = datetime.now(UTC)
        async with self.router.begin_for(row_id) as conn:
            attempts = 1 + int(
                await conn.scalar(select(outbox.c.attempts).where(outbox.c.id == row_id)) or 0
            )
            delay = BACKOFF[min(attempts - 1, len(BACKOFF) - 1)]
            dead = attempts >= self.router.settings.task_max_attempts
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == row_id)
                .values(
                    attempts=attempts,
                    available_at=now + timedelta(seconds=delay),
                    published_at=None,
                    dead_at=now if dead else None,
                    last_error=f"{type(error).__name__}: {error}"[:ERROR_CHARS],
                )
            )
        if dead:
            log.error("outbox task %s failed %d times: it is dead", row_id, attempts)
        return dead

    async def hand_over(self, row_ids: list[int]) -> int:
        """Claim rows for the broker (so one relay publishes each) and publish them; how
        many went. Rows that did not go are released for the sweep; nothing is raised."""
        assert self.publisher is not None
        if not row_ids:
            return 0
        now = datetime.now(UTC)
        stale = now - timedelta(seconds=self.router.settings.task_republish_seconds)
        claimed: list[tuple[int, str]] = []
        by_shard: dict[int, list[int]] = {}
        for row_id in row_ids:
            by_shard.setdefault(shard_of(row_id), []).append(row_id)
        try:
            for ids in by_shard.values():
                async with self.router.begin_for(ids[0]) as conn:
                    rows = await conn.execute(
                        update(outbox)
                        .where(
                            outbox.c.id.in_(ids),
                            outbox.c.done_at.is_(None),
                            outbox.c.dead_at.is_(None),
                            or_(outbox.c.published_at.is_(None), outbox.c.published_at < stale),
                        )
                        .values(published_at=now)
                        .returning(outbox.c.id, outbox.c.task)
                    )
                    claimed += [(int(r.id), queue_of(r.task)) for r in rows]
        except Exception:
            log.exception("could not claim outbox rows; the sweep will retry")
        claimed.sort()
        sent = 0
        try:
            sent = await self.publisher.publish(claimed)
        except Exception:
            log.exception("publishing outbox rows failed; the sweep will retry")
        for _, queue in claimed[:sent]:
            metrics.PUBLISHED.labels(queue).inc()
        unsent = [row_id for row_id, _ in claimed[sent:]]
        if unsent:
            metrics.PUBLISH_FAILURES.inc(len(unsent))
            await self._release(unsent, now)
        return sent

    async def _release(self, row_ids: list[int], claimed_at: datetime) -> None:
        """Give back claims that were not published, so the next sweep takes them at once."""
        by_shard: dict[int, list[int]] = {}
        for row_id in row_ids:
            by_shard.setdefault(shard_of(row_id), []).append(row_id)
        for ids in by_shard.values():
            try:
                async with self.router.begin_for(ids[0]) as conn:
                    await conn.execute(
                        update(outbox)
                        .where(outbox.c.id.in_(ids), outbox.c.published_at == claimed_at)
                        .values(published_at=None)
                    )
            except Exception:
                # The claim then lapses after task_republish_seconds instead.
                log.exception("could not release outbox claims")

    async def sweep(self, limit: int = 500) -> int:
        """Start pending rows that are due, oldest first, on every shard; how many ran
        (without a broker) or were handed over (with one)."""
        now = datetime.now(UTC)
        due = select(outbox.c.id).where(
            outbox.c.done_at.is_(None), outbox.c.dead_at.is_(None), outbox.c.available_at <= now
        )
        if self.publisher is not None:
            stale = now - timedelta(seconds=self.router.settings.task_republish_seconds)
            due = due.where(or_(outbox.c.published_at.is_(None), outbox.c.published_at < stale))
        rows = await self.router.scatter(
            due.order_by(outbox.c.id).limit(limit), limit=limit, order="asc"
        )
        ids = [int(row.id) for row in rows]
        if self.publisher is not None:
            return await self.hand_over(ids)
        done = 0
        for row_id in ids:
            done += await self.run(row_id)
        return done

    async def sweep_forever(self, interval: float, stop: asyncio.Event) -> None:
        """Sweep every ``interval`` seconds until ``stop`` is set.

        Stopping waits for the sweep under way rather than cancelling it: a query
        cancelled half-way can leave its database connection neither returned nor closed.
        """
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("outbox sweep failed; trying again in %ss", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
