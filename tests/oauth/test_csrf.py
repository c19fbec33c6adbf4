"""The double-submit CSRF token of server-rendered forms, on the authorize page and alone."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from photogram.db.metadata import oauth_codes
from photogram.settings import Settings
from photogram.web import csrf
from tests.api import Client, api_client
from tests.conftest import MakeSettings
from tests.oauth.flow import CSRF_COOKIE, REDIRECT, hidden_fields, open_page, redirect_params


async def codes_issued(client: Client) -> int:
    async with client.runtime.router.global_connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(oauth_codes)) or 0)


async def test_forms_without_a_matching_token_are_refused(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)

        def form(fields: dict[str, str], **changes: str | None) -> dict[str, str]:
            merged = {**fields, "email": alice.email, "password": "x" * 10, **changes}
            return {name: value for name, value in merged.items() if value is not None}

        page = await open_page(client, app)
        fields = hidden_fields(page)
        cookie = client.cookies[CSRF_COOKIE]

        refusals = {
            "no token": form(fields, csrf_token=None),
            "empty token": form(fields, csrf_token=""),
            "mismatched token": form(fields, csrf_token="0" * 64),
            "the cookie itself as token": form(fields, csrf_token=cookie),
            "non-ASCII token": form(fields, csrf_token="é" * 64),
            "deny without token": form(fields, csrf_token=None, decision="deny"),
        }
        for label, data in refusals.items():
            response = await client.post("/oauth/authorize", data={"decision": "authorize", **data})
            assert response.status_code == 403, label
            assert response.headers["content-type"].startswith("text/html"), label
            assert "location" not in response.headers, label
            assert "This form has expired" in response.text, label

        # Another browser's session: its own cookie and its own page.
        client.cookies.clear()
        other_fields = hidden_fields(await open_page(client, app))
        other_cookie = client.cookies[CSRF_COOKIE]
        assert other_cookie != cookie
        assert other_fields["csrf_token"] != fields["csrf_token"]
        # Our form sent with its cookie, and its form with our cookie: both refused.
        crossed = await client.post("/oauth/authorize", data=form(fields, decision="authorize"))
        assert crossed.status_code == 403
        client.cookies.clear()
        client.cookies.set(CSRF_COOKIE, cookie)
        crossed = await client.post(
            "/oauth/authorize", data=form(other_fields, decision="authorize")
        )
        assert crossed.status_code == 403

        # No cookie at all.
        client.cookies.clear()
        cookieless = await client.post("/oauth/authorize", data=form(fields, decision="authorize"))
        assert cookieless.status_code == 403
        # A cookie the attacker made up, with a token they cannot sign.
        client.cookies.set(CSRF_COOKIE, "A" * 43)
        planted = await client.post("/oauth/authorize", data=form(fields, decision="authorize"))
        assert planted.status_code == 403
        assert await codes_issued(client) == 0

        # The genuine pair still works.
        client.cookies.clear()
        client.cookies.set(CSRF_COOKIE, cookie)
        ok = await client.post(
            "/oauth/authorize", data=form(fields, decision="deny", email=None, password=None)
        )
        assert redirect_params(ok)["error"] == "access_denied"


def request_with(cookie: str | None, settings: Settings) -> Request:
    headers = []
    if cookie is not None:
        headers.append((b"cookie", f"{csrf.cookie_name(settings)}={cookie}".encode()))
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def set_cookie_header(token: csrf.CsrfToken, settings: Settings) -> str | None:
    response = Response()
    csrf.set_cookie(response, token, settings)
    return response.headers.get("set-cookie")


def test_token_is_signed_with_the_secret_key() -> None:
    settings = Settings(secret_key="one secret")  # type: ignore[arg-type]
    other = Settings(secret_key="another secret")  # type: ignore[arg-type]
    token = csrf.get_token(request_with(None, settings), settings)
    assert token.fresh
    assert token.form_value != token.value

    browser = request_with(token.value, settings)
    csrf.check(browser, settings, token.form_value)
    # Same cookie, another key: the form value is worthless.
    with pytest.raises(csrf.CsrfError):
        csrf.check(browser, other, token.form_value)
    for submitted in (None, "", token.value, token.form_value[:-1], "ü" * 64, ["list"]):
        with pytest.raises(csrf.CsrfError):
            csrf.check(browser, settings, submitted)


def test_existing_cookie_is_reused_and_a_malformed_one_replaced() -> None:
    settings = Settings()
    first = csrf.get_token(request_with(None, settings), settings)
    again = csrf.get_token(request_with(first.value, settings), settings)
    assert not again.fresh
    assert again == csrf.CsrfToken(first.value, first.form_value, fresh=False)
    assert set_cookie_header(again, settings) is None

    for malformed in ("short", "x" * 43 + "!", "x" * 44):
        replaced = csrf.get_token(request_with(malformed, settings), settings)
        assert replaced.fresh
        assert replaced.value != malformed
        with pytest.raises(csrf.CsrfError):
            csrf.check(request_with(malformed, settings), settings, csrf._sign(settings, malformed))


def test_cookie_attributes_follow_the_base_url() -> None:
    plain = Settings()
    header = set_cookie_header(csrf.get_token(request_with(None, plain), plain), plain)
    assert header is not None
    assert header.startswith("photogram_csrf=")
    assert "HttpOnly" in header
    assert "Path=/" in header
    assert "samesite=lax" in header.lower()
    assert "Secure" not in header
    assert "Max-Age" not in header  # a browser-session cookie

    https = Settings(public_url="https://photos.example")
    header = set_cookie_header(csrf.get_token(request_with(None, https), https), https)
    assert header is not None
    # __Host-: only this host, over HTTPS, may set it.
    assert header.startswith("__Host-photogram_csrf=")
    assert "Secure" in header
    assert "Domain" not in header
