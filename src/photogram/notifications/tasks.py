"""Creating notifications: always on the recipient's shard, at most one per event.

A notification is keyed by (recipient, type, sender, status), so a task that runs twice
notifies once. Whether it is shown is decided when it is read (blocks, mutes, a deleted
status), not here: a block made after the event hides it just the same.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import notifications
from photogram.tasks.outbox import Payload, Relay, enqueue, task

NOTIFY = "notifications.notify"

#: Mastodon's notification types that photogram makes.
TYPES = ("mention", "favourite", "follow", "follow_request")


async def add_notification(
    conn: AsyncConnection, recipient_id: int, type_: str, from_account_id: int, status_id: int = 0
) -> None:
    """Notify ``recipient_id`` in ``conn``'s transaction (which must be on its shard)."""
    if recipient_id == from_account_id:
        return
    make = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    await conn.execute(
        make(notifications)
        .values(
            id=next_id(shard_of(recipient_id)),
            account_id=recipient_id,
            type=type_,
            from_account_id=from_account_id,
            status_id=status_id,
        )
        .on_conflict_do_nothing(
            index_elements=["account_id", "type", "from_account_id", "status_id"]
        )
    )


async def remove_notification(
    conn: AsyncConnection, recipient_id: int, type_: str, from_account_id: int, status_id: int = 0
) -> None:
    await conn.execute(
        delete(notifications).where(
            notifications.c.account_id == recipient_id,
            notifications.c.type == type_,
            notifications.c.from_account_id == from_account_id,
            notifications.c.status_id == status_id,
        )
    )


async def enqueue_notify(
    conn: AsyncConnection,
    shard: int,
    recipient_id: int,
    type_: str,
    from_account_id: int,
    status_id: int = 0,
) -> int | None:
    """Queue a notification for another shard, in ``conn``'s transaction (on ``shard``);
    the outbox row's ID, or None when there is nobody to notify."""
    if recipient_id == from_account_id:
        return None
    return await enqueue(
        conn,
        shard,
        NOTIFY,
        recipient_id=recipient_id,
        type=type_,
        from_account_id=from_account_id,
        status_id=status_id,
    )


@task(NOTIFY, queue="notifications")
async def notify(relay: Relay, payload: Payload) -> None:
    recipient = int(payload["recipient_id"])
    async with relay.router.begin_for(recipient) as conn:
        await add_notification(
            conn,
            recipient,
            str(payload["type"]),
            int(payload["from_account_id"]),
            int(payload.get("status_id") or 0),
        )
