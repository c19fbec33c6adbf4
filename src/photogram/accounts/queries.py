"""Statements about accounts. Builders only: callers own the transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, Select, func, select

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
    """Account rows by ID from every shard they live on: one query per physical database."""
    return {row.id: row for row in await router.by_ids(select_accounts, ids)}


async def load_account(router: Router, id_: int) -> Row[Any] | None:
    return (await load_accounts(router, [id_])).get(id_)
