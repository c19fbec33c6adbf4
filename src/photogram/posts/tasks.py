"""Background work of posts: keeping each liker's list of likes in step with the likes.

A like is authoritative on the liked status's shard (where it is counted); the liker's
``account_favourites`` mirror, which ``GET /api/v1/favourites`` pages through, follows
it by a state-based sync, like the follow graph's mirrors: it may run late or twice and
still leaves the mirror right.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.metadata import account_favourites, favourites
from photogram.graph.queries import reconcile
from photogram.graph.tasks import converge
from photogram.tasks.outbox import Payload, Relay, enqueue, task

SYNC_FAVOURITES = "posts.sync_favourites"


async def enqueue_sync_favourites(
    conn: AsyncConnection, shard: int, status_ids: list[int], account_ids: list[int]
) -> int:
    """Queue a sync of ``account_ids``' mirrors of their likes of ``status_ids``."""
    return await enqueue(
        conn,
        shard,
        SYNC_FAVOURITES,
        status_ids=[str(s) for s in status_ids],
        account_ids=[str(a) for a in sorted(set(account_ids))],
    )


@task(SYNC_FAVOURITES)
async def sync_favourites(relay: Relay, payload: Payload) -> None:
    status_ids = [int(s) for s in payload["status_ids"]]
    router = relay.router
    for account_id in (int(a) for a in payload["account_ids"]):

        async def read(account_id: int = account_id) -> dict[int, int | None]:
            async with router.connect_for(status_ids[0]) as conn:
                found = {
                    int(r.status_id): int(r.id)
                    for r in await conn.execute(
                        select(favourites.c.id, favourites.c.status_id).where(
                            favourites.c.account_id == account_id,
                            favourites.c.status_id.in_(status_ids),
                        )
                    )
                }
            return {s: found.get(s) for s in status_ids}

        async def write(state: dict[int, int | None], account_id: int = account_id) -> list[int]:
            async with router.begin_for(account_id) as conn:
                for status_id, like_id in state.items():
                    await reconcile(conn, account_favourites, account_id, status_id, like_id)
            return []

        await converge(relay, read, write)
