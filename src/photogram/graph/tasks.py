"""Background work of the follow graph: mirrors, and commands for the other account's shard.

Every edge has an authoritative side, written by the action, and a mirror on the other
account's shard. The ``sync_*`` tasks are state-based: they read the authoritative side
and make the mirror match, so they may run late, twice, or out of order and still leave
the mirror right. The commands (``authorize``, ``reject``, ``remove_follower``, ``sever``)
carry a change decided by one account to the shard where the edge is authoritative, and
end by syncing the mirror back.

A sync never holds a connection while it opens another (with both backends' pools full
of syncs each waiting for a second connection, they would wait for ever). So it reads
the authoritative side, writes the mirror in its own transaction, and then reads again:
if the state moved in between, its write may have landed after a newer sync's and be
stale, so it goes round again (see ``converge``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.cache import relationship_key
from photogram.db.ids import shard_of
from photogram.db.metadata import (
    accounts,
    blocked_by,
    blocks,
    follow_requests_in,
    follow_requests_out,
    followers,
    follows,
)
from photogram.feeds.tasks import enqueue_follow
from photogram.graph.queries import add_edge, edge_keys, lock_account, reconcile, remove_edge
from photogram.notifications.tasks import add_notification, remove_notification
from photogram.runtime import Runtime
from photogram.tasks.outbox import Payload, Relay, enqueue, task

SYNC_FOLLOW = "graph.sync_follow"
SYNC_BLOCK = "graph.sync_block"
AUTHORIZE = "graph.authorize"
REJECT = "graph.reject"
REMOVE_FOLLOWER = "graph.remove_follower"
SEVER = "graph.sever"


async def enqueue_sync_follow(
    conn: AsyncConnection, shard: int, follower: int, followee: int
) -> int:
    return await enqueue(conn, shard, SYNC_FOLLOW, follower_id=follower, followee_id=followee)


async def enqueue_sync_block(conn: AsyncConnection, shard: int, blocker: int, blocked: int) -> int:
    return await enqueue(conn, shard, SYNC_BLOCK, blocker_id=blocker, blocked_id=blocked)


def runtime_of(relay: Relay) -> Runtime:
    """The Runtime whose relay runs the task: its cache is invalidated after each commit."""
    assert relay.runtime is not None, "a relay gets its Runtime when the Runtime is made"
    return relay.runtime


#: Rounds a sync makes while the authoritative side keeps moving before it fails (and is
#: retried by the sweep from scratch).
MAX_ROUNDS = 5

T = TypeVar("T")


async def converge(
    relay: Relay, read: Callable[[], Awaitable[T]], write: Callable[[T], Awaitable[list[int]]]
) -> None:
    """``write`` what ``read`` saw, until a read made after the write sees the same.

    Why that converges: of all writes to a mirror, take the last to commit. Its round
    ended with a read, after that commit, equal to what it wrote; a later change of the
    authoritative side enqueues its own sync, which would read the new state and write
    it, and so be later still. Hence the last write is the final authoritative state.
    """
    seen = await read()
    queued: list[int] = []
    for _ in range(MAX_ROUNDS):
        queued += await write(seen)
        again = await read()
        if again == seen:
            await relay.dispatch(queued)
            return
        seen = again
    await relay.dispatch(queued)
    raise RuntimeError("the authoritative side kept changing; the sweep will retry")


async def _edge_id(
    conn: AsyncConnection, table: Table, account_id: int, target_id: int
) -> int | None:
    found = await conn.scalar(
        select(table.c.id).where(table.c.account_id == account_id, table.c.target_id == target_id)
    )
    return None if found is None else int(found)


@task(SYNC_FOLLOW)
async def sync_follow(relay: Relay, payload: Payload) -> None:
    """Make ``followers`` and ``follow_requests_in`` on the followee's shard match the
    follower's ``follows`` and ``follow_requests_out``; ``followers_count`` with them."""
    follower, followee = int(payload["follower_id"]), int(payload["followee_id"])
    router = relay.router
    runtime = runtime_of(relay)

    async def read() -> tuple[int | None, int | None]:
        async with router.connect_for(follower) as conn:
            return (
                await _edge_id(conn, follows, follower, followee),
                await _edge_id(conn, follow_requests_out, follower, followee),
            )

    async def write(state: tuple[int | None, int | None]) -> list[int]:
        follow_id, request_id = state
        queued: list[int] = []
        async with (
            runtime.invalidating(*edge_keys(followee, follower)),
            router.begin_for(followee) as conn,
        ):
            await conn.execute(lock_account(followee))
            # Notified as the mirror gains the edge, in its transaction: a sync that runs
            # twice notifies once (``add_notification`` is keyed by the event).
            followed = await reconcile(
                conn, followers, followee, follower, follow_id, accounts.c.followers_count
            )
            if followed and follow_id is not None:
                await add_notification(conn, followee, "follow", follower)
            if followed and runtime.feeds is not None:
                # The follower's home feed follows the mirror, after this commit (docs/feeds.md).
                queued.append(await enqueue_follow(conn, shard_of(followee), follower, followee))
            requested = await reconcile(conn, follow_requests_in, followee, follower, request_id)
            if request_id is None:
                # Whether or not this removed the mirror: authorizing, rejecting and
                # blocking remove it in the followee's own action, before this runs.
                await remove_notification(conn, followee, "follow_request", follower)
            elif requested:
                await add_notification(conn, followee, "follow_request", follower)
        return queued

    await converge(relay, read, write)


