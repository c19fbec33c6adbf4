"""The follow graph as a Mastodon client meets it, on both backends."""

from __future__ import annotations

import re

from tests.api import api_client
from tests.conftest import MakeSettings
from tests.graph.helpers import (
    assert_converged,
    counts,
    ids_of,
    lock,
    me,
    post,
    relationship,
    sign_up_spread,
)


def link_params(link: str) -> dict[str, str]:
    """rel -> the paging parameter of that link, e.g. {"next": "max_id=…", "prev": "min_id=…"}."""
    found = {}
    for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', link):
        match = re.search(r"(max_id|min_id)=(\d+)", url)
        assert match is not None, url
        found[rel] = f"{match.group(1)}={match.group(2)}"
    return found


async def test_follow_unfollow_counts_and_relationships(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")

        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert rel["id"] == alice.id
        assert rel["following"] is True
        assert rel["showing_reblogs"] is True
        assert rel["notifying"] is False
        assert rel["requested"] is False
        assert await counts(client, alice) == (1, 0)
        assert await counts(client, bob) == (0, 1)

        # Following again is idempotent; it only changes the options given.
        rel = await post(
            client, bob, f"/api/v1/accounts/{alice.id}/follow", reblogs="false", notify="true"
        )
        assert (rel["following"], rel["showing_reblogs"], rel["notifying"]) == (True, False, True)
        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert (rel["showing_reblogs"], rel["notifying"]) == (False, True)
        assert await counts(client, alice) == (1, 0)
        assert await counts(client, bob) == (0, 1)

        # JSON bodies work as well as forms.
        response = await client.post(
            f"/api/v1/accounts/{bob.id}/follow", headers=carol.headers, json={"reblogs": False}
        )
        assert response.status_code == 200, response.text
        assert response.json()["showing_reblogs"] is False

        # The viewer's relationships: several IDs, request order, unknown ones skipped.
        response = await client.get(
            "/api/v1/accounts/relationships",
            params=[("id[]", carol.id), ("id[]", "999999999999"), ("id[]", bob.id)],
            headers=alice.headers,
        )
        assert response.status_code == 200, response.text
        listed = response.json()
        assert [r["id"] for r in listed] == [carol.id, bob.id]
        to_carol, to_bob = listed
        assert to_bob["followed_by"] is True
        assert to_bob["following"] is False
        assert to_carol["followed_by"] is False
        for field in ("blocking", "blocked_by", "muting", "requested", "requested_by"):
            assert to_bob[field] is False
        assert (to_bob["domain_blocking"], to_bob["endorsed"], to_bob["note"]) == (False, False, "")
        assert to_bob["languages"] is None
        # Plain `id=` is accepted too.
        response = await client.get(
            "/api/v1/accounts/relationships", params={"id": alice.id}, headers=bob.headers
        )
        assert [r["following"] for r in response.json()] == [True]
        # Nothing asked, nothing answered; garbage IDs are skipped.
        response = await client.get(
            "/api/v1/accounts/relationships", params={"id[]": "nope"}, headers=bob.headers
        )
        assert response.json() == []

        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/unfollow")
        assert rel["following"] is False
        assert await counts(client, alice) == (0, 0)
        assert await counts(client, bob) == (1, 0)  # carol still follows bob
        assert await counts(client, carol) == (0, 1)
        # Unfollowing again changes nothing and never goes below zero.
        await post(client, bob, f"/api/v1/accounts/{alice.id}/unfollow")
        assert await counts(client, alice) == (0, 0)
        await assert_converged(client.runtime, [int(u.id) for u in (alice, bob, carol)])


async def test_followers_and_following_lists_page_with_links(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        fans = [bob, *[await client.sign_up(f"fan{i}") for i in range(4)]]
        for fan in fans:
            await post(client, fan, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/follow")
        newest_first = [f.id for f in reversed(fans)]

        path = f"/api/v1/accounts/{alice.id}/followers"
        assert await ids_of(client, path) == newest_first  # public: no token needed
        assert await ids_of(client, path, alice) == newest_first

        first = await client.get(path, params={"limit": 2})
        assert [a["id"] for a in first.json()] == newest_first[:2]
        links = link_params(first.headers["link"])
        assert links["next"].startswith("max_id=")
        assert links["prev"].startswith("min_id=")
        second = await client.get(f"{path}?{links['next']}&limit=2")
        assert [a["id"] for a in second.json()] == newest_first[2:4]
        third = await client.get(f"{path}?{link_params(second.headers['link'])['next']}&limit=2")
        assert [a["id"] for a in third.json()] == newest_first[4:]
        back = await client.get(f"{path}?{link_params(third.headers['link'])['prev']}&limit=2")
        assert [a["id"] for a in back.json()] == newest_first[2:4]
        end = await client.get(f"{path}?{link_params(third.headers['link'])['next']}")
        assert end.json() == []
        assert "link" not in end.headers
        # since_id: only the follows newer than the one given.
        assert await ids_of(client, path, since_id=links["next"].split("=")[1]) == newest_first[:1]
        # The limit is capped at 80, not refused.
        assert await ids_of(client, path, limit=500) == newest_first

        account = (await client.get(path)).json()[0]
        assert account["username"] == "fan3"
        assert account["followers_count"] == 0
        assert account["following_count"] == 1

        assert await ids_of(client, f"/api/v1/accounts/{bob.id}/following") == [alice.id]
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/following") == [bob.id]
        assert await ids_of(client, f"/api/v1/accounts/{bob.id}/followers") == [alice.id]
        assert await counts(client, alice) == (5, 1)

        for missing in ("999999999999", "not-an-id"):
            response = await client.get(f"/api/v1/accounts/{missing}/followers")
            assert response.status_code == 404
            assert response.json() == {"error": "Record not found"}
        bad = await client.get(path, params={"max_id": "x"})
        assert bad.status_code == 422
        assert "error" in bad.json()


async def test_locked_account_requests(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")
        await lock(client, alice)

        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert (rel["following"], rel["requested"]) == (False, True)
        await post(client, carol, f"/api/v1/accounts/{alice.id}/follow")
        # Asking again changes nothing.
        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert rel["requested"] is True
        assert await counts(client, alice) == (0, 0)
        assert await counts(client, bob) == (0, 0)

        requests = await client.get("/api/v1/follow_requests", headers=alice.headers)
        assert requests.status_code == 200
        assert [a["id"] for a in requests.json()] == [carol.id, bob.id]
        assert "link" in requests.headers
        page = await client.get("/api/v1/follow_requests?limit=1", headers=alice.headers)
        assert [a["id"] for a in page.json()] == [carol.id]
        next_page = link_params(page.headers["link"])["next"]
        page = await client.get(f"/api/v1/follow_requests?{next_page}", headers=alice.headers)
        assert [a["id"] for a in page.json()] == [bob.id]
        assert (await me(client, alice))["source"]["follow_requests_count"] == 2
        assert (await relationship(client, alice, bob))["requested_by"] is True

        rel = await post(client, alice, f"/api/v1/follow_requests/{bob.id}/authorize")
        assert rel["id"] == bob.id
        assert (rel["followed_by"], rel["requested_by"]) == (True, False)
        to_alice = await relationship(client, bob, alice)
        assert (to_alice["following"], to_alice["requested"]) == (True, False)
        assert await counts(client, alice) == (1, 0)
        assert await counts(client, bob) == (0, 1)

        rel = await post(client, alice, f"/api/v1/follow_requests/{carol.id}/reject")
        assert (rel["followed_by"], rel["requested_by"]) == (False, False)
        to_alice = await relationship(client, carol, alice)
        assert (to_alice["following"], to_alice["requested"]) == (False, False)
        assert await counts(client, carol) == (0, 0)
        assert (await client.get("/api/v1/follow_requests", headers=alice.headers)).json() == []

        # No pending request: nothing to answer.
        for verb in ("authorize", "reject"):
            for who in (carol.id, bob.id, "999999999999", "nope"):
                response = await client.post(
                    f"/api/v1/follow_requests/{who}/{verb}", headers=alice.headers
                )
                assert response.status_code == 404, response.text
                assert response.json() == {"error": "Record not found"}

        # Withdrawing a request (unfollow) removes it from the other side too.
        await post(client, carol, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, carol, f"/api/v1/accounts/{alice.id}/unfollow")
        assert (await client.get("/api/v1/follow_requests", headers=alice.headers)).json() == []
        assert (await relationship(client, alice, carol))["requested_by"] is False
        await assert_converged(client.runtime, [int(u.id) for u in (alice, bob, carol)])


async def test_remove_from_followers(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/follow")

        rel = await post(client, alice, f"/api/v1/accounts/{bob.id}/remove_from_followers")
        assert (rel["followed_by"], rel["following"]) == (False, True)
        assert (await relationship(client, bob, alice))["following"] is False
        assert await counts(client, alice) == (0, 1)
        assert await counts(client, bob) == (1, 0)
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/followers") == []
        # Again: nothing left to remove.
        await post(client, alice, f"/api/v1/accounts/{bob.id}/remove_from_followers")
        assert await counts(client, alice) == (0, 1)
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])


async def test_block_and_unblock(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/follow")
        for user in (alice, bob):
            await post(client, user, f"/api/v1/accounts/{carol.id}/follow")
            await post(client, carol, f"/api/v1/accounts/{user.id}/follow")

        rel = await post(client, alice, f"/api/v1/accounts/{bob.id}/block")
        assert rel["blocking"] is True
        assert (rel["following"], rel["followed_by"]) == (False, False)
        to_alice = await relationship(client, bob, alice)
        assert (to_alice["blocked_by"], to_alice["following"], to_alice["followed_by"]) == (
            True,
            False,
            False,
        )
        assert await counts(client, alice) == (1, 1)  # carol only, both ways
        assert await counts(client, bob) == (1, 1)

        # Neither can follow the other while the block stands.
        for follower, followee in ((bob, alice), (alice, bob)):
            response = await client.post(
                f"/api/v1/accounts/{followee.id}/follow", headers=follower.headers
            )
            assert response.status_code == 403, response.text
            assert response.json() == {"error": "This action is not allowed"}

        # Hidden from each other in lists; others still see both.
        carol_followers = f"/api/v1/accounts/{carol.id}/followers"
        assert await ids_of(client, carol_followers, bob) == [bob.id]
        assert await ids_of(client, carol_followers, alice) == [alice.id]
        assert set(await ids_of(client, carol_followers)) == {alice.id, bob.id}
        assert set(await ids_of(client, carol_followers, carol)) == {alice.id, bob.id}
        carol_following = f"/api/v1/accounts/{carol.id}/following"
        assert await ids_of(client, carol_following, bob) == [bob.id]
        # The blocker's own lists are closed to the blocked account (and the other way).
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/followers", bob) == []
        assert await ids_of(client, f"/api/v1/accounts/{bob.id}/following", alice) == []
        assert await ids_of(client, f"/api/v1/accounts/{alice.id}/followers", carol) == [carol.id]

        # Blocking again changes nothing.
        await post(client, alice, f"/api/v1/accounts/{bob.id}/block")
        rel = await post(client, alice, f"/api/v1/accounts/{bob.id}/unblock")
        assert rel["blocking"] is False
        assert (await relationship(client, bob, alice))["blocked_by"] is False
        assert set(await ids_of(client, carol_followers, bob)) == {alice.id, bob.id}
        rel = await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        assert rel["following"] is True
        assert await counts(client, alice) == (2, 1)
        await assert_converged(client.runtime, [int(u.id) for u in (alice, bob, carol)])


async def test_block_drops_pending_requests_both_ways(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        await lock(client, alice)
        await lock(client, bob)
        await post(client, bob, f"/api/v1/accounts/{alice.id}/follow")
        await post(client, alice, f"/api/v1/accounts/{bob.id}/follow")

        rel = await post(client, alice, f"/api/v1/accounts/{bob.id}/block")
        assert (rel["requested"], rel["requested_by"]) == (False, False)
        assert (await client.get("/api/v1/follow_requests", headers=alice.headers)).json() == []
        assert (await client.get("/api/v1/follow_requests", headers=bob.headers)).json() == []
        assert (await relationship(client, bob, alice))["requested"] is False
        await assert_converged(client.runtime, [int(alice.id), int(bob.id)])


async def test_mute_and_unmute(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice, bob = await sign_up_spread(client, "alice", "bob")
        rel = await post(client, alice, f"/api/v1/accounts/{bob.id}/mute")
        assert (rel["muting"], rel["muting_notifications"]) == (True, True)
        rel = await post(
            client, alice, f"/api/v1/accounts/{bob.id}/mute", notifications="false", duration=3600
        )
        assert (rel["muting"], rel["muting_notifications"]) == (True, False)
        # Muting is the muter's business only.
        assert (await relationship(client, bob, alice))["muting"] is False
        rel = await post(client, alice, f"/api/v1/accounts/{bob.id}/unmute")
        assert (rel["muting"], rel["muting_notifications"]) == (False, False)
        response = await client.post(
            f"/api/v1/accounts/{bob.id}/mute", headers=alice.headers, data={"duration": "-5"}
        )
        assert response.status_code == 422
        assert "error" in response.json()


async def test_refusals(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        alice = await client.sign_up("alice")
        for verb in ("follow", "block", "mute"):
            response = await client.post(
                f"/api/v1/accounts/{alice.id}/{verb}", headers=alice.headers
            )
            assert response.status_code == 422, response.text
            assert response.json() == {"error": f"You cannot {verb} yourself"}
        for verb in (
            "follow",
            "unfollow",
            "block",
            "unblock",
            "mute",
            "unmute",
            "remove_from_followers",
        ):
            for missing in ("999999999999", "abc", "-1", str(2**70)):
                response = await client.post(
                    f"/api/v1/accounts/{missing}/{verb}", headers=alice.headers
                )
                assert response.status_code == 404, (verb, missing, response.text)
                assert response.json() == {"error": "Record not found"}
        assert await counts(client, alice) == (0, 0)
