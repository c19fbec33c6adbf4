"""The home feed, the public photos (explore), hashtag pages and notifications."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import Response

from photogram.notifications import actions as notifications
from photogram.posts import timelines
from photogram.posts.text import MAX_TAG, normalise_tag
from photogram.web.pages.cards import Card, cards_for, photos_of
from photogram.web.pages.common import (
    PageContext,
    PageDep,
    PageError,
    PageRoute,
    more_link,
    page_of,
    redirect,
)

api = APIRouter(route_class=PageRoute, include_in_schema=False)

#: Posts per page of the feed ("load more" fetches the next), and per page of a grid.
FEED_PAGE = 10
GRID_PAGE = 24
NOTIFICATIONS_PAGE = 30
#: What a hashtag can be (posts.text.HASHTAG's name part).
TAG = re.compile(r"\w*[^\W\d]\w*")


async def _feed(
    ctx: PageContext, template: str, cards: list[Card], more: str | None, **context: Any
) -> Response:
    """A page of cards, or only the cards (and the next link) for the "load more" script."""
    if ctx.is_fetch:
        return ctx.fragment("pages/_cards.html", cards=cards, more=more)
    return await ctx.render(template, cards=cards, more=more, **context)


@api.get("/")
async def home(ctx: PageDep) -> Response:
    if ctx.session is None:
        return redirect("/signin")
    page = page_of(ctx.request, FEED_PAGE)
    shown, looked_at = await timelines.home(ctx.runtime, ctx.session.account_id, page)
    cards = await cards_for(ctx.runtime, ctx.viewer_id, shown)
    more = more_link(
        ctx.request, looked_at[-1] if looked_at else None, len(looked_at) >= page.limit
    )
    return await _feed(ctx, "pages/home.html", cards, more, first_page=page.max_id is None)


@api.get("/explore")
async def explore(ctx: PageDep) -> Response:
    page = page_of(ctx.request, GRID_PAGE)
    shown, looked_at = await timelines.public(ctx.runtime, ctx.viewer_id, page)
    cards = await cards_for(ctx.runtime, ctx.viewer_id, shown, comments=False)
    more = more_link(
        ctx.request, looked_at[-1] if looked_at else None, len(looked_at) >= page.limit
    )
    return await ctx.render("pages/grid.html", heading="Explore", cards=cards, more=more, tag=None)


@api.get("/tags/{name}")
async def tag(name: str, ctx: PageDep) -> Response:
    if len(name) > MAX_TAG or not TAG.fullmatch(name):
        raise PageError(404, "No such hashtag", "Hashtags are letters, digits and underscores.")
    if name != normalise_tag(name):
        return redirect(f"/tags/{quote(normalise_tag(name))}")
    page = page_of(ctx.request, GRID_PAGE)
    shown, looked_at = await timelines.tag(ctx.runtime, ctx.viewer_id, name, page)
    cards = await cards_for(ctx.runtime, ctx.viewer_id, shown, comments=False)
    more = more_link(
        ctx.request, looked_at[-1] if looked_at else None, len(looked_at) >= page.limit
    )
    return await ctx.render("pages/grid.html", heading=f"#{name}", cards=cards, more=more, tag=name)


@api.get("/notifications")
async def notifications_page(ctx: PageDep) -> Response:
    session = ctx.require()
    page = page_of(ctx.request, NOTIFICATIONS_PAGE)
    shown, _, oldest = await notifications.notifications_page(
        ctx.runtime, session.account_id, page, notifications.Filters()
    )
    about = list({n.status.id: n.status for n in shown if n.status is not None}.values())
    photos = await photos_of(ctx.runtime, about)
    return await ctx.render(
        "pages/notifications.html",
        notifications=shown,
        thumbnails={i: found[0] for i, found in photos.items() if found},
        # Hidden ones are topped up from further along, so a short page is the last one.
        more=more_link(ctx.request, oldest, len(shown) >= page.limit),
    )
