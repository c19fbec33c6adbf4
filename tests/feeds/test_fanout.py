"""Fan-out on write: bounded batches, idempotent re-runs, deletes, follows and unfollows,
and big accounts (not fanned out, merged at read, fanned out again when they shrink)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from photogram.cache import account_counters_key
from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import accounts, big_accounts, followers, outbox
from photogram.feeds import tasks
from photogram.feeds.tasks import plan_batches
from photogram.graph import actions as graph
from photogram.posts.actions import do_delete
from photogram.runtime import Runtime
from photogram.settings import Settings
from photogram.web.paging import Page
from tests.conftest import MakeSettings, sqlite_settings
from tests.feeds.support import (
    LateRelay,
    feed_of,
    make_accounts,
    new_post,
    open_runtime,
    pulled,
    pushed,
    settle,
    traverse,
)

RuntimeMaker = Callable[..., Any]


async def _runtimes(settings_of: MakeSettings, redis_url: str) -> AsyncIterator[RuntimeMaker]:
    opened: list[Runtime] = []

    async def make(*, late: bool = False, **extra: object) -> Runtime:
        runtime = await open_runtime(await settings_of(redis_url=redis_url, **extra), late=late)
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        await runtime.close()


@pytest.fixture
async def runtimes(make_settings: MakeSettings, redis_url: str) -> AsyncIterator[RuntimeMaker]:
    """Instances with feeds on, on both backends (each its own databases, all on the
    test's Redis)."""
    async for make in _runtimes(make_settings, redis_url):
        yield make


@pytest.fixture
async def embedded(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[RuntimeMaker]:
    """Instances with feeds on, on SQLite only: for what does not depend on the database."""

    async def settings_of(**extra: object) -> Settings:
        return sqlite_settings(tmp_path_factory.mktemp("feeds"), **extra)

    async for make in _runtimes(settings_of, redis_url):
        yield make


def test_batches_are_ranges_of_the_batch_size() -> None:
    ids = list(range(10, 2510))
    assert plan_batches(ids, 1000) == [(0, 1009), (1009, 2009), (2009, None)]
    assert plan_batches(ids[:1000], 1000) == [(0, None)]
    assert plan_batches(ids[:1001], 1000) == [(0, 1009), (1009, None)]
    assert plan_batches([], 1000) == []


async def _outbox_rows(runtime: Runtime, shard: int, task: str) -> list[Any]:
    async with runtime.router.connect(shard) as conn:
        return list(
            (
                await conn.execute(
                    select(outbox.c.id, outbox.c.payload)
                    .where(outbox.c.task == task)
                    .order_by(outbox.c.id)
                )
            ).all()
        )


async def test_a_post_to_2500_followers_is_three_bounded_batches(runtimes: RuntimeMaker) -> None:
    runtime: Runtime = await runtimes(late=True)
    relay = runtime.relay
    assert isinstance(relay, LateRelay)
    assert runtime.feeds is not None
    (author,) = await make_accounts(runtime, [3])
    shard = shard_of(author)
    fans = [10**15 + i for i in range(2500)]  # accounts elsewhere: only their IDs matter here
    async with runtime.router.begin(shard) as conn:
        await conn.execute(
            insert(followers).values(id=next_id(shard), account_id=author),
            [{"target_id": f} for f in fans],
        )
        await conn.execute(
            update(accounts).where(accounts.c.id == author).values(followers_count=len(fans))
        )
    await runtime.invalidate([account_counters_key(author)])
    live = [fans[0], fans[999], fans[1000], fans[2499]]
    for fan in live:
        marker = await runtime.feeds.begin_build(fan)
        assert marker is not None
        assert await runtime.feeds.finish_build(fan, marker, [], 0)

    post = await new_post(runtime, author)
    await relay.deliver(0)  # the fan-out: the author's feed, and the plan
    batches = await _outbox_rows(runtime, shard, tasks.BATCH)
    assert [(p["op"], p["after"], p["upto"]) for _, p in batches] == [
        ("push", 0, fans[999]),
        ("push", fans[999], fans[1999]),
        ("push", fans[1999], None),
    ]
    assert sorted(relay.held) == [row_id for row_id, _ in batches]
    await relay.deliver_all()
    for fan in live:
        window = await feed_of(runtime, fan)
        assert window is not None
        assert window.entries == [(post, author)]
    assert await feed_of(runtime, fans[5]) is None  # not read lately: skipped, not created
    own = await feed_of(runtime, author)
    assert own is None  # the author never read home either

    # A batch run again (a worker killed after writing) leaves no duplicate.
    await tasks.fanout_batch(relay, batches[0].payload)
    window = await feed_of(runtime, fans[0])
    assert window is not None
    assert window.entries == [(post, author)]

    await do_delete(runtime, author, str(post))
    await settle(runtime)
    assert len(await _outbox_rows(runtime, shard, tasks.BATCH)) == 6  # three more, to remove
    for fan in live:
        window = await feed_of(runtime, fan)
        assert window is not None
        assert window.entries == []


async def test_follow_unfollow_and_what_is_never_pushed(embedded: RuntimeMaker) -> None:
    runtime: Runtime = await embedded(feed_max_entries=3)
    viewer, author = await make_accounts(runtime, [1, 2])
    posts = [await new_post(runtime, author) for _ in range(5)]
    assert await pushed(runtime, viewer)(Page(10)) == []  # builds the viewer's feed
    window = await feed_of(runtime, viewer)
    assert window is not None
    assert window.entries == []
    assert window.horizon == 0

    target = await graph.check_follow(runtime, viewer, str(author))
    await graph.do_follow(runtime, viewer, target, None, None)
    await settle(runtime)
    window = await feed_of(runtime, viewer)
    assert window is not None
    # The three newest: the author has older ones, so the feed is complete from the third.
    assert window.entries == [(p, author) for p in reversed(posts[2:])]
    assert window.horizon == posts[2]
    assert await traverse(pushed(runtime, viewer), 2) == await traverse(pulled(runtime, viewer), 2)

    newer = await new_post(runtime, author)
    window = await feed_of(runtime, viewer)
    assert window is not None
    assert window.entries[0] == (newer, author)

    # A comment is never pushed; nor is a post deleted before its fan-out ran.
    await graph.do_unfollow(runtime, viewer, author)
    await settle(runtime)
    window = await feed_of(runtime, viewer)
    assert window is not None
    assert window.entries == []
    await tasks.fanout(runtime.relay, {"status_id": newer})  # a late re-run: nobody follows
    window = await feed_of(runtime, viewer)
    assert window is not None
    assert window.entries == []
    assert await traverse(pushed(runtime, viewer), 2) == await traverse(pulled(runtime, viewer), 2)


async def test_a_deleted_post_is_not_pushed_by_a_late_fanout(embedded: RuntimeMaker) -> None:
    runtime: Runtime = await embedded(late=True)
    relay = runtime.relay
    assert isinstance(relay, LateRelay)
    viewer, author = await make_accounts(runtime, [1, 2])
    target = await graph.check_follow(runtime, viewer, str(author))
    await graph.do_follow(runtime, viewer, target, None, None)
    await settle(runtime)
    await pushed(runtime, viewer)(Page(10))
    post = await new_post(runtime, author)
    fanout_row = relay.held[-1]
    relay.held.clear()
    await do_delete(runtime, author, str(post))
    await relay.deliver_all()  # the removal runs first
    await relay.run(fanout_row)  # then the fan-out, late
    await settle(runtime)
    window = await feed_of(runtime, viewer)
    assert window is not None
    assert window.entries == []


async def test_big_accounts_are_merged_at_read_and_fanned_out_again(
    runtimes: RuntimeMaker,
) -> None:
    # Big above 2 followers; fanned out again at 1 (90% of 2, rounded down).
    runtime: Runtime = await runtimes(feed_fanout_max_followers=2)
    star, *fans = await make_accounts(runtime, [0, 1, 2, 3])
    for fan in fans:
        target = await graph.check_follow(runtime, fan, str(star))
        await graph.do_follow(runtime, fan, target, None, None)
        await pushed(runtime, fan)(Page(5))
    await settle(runtime)

    async def big() -> list[int]:
        async with runtime.router.global_connect() as conn:
            return [int(i) for i in await conn.scalars(select(big_accounts.c.account_id))]

    early = await new_post(runtime, star)
    await settle(runtime)
    assert await big() == [star]
    for fan in fans:
        window = await feed_of(runtime, fan)
        assert window is not None
        assert window.entries == []
        assert await pushed(runtime, fan)(Page(5)) == [early]  # merged in when read
    own = await pushed(runtime, star)(Page(5))
    assert own == [early]

    # Down to 2 followers: still big (and now pushed as well).
    await graph.do_unfollow(runtime, fans[0], star)
    await settle(runtime)
    middle = await new_post(runtime, star)
    await settle(runtime)
    assert await big() == [star]
    window = await feed_of(runtime, fans[1])
    assert window is not None
    assert window.entries == [(middle, star)]

    # Down to 1: fanned out again, with what it posted while big.
    await graph.do_unfollow(runtime, fans[1], star)
    await settle(runtime)
    late = await new_post(runtime, star)
    await settle(runtime)
    assert await big() == []
    window = await feed_of(runtime, fans[2])
    assert window is not None
    assert window.entries == [(late, star), (middle, star), (early, star)]
    for account in (star, *fans):
        assert await traverse(pushed(runtime, account), 2) == await traverse(
            pulled(runtime, account), 2
        )
