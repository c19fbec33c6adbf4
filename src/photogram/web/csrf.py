"""Cross-site request forgery protection for server-rendered forms: a signed double submit.

A page that renders a form makes sure the browser holds a random value in a cookie and puts
``HMAC(secret_key, value)`` in a hidden field; the POST must bring both, and they must match.
Another site can make a browser send the cookie along but can read neither it nor the page,
so it cannot produce the field. Signing, rather than echoing the cookie as it is, matters
when an attacker can *write* cookies (a sibling subdomain, a plain-HTTP response): a value
they plant is useless without the secret key. Nothing is stored on the server.

Usage, for any form::

    token = csrf.get_token(request, settings)      # when rendering: put token.form_value
    csrf.set_cookie(response, token, settings)     # in the FIELD_NAME hidden input
    csrf.check(request, settings, form.get(csrf.FIELD_NAME))  # first thing on POST
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from photogram.settings import Settings

FIELD_NAME = "csrf_token"
_COOKIE = "photogram_csrf"
# What token_urlsafe(32) makes; anything else in the cookie was not set by us.
_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{43}")


class CsrfError(Exception):
    """The form did not come from one of our pages in this browser."""


@dataclass(frozen=True)
class CsrfToken:
    value: str  # the cookie's random value
    form_value: str  # what the form's hidden field must send back
    fresh: bool  # the browser does not hold the cookie yet


def _secure(settings: Settings) -> bool:
    return settings.base_url.startswith("https://")


def cookie_name(settings: Settings) -> str:
    # Over HTTPS the __Host- prefix makes browsers refuse the cookie from a subdomain or
    # from plain HTTP, so it cannot be overwritten from there in the first place.
    return f"__Host-{_COOKIE}" if _secure(settings) else _COOKIE


def _sign(settings: Settings, value: str) -> str:
    key = settings.secret_key.get_secret_value().encode()
    # The prefix keeps this MAC apart from anything else signed with the same key.
    return hmac.new(key, b"csrf\x00" + value.encode(), hashlib.sha256).hexdigest()


def _cookie_value(request: Request, settings: Settings) -> str | None:
    value = request.cookies.get(cookie_name(settings))
    return value if value and _WELL_FORMED.fullmatch(value) else None


def get_token(request: Request, settings: Settings) -> CsrfToken:
    """The token for a form on this page: the browser's own cookie if it has one (so pages
    open in several tabs all stay valid), else a new one that ``set_cookie`` must send."""
    existing = _cookie_value(request, settings)
    value = existing or secrets.token_urlsafe(32)
    return CsrfToken(value, _sign(settings, value), fresh=existing is None)


def set_cookie(response: Response, token: CsrfToken, settings: Settings) -> None:
    if not token.fresh:
        return
    response.set_cookie(
        cookie_name(settings),
        token.value,
        httponly=True,
        samesite="lax",
        secure=_secure(settings),
        path="/",
    )


def check(request: Request, settings: Settings, submitted: object) -> None:
    """Raise ``CsrfError`` unless ``submitted`` (the form field) matches the cookie."""
    value = _cookie_value(request, settings)
    if value is None or not isinstance(submitted, str) or not submitted:
        raise CsrfError("The form's security token is missing")
    # Bytes: compare_digest refuses str with non-ASCII characters, which a forged field may hold.
    if not hmac.compare_digest(submitted.encode(), _sign(settings, value).encode()):
        raise CsrfError("The form's security token does not match")
