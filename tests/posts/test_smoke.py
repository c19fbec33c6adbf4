from __future__ import annotations

from pathlib import Path

from tests.api import api_client
from tests.conftest import MakeSettings
from tests.posts.support import comment, post, posts_settings


async def test_post_comment_like_timeline(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        bob = await client.sign_up("bob")
        r = await client.post(f"/api/v1/accounts/{alice.id}/follow", headers=bob.headers)
        assert r.status_code == 200, r.text
        status = await post(client, alice, "Sunset #beach with @bob", photos=3)
        assert len(status["media_attachments"]) == 3
        assert status["tags"][0]["name"] == "beach"
        assert status["mentions"][0]["username"] == "bob"
        c = await comment(client, bob, status["id"], "lovely!")
        r = await client.post(f"/api/v1/statuses/{status['id']}/favourite", headers=bob.headers)
        assert r.status_code == 200, r.text
        assert r.json()["favourites_count"] == 1
        assert r.json()["favourited"] is True
        await client.settle()
        home = await client.get("/api/v1/timelines/home", headers=bob.headers)
        assert [s["id"] for s in home.json()] == [status["id"]], home.text
        assert home.json()[0]["replies_count"] == 1
        ctx = await client.get(f"/api/v1/statuses/{status['id']}/context", headers=bob.headers)
        assert [s["id"] for s in ctx.json()["descendants"]] == [c["id"]]
        tag = await client.get("/api/v1/timelines/tag/beach")
        assert [s["id"] for s in tag.json()] == [status["id"]]
        favs = await client.get("/api/v1/favourites", headers=bob.headers)
        assert [s["id"] for s in favs.json()] == [status["id"]], favs.text
        r = await client.delete(f"/api/v1/statuses/{status['id']}", headers=alice.headers)
        assert r.status_code == 200, r.text
        await client.settle()
        home = await client.get("/api/v1/timelines/home", headers=bob.headers)
        assert home.json() == []
        favs = await client.get("/api/v1/favourites", headers=bob.headers)
        assert favs.json() == []
