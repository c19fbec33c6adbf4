"""The feed store's Redis operations, on a single server and on a three-node Redis Cluster:
ordering of 64-bit IDs, trimming and the horizon, builds and what calls them off, merges,
removals, time to live, and the circuit breaker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from photogram.feeds.store import (
    BUILD_SECONDS,
    REBUILDING,
    FeedStore,
    FeedsUnavailable,
    Window,
    feed_key,
    open_client,
    pack_id,
)
from photogram.settings import Settings
from tests.feeds.redis import RedisClusterNodes, RedisServer
from tests.memcached import free_port

MAX = 5
TTL = 3600


@pytest.fixture(params=["single", "cluster"])
async def store(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[FeedStore]:
    if request.param == "single":
        redis_server.flush()
        settings = Settings(redis_url=redis_server.url)
    else:
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster_nodes")
        nodes.flush()
        settings = Settings(redis_url=nodes.url, redis_cluster=True)
    opened = FeedStore(open_client(settings), max_entries=MAX, ttl_seconds=TTL, retry_seconds=60)
    yield opened
    await opened.close()


async def newest(store: FeedStore, account: int, count: int = 100) -> Window | None:
    return await store.read(
        account, hi=b"+", lo=b"[" + pack_id(1), lo_id=1, count=count, newest_first=True
    )


async def built(
    store: FeedStore, account: int, entries: list[tuple[int, int]], horizon: int = 0
) -> None:
    marker = await store.begin_build(account)
    assert marker is not None
    assert await store.finish_build(account, marker, entries, horizon)


async def test_no_feed_until_built_and_pushes_skip_it(store: FeedStore) -> None:
    assert await newest(store, 7) is None
    await store.push([7], 100, 1)
    await store.merge([7], [(100, 1)], 0)
    assert await newest(store, 7) is None
    assert await store.client.exists(feed_key(7)) == 0

    await built(store, 7, [])
    window = await newest(store, 7)
    assert window == Window(horizon=0, entries=[], last=None)
    await store.push([7], 100, 1)
    window = await newest(store, 7)
    assert window is not None
    assert window.entries == [(100, 1)]


async def test_64_bit_ids_sort_as_numbers(store: FeedStore) -> None:
    ids = [1, 255, 256, 2**32 - 1, 2**32, 2**56 - 1, 2**56, 2**63 - 1, 2**63 + 5, 2**64 - 2]
    await built(store, 1, [])
    store.max_entries = 100
    for i in reversed(ids):
        await store.push([1], i, 2**64 - 1 - i)
    window = await newest(store, 1)
    assert window is not None
    assert [s for s, _ in window.entries] == sorted(ids, reverse=True)
    assert [a for _, a in window.entries] == [2**64 - 1 - i for i in sorted(ids, reverse=True)]
    # A window: below 2**56 and at or above 256, oldest first.
    window = await store.read(
        1,
        hi=b"(" + pack_id(2**56),
        lo=b"[" + pack_id(256),
        lo_id=256,
        count=100,
        newest_first=False,
    )
    assert window is not None
    assert [s for s, _ in window.entries] == [256, 2**32 - 1, 2**32, 2**56 - 1]


async def test_trimming_raises_the_horizon(store: FeedStore) -> None:
    await built(store, 1, [(10, 1), (20, 2)])
    for i in (30, 40, 50, 60, 70):
        await store.push([1], i, 3)
    window = await newest(store, 1)
    assert window is not None
    assert [s for s, _ in window.entries] == [70, 60, 50, 40, 30]
    assert window.horizon == 30
    # A late push below the horizon is not kept: that part is read from the shards.
    await store.push([1], 25, 3)
    window = await newest(store, 1)
    assert window is not None
    assert [s for s, _ in window.entries] == [70, 60, 50, 40, 30]
    # A read never returns anything below the horizon, whatever its bounds.
    window = await store.read(
        1, hi=b"+", lo=b"[" + pack_id(5), lo_id=5, count=100, newest_first=False
    )
    assert window is not None
    assert [s for s, _ in window.entries] == [30, 40, 50, 60, 70]


async def test_a_build_keeps_the_newest_and_sets_the_horizon(store: FeedStore) -> None:
    posts = [(i, i % 3) for i in range(100, 90, -1)]
    marker = await store.begin_build(1)
    assert marker is not None
    assert await store.begin_build(1) is None  # one builder at a time
    assert await newest(store, 1) is REBUILDING
    assert await store.client.pttl(feed_key(1)) <= BUILD_SECONDS * 1000
    # A post made while the feed is being built goes in (a fan-out after the marker).
    await store.push([1], 101, 7)
    assert await store.finish_build(1, marker, posts[:MAX], posts[MAX - 1][0])
    window = await newest(store, 1)
    assert window is not None
    assert window.entries == [(101, 7), *posts[: MAX - 1]]
    assert window.horizon == posts[MAX - 2][0]  # trimmed past the build's own horizon
    assert 0 < await store.client.pttl(feed_key(1)) <= TTL * 1000


async def test_a_merge_calls_off_a_build_under_way(store: FeedStore) -> None:
    marker = await store.begin_build(1)
    assert marker is not None
    await store.merge([1], [(50, 9)], 0)  # a follow landed after the build's snapshot
    assert not await store.finish_build(1, marker, [(40, 2)], 0)
    assert await newest(store, 1) is None  # the next read builds again
    again = await store.begin_build(1)
    assert again is not None
    assert not await store.finish_build(1, marker, [], 0)  # an old builder finds another's
    assert await store.finish_build(1, again, [(40, 2)], 0)


async def test_merge_raises_the_horizon_to_the_authors_floor(store: FeedStore) -> None:
    await built(store, 1, [(10, 1), (12, 1)])
    # The followee's three newest posts, complete from 30 up (it has older ones).
    await store.merge([1], [(50, 2), (40, 2), (30, 2)], 30)
    window = await newest(store, 1)
    assert window is not None
    assert window.horizon == 30
    assert window.entries == [(50, 2), (40, 2), (30, 2)]
    # Entries below a feed's horizon are not merged.
    await store.merge([1], [(35, 3), (20, 3)], 0)
    window = await newest(store, 1)
    assert window is not None
    assert window.entries == [(50, 2), (40, 2), (35, 3), (30, 2)]


async def test_drop_author_and_remove(store: FeedStore) -> None:
    await built(store, 1, [(10, 1), (11, 2), (12, 1), (13, 3)])
    await store.drop_author(1, 1)
    window = await newest(store, 1)
    assert window is not None
    assert window.entries == [(13, 3), (11, 2)]
    await store.remove([1, 2], 13, 3)
    await store.remove([1], 999, 3)  # not there: nothing
    window = await newest(store, 1)
    assert window is not None
    assert window.entries == [(11, 2)]
    assert window.horizon == 0


async def test_many_feeds_at_once(store: FeedStore) -> None:
    """A batch touches feeds all over the cluster's slots, pipelined."""
    accounts = list(range(1000, 1200))
    for account in accounts[::2]:
        await built(store, account, [])
    await store.push(accounts, 77, 5)
    for account in accounts:
        window = await newest(store, account)
        if account % 2:
            assert window is None
        else:
            assert window is not None
            assert window.entries == [(77, 5)]
    await store.remove(accounts, 77, 5)
    window = await newest(store, accounts[0])
    assert window is not None
    assert window.entries == []


async def test_scripts_are_loaded_again_after_a_script_flush(store: FeedStore) -> None:
    """A restarted (or failed-over) Redis has forgotten the scripts."""
    await built(store, 1, [])
    if isinstance(store.client, RedisCluster):
        await store.client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.ALL_NODES)
    else:
        await store.client.script_flush()
    await store.push([1, 2], 5, 1)
    window = await newest(store, 1)
    assert window is not None
    assert window.entries == [(5, 1)]


async def test_the_breaker_opens_on_failure_and_closes_after_the_retry_interval() -> None:
    port = free_port()  # nobody listens there
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=0.5)
    store = FeedStore(open_client(settings), max_entries=MAX, ttl_seconds=TTL, retry_seconds=60)
    try:
        assert store.available
        with pytest.raises(FeedsUnavailable):
            await newest(store, 1)
        assert not store.available
        with pytest.raises(FeedsUnavailable, match="failed recently"):
            await store.push([1], 2, 3)
        store._down_until = 0.0  # the retry interval has passed
        assert store.available
        with pytest.raises(FeedsUnavailable, match=r"(?i)connect"):
            await store.begin_build(1)
    finally:
        await store.close()
