"""The sign-in and consent page, /oauth/authorize, as a browser and an app meet it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest
from mastodon import Mastodon
from sqlalchemy import func, select

from photogram.db.metadata import oauth_codes
from tests.api import PASSWORD, App, Client, api_client
from tests.conftest import MakeSettings
from tests.oauth.flow import (
    CSRF_COOKIE,
    OOB,
    REDIRECT,
    exchange,
    hidden_fields,
    open_page,
    parse_page,
    pkce_pair,
    redirect_params,
    submit,
)

EVIL = "<script>alert(1)</script>"


async def codes_issued(client: Client) -> int:
    async with client.runtime.router.global_connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(oauth_codes)) or 0)


def assert_error_page(response: httpx.Response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    for phrase in phrases:
        assert phrase in response.text


async def test_page_shows_app_scopes_and_an_accessible_form(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(scopes="read write", redirect_uris=REDIRECT)
        page = await open_page(client, app, scope="read write:statuses", state="xyz")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "Authorize tests" in html
        assert "<code>read</code>" in html
        assert "<code>write:statuses</code>" in html
        assert "https://client.example/callback" in html  # where the person will be sent
        assert '<html lang="en">' in html
        assert 'name="viewport" content="width=device-width, initial-scale=1"' in html

        form = parse_page(html)
        assert form.method == "post"
        assert form.scripts == 0  # works without JavaScript
        assert form.inputs["email"]["type"] == "email"
        assert form.inputs["email"]["autocomplete"] == "username"
        assert form.inputs["password"]["type"] == "password"
        assert form.inputs["password"]["autocomplete"] == "current-password"
        assert {"email", "password"} <= form.labels  # every visible input has a label
        assert set(form.buttons) == {"authorize", "deny"}
        assert "formnovalidate" in form.buttons["deny"]  # Deny needs no password
        assert hidden_fields(page) == {
            "csrf_token": hidden_fields(page)["csrf_token"],
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": REDIRECT,
            "scope": "read write:statuses",
            "state": "xyz",
        }

        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{CSRF_COOKIE}=")
        assert "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        assert "Path=/" in cookie
        assert "Secure" not in cookie  # the instance's base URL is http here

        # Not framable (clickjacking), not cached (it holds a CSRF token), no scripts.
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert "no-store" in page.headers["cache-control"]

        # A second visit in the same browser keeps its cookie, so two open tabs both work.
        again = await open_page(client, app)
        assert "set-cookie" not in again.headers
        assert hidden_fields(again)["csrf_token"] == hidden_fields(page)["csrf_token"]


async def test_unverified_client_or_redirect_uri_gets_a_page_not_a_redirect(
    make_settings: MakeSettings,
) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=f"{REDIRECT} {OOB}")
        unknown = App("no-such-client", "")
        assert_error_page(await open_page(client, unknown), 400, "Unknown application")
        assert_error_page(await open_page(client, app, client_id=None), 400, "Unknown application")

        for uri in (
            "https://evil.example/callback",
            REDIRECT + "/",
            REDIRECT + "?x=1",
            REDIRECT.upper(),
            "https://client.example",
        ):
            page = await open_page(client, app, redirect_uri=uri)
            assert_error_page(page, 400, "redirect URI is not one this application registered")
        assert_error_page(await open_page(client, app, redirect_uri=None), 400, "redirect_uri")

        # A parameter given twice is ambiguous: refused before anything else.
        doubled = await client.get(
            "/oauth/authorize",
            params=[
                ("response_type", "code"),
                ("client_id", app.client_id),
                ("redirect_uri", REDIRECT),
                ("redirect_uri", "https://evil.example/"),
            ],
        )
        assert_error_page(doubled, 400, "more than once")
        assert "evil.example" not in doubled.text


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "write"}, "invalid_scope"),
        ({"scope": "read admin:read"}, "invalid_scope"),
        ({"code_challenge": "a" * 43, "code_challenge_method": "S512"}, "invalid_request"),
        ({"code_challenge_method": "S256"}, "invalid_request"),
        ({"code_challenge": "too-short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"code_challenge": "a" * 129, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "a" * 42 + "!", "code_challenge_method": "plain"}, "invalid_request"),
    ],
)
async def test_bad_request_is_sent_back_to_a_verified_redirect_uri(
    make_settings: MakeSettings, params: dict[str, str | None], error: str
) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(scopes="read", redirect_uris=f"{REDIRECT} {OOB}")
        response = await open_page(client, app, state="st", **params)
        received = redirect_params(response)
        assert received["error"] == error
        assert received["error_description"]
        assert received["state"] == "st"
        assert "code" not in received

        # With no redirect URI to go back to, the error is shown.
        shown = await open_page(client, app, redirect_uri=OOB, **params)
        assert_error_page(shown, 400, "Invalid authorization request")


async def test_wrong_password_shows_the_page_again(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)
        page = await open_page(client, app)

        for email, password in (
            (alice.email, "not the password"),
            ("nobody@example.com", PASSWORD),
        ):
            wrong = await submit(client, page, email, password)
            assert wrong.status_code == 422, wrong.text
            assert "location" not in wrong.headers
            assert "The e-mail address or password is wrong." in wrong.text
            form = parse_page(wrong.text)
            assert form.inputs["email"]["value"] == email  # kept, so only the password is retyped
            assert form.inputs["email"]["aria-invalid"] == "true"
            assert "value" not in form.inputs["password"]
            assert hidden_fields(wrong)["client_id"] == app.client_id

        empty = await submit(client, page, alice.email, "")
        assert empty.status_code == 422
        assert "Enter your e-mail address and password." in empty.text
        assert await codes_issued(client) == 0

        # The form the error page shows still works.
        retry = await submit(client, wrong, alice.email, PASSWORD)
        code = redirect_params(retry)["code"]
        assert (await exchange(client, app, code)).status_code == 200


async def test_deny(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=f"{REDIRECT} {OOB}")
        page = await open_page(client, app, state="keep me")
        denied = await submit(client, page, email=None, password=None, decision="deny")
        assert denied.status_code == 303
        received = redirect_params(denied)
        assert received["error"] == "access_denied"
        assert received["state"] == "keep me"
        assert "code" not in received

        page = await open_page(client, app, redirect_uri=OOB)
        shown = await submit(client, page, email=None, password=None, decision="deny")
        assert shown.status_code == 200
        assert "Access denied" in shown.text
        assert await codes_issued(client) == 0

        odd = await submit(client, page, email=None, password=None, decision="maybe")
        assert_error_page(odd, 400, "Choose Authorize or Deny")


async def test_out_of_band_code_page(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()  # urn:ietf:wg:oauth:2.0:oob only
        alice = await client.sign_up("alice", app)
        verifier, challenge = pkce_pair()
        page = await open_page(
            client,
            app,
            redirect_uri=OOB,
            code_challenge=challenge,
            code_challenge_method="S256",
        )
        assert "a page with a code to copy into the app" in page.text
        shown = await submit(client, page, alice.email)
        assert shown.status_code == 200, shown.text
        assert "location" not in shown.headers
        field = parse_page(shown.text).inputs["code"]
        assert field["readonly"] is None  # present, as a bare attribute
        assert 'for="code"' in shown.text
        assert "10 minutes" in shown.text
        code = field["value"]
        assert code
        token = await exchange(client, app, code, redirect_uri=OOB, code_verifier=verifier)
        assert token.status_code == 200, token.text


async def test_the_post_checks_everything_again(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(scopes="read", redirect_uris=REDIRECT)
        alice = await client.sign_up("alice")  # through another app: this one only reads
        page = await open_page(client, app)

        evil_uri = await submit(client, page, alice.email, redirect_uri="https://evil.example/")
        assert_error_page(evil_uri, 400, "not one this application registered")
        no_client = await submit(client, page, alice.email, client_id="forged")
        assert_error_page(no_client, 400, "Unknown application")
        wider = await submit(client, page, alice.email, scope="read write")
        assert redirect_params(wider)["error"] == "invalid_scope"
        wrong_type = await submit(client, page, alice.email, response_type="token")
        assert redirect_params(wrong_type)["error"] == "unsupported_response_type"
        bad_method = await submit(
            client, page, alice.email, code_challenge="a" * 43, code_challenge_method="none"
        )
        assert redirect_params(bad_method)["error"] == "invalid_request"
        assert await codes_issued(client) == 0

        # A body that is not a form names no client.
        as_json = await client.post(
            "/oauth/authorize", json={**hidden_fields(page), "email": alice.email}
        )
        assert_error_page(as_json, 400)
        assert await codes_issued(client) == 0


async def test_redirect_keeps_the_registered_query_and_custom_schemes(
    make_settings: MakeSettings,
) -> None:
    async with api_client(await make_settings()) as client:
        with_query = "https://client.example/cb?tenant=a%20b&x="
        custom = "photoapp://oauth-callback"
        app = await client.register_app(redirect_uris=f"{with_query} {custom}")
        alice = await client.sign_up("alice", app)

        page = await open_page(client, app, redirect_uri=with_query, state="&state=x")
        received = redirect_params(await submit(client, page, alice.email), with_query)
        assert received["tenant"] == "a b"
        assert received["x"] == ""
        assert received["state"] == "&state=x"  # encoded, not split into parameters
        token = await exchange(client, app, received["code"], redirect_uri=with_query)
        assert token.status_code == 200, token.text

        page = await open_page(client, app, redirect_uri=custom, state=None)
        response = await submit(client, page, alice.email)
        location = urlsplit(response.headers["location"])
        assert (location.scheme, location.netloc) == ("photoapp", "oauth-callback")
        assert re.fullmatch(r"code=[A-Za-z0-9_-]+", location.query)


async def test_page_escapes_what_it_shows(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        registered = await client.post(
            "/api/v1/apps",
            data={"client_name": EVIL, "redirect_uris": f"{REDIRECT} {OOB}", "scopes": "read"},
        )
        assert registered.status_code == 200, registered.text
        body = registered.json()
        app = App(body["client_id"], body["client_secret"])
        alice = await client.sign_up("alice")

        state = '"><script>alert(2)</script>'
        page = await open_page(client, app, state=state)
        assert page.status_code == 200
        assert "<script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert hidden_fields(page)["state"] == state  # escaped in the page, intact in the form

        wrong = await submit(client, page, f"{EVIL}@example.com", "wrong password")
        assert wrong.status_code == 422
        assert "<script>" not in wrong.text

        page = await open_page(client, app, redirect_uri=OOB, state=state)
        shown = await submit(client, page, alice.email)
        assert shown.status_code == 200
        assert "<script>" not in shown.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text

        denied = await submit(client, page, None, None, decision="deny")
        assert "<script>" not in denied.text


async def test_the_url_mastodon_py_builds_is_accepted(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(scopes="read write", redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app, scope="read write")
        library = Mastodon(
            client_id=app.client_id,
            client_secret=app.client_secret,
            api_base_url=str(client.base_url).rstrip("/"),
            version_check_mode="none",
        )
        # It adds force_login=False and lang=None, which the page ignores.
        url = urlsplit(
            library.auth_request_url(
                redirect_uris=REDIRECT, scopes=["read", "write"], state="abc", skip_server_info=True
            )
        )
        page = await client.get(f"{url.path}?{url.query}")
        assert page.status_code == 200, page.text
        received = redirect_params(await submit(client, page, alice.email))
        assert received["state"] == "abc"
        token = await exchange(client, app, received["code"])
        assert token.status_code == 200, token.text
        assert token.json()["scope"] == "read write"
