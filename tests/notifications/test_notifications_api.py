"""Notifications over HTTP, as a Mastodon client reads them, on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import delete, func, select

from photogram.cache import account_key
from photogram.db.ids import shard_of
from photogram.db.metadata import accounts, notifications
from photogram.graph.tasks import enqueue_sync_follow
from photogram.notifications.tasks import add_notification
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings
from tests.graph.helpers import sign_up_spread
from tests.posts.support import comment, post, posts_settings


async def listed(client: Client, user: User, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/notifications", headers=user.headers, params=params)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def kinds(found: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(type, sender, status ID) of each notification, in order."""
    return [
        (n["type"], n["account"]["id"], n["status"]["id"] if n["status"] else None) for n in found
    ]


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def like(client: Client, user: User, status: dict[str, Any]) -> None:
    ok(await client.post(f"/api/v1/statuses/{status['id']}/favourite", headers=user.headers))


async def follow(client: Client, user: User, target: User) -> None:
    ok(await client.post(f"/api/v1/accounts/{target.id}/follow", headers=user.headers))


async def rows_of(client: Client, user: User) -> int:
    """How many notification rows ``user`` has, shown or not."""
    async with client.runtime.router.connect_for(int(user.id)) as conn:
        count = await conn.scalar(
            select(func.count()).where(notifications.c.account_id == int(user.id))
        )
    return int(count or 0)


