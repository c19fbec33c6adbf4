"""Timelines, assembled when they are read.

IDs sort by time, so every timeline is "the newest N status IDs below ``max_id``"
merged from wherever they live, then hydrated in bulk (``render.statuses_for``):

- home: the posts of the accounts the viewer follows, and the viewer's own. The follow
  list is on the viewer's shard; the posts are on their authors' shards, so each
  physical database gets one query (a UNION ALL over its shards, each branch taking
  only its own newest N), and the branches are merged by ID here.
- public and tag: every shard may hold some, so they scatter to every database.
- an account's: on the account's own shard.

What the viewer may not see is dropped after the IDs are chosen, so a page can come
back short; its Link header still moves past everything it looked at. Muted accounts are
left out when the IDs are chosen, so they cost a page nothing.

With ``redis_url`` set, home is read from a precomputed feed instead (``feeds.timeline``,
docs/feeds.md), which chooses the same IDs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, exists, or_, select

from photogram.accounts.actions import visible_account
from photogram.db.metadata import follows, mutes
from photogram.feeds.store import Entry
from photogram.posts import queries
from photogram.posts.render import statuses_for
from photogram.posts.schemas import Status
from photogram.posts.visibility import lens_for
from photogram.runtime import Runtime
from photogram.web.paging import Page

#: Followed accounts per query branch: bind-parameter limits (SQLite's 32,766) are far off.
AUTHORS_CHUNK = 5000


def _pick(rows: list[Row[Any]], page: Page) -> list[int]:
    """The page's IDs, newest first, from rows merged from several branches."""
    ids = sorted({int(r.id) for r in rows}, reverse=page.min_id is None)[: page.limit]
    return page.in_order(ids)


async def following(runtime: Runtime, viewer_id: int) -> tuple[list[int], set[int]]:
    """Whom the viewer follows, and which of them the viewer mutes (mutes that have not
    lapsed): one query on the viewer's shard."""
    now = datetime.now(UTC)
    muted = (
        exists()
        .where(
            mutes.c.account_id == viewer_id,
            mutes.c.target_id == follows.c.target_id,
            or_(mutes.c.expires_at.is_(None), mutes.c.expires_at > now),
        )
        .label("muted")
    )
    async with runtime.router.connect_for(viewer_id) as conn:
        rows = (
            await conn.execute(
                select(follows.c.target_id, muted).where(follows.c.account_id == viewer_id)
            )
        ).all()
    return [int(r.target_id) for r in rows], {int(r.target_id) for r in rows if r.muted}


def home_authors(viewer_id: int, followed: Iterable[int], muted: set[int]) -> list[int]:
    """Whose posts home lists: the viewer's own and those of the accounts it follows and
    has not muted."""
    return [viewer_id, *(a for a in followed if a not in muted)]


async def select_posts(runtime: Runtime, authors: Iterable[int], page: Page) -> list[Entry]:
    """The page's top-level posts of ``authors`` as (ID, author), newest first: per chunk
    of authors, one query per physical database."""
    authors = list(dict.fromkeys(authors))
    rows: list[Row[Any]] = []
    for at in range(0, len(authors), AUTHORS_CHUNK):
        chunk = authors[at : at + AUTHORS_CHUNK]
        rows += await runtime.router.by_ids(lambda ids: queries.posts_by(ids, page), chunk)
    author_of = {int(r.id): int(r.account_id) for r in rows}
    return [(i, author_of[i]) for i in _pick(rows, page)]


async def pulled_home_ids(runtime: Runtime, viewer_id: int, page: Page) -> list[int]:
    """The home page's IDs read from the shards, whether or not feeds are on."""
    followed, muted = await following(runtime, viewer_id)
    return [
        i for i, _ in await select_posts(runtime, home_authors(viewer_id, followed, muted), page)
    ]


async def home_ids(runtime: Runtime, viewer_id: int, page: Page) -> list[int]:
    if runtime.feeds is None or not await runtime.gates.enabled(
        "home.push_feeds", user_id=viewer_id, default=True
    ):
        return await pulled_home_ids(runtime, viewer_id, page)
    # Imported here: the push path reads the shards through this module's functions.
    from photogram.feeds import timeline

    followed, muted = await following(runtime, viewer_id)
    return await timeline.home_ids(runtime, viewer_id, followed, muted, page)


async def home(runtime: Runtime, viewer_id: int, page: Page) -> tuple[list[Status], list[int]]:
    """The viewer's home timeline page, and the IDs it looked at (for the Link header)."""
    ids = await home_ids(runtime, viewer_id, page)
    return await statuses_for(runtime, viewer_id, ids, hide_muted=True), ids


async def public(
    runtime: Runtime, viewer_id: int | None, page: Page
) -> tuple[list[Status], list[int]]:
    rows = await runtime.router.scatter(
        queries.public_posts(page), limit=page.limit, order="asc" if page.min_id else "desc"
    )
    ids = _pick(rows, page)
    return _publicly(await statuses_for(runtime, viewer_id, ids, hide_muted=True)), ids


async def tag(
    runtime: Runtime, viewer_id: int | None, name: str, page: Page
) -> tuple[list[Status], list[int]]:
    rows = await runtime.router.scatter(
        queries.tagged_posts(name.lower(), page),
        limit=page.limit,
        order="asc" if page.min_id else "desc",
    )
    ids = _pick(rows, page)
    return _publicly(await statuses_for(runtime, viewer_id, ids, hide_muted=True)), ids


def _publicly(shown: list[Status]) -> list[Status]:
    """Only what is still public: a post made public by an account that has since gone
    private is followers-only now, and followers-only posts are never listed publicly."""
    return [s for s in shown if s.visibility == "public"]


async def account(
    runtime: Runtime,
    viewer_id: int | None,
    account_id: int,
    page: Page,
    *,
    exclude_replies: bool,
    only_media: bool,
    pinned: bool,
) -> tuple[list[Status], list[int]]:
    """An account's posts (and the comments it wrote on its own posts, unless excluded).

    Followers-only posts are asked for only when the viewer may see them; a block either
    way makes the list empty.
    """
    owner = await visible_account(runtime, viewer_id, account_id)
    lens = await lens_for(runtime, viewer_id, [account_id])
    if account_id in lens.hidden:
        return [], []
    visibilities: tuple[str, ...] = ("public", "unlisted")
    if viewer_id == account_id or account_id in lens.following:
        visibilities = ("public", "unlisted", "private")
    elif owner.locked:
        return [], []
    async with runtime.router.connect_for(account_id) as conn:
        rows = (
            await conn.execute(
                queries.account_statuses(
                    account_id,
                    page,
                    visibilities=visibilities,
                    exclude_replies=exclude_replies or only_media,
                    pinned=pinned,
                )
            )
        ).all()
    ids = page.in_order([int(r.id) for r in rows])
    return await statuses_for(runtime, viewer_id, ids), ids
