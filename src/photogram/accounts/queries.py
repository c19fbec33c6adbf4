"""Statements about accounts. Builders only: callers own the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, Select, func, select

from photogram.cache import Record, RowShape, account_counters_key, account_key
from photogram.db.metadata import accounts, emails, usernames
from photogram.db.router import Router

if TYPE_CHECKING:
    from photogram.runtime import Runtime

# The profile: what only the account itself changes.
PROFILE_COLUMNS = (
    accounts.c.id,
    accounts.c.username,
    accounts.c.display_name,
    accounts.c.note,
    accounts.c.avatar_key,
    accounts.c.locked,
    accounts.c.discoverable,
    accounts.c.created_at,
)
# The counts: what other accounts' follows (and the account's posts) change.
COUNTER_COLUMNS = (
    accounts.c.followers_count,
    accounts.c.following_count,
    accounts.c.statuses_count,
    accounts.c.last_status_at,
)
# Everything an Account entity shows (not the password hash, not the e-mail).
PUBLIC_COLUMNS = (*PROFILE_COLUMNS, *COUNTER_COLUMNS)

# How the two parts are cached (``account_key`` and ``account_counters_key``): apart, so a
# follow, which changes two accounts' counts, leaves both profiles cached.
PROFILE = RowShape(PROFILE_COLUMNS)
COUNTERS = RowShape(COUNTER_COLUMNS)


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


async def load_accounts(runtime: Runtime, ids: Iterable[int]) -> dict[int, Record]:
    """Account rows by ID (those that exist), through the cache: one bulk get, and for what
    it misses one query per physical database.

    Each account is two keys, its profile and its counts, read in the same round trip.
    """
    wanted = [i for i in dict.fromkeys(int(i) for i in ids) if runtime.router.holds(i)]
    if not wanted:
        return {}
    owner = {account_key(i): i for i in wanted} | {account_counters_key(i): i for i in wanted}

    async def fetch(keys: list[str]) -> Mapping[str, Any]:
        found: dict[str, Any] = {}
        for row in await runtime.router.by_ids(select_accounts, {owner[k] for k in keys}):
            found[account_key(row.id)] = PROFILE.dump(row)
            found[account_counters_key(row.id)] = COUNTERS.dump(row)
        return found

    cached = await runtime.cache.read_through(owner, fetch)
    rows: dict[int, Record] = {}
    for i in wanted:
        profile, counts = cached.get(account_key(i)), cached.get(account_counters_key(i))
        # One without the other: the account was made or removed between the two fills.
        if profile is not None and counts is not None:
            rows[i] = Record(PROFILE.load(profile) | COUNTERS.load(counts))
    return rows


async def load_account(router: Router, id_: int) -> Row[Any] | None:
    """An account row straight from its shard, past the cache: for the checks of signing
    up and signing in, which must see what is committed."""
    if not router.holds(id_):
        return None
    async with router.connect_for(id_) as conn:
        row: Row[Any] | None = (await conn.execute(select_accounts([id_]))).first()
    return row
