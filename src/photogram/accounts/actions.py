"""Signing up, changing and finding accounts: checks (``check_*``) then changes (``do_*``)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from photogram.accounts import avatars
from photogram.accounts.passwords import hash_password
from photogram.accounts.queries import (
    directory_entry,
    load_account,
    load_accounts,
    username_prefix,
)
from photogram.cache import Record, account_counters_key, account_key
from photogram.concurrency import gather
from photogram.db.ids import next_id
from photogram.db.metadata import (
    accounts,
    blocked_by,
    emails,
    follow_requests_in,
    follows,
    media_objects,
    usernames,
)
from photogram.db.router import Router
from photogram.graph.visibility import hidden_from
from photogram.runtime import Runtime
from photogram.settings import Settings
from photogram.web.errors import ApiError

USERNAME = re.compile(r"[A-Za-z0-9_]{1,30}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
RESERVED = frozenset(
    {"admin", "administrator", "root", "support", "help", "api", "oauth", "media", "settings"}
)
MIN_PASSWORD, MAX_PASSWORD = 8, 128

#: A directory entry left unconfirmed this long belongs to a sign-up that died half-way.
STALE_RESERVATION = timedelta(minutes=10)


def validation_failed(
    field: str, code: str, description: str, label: str | None = None
) -> ApiError:
    """Mastodon's validation error: a message plus ``details`` per field."""
    return ApiError(
        422,
        f"Validation failed: {label or field.capitalize()} {description}",
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
        # Its keys may hold "no such account", cached by a request that named the ID early.
        async with (
            runtime.invalidating(account_key(account_id), account_counters_key(account_id)),
            router.begin(shard) as conn,
        ):
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


async def account_row(runtime: Runtime, account_id: int) -> Record:
    row = (await load_accounts(runtime, [account_id])).get(account_id)
    if row is None:
        raise ApiError(404, "Record not found")
    return row


async def pending_follow_requests(runtime: Runtime, account_id: int) -> int:
    async with runtime.router.connect_for(account_id) as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(follow_requests_in)
            .where(follow_requests_in.c.account_id == account_id)
        )
    return int(count or 0)


# --- changing the profile ---------------------------------------------------------------------

#: Mastodon's limits (the display_name column allows more; clients expect these).
MAX_DISPLAY_NAME = 30
MAX_NOTE = 500
# C0 and C1 controls other than tab, line feed and carriage return: invisible, and NUL
# cannot even be stored in a PostgreSQL text column.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class ProfileChange:
    """What ``update_credentials`` changes; None leaves a field as it is."""

    display_name: str | None = None
    note: str | None = None
    locked: bool | None = None
    discoverable: bool | None = None
    avatar_jpeg: bytes | None = None  # already checked and re-encoded by ``check_avatar``


def check_profile_change(
    display_name: str | None, note: str | None, locked: bool | None, discoverable: bool | None
) -> ProfileChange:
    # Mastodon strips both before validating, so the limits count what is kept.
    if display_name is not None:
        display_name = display_name.strip()
        if len(display_name) > MAX_DISPLAY_NAME:
            raise validation_failed(
                "display_name",
                "ERR_TOO_LONG",
                f"is too long (maximum is {MAX_DISPLAY_NAME} characters)",
                label="Display name",
            )
        if CONTROL.search(display_name) or "\n" in display_name or "\r" in display_name:
            raise validation_failed(
                "display_name",
                "ERR_INVALID",
                "must not contain control characters or line breaks",
                label="Display name",
            )
    if note is not None:
        note = note.strip()
        if len(note) > MAX_NOTE:
            raise validation_failed(
                "note", "ERR_TOO_LONG", f"is too long (maximum is {MAX_NOTE} characters)"
            )
        if CONTROL.search(note):
            raise validation_failed("note", "ERR_INVALID", "must not contain control characters")
    return ProfileChange(display_name, note, locked, discoverable)


