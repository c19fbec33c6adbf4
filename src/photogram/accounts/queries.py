"""Statements about accounts. Builders only: callers own the transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, Select, func, select

from photogram.db.ids import shard_of
from photogram.db.metadata import accounts, emails, usernames
from photogram.db.router import Router

# Everything an Account entity shows (not the password hash, not the e-mail).
PUBLIC_COLUMNS = (
    accounts.c.id,
    accounts.c.username,
    accounts.c.display_name,
    accounts.c.note,
    accounts.c.avatar_key,
    accounts.c.locked,
    accounts.c.discoverable,
    accounts.c.followers_count,
    accounts.c.following_count,
    accounts.c.statuses_count,
    accounts.c.last_status_at,
    accounts.c.created_at,
)


def select_accounts(ids: Iterable[int]) -> Select[Any]:
    return select(*PUBLIC_COLUMNS).where(accounts.c.id.in_(list(ids)))


def directory_entry(username: str) -> Select[Any]:
    return select(usernames.c.account_id, usernames.c.confirmed, usernames.c.created_at).where(
        usernames.c.username == username.lower()
    )


def email_entry(email: str) -> Select[Any]:
    return select(emails.c.account_id).where(emails.c.email == email.lower())


def username_prefix(prefix: str, limit: int, offset: int = 0) -> Select[Any]:
    pattern = prefix.lower().replace("\\", "").replace("%", "").replace("_", "\\_") + "%"
    return (
        select(usernames.c.account_id)
        .where(usernames.c.confirmed, usernames.c.username.like(pattern, escape="\\"))
        .order_by(func.length(usernames.c.username), usernames.c.username)
        .limit(limit)
        .offset(offset)
    )


async def load_accounts(router: Router, ids: Iterable[int]) -> dict[int, Row[Any]]:
    """Account rows by ID, from every shard they live on, one query per shard, concurrently."""
    by_shard: dict[int, list[int]] = {}
    for id_ in set(ids):
        if shard_of(id_) < router.logical_shards:  # any other "ID" names nothing here
            by_shard.setdefault(shard_of(id_), []).append(id_)

    async def one(shard: int, wanted: list[int]) -> list[Row[Any]]:
        async with router.connect(shard) as conn:
            return list((await conn.execute(select_accounts(wanted))).all())

    found: dict[int, Row[Any]] = {}
    for rows in await asyncio.gather(*(one(s, w) for s, w in by_shard.items())):
        for row in rows:
            found[row.id] = row
    return found


async def load_account(router: Router, id_: int) -> Row[Any] | None:
    return (await load_accounts(router, [id_])).get(id_)
