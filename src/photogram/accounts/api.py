"""Account endpoints (``/api/v1/accounts…``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from photogram.accounts import actions
from photogram.accounts.schemas import CredentialAccount, render_credential_account
from photogram.db.metadata import follow_requests_in
from photogram.oauth.actions import issue_token, load_app
from photogram.oauth.schemas import Token, render_token
from photogram.web.auth import Token as AccessToken
from photogram.web.auth import Viewer, require_token, require_viewer
from photogram.web.body import body_openapi, form_or_json
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
    async with runtime.router.connect_for(viewer.account_id) as conn:
        pending = await conn.scalar(
            select(func.count())
            .select_from(follow_requests_in)
            .where(follow_requests_in.c.account_id == viewer.account_id)
        )
    return render_credential_account(row, runtime.settings, int(pending or 0))
