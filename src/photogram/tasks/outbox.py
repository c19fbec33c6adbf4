"""The outbox: background work written in the same transaction as the change that needs it.

An action calls ``enqueue`` inside its own shard transaction; once that commits, the work
is certain to happen. ``Relay.dispatch`` runs it straight after the commit; if that fails,
or the process dies first, the row stays pending and ``Relay.sweep`` (run periodically by
every process) picks it up. Tasks take IDs, never objects, and must be idempotent: they
can run more than once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.ids import next_id
from photogram.db.metadata import outbox
from photogram.db.router import Router

if TYPE_CHECKING:
    from photogram.runtime import Runtime

log = logging.getLogger(__name__)

Payload = dict[str, Any]
TaskFunction = Callable[["Relay", Payload], Awaitable[None]]

_TASKS: dict[str, TaskFunction] = {}

#: Seconds to wait before retry n (then the last value, forever).
BACKOFF = (1, 5, 30, 120, 600)


def task(name: str) -> Callable[[TaskFunction], TaskFunction]:
    """Register a background task under a stable name (the name is stored in the outbox)."""

    def register(fn: TaskFunction) -> TaskFunction:
        if name in _TASKS and _TASKS[name] is not fn:
            raise ValueError(f"task {name!r} registered twice")
        _TASKS[name] = fn
        return fn

    return register


async def enqueue(conn: AsyncConnection, shard: int, name: str, **payload: Any) -> int:
    """Write task ``name`` to ``shard``'s outbox in ``conn``'s open transaction; its row ID."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}")
    row_id = await conn.scalar(
        insert(outbox).values(id=next_id(shard), task=name, payload=payload).returning(outbox.c.id)
    )
    assert row_id is not None
    return int(row_id)


class Relay:
    """Runs outbox rows: right after their commit, and again later if that did not finish."""

    def __init__(self, router: Router) -> None:
        self.router = router
        #: The process's Runtime, for tasks that need more than the router (media stores).
        self.runtime: Runtime | None = None

    async def dispatch(self, row_ids: Iterable[int]) -> None:
        """Run just-committed rows now. A failure leaves the row for the sweep, not the caller."""
        for row_id in row_ids:
            await self._run_one(row_id)

    async def _run_one(self, row_id: int) -> bool:
        async with self.router.connect_for(row_id) as conn:
            row = (
                await conn.execute(
                    select(outbox.c.task, outbox.c.payload, outbox.c.done_at).where(
                        outbox.c.id == row_id
                    )
                )
            ).one_or_none()
        if row is None or row.done_at is not None:
            return False
        fn = _TASKS.get(row.task)
        try:
            if fn is None:
                raise LookupError(f"no task named {row.task!r}")
            await fn(self, dict(row.payload))
        except Exception:
            log.exception("outbox task %s (%s) failed; it will be retried", row.task, row_id)
            await self._failed(row_id)
            return False
        async with self.router.begin_for(row_id) as conn:
            await conn.execute(
                update(outbox).where(outbox.c.id == row_id).values(done_at=datetime.now(UTC))
            )
        return True

    async def _failed(self, row_id: int) -> None:
        async with self.router.begin_for(row_id) as conn:
            attempts = int(
                await conn.scalar(select(outbox.c.attempts).where(outbox.c.id == row_id)) or 0
            )
            delay = BACKOFF[min(attempts, len(BACKOFF) - 1)]
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == row_id)
                .values(
                    attempts=attempts + 1,
                    available_at=datetime.now(UTC) + timedelta(seconds=delay),
                )
            )

    async def sweep(self, limit: int = 500) -> int:
        """Run pending rows that are due, oldest first, on every shard; how many succeeded."""
        now = datetime.now(UTC)
        due = (
            select(outbox.c.id)
            .where(outbox.c.done_at.is_(None), outbox.c.available_at <= now)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        rows = await self.router.scatter(due, limit=limit, order="asc")
        done = 0
        for row in rows:
            done += await self._run_one(int(row.id))
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
