"""The visibility matrix: each relationship of a viewer to an author, against each path
that reads statuses.

Every author has a viewer in one relationship to them (``RELATIONSHIPS``), a public
post (which @mentions the viewer) and a followers-only one, each with a comment by a
neutral account, a comment and a like on that neutral account's post, and a comment
and a like on the viewer's post (which notify the viewer). The authors of ``pending``
and ``approved`` made their account private after posting, so all their posts count as
followers-only, the earlier public one too. ``MATRIX`` says, for each read path,
whether the viewer sees what is read there; the world is built once per backend for the
whole module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.api import Client, User, api_client
from tests.conftest import BACKENDS, PostgresFactory
from tests.posts.support import act, comment, ids, lock, post, posts_settings, settings_maker

#: One worker builds each backend's world once, rather than every worker both (pytest-xdist
#: would spread the module's tests, and each worker builds the module fixture anew).
pytestmark = pytest.mark.xdist_group("posts-visibility")

RELATIONSHIPS = [
    "anonymous",  # no token at all
    "stranger",  # signed in, no relationship
    "follower",  # follows the author
    "pending",  # asked to follow the (locked) author; not yet approved
    "approved",  # follows the locked author, approved
    "blocked",  # the author blocked the viewer
    "blocking",  # the viewer blocked the author
    "muted",  # follows the author, and muted them
]

Y, N = True, False
NA = None  # needs a signed-in viewer: anonymous gets 401

# fmt: off
MATRIX: dict[str, tuple[bool | None, ...]] = {
    #                                anon stranger follower pending approved blocked blocking muted
    "status: public post":          (Y,   Y,       Y,       N,      Y,       N,      N,       Y),
    "status: private post":         (N,   N,       Y,       N,      Y,       N,      N,       Y),
    "status: comment on public":    (Y,   Y,       Y,       N,      Y,       N,      N,       Y),
    "status: comment on private":   (N,   N,       Y,       N,      Y,       N,      N,       Y),
    "status: author's comment":     (Y,   Y,       Y,       Y,      Y,       N,      N,       Y),
    "context: of public post":      (Y,   Y,       Y,       N,      Y,       N,      N,       Y),
    "context: of private post":     (N,   N,       Y,       N,      Y,       N,      N,       Y),
    "context: of a comment on it":  (Y,   Y,       Y,       N,      Y,       N,      N,       Y),
    "context: author's comment":    (Y,   Y,       Y,       Y,      Y,       N,      N,       Y),
    "home: public post":            (NA,  N,       Y,       N,      Y,       N,      N,       N),
    "home: private post":           (NA,  N,       Y,       N,      Y,       N,      N,       N),
    "account: public post":         (Y,   Y,       Y,       N,      Y,       N,      N,       Y),
    "account: private post":        (N,   N,       Y,       N,      Y,       N,      N,       Y),
    "public: public post":          (Y,   Y,       Y,       N,      N,       N,      N,       N),
    "public: private post":         (N,   N,       N,       N,      N,       N,      N,       N),
    "tag: public post":             (Y,   Y,       Y,       N,      N,       N,      N,       N),
    "tag: private post":            (N,   N,       N,       N,      N,       N,      N,       N),
    "favourited_by: author's post": (Y,   Y,       Y,       N,      Y,       N,      N,       Y),
    "favourited_by: author's like": (Y,   Y,       Y,       Y,      Y,       N,      N,       Y),
    "favourites: liked before":     (NA,  Y,       Y,       N,      Y,       N,      N,       Y),
    "bookmarks: saved before":      (NA,  Y,       Y,       N,      Y,       N,      N,       Y),
    "context: reply to author":     (Y,   Y,       Y,       Y,      Y,       N,      N,       Y),
    "like: public post":            (NA,  Y,       Y,       N,      Y,       N,      N,       Y),
    "comment: private post":        (NA,  N,       Y,       N,      Y,       N,      N,       Y),
    "notified: like of own post":   (NA,  Y,       Y,       Y,      Y,       N,      N,       N),
    "notified: comment on own":     (NA,  Y,       Y,       Y,      Y,       N,      N,       N),
    "notified: mention in a post":  (NA,  Y,       Y,       N,      Y,       N,      N,       N),
}
# fmt: on


@dataclass
class Pair:
    author: User
    viewer: User | None
    public: str
    private: str
    on_public: str  # the neutral account's comment on the public post
    on_private: str
    by_author: str  # the author's comment on the neutral post
    to_author: str  # the neutral account's reply to that comment
    viewer_post: str | None  # the viewer's post, which the author liked and commented on
    on_viewer: str | None  # the author's comment on it


@dataclass
class World:
    client: Client
    neutral: User
    neutral_post: str
    pairs: dict[str, Pair]


@pytest.fixture(scope="module", params=BACKENDS)
async def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresFactory,
) -> AsyncIterator[World]:
    directory = tmp_path_factory.mktemp("visibility")
    settings = await posts_settings(settings_maker(request.param, postgres, directory), directory)
    async with api_client(settings) as client:
        yield await _build(client)


async def _build(client: Client) -> World:
    neutral = await client.sign_up("neutral")
    neutral_post = (await post(client, neutral, "#elsewhere"))["id"]
    pairs = {}
    for rel in RELATIONSHIPS:
        author = await client.sign_up(f"a_{rel}")
        viewer = None if rel == "anonymous" else await client.sign_up(f"v_{rel}")
        # The neutral account follows every author, so it may comment on every post.
        await act(client, neutral, f"/api/v1/accounts/{author.id}/follow")
        mention = f" @{viewer.username}" if viewer else ""
        public = (await post(client, author, f"#matrix public{mention}", visibility="public"))["id"]
        private = (await post(client, author, "#matrix private", visibility="private"))["id"]
        on_public = (await comment(client, neutral, public, "nice"))["id"]
        on_private = (await comment(client, neutral, private, "nice too"))["id"]
        by_author = (await comment(client, author, neutral_post, "hello"))["id"]
        to_author = (await comment(client, neutral, by_author, "hi back"))["id"]
        await act(client, author, f"/api/v1/statuses/{neutral_post}/favourite")
        await act(client, neutral, f"/api/v1/statuses/{public}/favourite")
        viewer_post = on_viewer = None
        if viewer is not None:
            # Liked, saved and commented on while nothing stood between them.
            await act(client, viewer, f"/api/v1/statuses/{public}/favourite")
            await act(client, viewer, f"/api/v1/statuses/{public}/bookmark")
            viewer_post = (await post(client, viewer, "mine"))["id"]
            await act(client, author, f"/api/v1/statuses/{viewer_post}/favourite")
            on_viewer = (await comment(client, author, viewer_post, "great"))["id"]
        pairs[rel] = Pair(
            author,
            viewer,
            public,
            private,
            on_public,
            on_private,
            by_author,
            to_author,
            viewer_post,
            on_viewer,
        )
    await client.settle()

    def both(rel: str) -> tuple[User, User]:
        viewer = pairs[rel].viewer
        assert viewer is not None
        return pairs[rel].author, viewer

    author, viewer = both("follower")
    await act(client, viewer, f"/api/v1/accounts/{author.id}/follow")
    for rel in ("pending", "approved"):
        author, viewer = both(rel)
        await lock(client, author)
        asked = await act(client, viewer, f"/api/v1/accounts/{author.id}/follow")
        assert asked["requested"] is True
    author, viewer = both("approved")
    await client.settle()
    await act(client, author, f"/api/v1/follow_requests/{viewer.id}/authorize")
    author, viewer = both("blocked")
    await act(client, author, f"/api/v1/accounts/{viewer.id}/block")
    author, viewer = both("blocking")
    await act(client, viewer, f"/api/v1/accounts/{author.id}/block")
    author, viewer = both("muted")
    await act(client, viewer, f"/api/v1/accounts/{author.id}/follow")
    await act(client, viewer, f"/api/v1/accounts/{author.id}/mute")
    await client.settle()
    return World(client, neutral, neutral_post, pairs)


# --- the read paths: each says whether the viewer sees the thing it reads ------------------

#: True: seen (or done); False: as if it did not exist (404); None: needs a token (401).
Read = Callable[[World, Pair], Awaitable[bool | None]]


async def _call(
    world: World, pair: Pair, method: str, path: str, **body: str
) -> tuple[int, object]:
    headers = pair.viewer.headers if pair.viewer else {}
    response = await world.client.request(method, path, headers=headers, json=body or None)
    assert response.status_code in (200, 401, 404), f"{path}: {response.text}"
    if response.status_code == 404:
        assert response.json() == {"error": "Record not found"}
    return response.status_code, response.json()


async def _get(world: World, pair: Pair, path: str) -> tuple[int, object]:
    return await _call(world, pair, "GET", path)


def _status(which: str) -> Read:
    async def read(world: World, pair: Pair) -> bool:
        code, _ = await _get(world, pair, f"/api/v1/statuses/{getattr(pair, which)}")
        return code == 200

    return read


def _context(of: Callable[[World, Pair], str], shows: Callable[[World, Pair], str]) -> Read:
    """Whether the thread of ``of`` shows ``shows`` (404 for the whole thread: not seen)."""

    async def read(world: World, pair: Pair) -> bool:
        code, body = await _get(world, pair, f"/api/v1/statuses/{of(world, pair)}/context")
        if code == 404:
            return False
        assert isinstance(body, dict)
        thread = [s["id"] for s in body["ancestors"] + body["descendants"]]
        return shows(world, pair) in thread

    return read


def _listed(path: Callable[[Pair], str], which: str) -> Read:
    async def read(world: World, pair: Pair) -> bool:
        code, body = await _get(world, pair, path(pair))
        if code != 200:
            return None if code == 401 else False
        assert isinstance(body, list)
        return getattr(pair, which) in [s["id"] for s in body]

    return read


async def _likers_of_post(world: World, pair: Pair) -> bool:
    code, body = await _get(world, pair, f"/api/v1/statuses/{pair.public}/favourited_by")
    if code == 200:
        assert isinstance(body, list)
        assert world.neutral.id in [a["id"] for a in body]
    return code == 200


async def _author_among_likers(world: World, pair: Pair) -> bool:
    code, body = await _get(world, pair, f"/api/v1/statuses/{world.neutral_post}/favourited_by")
    assert code == 200
    assert isinstance(body, list)
    return pair.author.id in [a["id"] for a in body]


async def _like(world: World, pair: Pair) -> bool | None:
    code, body = await _call(world, pair, "POST", f"/api/v1/statuses/{pair.public}/favourite")
    if code == 200:
        assert isinstance(body, dict)
        assert body["favourited"] is True
    return {200: True, 401: None, 404: False}[code]


async def _comment(world: World, pair: Pair) -> bool | None:
    code, _ = await _call(
        world, pair, "POST", "/api/v1/statuses", status="hi", in_reply_to_id=pair.private
    )
    return {200: True, 401: None, 404: False}[code]


def _notified(kind: str, which: str) -> Read:
    """Whether the viewer is shown the author's notification of ``kind`` about ``which``."""

    async def read(world: World, pair: Pair) -> bool | None:
        code, body = await _get(world, pair, "/api/v1/notifications?limit=80")
        if code == 401:
            return None
        assert code == 200
        assert isinstance(body, list)
        return any(
            n["type"] == kind
            and n["account"]["id"] == pair.author.id
            and (n["status"] or {}).get("id") == getattr(pair, which)
            for n in body
        )

    return read


