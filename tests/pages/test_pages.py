"""The web pages over HTTP (ASGI, no browser): forms, sessions, CSRF, errors and markup.

One embedded instance serves the whole module; each test makes people of its own.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from photogram.db.metadata import oauth_tokens
from photogram.web.pages.feeds import FEED_PAGE
from tests.api import PASSWORD, Client, api_client
from tests.conftest import sqlite_settings
from tests.pages.support import Browser, browser, email_of, read_page, sign_up
from tests.posts.support import PHOTO

_names = itertools.count()


def name(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    settings = sqlite_settings(tmp_path_factory.mktemp("pages"))
    async with api_client(settings) as opened:
        yield opened


async def share(web: Browser, caption: str = "", **fields: str) -> str:
    """Post PHOTO from the upload page; the post's path."""
    response = await web.submit(
        "/new",
        {"caption": caption, "filter": "normal", **fields},
        files=[("photos", ("photo.jpg", PHOTO, "image/jpeg"))],
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def assert_form_error(response: httpx.Response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    for phrase in phrases:
        assert phrase in response.text, phrase


# --- signing up, in and out -----------------------------------------------------------------


async def test_sign_up_refusals_come_back_on_the_form(client: Client) -> None:
    async with browser(client) as web:
        taken = name("taken")
        await sign_up(web, taken)
    async with browser(client) as web:
        cases = [
            ({"username": "no spaces"}, "Username must be 1-30 letters"),
            ({"username": taken}, "Username has already been taken"),
            ({"email": "not-an-address"}, "E-mail address is not an e-mail address"),
            ({"password": "short"}, "Password must be 8 to 128 characters"),
            ({"agreement": ""}, "The rules must be accepted"),
        ]
        for change, message in cases:
            fields = {
                "username": name("newcomer"),
                "email": f"{name('x')}@example.com",
                "password": PASSWORD,
                "agreement": "on",
            } | change
            response = await web.submit("/signup", fields)
            assert_form_error(response, 422, message)
            page = read_page(response.text)
            # What was typed is kept (never the password), and the field says it is wrong.
            assert any(i.get("value") == fields["email"] for i in page.inputs)
            assert PASSWORD not in response.text
            assert (
                "set-cookie" not in response.headers
                or "photogram_session" not in (response.headers["set-cookie"])
            )
        assert 'aria-invalid="true"' in response.text


async def test_a_session_is_a_revocable_token_in_a_strict_cookie(client: Client) -> None:
    username = name("sess")
    async with browser(client) as web:
        response = await sign_up(web, username)
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("photogram_session=")
        assert "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        assert "Path=/" in cookie
        assert "Secure" not in cookie  # the instance's base URL is http here
        token = web.http.cookies["photogram_session"]
        home = await web.get("/")
        assert home.status_code == 200
        assert f"Welcome, {username}" in home.text

        # The API takes it as a bearer token: it is one, of the instance's own web app.
        me = await client.get(
            "/api/v1/accounts/verify_credentials", headers={"Authorization": f"Bearer {token}"}
        )
        assert me.json()["username"] == username

        out = await web.submit("/signout", page="/")
        assert out.status_code == 303
        assert out.headers["location"] == "/signin"
        assert 'photogram_session=""' in out.headers["set-cookie"]
        revoked = await client.get(
            "/api/v1/accounts/verify_credentials", headers={"Authorization": f"Bearer {token}"}
        )
        assert revoked.status_code == 401

    # A copy of the old cookie signs no one in.
    async with browser(client) as copy:
        copy.http.cookies.set("photogram_session", token)
        again = await copy.get("/")
        assert again.status_code == 303
        assert again.headers["location"] == "/signin"


async def test_sign_in_and_its_refusals(client: Client) -> None:
    username = name("back")
    async with browser(client) as web:
        await sign_up(web, username)
    async with browser(client) as web:
        wrong = await web.submit("/signin", {"email": email_of(username), "password": "nope"})
        assert_form_error(wrong, 422, "The e-mail address or password is wrong.")
        assert f'value="{email_of(username)}"' in wrong.text
        blank = await web.submit("/signin", {"email": "", "password": ""})
        assert_form_error(blank, 422, "Enter your e-mail address and password.")

        # Signing in sends the person back where they were going, never to another site.
        asked = await web.get("/notifications")
        assert asked.status_code == 303
        assert asked.headers["location"] == "/signin?next=%2Fnotifications"
        response = await web.submit(
            "/signin",
            {"email": email_of(username), "password": PASSWORD, "next": "/notifications"},
        )
        assert response.headers["location"] == "/notifications"
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        async with browser(client) as web:
            response = await web.submit(
                "/signin", {"email": email_of(username), "password": PASSWORD, "next": evil}
            )
            assert response.headers["location"] == "/"


async def test_api_tokens_are_not_sessions(client: Client) -> None:
    """A token of another app in the cookie would act beyond its scopes: it is ignored."""
    app = await client.register_app()
    user = await client.sign_up(name("apiuser"), app)
    read_only = await client.log_in(app, user.email, scope="read")
    async with browser(client) as web:
        web.http.cookies.set("photogram_session", read_only)
        response = await web.get("/")
        assert response.status_code == 303
        assert response.headers["location"] == "/signin"


async def test_every_form_needs_its_csrf_token(client: Client) -> None:
    username = name("csrf")
    async with browser(client) as web:
        await sign_up(web, username)
        post = await share(web, "guarded")
        for path, data in (
            ("/signout", {}),
            ("/settings", {"display_name": "Mallory"}),
            (f"{post}/like", {}),
            (f"{post}/comment", {"text": "forged"}),
            (f"{post}/delete", {}),
            (f"/@{username}/follow", {}),
            ("/signin", {"email": email_of(username), "password": PASSWORD}),
            ("/signup", {"username": name("forged"), "email": "f@example.com"}),
        ):
            for token in (None, "0" * 64):
                fields = data if token is None else {"csrf_token": token, **data}
                response = await web.http.post(path, data=fields)
                assert_form_error(response, 403, "This form has expired")
        # Nothing happened: still signed in, the post unliked and uncommented.
        page = await web.get(post)
        assert page.status_code == 200
        assert "forged" not in page.text
        assert "0 likes" in page.text


async def test_a_secure_instance_uses_host_prefixed_secure_cookies(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path, public_url="https://photogram.example")
    async with api_client(settings) as secure, browser(secure) as web:
        # Over HTTPS, as the Secure cookies need.
        web.http.base_url = httpx.URL("https://photogram.example")
        response = await web.submit(
            "/signup",
            {
                "username": "secure",
                "email": "secure@example.com",
                "password": PASSWORD,
                "agreement": "on",
            },
        )
        assert response.status_code == 303
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if "photogram_session" in c)
        assert session.startswith("__Host-photogram_session=")
        assert "Secure" in session


# --- posting, liking, commenting ----------------------------------------------------------


async def test_upload_refusals_keep_what_was_done(client: Client) -> None:
    async with browser(client) as web:
        await sign_up(web, name("uploader"))
        nothing = await web.submit("/new", {"caption": "no photo"})
        assert_form_error(nothing, 422, "Choose at least one photo.")
        assert "no photo" in nothing.text

        not_image = await web.submit(
            "/new",
            {"caption": "text file"},
            files=[("photos", ("notes.jpg", b"just some text", "image/jpeg"))],
        )
        assert_form_error(not_image, 422, "notes.jpg:")

        unknown = await web.submit(
            "/new",
            {"filter": "sparkle"},
            files=[("photos", ("photo.jpg", PHOTO, "image/jpeg"))],
        )
        assert_form_error(unknown, 422, "Unknown filter")

        # A caption too long is refused after the photo was uploaded: the page keeps it.
        long = await web.submit(
            "/new",
            {"caption": "x" * 2201, "filter": "juno"},
            files=[("photos", ("photo.jpg", PHOTO, "image/jpeg"))],
        )
        assert_form_error(long, 422, "The caption is longer than 2200 characters.")
        kept = read_page(long.text)
        media_ids = [i.get("value") for i in kept.inputs if i.get("name") == "media_ids"]
        assert len(media_ids) == 1
        key = kept.hidden["key"]
        fixed = await web.submit(
            "/new", {"caption": "just right", "media_ids": media_ids[0], "key": key}, page="/new"
        )
        assert fixed.status_code == 303, fixed.text
        shown = await web.get(fixed.headers["location"])
        assert "just right" in shown.text
        # Sending the same form again (a double click) makes no second post.
        again = await web.submit(
            "/new", {"caption": "just right", "media_ids": media_ids[0], "key": key}, page="/new"
        )
        assert again.headers["location"] == fixed.headers["location"]


async def test_like_comment_and_delete_from_the_pages(client: Client) -> None:
    async with browser(client) as author, browser(client) as fan:
        author_name = name("author")
        await sign_up(author, author_name)
        await sign_up(fan, name("fan"))
        post = await share(author, "first light #dawn", visibility="public")

        liked = await fan.submit(f"{post}/like", {"next": post}, page=post)
        assert liked.headers["location"] == post
        page = await fan.get(post)
        assert "1 like" in page.text
        assert 'aria-pressed="true"' in page.text
        as_script = await fan.submit(
            f"{post}/unlike", page=post, headers={"X-Requested-With": "fetch"}
        )
        assert as_script.json() == {"favourited": False, "favourites_count": 0}

        blank = await fan.submit(f"{post}/comment", {"text": "   "}, page=post)
        assert_form_error(blank, 422, "Write a comment first.")
        assert 'aria-invalid="true"' in blank.text
        too_long = await fan.submit(f"{post}/comment", {"text": "y" * 2201}, page=post)
        assert_form_error(too_long, 422, "A comment is longer than 2200 characters.")

        key = read_page((await fan.get(post)).text).hidden["key"]
        for _ in range(2):  # the same form twice: one comment
            said = await fan.submit(f"{post}/comment", {"text": "gorgeous", "key": key}, page=post)
            assert said.status_code == 303
        page = await fan.get(post)
        assert page.text.count("gorgeous") == 1
        assert "1 comment" in page.text
        comment_id = re.search(r'id="comment-(\d+)"', page.text)
        assert comment_id is not None

        # A comment's own address leads to its post, at the comment.
        at = await fan.get(f"/@x/{comment_id.group(1)}")
        assert at.status_code == 303
        assert at.headers["location"] == f"{post}#comment-{comment_id.group(1)}"

        # The post's author may delete comments on it; then the post itself.
        removed = await author.submit(
            f"/@{fan.username}/{comment_id.group(1)}/delete", {"next": post}, page=post
        )
        assert removed.headers["location"] == post
        assert "gorgeous" not in (await author.get(post)).text
        gone = await author.submit(f"{post}/delete", page=post)
        assert gone.headers["location"] == f"/@{author_name}"
        missing = await fan.get(post)
        assert_form_error(missing, 404, "Page not found")


async def test_the_feed_loads_more(client: Client) -> None:
    async with browser(client) as web:
        await sign_up(web, name("busy"))
        for n in range(FEED_PAGE + 1):
            await share(web, f"number {n}")
        first = await web.get("/")
        assert first.text.count('class="card"') == FEED_PAGE
        more = re.search(r'href="(/\?max_id=\d+)" data-more', first.text)
        assert more is not None
        fragment = await web.get(more.group(1), headers={"X-Requested-With": "fetch"})
        assert fragment.text.count('class="card"') == 1
        assert "<html" not in fragment.text
        assert "number 0" in fragment.text
        whole = await web.get(more.group(1))  # without the script: a whole page
        assert "<html" in whole.text


# --- profiles and settings ------------------------------------------------------------------


async def test_settings_save_and_refuse(client: Client) -> None:
    username = name("settler")
    async with browser(client) as web, browser(client) as other:
        await sign_up(web, username)
        await sign_up(other, name("asker"))
        too_long = await web.submit("/settings", {"display_name": "d" * 31, "locked": "false"})
        assert_form_error(too_long, 422, "Display name is too long (maximum is 30 characters).")
        assert 'value="' + "d" * 31 + '"' in too_long.text
        bad_avatar = await web.submit(
            "/settings",
            {"display_name": "Ok"},
            files={"avatar": ("me.png", b"not an image", "image/png")},
        )
        assert_form_error(bad_avatar, 422, "Profile photo")

        saved = await web.submit(
            "/settings",
            {"display_name": "Sett Ler", "note": "Line one\n\n<b>two</b>", "locked": "true"},
            files={"avatar": ("", b"", "application/octet-stream")},  # no file chosen
        )
        assert saved.headers["location"] == "/settings?saved=1"
        assert "Your profile was saved" in (await web.get(saved.headers["location"])).text
        profile = await other.get(f"/@{username}")
        assert "Sett Ler" in profile.text
        assert "<p>Line one</p><p>&lt;b&gt;two&lt;/b&gt;</p>" in profile.text
        assert "This account is private" in profile.text
        asked = await other.submit(f"/@{username}/follow", page=f"/@{username}")
        assert asked.status_code == 303
        assert "Cancel request" in (await other.get(f"/@{username}")).text
        requests = await web.get("/follow_requests")
        assert f'href="/@{other.username}"' in requests.text
        assert 'class="count"' in requests.text  # the badge in the navigation


# --- what every page is made of -------------------------------------------------------------


async def test_pages_are_accessible_and_locked_down(client: Client) -> None:
    username = name("a11y")
    async with browser(client) as web:
        await sign_up(web, username)
        post = await share(web, "described")
        paths = [
            "/",
            "/new",
            "/settings",
            "/notifications",
            "/explore",
            f"/@{username}",
            post,
            f"{post}/likes",
        ]
        for path in paths:
            response = await web.get(path)
            assert response.status_code == 200, path
            headers = response.headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["x-frame-options"] == "DENY"
            assert headers["cache-control"] == "no-store"
            page = read_page(response.text)
            assert {"main", "nav", "header"} <= page.landmarks, path
            assert '<html lang="en">' in response.text
            assert 'name="viewport"' in response.text
            assert "style=" not in response.text  # the CSP allows no inline styles
            for image in page.images:
                assert image.get("alt") is not None, f"{path}: {image}"
            for field in page.inputs:
                if field.get("type") == "hidden":
                    continue
                assert field.get("id") in page.labels, f"{path}: unlabelled {field}"
            for form in page.forms:
                if form.get("method") == "post":
                    assert "csrf_token" in page.hidden, path

        css = await web.get("/static/photogram.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")


async def test_bad_addresses_are_pages_not_server_errors(client: Client) -> None:
    async with browser(client) as web:
        await sign_up(web, name("lost"))
        for path, status in (
            ("/@nobody_here", 404),
            ("/@nobody_here/123", 404),
            ("/@x/99999999999999999999999999", 404),
            ("/@x/0", 404),
            ("/tags/" + "a" * 101, 404),
            ("/tags/no-such!", 404),
            ("/?max_id=abc", 400),
            ("/explore?max_id=-1", 400),
            ("/@x/1/likes", 404),
            ("/@x/y/z", 404),
            ("/tags/a/b", 404),
        ):
            response = await web.get(path)
            assert_form_error(response, status)
        bad_body = await web.http.post(
            "/new",
            content=b"--x\r\nnot multipart",
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert bad_body.status_code in (400, 403)
        assert bad_body.headers["content-type"].startswith("text/html")


async def test_the_oauth_page_shares_the_look(client: Client) -> None:
    app = await client.register_app(redirect_uris="https://client.example/callback")
    response = await client.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": "https://client.example/callback",
        },
    )
    assert response.status_code == 200
    assert re.search(r'<link rel="stylesheet" href="/static/photogram\.css\?v=\w+">', response.text)
    assert "<script" not in response.text
    assert "style-src 'self'" in response.headers["content-security-policy"]


async def test_the_web_app_cannot_be_used_through_oauth(client: Client) -> None:
    async with browser(client) as web:
        await sign_up(web, name("webapp"))
    authorize = await client.get(
        "/oauth/authorize",
        params={"response_type": "code", "client_id": "photogram-web", "redirect_uri": "x:y"},
    )
    assert authorize.status_code == 400
    token = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "photogram-web"},
    )
    assert token.status_code == 401
    async with client.runtime.router.global_connect() as conn:
        assert (await conn.execute(oauth_tokens.select().limit(1))).first() is not None
