"""Posts over HTTP, as a Mastodon client uses them: posting, reading, paging, editing,
pinning and deleting, on the embedded default and on a two-server cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select

from photogram.db.metadata import (
    account_favourites,
    favourites,
    media_objects,
    notifications,
    statuses,
)
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings
from tests.posts.support import act, comment, ids, post, posts_settings, upload, walk


async def _media_keys(client: Client, media_ids: list[int]) -> list[str]:
    keys = []
    for media_id in media_ids:
        async with client.runtime.router.connect_for(media_id) as conn:
            found = await conn.scalars(
                select(media_objects.c.key).where(media_objects.c.media_id == media_id)
            )
            keys += list(found)
    return keys


async def _get(client: Client, user: User | None, path: str) -> Any:
    response = await client.get(path, headers=user.headers if user else {})
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


async def test_carousel_comment_like_bookmark_and_delete(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        await act(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        media_ids = [await upload(client, alice, f"photo {n}") for n in range(4)]
        # The order chosen is the carousel's order, not the order of upload.
        order = [media_ids[2], media_ids[0], media_ids[3], media_ids[1]]
        created = await client.post(
            "/api/v1/statuses",
            headers=alice.headers,
            json={"status": "Day out #Beach", "media_ids": order},
        )
        assert created.status_code == 200, created.text
        status = created.json()
        sid = status["id"]
        assert [m["id"] for m in status["media_attachments"]] == order
        assert [m["description"] for m in status["media_attachments"]] == [
            "photo 2",
            "photo 0",
            "photo 3",
            "photo 1",
        ]
        assert status["visibility"] == "public"
        assert [t["name"] for t in status["tags"]] == ["beach"]
        assert status["tags"][0]["url"].endswith("/tags/beach")

        reply = await comment(client, bob, sid, "Lovely")
        assert reply["in_reply_to_id"] == sid
        liked = await act(client, bob, f"/api/v1/statuses/{sid}/favourite")
        assert (liked["favourited"], liked["favourites_count"]) == (True, 1)
        saved = await act(client, bob, f"/api/v1/statuses/{sid}/bookmark")
        assert saved["bookmarked"] is True
        await client.settle()

        seen = await _get(client, bob, f"/api/v1/statuses/{sid}")
        assert (seen["replies_count"], seen["favourites_count"]) == (1, 1)
        assert [m["id"] for m in seen["media_attachments"]] == order
        reads = [
            "/api/v1/timelines/home",
            f"/api/v1/accounts/{alice.id}/statuses",
            "/api/v1/timelines/tag/beach",
            "/api/v1/timelines/tag/BEACH",
            "/api/v1/timelines/public",
            "/api/v1/favourites",
            "/api/v1/bookmarks",
        ]
        for path in reads:
            assert ids(await client.get(path, headers=bob.headers)) == [sid], path
        context = await _get(client, bob, f"/api/v1/statuses/{sid}/context")
        assert [s["id"] for s in context["descendants"]] == [reply["id"]]
        reply_context = await _get(client, bob, f"/api/v1/statuses/{reply['id']}/context")
        assert [s["id"] for s in reply_context["ancestors"]] == [sid]
        likers = ids(await client.get(f"/api/v1/statuses/{sid}/favourited_by"))
        assert likers == [bob.id]

        photo_url = urlsplit(status["media_attachments"][0]["url"])
        photo_path = f"{photo_url.path}?{photo_url.query}"
        assert (await client.get(photo_path)).status_code == 200
        keys = await _media_keys(client, [int(m) for m in order])
        assert len(keys) >= 4

        deleted = await client.delete(f"/api/v1/statuses/{sid}", headers=alice.headers)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["text"] == "Day out #Beach"
        await client.settle()

        for path in reads:
            assert ids(await client.get(path, headers=bob.headers)) == [], path
        for path in (sid, f"{sid}/context", reply["id"], f"{reply['id']}/context"):
            gone = await client.get(f"/api/v1/statuses/{path}", headers=bob.headers)
            assert gone.status_code == 404, path
            assert gone.json() == {"error": "Record not found"}
        for verb in ("favourite", "bookmark", "favourited_by"):
            method = "GET" if verb == "favourited_by" else "POST"
            gone = await client.request(
                method, f"/api/v1/statuses/{sid}/{verb}", headers=bob.headers
            )
            assert gone.status_code == 404, verb
        assert (await client.get(photo_path)).status_code == 404
        for key in keys:
            assert not await client.runtime.store.exists(key)
        assert await _media_keys(client, [int(m) for m in order]) == []
        me = await _get(client, alice, "/api/v1/accounts/verify_credentials")
        assert me["statuses_count"] == 0


async def test_comment_deleted_by_post_owner(make_settings: MakeSettings, tmp_path: Path) -> None:
    """The owner of a post may delete someone's comment on it; the count follows."""
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        status = await post(client, alice)
        first = await comment(client, bob, status["id"], "first")
        second = await comment(client, bob, status["id"], "second")
        refused = await client.delete(f"/api/v1/statuses/{status['id']}", headers=bob.headers)
        assert refused.status_code == 404
        gone = await client.delete(f"/api/v1/statuses/{first['id']}", headers=alice.headers)
        assert gone.status_code == 200, gone.text
        seen = await _get(client, bob, f"/api/v1/statuses/{status['id']}")
        assert seen["replies_count"] == 1
        context = await _get(client, bob, f"/api/v1/statuses/{status['id']}/context")
        assert [s["id"] for s in context["descendants"]] == [second["id"]]


