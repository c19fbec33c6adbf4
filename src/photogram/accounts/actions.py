"""Signing up and changing an account: checks (``check_*``) then changes (``do_*``)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from photogram.accounts.passwords import hash_password
from photogram.accounts.queries import directory_entry, load_account
from photogram.db.ids import next_id
from photogram.db.metadata import accounts, emails, usernames
from photogram.runtime import Runtime
from photogram.web.errors import ApiError

USERNAME = re.compile(r"[A-Za-z0-9_]{1,30}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
RESERVED = frozenset(
    {"admin", "administrator", "root", "support", "help", "api", "oauth", "media", "settings"}
)
MIN_PASSWORD, MAX_PASSWORD = 8, 128

#: A directory entry left unconfirmed this long belongs to a sign-up that died half-way.
STALE_RESERVATION = timedelta(minutes=10)


def validation_failed(field: str, code: str, description: str) -> ApiError:
    """Mastodon's sign-up error: a message plus ``details`` per field."""
    return ApiError(
        422,
        f"Validation failed: {field.capitalize()} {description}",
        details={field: [{"error": code, "description": description}]},
    )


@dataclass(frozen=True)
class SignUp:
    username: str
    email: str
    password: str


def check_sign_up(username: str, email: str, password: str, agreement: bool) -> SignUp:
    if not USERNAME.fullmatch(username):
        raise validation_failed(
            "username", "ERR_INVALID", "must be 1-30 letters, digits or underscores"
        )
    if username.lower() in RESERVED:
        raise validation_failed("username", "ERR_RESERVED", "is reserved")
    if len(email) > 254 or not EMAIL.fullmatch(email):
        raise validation_failed("email", "ERR_INVALID", "is not an e-mail address")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise validation_failed(
            "password",
            "ERR_TOO_SHORT" if len(password) < MIN_PASSWORD else "ERR_TOO_LONG",
            f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters",
        )
    if not agreement:
        raise validation_failed("agreement", "ERR_ACCEPTED", "must be accepted")
    return SignUp(username, email, password)


async def _reclaim_if_stale(runtime: Runtime, username: str) -> None:
    """Free ``username`` if its only claim is a sign-up that died before its account existed."""
    async with runtime.router.global_connect() as conn:
        entry = (await conn.execute(directory_entry(username))).first()
    if entry is None or entry.confirmed:
        return
    if datetime.now(UTC) - entry.created_at < STALE_RESERVATION:
        return
    live = await load_account(runtime.router, entry.account_id) is not None
    async with runtime.router.global_begin() as conn:
        if live:  # the account was made; only the confirmation was lost
            await conn.execute(
                update(usernames)
                .where(usernames.c.account_id == entry.account_id)
                .values(confirmed=True)
            )
        else:
            await conn.execute(delete(usernames).where(usernames.c.account_id == entry.account_id))
            await conn.execute(delete(emails).where(emails.c.account_id == entry.account_id))


async def do_sign_up(runtime: Runtime, sign_up: SignUp) -> int:
    """Create the account on a random home shard; its ID.

    The username and e-mail are claimed in the global directory first (that is where
    uniqueness across shards is decided), then the account row is written on its shard,
    then the claim is confirmed. A failure in between undoes the claim.
    """
    router = runtime.router
    shard = secrets.randbelow(router.logical_shards)
    password_hash = await hash_password(runtime.settings, sign_up.password)
    async with router.begin(shard) as conn:
        account_id = int(await conn.scalar(select(next_id(shard))) or 0)

    await _reclaim_if_stale(runtime, sign_up.username)
    try:
        async with router.global_begin() as conn:
            if (await conn.execute(directory_entry(sign_up.username))).first() is not None:
                raise validation_failed("username", "ERR_TAKEN", "has already been taken")
            if (
                await conn.scalar(
                    select(emails.c.account_id).where(emails.c.email == sign_up.email.lower())
                )
            ) is not None:
                raise validation_failed("email", "ERR_TAKEN", "has already been taken")
            await conn.execute(
                insert(usernames).values(username=sign_up.username.lower(), account_id=account_id)
            )
            await conn.execute(
                insert(emails).values(email=sign_up.email.lower(), account_id=account_id)
            )
    except IntegrityError:  # lost a race with a simultaneous sign-up
        raise validation_failed("username", "ERR_TAKEN", "has already been taken") from None

    try:
        async with router.begin(shard) as conn:
            await conn.execute(
                insert(accounts).values(
                    id=account_id,
                    username=sign_up.username,
                    email=sign_up.email,
                    password_hash=password_hash,
                )
            )
    except BaseException:
        async with router.global_begin() as conn:
            await conn.execute(delete(usernames).where(usernames.c.account_id == account_id))
            await conn.execute(delete(emails).where(emails.c.account_id == account_id))
        raise

    async with router.global_begin() as conn:
        await conn.execute(
            update(usernames).where(usernames.c.account_id == account_id).values(confirmed=True)
        )
    return account_id


async def account_row(runtime: Runtime, account_id: int) -> Row[Any]:
    row = await load_account(runtime.router, account_id)
    if row is None:
        raise ApiError(404, "Record not found")
    return row
