"""Browser sessions: an OAuth access token of the instance's own web app, in a cookie.

Signing in issues an ordinary access token (``oauth.actions.issue_token``) to a
first-party app, and the browser keeps it in an HttpOnly, SameSite=Lax cookie (Secure,
with the ``__Host-`` prefix, when the instance is served over HTTPS). Every page request
checks it exactly as the API checks a bearer token (``web.auth.optional_token``: the same
table, expiry and revocation), and signing out revokes it. Why a token rather than a
signed cookie is in docs/web.md.

The web app is a row of ``oauth_apps`` with a fixed client ID and no redirect URI, so the
authorization page refuses it, and a client secret nobody knows, so the token endpoint
does too: its tokens are made only here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from photogram.accounts.actions import account_row
from photogram.cache import Record
from photogram.db.metadata import oauth_apps
from photogram.oauth import actions as oauth
from photogram.oauth.actions import App, IssuedToken, OAuthError
from photogram.runtime import Runtime
from photogram.web.auth import hash_secret, optional_token
from photogram.web.errors import ApiError

#: Never made by ``oauth.actions.new_secret`` (43 characters), so no registered app has it.
WEB_CLIENT_ID = "photogram-web"
#: What statuses posted from the web say they were posted with, as in Mastodon.
WEB_APP_NAME = "Web"
#: A session may do whatever the person may: every scope an app of theirs could ask for.
WEB_SCOPES = frozenset({"read", "write", "follow"})

_COOKIE = "photogram_session"
_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{43}")
#: How long the cookie lives when tokens do not expire (the token outlives it, unused).
DEFAULT_COOKIE_SECONDS = 30 * 24 * 3600


def _secure(runtime: Runtime) -> bool:
    return runtime.settings.base_url.startswith("https://")


def cookie_name(runtime: Runtime) -> str:
    # As for the CSRF cookie: over HTTPS, __Host- keeps subdomains and plain HTTP from
    # setting it (a planted session would sign the victim in as the attacker).
    return f"__Host-{_COOKIE}" if _secure(runtime) else _COOKIE


async def web_app(request: Request) -> App:
    """The instance's own web app (registered on first use, then kept by the process)."""
    known: App | None = getattr(request.app.state, "web_app", None)
    if known is None:
        known = request.app.state.web_app = await _register(request.app.state.runtime)
    return known


async def _register(runtime: Runtime) -> App:
    try:
        return await oauth.find_client(runtime, WEB_CLIENT_ID)
    except OAuthError:
        pass
    try:
        async with runtime.router.global_begin() as conn:
            await conn.execute(
                insert(oauth_apps).values(
                    client_id=WEB_CLIENT_ID,
                    client_secret_hash=hash_secret(oauth.new_secret()),  # thrown away
                    name=WEB_APP_NAME,
                    website=runtime.settings.base_url,
                    redirect_uris="",
                    scopes=" ".join(sorted(WEB_SCOPES)),
                )
            )
    except IntegrityError:  # another process registered it first
        pass
    return await oauth.find_client(runtime, WEB_CLIENT_ID)


async def start(request: Request, runtime: Runtime, account_id: int) -> IssuedToken:
    """A new session's token for ``account_id``."""
    app = await web_app(request)
    async with runtime.router.global_begin() as conn:
        return await oauth.issue_token(conn, runtime, app, account_id, WEB_SCOPES)


def set_cookie(runtime: Runtime, response: Response, issued: IssuedToken) -> None:
    response.set_cookie(
        cookie_name(runtime),
        issued.access_token,
        max_age=issued.expires_in or DEFAULT_COOKIE_SECONDS,
        httponly=True,
        samesite="lax",
        secure=_secure(runtime),
        path="/",
    )


def clear_cookie(runtime: Runtime, response: Response) -> None:
    response.delete_cookie(
        cookie_name(runtime), httponly=True, samesite="lax", secure=_secure(runtime), path="/"
    )


@dataclass(frozen=True)
class Session:
    """A signed-in browser: whose it is, and the token it holds (to revoke it)."""

    account_id: int
    account: Record
    token: str


def raw_token(runtime: Runtime, request: Request) -> str | None:
    value = request.cookies.get(cookie_name(runtime))
    return value if value and _WELL_FORMED.fullmatch(value) else None


async def current(runtime: Runtime, request: Request) -> Session | None:
    """The session the request's cookie names, if it is a live token of the web app for an
    account that still exists; else None (and the page treats the browser as signed out)."""
    raw = raw_token(runtime, request)
    if raw is None:
        return None
    try:
        token = await optional_token(
            request, runtime, HTTPAuthorizationCredentials(scheme="Bearer", credentials=raw)
        )
    except HTTPException:  # revoked, expired or unknown
        return None
    if token is None or token.account_id is None:
        return None
    # Only the web app's tokens: an API token copied into the cookie would otherwise act
    # beyond the scopes it was granted.
    if token.app_id != (await web_app(request)).id:
        return None
    try:
        account = await account_row(runtime, token.account_id)
    except ApiError:
        return None
    return Session(token.account_id, account, raw)


async def end(request: Request, runtime: Runtime, session: Session) -> None:
    """Sign out: the token stops working at once, wherever it was copied."""
    await oauth.do_revoke(runtime, await web_app(request), session.token)
