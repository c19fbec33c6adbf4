"""Account endpoints (``/api/v1/accounts…``)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from photogram.accounts import actions, avatars
from photogram.accounts.schemas import (
    Account,
    CredentialAccount,
    render_account,
    render_credential_account,
)
from photogram.media.processing import describe_bytes
from photogram.oauth.actions import issue_token, load_app
from photogram.oauth.schemas import Token, render_token
from photogram.web.auth import OptionalViewerDep, Viewer, require_token, require_viewer
from photogram.web.auth import Token as AccessToken
from photogram.web.body import (
    BodyTooLargeError,
    body_openapi,
    form_or_json,
    read_params_within,
    validate,
)
from photogram.web.deps import RuntimeDep
from photogram.web.errors import ApiError

api = APIRouter(tags=["accounts"])


class SignUpForm(BaseModel):
    username: str = Field(description="1-30 letters, digits or underscores; unique.")
    email: str
    password: str
    agreement: bool = Field(default=False, description="Must be true: the rules were agreed to.")
    locale: str = "en"
    reason: str | None = None


@api.post(
    "/api/v1/accounts",
    response_model=Token,
    response_model_exclude_none=True,
    openapi_extra=body_openapi(SignUpForm),
)
async def sign_up(
    runtime: RuntimeDep,
    token: Annotated[AccessToken, Depends(require_token("write:accounts"))],
    form: Annotated[SignUpForm, Depends(form_or_json(SignUpForm))],
) -> Token:
    """Create an account (with an app's token) and get a user token for it."""
    if not runtime.settings.registrations_open:
        raise ApiError(403, "Registrations are closed on this instance")
    checked = actions.check_sign_up(form.username, form.email, form.password, form.agreement)
    app = await load_app(runtime, token.app_id)
    if app is None:
        raise ApiError(401, "The access token is invalid")
    account_id = await actions.do_sign_up(runtime, checked)
    async with runtime.router.global_begin() as conn:
        issued = await issue_token(conn, runtime, app, account_id, token.scopes)
    return render_token(issued)


@api.get("/api/v1/accounts/verify_credentials", response_model=CredentialAccount)
async def verify_credentials(
    runtime: RuntimeDep, viewer: Annotated[Viewer, Depends(require_viewer("read:accounts"))]
) -> CredentialAccount:
    """The signed-in account, with its source (editable) fields."""
    row = await actions.account_row(runtime, viewer.account_id)
    pending = await actions.pending_follow_requests(runtime, viewer.account_id)
    return render_credential_account(row, runtime.settings, pending)


def _blank_is_none(value: object) -> object:
    # An empty form field means "not given", as in Rails.
    return None if value == "" else value


FormBool = Annotated[bool | None, BeforeValidator(_blank_is_none)]


class ProfileForm(BaseModel):
    # Clients send every field of their profile editor (bot, fields_attributes,
    # source[privacy], header …); those photogram has no use for are ignored, as Rails
    # ignores unpermitted parameters. Values of the fields it does use are checked strictly.
    model_config = ConfigDict(extra="ignore")

    display_name: str | None = Field(default=None, description="At most 30 characters.")
    note: str | None = Field(default=None, description="The bio, plain text, at most 500.")
    locked: FormBool = Field(default=None, description="Follow requests need approval.")
    discoverable: FormBool = None
    avatar: Any = Field(
        default=None,
        description="An image file (multipart): JPEG, PNG, WebP or GIF (its first frame).",
        json_schema_extra={"type": "string", "format": "binary"},
    )


#: Room for the other form fields and the multipart framing around the avatar itself.
FORM_OVERHEAD = 64 * 1024


async def profile_change(request: Request, runtime: RuntimeDep) -> actions.ProfileChange:
    """The checked change an ``update_credentials`` request asks for.

    The body is read under a hard limit (the avatar limit plus room for the other fields):
    past it reading stops, so an endless upload costs neither memory nor disk.
    """
    limit = runtime.settings.avatar_max_bytes + FORM_OVERHEAD
    too_large = actions.avatar_refused(
        f"is larger than {describe_bytes(runtime.settings.avatar_max_bytes)}"
    )
    try:
        params, files = await read_params_within(request, limit)
    except BodyTooLargeError:
        raise too_large from None
    try:
        form = validate(ProfileForm, params)
        upload = files.get("avatar")
        if form.avatar is not None and upload is None:
            raise actions.avatar_refused("must be an image file sent as multipart/form-data")
        # The cheap checks first: no image is decoded for a request refused anyway.
        change = actions.check_profile_change(
            form.display_name, form.note, form.locked, form.discoverable
        )
        if upload is not None:
            data = await avatars.read_limited(upload, runtime.settings.avatar_max_bytes)
            # A browser form with no file chosen sends an empty part with no file name.
            if data or upload.filename:
                jpeg = await actions.check_avatar(runtime.settings, data)
                change = dataclasses.replace(change, avatar_jpeg=jpeg)
        return change
    except avatars.AvatarRejectedError as exc:
        raise actions.avatar_refused(str(exc)) from None
    finally:
        for file in files.values():
            await file.close()


@api.patch(
    "/api/v1/accounts/update_credentials",
    response_model=CredentialAccount,
    openapi_extra=body_openapi(ProfileForm, multipart=True),
)
async def update_credentials(
    runtime: RuntimeDep,
    # Declared first: the token is checked before a byte of the body is read.
    viewer: Annotated[Viewer, Depends(require_viewer("write:accounts"))],
    change: Annotated[actions.ProfileChange, Depends(profile_change)],
) -> CredentialAccount:
    """Change the signed-in account's profile: display name, bio, avatar, locked, discoverable."""
    await actions.do_update_profile(runtime, viewer.account_id, change)
    row = await actions.account_row(runtime, viewer.account_id)
    pending = await actions.pending_follow_requests(runtime, viewer.account_id)
    return render_credential_account(row, runtime.settings, pending)


@api.get("/api/v1/accounts/lookup", response_model=Account)
async def lookup(
    runtime: RuntimeDep,
    viewer: OptionalViewerDep,
    acct: Annotated[str, Query(description="A username, `@username` or `username@domain`.")],
) -> Account:
    """An account by its username, without searching."""
    viewer_id = viewer.account_id if viewer else None
    row = await actions.lookup_account(runtime, viewer_id, acct)
    return render_account(row, runtime.settings)


@api.get("/api/v1/accounts/search", response_model=list[Account])
async def search(
    runtime: RuntimeDep,
    viewer: Annotated[Viewer, Depends(require_viewer("read:accounts"))],
    q: Annotated[
        str, Query(description="The start of a username (`@` and our domain allowed).")
    ] = "",
    limit: Annotated[int, Query(ge=1, description="At most 80.")] = 40,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    resolve: Annotated[
        bool, Query(description="Accepted for compatibility: every account here is local.")
    ] = False,
    following: Annotated[bool, Query(description="Only accounts the viewer follows.")] = False,
) -> list[Account]:
    """Accounts by username prefix, an exact match first. A blank ``q`` finds nothing (as in
    Mastodon, which answers it with an empty list rather than an error)."""
    rows = await actions.search_accounts(
        runtime, viewer.account_id, q, limit=min(limit, 80), offset=offset, following=following
    )
    return [render_account(row, runtime.settings) for row in rows]


# Registered last, and digits only: the fixed paths above (and `relationships`,
# `familiar_followers` … of other modules) must not be taken for an account ID.
@api.get("/api/v1/accounts/{id:int}", response_model=Account)
async def get_account(runtime: RuntimeDep, viewer: OptionalViewerDep, id: int) -> Account:
    """An account's public profile."""
    viewer_id = viewer.account_id if viewer else None
    row = await actions.visible_account(runtime, viewer_id, id)
    return render_account(row, runtime.settings)
