"""Mastodon.py, a standard client library, used against photogram exactly as against Mastodon."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from mastodon import Mastodon

from tests.api import PASSWORD
from tests.posts.support import PHOTO
from tests.server import running_server


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("mastodon-py")) as url:
        yield url


def _signed_up(base_url: str, username: str, tmp_path: Path) -> Mastodon:
    client_id, client_secret = Mastodon.create_app(
        "photogram tests", api_base_url=base_url, scopes=["read", "write", "follow"]
    )
    api = Mastodon(
        client_id=client_id,
        client_secret=client_secret,
        api_base_url=base_url,
        version_check_mode="created",
    )
    api.create_account(
        username,
        PASSWORD,
        f"{username}@example.com",
        agreement=True,
        scopes=["read", "write", "follow"],
    )
    # A fresh log-in, as an app would do on another device.
    again = Mastodon(
        client_id=client_id,
        client_secret=client_secret,
        api_base_url=base_url,
        version_check_mode="created",
    )
    # The test server speaks plain HTTP on loopback; Mastodon.py wants this said explicitly.
    again.log_in(
        f"{username}@example.com", PASSWORD, scopes=["read", "write", "follow"], allow_http=True
    )
    return again


def test_mastodon_py_works_unchanged(base_url: str, tmp_path: Path) -> None:
    alice = _signed_up(base_url, "alice", tmp_path)
    bob = _signed_up(base_url, "bob", tmp_path)

    assert alice.verify_minimum_version("4.0.0", cached=True)
    me = alice.account_verify_credentials()
    assert me.username == "alice"
    bob_id = bob.account_verify_credentials().id

    relationship = alice.account_follow(bob_id)
    assert relationship.following is True
    (rel,) = alice.account_relationships([bob_id])
    assert rel.following is True
    assert rel.id == bob_id

    assert bob.account(bob_id).followers_count == 1
    assert [a.username for a in bob.account_followers(bob_id)] == ["alice"]
    assert alice.account_lookup("bob").id == bob_id
    assert [a.username for a in alice.account_search("bo")] == ["bob"]

    alice.account_unfollow(bob_id)
    assert alice.account_relationships([bob_id])[0].following is False
    assert alice.instance().version.startswith("4.3.0")
    alice.revoke_access_token(allow_http=True)


def test_mastodon_py_posts_comments_and_likes(base_url: str, tmp_path: Path) -> None:
    carol = _signed_up(base_url, "carol", tmp_path)
    dave = _signed_up(base_url, "dave", tmp_path)
    carol_id = carol.me().id
    dave.account_follow(carol_id)

    # One photo from a file, one from bytes in memory: a carousel of two, in that order.
    photo_file = tmp_path / "photo.jpg"
    photo_file.write_bytes(PHOTO)
    with photo_file.open("rb") as opened:
        first = carol.media_post(opened, "image/jpeg", description="From a file", synchronous=True)
    second = carol.media_post(
        io.BytesIO(PHOTO), mime_type="image/jpeg", file_name="b.jpg", synchronous=True
    )
    assert first.type == "image"
    assert first.url
    posted = carol.status_post("Two views of the #harbour", media_ids=[second, first])
    assert [m.id for m in posted.media_attachments] == [second.id, first.id]
    assert posted.media_attachments[1].description == "From a file"
    assert [t.name for t in posted.tags] == ["harbour"]

    reply = dave.status_post("@carol lovely light", in_reply_to_id=posted)
    assert reply.in_reply_to_id == posted.id
    assert [m.username for m in reply.mentions] == ["carol"]
    liked = dave.status_favourite(posted)
    assert liked.favourited is True
    assert liked.favourites_count == 1
    assert dave.status_bookmark(posted).bookmarked is True

    assert [s.id for s in dave.timeline_home()] == [posted.id]
    assert [s.id for s in dave.account_statuses(carol_id)] == [posted.id]
    assert [s.id for s in dave.timeline_hashtag("harbour")] == [posted.id]
    context = dave.status_context(posted)
    assert context.ancestors == []
    assert [s.id for s in context.descendants] == [reply.id]
    assert [s.id for s in dave.status_context(reply).ancestors] == [posted.id]
    assert [a.id for a in carol.status_favourited_by(posted)] == [dave.me().id]
    assert [s.id for s in dave.favourites()] == [posted.id]
    assert [s.id for s in dave.bookmarks()] == [posted.id]
    fetched = carol.status(posted.id)
    assert (fetched.replies_count, fetched.favourites_count) == (1, 1)
    dave_id = dave.me().id
    notified = {
        (n.type, n.account.id, n.status.id if n.status else None) for n in carol.notifications()
    }
    assert {("mention", dave_id, reply.id), ("favourite", dave_id, posted.id)} <= notified
    assert [n.type for n in carol.notifications(types=["favourite"])] == ["favourite"]

    # Paging as the library does it, from the Link header.
    more = [
        carol.status_post(
            f"more {n}", media_ids=[carol.media_post(io.BytesIO(PHOTO), "image/jpeg")]
        )
        for n in range(3)
    ]
    page = dave.timeline_home(limit=2)
    seen = [s.id for s in page]
    while (page := dave.fetch_next(page)) is not None and page:
        seen += [s.id for s in page]
    assert seen == [s.id for s in reversed([posted, *more])]

    carol.status_delete(posted)
    assert [s.id for s in dave.favourites()] == []
    assert all(n.status is None for n in carol.notifications())
    assert [s.id for s in dave.timeline_home()] == [s.id for s in reversed(more)]