READS: dict[str, Read] = {
    "status: public post": _status("public"),
    "status: private post": _status("private"),
    "status: comment on public": _status("on_public"),
    "status: comment on private": _status("on_private"),
    "status: author's comment": _status("by_author"),
    "context: of public post": _context(lambda w, p: p.public, lambda w, p: p.on_public),
    "context: of private post": _context(lambda w, p: p.private, lambda w, p: p.on_private),
    "context: of a comment on it": _context(lambda w, p: p.on_public, lambda w, p: p.public),
    "context: author's comment": _context(lambda w, p: w.neutral_post, lambda w, p: p.by_author),
    "home: public post": _listed(lambda p: "/api/v1/timelines/home", "public"),
    "home: private post": _listed(lambda p: "/api/v1/timelines/home", "private"),
    "account: public post": _listed(lambda p: f"/api/v1/accounts/{p.author.id}/statuses", "public"),
    "account: private post": _listed(
        lambda p: f"/api/v1/accounts/{p.author.id}/statuses", "private"
    ),
    "public: public post": _listed(lambda p: "/api/v1/timelines/public", "public"),
    "public: private post": _listed(lambda p: "/api/v1/timelines/public", "private"),
    "tag: public post": _listed(lambda p: "/api/v1/timelines/tag/matrix", "public"),
    "tag: private post": _listed(lambda p: "/api/v1/timelines/tag/matrix", "private"),
    "favourited_by: author's post": _likers_of_post,
    "favourited_by: author's like": _author_among_likers,
    "favourites: liked before": _listed(lambda p: "/api/v1/favourites", "public"),
    "bookmarks: saved before": _listed(lambda p: "/api/v1/bookmarks", "public"),
    "context: reply to author": _context(lambda w, p: w.neutral_post, lambda w, p: p.to_author),
    "like: public post": _like,
    "comment: private post": _comment,
    "notified: like of own post": _notified("favourite", "viewer_post"),
    "notified: comment on own": _notified("mention", "on_viewer"),
    "notified: mention in a post": _notified("mention", "public"),
}


