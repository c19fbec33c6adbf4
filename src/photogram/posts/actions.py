"""Posting, commenting, editing, deleting, liking, saving and pinning: checks (``check_*``)
then changes (``do_*``), and the reads of one status.

Everything about a thread changes on its post owner's shard, in one transaction under
the post's row lock: a comment and its parent's ``replies_count``, a like and
``favourites_count``. Counts are therefore exact however many people like at once, and
a like or comment cannot slip in beside a delete. What concerns other shards (the
liker's list of likes, notifications, removing photos from the store) goes through the
outbox in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.accounts.actions import local_domains
from photogram.accounts.queries import load_accounts
from photogram.accounts.schemas import Account, render_account
from photogram.cache import (
    Record,
    account_counters_key,
    media_key,
    status_counters_key,
    status_key,
)
from photogram.db.ids import InvalidIdError, next_id, parse_id, shard_of
from photogram.db.metadata import (
    accounts,
    bookmarks,
    favourites,
    media_attachments,
    status_mentions,
    status_tags,
    statuses,
    usernames,
)
from photogram.feeds.tasks import enqueue_fanout, enqueue_unfanout
from photogram.graph.queries import add_edge, remove_edge
from photogram.graph.visibility import hidden_from
from photogram.media.actions import enqueue_delete_media
from photogram.notifications.tasks import enqueue_notify
from photogram.posts import queries, tasks, text
from photogram.posts.render import Loaded, load, render_rows, statuses_for, visible_ids
from photogram.posts.schemas import VISIBILITIES, Context, EditForm, Status, StatusForm
from photogram.runtime import Runtime
from photogram.web.deps import path_id
from photogram.web.errors import ApiError, not_found
from photogram.web.paging import Page

MAX_CHARACTERS = 2200  # Instagram's caption limit
MAX_MEDIA_ATTACHMENTS = 10
MAX_SPOILER = 500
MAX_PINNED = 5
MAX_IDEMPOTENCY_KEY = 200
LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")


def refused(message: str) -> ApiError:
    return ApiError(422, message)


# --- checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    text: str
    media_ids: list[int]
    in_reply_to_id: int | None
    sensitive: bool
    spoiler_text: str
    visibility: str | None
    language: str | None


def _check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise refused(f"{what} is longer than {limit} characters")
    if any(ord(c) < 32 and c not in "\n\t\r" for c in value):
        raise refused(f"{what} contains control characters")
    return value


def _check_ids(raw: list[str], what: str) -> list[int]:
    try:
        return list(dict.fromkeys(parse_id(str(r)) for r in raw))
    except InvalidIdError:
        raise refused(f"{what} must be IDs") from None


def _check_language(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not LANGUAGE.fullmatch(value) or len(value) > 16:
        raise refused("language must be an ISO 639 code")
    return value


def check_draft(form: StatusForm) -> Draft:
    """A new post (1 to 10 photos) or comment (text only, ``in_reply_to_id``)."""
    body = _check_text(form.status or "", "status", MAX_CHARACTERS)
    media_ids = _check_ids(form.media_ids, "media_ids")
    reply_to = None
    if form.in_reply_to_id not in (None, ""):
        try:
            reply_to = parse_id(str(form.in_reply_to_id))
        except InvalidIdError:
            raise not_found() from None
    if form.visibility not in (None, "", *VISIBILITIES):
        raise refused("visibility must be public, unlisted or private")
    if reply_to is not None:
        if media_ids:
            raise refused("Comments are text only: media_ids must be empty")
        if not body.strip():
            raise refused("Validation failed: Text can't be blank")
    elif not media_ids:
        raise refused("A post needs at least one photo (media_ids)")
    if len(media_ids) > MAX_MEDIA_ATTACHMENTS:
        raise refused(f"A post has at most {MAX_MEDIA_ATTACHMENTS} photos")
    return Draft(
        text=body,
        media_ids=media_ids,
        in_reply_to_id=reply_to,
        sensitive=form.sensitive or bool(form.spoiler_text),
        spoiler_text=_check_text(form.spoiler_text or "", "spoiler_text", MAX_SPOILER),
        visibility=form.visibility or None,
        language=_check_language(form.language),
    )


def check_idempotency_key(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise refused(f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters")
    return value


async def mentioned_accounts(runtime: Runtime, body: str) -> list[int]:
    """The existing local accounts ``body`` @mentions, in order of first mention."""
    domains = local_domains(runtime.settings)
    names = [
        m.username.lower() for m in text.mentions(body) if m.domain is None or m.domain in domains
    ]
    if not names:
        return []
    async with runtime.router.global_connect() as conn:
        found = {
            r.username: int(r.account_id)
            for r in await conn.execute(
                select(usernames.c.username, usernames.c.account_id).where(
                    usernames.c.username.in_(names), usernames.c.confirmed
                )
            )
        }
    return list(dict.fromkeys(found[n] for n in names if n in found))


# --- reading one status ---------------------------------------------------------------------


async def visible_status(
    runtime: Runtime, viewer_id: int | None, raw_id: str | int
) -> tuple[Record, Loaded]:
    """The status row, if ``viewer_id`` may see it (and what was loaded to decide), else 404."""
    status_id = raw_id if isinstance(raw_id, int) else path_id(runtime, raw_id)
    loaded = await load(runtime, viewer_id, [status_id])
    if not visible_ids(loaded, [status_id]):
        raise not_found()
    return loaded.rows[status_id], loaded


async def status(runtime: Runtime, viewer_id: int | None, raw_id: str | int) -> Status:
    row, loaded = await visible_status(runtime, viewer_id, raw_id)
    (rendered,) = await render_rows(runtime, viewer_id, loaded, [int(row.id)])
    return rendered


async def context(
    runtime: Runtime, viewer_id: int | None, raw_id: str, limit: int, after: int | None
) -> tuple[Context, int | None]:
    """The status's ancestors (post first) and up to ``limit`` of its descendants in the
    order they were written, starting after ``after``; and the last descendant's ID when
    there may be more (for the Link header).

    A whole thread is on one shard: its shape (IDs and parents only) is one query,
    walked here, and only the page shown is hydrated.
    """
    row, _ = await visible_status(runtime, viewer_id, raw_id)
    async with runtime.router.connect_for(row.id) as conn:
        shape = [
            (int(r.id), r.in_reply_to_id)
            for r in await conn.execute(queries.thread_shape(row.post_id))
        ]
    parent = dict(shape)
    ancestors: list[int] = []
    at = row.in_reply_to_id
    while at is not None and at in parent and len(ancestors) < len(shape):
        ancestors.append(at)
        at = parent[at]
    ancestors.reverse()
    under = {int(row.id)}
    descendants = []
    for id_, p in shape:  # IDs sort by time: a reply always follows its parent
        if p in under and id_ not in under:
            under.add(id_)
            descendants.append(id_)
    if after is not None:
        descendants = [d for d in descendants if d > after]
    page = descendants[:limit]
    more = page[-1] if len(descendants) > limit else None
    loaded = await load(runtime, viewer_id, [*ancestors, *page])
    rendered = {
        s.id: s for s in await statuses_for(runtime, viewer_id, [*ancestors, *page], loaded=loaded)
    }
    return (
        Context(
            ancestors=[rendered[str(a)] for a in ancestors if str(a) in rendered],
            descendants=[rendered[str(d)] for d in page if str(d) in rendered],
        ),
        more,
    )


async def favourited_by(
    runtime: Runtime, viewer_id: int | None, raw_id: str, page: Page
) -> tuple[list[Account], int | None, int | None]:
    """Who liked the status, newest like first, without the accounts hidden from the
    viewer by a block; and the newest and oldest like IDs of the page."""
    row, _ = await visible_status(runtime, viewer_id, raw_id)
    async with runtime.router.connect_for(row.id) as conn:
        likes = page.in_order((await conn.execute(queries.favourites_page(row.id, page))).all())
    if not likes:
        return [], None, None
    likers = [int(r.account_id) for r in likes]
    hidden = set() if viewer_id is None else await hidden_from(runtime.router, viewer_id, likers)
    found = await load_accounts(runtime, [a for a in likers if a not in hidden])
    shown = [render_account(found[a], runtime.settings) for a in likers if a in found]
    return shown, int(likes[0].id), int(likes[-1].id)


# --- posting --------------------------------------------------------------------------------


async def _claim_key(
    conn: AsyncConnection, account_id: int, key: str | None, status_id: int
) -> int | None:
    """None if this request may go ahead; else the status an earlier one with ``key`` made."""
    if key is None:
        return None
    claimed = await conn.scalar(
        queries.claim_idempotency_key(conn.dialect.name, account_id, key, status_id)
    )
    if claimed is not None:
        return None
    return int(await conn.scalar(queries.idempotent_status(account_id, key)) or 0)


async def _record_mentions(
    conn: AsyncConnection, shard: int, status_id: int, author_id: int, mentioned: list[int]
) -> list[int]:
    if mentioned:
        await conn.execute(
            insert(status_mentions),
            [{"status_id": status_id, "account_id": m} for m in mentioned],
        )
    queued = []
    for account_id in mentioned:
        row_id = await enqueue_notify(conn, shard, account_id, "mention", author_id, status_id)
        if row_id is not None:
            queued.append(row_id)
    return queued


async def _record_tags(
    conn: AsyncConnection, status_id: int, account_id: int, visibility: str, body: str
) -> None:
    """Index a public post's hashtags for tag timelines (others are never listed there)."""
    await conn.execute(queries.tag_rows(status_id))
    tags = text.hashtags(body)
    if visibility == "public" and tags:
        await conn.execute(
            insert(status_tags),
            [{"tag": t, "status_id": status_id, "account_id": account_id} for t in tags],
        )


