"""The server-rendered OAuth sign-in and consent page (``/oauth/authorize``).

A person signs in with e-mail and password and authorizes (or denies) an app; the app gets
an authorization code at its registered redirect URI. There is no browser session: every
authorization asks for the password, so nothing here outlives the request but the code.

Where an error goes follows RFC 6749 §4.1.2.1: until the client and its redirect URI are
verified, errors are shown as a page (redirecting to an unverified URI would make this an
open redirector); afterwards they are sent back to the app, which can act on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import ImmutableMultiDict

from photogram.oauth import actions
from photogram.oauth.actions import OOB, App, OAuthError
from photogram.runtime import Runtime
from photogram.web import csrf
from photogram.web.deps import RuntimeDep
from photogram.web.pages.templating import templates  # the web app's, so both look alike

api = APIRouter(tags=["oauth"])

# Each may appear at most once (RFC 6749 §3.1); they travel as hidden fields to the POST.
PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)
CHALLENGE_METHODS = ("S256", "plain")
# RFC 7636 §4.1-4.2: a plain challenge is the verifier (43-128 unreserved characters), an
# S256 one is 43 base64url characters; both fit this, and oauth_codes.code_challenge.
CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{43,128}")

TOP_SCOPE_TEXT = {
    "read": "Read all your account's data",
    "write": "Change all your account's data",
    "follow": "Follow, unfollow, block and mute accounts",
    "push": "Receive push notifications",
}
VERB = {"read": "Read", "write": "Change"}
CHILD_TEXT = {"statuses": "posts", "favourites": "likes", "media": "uploaded media"}

# No script runs here (only the shared stylesheet loads), nothing may frame the page (a
# consent page in a frame is clickjacking's classic target), and a page holding a CSRF token
# is never cached.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

AUTHORIZE_PARAMETERS: list[dict[str, Any]] = [
    {"name": name, "in": "query", "required": required, "schema": {"type": "string"}}
    for name, required in (
        ("response_type", True),
        ("client_id", True),
        ("redirect_uri", True),
        ("scope", False),
        ("state", False),
        ("code_challenge", False),
        ("code_challenge_method", False),
    )
]


class PageError(Exception):
    """An error shown to the person as a page: there is nowhere safe to send them."""

    def __init__(self, status: int, heading: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.heading = heading
        self.message = message


class SendBack(Exception):
    """An error for the app, delivered at its (verified) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Authorization:
    """A checked authorization request."""

    app: App
    redirect_uri: str
    state: str | None
    scope: str | None  # as asked, so the POST checks exactly what the page showed
    scopes: frozenset[str]
    code_challenge: str | None
    code_challenge_method: str | None

    def hidden_fields(self) -> list[tuple[str, str]]:
        fields = {
            "response_type": "code",
            "client_id": self.app.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": self.code_challenge_method,
        }
        return [(name, value) for name, value in fields.items() if value is not None]


