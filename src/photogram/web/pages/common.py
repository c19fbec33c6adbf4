"""What every page shares: its context (who is signed in, the CSRF token), rendering with
the page headers, reading forms, and turning the actions' errors into pages.

Pages call the same actions as the API, which raise ``ApiError`` (and ``HTTPException``)
for what a person can cause; ``PageRoute`` shows those as an HTML page with the same
status, so a page never answers JSON, and never a 500 for bad input.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.responses import Response
from starlette.types import Message

from photogram.accounts.actions import pending_follow_requests
from photogram.accounts.schemas import Account, render_account
from photogram.db.ids import InvalidIdError, parse_id
from photogram.errors import DatabaseUnavailableError
from photogram.runtime import Runtime
from photogram.web import csrf
from photogram.web.deps import RuntimeDep
from photogram.web.errors import ApiError
from photogram.web.pages import session as sessions
from photogram.web.pages.session import Session
from photogram.web.pages.templating import templates
from photogram.web.paging import Page

#: Scripts and styles come only from /static; nothing may frame a page; forms post here only.
#: Photos may come from the media store's own host (presigned S3 URLs, a CDN).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Pages hold a CSRF token and what one person may see: never kept by a cache.
    "Cache-Control": "no-store",
}
#: A form without files: far more than any caption, comment or bio.
FORM_LIMIT = 64 * 1024
#: What the progressive scripts send, to get JSON or a fragment instead of a whole page.
FETCH_HEADER = "x-requested-with"


class SignInRequired(Exception):
    """The page is for signed-in people: off to the sign-in page, and back afterwards."""


class PageError(Exception):
    """An error shown as a page of its own."""

    def __init__(self, status: int, heading: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.heading = heading
        self.message = message


class FormTooLargeError(Exception):
    """The request body went past the form's limit; reading stopped there."""


def not_found_page() -> PageError:
    return PageError(
        404, "Page not found", "This page does not exist, or it is not visible to you."
    )