@task(SYNC_BLOCK)
async def sync_block(relay: Relay, payload: Payload) -> None:
    """Make ``blocked_by`` on the blocked account's shard match the blocker's ``blocks``.

    While the block stands, the blocked account's own follow of (or request to) the
    blocker is removed here too, in the transaction that writes ``blocked_by``: its follow
    action refuses under the same row lock once ``blocked_by`` is there, so a follow that
    slipped past the action's check of the block cannot outlive this.
    """
    blocker, blocked = int(payload["blocker_id"]), int(payload["blocked_id"])
    router = relay.router
    runtime = runtime_of(relay)

    async def read() -> int | None:
        async with router.connect_for(blocker) as conn:
            return await _edge_id(conn, blocks, blocker, blocked)

    async def write(block_id: int | None) -> list[int]:
        queued: list[int] = []
        async with (
            runtime.invalidating(*edge_keys(blocked, blocker)),
            router.begin_for(blocked) as conn,
        ):
            await conn.execute(lock_account(blocked))
            await reconcile(conn, blocked_by, blocked, blocker, block_id)
            if block_id is not None:
                unfollowed = await remove_edge(
                    conn, follows, blocked, blocker, counter=accounts.c.following_count
                )
                unrequested = await remove_edge(conn, follow_requests_out, blocked, blocker)
                if unfollowed is not None or unrequested is not None:
                    queued.append(
                        await enqueue_sync_follow(conn, shard_of(blocked), blocked, blocker)
                    )
        return queued

    await converge(relay, read, write)


@task(AUTHORIZE)
async def authorize(relay: Relay, payload: Payload) -> None:
    """On the requester's shard: the request, if it is still the one authorized, becomes
    a follow (with the default options)."""
    requester, target = int(payload["requester_id"]), int(payload["target_id"])
    request_id = int(payload["request_id"])
    async with (
        runtime_of(relay).invalidating(*edge_keys(requester, target)),
        relay.router.begin_for(requester) as conn,
    ):
        await conn.execute(lock_account(requester))
        if (
            await remove_edge(conn, follow_requests_out, requester, target, id_=request_id)
            is not None
        ):
            await add_edge(conn, follows, requester, target, counter=accounts.c.following_count)
        # Always: the target dropped its mirror of the request when it authorized.
        queued = await enqueue_sync_follow(conn, shard_of(requester), requester, target)
    await relay.dispatch([queued])


@task(REJECT)
async def reject(relay: Relay, payload: Payload) -> None:
    """On the requester's shard: drop the request, if it is still the one rejected."""
    requester, target = int(payload["requester_id"]), int(payload["target_id"])
    request_id = int(payload["request_id"])
    async with (
        runtime_of(relay).invalidating(relationship_key(requester, target)),
        relay.router.begin_for(requester) as conn,
    ):
        await conn.execute(lock_account(requester))
        await remove_edge(conn, follow_requests_out, requester, target, id_=request_id)
        queued = await enqueue_sync_follow(conn, shard_of(requester), requester, target)
    await relay.dispatch([queued])


@task(REMOVE_FOLLOWER)
async def remove_follower(relay: Relay, payload: Payload) -> None:
    """On the follower's shard: drop the follow the followee removed (not a newer one)."""
    follower, followee = int(payload["follower_id"]), int(payload["followee_id"])
    follow_id = int(payload["follow_id"])
    async with (
        runtime_of(relay).invalidating(*edge_keys(follower, followee)),
        relay.router.begin_for(follower) as conn,
    ):
        await conn.execute(lock_account(follower))
        await remove_edge(
            conn, follows, follower, followee, id_=follow_id, counter=accounts.c.following_count
        )
        queued = await enqueue_sync_follow(conn, shard_of(follower), follower, followee)
    await relay.dispatch([queued])


@task(SEVER)
async def sever(relay: Relay, payload: Payload) -> None:
    """On the blocked account's shard: end its follow of (and request to) the blocker.

    This is the block's one-time effect, so it holds even if the block is lifted before
    this runs; only edges made before the block (IDs sort by time) go, so a follow made
    after a quick unblock survives a late delivery.
    """
    blocker, blocked = int(payload["blocker_id"]), int(payload["blocked_id"])
    block_id = int(payload["block_id"])
    async with (
        runtime_of(relay).invalidating(*edge_keys(blocked, blocker)),
        relay.router.begin_for(blocked) as conn,
    ):
        await conn.execute(lock_account(blocked))
        await remove_edge(
            conn, follows, blocked, blocker, before=block_id, counter=accounts.c.following_count
        )
        await remove_edge(conn, follow_requests_out, blocked, blocker, before=block_id)
        # Always: the blocker dropped its mirrors of these when it blocked.
        queued = await enqueue_sync_follow(conn, shard_of(blocked), blocked, blocker)
    await relay.dispatch([queued])