async def do_post(
    runtime: Runtime, author_id: int, draft: Draft, key: str | None, application: str | None
) -> int:
    """Publish a photo post on the author's shard; its ID (an earlier one's, for a repeated
    ``Idempotency-Key``)."""
    mentioned = await mentioned_accounts(runtime, draft.text)
    shard = shard_of(author_id)
    async with (
        runtime.invalidating(account_counters_key(author_id)) as changed,
        runtime.router.begin(shard) as conn,
    ):
        status_id = int(await conn.scalar(select(next_id(shard))) or 0)
        # Its keys may hold "no such status", cached by a request that named the ID early.
        changed.update((status_key(status_id), status_counters_key(status_id)))
        changed.update(media_key(m) for m in draft.media_ids)
        earlier = await _claim_key(conn, author_id, key, status_id)
        if earlier is not None:
            return earlier
        author = (
            await conn.execute(
                select(accounts.c.locked).where(accounts.c.id == author_id).with_for_update()
            )
        ).one()
        found = {
            int(r.id): r
            for r in await conn.execute(queries.attachable_media(author_id, draft.media_ids))
        }
        for media_id in draft.media_ids:
            media = found.get(media_id)
            if media is None:
                raise refused(f"media_ids: no photo {media_id} of yours")
            if media.status_id is not None:
                raise refused(f"media_ids: photo {media_id} is already in a post")
            if media.state != "ready":
                raise refused(
                    "Cannot attach files that have not finished processing. Try again in a moment!"
                )
        visibility = draft.visibility or ("private" if author.locked else "public")
        now = datetime.now(UTC)
        await conn.execute(
            insert(statuses).values(
                id=status_id,
                account_id=author_id,
                post_id=status_id,
                post_account_id=author_id,
                text=draft.text,
                spoiler_text=draft.spoiler_text,
                sensitive=draft.sensitive,
                visibility=visibility,
                language=draft.language,
                media_ids=[str(m) for m in draft.media_ids],
                application=application,
                created_at=now,
            )
        )
        await conn.execute(
            update(media_attachments)
            .where(media_attachments.c.id.in_(draft.media_ids))
            .values(status_id=status_id)
        )
        await _record_tags(conn, status_id, author_id, visibility, draft.text)
        await conn.execute(
            update(accounts)
            .where(accounts.c.id == author_id)
            .values(statuses_count=accounts.c.statuses_count + 1, last_status_at=now)
        )
        queued = await _record_mentions(conn, shard, status_id, author_id, mentioned)
        if runtime.feeds is not None:
            queued.append(await enqueue_fanout(conn, shard, status_id))
    await runtime.relay.dispatch(queued)
    return status_id