async def check_avatar(settings: Settings, data: bytes) -> bytes:
    """The upload re-encoded as the avatar to store, or a 422 saying why it was refused."""
    try:
        return await asyncio.to_thread(avatars.process, data, settings.avatar_max_pixels)
    except avatars.AvatarRejectedError as exc:
        raise avatar_refused(str(exc)) from None


def avatar_refused(description: str) -> ApiError:
    return validation_failed("avatar", "ERR_INVALID", description)


async def do_update_profile(runtime: Runtime, account_id: int, change: ProfileChange) -> None:
    """Apply ``change`` to the account in one transaction on its shard.

    A new avatar is written to the media store before the row names it (a row never
    points at a missing object), and recorded with its size and MD5 in ``media_objects``
    (as the variant ``avatar`` of the account's ID) in the same transaction, like every
    stored photo. The old object is deleted only once the new row is committed (a crash
    in between leaves an unreferenced object, never a broken avatar).
    """
    values: dict[str, object] = {
        name: value
        for name, value in (
            ("display_name", change.display_name),
            ("note", change.note),
            ("locked", change.locked),
            ("discoverable", change.discoverable),
        )
        if value is not None
    }
    new_key: str | None = None
    written = None
    if change.avatar_jpeg is not None:
        new_key = avatars.new_key(account_id)
        written = await runtime.store.put(new_key, change.avatar_jpeg)
        values["avatar_key"] = new_key
    if not values:
        await account_row(runtime, account_id)  # still a 404 for an account that is gone
        return
    old: tuple[str, str] | None = None
    try:
        async with (
            runtime.invalidating(account_key(account_id)),
            runtime.router.begin_for(account_id) as conn,
        ):
            if written is not None:
                # Locked, so two uploads at once each delete exactly the object they replaced.
                old_key = await conn.scalar(
                    select(accounts.c.avatar_key)
                    .where(accounts.c.id == account_id)
                    .with_for_update()
                )
                old_store = await conn.scalar(
                    select(media_objects.c.store).where(*_avatar(account_id))
                )
                if old_key is not None:
                    old = (old_store or runtime.media.name, old_key)
                await conn.execute(delete(media_objects).where(*_avatar(account_id)))
                await conn.execute(
                    insert(media_objects).values(
                        media_id=account_id,
                        variant=AVATAR_VARIANT,
                        store=runtime.media.name,
                        key=new_key,
                        size=written.size,
                        md5=written.md5_hex,
                        width=avatars.SIZE,
                        height=avatars.SIZE,
                        content_type="image/jpeg",
                    )
                )
            result = await conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(**values)
            )
            if result.rowcount == 0:
                raise ApiError(404, "Record not found")
    except BaseException:
        if new_key is not None:
            await runtime.store.delete(new_key)
        raise
    if old is not None and old[1] != new_key:
        store_name, key = old
        await runtime.media.delete_recorded(key, store_name)


#: An avatar's record in media_objects: the account's ID as media ID (IDs are unique across
#: a shard's tables, so it names nothing else) with this variant.
AVATAR_VARIANT = "avatar"


def _avatar(account_id: int) -> tuple[Any, Any]:
    return media_objects.c.media_id == account_id, media_objects.c.variant == AVATAR_VARIANT


# --- finding accounts -------------------------------------------------------------------------


async def blockers_of(router: Router, viewer_id: int, candidates: Iterable[int]) -> set[int]:
    """Of ``candidates``, the accounts that block ``viewer_id``.

    ``graph.visibility.hidden_from`` hides both directions alike; fetching one account
    needs the direction, since a blocker may still look at the account it blocked (to
    unblock it). ``blocked_by`` mirrors the blockers' ``blocks`` on the viewer's shard.
    """
    wanted = [c for c in set(candidates) if c != viewer_id]
    if not wanted:
        return set()
    async with router.connect_for(viewer_id) as conn:
        found = await conn.scalars(
            select(blocked_by.c.target_id).where(
                blocked_by.c.account_id == viewer_id, blocked_by.c.target_id.in_(wanted)
            )
        )
        return {int(i) for i in found}