def test_the_matrix_is_complete() -> None:
    assert set(READS) == set(MATRIX)
    assert all(len(row) == len(RELATIONSHIPS) for row in MATRIX.values())


@pytest.mark.parametrize("relationship", RELATIONSHIPS)
async def test_visibility(world: World, relationship: str) -> None:
    """Every read path for one relationship, in the matrix's order; every cell that
    differs is reported, not just the first (each read is a request or two: a test per
    cell would spend most of its time in the test runner)."""
    pair = world.pairs[relationship]
    wrong = []
    for path, row in MATRIX.items():
        expected = row[RELATIONSHIPS.index(relationship)]
        try:
            seen = await READS[path](world, pair)
        except AssertionError as failed:
            wrong.append(f"{path}: {failed}")
            continue
        if seen is not expected:
            wrong.append(f"{path}: expected {expected}, got {seen}")
    assert not wrong, f"{relationship}:\n" + "\n".join(wrong)


async def test_the_author_sees_everything(world: World) -> None:
    for pair in world.pairs.values():
        author = pair.author
        for sid in (pair.public, pair.private, pair.on_public, pair.on_private):
            response = await world.client.get(f"/api/v1/statuses/{sid}", headers=author.headers)
            assert response.status_code == 200, response.text
        listed = ids(
            await world.client.get(f"/api/v1/accounts/{author.id}/statuses", headers=author.headers)
        )
        assert {pair.public, pair.private} <= set(listed)
        home = ids(await world.client.get("/api/v1/timelines/home", headers=author.headers))
        assert {pair.public, pair.private} <= set(home)