def narrower(a: str, b: str) -> str:
    return a if VISIBILITIES.index(a) >= VISIBILITIES.index(b) else b


async def do_comment(
    runtime: Runtime, author_id: int, draft: Draft, key: str | None, application: str | None
) -> int:
    """Comment on a status the author may see; the comment lives in its post's thread, on
    the post owner's shard (so its ID carries that shard)."""
    assert draft.in_reply_to_id is not None
    parent, _ = await visible_status(runtime, author_id, draft.in_reply_to_id)
    mentioned = await mentioned_accounts(runtime, draft.text)
    shard = shard_of(int(parent.id))
    async with (
        runtime.invalidating(status_counters_key(int(parent.id))) as changed,
        runtime.router.begin(shard) as conn,
    ):
        post = (await conn.execute(queries.lock_status(parent.post_id))).first()
        still = await conn.scalar(select(statuses.c.id).where(statuses.c.id == parent.id))
        if post is None or still is None:
            raise not_found()
        status_id = int(await conn.scalar(select(next_id(shard))) or 0)
        changed.update((status_key(status_id), status_counters_key(status_id)))
        earlier = await _claim_key(conn, author_id, key, status_id)
        if earlier is not None:
            return earlier
        await conn.execute(
            insert(statuses).values(
                id=status_id,
                account_id=author_id,
                post_id=post.id,
                post_account_id=post.account_id,
                in_reply_to_id=parent.id,
                in_reply_to_account_id=parent.account_id,
                text=draft.text,
                spoiler_text=draft.spoiler_text,
                sensitive=draft.sensitive,
                visibility=narrower(draft.visibility or post.visibility, post.visibility),
                language=draft.language,
                media_ids=[],
                application=application,
            )
        )
        await conn.execute(queries.bump_status(int(parent.id), "replies_count", +1))
        queued = await _record_mentions(conn, shard, status_id, author_id, mentioned)
        # A reply notifies the author of what it answers, as a mention (Mastodon's way),
        # unless it @mentions them and so has already.
        if parent.account_id not in mentioned:
            row_id = await enqueue_notify(
                conn, shard, int(parent.account_id), "mention", author_id, status_id
            )
            queued += [] if row_id is None else [row_id]
    await runtime.relay.dispatch(queued)
    return status_id