async def visible_account(runtime: Runtime, viewer_id: int | None, account_id: int) -> Record:
    """The account row as ``viewer_id`` (None: anonymous) may see it, or a 404.

    An account that blocks the viewer does not exist as far as the viewer can tell.
    """
    # Past MAX_ID a number is no ID (and beyond BIGINT the database would refuse the
    # parameter); a shard this cluster does not have holds nothing.
    if not runtime.router.holds(account_id):
        raise ApiError(404, "Record not found")
    row = await account_row(runtime, account_id)
    if viewer_id is not None and await blockers_of(runtime.router, viewer_id, [account_id]):
        raise ApiError(404, "Record not found")
    return row


def local_username(settings: Settings, acct: str) -> str | None:
    """The username ``acct`` names on this instance (``name``, ``@name``, ``name@ourhost``);
    None when it names a remote account or cannot be a username at all."""
    username, at, domain = acct.strip().removeprefix("@").partition("@")
    if at and domain.lower() not in local_domains(settings):
        return None
    return username if USERNAME.fullmatch(username) else None


def local_domains(settings: Settings) -> frozenset[str]:
    parts = urlsplit(settings.base_url)
    return frozenset(d.lower() for d in (parts.netloc, parts.hostname or "") if d)


async def lookup_account(runtime: Runtime, viewer_id: int | None, acct: str) -> Record:
    username = local_username(runtime.settings, acct)
    if username is None:
        raise ApiError(404, "Record not found")
    async with runtime.router.global_connect() as conn:
        entry = (await conn.execute(directory_entry(username))).first()
    if entry is None or not entry.confirmed:  # unconfirmed: a sign-up still in progress
        raise ApiError(404, "Record not found")
    return await visible_account(runtime, viewer_id, int(entry.account_id))


#: Followed accounts per directory query when searching among them (bind-parameter limits).
FOLLOWING_CHUNK = 5000


async def search_accounts(
    runtime: Runtime,
    viewer_id: int,
    q: str,
    *,
    limit: int,
    offset: int = 0,
    following: bool = False,
) -> list[Record]:
    """Accounts whose username starts with ``q``, shortest (so an exact match) first.

    ``offset`` counts directory matches, and accounts hidden by a block (either way) are
    dropped from the page afterwards, so a page may hold fewer than ``limit`` while later
    pages still neither skip nor repeat anyone.
    """
    prefix = local_username(runtime.settings, q)
    if prefix is None:  # blank, remote, or nothing a username could start with
        return []
    router = runtime.router
    if following:
        ids = await _followed_with_prefix(runtime, viewer_id, prefix, limit, offset)
    else:
        async with router.global_connect() as conn:
            ids = [int(i) for i in await conn.scalars(username_prefix(prefix, limit, offset))]
    if not ids:
        return []
    hidden, rows = await gather(hidden_from(router, viewer_id, ids), load_accounts(runtime, ids))
    return [rows[i] for i in ids if i in rows and i not in hidden]


async def _followed_with_prefix(
    runtime: Runtime, viewer_id: int, prefix: str, limit: int, offset: int
) -> list[int]:
    async with runtime.router.connect_for(viewer_id) as conn:
        followed = [
            int(i)
            for i in await conn.scalars(
                select(follows.c.target_id).where(follows.c.account_id == viewer_id)
            )
        ]
    # The follows are on the viewer's shard and the usernames in the global directory:
    # ask the directory about the followed accounts, a chunk at a time, then merge.
    matches: list[tuple[int, str, int]] = []
    async with runtime.router.global_connect() as conn:
        for start in range(0, len(followed), FOLLOWING_CHUNK):
            chunk = followed[start : start + FOLLOWING_CHUNK]
            stmt = (
                username_prefix(prefix, offset + limit)
                .add_columns(usernames.c.username)
                .where(usernames.c.account_id.in_(chunk))
            )
            for row in await conn.execute(stmt):
                matches.append((len(row.username), row.username, int(row.account_id)))
    matches.sort()
    return [account_id for _, _, account_id in matches[offset : offset + limit]]