def _one(params: ImmutableMultiDict[str, Any], name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise PageError(400, "Invalid authorization request", f"{name} is given more than once.")
    if not values or values[0] == "":
        return None
    if not isinstance(values[0], str):  # an uploaded file in a multipart body
        raise PageError(400, "Invalid authorization request", f"{name} must be text.")
    return values[0]


async def check_client(runtime: Runtime, params: ImmutableMultiDict[str, Any]) -> tuple[App, str]:
    """The app and its redirect URI, exactly as registered, or a ``PageError``."""
    for name in PARAMS:
        _one(params, name)
    try:
        app = await actions.find_client(runtime, _one(params, "client_id"))
    except OAuthError:
        raise PageError(
            400,
            "Unknown application",
            "The application that sent you here is not registered on this server.",
        ) from None
    redirect_uri = _one(params, "redirect_uri")
    if redirect_uri is None:
        raise PageError(400, "Invalid authorization request", "redirect_uri is missing.")
    if redirect_uri not in app.redirect_uris:
        raise PageError(
            400,
            "Invalid authorization request",
            "The redirect URI is not one this application registered.",
        )
    return app, redirect_uri


def check_authorization(
    app: App, redirect_uri: str, params: ImmutableMultiDict[str, Any]
) -> Authorization:
    """The rest of the request, once the redirect URI is known good (else ``SendBack``)."""
    response_type = _one(params, "response_type")
    if response_type is None:
        raise SendBack("invalid_request", "response_type is missing")
    if response_type != "code":
        raise SendBack("unsupported_response_type", "Only response_type=code is supported")
    scope = _one(params, "scope")
    try:
        scopes = actions.narrow_scopes(app, scope)
    except OAuthError as exc:
        raise SendBack(exc.error, exc.description) from None
    challenge = _one(params, "code_challenge")
    method = _one(params, "code_challenge_method")
    if method is not None and method not in CHALLENGE_METHODS:
        raise SendBack("invalid_request", "code_challenge_method must be S256 or plain")
    if method is not None and challenge is None:
        raise SendBack("invalid_request", "code_challenge_method needs a code_challenge")
    if challenge is not None and not CHALLENGE.fullmatch(challenge):
        raise SendBack("invalid_request", "code_challenge must be 43 to 128 unreserved characters")
    return Authorization(
        app=app,
        redirect_uri=redirect_uri,
        state=_one(params, "state"),
        scope=scope,
        scopes=scopes,
        code_challenge=challenge,
        # RFC 7636 §4.3: a challenge without a method is plain.
        code_challenge_method=(method or "plain") if challenge else None,
    )


# --- rendering ------------------------------------------------------------------------------


def _render(runtime: Runtime, template: str, status: int = 200, **context: object) -> HTMLResponse:
    html = templates.get_template(template).render(
        instance_title=runtime.settings.instance_title, **context
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _message(
    runtime: Runtime, status: int, heading: str, message: str, hint: str | None = None
) -> HTMLResponse:
    return _render(
        runtime,
        "oauth/message.html",
        status,
        heading=heading,
        message=message,
        hint=hint,
        is_error=status >= 400,
    )


def _error_page(runtime: Runtime, exc: PageError) -> HTMLResponse:
    return _message(
        runtime,
        exc.status,
        exc.heading,
        exc.message,
        "Go back to the app you came from and try again.",
    )


def describe_scope(scope: str) -> str:
    if scope in TOP_SCOPE_TEXT:
        return TOP_SCOPE_TEXT[scope]
    top, _, child = scope.partition(":")
    return f"{VERB.get(top, top.capitalize())} your {CHILD_TEXT.get(child, child)}"


def _scope_order(scope: str) -> tuple[int, str]:
    top, _, child = scope.partition(":")
    return list(TOP_SCOPE_TEXT).index(top), child


def _destination(redirect_uri: str) -> str:
    if redirect_uri == OOB:
        return "a page with a code to copy into the app"
    parts = urlsplit(redirect_uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _duration(seconds: int) -> str:
    if seconds % 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _authorize_page(
    request: Request,
    runtime: Runtime,
    auth: Authorization,
    status: int = 200,
    error: str | None = None,
    email: str = "",
) -> HTMLResponse:
    token = csrf.get_token(request, runtime.settings)
    response = _render(
        runtime,
        "oauth/authorize.html",
        status,
        app_name=auth.app.name,
        scopes=[
            {"name": s, "description": describe_scope(s)}
            for s in sorted(auth.scopes, key=_scope_order)
        ],
        destination=_destination(auth.redirect_uri),
        action=request.url_for("authorize_submit").path,
        csrf_token=token.form_value,
        hidden=auth.hidden_fields(),
        email=email,
        error=error,
    )
    csrf.set_cookie(response, token, runtime.settings)
    return response


def _with_query(uri: str, params: dict[str, str | None]) -> str:
    """``uri`` with ``params`` added to its query, keeping the query it was registered with
    (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(name, value) for name, value in params.items() if value is not None]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _redirect(redirect_uri: str, params: dict[str, str | None]) -> Response:
    # 303: the browser follows with a GET whatever method brought it here.
    response = RedirectResponse(_with_query(redirect_uri, params), status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _send_code(
    runtime: Runtime, app: App, redirect_uri: str, state: str | None, code: str
) -> Response:
    if redirect_uri == OOB:
        return _render(
            runtime,
            "oauth/code.html",
            app_name=app.name,
            code=code,
            ttl=_duration(runtime.settings.authorization_code_ttl_seconds),
        )
    return _redirect(redirect_uri, {"code": code, "state": state})


def _send_error(
    runtime: Runtime, app: App, redirect_uri: str, state: str | None, error: SendBack
) -> Response:
    if redirect_uri != OOB:
        params = {"error": error.error, "error_description": error.description, "state": state}
        return _redirect(redirect_uri, params)
    # Out of band there is no app to tell: the person reads it.
    if error.error == "access_denied":
        return _message(
            runtime,
            200,
            "Access denied",
            f"{app.name} was not given access to your account.",
            "You can close this page.",
        )
    return _error_page(runtime, PageError(400, "Invalid authorization request", error.description))


# --- routes ---------------------------------------------------------------------------------


@api.get(
    "/oauth/authorize",
    response_class=HTMLResponse,
    openapi_extra={"parameters": AUTHORIZE_PARAMETERS},
    responses={303: {"description": "An error, sent back to the app's redirect URI."}},
)
async def authorize_page(request: Request, runtime: RuntimeDep) -> Response:
    """The sign-in and consent page for an authorization code request."""
    try:
        app, redirect_uri = await check_client(runtime, request.query_params)
        try:
            auth = check_authorization(app, redirect_uri, request.query_params)
        except SendBack as exc:
            state = _one(request.query_params, "state")
            return _send_error(runtime, app, redirect_uri, state, exc)
    except PageError as exc:
        return _error_page(runtime, exc)
    return _authorize_page(request, runtime, auth)


@api.post(
    "/oauth/authorize",
    response_class=HTMLResponse,
    responses={303: {"description": "The code (or the refusal), sent to the app's redirect URI."}},
)
async def authorize_submit(request: Request, runtime: RuntimeDep) -> Response:
    """The page's form: authorize with e-mail and password, or deny."""
    try:
        try:
            form = await request.form()
        except Exception:  # a malformed body: the form parser's own errors vary
            raise PageError(400, "Invalid form", "The form could not be read.") from None
        app, redirect_uri = await check_client(runtime, form)
        try:
            csrf.check(request, runtime.settings, form.get(csrf.FIELD_NAME))
        except csrf.CsrfError:
            raise PageError(
                403,
                "This form has expired",
                "The form was not sent from this page in this browser. Please start again "
                "from the app.",
            ) from None
        state = _one(form, "state")
        try:
            auth = check_authorization(app, redirect_uri, form)
        except SendBack as exc:
            return _send_error(runtime, app, redirect_uri, state, exc)
        decision = _one(form, "decision")
        if decision == "deny":
            denied = SendBack("access_denied", "The user denied the request")
            return _send_error(runtime, app, redirect_uri, state, denied)
        if decision != "authorize":
            raise PageError(400, "Invalid form", "Choose Authorize or Deny.")
        email, password = _one(form, "email"), _one(form, "password")
        if email is None or password is None:
            return _authorize_page(
                request,
                runtime,
                auth,
                422,
                "Enter your e-mail address and password.",
                email or "",
            )
        try:
            account_id = await actions.authenticate_user(runtime, email, password)
        except OAuthError:
            # 422, not 401: a 401 would need a WWW-Authenticate challenge a form has not.
            return _authorize_page(
                request,
                runtime,
                auth,
                422,
                "The e-mail address or password is wrong.",
                email,
            )
        code = await actions.do_authorize(
            runtime,
            app,
            account_id,
            redirect_uri,
            auth.scopes,
            auth.code_challenge,
            auth.code_challenge_method,
        )
        return _send_code(runtime, app, redirect_uri, state, code)
    except PageError as exc:
        return _error_page(runtime, exc)
