"""Statuses as a viewer sees them, hydrated in bulk.

``statuses_for`` turns any list of status IDs (a timeline page, a thread, a list of
likes) into Status entities: the rows, their accounts, photos and mentions, and the
viewer's likes and bookmarks, each fetched for the whole page at once (one query per
physical database, see ``Router.by_ids``), never one status at a time. Whatever the
viewer may not see (``visibility``), or that no longer exists, is left out: so a deleted
post vanishes from every list that still names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from photogram.accounts.actions import local_domains
from photogram.accounts.queries import load_accounts
from photogram.accounts.schemas import render_account
from photogram.cache import Record, RowShape, media_key, status_counters_key, status_key
from photogram.concurrency import gather
from photogram.db.metadata import bookmarks, media_attachments, media_objects, statuses
from photogram.graph.queries import edges_to
from photogram.media.actions import media_url
from photogram.media.schemas import FULL, PREVIEW, MediaAttachment, render_attachment
from photogram.posts import queries, text
from photogram.posts.schemas import Application, Status, StatusMention, StatusTag
from photogram.posts.visibility import Lens, can_see, effective_visibility, lens_for
from photogram.runtime import Runtime


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# How a status is cached: its row and mentions under ``status_key``, its counts (changed by
# every like and comment) apart under ``status_counters_key``, so a busy post's likes leave
# the rest of it cached.
COUNTED = ("favourites_count", "replies_count")
STATUS = RowShape(c for c in statuses.c if c.name not in COUNTED)
STATUS_COUNTS = RowShape(statuses.c[name] for name in COUNTED)
# A photo as cached under ``media_key``: its row and its stored objects' rows (their URLs
# are signed, and expire, so they are made as the photo is shown).
MEDIA = RowShape(media_attachments.c)
MEDIA_OBJECT = RowShape(media_objects.c)


@dataclass
class Loaded:
    """Everything fetched for one page of statuses."""

    rows: dict[int, Record]
    accounts: dict[int, Record]
    mentions: dict[int, list[int]]
    lens: Lens


async def load_statuses(
    runtime: Runtime, ids: Iterable[int]
) -> tuple[dict[int, Record], dict[int, list[int]]]:
    """The rows of the statuses of ``ids`` that exist, and whom each mentions, through the
    cache: one bulk get, and for what it misses one query per physical database (and one
    for the mentions)."""
    router = runtime.router
    wanted = [i for i in dict.fromkeys(int(i) for i in ids) if router.holds(i)]
    if not wanted:
        return {}, {}
    owner = {status_key(i): i for i in wanted} | {status_counters_key(i): i for i in wanted}

    async def fetch(keys: list[str]) -> Mapping[str, Any]:
        missing = {owner[k] for k in keys}
        # The mentions are part of the status key only: a miss of the counts alone needs none.
        mentioned = sorted(owner[k] for k in keys if k == status_key(owner[k]))
        rows, mention_rows = await gather(
            router.by_ids(queries.select_statuses, missing),
            router.by_ids(queries.mentions_of, mentioned),
        )
        mentions: dict[int, list[int]] = {}
        for m in mention_rows:
            mentions.setdefault(int(m.status_id), []).append(int(m.account_id))
        found: dict[str, Any] = {}
        for row in rows:
            id_ = int(row.id)
            found[status_key(id_)] = {"row": STATUS.dump(row), "mentions": mentions.get(id_, [])}
            found[status_counters_key(id_)] = STATUS_COUNTS.dump(row)
        return found

    cached = await runtime.cache.read_through(owner, fetch)
    by_id: dict[int, Record] = {}
    mentions: dict[int, list[int]] = {}
    for i in wanted:
        status, counts = cached.get(status_key(i)), cached.get(status_counters_key(i))
        # One without the other: the status was made or deleted between the two fills.
        if status is None or counts is None:
            continue
        by_id[i] = Record(STATUS.load(status["row"]) | STATUS_COUNTS.load(counts))
        if status["mentions"]:
            mentions[i] = [int(m) for m in status["mentions"]]
    return by_id, mentions


async def load(runtime: Runtime, viewer_id: int | None, ids: Iterable[int]) -> Loaded:
    """The rows of ``ids``, their accounts and the viewer's lens."""
    by_id, mentions = await load_statuses(runtime, ids)
    people: set[int] = set()
    for r in by_id.values():
        people.update((r.account_id, r.post_account_id))
        if r.in_reply_to_account_id is not None:
            people.add(r.in_reply_to_account_id)
    for found in mentions.values():
        people.update(found)
    accounts, lens = await gather(
        load_accounts(runtime, people), lens_for(runtime, viewer_id, people)
    )
    return Loaded(by_id, accounts, mentions, lens)


def visible_ids(loaded: Loaded, ids: Iterable[int], *, hide_muted: bool = False) -> list[int]:
    """Of ``ids``, in order, those that exist and the viewer may see (and, on timelines,
    whose author the viewer has not muted)."""
    shown = []
    for id_ in dict.fromkeys(ids):
        row = loaded.rows.get(id_)
        if row is None or row.account_id not in loaded.accounts:
            continue
        if not can_see(loaded.lens, row, loaded.accounts.get(row.post_account_id)):
            continue
        if hide_muted and row.account_id in loaded.lens.muted:
            continue
        shown.append(id_)
    return shown


async def statuses_for(
    runtime: Runtime,
    viewer_id: int | None,
    ids: Iterable[int],
    *,
    hide_muted: bool = False,
    loaded: Loaded | None = None,
) -> list[Status]:
    """The Status entities of ``ids`` the viewer may see, in the order given."""
    ids = list(ids)
    if not ids:
        return []
    loaded = loaded or await load(runtime, viewer_id, ids)
    shown = visible_ids(loaded, ids, hide_muted=hide_muted)
    return await render_rows(runtime, viewer_id, loaded, shown)


