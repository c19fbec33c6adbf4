"""Fan-out on real workers: a worker killed half-way, and a big fan-out beside uploads."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select, update

from photogram.db.ids import reserve_ids, shard_of
from photogram.db.metadata import accounts, followers, outbox
from photogram.feeds.store import feed_key, member
from photogram.runtime import Runtime
from photogram.settings import Settings
from tests.api import api_client
from tests.feeds.redis import RedisServer
from tests.posts.support import PHOTO, post
from tests.tasks.conftest import BrokerSettings, eventually, running_worker
from tests.tasks.test_broker import all_done

pytestmark = pytest.mark.postgres


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


#: Follower IDs that are nobody's (the fan-out reads the mirror, not the accounts).
FIRST_FOLLOWER = 10**15


async def add_followers(runtime: Runtime, author_id: int, count: int) -> list[int]:
    """``count`` followers of ``author_id`` in its followers mirror, written in bulk."""
    ids = [FIRST_FOLLOWER + i for i in range(count)]
    async with runtime.router.begin_for(author_id) as conn:
        edge_ids = await reserve_ids(conn, shard_of(author_id), count)
        for at in range(0, count, 5000):
            await conn.execute(
                insert(followers),
                [
                    {"id": e, "account_id": author_id, "target_id": f}
                    for e, f in zip(edge_ids[at : at + 5000], ids[at : at + 5000], strict=True)
                ],
            )
        await conn.execute(
            update(accounts).where(accounts.c.id == author_id).values(followers_count=count)
        )
    return ids


async def live_feeds(runtime: Runtime, account_ids: list[int]) -> None:
    """Built (empty) feeds for these accounts, so fan-out writes to them."""
    store = runtime.feeds
    assert store is not None
    for at in range(0, len(account_ids), 50):

        async def build(account_id: int) -> None:
            marker = await store.begin_build(account_id)
            assert marker is not None
            assert await store.finish_build(account_id, marker, [], horizon=0)

        await asyncio.gather(*(build(a) for a in account_ids[at : at + 50]))


def holding(redis: RedisServer, account_ids: list[int], entry: bytes) -> int:
    """How many of these feeds hold ``entry``."""
    client = redis.client()
    pipe = client.pipeline(transaction=False)
    for account_id in account_ids:
        pipe.zscore(feed_key(account_id), entry)
    return sum(score is not None for score in pipe.execute())


async def pending_batches(runtime: Runtime) -> int:
    rows = await runtime.router.scatter(
        select(outbox.c.id)
        .where(outbox.c.done_at.is_(None), outbox.c.task == "feeds.fanout_batch")
        .order_by(outbox.c.id)
        .limit(10_000),
        limit=10_000,
    )
    return len(rows)


async def test_a_worker_killed_mid_fanout_leaves_every_feed_complete_once(
    broker_settings: BrokerSettings, redis: RedisServer
) -> None:
    # Batches of 10: 200 of them, so the fan-out stays half-done long enough to be seen
    # (and killed) between two looks, however busy the machine.
    settings: Settings = await broker_settings(redis_url=redis.url, feed_fanout_batch=10)
    async with api_client(settings, init=False) as client:
        author = await client.sign_up("author")
        fans = await add_followers(client.runtime, int(author.id), 2000)
        await live_feeds(client.runtime, fans)
        with running_worker(settings, "--concurrency", "1") as worker:
            status = await post(client, author, "to 2,000 followers")
            entry = member(int(status["id"]), int(author.id))
            # Killed once some feeds have the post and others not yet: a batch in flight.
            await eventually(
                lambda: asyncio.to_thread(lambda: 0 < holding(redis, fans, entry) < len(fans)),
                "the fan-out is under way",
            )
            worker.kill()
        assert 0 < holding(redis, fans, entry) < len(fans)
        with running_worker(settings, "--concurrency", "2"):
            await eventually(lambda: all_done(client.runtime), "the fan-out finishes")
        assert holding(redis, fans, entry) == len(fans)
        # One member per post in a sorted set: a batch run twice cannot duplicate it, and
        # nothing else was added.
        sizes = redis.client().pipeline(transaction=False)
        for fan in fans:
            sizes.zcard(feed_key(fan))
        assert set(sizes.execute()) == {2}  # the feed's own sentinel, and the post


async def test_a_50000_follower_fanout_goes_in_batches_and_media_still_flows(
    broker_settings: BrokerSettings, redis: RedisServer
) -> None:
    """50 batches of 1,000 queue up on the fanout queue; an upload made behind them is
    processed while most of them still wait, not after."""
    settings = await broker_settings(
        redis_url=redis.url, feed_fanout_batch=1000, feed_fanout_max_followers=100_000
    )
    async with api_client(settings, init=False) as client:
        star, fan = await client.sign_up("star"), await client.sign_up("fan")
        await add_followers(client.runtime, int(star.id), 50_000)
        with running_worker(settings, "--concurrency", "1"):
            await post(client, star, "to 50,000 followers")
            await eventually(
                lambda: pending_batches(client.runtime), "the fan-out is split in batches"
            )
            batches = await pending_batches(client.runtime)
            # The upload answers once its photo is processed (the worker's next task).
            response = await client.post(
                "/api/v2/media",
                headers=fan.headers,
                files={"file": ("p.jpg", PHOTO, "image/jpeg")},
            )
            assert response.status_code == 200, response.text
            left = await pending_batches(client.runtime)
            assert left > 0, "the photo waited for the whole fan-out"
            assert batches - left < batches // 2
            await eventually(lambda: all_done(client.runtime), "the fan-out finishes")
        rows = await client.runtime.router.scatter(
            select(outbox.c.id, outbox.c.payload)
            .where(outbox.c.task == "feeds.fanout_batch")
            .order_by(outbox.c.id)
            .limit(1000),
            limit=1000,
        )
        assert len(rows) == 50
        # Bounded: each batch names a range of at most 1,000 followers, and together they
        # cover them all once.
        ranges = sorted((r.payload["after"], r.payload["upto"] or 2**63) for r in rows)
        assert ranges[0][0] == 0
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        # (the followers' IDs are consecutive here, so a range's width is its size)
        assert all(upto - after <= 1000 for after, upto in ranges[1:-1])
