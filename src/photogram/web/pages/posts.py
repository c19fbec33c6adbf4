"""A post's page (photos, comments, likes), liking, commenting and deleting, and the
upload page that makes a post."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from photogram.concurrency import gather
from photogram.media import actions as media
from photogram.media import filters
from photogram.media.api import FORM_OVERHEAD, spool_upload
from photogram.media.schemas import MediaAttachment
from photogram.posts import actions as posts
from photogram.posts.actions import MAX_CHARACTERS, MAX_MEDIA_ATTACHMENTS
from photogram.posts.schemas import StatusForm
from photogram.web.errors import ApiError, not_found
from photogram.web.pages.cards import cards_for
from photogram.web.pages.common import (
    FormTooLargeError,
    PageContext,
    PageDep,
    PageRoute,
    account_path,
    idempotency_key,
    json,
    more_link,
    optional_id,
    page_of,
    redirect,
    safe_next,
    status_path,
    text_field,
)
from photogram.web.pages.session import WEB_APP_NAME
from photogram.web.paging import Page

api = APIRouter(route_class=PageRoute, include_in_schema=False)

#: Comments on a post's page, oldest first; more behind a link.
COMMENTS_PAGE = 50
#: Accounts in the "liked by" list of a post's page, and on each page of the full list.
LIKERS_SHOWN = 12
LIKERS_PAGE = 40


# --- a post's page --------------------------------------------------------------------------


async def _post_page(
    ctx: PageContext,
    username: str,
    status_id: str,
    status: int = 200,
    comment_text: str = "",
    comment_error: str | None = None,
    key: str | None = None,
) -> Response:
    runtime, viewer_id = ctx.runtime, ctx.viewer_id
    found = await posts.status(runtime, viewer_id, status_id)
    if found.in_reply_to_id is not None:
        # A comment's address (a notification names it) shows its post, at the comment.
        thread, _ = await posts.context(runtime, viewer_id, found.id, 1, None)
        if not thread.ancestors:
            raise not_found()
        post = thread.ancestors[0]
        return redirect(f"{status_path(post.account.username, post.id)}#comment-{found.id}")
    if found.account.username != username:
        return redirect(status_path(found.account.username, found.id))
    after = optional_id(ctx.request.query_params.get("after"))
    (thread, more), (likers, _, oldest_like), (card,) = await gather(
        posts.context(runtime, viewer_id, found.id, COMMENTS_PAGE, after),
        posts.favourited_by(runtime, viewer_id, found.id, Page(limit=LIKERS_SHOWN)),
        cards_for(runtime, viewer_id, [found], comments=False),
    )
    return await ctx.render(
        "pages/post.html",
        status,
        card=card,
        comments=thread.descendants,
        more_comments=None if more is None else f"{card.path}?after={more}#comments",
        likers=likers,
        more_likers=oldest_like is not None and len(likers) >= LIKERS_SHOWN,
        comment_text=comment_text,
        comment_error=comment_error,
        key=key or idempotency_key(),
        max_characters=MAX_CHARACTERS,
    )


@api.get("/@{username}/{status_id:int}")
async def post_page(username: str, status_id: int, ctx: PageDep) -> Response:
    return await _post_page(ctx, username, str(status_id))


@api.get("/@{username}/{status_id:int}/likes")
async def likes_page(username: str, status_id: int, ctx: PageDep) -> Response:
    found = await posts.status(ctx.runtime, ctx.viewer_id, str(status_id))
    page = page_of(ctx.request, LIKERS_PAGE)
    likers, _, oldest = await posts.favourited_by(ctx.runtime, ctx.viewer_id, found.id, page)
    return await ctx.render(
        "pages/likes.html",
        post=found,
        path=status_path(found.account.username, found.id),
        likers=likers,
        more=more_link(ctx.request, oldest, full=len(likers) >= LIKERS_PAGE),
    )


async def _liked(ctx: PageContext, status_id: str, like: bool) -> Response:
    session = ctx.require()
    form = await ctx.form()
    done = await posts.do_favourite(ctx.runtime, session.account_id, status_id, like=like)
    if ctx.is_fetch:
        found = await posts.status(ctx.runtime, session.account_id, done)
        return json({"favourited": found.favourited, "favourites_count": found.favourites_count})
    back = safe_next(text_field(form, "next"), f"{ctx.request.url.path.rsplit('/', 1)[0]}")
    return redirect(back)


@api.post("/@{username}/{status_id:int}/like")
async def like(username: str, status_id: int, ctx: PageDep) -> Response:
    return await _liked(ctx, str(status_id), True)


@api.post("/@{username}/{status_id:int}/unlike")
async def unlike(username: str, status_id: int, ctx: PageDep) -> Response:
    return await _liked(ctx, str(status_id), False)


@api.post("/@{username}/{status_id:int}/comment")
async def add_comment(username: str, status_id: int, ctx: PageDep) -> Response:
    session = ctx.require()
    form = await ctx.form()
    text = text_field(form, "text")
    key = text_field(form, "key") or None
    try:
        draft = posts.check_draft(StatusForm(status=text, in_reply_to_id=str(status_id)))
        made = await posts.do_comment(
            ctx.runtime,
            session.account_id,
            draft,
            posts.check_idempotency_key(key),
            WEB_APP_NAME,
        )
    except ApiError as exc:
        if exc.status != 422:
            raise
        message = _worded(exc.message, "A comment")
        return await _post_page(ctx, username, str(status_id), 422, text, message, key)
    return redirect(f"{status_path(username, status_id)}#comment-{made}")


@api.post("/@{username}/{status_id:int}/delete")
async def delete(username: str, status_id: int, ctx: PageDep) -> Response:
    session = ctx.require()
    form = await ctx.form()
    gone = await posts.do_delete(ctx.runtime, session.account_id, str(status_id))
    if gone.in_reply_to_id is None:
        return redirect(account_path(gone.account.username))
    return redirect(safe_next(text_field(form, "next"), "/"))


# --- uploading ------------------------------------------------------------------------------


async def _upload_page(
    ctx: PageContext,
    status: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    kept: list[MediaAttachment] | None = None,
) -> Response:
    session = ctx.require()
    return await ctx.render(
        "pages/upload.html",
        status,
        filters=filters.list_filters(),
        values=values
        or {"caption": "", "filter": "normal", "visibility": "", "key": idempotency_key()},
        error=error,
        kept=kept or [],
        locked=bool(session.account.locked),
        max_photos=MAX_MEDIA_ATTACHMENTS,
        max_characters=MAX_CHARACTERS,
        max_bytes=ctx.runtime.settings.media_max_bytes,
    )


@api.get("/new")
async def upload_page(ctx: PageDep) -> Response:
    return await _upload_page(ctx)


def _photos(form: FormData) -> list[UploadFile]:
    # With no file chosen, a browser sends one empty part with no file name.
    return [
        f
        for f in form.getlist("photos")
        if isinstance(f, UploadFile) and (f.filename or (f.size or 0) > 0)
    ]


async def _upload_one(
    ctx: PageContext, account_id: int, upload: UploadFile, description: str, filter_name: str
) -> str:
    """Upload one photo as ``POST /api/v2/media`` does; its media ID once processed."""
    runtime = ctx.runtime
    edit = media.check_edit(description or None, None)
    spooled: Path | None = await spool_upload(
        upload, media.spool_directory(runtime), runtime.settings.media_max_bytes
    )
    try:
        assert spooled is not None
        await media.check_photo(runtime, spooled)
        media_id, row_id = await media.do_upload(runtime, account_id, spooled, edit, filter_name)
        spooled = None  # it is the upload's now
    finally:
        if spooled is not None:
            await asyncio.to_thread(spooled.unlink, missing_ok=True)
    await media.wait_for_processing(runtime, row_id)
    return str(media_id)


async def _kept(ctx: PageContext, account_id: int, media_ids: list[str]) -> list[MediaAttachment]:
    """The viewer's own uploads of an earlier try, to show again (others are dropped)."""
    shown = []
    for media_id in media_ids:
        try:
            row = await media.own_media(ctx.runtime, account_id, media_id)
        except ApiError:
            continue
        if row.status_id is None and row.state != "failed":
            shown.append(await media.render(ctx.runtime, row))
    return shown


