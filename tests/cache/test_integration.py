"""The cache in the app's request paths, on both backends (the embedded instance caches
in-process, the cluster in the session's memcached).

Every write path is checked the same way: read the entity through the API (and check it
is now cached), write, read again, and see the new value. Background work that changes
cached data (the follow graph's mirrors and commands, photo processing and deletion) is
run with ``settle`` before the second read.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from photogram.accounts.queries import load_account
from photogram.cache import (
    account_counters_key,
    account_key,
    media_key,
    relationship_key,
    status_counters_key,
    status_key,
    token_key,
)
from photogram.db.metadata import statuses
from photogram.media import actions as media_actions
from photogram.posts import render
from photogram.runtime import Runtime
from photogram.web import auth
from tests.accounts.images import quadrant_jpeg
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings
from tests.graph.helpers import sign_up_spread
from tests.memcached import Memcached, free_port
from tests.posts.support import PHOTO, comment, post

#: Generous on purpose: no test may depend on how fast this machine is.
PATIENT = {"cache_lease_wait_seconds": 60.0, "cache_timeout_seconds": 60.0}


async def cached(runtime: Runtime, key: str) -> Any:
    """What the cache holds fresh under ``key`` (None: nothing), without taking a lease."""
    found = (await runtime.cache.get_many([key], lease=False))[key]
    return None if found.value is None or found.stale else json.loads(found.value)


async def get(client: Client, path: str, user: User | None = None, **params: Any) -> Any:
    response = await client.get(path, headers=user.headers if user else {}, params=params)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


async def act(client: Client, user: User, path: str, method: str = "POST", **body: Any) -> Any:
    response = await client.request(method, path, headers=user.headers, json=body or None)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


async def account(client: Client, viewer: User, who: User) -> dict[str, Any]:
    found: dict[str, Any] = await get(client, f"/api/v1/accounts/{who.id}", viewer)
    return found


async def relation(client: Client, viewer: User, target: User) -> dict[str, Any]:
    (found,) = await get(client, "/api/v1/accounts/relationships", viewer, **{"id[]": target.id})
    result: dict[str, Any] = found
    return result


async def status(client: Client, id_: str, viewer: User | None = None) -> dict[str, Any]:
    found: dict[str, Any] = await get(client, f"/api/v1/statuses/{id_}", viewer)
    return found


# --- accounts -------------------------------------------------------------------------------


async def test_sign_up_invalidates_the_new_account_after_its_commit(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings()) as client:
        runtime = client.runtime
        invalidate = runtime.cache.invalidate
        committed: dict[str, bool] = {}

        async def watch(keys: Any, *, stale: bool = False) -> None:
            keys = list(keys)
            for key in keys:
                if key.startswith("account:"):
                    # What the database shows at that moment, through another connection.
                    id_ = int(key.rpartition(":")[2])
                    committed[key] = await load_account(runtime.router, id_) is not None
            await invalidate(keys, stale=stale)

        monkeypatch.setattr(runtime.cache, "invalidate", watch)
        alice = await client.sign_up("alice")
        assert committed == {account_key(int(alice.id)): True}
        assert (await account(client, alice, alice))["username"] == "alice"


async def test_profile_changes(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        before = await account(client, bob, alice)
        assert before["display_name"] == ""
        assert await cached(client.runtime, account_key(int(alice.id))) is not None

        await act(
            client,
            alice,
            "/api/v1/accounts/update_credentials",
            "PATCH",
            display_name="Alice A.",
            note="Photos of things",
            locked=True,
            discoverable=False,
        )
        after = await account(client, bob, alice)
        assert after["display_name"] == "Alice A."
        assert after["note"] == "<p>Photos of things</p>"
        assert after["locked"] is True
        assert after["discoverable"] is False

        response = await client.patch(
            "/api/v1/accounts/update_credentials",
            headers=alice.headers,
            files={"avatar": ("me.jpg", quadrant_jpeg(64, 64), "image/jpeg")},
        )
        assert response.status_code == 200, response.text
        assert (await account(client, bob, alice))["avatar"] == response.json()["avatar"]
        assert response.json()["avatar"] != before["avatar"]


# --- access tokens --------------------------------------------------------------------------


async def test_a_token_is_read_once_then_cached_until_revoked_or_expired(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings(access_token_ttl_seconds=3600)) as client:
        app = await client.register_app()
        alice = await client.sign_up("alice", app)
        key = token_key(auth.hash_secret(alice.token))
        looked_up: list[str] = []

        def watch(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "oauth_tokens" in statement:
                looked_up.append(statement)

        engine = client.runtime.router.engines.global_engine.sync_engine
        event.listen(engine, "before_cursor_execute", watch)
        try:
            for _ in range(3):
                await account(client, alice, alice)
        finally:
            event.remove(engine, "before_cursor_execute", watch)
        assert looked_up == []  # sign-up's own check filled the cache
        assert (await cached(client.runtime, key))["account_id"] == int(alice.id)

        # The expiry is the clock's business, cached or not.
        later = datetime.now(UTC) + timedelta(hours=2)

        class Later(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return later

        with monkeypatch.context() as patch:
            patch.setattr(auth, "datetime", Later)
            expired = await client.get("/api/v1/accounts/verify_credentials", headers=alice.headers)
            assert expired.status_code == 401
        assert (await account(client, alice, alice))["id"] == alice.id

        revoked = await client.revoke(app, alice.token)
        assert revoked.status_code == 200, revoked.text
        assert await cached(client.runtime, key) is None
        gone = await client.get("/api/v1/accounts/verify_credentials", headers=alice.headers)
        assert gone.status_code == 401


# --- the follow graph -----------------------------------------------------------------------


async def test_follow_and_unfollow(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        runtime = client.runtime
        # Everything the follow changes, read (and so cached) first.
        assert (await account(client, alice, bob))["followers_count"] == 0
        assert (await account(client, bob, alice))["following_count"] == 0
        assert (await relation(client, alice, bob))["following"] is False
        assert (await relation(client, bob, alice))["followed_by"] is False
        for key in (
            account_counters_key(int(bob.id)),
            account_counters_key(int(alice.id)),
            relationship_key(int(alice.id), int(bob.id)),
            relationship_key(int(bob.id), int(alice.id)),
        ):
            assert await cached(runtime, key) is not None, key

        await act(client, alice, f"/api/v1/accounts/{bob.id}/follow")
        await client.settle()
        assert (await account(client, alice, bob))["followers_count"] == 1
        assert (await account(client, bob, alice))["following_count"] == 1
        assert (await relation(client, alice, bob))["following"] is True
        assert (await relation(client, bob, alice))["followed_by"] is True

        await act(client, alice, f"/api/v1/accounts/{bob.id}/follow", notify=True)
        assert (await relation(client, alice, bob))["notifying"] is True

        await act(client, alice, f"/api/v1/accounts/{bob.id}/unfollow")
        await client.settle()
        assert (await account(client, alice, bob))["followers_count"] == 0
        assert (await account(client, bob, alice))["following_count"] == 0
        assert (await relation(client, alice, bob))["following"] is False
        assert (await relation(client, bob, alice))["followed_by"] is False


async def test_follow_requests_authorized_and_rejected(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")
        await act(client, carol, "/api/v1/accounts/update_credentials", "PATCH", locked=True)
        for user in (alice, bob):
            assert (await relation(client, user, carol))["requested"] is False
            assert (await relation(client, carol, user))["requested_by"] is False
        assert (await account(client, alice, carol))["followers_count"] == 0

        for user in (alice, bob):
            await act(client, user, f"/api/v1/accounts/{carol.id}/follow")
        await client.settle()
        for user in (alice, bob):
            assert (await relation(client, user, carol))["requested"] is True
            assert (await relation(client, carol, user))["requested_by"] is True

        await act(client, carol, f"/api/v1/follow_requests/{alice.id}/authorize")
        await act(client, carol, f"/api/v1/follow_requests/{bob.id}/reject")
        await client.settle()
        accepted = await relation(client, alice, carol)
        assert (accepted["following"], accepted["requested"]) == (True, False)
        refused = await relation(client, bob, carol)
        assert (refused["following"], refused["requested"]) == (False, False)
        assert (await relation(client, carol, alice))["followed_by"] is True
        assert (await relation(client, carol, bob))["requested_by"] is False
        assert (await account(client, alice, carol))["followers_count"] == 1
        assert (await account(client, carol, alice))["following_count"] == 1


async def test_block_unblock_and_remove_follower(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")
        await act(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await act(client, carol, f"/api/v1/accounts/{alice.id}/follow")
        await client.settle()
        assert (await relation(client, bob, alice))["following"] is True
        assert (await relation(client, alice, bob))["blocking"] is False
        assert (await account(client, carol, alice))["followers_count"] == 2
        assert (await account(client, bob, bob))["following_count"] == 1

        # Blocking ends bob's follow of alice on bob's shard (a background command).
        await act(client, alice, f"/api/v1/accounts/{bob.id}/block")
        await client.settle()
        blocked = await relation(client, bob, alice)
        assert (blocked["following"], blocked["blocked_by"]) == (False, True)
        assert (await relation(client, alice, bob))["blocking"] is True
        assert (await account(client, carol, alice))["followers_count"] == 1
        assert (await account(client, bob, bob))["following_count"] == 0

        await act(client, alice, f"/api/v1/accounts/{bob.id}/unblock")
        await client.settle()
        assert (await relation(client, alice, bob))["blocking"] is False
        assert (await relation(client, bob, alice))["blocked_by"] is False

        # Removing a follower: the follow goes on the follower's shard, in the background.
        assert (await relation(client, carol, alice))["following"] is True
        await act(client, alice, f"/api/v1/accounts/{carol.id}/remove_from_followers")
        await client.settle()
        assert (await relation(client, carol, alice))["following"] is False
        assert (await relation(client, alice, carol))["followed_by"] is False
        assert (await account(client, carol, alice))["followers_count"] == 0
        assert (await account(client, carol, carol))["following_count"] == 0


async def test_mute_and_unmute(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        photo = await post(client, bob, "A tree")
        # The public timeline reads the viewer's relations as a page is hydrated.
        public = [s["id"] for s in await get(client, "/api/v1/timelines/public", alice)]
        assert photo["id"] in public
        assert (await relation(client, alice, bob))["muting"] is False

        await act(client, alice, f"/api/v1/accounts/{bob.id}/mute", notifications=False)
        muted = await relation(client, alice, bob)
        assert (muted["muting"], muted["muting_notifications"]) == (True, False)
        public = [s["id"] for s in await get(client, "/api/v1/timelines/public", alice)]
        assert photo["id"] not in public

        await act(client, alice, f"/api/v1/accounts/{bob.id}/unmute")
        assert (await relation(client, alice, bob))["muting"] is False
        public = [s["id"] for s in await get(client, "/api/v1/timelines/public", alice)]
        assert photo["id"] in public


# --- posts ----------------------------------------------------------------------------------


async def test_posting_and_deleting_count_on_the_account(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        before = await account(client, bob, alice)
        assert (before["statuses_count"], before["last_status_at"]) == (0, None)

        photo = await post(client, alice, "First")
        after = await account(client, bob, alice)
        assert after["statuses_count"] == 1
        assert after["last_status_at"] is not None

        await act(client, alice, f"/api/v1/statuses/{photo['id']}", "DELETE")
        assert (await account(client, bob, alice))["statuses_count"] == 0
        missing = await client.get(f"/api/v1/statuses/{photo['id']}", headers=bob.headers)
        assert missing.status_code == 404


async def test_edit_and_pin(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")
        photo = await post(client, alice, "Sunset", photos=2)
        sid = photo["id"]
        shown = await status(client, sid, bob)
        assert shown["edited_at"] is None
        assert shown["mentions"] == []
        assert await cached(client.runtime, status_key(int(sid))) is not None

        media = [m["id"] for m in shown["media_attachments"]]
        await act(
            client,
            alice,
            f"/api/v1/statuses/{sid}",
            "PUT",
            status=f"Sunset with @{carol.username}",
            media_ids=media[::-1],
        )
        edited = await status(client, sid, bob)
        assert "Sunset with" in edited["content"]
        assert [m["id"] for m in edited["mentions"]] == [carol.id]
        assert edited["edited_at"] is not None
        assert [m["id"] for m in edited["media_attachments"]] == media[::-1]

        assert (await status(client, sid, alice))["pinned"] is False
        await act(client, alice, f"/api/v1/statuses/{sid}/pin")
        assert (await status(client, sid, alice))["pinned"] is True
        await act(client, alice, f"/api/v1/statuses/{sid}/unpin")
        assert (await status(client, sid, alice))["pinned"] is False


async def test_likes_and_comments_count_on_the_status(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        sid = (await post(client, alice, "A lake"))["id"]
        shown = await status(client, sid, bob)
        assert (shown["favourites_count"], shown["replies_count"]) == (0, 0)
        assert await cached(client.runtime, status_counters_key(int(sid))) is not None

        await act(client, bob, f"/api/v1/statuses/{sid}/favourite")
        assert (await status(client, sid, alice))["favourites_count"] == 1
        await act(client, bob, f"/api/v1/statuses/{sid}/unfavourite")
        assert (await status(client, sid, alice))["favourites_count"] == 0

        reply = await comment(client, bob, sid, "Lovely")
        assert (await status(client, sid, alice))["replies_count"] == 1
        assert "Lovely" in (await status(client, reply["id"], alice))["content"]
        await act(client, bob, f"/api/v1/statuses/{reply['id']}", "DELETE")
        assert (await status(client, sid, alice))["replies_count"] == 0
        gone = await client.get(f"/api/v1/statuses/{reply['id']}", headers=alice.headers)
        assert gone.status_code == 404


async def test_an_edit_invalidates_after_its_commit(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(await make_settings()) as client:
        alice = await client.sign_up("alice")
        sid = int((await post(client, alice, "Before"))["id"])
        await status(client, str(sid), alice)
        runtime = client.runtime
        invalidate = runtime.cache.invalidate
        seen: list[str] = []

        async def watch(keys: Any, *, stale: bool = False) -> None:
            keys = list(keys)
            if status_key(sid) in keys:
                async with runtime.router.connect_for(sid) as conn:
                    seen.append(
                        str(await conn.scalar(select(statuses.c.text).where(statuses.c.id == sid)))
                    )
            await invalidate(keys, stale=stale)

        monkeypatch.setattr(runtime.cache, "invalidate", watch)
        await act(client, alice, f"/api/v1/statuses/{sid}", "PUT", status="After")
        assert seen == ["After"]


# --- photos ---------------------------------------------------------------------------------


async def test_photo_processing_editing_posting_and_deleting(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        runtime = client.runtime
        # Uploaded but not processed yet (the upload endpoint would start processing).
        spool = media_actions.spool_directory(runtime)
        spool.mkdir(parents=True, exist_ok=True)
        spooled = spool / "photo.part"
        spooled.write_bytes(PHOTO)
        media_id, task = await media_actions.do_upload(
            runtime, int(alice.id), spooled, media_actions.Edit(None, None), "normal"
        )
        rows, variants = await render.load_media(runtime, [media_id])
        assert [r.state for r in rows] == ["processing"]
        assert variants == {}
        assert await cached(runtime, media_key(media_id)) is not None

        await runtime.relay.dispatch([task])
        rows, variants = await render.load_media(runtime, [media_id])
        assert [r.state for r in rows] == ["ready"]
        assert {"original", "640"} <= set(variants[media_id])

        await act(client, alice, f"/api/v1/media/{media_id}", "PUT", description="A fox")
        rows, _ = await render.load_media(runtime, [media_id])
        assert [r.description for r in rows] == ["A fox"]

        posted = await act(client, alice, "/api/v1/statuses", media_ids=[str(media_id)])
        rows, _ = await render.load_media(runtime, [media_id])
        assert [r.status_id for r in rows] == [int(posted["id"])]
        (attachment,) = (await status(client, posted["id"], bob))["media_attachments"]
        assert attachment["description"] == "A fox"
        assert attachment["url"] is not None

        await act(client, alice, f"/api/v1/statuses/{posted['id']}", "DELETE")
        await client.settle()
        assert await render.load_media(runtime, [media_id]) == ([], {})


async def test_cached_rows_equal_the_database_rows(make_settings: MakeSettings) -> None:
    """Round trips: datetimes stay UTC-aware, ints stay ints, JSON lists stay lists."""
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        sid = int((await post(client, alice, f"Hi @{bob.username}", photos=2))["id"])
        await act(client, alice, f"/api/v1/statuses/{sid}/pin")
        runtime = client.runtime
        await runtime.invalidate([status_key(sid), status_counters_key(sid)])
        for _ in range(2):  # the first load fills the cache, the second reads it
            rows, mentions = await render.load_statuses(runtime, [sid])
            async with runtime.router.connect_for(sid) as conn:
                stored = (await conn.execute(select(statuses).where(statuses.c.id == sid))).one()
            assert rows[sid]._asdict() == dict(stored._mapping)
            assert rows[sid].pinned_at.utcoffset().total_seconds() == 0
            assert mentions == {sid: [int(bob.id)]}
        assert await cached(runtime, status_key(sid)) is not None


# --- the herd, and memcached down ------------------------------------------------------------


@contextmanager
def status_loads(runtime: Runtime) -> Iterator[list[str]]:
    """The statements that load status rows by ID, run on any shard database meanwhile."""
    pattern = re.compile(r"^\s*SELECT\b.*\bFROM\s+(\w+\.)?statuses\b.*\bstatuses\.id IN\b", re.S)
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if pattern.search(statement):
            seen.append(statement)

    engines = [e.sync_engine for e in runtime.router.engines.shard_engines.values()]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


async def test_a_herd_after_an_invalidation_loads_the_status_once(
    make_settings: MakeSettings,
) -> None:
    async with api_client(await make_settings(**PATIENT, rate_limit_per_ip=100_000)) as client:
        alice = await client.sign_up("alice")
        sid = (await post(client, alice, "Hot"))["id"]
        await act(client, alice, f"/api/v1/statuses/{sid}", "PUT", status="Hotter")
        await status(client, sid)
        with status_loads(client.runtime) as loads:
            await status(client, sid)
            assert loads == []  # cached
            # As an edit by another app server would (its counts stay cached).
            await client.runtime.invalidate([status_key(int(sid))])
            responses = await asyncio.gather(
                *(client.get(f"/api/v1/statuses/{sid}") for _ in range(500))
            )
        assert [r.status_code for r in responses] == [200] * 500
        assert {r.json()["content"] for r in responses} == {"<p>Hotter</p>"}
        assert len(loads) == 1


async def scenario(client: Client, *names: str) -> None:
    """Reads and writes of every kind, each read checked against the write before it."""
    alice, bob = await sign_up_spread(client, *names)
    sid = (await post(client, alice, "Still here"))["id"]
    assert (await status(client, sid, bob))["favourites_count"] == 0
    await act(client, bob, f"/api/v1/statuses/{sid}/favourite")
    assert (await status(client, sid, bob))["favourites_count"] == 1
    await act(client, alice, f"/api/v1/statuses/{sid}", "PUT", status="Edited")
    assert (await status(client, sid, bob))["content"] == "<p>Edited</p>"
    await act(client, bob, f"/api/v1/accounts/{alice.id}/follow")
    await client.settle()
    assert (await account(client, bob, alice))["followers_count"] == 1
    assert (await relation(client, bob, alice))["following"] is True
    home = [s["id"] for s in await get(client, "/api/v1/timelines/home", bob)]
    assert home == [sid]


async def test_memcached_unreachable_serves_from_the_database(
    make_settings: MakeSettings,
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    async with api_client(await make_settings(cache_servers=[nobody])) as client:
        await scenario(client, "alice", "bob")


async def test_memcached_dying_mid_traffic_fails_no_request(
    make_settings: MakeSettings, memcached: Any
) -> None:
    server: Memcached = memcached()
    settings = await make_settings(cache_servers=[server.address], **PATIENT)
    async with api_client(settings) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        sid = (await post(client, alice, "Before the outage"))["id"]
        await status(client, sid, bob)
        assert await cached(client.runtime, status_key(int(sid))) is not None

        server.kill()
        await act(client, bob, f"/api/v1/statuses/{sid}/favourite")
        assert (await status(client, sid, bob))["favourites_count"] == 1
        await scenario(client, "carol", "dave")