async def own_status(runtime: Runtime, viewer_id: int, raw_id: str) -> Record:
    """A status the viewer wrote (404 for anyone else's, as for none)."""
    row, _ = await visible_status(runtime, viewer_id, raw_id)
    if row.account_id != viewer_id:
        raise not_found()
    return row


async def do_edit(runtime: Runtime, row: Record, form: EditForm) -> None:
    """Change a status's text and warning (and a post's photo order or selection)."""
    changes: dict[str, Any] = {"edited_at": datetime.now(UTC)}
    if form.status is not None:
        changes["text"] = _check_text(form.status, "status", MAX_CHARACTERS)
        if row.in_reply_to_id is not None and not changes["text"].strip():
            raise refused("Validation failed: Text can't be blank")
    if form.spoiler_text is not None:
        changes["spoiler_text"] = _check_text(form.spoiler_text, "spoiler_text", MAX_SPOILER)
    if form.sensitive is not None:
        changes["sensitive"] = form.sensitive
    if form.language is not None:
        changes["language"] = _check_language(form.language)
    dropped: list[int] = []
    if form.media_ids is not None:
        wanted = _check_ids(form.media_ids, "media_ids")
        current = [int(m) for m in row.media_ids]
        if row.in_reply_to_id is not None and wanted:
            raise refused("Comments are text only: media_ids must be empty")
        if row.in_reply_to_id is None:
            if not wanted:
                raise refused("A post needs at least one photo (media_ids)")
            if not set(wanted) <= set(current):
                raise refused("media_ids: only the post's own photos can be kept or reordered")
            changes["media_ids"] = [str(m) for m in wanted]
            dropped = [m for m in current if m not in wanted]
    body = changes.get("text", row.text)
    mentioned = await mentioned_accounts(runtime, body)
    shard = shard_of(int(row.id))
    async with (
        runtime.invalidating(status_key(int(row.id))),
        runtime.router.begin(shard) as conn,
    ):
        if (await conn.execute(queries.lock_status(int(row.post_id)))).first() is None:
            raise not_found()
        await conn.execute(update(statuses).where(statuses.c.id == row.id).values(**changes))
        if row.in_reply_to_id is None:
            await _record_tags(conn, int(row.id), int(row.account_id), row.visibility, body)
        before = set(
            (
                await conn.execute(
                    select(status_mentions.c.account_id).where(
                        status_mentions.c.status_id == row.id
                    )
                )
            ).scalars()
        )
        await conn.execute(delete(status_mentions).where(status_mentions.c.status_id == row.id))
        queued = await _record_mentions(
            conn, shard, int(row.id), int(row.account_id), [m for m in mentioned if m not in before]
        )
        if before & set(mentioned):
            await conn.execute(
                insert(status_mentions),
                [{"status_id": row.id, "account_id": m} for m in mentioned if m in before],
            )
        if dropped:
            queued.append(await enqueue_delete_media(conn, shard, dropped))
    await runtime.relay.dispatch(queued)


