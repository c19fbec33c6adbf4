"""Who may call the graph endpoints: tokens, scopes, and users versus apps."""

from __future__ import annotations

import pytest

from tests.api import api_client, bearer
from tests.conftest import MakeSettings

# (method, path with {id} for another account, the scope it needs)
USER_ENDPOINTS = [
    ("POST", "/api/v1/accounts/{id}/follow", "write:follows"),
    ("POST", "/api/v1/accounts/{id}/unfollow", "write:follows"),
    ("POST", "/api/v1/accounts/{id}/remove_from_followers", "write:follows"),
    ("POST", "/api/v1/accounts/{id}/block", "write:blocks"),
    ("POST", "/api/v1/accounts/{id}/unblock", "write:blocks"),
    ("POST", "/api/v1/accounts/{id}/mute", "write:mutes"),
    ("POST", "/api/v1/accounts/{id}/unmute", "write:mutes"),
    ("GET", "/api/v1/accounts/relationships?id[]={id}", "read:follows"),
    ("GET", "/api/v1/follow_requests", "read:follows"),
    ("POST", "/api/v1/follow_requests/{id}/authorize", "write:follows"),
    ("POST", "/api/v1/follow_requests/{id}/reject", "write:follows"),
]
PUBLIC_LISTS = ["/api/v1/accounts/{id}/followers", "/api/v1/accounts/{id}/following"]


async def test_user_endpoints_need_a_user_token_with_the_scope(
    make_settings: MakeSettings,
) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)
        bob = await client.sign_up("bob", app)
        read_only = await client.log_in(app, alice.email, "read")
        write_only = await client.log_in(app, alice.email, "write")
        app_only = await client.app_token(app)
        # The legacy `follow` scope covers follows, blocks and mutes, read and write.
        legacy = await client.log_in(app, alice.email, "follow")

        for method, template, scope in USER_ENDPOINTS:
            path = template.format(id=bob.id)
            where = f"{method} {path}"

            response = await client.request(method, path)
            assert response.status_code == 401, where
            assert set(response.json()) == {"error"}, where

            wrong = read_only if scope.startswith("write") else write_only
            response = await client.request(method, path, headers=bearer(wrong))
            assert response.status_code == 403, where
            assert scope in response.json()["error"], where

            response = await client.request(method, path, headers=bearer(app_only))
            assert response.status_code == 422, where
            assert response.json() == {"error": "This method requires an authenticated user"}

            response = await client.request(method, path, headers=bearer(legacy))
            # Allowed through (the answer itself may be 404: no request to authorize).
            assert response.status_code in (200, 404), (where, response.text)

        # Nothing above changed the graph: every refused call was refused before acting.
        response = await client.get(
            "/api/v1/accounts/relationships", params={"id[]": bob.id}, headers=alice.headers
        )
        relation = response.json()[0]
        assert not any(relation[f] for f in ("following", "requested", "blocking")), relation


@pytest.mark.parametrize("template", PUBLIC_LISTS)
async def test_public_lists(make_settings: MakeSettings, template: str) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)
        bob = await client.sign_up("bob", app)
        await client.post(f"/api/v1/accounts/{bob.id}/follow", headers=alice.headers)
        path = template.format(id=bob.id if "followers" in template else alice.id)

        anonymous = await client.get(path)
        assert anonymous.status_code == 200, anonymous.text
        assert len(anonymous.json()) == 1
        with_app = await client.get(path, headers=bearer(await client.app_token(app)))
        assert with_app.json() == anonymous.json()
        # A token that is sent must grant reading accounts, as Mastodon checks.
        write_only = await client.log_in(app, alice.email, "write")
        refused = await client.get(path, headers=bearer(write_only))
        assert refused.status_code == 403
        assert "read:accounts" in refused.json()["error"]
        bad = await client.get(path, headers=bearer("not-a-token"))
        assert bad.status_code == 401