async def render_rows(
    runtime: Runtime, viewer_id: int | None, loaded: Loaded, shown: list[int]
) -> list[Status]:
    """Render ``shown`` (already checked visible) with their photos and the viewer's flags."""
    if not shown:
        return []
    media_ids = [int(m) for i in shown for m in loaded.rows[i].media_ids]
    media, liked, saved = await gather(
        _attachments(runtime, media_ids),
        _liked(runtime, viewer_id, shown),
        _bookmarked(runtime, viewer_id, shown),
    )
    domains = local_domains(runtime.settings)
    settings = runtime.settings
    rendered_accounts = {i: render_account(a, settings) for i, a in loaded.accounts.items()}
    out = []
    for id_ in shown:
        row = loaded.rows[id_]
        mentioned = [
            loaded.accounts[m] for m in loaded.mentions.get(id_, ()) if m in loaded.accounts
        ]
        # In the order the text mentions them.
        written = {m.username.lower(): i for i, m in enumerate(text.mentions(row.text))}
        mentioned.sort(key=lambda a: written.get(a.username.lower(), len(written)))
        urls = {a.username.lower(): rendered_accounts[a.id].url for a in mentioned}
        owner = loaded.accounts.get(row.post_account_id)
        account = rendered_accounts[row.account_id]
        out.append(
            Status(
                id=str(id_),
                created_at=iso(row.created_at),
                in_reply_to_id=_str(row.in_reply_to_id),
                in_reply_to_account_id=_str(row.in_reply_to_account_id),
                sensitive=row.sensitive,
                spoiler_text=row.spoiler_text,
                visibility=effective_visibility(row, owner),
                language=row.language,
                uri=f"{settings.base_url}/users/{account.username}/statuses/{id_}",
                url=f"{settings.base_url}/@{account.username}/{id_}",
                replies_count=row.replies_count,
                favourites_count=row.favourites_count,
                edited_at=iso(row.edited_at) if row.edited_at else None,
                favourited=None if viewer_id is None else id_ in liked,
                reblogged=None if viewer_id is None else False,
                muted=None if viewer_id is None else False,
                bookmarked=None if viewer_id is None else id_ in saved,
                pinned=(row.pinned_at is not None) if viewer_id == row.account_id else None,
                content=text.to_html(
                    row.text, settings.base_url, urls, lambda d: d.lower() in domains
                ),
                application=Application(name=row.application) if row.application else None,
                account=account,
                media_attachments=[media[int(m)] for m in row.media_ids if int(m) in media],
                mentions=[
                    StatusMention(
                        id=str(a.id),
                        username=a.username,
                        acct=a.username,
                        url=rendered_accounts[a.id].url,
                    )
                    for a in mentioned
                ],
                tags=[
                    StatusTag(name=t, url=f"{settings.base_url}/tags/{t}")
                    for t in text.hashtags(row.text)
                ],
            )
        )
    return out


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


async def load_media(
    runtime: Runtime, media_ids: Iterable[int]
) -> tuple[list[Record], dict[int, dict[str, Record]]]:
    """The rows of the photos of ``media_ids`` that exist, and their stored objects by
    media ID and variant, through the cache."""
    router = runtime.router
    wanted = [i for i in dict.fromkeys(int(i) for i in media_ids) if router.holds(i)]
    if not wanted:
        return [], {}
    owner = {media_key(i): i for i in wanted}

    async def fetch(keys: list[str]) -> Mapping[str, Any]:
        missing = [owner[k] for k in keys]
        rows, objects = await gather(
            router.by_ids(queries.media_rows, missing),
            router.by_ids(queries.media_object_rows, missing),
        )
        stored: dict[int, list[dict[str, Any]]] = {}
        for obj in objects:
            stored.setdefault(int(obj.media_id), []).append(MEDIA_OBJECT.dump(obj))
        return {
            media_key(r.id): {"row": MEDIA.dump(r), "objects": stored.get(int(r.id), [])}
            for r in rows
        }

    cached = await runtime.cache.read_through(owner, fetch)
    rows: list[Record] = []
    variants: dict[int, dict[str, Record]] = {}
    for i in wanted:
        found = cached.get(media_key(i))
        if found is None:
            continue
        rows.append(MEDIA.record(found["row"]))
        for data in found["objects"]:
            obj = MEDIA_OBJECT.record(data)
            variants.setdefault(i, {})[obj.variant] = obj
    return rows, variants


async def _attachments(runtime: Runtime, media_ids: list[int]) -> dict[int, MediaAttachment]:
    if not media_ids:
        return {}
    rows, variants = await load_media(runtime, media_ids)
    keys = [o.key for v in variants.values() for n, o in v.items() if n in (FULL, PREVIEW)]
    urls = dict(zip(keys, await gather(*(media_url(runtime, k) for k in keys)), strict=True))
    return {
        int(r.id): render_attachment(r, variants.get(int(r.id), {}), lambda o: urls[o.key])
        for r in rows
    }


async def _liked(runtime: Runtime, viewer_id: int | None, ids: list[int]) -> set[int]:
    if viewer_id is None:
        return set()
    rows = await runtime.router.by_ids(queries.favourited_among(viewer_id), ids)
    return {int(r.status_id) for r in rows}


async def _bookmarked(runtime: Runtime, viewer_id: int | None, ids: list[int]) -> set[int]:
    if viewer_id is None:
        return set()
    async with runtime.router.connect_for(viewer_id) as conn:
        return set((await conn.execute(edges_to(bookmarks, viewer_id, ids))).scalars())
