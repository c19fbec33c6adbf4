"""The home timeline over HTTP with feeds on: the same pages and Link headers as with feeds
off, through paging, Redis flushed under traffic, Redis down, paused or restarted, and a
Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from photogram.db.metadata import outbox
from photogram.feeds import tasks as feed_tasks
from photogram.settings import Settings
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings
from tests.feeds.redis import RedisClusterNodes, RedisServer
from tests.feeds.support import home_reads
from tests.memcached import free_port
from tests.posts.support import act, comment, post

HOME = "/api/v1/timelines/home"

Page = tuple[int, Any, str | None]


async def pages(client: Client, user: User, limit: int = 3) -> list[Page]:
    """Every page of the user's home timeline through the Link header's ``next``, and for
    each page its ``prev`` page and a ``since_id`` page: (status, body, Link) of each."""
    seen: list[Page] = []
    url: str | None = f"{HOME}?limit={limit}"
    while url is not None:
        response = await client.get(url, headers=user.headers)
        assert response.status_code == 200, response.text
        seen.append((response.status_code, response.json(), response.headers.get("Link")))
        if not response.json():
            break
        links = response.links
        for other in (
            links["prev"]["url"],
            f"{HOME}?limit={limit}&since_id={response.json()[-1]['id']}",
        ):
            extra = await client.get(other, headers=user.headers)
            seen.append((extra.status_code, extra.json(), extra.headers.get("Link")))
        url = links.get("next", {}).get("url")
        assert len(seen) < 300
    return seen


@asynccontextmanager
async def feeds_off(client: Client) -> AsyncIterator[None]:
    """The same instance reading home from the shards (as with ``redis_url`` unset)."""
    feeds, client.runtime.feeds = client.runtime.feeds, None
    try:
        yield
    finally:
        client.runtime.feeds = feeds


async def same_either_way(client: Client, user: User) -> None:
    served = home_reads("feed", "rebuilt")
    with_feeds = await pages(client, user)
    assert home_reads("feed", "rebuilt") > served
    async with feeds_off(client):
        assert await pages(client, user) == with_feeds


async def world(client: Client) -> tuple[User, User, User, User]:
    """Alice follows bob (big: two followers) and carol (one follower); dan follows bob."""
    alice, bob, carol, dan = [await client.sign_up(n) for n in ("alice", "bob", "carol", "dan")]
    for who, whom in ((alice, bob), (alice, carol), (dan, bob)):
        await act(client, who, f"/api/v1/accounts/{whom.id}/follow")
    await client.settle()
    return alice, bob, carol, dan


async def test_paging_matches_feeds_off(make_settings: MakeSettings, redis_url: str) -> None:
    settings = await make_settings(
        redis_url=redis_url, feed_max_entries=3, feed_fanout_max_followers=1
    )
    async with api_client(settings) as client:
        alice, bob, carol, dan = await world(client)
        assert (await client.get(HOME, headers=alice.headers)).json() == []  # builds the feed
        made = []
        for i in range(3):
            made.append(await post(client, bob, f"bob {i}"))
            made.append(await post(client, carol, f"carol {i}"))
            if i % 2:
                made.append(await post(client, alice, f"alice {i}"))
        await post(client, carol, "followers only", visibility="private")
        await comment(client, carol, made[0]["id"], "not in anyone's home")
        await client.settle()
        for user in (alice, bob, carol, dan):
            await same_either_way(client, user)


async def test_redis_flushed_under_traffic(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> None:
    redis_server.flush()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("flush"), redis_url=redis_server.url, feed_max_entries=4
    )
    async with api_client(settings) as client:
        alice, bob, carol, _ = await world(client)
        statuses: list[int] = []

        async def read() -> None:
            for _ in range(8):
                response = await client.get(f"{HOME}?limit=3", headers=alice.headers)
                statuses.append(response.status_code)
                await asyncio.sleep(0)

        async def write(user: User) -> None:
            for i in range(3):
                await post(client, user, f"{user.username} {i}")

        async def flush() -> None:
            for _ in range(4):
                await asyncio.sleep(0)
                redis_server.flush()

        await asyncio.gather(read(), write(bob), write(carol), flush(), read())
        assert set(statuses) == {200}
        await client.settle()
        for user in (alice, bob, carol):
            await same_either_way(client, user)
        redis_server.flush()  # and once more between requests
        await same_either_way(client, alice)


async def test_redis_unreachable_from_the_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("down"),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        redis_timeout_seconds=0.2,
    )
    async with api_client(settings) as client:
        alice, bob, _, _ = await world(client)
        await post(client, bob, "while Redis is down")
        await post(client, alice, "mine too")
        with_feeds = await pages(client, alice)
        assert len(with_feeds[0][1]) == 2
        async with feeds_off(client):
            assert await pages(client, alice) == with_feeds


async def _fanouts_failed(client: Client) -> int:
    """Fan-out rows that failed at least once (and wait for a retry)."""
    rows = await client.runtime.router.scatter(
        select(outbox.c.id, outbox.c.attempts)
        .where(outbox.c.task == feed_tasks.FANOUT, outbox.c.done_at.is_(None))
        .order_by(outbox.c.id.desc())
        .limit(100),
        limit=100,
    )
    return sum(1 for r in rows if r.attempts > 0)


async def _retry_now(client: Client) -> None:
    """The retries' backoff has passed."""
    for shard in range(16):
        async with client.runtime.router.begin(shard) as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.done_at.is_(None))
                .values(available_at=datetime.now(UTC))
            )
    await client.settle()


async def test_redis_paused_then_back_fanout_retried(
    tmp_path_factory: pytest.TempPathFactory, own_redis: Any
) -> None:
    server: RedisServer = own_redis()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("paused"),
        redis_url=server.url,
        redis_timeout_seconds=0.2,
    )
    async with api_client(settings) as client:
        alice, bob, _, _ = await world(client)
        before = await post(client, bob, "before")
        await same_either_way(client, alice)  # alice's feed is built

        server.pause()
        try:
            during = await post(client, bob, "while Redis is paused")  # its fan-out fails
            response = await client.get(HOME, headers=alice.headers)
            assert response.status_code == 200
            assert [s["id"] for s in response.json()] == [during["id"], before["id"]]
            assert client.runtime.feeds is not None
            assert not client.runtime.feeds.available  # the breaker is open
        finally:
            server.resume()
        assert await _fanouts_failed(client) == 1
        client.runtime.feeds._down_until = 0.0  # the retry interval has passed
        await _retry_now(client)  # the outbox runs the fan-out again
        assert await _fanouts_failed(client) == 0
        await same_either_way(client, alice)

        server.kill()  # its feeds are gone with it
        await post(client, bob, "while Redis is gone")
        async with feeds_off(client):
            expected = await pages(client, alice)
        assert await pages(client, alice) == expected
        server.start()  # back, empty, on the same port
        client.runtime.feeds._down_until = 0.0
        await same_either_way(client, alice)  # rebuilt from the shards


async def test_on_a_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_cluster_nodes: RedisClusterNodes
) -> None:
    redis_cluster_nodes.flush()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cluster"),
        redis_url=redis_cluster_nodes.url,
        redis_cluster=True,
        feed_max_entries=3,
    )
    async with api_client(settings) as client:
        alice, bob, carol, dan = await world(client)
        for user in (alice, bob, carol, dan):
            await client.get(HOME, headers=user.headers)
        for i in range(3):
            await post(client, bob, f"bob {i}")
            await post(client, carol, f"carol {i}")
        await client.settle()
        for user in (alice, bob, carol, dan):
            await same_either_way(client, user)