def safe_next(value: object, default: str = "/") -> str:
    """A local path to go back to after a form: never another site (``//evil``, ``/\\evil``)."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return default
    if value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\t\\"):
        return default
    return value


def account_path(username: str) -> str:
    return f"/@{quote(username)}"


def status_path(username: str, status_id: str | int) -> str:
    return f"/@{quote(username)}/{status_id}"


def optional_id(value: object) -> int | None:
    """A paging ID from a query string; a malformed one is a 400 page, not a 500."""
    if value is None or value == "":
        return None
    try:
        return parse_id(str(value))
    except InvalidIdError:
        raise PageError(400, "Invalid link", "This link has an invalid page marker.") from None


def page_of(request: Request, limit: int) -> Page:
    """Older items (``?max_id=``): the only direction pages move in."""
    return Page(limit=limit, max_id=optional_id(request.query_params.get("max_id")))


def more_link(request: Request, oldest: int | None, full: bool) -> str | None:
    """The URL of the next (older) page, when this one was full."""
    if oldest is None or not full:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "max_id"]
    return f"{request.url.path}?{urlencode([*params, ('max_id', str(oldest))])}"


@dataclass
class PageContext:
    request: Request
    runtime: Runtime
    session: Session | None
    csrf: csrf.CsrfToken
    #: The browser holds a session cookie that no longer works (revoked or expired).
    stale: bool = False

    @property
    def viewer_id(self) -> int | None:
        return None if self.session is None else self.session.account_id

    @property
    def me(self) -> Account | None:
        if self.session is None:
            return None
        return render_account(self.session.account, self.runtime.settings)

    def require(self) -> Session:
        if self.session is None:
            raise SignInRequired
        return self.session

    @property
    def is_fetch(self) -> bool:
        return self.request.headers.get(FETCH_HEADER) == "fetch"

    async def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        me = self.me
        requests = 0
        if self.session is not None:  # even once unlocked, what is pending wants an answer
            requests = await pending_follow_requests(self.runtime, self.session.account_id)
        html = templates.get_template(template).render(
            instance_title=self.runtime.settings.instance_title,
            me=me,
            csrf_token=self.csrf.form_value,
            here=self.here,
            follow_requests_count=requests,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        csrf.set_cookie(response, self.csrf, self.runtime.settings)
        if self.stale:
            sessions.clear_cookie(self.runtime, response)
        return response

    def fragment(self, template: str, **context: Any) -> HTMLResponse:
        """Part of a page, for a script to add to the one it is on (``load more``)."""
        html = templates.get_template(template).render(
            csrf_token=self.csrf.form_value, here=self.here, me=self.me, **context
        )
        return HTMLResponse(html, headers=HEADERS)

    @property
    def here(self) -> str:
        return _here(self.request)

    async def form(self, limit: int = FORM_LIMIT, max_files: int = 0) -> FormData:
        """The posted form, read under a hard size limit, its CSRF token checked."""
        declared = self.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FormTooLargeError
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await self.request.receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise FormTooLargeError
            return message

        try:
            form = await Request(self.request.scope, bounded).form(
                max_files=max_files, max_fields=200
            )
        except FormTooLargeError:
            raise
        except Exception:  # a malformed body: the form parser's own errors vary
            if received > limit:
                raise FormTooLargeError from None
            raise PageError(400, "Invalid form", "The form could not be read.") from None
        try:
            csrf.check(self.request, self.runtime.settings, form.get(csrf.FIELD_NAME))
        except csrf.CsrfError:
            raise PageError(
                403,
                "This form has expired",
                "The form was not sent from this site in this browser. Go back, reload the "
                "page and try again.",
            ) from None
        return form


async def page_context(request: Request, runtime: RuntimeDep) -> PageContext:
    session = await sessions.current(runtime, request)
    stale = session is None and sessions.raw_token(runtime, request) is not None
    ctx = PageContext(request, runtime, session, csrf.get_token(request, runtime.settings), stale)
    request.state.page = ctx
    return ctx


PageDep = Annotated[PageContext, Depends(page_context)]


def text_field(form: FormData, name: str, default: str = "") -> str:
    """A text field of a form (a file sent in its place counts as nothing)."""
    value = form.get(name)
    return value if isinstance(value, str) else default


def idempotency_key() -> str:
    """A key for a form that creates something, so sending it twice creates it once."""
    return secrets.token_urlsafe(16)


def redirect(url: str) -> RedirectResponse:
    # 303: the browser follows with a GET, so reloading the next page sends nothing again.
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def json(body: Mapping[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(dict(body), status_code=status, headers={"Cache-Control": "no-store"})


# --- errors ---------------------------------------------------------------------------------

HEADINGS = {
    400: "Invalid request",
    401: "Sign in required",
    403: "Not allowed",
    404: "Page not found",
    409: "Conflict",
    413: "Too large",
    422: "That did not work",
    429: "Slow down",
    503: "Temporarily unavailable",
}


async def error_page(request: Request, status: int, heading: str, message: str) -> Response:
    ctx: PageContext | None = getattr(request.state, "page", None)
    if ctx is None:
        runtime: Runtime = request.app.state.runtime
        ctx = PageContext(request, runtime, None, csrf.get_token(request, runtime.settings))
    if ctx.is_fetch:
        return json({"error": message}, status)
    try:
        return await ctx.render("pages/error.html", status, heading=heading, message=message)
    except DatabaseUnavailableError:  # the badge count needs the database; the page does not
        anonymous = PageContext(request, ctx.runtime, None, ctx.csrf)
        return await anonymous.render("pages/error.html", status, heading=heading, message=message)


def describe(exc: ApiError) -> str:
    if exc.status == 404:
        return "This page does not exist, or it is not visible to you."
    return exc.message.removeprefix("Validation failed: ")


class PageRoute(APIRoute):
    """A page's route: what the actions raise becomes an error page with the same status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                # Back to the page after signing in; a form's target is no page to go to.
                back = _here(request) if request.method in ("GET", "HEAD") else "/"
                query = urlencode({"next": safe_next(back)})
                return redirect(f"/signin?{query}")
            except PageError as exc:
                return await error_page(request, exc.status, exc.heading, exc.message)
            except FormTooLargeError:
                return await error_page(request, 413, HEADINGS[413], "The form is too large.")
            except ApiError as exc:
                heading = HEADINGS.get(exc.status, "Something went wrong")
                return await error_page(request, exc.status, heading, describe(exc))
            except HTTPException as exc:
                heading = HEADINGS.get(exc.status_code, "Something went wrong")
                return await error_page(request, exc.status_code, heading, str(exc.detail))
            except RequestValidationError:
                return await error_page(
                    request, 400, HEADINGS[400], "This link or form has invalid values."
                )
            except DatabaseUnavailableError:
                return await error_page(
                    request, 503, HEADINGS[503], "A database is unavailable; try again shortly."
                )

        return page


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")