async def do_delete(runtime: Runtime, viewer_id: int, raw_id: str) -> Status:
    """Delete a status the viewer wrote, or a comment on the viewer's post; the status as
    it was (with its source text, for "delete and redraft").

    A post goes with its whole thread, likes and index entries; its photos leave the
    store in the background. What other shards still name (a liker's list, bookmarks,
    notifications) is dropped when read, as a status that no longer exists.
    """
    row, loaded = await visible_status(runtime, viewer_id, raw_id)
    is_post = row.in_reply_to_id is None
    if row.account_id != viewer_id and (is_post or row.post_account_id != viewer_id):
        raise not_found()
    (rendered,) = await render_rows(runtime, viewer_id, loaded, [int(row.id)])
    rendered.text = row.text
    shard = shard_of(int(row.id))
    async with (
        runtime.invalidating() as changed,
        runtime.router.begin(shard) as conn,
    ):
        if (await conn.execute(queries.lock_status(int(row.post_id)))).first() is None:
            raise not_found()
        if is_post:
            authors = {
                int(r.id): int(r.account_id)
                for r in await conn.execute(queries.thread_authors(int(row.id)))
            }
        else:
            authors = {int(row.id): int(row.account_id)}
        gone = list(authors)
        changed.update(k for s in gone for k in (status_key(s), status_counters_key(s)))
        likers = list(
            (
                await conn.execute(
                    select(favourites.c.account_id).where(favourites.c.status_id.in_(gone))
                )
            ).scalars()
        )
        for table, column in (
            (favourites, favourites.c.status_id),
            (status_mentions, status_mentions.c.status_id),
            (status_tags, status_tags.c.status_id),
            (statuses, statuses.c.id),
        ):
            await conn.execute(delete(table).where(column.in_(gone)))
        queued = []
        if is_post:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == row.account_id)
                .values(statuses_count=accounts.c.statuses_count - 1)
            )
            changed.add(account_counters_key(int(row.account_id)))
            queued.append(await enqueue_delete_media(conn, shard, [int(m) for m in row.media_ids]))
            if runtime.feeds is not None:
                queued.append(await enqueue_unfanout(conn, shard, int(row.id), int(row.account_id)))
        else:
            await conn.execute(queries.bump_status(int(row.in_reply_to_id), "replies_count", -1))
            changed.add(status_counters_key(int(row.in_reply_to_id)))
        if likers:
            queued.append(await tasks.enqueue_sync_favourites(conn, shard, authors, likers))
    await runtime.relay.dispatch(queued)
    return rendered


# --- likes, saves, pins ---------------------------------------------------------------------


async def do_favourite(runtime: Runtime, viewer_id: int, raw_id: str, *, like: bool) -> int:
    """Like (or unlike) a status the viewer may see. Idempotent: liking twice counts once."""
    row, _ = await visible_status(runtime, viewer_id, raw_id)
    status_id = int(row.id)
    shard = shard_of(status_id)
    queued: list[int] = []
    async with (
        runtime.invalidating(status_counters_key(status_id)),
        runtime.router.begin(shard) as conn,
    ):
        if (await conn.execute(queries.lock_status(status_id))).first() is None:
            raise not_found()
        if like:
            changed = await conn.scalar(
                queries.insert_favourite(conn.dialect.name, status_id, viewer_id)
            )
        else:
            changed = await conn.scalar(queries.delete_favourite(status_id, viewer_id))
        if changed is not None:
            await conn.execute(
                queries.bump_status(status_id, "favourites_count", +1 if like else -1)
            )
            # The liker's list and the author's notification follow from the like.
            queued.append(
                await tasks.enqueue_sync_favourites(
                    conn, shard, {status_id: int(row.account_id)}, [viewer_id]
                )
            )
    await runtime.relay.dispatch(queued)
    return status_id


async def do_bookmark(runtime: Runtime, viewer_id: int, raw_id: str, *, save: bool) -> int:
    row, _ = await visible_status(runtime, viewer_id, raw_id)
    async with runtime.router.begin_for(viewer_id) as conn:
        if save:
            await add_edge(conn, bookmarks, viewer_id, int(row.id))
        else:
            await remove_edge(conn, bookmarks, viewer_id, int(row.id))
    return int(row.id)


async def do_pin(runtime: Runtime, viewer_id: int, raw_id: str, *, pin: bool) -> int:
    """Pin one of the viewer's own posts to the top of the profile (at most five)."""
    row = await own_status(runtime, viewer_id, raw_id)
    if row.in_reply_to_id is not None:
        raise refused("Only posts can be pinned, not comments")
    async with (
        runtime.invalidating(status_key(int(row.id))),
        runtime.router.begin_for(viewer_id) as conn,
    ):
        await conn.execute(
            select(accounts.c.id).where(accounts.c.id == viewer_id).with_for_update()
        )
        if pin and row.pinned_at is None:
            pinned = await conn.scalar(
                select(func.count()).where(
                    statuses.c.account_id == viewer_id, statuses.c.pinned_at.is_not(None)
                )
            )
            if int(pinned or 0) >= MAX_PINNED:
                raise refused(f"You can pin at most {MAX_PINNED} posts")
        if pin != (row.pinned_at is not None):
            await conn.execute(
                update(statuses)
                .where(statuses.c.id == row.id)
                .values(pinned_at=datetime.now(UTC) if pin else None)
            )
    return int(row.id)
