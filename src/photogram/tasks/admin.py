"""What an operator does with dead background work: list it, run it again
(``photogram tasks dead``, ``photogram tasks retry``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from photogram.db.ids import InvalidIdError, parse_id
from photogram.db.metadata import outbox
from photogram.db.router import Router
from photogram.errors import PhotogramError
from photogram.tasks.outbox import TRACE_KEY, Relay, queue_of

#: Dead tasks listed (and retried by ``--all``) at most, oldest first.
DEAD_LIMIT = 10_000


@dataclass(frozen=True)
class DeadTask:
    id: str
    task: str
    queue: str
    payload: dict[str, Any]
    #: The request that queued it, if one did (its log lines carry the same ID).
    request_id: str | None
    attempts: int
    last_error: str | None
    created_at: str
    dead_at: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def dead_tasks(router: Router, limit: int = DEAD_LIMIT) -> list[DeadTask]:
    """Tasks that failed ``task_max_attempts`` times, on every shard, oldest first."""
    rows = await router.scatter(
        select(
            outbox.c.id,
            outbox.c.task,
            outbox.c.payload,
            outbox.c.attempts,
            outbox.c.last_error,
            outbox.c.created_at,
            outbox.c.dead_at,
        )
        .where(outbox.c.done_at.is_(None), outbox.c.dead_at.is_not(None))
        .order_by(outbox.c.id)
        .limit(limit),
        limit=limit,
        order="asc",
    )
    return [
        DeadTask(
            id=str(row.id),
            task=row.task,
            queue=queue_of(row.task),
            payload={k: v for k, v in row.payload.items() if k != TRACE_KEY},
            request_id=row.payload.get(TRACE_KEY),
            attempts=int(row.attempts),
            last_error=row.last_error,
            created_at=row.created_at.isoformat(),
            dead_at=row.dead_at.isoformat(),
        )
        for row in rows
    ]


async def retry_dead(relay: Relay, ids: list[str] | None) -> tuple[list[str], list[str]]:
    """Make dead tasks pending again with a fresh count of attempts, and start them.

    ``ids`` None: every dead task. Returns the IDs revived and those that were not dead
    tasks (done, pending, or unknown); a malformed ID is an error before anything changes.
    """
    router = relay.router
    if ids is None:
        wanted = [int(task.id) for task in await dead_tasks(router)]
    else:
        wanted = []
        for raw in ids:
            try:
                wanted.append(parse_id(raw))
            except InvalidIdError as exc:
                raise PhotogramError(f"{raw!r} is not a task ID: {exc}") from None
    revived: list[int] = []
    missing: list[str] = []
    for row_id in wanted:
        async with router.begin_for(row_id) as conn:
            found = await conn.scalar(
                update(outbox)
                .where(
                    outbox.c.id == row_id,
                    outbox.c.done_at.is_(None),
                    outbox.c.dead_at.is_not(None),
                )
                .values(
                    dead_at=None,
                    attempts=0,
                    available_at=datetime.now(UTC),
                    published_at=None,
                )
                .returning(outbox.c.id)
            )
        if found is None:
            missing.append(str(row_id))
        else:
            revived.append(row_id)
    await relay.dispatch(revived)
    return [str(i) for i in revived], missing
