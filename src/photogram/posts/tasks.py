"""Background work of posts: keeping each liker's list of likes, and the notifications of
likes, in step with the likes.

A like is authoritative on the liked status's shard (where it is counted); the liker's
``account_favourites`` mirror, which ``GET /api/v1/favourites`` pages through, follows
it by a state-based sync, like the follow graph's mirrors: it may run late or twice and
still leaves the mirror right.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.metadata import account_favourites, favourites, statuses
from photogram.graph.queries import reconcile
from photogram.graph.tasks import converge
from photogram.notifications.tasks import add_notification, remove_notification
from photogram.tasks.outbox import Payload, Relay, enqueue, task

SYNC_FAVOURITES = "posts.sync_favourites"


async def enqueue_sync_favourites(
    conn: AsyncConnection, shard: int, authors: dict[int, int], account_ids: list[int]
) -> int:
    """Queue a sync of ``account_ids``' likes of the statuses ``authors`` maps to their
    authors (one thread's statuses: all on ``shard``)."""
    return await enqueue(
        conn,
        shard,
        SYNC_FAVOURITES,
        authors={str(s): str(a) for s, a in authors.items()},
        account_ids=[str(a) for a in sorted(set(account_ids))],
    )


@task(SYNC_FAVOURITES)
async def sync_favourites(relay: Relay, payload: Payload) -> None:
    """Make each liker's ``account_favourites`` mirror, and the author's ``favourite``
    notification, match the likes as they are now. An unlike takes the notification back
    (as Mastodon does); a status that no longer exists leaves its notifications to be
    dropped when read."""
    authors = {int(s): int(a) for s, a in payload["authors"].items()}
    status_ids = list(authors)
    router = relay.router
    State = dict[int, tuple[int | None, bool]]  # status -> (like ID, status exists)

    for account_id in (int(a) for a in payload["account_ids"]):

        async def read(account_id: int = account_id) -> State:
            async with router.connect_for(status_ids[0]) as conn:
                likes = {
                    int(r.status_id): int(r.id)
                    for r in await conn.execute(
                        select(favourites.c.id, favourites.c.status_id).where(
                            favourites.c.account_id == account_id,
                            favourites.c.status_id.in_(status_ids),
                        )
                    )
                }
                existing = set(
                    (
                        await conn.execute(
                            select(statuses.c.id).where(statuses.c.id.in_(status_ids))
                        )
                    ).scalars()
                )
            return {s: (likes.get(s), s in existing) for s in status_ids}

        async def write(state: State, account_id: int = account_id) -> list[int]:
            async with router.begin_for(account_id) as conn:
                for status_id, (like_id, _) in state.items():
                    await reconcile(conn, account_favourites, account_id, status_id, like_id)
            for status_id, (like_id, exists) in state.items():
                if not exists:
                    continue
                author = authors[status_id]
                async with router.begin_for(author) as conn:
                    change = add_notification if like_id is not None else remove_notification
                    await change(conn, author, "favourite", account_id, status_id)
            return []

        await converge(relay, read, write)
