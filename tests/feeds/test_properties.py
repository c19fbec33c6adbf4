"""Random histories of follows, unfollows, blocks, mutes, follow requests, posts and
deletes, with their background work delivered late and out of order, feeds read (and so
built) along the way and Redis flushed at random: once everything has run, every
account's whole home timeline, page by page, is the same through its feed as read from
the shards.

Feeds are kept tiny (5 entries) and accounts with more than 2 followers are big, so
horizons, trimming, reads below the horizon and big accounts (merged at read, fanned out
again when they shrink) all come up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from photogram.graph import actions as graph
from photogram.posts import actions as posts
from photogram.runtime import Runtime
from photogram.web.errors import ApiError
from photogram.web.paging import Page
from tests.conftest import sqlite_settings
from tests.feeds.redis import RedisServer
from tests.feeds.support import (
    LateRelay,
    home_reads,
    make_accounts,
    new_post,
    open_runtime,
    pulled,
    pushed,
    settle,
    traverse,
)

ACCOUNTS = 5  # account 0 is locked
LIMIT = 2

ACTIONS = (
    *("post", "post", "post", "post", "follow", "follow", "follow"),
    *("unfollow", "unfollow", "block", "unblock", "mute", "unmute", "authorize", "delete"),
    "read",
)


@pytest.fixture
async def runtime(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> AsyncIterator[Runtime]:
    redis_server.flush()
    opened = await open_runtime(
        sqlite_settings(
            tmp_path_factory.mktemp("feeds"),
            redis_url=redis_server.url,
            feed_max_entries=5,
            feed_fanout_max_followers=2,
            feed_fanout_batch=2,
        ),
        late=True,
    )
    yield opened
    await opened.close()


async def act(
    runtime: Runtime, action: str, actor: int, other: int, pick: int, made: dict[int, list[int]]
) -> None:
    """One action, as its endpoint would run it; refusals are part of the history."""
    try:
        if action == "post":
            visibility = ("public", "private", None)[pick % 3]
            made[actor].append(await new_post(runtime, actor, visibility))
        elif action == "delete":
            if made[actor]:
                await posts.do_delete(runtime, actor, str(made[actor].pop(pick % len(made[actor]))))
        elif action == "follow":
            target = await graph.check_follow(runtime, actor, str(other))
            await graph.do_follow(runtime, actor, target, None, None)
        elif action == "unfollow":
            await graph.do_unfollow(runtime, actor, other)
        elif action == "block":
            await graph.do_block(runtime, actor, other)
        elif action == "unblock":
            await graph.do_unblock(runtime, actor, other)
        elif action == "mute":
            await graph.do_mute(runtime, actor, other, True, 0)
        elif action == "unmute":
            await graph.do_unmute(runtime, actor, other)
        elif action == "authorize":
            await graph.do_answer_request(runtime, actor, other, accept=True)
        else:
            await pushed(runtime, actor)(Page(LIMIT))
    except ApiError as refused:
        status = refused.status
    else:
        status = 200
    assert status in (200, 403, 404, 422)


def step_of(name: str, first: int, offset: int, pick: int) -> tuple[str, int, int, int]:
    if name == "authorize":  # requests are answered by the locked account
        return name, 0, 1 + first % (ACCOUNTS - 1), pick
    return name, first, (first + offset) % ACCOUNTS, pick


action = st.builds(
    step_of,
    st.sampled_from(ACTIONS),
    st.integers(0, ACCOUNTS - 1),
    st.integers(1, ACCOUNTS - 1),
    st.integers(0, 1000),
)
# Mostly actions; the work they queue is delivered one row at a time, or all at once in a
# shuffled order, or never (left to the end): late and out of order.
step = st.one_of(
    action,
    action,
    action,
    action,
    st.tuples(st.just("deliver"), st.integers(0, 1000), st.just(0), st.just(0)),
    st.tuples(st.just("deliver_all"), st.integers(0, 1000), st.just(0), st.just(0)),
)


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shards=st.lists(st.integers(0, 15), min_size=ACCOUNTS, max_size=ACCOUNTS),
    graph_=st.sets(st.tuples(st.integers(0, ACCOUNTS - 1), st.integers(1, ACCOUNTS - 1))),
    earlier=st.lists(st.integers(0, 3), min_size=ACCOUNTS, max_size=ACCOUNTS),
    history=st.lists(step, min_size=20, max_size=40),
    flush_at=st.sets(st.integers(0, 40), max_size=1),
)
async def test_home_through_the_feed_equals_home_from_the_shards(
    runtime: Runtime,
    redis_server: RedisServer,
    shards: list[int],
    graph_: set[tuple[int, int]],
    earlier: list[int],
    history: list[tuple[str, int, int, int]],
    flush_at: set[int],
) -> None:
    relay = runtime.relay
    assert isinstance(relay, LateRelay)
    redis_server.flush()
    people = await make_accounts(runtime, shards, locked=0)
    made: dict[int, list[int]] = {p: [] for p in people}
    # A follow graph and some posts to start with, then everyone opens the app (so their
    # feeds are built, from the shards) before the history goes on.
    for a, offset in sorted(graph_):
        await act(runtime, "follow", people[a], people[(a + offset) % ACCOUNTS], 0, made)
    await settle(runtime)
    for person, n in zip(people, earlier, strict=True):
        for i in range(n):
            await act(runtime, "post", person, person, i, made)
    await settle(runtime)
    for person in people:
        await pushed(runtime, person)(Page(LIMIT))

    for at, (name, a, b, pick) in enumerate(history):
        if at in flush_at:
            redis_server.flush()
        if name == "deliver":
            await relay.deliver(a)
        elif name == "deliver_all":
            await relay.deliver_all(a)
        else:
            await act(runtime, name, people[a], people[b], pick, made)
    await settle(runtime)

    unusable = home_reads("shards")
    for person in people:
        through_feed = await traverse(pushed(runtime, person), LIMIT)
        from_shards = await traverse(pulled(runtime, person), LIMIT)
        assert through_feed == from_shards, person
        seen = [i for page in from_shards for i in page]
        # Newer pages (min_id, the Link header's "prev") and since_id, from a few places.
        for at in (0, *seen[:: max(1, len(seen) // 3)]):
            for page in (Page(LIMIT, min_id=at), Page(LIMIT, since_id=at)):
                assert await pushed(runtime, person)(page) == await pulled(runtime, person)(page), (
                    person,
                    page,
                )
    assert runtime.feeds is not None
    assert runtime.feeds.available
    # Every page came from a feed (or was below one's horizon by design): none fell back
    # to the shards because a feed could not be used.
    assert home_reads("shards") == unusable
