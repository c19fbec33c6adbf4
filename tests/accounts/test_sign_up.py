from __future__ import annotations

import pytest

from tests.api import PASSWORD, api_client
from tests.conftest import MakeSettings


async def test_sign_up_log_in_and_verify(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        alice = await client.sign_up("Alice", app)
        me = (await client.get("/api/v1/accounts/verify_credentials", headers=alice.headers)).json()
        assert me["username"] == "Alice"
        assert me["acct"] == "Alice"
        assert me["source"]["follow_requests_count"] == 0
        assert me["followers_count"] == me["following_count"] == 0

        logged_in = await client.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "username": "ALICE@example.com",
                "password": PASSWORD,
                "scope": "read",
            },
        )
        assert logged_in.status_code == 200, logged_in.text
        token = logged_in.json()
        assert token["scope"] == "read"
        assert token["refresh_token"]
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        again = await client.get("/api/v1/accounts/verify_credentials", headers=headers)
        assert again.json()["id"] == me["id"]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("username", "bad name", "ERR_INVALID"),
        ("username", "admin", "ERR_RESERVED"),
        ("username", "alice", "ERR_TAKEN"),
        ("email", "not-an-address", "ERR_INVALID"),
        ("email", "ALICE@example.com", "ERR_TAKEN"),
        ("password", "short", "ERR_TOO_SHORT"),
        ("agreement", "false", "ERR_ACCEPTED"),
    ],
)
async def test_sign_up_refusals(
    make_settings: MakeSettings, field: str, value: str, code: str
) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        await client.sign_up("alice", app)
        token = await client.app_token(app)
        form = {
            "username": "bob",
            "email": "bob@example.com",
            "password": PASSWORD,
            "agreement": "true",
        }
        form[field] = value
        response = await client.post(
            "/api/v1/accounts", headers={"Authorization": f"Bearer {token}"}, data=form
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["details"][field][0]["error"] == code
        assert body["error"].startswith("Validation failed")