async def test_paging_follows_link_headers(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        await act(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        posted = [(await post(client, alice, f"#sea number {n}"))["id"] for n in range(5)]
        for sid in posted:
            await act(client, bob, f"/api/v1/statuses/{sid}/favourite")
            await act(client, bob, f"/api/v1/statuses/{sid}/bookmark")
        await client.settle()
        newest_first = posted[::-1]
        lists = [
            "/api/v1/timelines/home",
            f"/api/v1/accounts/{alice.id}/statuses",
            "/api/v1/timelines/public",
            "/api/v1/timelines/tag/sea",
            "/api/v1/favourites",
            "/api/v1/bookmarks",
        ]
        for path in lists:
            pages = await walk(client, bob, f"{path}?limit=2")
            assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]], path
            # Back from the last page by rel="prev": each page immediately newer.
            last = await client.get(f"{path}?limit=2", headers=bob.headers)
            for _ in range(2):
                last = await client.get(last.links["next"]["url"], headers=bob.headers)
            back = await walk(client, bob, last.links["prev"]["url"], rel="prev")
            assert back == [newest_first[2:4], newest_first[0:2]], path

        # The ID parameters themselves, on the timelines (their Link IDs are status IDs).
        p = posted
        for path in lists[:4]:
            cases = {
                f"max_id={p[3]}&limit=2": [p[2], p[1]],
                f"since_id={p[0]}&limit=2": [p[4], p[3]],
                f"min_id={p[0]}&limit=2": [p[2], p[1]],
                f"min_id={p[2]}": [p[4], p[3]],
                f"since_id={p[1]}&max_id={p[4]}": [p[3], p[2]],
                f"min_id={p[4]}": [],
                f"max_id={p[0]}": [],
            }
            for query, expected in cases.items():
                got = ids(await client.get(f"{path}?{query}", headers=bob.headers))
                assert got == expected, f"{path}?{query}"
        bad = await client.get("/api/v1/timelines/home?max_id=nope", headers=bob.headers)
        assert bad.status_code == 422
        assert set(bad.json()) == {"error"}


