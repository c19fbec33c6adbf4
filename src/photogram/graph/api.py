"""Follow-graph endpoints: follows, blocks, mutes, relationships, follow requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from photogram.accounts.schemas import Account, render_account
from photogram.db.ids import InvalidIdError, parse_id
from photogram.graph import actions
from photogram.graph.schemas import FollowForm, MuteForm, Relationship
from photogram.runtime import Runtime
from photogram.web.auth import Viewer, optional_reader, require_viewer
from photogram.web.body import body_openapi, form_or_json
from photogram.web.deps import RuntimeDep, path_id
from photogram.web.paging import PageDep, set_link_header

api = APIRouter(tags=["graph"])

WriteFollows = Annotated[Viewer, Depends(require_viewer("write:follows"))]
WriteBlocks = Annotated[Viewer, Depends(require_viewer("write:blocks"))]
WriteMutes = Annotated[Viewer, Depends(require_viewer("write:mutes"))]
ReadFollows = Annotated[Viewer, Depends(require_viewer("read:follows"))]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token."},
    403: {"description": "Outside the token's scopes, or not allowed (a block)."},
    404: {"description": "No such account."},
    422: {"description": "Not with an app token, or not on yourself."},
}


# Public lists: a token, if sent, must grant read:accounts; a user's lets blocks hide accounts.
ListReader = Annotated[Viewer | None, Depends(optional_reader("read:accounts"))]


async def _answer(runtime: Runtime, viewer: Viewer, target_id: int) -> Relationship:
    return await actions.relationship(runtime, viewer.account_id, target_id)


@api.post(
    "/api/v1/accounts/{id}/follow",
    response_model=Relationship,
    responses=ERRORS,
    openapi_extra=body_openapi(FollowForm),
)
async def follow(
    id: str,
    runtime: RuntimeDep,
    viewer: WriteFollows,
    form: Annotated[FollowForm, Depends(form_or_json(FollowForm))],
) -> Relationship:
    """Follow an account (a follow request if it is locked); again to change the options."""
    target = await actions.check_follow(runtime, viewer.account_id, id)
    await actions.do_follow(runtime, viewer.account_id, target, form.reblogs, form.notify)
    return await _answer(runtime, viewer, int(target.id))


@api.post("/api/v1/accounts/{id}/unfollow", response_model=Relationship, responses=ERRORS)
async def unfollow(id: str, runtime: RuntimeDep, viewer: WriteFollows) -> Relationship:
    """Stop following an account, or withdraw a follow request."""
    target = await actions.check_account(runtime, id)
    await actions.do_unfollow(runtime, viewer.account_id, int(target.id))
    return await _answer(runtime, viewer, int(target.id))


@api.post(
    "/api/v1/accounts/{id}/remove_from_followers", response_model=Relationship, responses=ERRORS
)
async def remove_from_followers(id: str, runtime: RuntimeDep, viewer: WriteFollows) -> Relationship:
    """Make an account stop following you."""
    target = await actions.check_account(runtime, id)
    await actions.do_remove_from_followers(runtime, viewer.account_id, int(target.id))
    return await _answer(runtime, viewer, int(target.id))


@api.post("/api/v1/accounts/{id}/block", response_model=Relationship, responses=ERRORS)
async def block(id: str, runtime: RuntimeDep, viewer: WriteBlocks) -> Relationship:
    """Block an account: follows either way end, and neither sees the other in lists."""
    target = await actions.check_account(runtime, id)
    actions.check_not_self(viewer.account_id, int(target.id), "block")
    await actions.do_block(runtime, viewer.account_id, int(target.id))
    return await _answer(runtime, viewer, int(target.id))


@api.post("/api/v1/accounts/{id}/unblock", response_model=Relationship, responses=ERRORS)
async def unblock(id: str, runtime: RuntimeDep, viewer: WriteBlocks) -> Relationship:
    target = await actions.check_account(runtime, id)
    await actions.do_unblock(runtime, viewer.account_id, int(target.id))
    return await _answer(runtime, viewer, int(target.id))


@api.post(
    "/api/v1/accounts/{id}/mute",
    response_model=Relationship,
    responses=ERRORS,
    openapi_extra=body_openapi(MuteForm),
)
async def mute(
    id: str,
    runtime: RuntimeDep,
    viewer: WriteMutes,
    form: Annotated[MuteForm, Depends(form_or_json(MuteForm))],
) -> Relationship:
    """Mute an account (its notifications too, unless notifications=false), for
    ``duration`` seconds or, with 0, until unmuted."""
    target = await actions.check_account(runtime, id)
    actions.check_not_self(viewer.account_id, int(target.id), "mute")
    await actions.do_mute(
        runtime, viewer.account_id, int(target.id), form.notifications, form.duration
    )
    return await _answer(runtime, viewer, int(target.id))


@api.post("/api/v1/accounts/{id}/unmute", response_model=Relationship, responses=ERRORS)
async def unmute(id: str, runtime: RuntimeDep, viewer: WriteMutes) -> Relationship:
    target = await actions.check_account(runtime, id)
    await actions.do_unmute(runtime, viewer.account_id, int(target.id))
    return await _answer(runtime, viewer, int(target.id))


@api.get("/api/v1/accounts/relationships", response_model=list[Relationship], responses=ERRORS)
async def relationships(
    runtime: RuntimeDep,
    viewer: ReadFollows,
    ids: Annotated[
        list[str] | None, Query(alias="id[]", description="Account IDs (repeat the parameter).")
    ] = None,
    id: Annotated[list[str] | None, Query(description="Also accepted: id=…&id=…")] = None,
) -> list[Relationship]:
    """The viewer's relationship to each account asked for that exists, in request order."""
    wanted: list[int] = []
    for raw in [*(ids or []), *(id or [])]:
        try:
            wanted.append(parse_id(raw))
        except InvalidIdError:
            continue  # names no account: skipped like an unknown ID
    return await actions.relationships(runtime, viewer.account_id, wanted)


