"""Follows, blocks, mutes and follow requests: checks (``check_*``) then changes (``do_*``).

Each ``do_*`` writes the viewer's own shard in one transaction, under the viewer's row
lock: the edges it is authoritative for, their counters, and outbox rows for the rest
(the mirror on the other account's shard, or a command to the shard where the edge is
authoritative). Once that commits, the outbox rows are dispatched at once, so the other
side is usually in place before the response; if they fail, or the process dies, the
sweep finishes them (see tasks.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, Table, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.accounts.queries import load_accounts, select_accounts
from photogram.cache import Record, relationship_key
from photogram.db.ids import shard_of
from photogram.db.metadata import (
    accounts,
    blocked_by,
    blocks,
    follow_requests_in,
    follow_requests_out,
    followers,
    follows,
    mutes,
)
from photogram.graph import tasks
from photogram.graph.queries import (
    add_edge,
    delete_edge,
    edge,
    edge_keys,
    edge_page,
    lock_account,
    remove_edge,
    upsert_mute,
    viewer_edges,
)
from photogram.graph.schemas import Relationship, render_relationship
from photogram.graph.visibility import hidden_from
from photogram.runtime import Runtime
from photogram.tasks.outbox import enqueue
from photogram.web.deps import path_id
from photogram.web.errors import ApiError, not_found
from photogram.web.paging import Page

NOT_ALLOWED = "This action is not allowed"


def check_not_self(viewer_id: int, target_id: int, verb: str) -> None:
    if viewer_id == target_id:
        raise ApiError(422, f"You cannot {verb} yourself")


async def check_account(runtime: Runtime, raw_id: str) -> Record:
    account_id = path_id(runtime, raw_id)
    row = (await load_accounts(runtime, [account_id])).get(account_id)
    if row is None:
        raise not_found()
    return row


async def check_follow(runtime: Runtime, viewer_id: int, raw_id: str) -> Row[Any]:
    """The account to follow; refused if it is the viewer, or if it blocks the viewer.

    The block is read from the target's own (authoritative) shard, so a block made a
    moment ago is honoured even before its mirror reaches the viewer's shard.
    """
    target_id = path_id(runtime, raw_id)
    check_not_self(viewer_id, target_id, "follow")
    async with runtime.router.connect_for(target_id) as conn:
        row: Row[Any] | None = (await conn.execute(select_accounts([target_id]))).first()
        if row is None:
            raise not_found()
        if (await conn.execute(edge(blocks, target_id, viewer_id))).first() is not None:
            raise ApiError(403, NOT_ALLOWED)
    return row


async def _exists(conn: AsyncConnection, table: Table, account_id: int, target_id: int) -> bool:
    return (await conn.execute(edge(table, account_id, target_id))).first() is not None


async def do_follow(
    runtime: Runtime, viewer_id: int, target: Row[Any], reblogs: bool | None, notify: bool | None
) -> None:
    """Follow ``target`` (a request if it is locked). Following again only updates the
    options given; a request already pending stays pending while the account is locked."""
    target_id = int(target.id)
    queued: list[int] = []
    async with (
        runtime.invalidating(*edge_keys(viewer_id, target_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(lock_account(viewer_id))
        if await _exists(conn, blocks, viewer_id, target_id) or await _exists(
            conn, blocked_by, viewer_id, target_id
        ):
            raise ApiError(403, NOT_ALLOWED)
        if await _exists(conn, follows, viewer_id, target_id):
            options = {"show_reblogs": reblogs, "notify": notify}
            changes = {k: v for k, v in options.items() if v is not None}
            if changes:
                await conn.execute(
                    update(follows)
                    .where(follows.c.account_id == viewer_id, follows.c.target_id == target_id)
                    .values(changes)
                )
            return
        if target.locked:
            changed = await add_edge(conn, follow_requests_out, viewer_id, target_id)
        else:
            # A request left from when the account was locked is superseded by the follow.
            await remove_edge(conn, follow_requests_out, viewer_id, target_id)
            changed = await add_edge(
                conn,
                follows,
                viewer_id,
                target_id,
                counter=accounts.c.following_count,
                show_reblogs=True if reblogs is None else reblogs,
                notify=bool(notify),
            )
        if changed is not None:
            queued.append(
                await tasks.enqueue_sync_follow(conn, shard_of(viewer_id), viewer_id, target_id)
            )
    await runtime.relay.dispatch(queued)


async def do_unfollow(runtime: Runtime, viewer_id: int, target_id: int) -> None:
    """Stop following ``target_id``, or withdraw a pending request to it."""
    queued: list[int] = []
    async with (
        runtime.invalidating(*edge_keys(viewer_id, target_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(lock_account(viewer_id))
        unfollowed = await remove_edge(
            conn, follows, viewer_id, target_id, counter=accounts.c.following_count
        )
        withdrawn = await remove_edge(conn, follow_requests_out, viewer_id, target_id)
        if unfollowed is not None or withdrawn is not None:
            queued.append(
                await tasks.enqueue_sync_follow(conn, shard_of(viewer_id), viewer_id, target_id)
            )
    await runtime.relay.dispatch(queued)


async def do_block(runtime: Runtime, viewer_id: int, target_id: int) -> None:
    """Block ``target_id``: no follows or requests either way while the block stands.

    Here, on the viewer's shard: the block, the viewer's own follow of and request to the
    target (with its count), and the viewer's mirrors of the target's follow and request,
    so the response already shows them gone. Queued: ``sync_block`` (the target's
    ``blocked_by``), ``sever`` (the target's own follow and request, on its shard) and
    ``sync_follow`` for the viewer's removed edges. Blocking again changes nothing.
    """
    shard = shard_of(viewer_id)
    queued: list[int] = []
    async with (
        runtime.invalidating(*edge_keys(viewer_id, target_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(lock_account(viewer_id))
        block_id = await add_edge(conn, blocks, viewer_id, target_id)
        if block_id is None:
            return
        unfollowed = await remove_edge(
            conn, follows, viewer_id, target_id, counter=accounts.c.following_count
        )
        withdrawn = await remove_edge(conn, follow_requests_out, viewer_id, target_id)
        await remove_edge(conn, followers, viewer_id, target_id, counter=accounts.c.followers_count)
        await remove_edge(conn, follow_requests_in, viewer_id, target_id)
        queued.append(await tasks.enqueue_sync_block(conn, shard, viewer_id, target_id))
        queued.append(
            await enqueue(
                conn,
                shard,
                tasks.SEVER,
                blocker_id=viewer_id,
                blocked_id=target_id,
                block_id=block_id,
            )
        )
        if unfollowed is not None or withdrawn is not None:
            queued.append(await tasks.enqueue_sync_follow(conn, shard, viewer_id, target_id))
    await runtime.relay.dispatch(queued)


async def do_unblock(runtime: Runtime, viewer_id: int, target_id: int) -> None:
    queued: list[int] = []
    async with (
        runtime.invalidating(relationship_key(viewer_id, target_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(lock_account(viewer_id))
        if await remove_edge(conn, blocks, viewer_id, target_id) is not None:
            queued.append(
                await tasks.enqueue_sync_block(conn, shard_of(viewer_id), viewer_id, target_id)
            )
    await runtime.relay.dispatch(queued)


async def do_mute(
    runtime: Runtime, viewer_id: int, target_id: int, notifications: bool, duration: int
) -> None:
    """Mute (again: the new options replace the old). Only the muter ever needs to know."""
    expires_at = datetime.now(UTC) + timedelta(seconds=duration) if duration else None
    async with (
        runtime.invalidating(relationship_key(viewer_id, target_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(
            upsert_mute(conn.dialect.name, viewer_id, target_id, notifications, expires_at)
        )


async def do_unmute(runtime: Runtime, viewer_id: int, target_id: int) -> None:
    async with (
        runtime.invalidating(relationship_key(viewer_id, target_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(delete_edge(mutes, viewer_id, target_id))


async def do_remove_from_followers(runtime: Runtime, viewer_id: int, follower_id: int) -> None:
    """Drop ``follower_id`` from the viewer's followers.

    The follow is authoritative on the follower's shard: here the viewer's mirror goes
    (with its count), and a command takes the very follow it mirrored (by ID) away there.
    """
    queued: list[int] = []
    async with (
        runtime.invalidating(*edge_keys(viewer_id, follower_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(lock_account(viewer_id))
        follow_id = await remove_edge(
            conn, followers, viewer_id, follower_id, counter=accounts.c.followers_count
        )
        if follow_id is not None:
            queued.append(
                await enqueue(
                    conn,
                    shard_of(viewer_id),
                    tasks.REMOVE_FOLLOWER,
                    follower_id=follower_id,
                    followee_id=viewer_id,
                    follow_id=follow_id,
                )
            )
    await runtime.relay.dispatch(queued)


async def do_answer_request(
    runtime: Runtime, viewer_id: int, requester_id: int, *, accept: bool
) -> None:
    """Authorize or reject ``requester_id``'s pending request to follow the viewer.

    The request is authoritative on the requester's shard: here the viewer's mirror of
    it goes, and a command carries the answer (naming the request by ID) there. No
    pending request: 404, as Mastodon answers.
    """
    queued: list[int] = []
    async with (
        runtime.invalidating(relationship_key(viewer_id, requester_id)),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(lock_account(viewer_id))
        request_id = await remove_edge(conn, follow_requests_in, viewer_id, requester_id)
        if request_id is None:
            raise not_found()
        queued.append(
            await enqueue(
                conn,
                shard_of(viewer_id),
                tasks.AUTHORIZE if accept else tasks.REJECT,
                requester_id=requester_id,
                target_id=viewer_id,
                request_id=request_id,
            )
        )
    await runtime.relay.dispatch(queued)


# --- reads ---------------------------------------------------------------------------------


async def relationships(
    runtime: Runtime, viewer_id: int, target_ids: list[int]
) -> list[Relationship]:
    """One Relationship per existing account, in the order asked (repeats once)."""
    wanted = list(dict.fromkeys(target_ids))
    existing = await load_accounts(runtime, wanted)
    present = [t for t in wanted if t in existing]
    edges = await viewer_edges(runtime, viewer_id, present)
    return [render_relationship(t, edges) for t in present]


async def relationship(runtime: Runtime, viewer_id: int, target_id: int) -> Relationship:
    edges = await viewer_edges(runtime, viewer_id, [target_id])
    return render_relationship(target_id, edges)


async def account_list(
    runtime: Runtime, table: Table, owner_id: int, page: Page, viewer_id: int | None
) -> tuple[list[Record], int | None, int | None]:
    """A page of the accounts at the far end of ``owner_id``'s edges, newest edge first,
    and the newest and oldest edge IDs of the page (for the Link header).

    Accounts hidden from the viewer by a block either way are left out (the page may then
    be short; the Link header still moves past them). If the owner and the viewer block
    each other, the list is empty.
    """
    async with runtime.router.connect_for(owner_id) as conn:
        rows = page.in_order((await conn.execute(edge_page(table, owner_id, page))).all())
    if not rows:
        return [], None, None
    target_ids = [int(r.target_id) for r in rows]
    hidden: set[int] = set()
    if viewer_id is not None:
        hidden = await hidden_from(runtime.router, viewer_id, [owner_id, *target_ids])
    found: dict[int, Record] = {}
    if owner_id not in hidden:
        found = await load_accounts(runtime, target_ids)
    shown = [found[t] for t in target_ids if t in found and t not in hidden]
    return shown, int(rows[0].id), int(rows[-1].id)


async def follow_requests(
    runtime: Runtime, viewer_id: int, page: Page
) -> tuple[list[Record], int | None, int | None]:
    return await account_list(runtime, follow_requests_in, viewer_id, page, None)


async def followers_of(
    runtime: Runtime, owner_id: int, page: Page, viewer_id: int | None
) -> tuple[list[Record], int | None, int | None]:
    return await account_list(runtime, followers, owner_id, page, viewer_id)


async def following_of(
    runtime: Runtime, owner_id: int, page: Page, viewer_id: int | None
) -> tuple[list[Record], int | None, int | None]:
    return await account_list(runtime, follows, owner_id, page, viewer_id)
