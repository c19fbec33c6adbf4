"""Post endpoints: statuses (posts and comments), threads, likes, saves, pins, timelines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import field_validator
from sqlalchemy import select

from photogram.accounts.schemas import Account
from photogram.db.metadata import account_favourites, bookmarks, oauth_apps
from photogram.graph.queries import edge_page
from photogram.posts import actions, timelines
from photogram.posts.render import statuses_for
from photogram.posts.schemas import Context, EditForm, Status, StatusForm, StatusSource
from photogram.runtime import Runtime
from photogram.web.auth import Viewer, optional_reader, require_viewer
from photogram.web.body import body_openapi, form_or_json
from photogram.web.deps import RuntimeDep, path_id
from photogram.web.paging import PageDep, set_link_header

api = APIRouter(tags=["statuses"])

WriteStatuses = Annotated[Viewer, Depends(require_viewer("write:statuses"))]
ReadStatuses = Annotated[Viewer, Depends(require_viewer("read:statuses"))]
ReadFavourites = Annotated[Viewer, Depends(require_viewer("read:favourites"))]
ReadBookmarks = Annotated[Viewer, Depends(require_viewer("read:bookmarks"))]
StatusReader = Annotated[Viewer | None, Depends(optional_reader("read:statuses"))]
AccountReader = Annotated[Viewer | None, Depends(optional_reader("read:accounts"))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token."},
    403: {"description": "Outside the token's scopes."},
    404: {"description": "No such status, or not visible to this account."},
    422: {"description": "A parameter is invalid."},
}


def _viewer_id(viewer: Viewer | None) -> int | None:
    return None if viewer is None else viewer.account_id


def _ids_page(request: Request, response: Response, looked_at: list[int]) -> None:
    if looked_at:
        set_link_header(request, response, looked_at[0], looked_at[-1])


async def _app_name(runtime: Runtime, viewer: Viewer) -> str | None:
    async with runtime.router.global_connect() as conn:
        name = await conn.scalar(
            select(oauth_apps.c.name).where(oauth_apps.c.id == viewer.token.app_id)
        )
    return None if name is None else str(name)


# --- statuses -------------------------------------------------------------------------------


class _Form(StatusForm):
    @field_validator("media_ids", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        # A form with one photo may send media_ids=… rather than media_ids[]=…; JSON clients
        # send numbers as well as strings.
        if value is None:
            return []
        if isinstance(value, str | int):
            return [str(value)]
        if isinstance(value, list):
            return [str(v) for v in value]
        return value


@api.post(
    "/api/v1/statuses",
    response_model=Status,
    responses=ERRORS,
    openapi_extra=body_openapi(StatusForm),
)
async def create_status(
    runtime: RuntimeDep,
    viewer: WriteStatuses,
    form: Annotated[_Form, Depends(form_or_json(_Form))],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Status:
    """Post photos (``media_ids``, 1 to 10) with a caption, or comment (``in_reply_to_id``,
    text only). A repeated ``Idempotency-Key`` returns the status the first request made."""
    draft = actions.check_draft(form)
    key = actions.check_idempotency_key(idempotency_key)
    app = await _app_name(runtime, viewer)
    if draft.in_reply_to_id is None:
        status_id = await actions.do_post(runtime, viewer.account_id, draft, key, app)
    else:
        status_id = await actions.do_comment(runtime, viewer.account_id, draft, key, app)
    return await actions.status(runtime, viewer.account_id, status_id)


@api.get("/api/v1/statuses/{id}", response_model=Status, responses=ERRORS)
async def get_status(id: str, runtime: RuntimeDep, reader: StatusReader) -> Status:
    return await actions.status(runtime, _viewer_id(reader), id)


@api.put(
    "/api/v1/statuses/{id}",
    response_model=Status,
    responses=ERRORS,
    openapi_extra=body_openapi(EditForm),
)
async def edit_status(
    id: str,
    runtime: RuntimeDep,
    viewer: WriteStatuses,
    form: Annotated[EditForm, Depends(form_or_json(EditForm))],
) -> Status:
    """Edit a caption or comment (and a post's warning, or keep fewer of its photos)."""
    row = await actions.own_status(runtime, viewer.account_id, id)
    await actions.do_edit(runtime, row, form)
    return await actions.status(runtime, viewer.account_id, int(row.id))


@api.delete("/api/v1/statuses/{id}", response_model=Status, responses=ERRORS)
async def delete_status(id: str, runtime: RuntimeDep, viewer: WriteStatuses) -> Status:
    """Delete a status (a post with its comments; its photos leave the store shortly)."""
    return await actions.do_delete(runtime, viewer.account_id, id)


@api.get("/api/v1/statuses/{id}/source", response_model=StatusSource, responses=ERRORS)
async def status_source(id: str, runtime: RuntimeDep, viewer: ReadStatuses) -> StatusSource:
    """The text of one of the viewer's statuses as written, for editing."""
    row = await actions.own_status(runtime, viewer.account_id, id)
    return StatusSource(id=str(row.id), text=row.text, spoiler_text=row.spoiler_text)


CONTEXT_LIMIT, CONTEXT_MAX = 60, 400


@api.get("/api/v1/statuses/{id}/context", response_model=Context, responses=ERRORS)
async def status_context(
    id: str,
    runtime: RuntimeDep,
    reader: StatusReader,
    request: Request,
    response: Response,
    limit: Annotated[
        int, Query(ge=1, description=f"Descendants per page (at most {CONTEXT_MAX}).")
    ] = CONTEXT_LIMIT,
    min_id: Annotated[
        str | None, Query(description="Descendants after this one (the next page).")
    ] = None,
) -> Context:
    """The thread around a status: its ancestors, and its descendants oldest first, a page
    at a time (``Link: rel="next"`` when there are more)."""
    after = None
    if min_id:
        after = path_id(runtime, min_id)
    found, more = await actions.context(
        runtime, _viewer_id(reader), id, min(limit, CONTEXT_MAX), after
    )
    if more is not None:
        url = request.url.remove_query_params("min_id").include_query_params(min_id=str(more))
        response.headers["Link"] = f'<{url}>; rel="next"'
    return found


# --- likes, saves, pins ---------------------------------------------------------------------


#: One viewer's toggles on a status: path verb, scope, the action, and its description.
TOGGLES: tuple[tuple[str, str, Callable[[Runtime, int, str], Awaitable[int]], str], ...] = (
    (
        "favourite",
        "write:favourites",
        partial(actions.do_favourite, like=True),
        "Like a status (again: no change).",
    ),
    (
        "unfavourite",
        "write:favourites",
        partial(actions.do_favourite, like=False),
        "Take a like back.",
    ),
    (
        "bookmark",
        "write:bookmarks",
        partial(actions.do_bookmark, save=True),
        "Save a status (only the viewer ever sees what they saved).",
    ),
    (
        "unbookmark",
        "write:bookmarks",
        partial(actions.do_bookmark, save=False),
        "Take a save back.",
    ),
    (
        "pin",
        "write:accounts",
        partial(actions.do_pin, pin=True),
        "Pin one of your posts to your profile (at most five).",
    ),
    ("unpin", "write:accounts", partial(actions.do_pin, pin=False), "Unpin one of your posts."),
)


def _toggle_route(
    verb: str, scope: str, act: Callable[[Runtime, int, str], Awaitable[int]], summary: str
) -> None:
    # A default, not an Annotated hint: string annotations cannot see this local.
    async def toggle(
        id: str,
        runtime: RuntimeDep,
        viewer: Viewer = Depends(require_viewer(scope)),  # noqa: B008
    ) -> Status:
        status_id = await act(runtime, viewer.account_id, id)
        return await actions.status(runtime, viewer.account_id, status_id)

    api.post(
        f"/api/v1/statuses/{{id}}/{verb}",
        response_model=Status,
        responses=ERRORS,
        name=verb,
        operation_id=f"{verb}_status",
        description=summary,
    )(toggle)


for _toggle in TOGGLES:
    _toggle_route(*_toggle)


@api.get("/api/v1/statuses/{id}/favourited_by", response_model=list[Account], responses=ERRORS)
async def favourited_by(
    id: str,
    runtime: RuntimeDep,
    reader: AccountReader,
    page: PageDep,
    request: Request,
    response: Response,
) -> list[Account]:
    """Who liked a status, most recent like first."""
    shown, newest, oldest = await actions.favourited_by(runtime, _viewer_id(reader), id, page)
    set_link_header(request, response, newest, oldest)
    return shown


async def _saved_list(
    runtime: Runtime,
    viewer: Viewer,
    table: Any,
    page: PageDep,
    request: Request,
    response: Response,
) -> list[Status]:
    async with runtime.router.connect_for(viewer.account_id) as conn:
        rows = page.in_order((await conn.execute(edge_page(table, viewer.account_id, page))).all())
    if rows:
        set_link_header(request, response, int(rows[0].id), int(rows[-1].id))
    return await statuses_for(runtime, viewer.account_id, [int(r.target_id) for r in rows])


@api.get("/api/v1/favourites", response_model=list[Status], responses=ERRORS)
async def list_favourites(
    runtime: RuntimeDep, viewer: ReadFavourites, page: PageDep, request: Request, response: Response
) -> list[Status]:
    """The statuses the viewer liked, most recent like first."""
    return await _saved_list(runtime, viewer, account_favourites, page, request, response)


@api.get("/api/v1/bookmarks", response_model=list[Status], responses=ERRORS)
async def list_bookmarks(
    runtime: RuntimeDep, viewer: ReadBookmarks, page: PageDep, request: Request, response: Response
) -> list[Status]:
    """The statuses the viewer saved, most recent first."""
    return await _saved_list(runtime, viewer, bookmarks, page, request, response)


# --- timelines ------------------------------------------------------------------------------


@api.get("/api/v1/timelines/home", response_model=list[Status], responses=ERRORS)
async def home_timeline(
    runtime: RuntimeDep, viewer: ReadStatuses, page: PageDep, request: Request, response: Response
) -> list[Status]:
    """Posts of the accounts the viewer follows, and the viewer's own, newest first."""
    shown, looked_at = await timelines.home(runtime, viewer.account_id, page)
    _ids_page(request, response, looked_at)
    return shown


@api.get("/api/v1/timelines/public", response_model=list[Status], responses=ERRORS)
async def public_timeline(
    runtime: RuntimeDep,
    reader: StatusReader,
    page: PageDep,
    request: Request,
    response: Response,
    local: bool = False,
    remote: bool = False,
    only_media: bool = False,
) -> list[Status]:
    """Every public post, newest first (all accounts here are local; remote: none)."""
    if remote:
        return []
    shown, looked_at = await timelines.public(runtime, _viewer_id(reader), page)
    _ids_page(request, response, looked_at)
    return shown


@api.get("/api/v1/timelines/tag/{hashtag}", response_model=list[Status], responses=ERRORS)
async def tag_timeline(
    hashtag: str,
    runtime: RuntimeDep,
    reader: StatusReader,
    page: PageDep,
    request: Request,
    response: Response,
    local: bool = False,
    remote: bool = False,
    only_media: bool = False,
) -> list[Status]:
    """Public posts with a hashtag (without the #), newest first."""
    if remote or len(hashtag) > 100:
        return []
    shown, looked_at = await timelines.tag(runtime, _viewer_id(reader), hashtag, page)
    _ids_page(request, response, looked_at)
    return shown


@api.get("/api/v1/accounts/{id}/statuses", response_model=list[Status], responses=ERRORS)
async def account_statuses(
    id: str,
    runtime: RuntimeDep,
    reader: StatusReader,
    page: PageDep,
    request: Request,
    response: Response,
    exclude_replies: bool = False,
    only_media: bool = False,
    pinned: bool = False,
    exclude_reblogs: bool = False,
) -> list[Status]:
    """An account's posts, newest first (``pinned``: only the pinned ones)."""
    account_id = path_id(runtime, id)
    shown, looked_at = await timelines.account(
        runtime,
        _viewer_id(reader),
        account_id,
        page,
        exclude_replies=exclude_replies,
        only_media=only_media,
        pinned=pinned,
    )
    _ids_page(request, response, looked_at)
    return shown