async def test_likes_comments_and_mentions(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        carol = await client.sign_up("carol")
        photo = await post(client, alice, "Sunset")
        await like(client, bob, photo)
        reply = await comment(client, bob, photo["id"], "lovely!")
        caption = await post(client, carol, "With @alice at the beach")
        await client.settle()
        found = await listed(client, alice)
        assert kinds(found) == [
            ("mention", carol.id, caption["id"]),
            ("mention", bob.id, reply["id"]),
            ("favourite", bob.id, photo["id"]),
        ]
        favourite = found[-1]
        assert favourite["account"]["username"] == bob.username
        assert favourite["status"]["favourites_count"] == 1
        assert favourite["group_key"] == f"ungrouped-{favourite['id']}"
        assert favourite["created_at"].endswith("Z")
        # Nobody is notified of their own doings.
        assert await listed(client, bob) == []
        # An unlike takes its notification back (as Mastodon does); liking again restores it.
        ok(await client.post(f"/api/v1/statuses/{photo['id']}/unfavourite", headers=bob.headers))
        await client.settle()
        assert ("favourite", bob.id, photo["id"]) not in kinds(await listed(client, alice))
        await like(client, bob, photo)
        await client.settle()
        assert ("favourite", bob.id, photo["id"]) in kinds(await listed(client, alice))


async def test_mention_in_a_post_the_viewer_may_not_see(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await post(client, bob, "Only for my followers, @alice", visibility="private")
        await client.settle()
        assert await rows_of(client, alice) == 1
        assert await listed(client, alice) == []
        await follow(client, alice, bob)
        await client.settle()
        assert [n["type"] for n in await listed(client, alice)] == ["mention"]


async def test_follows_and_follow_requests(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        carol, dave = await client.sign_up("carol"), await client.sign_up("dave")
        await follow(client, bob, alice)
        await client.settle()
        assert kinds(await listed(client, alice)) == [("follow", bob.id, None)]

        ok(
            await client.patch(
                "/api/v1/accounts/update_credentials",
                headers=alice.headers,
                data={"locked": "true"},
            )
        )
        for user in (carol, dave):
            await follow(client, user, alice)
        await client.settle()
        assert kinds(await listed(client, alice)) == [
            ("follow_request", dave.id, None),
            ("follow_request", carol.id, None),
            ("follow", bob.id, None),
        ]

        ok(
            await client.post(
                f"/api/v1/follow_requests/{carol.id}/authorize", headers=alice.headers
            )
        )
        # Gone at once (the request is no longer pending), before the mirror syncs.
        assert [
            n["account"]["id"] for n in await listed(client, alice, types="follow_request")
        ] == [dave.id]
        await client.settle()
        # Authorizing makes a follow, which notifies as any follow does.
        assert kinds(await listed(client, alice)) == [
            ("follow", carol.id, None),
            ("follow_request", dave.id, None),
            ("follow", bob.id, None),
        ]

        # Withdrawn: gone, and the row with it.
        ok(await client.post(f"/api/v1/accounts/{alice.id}/unfollow", headers=dave.headers))
        await client.settle()
        assert [n["type"] for n in await listed(client, alice)] == ["follow", "follow"]
        assert await rows_of(client, alice) == 2

        # Rejected: gone too.
        await follow(client, dave, alice)
        await client.settle()
        assert (await listed(client, alice))[0]["type"] == "follow_request"
        ok(await client.post(f"/api/v1/follow_requests/{dave.id}/reject", headers=alice.headers))
        await client.settle()
        assert [n["type"] for n in await listed(client, alice)] == ["follow", "follow"]
        assert await rows_of(client, alice) == 2


async def test_paging_with_link_headers(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        photo = await post(client, alice, "Sunset")
        replies = [(await comment(client, bob, photo["id"], f"#{i}"))["id"] for i in range(45)]
        await client.settle()
        newest_first = list(reversed(replies))

        first = await client.get("/api/v1/notifications", headers=alice.headers)
        assert [n["status"]["id"] for n in first.json()] == newest_first[:40]
        following = first.links["next"]["url"]
        second = await client.get(following, headers=alice.headers)
        assert [n["status"]["id"] for n in second.json()] == newest_first[40:]

        seen: list[str] = []
        url: str | None = "/api/v1/notifications?limit=20&types[]=mention"
        while url:
            page = await client.get(url, headers=alice.headers)
            assert page.status_code == 200, page.text
            seen += [n["status"]["id"] for n in page.json()]
            url = page.links.get("next", {}).get("url") if page.json() else None
            assert url is None or "types%5B%5D=mention" in url or "types[]=mention" in url
        assert seen == newest_first
        ids = [int(n["id"]) for n in first.json()]
        assert ids == sorted(ids, reverse=True)

        # rel="prev" (min_id) reads the ones just newer than a page, still newest first.
        prev = second.links["prev"]["url"]
        before = await client.get(prev + "&limit=3", headers=alice.headers)
        assert [n["status"]["id"] for n in before.json()] == newest_first[37:40]


async def test_hidden_notifications_do_not_leave_a_page_short(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        carol = await client.sign_up("carol")
        photo = await post(client, alice, "Sunset")
        older = [(await comment(client, carol, photo["id"], f"c{i}"))["id"] for i in range(3)]
        for i in range(4):
            await comment(client, bob, photo["id"], f"b{i}")
        await client.settle()
        ok(await client.post(f"/api/v1/accounts/{bob.id}/block", headers=alice.headers))
        page = await client.get("/api/v1/notifications?limit=2", headers=alice.headers)
        assert [n["status"]["id"] for n in page.json()] == older[::-1][:2]
        rest = await client.get(page.links["next"]["url"], headers=alice.headers)
        assert [n["status"]["id"] for n in rest.json()] == older[:1]


async def test_type_and_account_filters(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        carol = await client.sign_up("carol")
        photo = await post(client, alice, "Sunset")
        await like(client, bob, photo)
        await comment(client, carol, photo["id"], "nice")
        await follow(client, carol, alice)
        await client.settle()

        def types(found: list[dict[str, Any]]) -> list[str]:
            return [n["type"] for n in found]

        assert types(await listed(client, alice)) == ["follow", "mention", "favourite"]
        assert types(await listed(client, alice, **{"types[]": "favourite"})) == ["favourite"]
        assert types(await listed(client, alice, types=["mention", "follow"])) == [
            "follow",
            "mention",
        ]
        assert types(await listed(client, alice, **{"exclude_types[]": ["mention"]})) == [
            "follow",
            "favourite",
        ]
        assert types(await listed(client, alice, exclude_types="follow")) == [
            "mention",
            "favourite",
        ]
        assert types(await listed(client, alice, account_id=carol.id)) == ["follow", "mention"]
        assert await listed(client, alice, **{"types[]": "reblog"}) == []
        bad = await client.get(
            "/api/v1/notifications", headers=alice.headers, params={"account_id": "x"}
        )
        assert bad.status_code == 422, bad.text


async def test_get_dismiss_and_clear(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        photo = await post(client, alice, "Sunset")
        await like(client, bob, photo)
        await comment(client, bob, photo["id"], "nice")
        await client.settle()
        mention, favourite = await listed(client, alice)

        one = await client.get(f"/api/v1/notifications/{favourite['id']}", headers=alice.headers)
        assert ok(one) == favourite
        for who, what in ((bob, favourite["id"]), (alice, "12345"), (alice, "nope")):
            missing = await client.get(f"/api/v1/notifications/{what}", headers=who.headers)
            assert missing.status_code == 404, missing.text
            assert missing.json() == {"error": "Record not found"}
        theirs = await client.post(
            f"/api/v1/notifications/{favourite['id']}/dismiss", headers=bob.headers
        )
        assert theirs.status_code == 404

        url = f"/api/v1/notifications/{favourite['id']}/dismiss"
        assert ok(await client.post(url, headers=alice.headers)) == {}
        assert (await client.post(url, headers=alice.headers)).status_code == 404
        assert [n["id"] for n in await listed(client, alice)] == [mention["id"]]
        gone = await client.get(f"/api/v1/notifications/{favourite['id']}", headers=alice.headers)
        assert gone.status_code == 404

        cleared = await client.post("/api/v1/notifications/clear", headers=alice.headers)
        assert ok(cleared) == {}
        assert await listed(client, alice) == []
        assert await rows_of(client, alice) == 0


async def test_scopes(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice")
        reader = {"Authorization": f"Bearer {await client.log_in(app, alice.email, 'read')}"}
        assert (await client.get("/api/v1/notifications", headers=reader)).status_code == 200
        refused = await client.post("/api/v1/notifications/clear", headers=reader)
        assert refused.status_code == 403
        other = {
            "Authorization": f"Bearer {await client.log_in(app, alice.email, 'read:statuses')}"
        }
        assert (await client.get("/api/v1/notifications", headers=other)).status_code == 403
        assert (await client.get("/api/v1/notifications")).status_code == 401


async def test_a_deleted_post_takes_its_notifications(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        photo = await post(client, alice, "Sunset")
        keep = await post(client, alice, "Dawn")
        await like(client, bob, photo)
        await like(client, bob, keep)
        await comment(client, bob, photo["id"], "nice")
        await client.settle()
        assert len(await listed(client, alice)) == 3
        deleted = await client.delete(f"/api/v1/statuses/{photo['id']}", headers=alice.headers)
        ok(deleted)
        await client.settle()
        assert kinds(await listed(client, alice)) == [("favourite", bob.id, keep["id"])]

        # A deleted comment too, and a single one is then 404.
        reply = await comment(client, bob, keep["id"], "again")
        await client.settle()
        mention = (await listed(client, alice))[0]
        assert mention["status"]["id"] == reply["id"]
        ok(await client.delete(f"/api/v1/statuses/{reply['id']}", headers=bob.headers))
        assert [n["type"] for n in await listed(client, alice)] == ["favourite"]
        gone = await client.get(f"/api/v1/notifications/{mention['id']}", headers=alice.headers)
        assert gone.status_code == 404


async def test_blocks_hide_notifications_both_ways(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        carol = await client.sign_up("carol")
        photo = await post(client, alice, "Sunset")
        await like(client, bob, photo)
        await like(client, carol, photo)
        await follow(client, bob, alice)
        await client.settle()
        assert len(await listed(client, alice)) == 3
        bobs = [n["id"] for n in await listed(client, alice, account_id=bob.id)]

        # The viewer blocks the sender.
        ok(await client.post(f"/api/v1/accounts/{bob.id}/block", headers=alice.headers))
        assert kinds(await listed(client, alice)) == [("favourite", carol.id, photo["id"])]
        for id_ in bobs:
            got = await client.get(f"/api/v1/notifications/{id_}", headers=alice.headers)
            assert got.status_code == 404
        ok(await client.post(f"/api/v1/accounts/{bob.id}/unblock", headers=alice.headers))
        await client.settle()
        assert len(await listed(client, alice)) == 3

        # The sender blocks the viewer (seen on the viewer's shard once the mirror syncs).
        ok(await client.post(f"/api/v1/accounts/{alice.id}/block", headers=bob.headers))
        await client.settle()
        assert kinds(await listed(client, alice)) == [("favourite", carol.id, photo["id"])]


async def test_mutes_hide_notifications_when_asked(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        photo = await post(client, alice, "Sunset")
        await like(client, bob, photo)
        await client.settle()
        mute = f"/api/v1/accounts/{bob.id}/mute"
        ok(await client.post(mute, headers=alice.headers, json={"notifications": False}))
        assert [n["type"] for n in await listed(client, alice)] == ["favourite"]
        ok(await client.post(mute, headers=alice.headers, json={"notifications": True}))
        assert await listed(client, alice) == []
        ok(await client.post(f"/api/v1/accounts/{bob.id}/unmute", headers=alice.headers))
        assert [n["type"] for n in await listed(client, alice)] == ["favourite"]


async def test_a_sender_whose_account_is_gone(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await follow(client, bob, alice)
        await client.settle()
        assert len(await listed(client, alice)) == 1
        async with client.runtime.router.begin_for(int(bob.id)) as conn:
            await conn.execute(delete(accounts).where(accounts.c.id == int(bob.id)))
        # Written behind the app's back: the cached row goes as a write path's would.
        await client.runtime.invalidate([account_key(int(bob.id))])
        assert await listed(client, alice) == []


async def test_notified_once_however_often_a_task_runs(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await follow(client, bob, alice)
        await client.settle()
        router = client.runtime.router
        # The follow's mirror sync, delivered again (as a retry would).
        for _ in range(2):
            async with router.begin_for(int(bob.id)) as conn:
                row = await enqueue_sync_follow(
                    conn, shard_of(int(bob.id)), int(bob.id), int(alice.id)
                )
            await client.runtime.relay.dispatch([row])
            await client.settle()
        assert [n["type"] for n in await listed(client, alice)] == ["follow"]
        for _ in range(2):
            async with router.begin_for(int(alice.id)) as conn:
                await add_notification(conn, int(alice.id), "follow", int(bob.id))
                await add_notification(conn, int(alice.id), "favourite", int(alice.id), 1)
        assert await rows_of(client, alice) == 1
