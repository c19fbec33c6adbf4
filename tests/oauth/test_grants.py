"""Every grant of /oauth/token, end to end over HTTP, as Mastodon clients use them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from photogram.db.metadata import oauth_codes
from photogram.web.auth import hash_secret
from tests.api import PASSWORD, App, Client, api_client, bearer
from tests.conftest import MakeSettings
from tests.oauth.flow import REDIRECT, exchange, get_code, pkce_pair


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert body["error_description"]


async def password_grant(
    client: Client, app: App, email: str, password: str = PASSWORD, scope: str | None = "read"
) -> httpx.Response:
    form = {
        "grant_type": "password",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "username": email,
        "password": password,
    }
    if scope is not None:
        form["scope"] = scope
    return await client.post("/oauth/token", data=form)


async def refresh(
    client: Client, app: App, refresh_token: str, scope: str | None = None
) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "refresh_token": refresh_token,
    }
    if scope is not None:
        form["scope"] = scope
    return await client.post("/oauth/token", data=form)


async def me(client: Client, token: str) -> httpx.Response:
    return await client.get("/api/v1/accounts/verify_credentials", headers=bearer(token))


async def test_password_grant(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)

        issued = await password_grant(client, app, alice.email, scope="read write")
        assert issued.status_code == 200, issued.text
        token = issued.json()
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "read write"
        assert token["refresh_token"]
        assert isinstance(token["created_at"], int)
        assert (await me(client, token["access_token"])).json()["id"] == alice.id

        # No scope asked: Mastodon's default, read.
        default = await password_grant(client, app, alice.email, scope=None)
        assert default.json()["scope"] == "read"

        wrong = await password_grant(client, app, alice.email, "not the password")
        assert_oauth_error(wrong, 400, "invalid_grant")
        unknown = await password_grant(client, app, "nobody@example.com")
        assert_oauth_error(unknown, 400, "invalid_grant")
        # The same answer either way: the endpoint does not tell which addresses exist.
        assert wrong.json() == unknown.json()

        missing = await client.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "username": alice.email,
            },
        )
        assert_oauth_error(missing, 400, "invalid_request")


async def test_client_credentials_grant(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        response = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "scope": "read write",
            },
        )
        assert response.status_code == 200, response.text
        token = response.json()
        assert token["scope"] == "read write"
        assert "refresh_token" not in token  # an app token has no user to refresh for

        verified = await client.get(
            "/api/v1/apps/verify_credentials", headers=bearer(token["access_token"])
        )
        assert verified.status_code == 200, verified.text
        assert verified.json()["name"] == "tests"
        assert "client_secret" not in verified.json()

        user_only = await me(client, token["access_token"])
        assert user_only.status_code == 422, user_only.text
        assert user_only.json()["error"]


async def test_authorization_code_grant(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)

        got = await get_code(client, app, alice, scope="read write:statuses", state="s 1/2")
        assert got.state == "s 1/2"
        response = await exchange(client, app, got.code)
        assert response.status_code == 200, response.text
        token = response.json()
        assert token["scope"] == "read write:statuses"
        assert token["refresh_token"]
        assert (await me(client, token["access_token"])).json()["id"] == alice.id

        # Single use: the second redemption is refused.
        again = await exchange(client, app, got.code)
        assert_oauth_error(again, 400, "invalid_grant")

        nonsense = await exchange(client, app, "not-a-code")
        assert_oauth_error(nonsense, 400, "invalid_grant")

        # Without a state the redirect carries none.
        stateless = await get_code(client, app, alice, state=None)
        assert stateless.state is None
        assert (await exchange(client, app, stateless.code)).status_code == 200


async def test_authorization_code_with_pkce(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)

        verifier, challenge = pkce_pair("S256")
        got = await get_code(
            client, app, alice, code_challenge=challenge, code_challenge_method="S256"
        )
        ok = await exchange(client, app, got.code, code_verifier=verifier)
        assert ok.status_code == 200, ok.text
        assert (await me(client, ok.json()["access_token"])).json()["id"] == alice.id

        for bad_verifier in ("wrong-" + verifier[6:], None, challenge):
            got = await get_code(
                client, app, alice, code_challenge=challenge, code_challenge_method="S256"
            )
            refused = await exchange(client, app, got.code, code_verifier=bad_verifier)
            assert_oauth_error(refused, 400, "invalid_grant")

        verifier, challenge = pkce_pair("plain")
        got = await get_code(
            client, app, alice, code_challenge=challenge, code_challenge_method="plain"
        )
        assert (await exchange(client, app, got.code, code_verifier=verifier)).status_code == 200
        got = await get_code(
            client, app, alice, code_challenge=challenge, code_challenge_method="plain"
        )
        refused = await exchange(client, app, got.code, code_verifier=verifier + "x")
        assert_oauth_error(refused, 400, "invalid_grant")

        # A challenge without a method is plain (RFC 7636 §4.3).
        got = await get_code(client, app, alice, code_challenge=challenge)
        assert (await exchange(client, app, got.code, code_verifier=verifier)).status_code == 200


async def test_authorization_code_redirect_uri_and_client_must_match(
    make_settings: MakeSettings,
) -> None:
    async with api_client(await make_settings()) as client:
        other_uri = "https://client.example/other"
        app = await client.register_app(redirect_uris=f"{REDIRECT} {other_uri}")
        other_app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)

        for wrong_uri in (other_uri, None, REDIRECT + "/"):
            got = await get_code(client, app, alice)
            mismatch = await exchange(client, app, got.code, redirect_uri=wrong_uri)
            assert_oauth_error(mismatch, 400, "invalid_grant")

        # A code is only good for the app it was issued to.
        got = await get_code(client, app, alice)
        stolen = await exchange(client, other_app, got.code)
        assert_oauth_error(stolen, 400, "invalid_grant")
        assert (await exchange(client, app, got.code)).status_code == 200

        # The second registered URI works when it is the one used throughout.
        got = await get_code(client, app, alice, redirect_uri=other_uri)
        assert (await exchange(client, app, got.code, redirect_uri=other_uri)).status_code == 200


async def test_expired_code_is_refused(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)
        got = await get_code(client, app, alice)
        # Move the code's expiry into the past rather than waiting out the TTL.
        async with client.runtime.router.global_begin() as conn:
            moved = await conn.execute(
                update(oauth_codes)
                .where(oauth_codes.c.code_hash == hash_secret(got.code))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            assert moved.rowcount == 1
        assert_oauth_error(await exchange(client, app, got.code), 400, "invalid_grant")


async def test_code_lifetime_follows_settings(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings(authorization_code_ttl_seconds=30)) as client:
        app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)
        before = datetime.now(UTC)
        got = await get_code(client, app, alice)
        async with client.runtime.router.global_connect() as conn:
            expires = await conn.scalar(
                oauth_codes.select()
                .with_only_columns(oauth_codes.c.expires_at)
                .where(oauth_codes.c.code_hash == hash_secret(got.code))
            )
        assert expires is not None
        assert before + timedelta(seconds=29) < expires <= datetime.now(UTC) + timedelta(seconds=30)


async def test_refresh_token_rotates(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(scopes="read write")
        other_app = await client.register_app(scopes="read write")
        alice = await client.sign_up("alice", app, scope="read write")
        first = (await password_grant(client, app, alice.email, scope="read")).json()
        # Used once, so it is cached when it is rotated away.
        assert (await me(client, first["access_token"])).status_code == 200

        # A token cannot gain scopes by refreshing.
        wider = await refresh(client, app, first["refresh_token"], scope="read write")
        assert_oauth_error(wider, 400, "invalid_scope")
        # Another app cannot use it.
        foreign = await refresh(client, other_app, first["refresh_token"])
        assert_oauth_error(foreign, 400, "invalid_grant")

        response = await refresh(client, app, first["refresh_token"])
        assert response.status_code == 200, response.text
        second = response.json()
        assert second["scope"] == "read"
        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]
        assert (await me(client, second["access_token"])).json()["id"] == alice.id

        # The old pair stops working.
        assert (await me(client, first["access_token"])).status_code == 401
        reused = await refresh(client, app, first["refresh_token"])
        assert_oauth_error(reused, 400, "invalid_grant")

        # Narrowing is allowed, to a child of a granted scope too.
        narrowed = await refresh(client, app, second["refresh_token"], scope="read:accounts")
        assert narrowed.status_code == 200, narrowed.text
        assert narrowed.json()["scope"] == "read:accounts"
        assert (await me(client, narrowed.json()["access_token"])).status_code == 200

        missing = await client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
            },
        )
        assert_oauth_error(missing, 400, "invalid_request")


async def test_revoke(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        other_app = await client.register_app()
        alice = await client.sign_up("alice", app)
        token = (await password_grant(client, app, alice.email)).json()

        # Another app's revocation leaves the token alone (and says 200, as RFC 7009 has it).
        foreign = await client.revoke(other_app, token["access_token"])
        assert foreign.status_code == 200, foreign.text
        assert (await me(client, token["access_token"])).status_code == 200

        revoked = await client.revoke(app, token["access_token"])
        assert revoked.status_code == 200, revoked.text
        assert revoked.json() == {}
        assert (await me(client, token["access_token"])).status_code == 401
        apps = await client.get(
            "/api/v1/apps/verify_credentials", headers=bearer(token["access_token"])
        )
        assert apps.status_code == 401
        assert_oauth_error(await refresh(client, app, token["refresh_token"]), 400, "invalid_grant")

        # Revoking an already revoked or an unknown token is no error.
        assert (await client.revoke(app, token["access_token"])).status_code == 200
        assert (await client.revoke(app, "no-such-token")).status_code == 200

        # Revoking by refresh token ends the access token too.
        pair = (await password_grant(client, app, alice.email)).json()
        assert (await me(client, pair["access_token"])).status_code == 200
        assert (await client.revoke(app, pair["refresh_token"])).status_code == 200
        assert (await me(client, pair["access_token"])).status_code == 401

        # The user's other tokens still work.
        assert (await me(client, alice.token)).status_code == 200


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def test_client_authentication(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        grant = {"grant_type": "client_credentials", "scope": "read"}

        # HTTP Basic (client_secret_basic) works as well as the body.
        ok = await client.post(
            "/oauth/token", data=grant, headers=basic(app.client_id, app.client_secret)
        )
        assert ok.status_code == 200, ok.text

        bad_bodies = [
            {"client_id": app.client_id, "client_secret": "wrong"},
            {"client_id": "unknown", "client_secret": app.client_secret},
            {"client_id": app.client_id},
            {},
        ]
        for credentials in bad_bodies:
            response = await client.post("/oauth/token", data={**grant, **credentials})
            assert_oauth_error(response, 401, "invalid_client")

        bad_headers = [
            basic(app.client_id, "wrong"),
            basic("unknown", app.client_secret),
            {"Authorization": "Basic !!!not-base64"},
        ]
        for headers in bad_headers:
            response = await client.post("/oauth/token", data=grant, headers=headers)
            assert_oauth_error(response, 401, "invalid_client")

        revoke_bad = await client.post(
            "/oauth/revoke",
            data={"client_id": app.client_id, "client_secret": "wrong", "token": "x"},
        )
        assert_oauth_error(revoke_bad, 401, "invalid_client")
        revoke_basic = await client.post(
            "/oauth/revoke", data={"token": "x"}, headers=basic(app.client_id, app.client_secret)
        )
        assert revoke_basic.status_code == 200, revoke_basic.text


async def test_unsupported_grant_type(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        for grant_type in ("implicit", "token", "urn:ietf:params:oauth:grant-type:device_code"):
            response = await client.post(
                "/oauth/token",
                data={
                    "grant_type": grant_type,
                    "client_id": app.client_id,
                    "client_secret": app.client_secret,
                },
            )
            assert_oauth_error(response, 400, "unsupported_grant_type")
        missing = await client.post(
            "/oauth/token", data={"client_id": app.client_id, "client_secret": app.client_secret}
        )
        assert missing.status_code == 422, missing.text
        assert missing.json()["error"]
