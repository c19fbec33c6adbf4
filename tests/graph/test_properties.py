"""Random histories of graph actions, with their background work delivered late and out of
order: once everything has run, every mirror equals its authoritative side and every
count equals the edges it counts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from photogram.db.ids import next_id
from photogram.db.metadata import accounts, blocks, follow_requests_out, follows
from photogram.db.router import Router
from photogram.graph import actions
from photogram.runtime import Runtime
from photogram.web.errors import ApiError
from tests.api import FAST
from tests.conftest import MakeSettings, init_test_cluster
from tests.graph.helpers import assert_converged, edge_rows
from tests.relay import LateRelay

ACCOUNTS = 3  # account 0 is locked
# Weighted towards what builds state up (follows, answered requests) so there is some.
ACTIONS = (
    *("follow", "follow", "follow", "authorize", "authorize"),
    *("reject", "unfollow", "block", "unblock", "remove"),
)


@pytest.fixture
async def late_runtime(make_settings: MakeSettings) -> AsyncIterator[Runtime]:
    settings = (await make_settings()).model_copy(update=FAST)
    await init_test_cluster(settings, 16)
    router = await Router.open(settings)
    runtime = Runtime(settings=settings, router=router, relay=LateRelay(router), stores={})
    try:
        yield runtime
    finally:
        await runtime.close()  # the cache's connections, and the router's


async def make_accounts(runtime: Runtime, shards: list[int]) -> list[int]:
    made = []
    for i, shard in enumerate(shards):
        name = f"p{uuid.uuid4().hex[:12]}"
        async with runtime.router.begin(shard) as conn:
            account_id = await conn.scalar(
                insert(accounts)
                .values(
                    id=next_id(shard),
                    username=name,
                    email=f"{name}@example.com",
                    password_hash="-",
                    locked=(i == 0),
                )
                .returning(accounts.c.id)
            )
        made.append(int(account_id))
    return made


async def act(runtime: Runtime, action: str, actor: int, other: int) -> None:
    """One action, as its endpoint would run it; refusals (self, blocked, nothing to
    answer) are part of the history."""
    try:
        if action == "follow":
            target = await actions.check_follow(runtime, actor, str(other))
            await actions.do_follow(runtime, actor, target, None, None)
        elif action == "unfollow":
            await actions.do_unfollow(runtime, actor, other)
        elif action == "block":
            actions.check_not_self(actor, other, "block")
            await actions.do_block(runtime, actor, other)
        elif action == "unblock":
            await actions.do_unblock(runtime, actor, other)
        elif action in ("authorize", "reject"):
            await actions.do_answer_request(runtime, actor, other, accept=action == "authorize")
        else:
            await actions.do_remove_from_followers(runtime, actor, other)
    except ApiError as refused:
        status = refused.status
    else:
        status = 200
    assert status in (200, 403, 404, 422)


def step_of(name: str, first: int, offset: int) -> tuple[str, int, int]:
    """An action between two different accounts (acting on oneself is refused before
    anything happens, and tested elsewhere); requests are answered by the locked one."""
    if name in ("authorize", "reject"):
        return name, 0, 1 + first % (ACCOUNTS - 1)
    return name, first, (first + offset) % ACCOUNTS


action = st.builds(
    step_of,
    st.sampled_from(ACTIONS),
    st.integers(0, ACCOUNTS - 1),
    st.integers(1, ACCOUNTS - 1),
)
# Mostly actions; the work they queue is delivered one row at a time, or all at once in
# a shuffled order, or never (left to the final sweep): late and out of order.
step = st.one_of(
    action,
    action,
    action,
    st.tuples(st.just("deliver"), st.integers(0, 1000), st.just(0)),
    st.tuples(st.just("deliver_all"), st.integers(0, 1000), st.just(0)),
)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shards=st.lists(st.integers(0, 15), min_size=ACCOUNTS, max_size=ACCOUNTS),
    history=st.lists(step, min_size=30, max_size=60),
)
async def test_mirrors_and_counts_converge(
    late_runtime: Runtime, shards: list[int], history: list[tuple[str, int, int]]
) -> None:
    runtime = late_runtime
    relay = runtime.relay
    assert isinstance(relay, LateRelay)
    people = await make_accounts(runtime, shards)

    for action, a, b in history:
        if action == "deliver":
            await relay.deliver(a)
        elif action == "deliver_all":
            await relay.deliver_all(a)
        else:
            await act(runtime, action, people[a], people[b])

    while await relay.sweep():  # the sweep finishes whatever was never delivered
        pass
    relay.held.clear()

    await assert_converged(runtime, people)
    edges = {
        name: {(a, b) for a, b, _ in await edge_rows(runtime, table, people)}
        for name, table in (
            ("follows", follows),
            ("requests", follow_requests_out),
            ("blocks", blocks),
        )
    }
    blocked = edges["blocks"] | {(b, a) for a, b in edges["blocks"]}
    assert not (edges["follows"] | edges["requests"]) & blocked
    assert not edges["follows"] & edges["requests"]
    assert all(a != b for kind in edges.values() for a, b in kind)
    assert all(b == people[0] for _, b in edges["requests"])  # only the locked one is asked