async def test_idempotency_key(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        media = await upload(client, alice)
        body = {"status": "once", "media_ids": [media]}
        headers = alice.headers | {"Idempotency-Key": "k-1"}
        first = await client.post("/api/v1/statuses", headers=headers, json=body)
        again = await client.post("/api/v1/statuses", headers=headers, json=body)
        assert first.status_code == again.status_code == 200, again.text
        assert first.json()["id"] == again.json()["id"]
        status = first.json()
        # A comment with a key: twice is once too, and counts once.
        comment_headers = bob.headers | {"Idempotency-Key": "k-1"}
        reply = {"status": "hi", "in_reply_to_id": status["id"]}
        one = await client.post("/api/v1/statuses", headers=comment_headers, json=reply)
        two = await client.post("/api/v1/statuses", headers=comment_headers, json=reply)
        assert one.status_code == two.status_code == 200, two.text
        assert one.json()["id"] == two.json()["id"]
        assert ids(await client.get(f"/api/v1/accounts/{alice.id}/statuses")) == [status["id"]]
        seen = await _get(client, alice, f"/api/v1/statuses/{status['id']}")
        assert seen["replies_count"] == 1
        me = await _get(client, alice, "/api/v1/accounts/verify_credentials")
        assert me["statuses_count"] == 1
        # Another key is another post (which needs another photo).
        other = await client.post(
            "/api/v1/statuses",
            headers=alice.headers | {"Idempotency-Key": "k-2"},
            json={"status": "twice", "media_ids": [await upload(client, alice)]},
        )
        assert other.status_code == 200
        assert other.json()["id"] != status["id"]
        too_long = await client.post(
            "/api/v1/statuses",
            headers=alice.headers | {"Idempotency-Key": "k" * 201},
            json={"status": "x", "media_ids": [await upload(client, alice)]},
        )
        assert too_long.status_code == 422
        assert set(too_long.json()) == {"error"}
        async with client.runtime.router.connect_for(int(alice.id)) as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(statuses)
                .where(statuses.c.account_id == int(alice.id))
            )
        assert count == 2


