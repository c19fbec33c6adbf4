"""Notification endpoints: the viewer's notifications, one of them, dismissing them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from photogram.db.ids import InvalidIdError, parse_id
from photogram.notifications import actions
from photogram.notifications.schemas import Notification
from photogram.web.auth import Viewer, require_viewer
from photogram.web.deps import RuntimeDep, path_id
from photogram.web.errors import invalid
from photogram.web.paging import PageDep, set_link_header

api = APIRouter(tags=["notifications"])

ReadNotifications = Annotated[Viewer, Depends(require_viewer("read:notifications"))]
WriteNotifications = Annotated[Viewer, Depends(require_viewer("write:notifications"))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token."},
    403: {"description": "Outside the token's scopes."},
    404: {"description": "No such notification, or not shown to this account."},
    422: {"description": "A parameter is invalid, or not with an app token."},
}

# Mastodon clients send lists as types[]=…; some send types=… repeated. Both are taken.
TypesParam = Annotated[list[str] | None, Query(alias="types[]", description="Only these types.")]
TypesRepeated = Annotated[list[str] | None, Query(description="As types[].")]
ExcludeParam = Annotated[
    list[str] | None, Query(alias="exclude_types[]", description="Not these types.")
]
ExcludeRepeated = Annotated[list[str] | None, Query(description="As exclude_types[].")]


def _types(*lists: list[str] | None) -> frozenset[str] | None:
    given = [t for found in lists if found is not None for t in found]
    return None if all(found is None for found in lists) else frozenset(given)


@api.get("/api/v1/notifications", response_model=list[Notification], responses=ERRORS)
async def list_notifications(
    runtime: RuntimeDep,
    viewer: ReadNotifications,
    page: PageDep,
    request: Request,
    response: Response,
    types_: TypesParam = None,
    types: TypesRepeated = None,
    exclude_types_: ExcludeParam = None,
    exclude_types: ExcludeRepeated = None,
    account_id: Annotated[
        str | None, Query(description="Only notifications from this account.")
    ] = None,
) -> list[Notification]:
    """The viewer's notifications, newest first: likes, comments and mentions, follows and
    follow requests."""
    sender = None
    if account_id:
        try:
            sender = parse_id(account_id)
        except InvalidIdError:
            raise invalid("account_id is not a valid ID") from None
    filters = actions.Filters(
        types=_types(types_, types),
        exclude_types=_types(exclude_types_, exclude_types) or frozenset(),
        from_account_id=sender,
    )
    shown, newest, oldest = await actions.notifications_page(
        runtime, viewer.account_id, page, filters
    )
    set_link_header(request, response, newest, oldest)
    return shown


@api.get("/api/v1/notifications/{id}", response_model=Notification, responses=ERRORS)
async def get_notification(id: str, runtime: RuntimeDep, viewer: ReadNotifications) -> Notification:
    return await actions.notification(runtime, viewer.account_id, path_id(runtime, id))


@api.post("/api/v1/notifications/clear", responses=ERRORS)
async def clear_notifications(runtime: RuntimeDep, viewer: WriteNotifications) -> dict[str, str]:
    """Delete all of the viewer's notifications."""
    await actions.do_clear(runtime, viewer.account_id)
    return {}


@api.post("/api/v1/notifications/{id}/dismiss", responses=ERRORS)
async def dismiss_notification(
    id: str, runtime: RuntimeDep, viewer: WriteNotifications
) -> dict[str, str]:
    """Delete one of the viewer's notifications."""
    await actions.do_dismiss(runtime, viewer.account_id, path_id(runtime, id))
    return {}
