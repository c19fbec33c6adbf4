"""Signing up, in and out, and the settings page (display name, bio, avatar, private)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from photogram.accounts import actions as accounts
from photogram.accounts import avatars
from photogram.accounts.api import FORM_OVERHEAD
from photogram.media.processing import describe_bytes
from photogram.oauth import actions as oauth
from photogram.web.errors import ApiError
from photogram.web.pages import session as sessions
from photogram.web.pages.common import (
    FormTooLargeError,
    PageContext,
    PageDep,
    PageError,
    PageRoute,
    redirect,
    safe_next,
    text_field,
)

api = APIRouter(route_class=PageRoute, include_in_schema=False)

#: How each field of a validation error is named on the forms.
LABELS = {
    "username": "Username",
    "email": "E-mail address",
    "password": "Password",
    "agreement": "The rules",
    "display_name": "Display name",
    "note": "Bio",
    "avatar": "Profile photo",
}


def field_errors(exc: ApiError) -> dict[str, str]:
    """The per-field messages of an action's validation error (``details``), for the form;
    anything without a field goes under ``form``."""
    details: Any = exc.extra.get("details")
    found: dict[str, str] = {}
    if isinstance(details, dict):
        for name, problems in details.items():
            if problems:
                description = problems[0].get("description", "is invalid")
                found[name] = f"{LABELS.get(name, name.capitalize())} {description}."
    return found or {"form": exc.message.removeprefix("Validation failed: ")}


# --- signing up -----------------------------------------------------------------------------


async def _sign_up_page(
    ctx: PageContext,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    return await ctx.render(
        "pages/signup.html",
        status,
        open=ctx.runtime.settings.registrations_open,
        values=values or {"username": "", "email": ""},
        errors=errors or {},
        next=safe_next(ctx.request.query_params.get("next")),
    )


@api.get("/signup")
async def sign_up_page(ctx: PageDep) -> Response:
    if ctx.session is not None:
        return redirect("/")
    return await _sign_up_page(ctx)


@api.post("/signup")
async def sign_up(ctx: PageDep) -> Response:
    form = await ctx.form()
    runtime = ctx.runtime
    if not runtime.settings.registrations_open:
        raise PageError(403, "Registrations are closed", "This server is not taking sign-ups.")
    values = {"username": text_field(form, "username"), "email": text_field(form, "email")}
    try:
        checked = accounts.check_sign_up(
            values["username"].strip(),
            values["email"].strip(),
            text_field(form, "password"),
            text_field(form, "agreement") == "on",
        )
        account_id = await accounts.do_sign_up(runtime, checked)
    except ApiError as exc:
        return await _sign_up_page(ctx, exc.status, values, field_errors(exc))
    return await _signed_in(ctx, account_id, text_field(form, "next"))


async def _signed_in(ctx: PageContext, account_id: int, after: str) -> Response:
    """A new session for ``account_id`` (ending the one the browser had), and on to
    ``after``."""
    if ctx.session is not None:
        await sessions.end(ctx.request, ctx.runtime, ctx.session)
    response = redirect(safe_next(after))
    issued = await sessions.start(ctx.request, ctx.runtime, account_id)
    sessions.set_cookie(ctx.runtime, response, issued)
    return response


# --- signing in and out -------------------------------------------------------------------


async def _sign_in_page(
    ctx: PageContext, status: int = 200, email: str = "", error: str | None = None
) -> Response:
    return await ctx.render(
        "pages/signin.html",
        status,
        email=email,
        error=error,
        next=safe_next(ctx.request.query_params.get("next")),
        registrations_open=ctx.runtime.settings.registrations_open,
    )


@api.get("/signin")
async def sign_in_page(ctx: PageDep) -> Response:
    if ctx.session is not None:
        return redirect(safe_next(ctx.request.query_params.get("next")))
    return await _sign_in_page(ctx)


@api.post("/signin")
async def sign_in(ctx: PageDep) -> Response:
    form = await ctx.form()
    email, password = text_field(form, "email").strip(), text_field(form, "password")
    if not email or not password:
        return await _sign_in_page(ctx, 422, email, "Enter your e-mail address and password.")
    try:
        account_id = await oauth.authenticate_user(ctx.runtime, email, password)
    except oauth.OAuthError:
        # 422, not 401: a 401 would need a WWW-Authenticate challenge a form has not.
        return await _sign_in_page(ctx, 422, email, "The e-mail address or password is wrong.")
    return await _signed_in(ctx, account_id, text_field(form, "next"))


@api.post("/signout")
async def sign_out(ctx: PageDep) -> Response:
    await ctx.form()
    if ctx.session is not None:
        await sessions.end(ctx.request, ctx.runtime, ctx.session)
    response = redirect("/signin")
    sessions.clear_cookie(ctx.runtime, response)
    return response


# --- settings -------------------------------------------------------------------------------


async def _settings_page(
    ctx: PageContext,
    status: int = 200,
    values: dict[str, Any] | None = None,
    saved: bool = False,
    errors: dict[str, str] | None = None,
) -> Response:
    session = ctx.require()
    row = session.account
    return await ctx.render(
        "pages/settings.html",
        status,
        values=values
        or {"display_name": row.display_name, "note": row.note, "locked": bool(row.locked)},
        errors=errors or {},
        saved=saved,
    )


@api.get("/settings")
async def settings_page(ctx: PageDep) -> Response:
    return await _settings_page(ctx, saved=ctx.request.query_params.get("saved") == "1")


@api.post("/settings")
async def save_settings(ctx: PageDep) -> Response:
    session = ctx.require()
    runtime = ctx.runtime
    limit = runtime.settings.avatar_max_bytes + FORM_OVERHEAD
    try:
        form = await ctx.form(limit, max_files=1)
    except FormTooLargeError:
        too_large = f"is larger than {describe_bytes(runtime.settings.avatar_max_bytes)}"
        message = f"{LABELS['avatar']} {too_large}."
        return await _settings_page(ctx, 413, errors={"avatar": message})
    display_name, note = text_field(form, "display_name"), text_field(form, "note")
    # A hidden "false" comes first; the checkbox's "true", when ticked, comes after it.
    locked = form.getlist("locked")[-1:] == ["true"]
    values = {"display_name": display_name, "note": note, "locked": locked}
    try:
        change = accounts.check_profile_change(display_name, note, locked, None)
        upload = form.get("avatar")
        if isinstance(upload, UploadFile):
            try:
                data = await avatars.read_limited(upload, runtime.settings.avatar_max_bytes)
            except avatars.AvatarRejectedError as exc:
                raise accounts.avatar_refused(str(exc)) from None
            # No file chosen: the browser sends an empty part with no file name.
            if data or upload.filename:
                jpeg = await accounts.check_avatar(runtime.settings, data)
                change = dataclasses.replace(change, avatar_jpeg=jpeg)
        await accounts.do_update_profile(runtime, session.account_id, change)
    except ApiError as exc:
        return await _settings_page(ctx, exc.status, values, errors=field_errors(exc))
    finally:
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.close()
    return redirect("/settings?saved=1")
