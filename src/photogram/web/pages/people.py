"""Profiles (header, follow button, grid of photos), follows and blocks, follower lists,
and the follow requests a private account answers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from photogram.accounts import actions as accounts
from photogram.accounts.schemas import render_account
from photogram.cache import Record
from photogram.graph import actions as graph
from photogram.posts import timelines
from photogram.web.deps import path_id
from photogram.web.pages.cards import cards_for
from photogram.web.pages.common import (
    PageContext,
    PageDep,
    PageRoute,
    account_path,
    more_link,
    page_of,
    redirect,
    safe_next,
    text_field,
)

api = APIRouter(route_class=PageRoute, include_in_schema=False)

#: Photos per page of a profile's grid (a multiple of its three columns).
GRID_PAGE = 24
ACCOUNTS_PAGE = 40


async def _account(ctx: PageContext, username: str) -> Record:
    """The account ``username`` names, as the viewer may see it (else a 404 page)."""
    return await accounts.lookup_account(ctx.runtime, ctx.viewer_id, username)


@api.get("/@{username}")
async def profile(username: str, ctx: PageDep) -> Response:
    runtime, viewer_id = ctx.runtime, ctx.viewer_id
    row = await _account(ctx, username)
    if row.username != username:
        return redirect(account_path(row.username))
    account_id = int(row.id)
    relationship = None
    if viewer_id is not None and viewer_id != account_id:
        relationship = await graph.relationship(runtime, viewer_id, account_id)
    page = page_of(ctx.request, GRID_PAGE)
    shown, looked_at = await timelines.account(
        runtime, viewer_id, account_id, page, exclude_replies=True, only_media=True, pinned=False
    )
    cards = await cards_for(runtime, viewer_id, shown, comments=False)
    is_me = viewer_id == account_id
    following = relationship is not None and relationship.following
    return await ctx.render(
        "pages/profile.html",
        account=render_account(row, runtime.settings),
        relationship=relationship,
        is_me=is_me,
        private=bool(row.locked) and not is_me and not following,
        cards=cards,
        more=more_link(
            ctx.request, looked_at[-1] if looked_at else None, len(looked_at) >= page.limit
        ),
    )


async def _back(ctx: PageContext, username: str) -> Response:
    form = await ctx.form()
    return redirect(safe_next(text_field(form, "next"), account_path(username)))


@api.post("/@{username}/follow")
async def follow(username: str, ctx: PageDep) -> Response:
    """Follow, or ask to follow a private account."""
    session = ctx.require()
    back = await _back(ctx, username)
    row = await _account(ctx, username)
    target = await graph.check_follow(ctx.runtime, session.account_id, str(row.id))
    await graph.do_follow(ctx.runtime, session.account_id, target, None, None)
    return back


@api.post("/@{username}/unfollow")
async def unfollow(username: str, ctx: PageDep) -> Response:
    """Stop following, or withdraw a request."""
    session = ctx.require()
    back = await _back(ctx, username)
    row = await _account(ctx, username)
    await graph.do_unfollow(ctx.runtime, session.account_id, int(row.id))
    return back


@api.post("/@{username}/block")
async def block(username: str, ctx: PageDep) -> Response:
    session = ctx.require()
    back = await _back(ctx, username)
    row = await _account(ctx, username)
    graph.check_not_self(session.account_id, int(row.id), "block")
    await graph.do_block(ctx.runtime, session.account_id, int(row.id))
    return back


@api.post("/@{username}/unblock")
async def unblock(username: str, ctx: PageDep) -> Response:
    session = ctx.require()
    back = await _back(ctx, username)
    row = await _account(ctx, username)
    await graph.do_unblock(ctx.runtime, session.account_id, int(row.id))
    return back


async def _people(
    ctx: PageContext,
    heading: str,
    rows: list[Record],
    oldest: int | None,
    page_size: int,
    **context: Any,
) -> Response:
    settings = ctx.runtime.settings
    return await ctx.render(
        "pages/people.html",
        heading=heading,
        people=[render_account(r, settings) for r in rows],
        # A page can come back short (blocks hide accounts); a full one may have more.
        more=more_link(ctx.request, oldest, len(rows) >= page_size),
        **context,
    )


@api.get("/@{username}/followers")
async def followers(username: str, ctx: PageDep) -> Response:
    row = await _account(ctx, username)
    page = page_of(ctx.request, ACCOUNTS_PAGE)
    found, _, oldest = await graph.followers_of(ctx.runtime, int(row.id), page, ctx.viewer_id)
    return await _people(
        ctx, f"Followers of @{row.username}", found, oldest, ACCOUNTS_PAGE, owner=row.username
    )


@api.get("/@{username}/following")
async def following(username: str, ctx: PageDep) -> Response:
    row = await _account(ctx, username)
    page = page_of(ctx.request, ACCOUNTS_PAGE)
    found, _, oldest = await graph.following_of(ctx.runtime, int(row.id), page, ctx.viewer_id)
    return await _people(
        ctx, f"Followed by @{row.username}", found, oldest, ACCOUNTS_PAGE, owner=row.username
    )


# --- follow requests ------------------------------------------------------------------------


@api.get("/follow_requests")
async def follow_requests(ctx: PageDep) -> Response:
    session = ctx.require()
    page = page_of(ctx.request, ACCOUNTS_PAGE)
    found, _, oldest = await graph.follow_requests(ctx.runtime, session.account_id, page)
    settings = ctx.runtime.settings
    return await ctx.render(
        "pages/follow_requests.html",
        people=[render_account(r, settings) for r in found],
        more=more_link(ctx.request, oldest, len(found) >= ACCOUNTS_PAGE),
    )


async def _answer(ctx: PageContext, account_id: str, accept: bool) -> Response:
    session = ctx.require()
    await ctx.form()
    requester_id = path_id(ctx.runtime, account_id)
    await graph.do_answer_request(ctx.runtime, session.account_id, requester_id, accept=accept)
    return redirect("/follow_requests")


@api.post("/follow_requests/{account_id}/authorize")
async def authorize(account_id: str, ctx: PageDep) -> Response:
    return await _answer(ctx, account_id, True)


@api.post("/follow_requests/{account_id}/reject")
async def reject(account_id: str, ctx: PageDep) -> Response:
    return await _answer(ctx, account_id, False)