async def test_edit_reparses_tags(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        status = await post(client, alice, "At the #lake", photos=3)
        sid = status["id"]
        assert ids(await client.get("/api/v1/timelines/tag/lake")) == [sid]
        edited = await client.put(
            f"/api/v1/statuses/{sid}",
            headers=alice.headers,
            json={"status": "At the #Mountains and the #sky"},
        )
        assert edited.status_code == 200, edited.text
        assert [t["name"] for t in edited.json()["tags"]] == ["mountains", "sky"]
        assert edited.json()["edited_at"] is not None
        assert ids(await client.get("/api/v1/timelines/tag/lake")) == []
        assert ids(await client.get("/api/v1/timelines/tag/mountains")) == [sid]
        assert ids(await client.get("/api/v1/timelines/tag/sky")) == [sid]
        source = await _get(client, alice, f"/api/v1/statuses/{sid}/source")
        assert source["text"] == "At the #Mountains and the #sky"
        # Fewer photos, reordered: the dropped one leaves the store.
        kept = [m["id"] for m in status["media_attachments"]][:2][::-1]
        dropped = int(status["media_attachments"][2]["id"])
        dropped_keys = await _media_keys(client, [dropped])
        reordered = await client.put(
            f"/api/v1/statuses/{sid}", headers=alice.headers, json={"media_ids": kept}
        )
        assert reordered.status_code == 200, reordered.text
        assert [m["id"] for m in reordered.json()["media_attachments"]] == kept
        await client.settle()
        for key in dropped_keys:
            assert not await client.runtime.store.exists(key)
        # Not another's photo, not none, not someone else's post.
        for body in ({"media_ids": [await upload(client, alice)]}, {"media_ids": []}):
            refused = await client.put(f"/api/v1/statuses/{sid}", headers=alice.headers, json=body)
            assert refused.status_code == 422, body
            assert set(refused.json()) == {"error"}
        theirs = await client.put(
            f"/api/v1/statuses/{sid}", headers=bob.headers, json={"status": "mine now"}
        )
        assert theirs.status_code == 404
        gone = await client.put(
            f"/api/v1/statuses/{sid}", headers=alice.headers, json={"status": "#lake " * 500}
        )
        assert gone.status_code == 422
        assert ids(await client.get("/api/v1/timelines/tag/mountains")) == [sid]


async def test_pin_and_filters_of_an_account(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        first = (await post(client, alice, "first"))["id"]
        second = (await post(client, alice, "second"))["id"]
        mine = (await comment(client, alice, first, "my own comment"))["id"]
        await comment(client, bob, first, "bob's comment")
        base = f"/api/v1/accounts/{alice.id}/statuses"
        assert ids(await client.get(base)) == [mine, second, first]
        assert ids(await client.get(f"{base}?exclude_replies=true")) == [second, first]
        assert ids(await client.get(f"{base}?only_media=true")) == [second, first]
        assert ids(await client.get(f"{base}?pinned=true")) == []

        pinned = await act(client, alice, f"/api/v1/statuses/{first}/pin")
        assert pinned["pinned"] is True
        assert ids(await client.get(f"{base}?pinned=true")) == [first]
        # Pinned is the owner's flag: others are not told.
        assert (await _get(client, bob, f"/api/v1/statuses/{first}"))["pinned"] is None
        assert (await _get(client, alice, f"/api/v1/statuses/{first}"))["pinned"] is True
        for refused in (
            await client.post(f"/api/v1/statuses/{mine}/pin", headers=alice.headers),
            await client.post(f"/api/v1/statuses/{first}/pin", headers=bob.headers),
        ):
            assert refused.status_code in (404, 422), refused.text
            assert set(refused.json()) == {"error"}
        unpinned = await act(client, alice, f"/api/v1/statuses/{first}/unpin")
        assert unpinned["pinned"] is False
        assert ids(await client.get(f"{base}?pinned=true")) == []

        more = [(await post(client, alice, f"n{n}"))["id"] for n in range(4)]
        for sid in [first, second, *more[:3]]:
            await act(client, alice, f"/api/v1/statuses/{sid}/pin")
        sixth = await client.post(f"/api/v1/statuses/{more[3]}/pin", headers=alice.headers)
        assert sixth.status_code == 422
        assert set(sixth.json()) == {"error"}
        assert ids(await client.get(f"{base}?pinned=true")) == [*more[:3][::-1], second, first]


async def test_context_pages_through_many_comments(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        sid = (await post(client, alice))["id"]
        written = []
        for n in range(7):
            written.append((await comment(client, bob, sid, f"comment {n}"))["id"])
            if n == 2:  # a reply to a comment sits in the thread after what it answers
                written.append((await comment(client, alice, written[0], "thanks"))["id"])
        seen: list[str] = []
        url: str | None = f"/api/v1/statuses/{sid}/context?limit=3"
        pages = 0
        while url is not None:
            response = await client.get(url, headers=bob.headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["ancestors"] == []
            seen += [s["id"] for s in body["descendants"]]
            url = response.links.get("next", {}).get("url")
            pages += 1
            assert pages <= 4
        assert seen == written
        assert pages == 3
        whole = await _get(client, None, f"/api/v1/statuses/{sid}/context")
        assert [s["id"] for s in whole["descendants"]] == written
        assert (await _get(client, None, f"/api/v1/statuses/{sid}"))["replies_count"] == 7


async def test_invalid_posts_are_refused(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        target = (await post(client, alice))["id"]
        mine = await upload(client, alice)
        theirs = await upload(client, bob)
        eleven = [await upload(client, alice) for _ in range(11)]
        earlier = await post(client, alice)
        used = earlier["media_attachments"][0]["id"]
        refused: dict[str, dict[str, Any]] = {
            "no photos": {"status": "words only"},
            "empty media_ids": {"status": "x", "media_ids": []},
            "comment with media": {"status": "x", "in_reply_to_id": target, "media_ids": [mine]},
            "blank comment": {"status": "  ", "in_reply_to_id": target},
            "eleven photos": {"status": "x", "media_ids": eleven},
            "someone else's photo": {"status": "x", "media_ids": [theirs]},
            "a photo already posted": {"status": "x", "media_ids": [used]},
            "no such photo": {"status": "x", "media_ids": ["123456789"]},
            "not an ID": {"status": "x", "media_ids": ["photo"]},
            "unknown visibility": {"status": "x", "media_ids": [mine], "visibility": "direct"},
            "too long": {"status": "x" * 2201, "media_ids": [mine]},
            "too long a warning": {"media_ids": [mine], "spoiler_text": "x" * 501},
            "bad language": {"media_ids": [mine], "language": "not a language"},
            "control characters": {"status": "a\x00b", "media_ids": [mine]},
        }
        for why, body in refused.items():
            response = await client.post("/api/v1/statuses", headers=alice.headers, json=body)
            assert response.status_code == 422, f"{why}: {response.text}"
            assert set(response.json()) == {"error"}, why
        # Nothing was posted, and the photo refused with a bad draft is still free to use.
        assert ids(await client.get(f"/api/v1/accounts/{alice.id}/statuses")) == [
            earlier["id"],
            target,
        ]
        ok = await client.post("/api/v1/statuses", headers=alice.headers, data={"media_ids": mine})
        assert ok.status_code == 200, ok.text
        assert ok.json()["content"] == ""


async def test_unknown_or_malformed_ids_are_not_found(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        gone = (await post(client, alice))["id"]
        await client.delete(f"/api/v1/statuses/{gone}", headers=alice.headers)
        # An account's ID is no status's; a deleted status's is no longer one.
        for raw in (gone, alice.id, "123456789", "0", "-1", "abc", "9" * 30, "1e5", "0x10"):
            calls = [
                ("GET", f"/api/v1/statuses/{raw}"),
                ("GET", f"/api/v1/statuses/{raw}/context"),
                ("GET", f"/api/v1/statuses/{raw}/favourited_by"),
                ("GET", f"/api/v1/statuses/{raw}/source"),
                ("PUT", f"/api/v1/statuses/{raw}"),
                ("DELETE", f"/api/v1/statuses/{raw}"),
                *(
                    ("POST", f"/api/v1/statuses/{raw}/{verb}")
                    for verb in (
                        "favourite",
                        "unfavourite",
                        "bookmark",
                        "unbookmark",
                        "pin",
                        "unpin",
                    )
                ),
            ]
            if raw != alice.id:
                calls.append(("GET", f"/api/v1/accounts/{raw}/statuses"))
            for method, path in calls:
                response = await client.request(
                    method, path, headers=alice.headers, json={"status": "x"}
                )
                assert response.status_code == 404, f"{method} {path}: {response.text}"
                assert response.json() == {"error": "Record not found"}, path
            reply = await client.post(
                "/api/v1/statuses",
                headers=alice.headers,
                json={"status": "hello", "in_reply_to_id": raw},
            )
            assert reply.status_code == 404, f"{raw}: {reply.text}"


async def test_timelines_merge_across_shards(make_settings: MakeSettings, tmp_path: Path) -> None:
    """Posts of many accounts (on different shards) come back in one global order."""
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        reader = await client.sign_up("reader")
        authors = [await client.sign_up(f"author{n}") for n in range(5)]
        assert len({int(a.id) >> 10 & 0x1FFF for a in authors}) > 1
        for author in authors:
            await act(client, reader, f"/api/v1/accounts/{author.id}/follow")
        posted = []
        for round_ in range(3):
            for author in authors:
                posted.append((await post(client, author, f"#merge {round_}"))["id"])
        newest_first = posted[::-1]
        for path in (
            "/api/v1/timelines/home",
            "/api/v1/timelines/public",
            "/api/v1/timelines/tag/merge",
        ):
            pages = await walk(client, reader, f"{path}?limit=4")
            assert [len(p) for p in pages] == [4, 4, 4, 3], path
            assert [sid for page in pages for sid in page] == newest_first, path
            middle = ids(
                await client.get(f"{path}?min_id={posted[3]}&limit=4", headers=reader.headers)
            )
            assert middle == posted[4:8][::-1], path


async def test_form_encoded_carousel_and_comment_visibility(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        await act(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        media = [await upload(client, alice) for _ in range(3)][::-1]
        created = await client.post(
            "/api/v1/statuses",
            headers=alice.headers,
            data={"status": "form", "media_ids[]": media, "visibility": "private"},
        )
        assert created.status_code == 200, created.text
        assert [m["id"] for m in created.json()["media_attachments"]] == media
        assert created.json()["visibility"] == "private"
        # A comment is never more visible than its post.
        reply = await comment(client, bob, created.json()["id"], "hi", visibility="public")
        assert reply["visibility"] == "private"
        stranger = await client.sign_up("carol")
        hidden = await client.get(f"/api/v1/statuses/{reply['id']}", headers=stranger.headers)
        assert hidden.status_code == 404


async def test_racing_writes(make_settings: MakeSettings, tmp_path: Path) -> None:
    """The same Idempotency-Key at once, pins past the limit at once, likes racing a delete."""
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        media = await upload(client, alice)
        headers = alice.headers | {"Idempotency-Key": "twins"}
        body = {"status": "twins", "media_ids": [media]}
        twins = await asyncio.gather(
            *(client.post("/api/v1/statuses", headers=headers, json=body) for _ in range(4))
        )
        assert {r.status_code for r in twins} == {200}, [r.text for r in twins]
        assert len({r.json()["id"] for r in twins}) == 1
        assert len(ids(await client.get(f"/api/v1/accounts/{alice.id}/statuses"))) == 1

        posts = [(await post(client, alice, f"p{n}"))["id"] for n in range(7)]
        pins = await asyncio.gather(
            *(client.post(f"/api/v1/statuses/{p}/pin", headers=alice.headers) for p in posts)
        )
        assert sorted(r.status_code for r in pins) == [200] * 5 + [422] * 2
        base = f"/api/v1/accounts/{alice.id}/statuses?pinned=true"
        assert len(ids(await client.get(base))) == 5

        target = posts[0]
        people = [bob, *[await client.sign_up(f"fan{n}") for n in range(5)]]
        likes = [
            client.post(f"/api/v1/statuses/{target}/favourite", headers=u.headers) for u in people
        ]
        results = await asyncio.gather(
            *likes, client.delete(f"/api/v1/statuses/{target}", headers=alice.headers)
        )
        assert {r.status_code for r in results[:-1]} <= {200, 404}
        assert results[-1].status_code == 200
        await client.settle()
        async with client.runtime.router.connect_for(int(target)) as conn:
            left = await conn.scalar(
                select(func.count())
                .select_from(favourites)
                .where(favourites.c.status_id == int(target))
            )
        assert left == 0
        for user in people:
            assert ids(await client.get("/api/v1/favourites", headers=user.headers)) == []
            async with client.runtime.router.connect_for(int(user.id)) as conn:
                mirrored = await conn.scalar(
                    select(func.count())
                    .select_from(account_favourites)
                    .where(account_favourites.c.account_id == int(user.id))
                )
            assert mirrored == 0, user.username


async def test_favourited_by_pages(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice = await client.sign_up("alice")
        sid = (await post(client, alice))["id"]
        fans = [await client.sign_up(f"fan{n}") for n in range(5)]
        for fan in fans:
            await act(client, fan, f"/api/v1/statuses/{sid}/favourite")
        latest_first = [f.id for f in fans][::-1]
        pages = await walk(client, None, f"/api/v1/statuses/{sid}/favourited_by?limit=2")
        assert pages == [latest_first[0:2], latest_first[2:4], latest_first[4:5]]
        # A like of a comment, deleted with its post: gone from the liker's list too.
        reply = await comment(client, fans[0], sid, "mine")
        await act(client, fans[1], f"/api/v1/statuses/{reply['id']}/favourite")
        await client.settle()
        assert ids(await client.get("/api/v1/favourites", headers=fans[1].headers)) == [
            reply["id"],
            sid,
        ]
        await client.delete(f"/api/v1/statuses/{sid}", headers=alice.headers)
        await client.settle()
        assert ids(await client.get("/api/v1/favourites", headers=fans[1].headers)) == []


async def test_a_reply_mentioning_its_parent_author(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """ "@alice" in a reply to alice is a mention like any other, and notifies her once."""
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob, carol = [await client.sign_up(n) for n in ("alice", "bob", "carol")]
        sid = (await post(client, alice))["id"]
        reply = await comment(client, bob, sid, "@alice @carol look")
        assert sorted(m["username"] for m in reply["mentions"]) == ["alice", "carol"]
        assert reply["content"].count('class="u-url mention"') == 2
        quiet = await comment(client, bob, sid, "no names")
        assert quiet["mentions"] == []
        await client.settle()
        for user, expected in ((alice, [reply["id"], quiet["id"]]), (carol, [reply["id"]])):
            async with client.runtime.router.connect_for(int(user.id)) as conn:
                found = await conn.scalars(
                    select(notifications.c.status_id)
                    .where(
                        notifications.c.account_id == int(user.id),
                        notifications.c.type == "mention",
                    )
                    .order_by(notifications.c.status_id)
                )
                assert [str(s) for s in found] == expected, user.username


async def test_unlisted_posts_stay_off_public_lists(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob = await client.sign_up("alice"), await client.sign_up("bob")
        await act(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        quiet = await post(client, alice, "#quiet but #Café", visibility="unlisted")
        assert quiet["visibility"] == "unlisted"
        assert [t["name"] for t in quiet["tags"]] == ["quiet", "café"]
        loud = await post(client, alice, "#quiet and #CAFÉ")
        assert (await client.get(f"/api/v1/statuses/{quiet['id']}")).status_code == 200
        assert ids(await client.get(f"/api/v1/accounts/{alice.id}/statuses")) == [
            loud["id"],
            quiet["id"],
        ]
        home = ids(await client.get("/api/v1/timelines/home", headers=bob.headers))
        assert home == [loud["id"], quiet["id"]]
        for path in ("/api/v1/timelines/public", "/api/v1/timelines/tag/quiet"):
            assert ids(await client.get(path, headers=bob.headers)) == [loud["id"]], path
        assert ids(await client.get("/api/v1/timelines/tag/CAF%C3%A9")) == [loud["id"]]


async def test_edit_reparses_mentions(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        alice, bob, carol = [await client.sign_up(n) for n in ("alice", "bob", "carol")]
        sid = (await post(client, alice, "with @bob"))["id"]

        async def edit(text: str) -> list[str]:
            response = await client.put(
                f"/api/v1/statuses/{sid}", headers=alice.headers, json={"status": text}
            )
            assert response.status_code == 200, response.text
            return sorted(m["username"] for m in response.json()["mentions"])

        assert await edit("with @carol and @bob") == ["bob", "carol"]
        assert await edit("with @carol") == ["carol"]
        assert await edit("with @carol and @bob again") == ["bob", "carol"]
        await client.settle()
        for user in (bob, carol):
            async with client.runtime.router.connect_for(int(user.id)) as conn:
                found = await conn.scalars(
                    select(notifications.c.status_id).where(
                        notifications.c.account_id == int(user.id)
                    )
                )
                assert [str(s) for s in found] == [sid], user.username
