"""Fan-out on write: the background work that keeps home feeds in Redis (docs/feeds.md).

Every task takes IDs and is idempotent: adding a member that is there already, or
removing one that is not, changes nothing, so a task may run twice, late, or be killed
half-way and run again. Followers are read from the ``followers`` mirror on the author's
shard. A post reaches its followers in batches of ``feed_fanout_batch``, each a task of
its own on the ``fanout`` queue, naming a range of follower IDs (re-read when the batch
runs) rather than carrying them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.ids import shard_of
from photogram.db.metadata import accounts, followers, statuses
from photogram.db.router import Router
from photogram.feeds.big import is_big, mark_big, unmark_big
from photogram.feeds.store import Entry, FeedStore
from photogram.posts import queries
from photogram.runtime import Runtime
from photogram.tasks.outbox import Payload, Relay, enqueue, task
from photogram.web.paging import Page

FANOUT = "feeds.fanout"
UNFANOUT = "feeds.unfanout"
BATCH = "feeds.fanout_batch"
FOLLOW = "feeds.follow"

#: Batch operations: a new post in, a deleted post out, an author's newest posts merged
#: (an account that stopped being big).
PUSH, REMOVE, MERGE = "push", "remove", "merge"

#: A big account is fanned out again once its followers fall to this share of
#: ``feed_fanout_max_followers`` (not as soon as it dips under: an account hovering at
#: the threshold would otherwise be merged into every follower's feed again and again).
UNBIG_SHARE = 0.9

#: Rounds ``follow`` makes while the edge keeps changing before it fails (and is retried).
MAX_ROUNDS = 5


async def enqueue_fanout(conn: AsyncConnection, shard: int, status_id: int) -> int:
    return await enqueue(conn, shard, FANOUT, status_id=status_id)


async def enqueue_unfanout(
    conn: AsyncConnection, shard: int, status_id: int, author_id: int
) -> int:
    return await enqueue(conn, shard, UNFANOUT, status_id=status_id, author_id=author_id)


async def enqueue_follow(conn: AsyncConnection, shard: int, follower: int, followee: int) -> int:
    """The follower's feed gains (or loses) the followee's posts: queue it in the
    transaction that changed the ``followers`` mirror (on the followee's shard)."""
    return await enqueue(conn, shard, FOLLOW, follower_id=follower, followee_id=followee)


def _runtime(relay: Relay) -> Runtime:
    assert relay.runtime is not None, "a relay gets its Runtime when the Runtime is made"
    return relay.runtime


def plan_batches(follower_ids: list[int], size: int) -> list[tuple[int, int | None]]:
    """Ranges ``(after, upto]`` of ``size`` followers each (of IDs in ascending order);
    the last range is open-ended, for followers added since."""
    ranges: list[tuple[int, int | None]] = []
    after = 0
    for at in range(0, len(follower_ids), size):
        upto = follower_ids[min(at + size, len(follower_ids)) - 1]
        ranges.append((after, None if at + size >= len(follower_ids) else upto))
        after = upto
    return ranges


def followers_in(author_id: int, after: int, upto: int | None) -> Select[Any]:
    stmt = select(followers.c.target_id).where(
        followers.c.account_id == author_id, followers.c.target_id > after
    )
    if upto is not None:
        stmt = stmt.where(followers.c.target_id <= upto)
    return stmt.order_by(followers.c.target_id)


async def recent_posts(router: Router, author_id: int, n: int) -> tuple[list[Entry], int]:
    """The author's newest ``n`` top-level posts, and the ID from which they are all of
    them (the oldest one's if there were more, else 0)."""
    async with router.connect_for(author_id) as conn:
        rows = (await conn.execute(queries.posts_by([author_id], Page(limit=n + 1)))).all()
    entries = [(int(r.id), int(r.account_id)) for r in rows]
    return entries[:n], (entries[n - 1][0] if len(entries) > n else 0)


async def _exists(router: Router, status_id: int) -> bool:
    async with router.connect_for(status_id) as conn:
        found = await conn.scalar(select(statuses.c.id).where(statuses.c.id == status_id))
    return found is not None


async def _push(
    router: Router, store: FeedStore, targets: list[int], status_id: int, author_id: int
) -> None:
    """Push, then look again: a post deleted meanwhile is taken back out, since its
    removal may already have passed these feeds."""
    if not targets or not await _exists(router, status_id):
        return
    await store.push(targets, status_id, author_id)
    if not await _exists(router, status_id):
        await store.remove(targets, status_id, author_id)


async def _plan(relay: Relay, author_id: int, op: str, **payload: Any) -> None:
    """One ``BATCH`` task per ``feed_fanout_batch`` followers of the author; done here and
    now when they are no more than one batch (most accounts: half the tasks, none queued)."""
    size = _runtime(relay).settings.feed_fanout_batch
    async with relay.router.begin_for(author_id) as conn:
        ids = [int(i) for i in await conn.scalars(followers_in(author_id, 0, None))]
        if len(ids) <= size:
            queued = []
        else:
            queued = [
                await enqueue(
                    conn,
                    shard_of(author_id),
                    BATCH,
                    op=op,
                    author_id=author_id,
                    after=after,
                    upto=upto,
                    **payload,
                )
                for after, upto in plan_batches(ids, size)
            ]
    if queued:
        await relay.dispatch(queued)
    else:
        await _apply(relay, op, author_id, ids, payload)


@task(FANOUT, queue="fanout")
async def fanout(relay: Relay, payload: Payload) -> None:
    """A new post: into the author's own feed, then the followers' (in batches).

    An author with more than ``feed_fanout_max_followers`` followers is big: only its own
    feed gets the post, and its followers' home timelines merge it in when read. A big
    account that has fallen well below the threshold is taken off the list and its newest
    posts merged into its followers' feeds.
    """
    runtime = _runtime(relay)
    store = runtime.feeds
    if store is None:
        return
    status_id = int(payload["status_id"])
    async with relay.router.connect_for(status_id) as conn:
        post = (
            await conn.execute(
                select(statuses.c.account_id, statuses.c.in_reply_to_id).where(
                    statuses.c.id == status_id
                )
            )
        ).first()
        if post is None or post.in_reply_to_id is not None:
            return  # deleted already (its removal follows), or a comment
        author_id = int(post.account_id)
        count = int(
            await conn.scalar(select(accounts.c.followers_count).where(accounts.c.id == author_id))
            or 0
        )
    await _push(relay.router, store, [author_id], status_id, author_id)
    limit = runtime.settings.feed_fanout_max_followers
    if count > limit:
        # Every time, not only the first: a retry after a crash between the commit and the
        # cache invalidation invalidates again.
        await mark_big(runtime, author_id, count)
        return
    async with relay.router.global_connect() as conn:
        big = await is_big(conn, author_id)
    if big and count <= int(limit * UNBIG_SHARE):
        await unmark_big(runtime, author_id)
        await _plan(relay, author_id, MERGE)
    else:
        # A big account between the two thresholds is pushed too (and still merged by
        # readers): its followers' feeds lack only what it posted while above the limit.
        await _plan(relay, author_id, PUSH, status_id=status_id)


@task(UNFANOUT, queue="fanout")
async def unfanout(relay: Relay, payload: Payload) -> None:
    """A deleted post: out of the author's feed, then the followers' (in batches)."""
    store = _runtime(relay).feeds
    if store is None:
        return
    status_id, author_id = int(payload["status_id"]), int(payload["author_id"])
    await store.remove([author_id], status_id, author_id)
    await _plan(relay, author_id, REMOVE, status_id=status_id)


@task(BATCH, queue="fanout")
async def fanout_batch(relay: Relay, payload: Payload) -> None:
    """One range of an author's followers: push a post, remove one, or merge the author's
    newest posts."""
    runtime = _runtime(relay)
    store = runtime.feeds
    if store is None:
        return
    op, author_id = str(payload["op"]), int(payload["author_id"])
    upto = payload.get("upto")
    async with relay.router.connect_for(author_id) as conn:
        targets = [
            int(i)
            for i in await conn.scalars(
                followers_in(author_id, int(payload["after"]), None if upto is None else int(upto))
            )
        ]
    await _apply(relay, op, author_id, targets, payload)


async def _apply(
    relay: Relay, op: str, author_id: int, targets: list[int], payload: Payload
) -> None:
    """Push a post to, remove one from, or merge the author's newest posts into the feeds
    of ``targets``."""
    runtime = _runtime(relay)
    store = runtime.feeds
    if store is None or not targets:
        return
    if op == MERGE:
        entries, floor = await recent_posts(
            relay.router, author_id, runtime.settings.feed_max_entries
        )
        await store.merge(targets, entries, floor)
    elif op == PUSH:
        await _push(relay.router, store, targets, int(payload["status_id"]), author_id)
    elif op == REMOVE:
        await store.remove(targets, int(payload["status_id"]), author_id)
    else:
        raise ValueError(f"unknown fan-out operation {op!r}")


@task(FOLLOW, queue="fanout")
async def follow(relay: Relay, payload: Payload) -> None:
    """Make the follower's feed agree with the ``followers`` mirror: the followee's newest
    posts in if the follower follows, all of them out if not.

    State-based, and it reads again after writing: a late run of an older task can undo
    a newer one's write only if the edge changed in between, and then it goes round again
    (the same argument as ``graph.tasks.converge``).
    """
    runtime = _runtime(relay)
    store = runtime.feeds
    if store is None:
        return
    follower, followee = int(payload["follower_id"]), int(payload["followee_id"])

    async def following() -> bool:
        async with relay.router.connect_for(followee) as conn:
            found = await conn.scalar(
                select(followers.c.id).where(
                    followers.c.account_id == followee, followers.c.target_id == follower
                )
            )
        return found is not None

    seen = await following()
    for _ in range(MAX_ROUNDS):
        if seen:
            entries, floor = await recent_posts(
                relay.router, followee, runtime.settings.feed_max_entries
            )
            await store.merge([follower], entries, floor)
        else:
            await store.drop_author(follower, followee)
        again = await following()
        if again == seen:
            return
        seen = again
    raise RuntimeError("the follow kept changing; the task will be retried")