def _accounts_page(
    runtime: Runtime,
    request: Request,
    response: Response,
    listed: tuple[list[Any], int | None, int | None],
) -> list[Account]:
    rows, newest, oldest = listed
    set_link_header(request, response, newest, oldest)
    return [render_account(row, runtime.settings) for row in rows]


@api.get("/api/v1/accounts/{id}/followers", response_model=list[Account], responses=ERRORS)
async def followers(
    id: str,
    runtime: RuntimeDep,
    reader: ListReader,
    page: PageDep,
    request: Request,
    response: Response,
) -> list[Account]:
    """Accounts that follow this account, most recent follow first."""
    owner = await actions.check_account(runtime, id)
    viewer_id = None if reader is None else reader.account_id
    listed = await actions.followers_of(runtime, int(owner.id), page, viewer_id)
    return _accounts_page(runtime, request, response, listed)


@api.get("/api/v1/accounts/{id}/following", response_model=list[Account], responses=ERRORS)
async def following(
    id: str,
    runtime: RuntimeDep,
    reader: ListReader,
    page: PageDep,
    request: Request,
    response: Response,
) -> list[Account]:
    """Accounts this account follows, most recent follow first."""
    owner = await actions.check_account(runtime, id)
    viewer_id = None if reader is None else reader.account_id
    listed = await actions.following_of(runtime, int(owner.id), page, viewer_id)
    return _accounts_page(runtime, request, response, listed)


@api.get("/api/v1/follow_requests", response_model=list[Account], responses=ERRORS)
async def follow_requests(
    runtime: RuntimeDep, viewer: ReadFollows, page: PageDep, request: Request, response: Response
) -> list[Account]:
    """Accounts asking to follow the viewer, most recent first."""
    listed = await actions.follow_requests(runtime, viewer.account_id, page)
    return _accounts_page(runtime, request, response, listed)


@api.post("/api/v1/follow_requests/{id}/authorize", response_model=Relationship, responses=ERRORS)
async def authorize_request(id: str, runtime: RuntimeDep, viewer: WriteFollows) -> Relationship:
    """Let an account that asked follow the viewer."""
    requester_id = path_id(runtime, id)
    await actions.do_answer_request(runtime, viewer.account_id, requester_id, accept=True)
    return await _answer(runtime, viewer, requester_id)


@api.post("/api/v1/follow_requests/{id}/reject", response_model=Relationship, responses=ERRORS)
async def reject_request(id: str, runtime: RuntimeDep, viewer: WriteFollows) -> Relationship:
    """Turn down an account's request to follow the viewer."""
    requester_id = path_id(runtime, id)
    await actions.do_answer_request(runtime, viewer.account_id, requester_id, accept=False)
    return await _answer(runtime, viewer, requester_id)
