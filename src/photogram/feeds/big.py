"""Big accounts: those not fanned out, whose posts readers merge in from the shards.

The set is global (``big_accounts``) and small, and every home read with feeds on needs
it, so it is cached whole under one key and invalidated after every change. A reader can
hold it stale for as long as an invalidation takes to land after the commit (docs/feeds.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.cache.keys import Dataset
from photogram.db.metadata import big_accounts
from photogram.runtime import Runtime

#: The whole set of big accounts' IDs, as one cached value.
BIG_ACCOUNTS = Dataset("big_accounts", 1)


def big_accounts_key() -> str:
    return BIG_ACCOUNTS.key()


async def load_big(runtime: Runtime) -> frozenset[int]:
    """The IDs of the big accounts, through the cache (a miss is one global query)."""
    key = big_accounts_key()

    async def fetch(_keys: list[str]) -> Mapping[str, Any]:
        async with runtime.router.global_connect() as conn:
            found = await conn.scalars(select(big_accounts.c.account_id))
            return {key: sorted(int(i) for i in found)}

    cached = await runtime.cache.read_through([key], fetch)
    return frozenset(int(i) for i in cached.get(key, ()))


async def is_big(conn: AsyncConnection, account_id: int) -> bool:
    """Whether ``account_id`` is in the table (read from the database, for decisions)."""
    found = await conn.scalar(
        select(big_accounts.c.account_id).where(big_accounts.c.account_id == account_id)
    )
    return found is not None


async def mark_big(runtime: Runtime, account_id: int, followers_count: int) -> None:
    """Record ``account_id`` as big (again: its count is refreshed)."""
    async with (
        runtime.invalidating(big_accounts_key()),
        runtime.router.global_begin() as conn,
    ):
        make = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = make(big_accounts).values(account_id=account_id, followers_count=followers_count)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["account_id"], set_={"followers_count": followers_count}
            )
        )


async def unmark_big(runtime: Runtime, account_id: int) -> None:
    async with (
        runtime.invalidating(big_accounts_key()),
        runtime.router.global_begin() as conn,
    ):
        await conn.execute(delete(big_accounts).where(big_accounts.c.account_id == account_id))