@api.post("/new")
async def upload(ctx: PageDep) -> Response:
    """Upload the chosen photos with the filter, then post them with the caption.

    When anything is refused, the page comes back with the photos already uploaded kept
    (as hidden fields), so fixing a caption does not mean choosing the photos again.
    """
    session = ctx.require()
    runtime = ctx.runtime
    per_photo = runtime.settings.media_max_bytes + FORM_OVERHEAD
    try:
        # Room for a few too many files, so choosing them is told apart from a broken form.
        form = await ctx.form(
            per_photo * MAX_MEDIA_ATTACHMENTS, max_files=2 * MAX_MEDIA_ATTACHMENTS
        )
    except FormTooLargeError:
        return await _upload_page(ctx, 413, "The photos are too large to send at once.")
    values = {
        "caption": text_field(form, "caption"),
        "filter": text_field(form, "filter", "normal"),
        "visibility": text_field(form, "visibility"),
        "key": text_field(form, "key") or idempotency_key(),
    }
    kept = [str(v) for v in form.getlist("media_ids") if isinstance(v, str)]
    photos = _photos(form)
    uploaded: list[str] = []

    async def again(status: int, error: str) -> Response:
        shown = await _kept(ctx, session.account_id, [*kept, *uploaded])
        return await _upload_page(ctx, status, error, values, shown)

    try:
        if not photos and not kept:
            return await again(422, "Choose at least one photo.")
        if len(photos) + len(kept) > MAX_MEDIA_ATTACHMENTS:
            return await again(422, f"A post has at most {MAX_MEDIA_ATTACHMENTS} photos.")
        filter_name = media.check_filter(values["filter"])
        if values["visibility"] not in ("", "public", "private"):
            return await again(422, "Choose who can see the post.")
        for index, photo in enumerate(photos):
            description = text_field(form, f"description_{index}")
            try:
                uploaded.append(
                    await _upload_one(ctx, session.account_id, photo, description, filter_name)
                )
            except ApiError as exc:
                name = photo.filename or f"Photo {index + 1}"
                return await again(exc.status, f"{name}: {exc.message}")
        draft = posts.check_draft(
            StatusForm(
                status=values["caption"],
                media_ids=[*kept, *uploaded],
                visibility=values["visibility"] or None,
            )
        )
        key = posts.check_idempotency_key(values["key"])
        status_id = await posts.do_post(runtime, session.account_id, draft, key, WEB_APP_NAME)
    except ApiError as exc:
        return await again(exc.status, _worded(exc.message, "The caption"))
    finally:
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.close()
    return redirect(status_path(session.account.username, status_id))


def _worded(message: str, what: str) -> str:
    """An action's message about the ``status`` field, in the form's own words."""
    message = message.removeprefix("Validation failed: ")
    if message == "Text can't be blank":
        return f"Write {what.lower()} first."
    if message.startswith("status "):
        return f"{what}{message[len('status') :]}."
    return message
