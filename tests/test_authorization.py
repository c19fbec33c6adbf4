"""The authorization matrix: every endpoint against every kind of bad credential.

For each operation in /openapi.json: no token, a token of the wrong scope, an app's token
where a user is needed, a revoked token, and another user's token where a resource
belongs to someone. Each gets the right 401/403/404/422 with a JSON error and nothing
else: no account data leaks into an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api import App, Client, User, api_client
from tests.conftest import MakeSettings
from tests.posts.support import post, posts_settings


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {id}: another account's ID (a status's, with on="status"); {hashtag}: a tag
    scope: str | None  # None: public (a token is optional)
    user: bool = True  # needs a user's token, not only an app's
    reads_token: bool = True  # False: ignores any token (instance information)
    on: str = "account"  # what {id} names: "account", "status" or "notification"


ENDPOINTS = [
    Endpoint("GET", "/api/v1/apps/verify_credentials", "read", user=False),
    Endpoint("POST", "/api/v1/accounts", "write:accounts", user=False),
    Endpoint("GET", "/api/v1/accounts/verify_credentials", "read:accounts"),
    Endpoint("PATCH", "/api/v1/accounts/update_credentials", "write:accounts"),
    Endpoint("GET", "/api/v1/accounts/search?q=bo", "read:accounts"),
    Endpoint("GET", "/api/v1/accounts/relationships?id[]={id}", "read:follows"),
    Endpoint("POST", "/api/v1/accounts/{id}/follow", "write:follows"),
    Endpoint("POST", "/api/v1/accounts/{id}/unfollow", "write:follows"),
    Endpoint("POST", "/api/v1/accounts/{id}/remove_from_followers", "write:follows"),
    Endpoint("POST", "/api/v1/accounts/{id}/block", "write:blocks"),
    Endpoint("POST", "/api/v1/accounts/{id}/unblock", "write:blocks"),
    Endpoint("POST", "/api/v1/accounts/{id}/mute", "write:mutes"),
    Endpoint("POST", "/api/v1/accounts/{id}/unmute", "write:mutes"),
    Endpoint("GET", "/api/v1/follow_requests", "read:follows"),
    Endpoint("POST", "/api/v1/follow_requests/{id}/authorize", "write:follows"),
    Endpoint("POST", "/api/v1/follow_requests/{id}/reject", "write:follows"),
    Endpoint("GET", "/api/v1/accounts/{id}", None),
    Endpoint("GET", "/api/v1/accounts/lookup?acct=bob", None),
    Endpoint("GET", "/api/v1/accounts/{id}/followers", None),
    Endpoint("GET", "/api/v1/accounts/{id}/following", None),
    Endpoint("POST", "/api/v2/media", "write:media"),
    Endpoint("GET", "/api/v1/media/{id}", "write:media"),
    Endpoint("PUT", "/api/v1/media/{id}", "write:media"),
    Endpoint("GET", "/api/v1/photogram/filters", None, reads_token=False),
    Endpoint("GET", "/api/v1/instance", None, reads_token=False),
    Endpoint("GET", "/api/v2/instance", None, reads_token=False),
    Endpoint("POST", "/api/v1/statuses", "write:statuses"),
    Endpoint("GET", "/api/v1/statuses/{id}", None, on="status"),
    Endpoint("PUT", "/api/v1/statuses/{id}", "write:statuses", on="status"),
    Endpoint("DELETE", "/api/v1/statuses/{id}", "write:statuses", on="status"),
    Endpoint("GET", "/api/v1/statuses/{id}/source", "read:statuses", on="status"),
    Endpoint("GET", "/api/v1/statuses/{id}/context", None, on="status"),
    Endpoint("POST", "/api/v1/statuses/{id}/favourite", "write:favourites", on="status"),
    Endpoint("POST", "/api/v1/statuses/{id}/unfavourite", "write:favourites", on="status"),
    Endpoint("GET", "/api/v1/statuses/{id}/favourited_by", None, on="status"),
    Endpoint("POST", "/api/v1/statuses/{id}/bookmark", "write:bookmarks", on="status"),
    Endpoint("POST", "/api/v1/statuses/{id}/unbookmark", "write:bookmarks", on="status"),
    Endpoint("POST", "/api/v1/statuses/{id}/pin", "write:accounts", on="status"),
    Endpoint("POST", "/api/v1/statuses/{id}/unpin", "write:accounts", on="status"),
    Endpoint("GET", "/api/v1/favourites", "read:favourites"),
    Endpoint("GET", "/api/v1/bookmarks", "read:bookmarks"),
    Endpoint("GET", "/api/v1/timelines/home", "read:statuses"),
    Endpoint("GET", "/api/v1/timelines/public", None),
    Endpoint("GET", "/api/v1/timelines/tag/{hashtag}", None),
    Endpoint("GET", "/api/v1/accounts/{id}/statuses", None),
    Endpoint("GET", "/api/v1/notifications", "read:notifications"),
    Endpoint("GET", "/api/v1/notifications/{id}", "read:notifications", on="notification"),
    Endpoint("POST", "/api/v1/notifications/clear", "write:notifications"),
    Endpoint(
        "POST", "/api/v1/notifications/{id}/dismiss", "write:notifications", on="notification"
    ),
]
# Endpoints with their own authentication (client credentials, a sign-in page).
OWN_AUTH = {
    ("POST", "/api/v1/apps"),
    ("POST", "/oauth/token"),
    ("POST", "/oauth/revoke"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/oauth/authorize"),
    ("POST", "/oauth/authorize"),
}


def _wrong_scope(scope: str) -> str:
    """A real scope that does not cover ``scope``."""
    return "write:statuses" if scope.startswith("read") else "read"


@dataclass
class World:
    client: Client
    app: App
    alice: User
    bob: User
    app_token: str
    revoked: str
    status: str  # a post of bob's


async def _world(client: Client) -> World:
    app = await client.register_app()
    alice = await client.sign_up("alice", app)
    bob = await client.sign_up("bob", app)
    status = (await post(client, bob, "#photo"))["id"]
    doomed = await client.sign_up("carol", app)
    revoke = await client.revoke(app, doomed.token)
    assert revoke.status_code == 200
    return World(client, app, alice, bob, await client.app_token(app), doomed.token, status)


async def _call(world: World, endpoint: Endpoint, token: str | None) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # No notification is needed: every call with a usable token is refused before lookup.
    id_ = {"account": world.bob.id, "status": world.status, "notification": "1"}[endpoint.on]
    response = await world.client.request(
        endpoint.method, endpoint.path.format(id=id_, hashtag="photo"), headers=headers
    )
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.status_code, response.json()


async def test_every_documented_operation_is_in_the_matrix(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        document = (await client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    listed = {(e.method, e.path.split("?")[0]) for e in ENDPOINTS} | OWN_AUTH
    assert documented <= listed, f"classify these: {sorted(documented - listed)}"
    assert listed <= documented, f"listed but not served: {sorted(listed - documented)}"


async def test_bad_credentials_matrix(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        world = await _world(client)
        for endpoint in ENDPOINTS:
            where = f"{endpoint.method} {endpoint.path}"
            if not endpoint.reads_token:  # as Mastodon: a bad token is not even looked at
                status, _ = await _call(world, endpoint, world.revoked)
                assert status == 200, where
                continue
            status, body = await _call(world, endpoint, world.revoked)
            assert status == 401, where
            assert set(body) == {"error"}, where
            status, body = await _call(world, endpoint, "not-a-token")
            assert status == 401, where

            if endpoint.scope is None:
                status, _ = await _call(world, endpoint, None)
                assert status == 200, where
                continue

            status, body = await _call(world, endpoint, None)
            assert (status, set(body)) == (401, {"error"}), where

            narrow = await client.log_in(world.app, world.alice.email, _wrong_scope(endpoint.scope))
            status, body = await _call(world, endpoint, narrow)
            assert status == 403, where
            assert "scope" in body["error"], where

            if endpoint.user:
                status, body = await _call(world, endpoint, world.app_token)
                assert status == 422, where
                assert body == {"error": "This method requires an authenticated user"}, where


@pytest.mark.parametrize("action", ["authorize", "reject"])
async def test_another_users_follow_request_is_not_found(
    make_settings: MakeSettings, tmp_path: Path, action: str
) -> None:
    """bob asks to follow locked carol; alice cannot act on that request: 404, as for nobody."""
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        world = await _world(client)
        carol = await client.sign_up("carol2")
        locked = await client.patch(
            "/api/v1/accounts/update_credentials", headers=carol.headers, data={"locked": "true"}
        )
        assert locked.status_code == 200
        asked = await client.post(f"/api/v1/accounts/{carol.id}/follow", headers=world.bob.headers)
        assert asked.json()["requested"] is True
        await client.settle()

        theirs = await client.post(
            f"/api/v1/follow_requests/{world.bob.id}/{action}", headers=world.alice.headers
        )
        nobody = await client.post(
            f"/api/v1/follow_requests/{world.alice.id}/{action}", headers=carol.headers
        )
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json() == nobody.json()
        pending = await client.get("/api/v1/follow_requests", headers=carol.headers)
        assert [a["id"] for a in pending.json()] == [world.bob.id]
