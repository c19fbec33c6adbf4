"""GET /api/v1/accounts/{id}, /lookup and /search: who can find whom."""

from __future__ import annotations

from pathlib import Path

from photogram.db.ids import compose
from tests.accounts.support import (
    block,
    follow,
    settings_with_media,
)
from tests.api import Client, User, api_client, bearer
from tests.conftest import MakeSettings

SEARCH = "/api/v1/accounts/search"
LOOKUP = "/api/v1/accounts/lookup"


def usernames(response_json: list[dict[str, object]]) -> list[object]:
    return [a["username"] for a in response_json]


async def sign_up_all(client: Client, *names: str) -> dict[str, User]:
    app = await client.register_app()
    return {name: await client.sign_up(name, app) for name in names}


async def test_get_account(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        users = await sign_up_all(client, "alice", "bob")
        alice = users["alice"]
        anonymous = await client.get(f"/api/v1/accounts/{alice.id}")
        assert anonymous.status_code == 200, anonymous.text
        body = anonymous.json()
        assert body["id"] == alice.id
        assert isinstance(body["id"], str)
        assert body["username"] == body["acct"] == "alice"
        assert body["url"] == "https://photogram.test/@alice"
        assert "source" not in body
        assert "email" not in body
        signed_in = await client.get(f"/api/v1/accounts/{alice.id}", headers=users["bob"].headers)
        assert signed_in.json() == body

        # A shard this cluster does not have (16 shards here), and IDs that name nothing.
        beyond = compose(1_000_000, 5000, 1)
        missing = compose(int(alice.id) >> 23, (int(alice.id) >> 10) & 0x1FFF, 1023)
        for id_ in (beyond, missing, 0, 1, 2**63 - 1, 2**64, 10**30, f"0{alice.id}x"):
            response = await client.get(f"/api/v1/accounts/{id_}")
            assert response.status_code == 404, (id_, response.text)
            assert "error" in response.json()
        for id_ in (beyond, missing, 0, 2**64):
            response = await client.get(f"/api/v1/accounts/{id_}")
            assert response.json() == {"error": "Record not found"}
        for malformed in ("abc", "-5", "12abc", "1.5", "%20"):
            response = await client.get(f"/api/v1/accounts/{malformed}")
            assert response.status_code == 404, malformed
            assert "error" in response.json()
        # A bad token is an error, never a silent anonymous view.
        bad = await client.get(
            f"/api/v1/accounts/{alice.id}", headers={"Authorization": "Bearer nope"}
        )
        assert bad.status_code == 401


async def test_blocks_hide_the_blocker(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        users = await sign_up_all(client, "alice", "bob", "carol")
        alice, bob, carol = users["alice"], users["bob"], users["carol"]
        await block(client, alice.id, bob.id)

        # Bob is blocked by Alice: to him she does not exist.
        assert (await client.get(f"/api/v1/accounts/{alice.id}", headers=bob.headers)).json() == {
            "error": "Record not found"
        }
        hidden = await client.get(LOOKUP, params={"acct": "alice"}, headers=bob.headers)
        assert hidden.status_code == 404
        assert hidden.json() == {"error": "Record not found"}
        # Alice can still look at Bob (to unblock him), by ID and by name.
        assert (
            await client.get(f"/api/v1/accounts/{bob.id}", headers=alice.headers)
        ).status_code == 200
        found = await client.get(LOOKUP, params={"acct": "bob"}, headers=alice.headers)
        assert found.status_code == 200
        assert found.json()["id"] == bob.id
        # Everyone else, signed in or not, sees both.
        for headers in ({}, carol.headers):
            for account in (alice, bob):
                response = await client.get(f"/api/v1/accounts/{account.id}", headers=headers)
                assert response.status_code == 200
        # Search hides both ways.
        for viewer, other in ((bob, "alice"), (alice, "bob")):
            response = await client.get(SEARCH, params={"q": other}, headers=viewer.headers)
            assert response.status_code == 200
            assert usernames(response.json()) == []
        assert usernames(
            (await client.get(SEARCH, params={"q": "alice"}, headers=carol.headers)).json()
        ) == ["alice"]


async def test_lookup(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        users = await sign_up_all(client, "Alice")
        alice = users["Alice"]
        for acct in ("Alice", "alice", "@alice", "ALICE@photogram.test", "@alice@PHOTOGRAM.TEST"):
            response = await client.get(LOOKUP, params={"acct": acct})
            assert response.status_code == 200, (acct, response.text)
            assert response.json()["id"] == alice.id
            assert response.json()["username"] == "Alice"
        for acct in (
            "bob",
            "alice@elsewhere.example",
            "",
            "@",
            "ali",
            "alice@",
            "a lice",
            "x" * 31,
        ):
            response = await client.get(LOOKUP, params={"acct": acct})
            assert response.status_code == 404, acct
            assert response.json() == {"error": "Record not found"}
        missing = await client.get(LOOKUP)
        assert missing.status_code == 422
        assert "acct" in missing.json()["error"]


async def test_lookup_ignores_unconfirmed_directory_entries(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    from sqlalchemy import insert

    from photogram.db.metadata import usernames as directory

    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        users = await sign_up_all(client, "alice")
        # A sign-up half done: the name claimed, the account not yet confirmed.
        async with client.runtime.router.global_begin() as conn:
            await conn.execute(
                insert(directory).values(username="pending", account_id=int(users["alice"].id) + 1)
            )
        assert (await client.get(LOOKUP, params={"acct": "pending"})).status_code == 404
        search = await client.get(SEARCH, params={"q": "pending"}, headers=users["alice"].headers)
        assert search.json() == []


async def test_search_order_and_paging(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        users = await sign_up_all(client, "alicia", "Alice", "al", "alice_b", "bob", "alistair")
        viewer = users["bob"].headers

        async def search(**params: str | int) -> list[object]:
            response = await client.get(SEARCH, params=params, headers=viewer)
            assert response.status_code == 200, response.text
            return usernames(response.json())

        # Exact match first, then shorter names, then alphabetical.
        assert await search(q="al") == ["al", "Alice", "alicia", "alice_b", "alistair"]
        assert await search(q="alice") == ["Alice", "alice_b"]
        assert await search(q="ALICE") == ["Alice", "alice_b"]
        assert await search(q="@alice") == ["Alice", "alice_b"]
        assert await search(q="alice@photogram.test") == ["Alice", "alice_b"]
        assert await search(q="alice@elsewhere.example") == []
        assert await search(q="alic_") == []  # `_` is a character here, not a wildcard
        assert await search(q="al%") == []
        assert await search(q="zed") == []
        # A blank query finds nothing, as in Mastodon (an empty list, not an error).
        assert await search(q="") == []
        assert await search(q="  ") == []
        assert await search() == []

        assert await search(q="al", limit=2) == ["al", "Alice"]
        assert await search(q="al", limit=2, offset=2) == ["alicia", "alice_b"]
        assert await search(q="al", limit=2, offset=4) == ["alistair"]
        assert await search(q="al", limit=1000) == ["al", "Alice", "alicia", "alice_b", "alistair"]
        assert await search(q="al", resolve="true") == await search(q="al")

        response = await client.get(SEARCH, params={"q": "al"}, headers=viewer)
        entity = response.json()[0]
        assert entity["id"] == users["al"].id
        assert isinstance(entity["id"], str)
        assert entity["acct"] == "al"

        for bad in ({"limit": 0}, {"limit": "many"}, {"offset": -1}, {"following": "maybe"}):
            response = await client.get(SEARCH, params={"q": "al", **bad}, headers=viewer)
            assert response.status_code == 422, bad
            assert "error" in response.json()


async def test_search_following(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        users = await sign_up_all(client, "viewer", "alice", "alicia", "albert", "alfred")
        viewer = users["viewer"]
        await follow(client, viewer.id, users["alicia"].id)
        await follow(client, viewer.id, users["alfred"].id)
        await follow(client, viewer.id, users["albert"].id)
        await follow(client, users["alice"].id, users["albert"].id)
        await block(client, users["albert"].id, viewer.id)  # followed, but blocks the viewer

        async def search(**params: str | int) -> list[object]:
            response = await client.get(SEARCH, params=params, headers=viewer.headers)
            assert response.status_code == 200, response.text
            return usernames(response.json())

        # albert blocks the viewer: gone from every result, followed or not.
        assert await search(q="al") == ["alice", "alfred", "alicia"]
        assert await search(q="al", following="true") == ["alfred", "alicia"]
        assert await search(q="ali", following="1") == ["alicia"]
        assert await search(q="alice", following="true") == []
        # Offsets count followed matches, hidden ones included: pages never overlap.
        assert await search(q="al", following="true", limit=1) == []  # albert, hidden
        assert await search(q="al", following="true", limit=1, offset=1) == ["alfred"]
        assert await search(q="al", following="true", limit=1, offset=2) == ["alicia"]
        assert await search(q="al", following="true", limit=1, offset=3) == []
        # Alice's follows are hers alone.
        response = await client.get(
            SEARCH, params={"q": "al", "following": "true"}, headers=users["alice"].headers
        )
        assert usernames(response.json()) == ["albert"]


async def test_search_authorization(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await settings_with_media(make_settings, tmp_path)) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)
        params = {"q": "alice"}
        anonymous = await client.get(SEARCH, params=params)
        assert anonymous.status_code == 401
        assert "error" in anonymous.json()
        writer = bearer(await client.log_in(app, alice.email, "write"))
        assert (await client.get(SEARCH, params=params, headers=writer)).status_code == 403
        app_only = {"Authorization": f"Bearer {await client.app_token(app)}"}
        response = await client.get(SEARCH, params=params, headers=app_only)
        assert response.status_code == 422
        assert "error" in response.json()
        reader = bearer(await client.log_in(app, alice.email, "read:accounts"))
        ok = await client.get(SEARCH, params=params, headers=reader)
        assert usernames(ok.json()) == ["alice"]
        # Fetching and looking up accounts are public.
        assert (await client.get(LOOKUP, params={"acct": "alice"})).status_code == 200
        assert (
            await client.get(f"/api/v1/accounts/{alice.id}", headers=app_only)
        ).status_code == 200


def test_account_route_leaves_named_paths_to_other_routes() -> None:
    """``/api/v1/accounts/{id}`` takes digits only, so routes registered after it (by other
    modules: ``relationships``, ``familiar_followers`` …) are still reached."""
    from starlette.routing import Match

    from photogram.accounts.api import api

    [route] = [r for r in api.routes if getattr(r, "path", "") == "/api/v1/accounts/{id:int}"]

    def matches(path: str) -> bool:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
        match, _ = route.matches(scope)
        return bool(match == Match.FULL)

    assert matches("/api/v1/accounts/123")
    for path in (
        "/api/v1/accounts/relationships",
        "/api/v1/accounts/familiar_followers",
        "/api/v1/accounts/lookup",
        "/api/v1/accounts/123/followers",
    ):
        assert not matches(path), path
