"""What the graph tests share: a few users on different shards, and looks at both sides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update

from photogram.cache import account_key
from photogram.db.ids import shard_of
from photogram.db.metadata import (
    accounts,
    blocked_by,
    blocks,
    follow_requests_in,
    follow_requests_out,
    followers,
    follows,
    outbox,
)
from photogram.runtime import Runtime
from tests.api import Client, User

# Authoritative edge table -> its mirror on the other account's shard.
MIRRORS = {
    "follows": (follows, followers),
    "follow_requests": (follow_requests_out, follow_requests_in),
    "blocks": (blocks, blocked_by),
}


async def sign_up_spread(client: Client, *names: str) -> list[User]:
    """Sign up ``names``; more (spare) accounts until two of the named are on different
    shards, so every test exercises the cross-shard path. Returns the named users."""
    users = [await client.sign_up(name) for name in names]
    spare = 0
    while len({shard_of(int(u.id)) for u in users}) < 2:
        spare += 1
        users[-1] = await client.sign_up(f"{names[-1]}{spare}")
    return users


async def lock(client: Client, user: User) -> None:
    """Make ``user`` a locked account (there is no endpoint for it in this subsystem)."""
    async with client.runtime.router.begin_for(int(user.id)) as conn:
        await conn.execute(
            update(accounts).where(accounts.c.id == int(user.id)).values(locked=True)
        )
    # Written behind the app's back: the cached row goes as a write path's would.
    await client.runtime.invalidate([account_key(int(user.id))])


async def me(client: Client, user: User) -> dict[str, Any]:
    response = await client.get("/api/v1/accounts/verify_credentials", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def counts(client: Client, user: User) -> tuple[int, int]:
    """(followers_count, following_count) as the account itself sees them."""
    body = await me(client, user)
    return body["followers_count"], body["following_count"]


async def relationship(client: Client, viewer: User, target: User) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/accounts/relationships", params={"id[]": target.id}, headers=viewer.headers
    )
    assert response.status_code == 200, response.text
    (found,) = response.json()
    assert found["id"] == target.id
    body: dict[str, Any] = found
    return body


async def post(client: Client, user: User, path: str, **data: Any) -> dict[str, Any]:
    response = await client.post(path, headers=user.headers, data=data)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ids_of(client: Client, path: str, user: User | None = None, **params: Any) -> list[str]:
    headers = user.headers if user is not None else {}
    response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()]


async def edge_rows(
    runtime: Runtime, table: Any, account_ids: list[int]
) -> set[tuple[int, int, int]]:
    """(account_id, target_id, id) of every ``table`` edge of these accounts, each read on
    the account's own shard."""
    found: set[tuple[int, int, int]] = set()
    for account_id in account_ids:
        async with runtime.router.connect_for(account_id) as conn:
            rows = await conn.execute(
                select(table.c.account_id, table.c.target_id, table.c.id).where(
                    table.c.account_id == account_id
                )
            )
            found |= {(r.account_id, r.target_id, r.id) for r in rows}
    return found


async def stored_counts(runtime: Runtime, account_id: int) -> tuple[int, int]:
    """(followers_count, following_count) as stored in the account row."""
    async with runtime.router.connect_for(account_id) as conn:
        row = (
            await conn.execute(
                select(accounts.c.followers_count, accounts.c.following_count).where(
                    accounts.c.id == account_id
                )
            )
        ).one()
    return int(row.followers_count), int(row.following_count)


async def assert_converged(runtime: Runtime, account_ids: list[int]) -> None:
    """Every mirror equals its authoritative side (same edges, same IDs) and every count
    equals the number of edge rows it counts."""
    scope = set(account_ids)
    for name, (authoritative, mirror) in MIRRORS.items():
        sources = {e for e in await edge_rows(runtime, authoritative, account_ids) if e[1] in scope}
        copies = {e for e in await edge_rows(runtime, mirror, account_ids) if e[1] in scope}
        assert copies == {(b, a, i) for a, b, i in sources}, name
    for account_id in account_ids:
        async with runtime.router.connect_for(account_id) as conn:
            n_followers = await conn.scalar(
                select(func.count()).where(followers.c.account_id == account_id)
            )
            n_following = await conn.scalar(
                select(func.count()).where(follows.c.account_id == account_id)
            )
        assert await stored_counts(runtime, account_id) == (n_followers, n_following)


async def make_due(runtime: Runtime) -> None:
    """Pretend the retry back-off has passed: every pending outbox row is due now."""
    for shard in range(runtime.router.logical_shards):
        async with runtime.router.begin(shard) as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.done_at.is_(None))
                .values(available_at=datetime.now(UTC))
            )


async def pending_tasks(runtime: Runtime) -> list[str]:
    rows = await runtime.router.scatter(
        select(outbox.c.id, outbox.c.task)
        .where(outbox.c.done_at.is_(None))
        .order_by(outbox.c.id)
        .limit(1000),
        limit=1000,
        order="asc",
    )
    return [r.task for r in rows]
