"""Scopes: what an app registered bounds what its tokens get, and tokens what they reach."""

from __future__ import annotations

import httpx

from tests.api import PASSWORD, App, Client, api_client, bearer
from tests.conftest import MakeSettings
from tests.oauth.flow import REDIRECT, open_page, redirect_params


async def token_for(
    client: Client, app: App, grant_type: str, scope: str, email: str | None = None
) -> httpx.Response:
    form = {
        "grant_type": grant_type,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "scope": scope,
    }
    if email is not None:
        form |= {"username": email, "password": PASSWORD}
    return await client.post("/oauth/token", data=form)


async def test_an_app_cannot_get_more_than_it_registered(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        reader = await client.register_app(scopes="read", redirect_uris=REDIRECT)
        alice = await client.sign_up("alice")

        for grant_type, email in (("client_credentials", None), ("password", alice.email)):
            for scope in ("write", "read write", "write:statuses", "follow"):
                refused = await token_for(client, reader, grant_type, scope, email)
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"] == "invalid_scope"
            # A child of a registered scope is within it.
            narrowed = await token_for(client, reader, grant_type, "read:accounts", email)
            assert narrowed.status_code == 200, narrowed.text
            assert narrowed.json()["scope"] == "read:accounts"

        page = await open_page(client, reader, scope="write")
        assert redirect_params(page)["error"] == "invalid_scope"

        # The legacy `follow` covers the follow graph's own scopes, and nothing else.
        follower = await client.register_app(scopes="follow")
        covered = await token_for(client, follower, "client_credentials", "read:follows")
        assert covered.status_code == 200, covered.text
        refused = await token_for(client, follower, "client_credentials", "read:statuses")
        assert refused.json()["error"] == "invalid_scope"


async def test_unknown_scopes_are_refused(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        for scope in ("admin", "read:everything", "read write:nothing"):
            response = await token_for(client, app, "client_credentials", scope)
            assert response.status_code == 422, response.text
            assert response.json()["error"] == "invalid_scope"
        registered = await client.post(
            "/api/v1/apps",
            data={"client_name": "x", "redirect_uris": REDIRECT, "scopes": "read admin:write"},
        )
        assert registered.status_code == 422, registered.text
        assert registered.json()["error"] == "invalid_scope"


async def test_a_token_reaches_only_its_scopes(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)

        granted = await token_for(client, app, "password", "read:accounts", alice.email)
        accounts_reader = granted.json()
        me = await client.get(
            "/api/v1/accounts/verify_credentials", headers=bearer(accounts_reader["access_token"])
        )
        assert me.status_code == 200, me.text
        assert me.json()["id"] == alice.id

        app_reader = (await token_for(client, app, "client_credentials", "read:accounts")).json()
        sign_up = await client.post(
            "/api/v1/accounts",
            headers=bearer(app_reader["access_token"]),
            data={
                "username": "bob",
                "email": "bob@example.com",
                "password": PASSWORD,
                "agreement": "true",
            },
        )
        assert sign_up.status_code == 403, sign_up.text
        assert "write:accounts" in sign_up.json()["error"]

        # A writing token does not read.
        writer = (await token_for(client, app, "password", "write", alice.email)).json()
        me = await client.get(
            "/api/v1/accounts/verify_credentials", headers=bearer(writer["access_token"])
        )
        assert me.status_code == 403, me.text
