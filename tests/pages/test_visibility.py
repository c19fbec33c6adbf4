"""The pages against the posts module's visibility matrix: the same world (an author and a
viewer in each relationship: anonymous, stranger, follower, pending, approved, blocked,
blocking, muted), the same expectations, read through the web pages instead of the API.

Every page answers without a server error whatever the relationship, shows what the API
shows and answers 404 (an HTML page) for what it hides; a deleted post is a 404 for all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.api import api_client
from tests.conftest import BACKENDS, PostgresFactory
from tests.pages.support import Browser, browser, new_browser, sign_in
from tests.posts.support import act, post, posts_settings, settings_maker
from tests.posts.test_visibility import MATRIX, RELATIONSHIPS, Pair, World, _build

#: One worker builds each backend's world once, rather than every worker both (pytest-xdist
#: would spread the module's tests, and each worker builds the module fixture anew).
pytestmark = pytest.mark.xdist_group("pages-visibility")


@dataclass
class Web:
    world: World
    browsers: dict[str, Browser]  # by relationship; anonymous too (no session)
    deleted: dict[str, str]  # each author's post that was deleted, by relationship


@pytest.fixture(scope="module", params=BACKENDS)
async def web(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresFactory,
) -> AsyncIterator[Web]:
    directory = tmp_path_factory.mktemp("pages-visibility")
    settings = await posts_settings(settings_maker(request.param, postgres, directory), directory)
    async with api_client(settings) as client:
        world = await _build(client)
        deleted = {}
        for relationship, pair in world.pairs.items():
            gone = (await post(client, pair.author, "#matrix soon gone"))["id"]
            response = await client.delete(f"/api/v1/statuses/{gone}", headers=pair.author.headers)
            assert response.status_code == 200, response.text
            deleted[relationship] = gone
        await client.settle()
        # A browser per viewer, signed in (and one with no session for anonymous).
        browsers = {}
        try:
            for relationship, pair in world.pairs.items():
                browsers[relationship] = new_browser(client)
                if pair.viewer is not None:
                    await sign_in(browsers[relationship], pair.viewer.username)
            yield Web(world, browsers, deleted)
        finally:
            for opened in browsers.values():
                await opened.http.aclose()


def _author(pair: Pair) -> str:
    return pair.author.username


def _post_path(pair: Pair, status_id: str) -> str:
    return f"/@{_author(pair)}/{status_id}"


#: What a page says about one matrix cell: True shown, False hidden, None needs a session.
Check = Callable[[Web, Pair, Browser], Awaitable[bool | None]]


def _page(status_id: Callable[[Web, Pair], str]) -> Check:
    """A status's own page: shown (200, or a comment's redirect to its post) or 404."""

    async def check(web: Web, pair: Pair, viewer: Browser) -> bool:
        sid = status_id(web, pair)
        response = await viewer.get(f"/@someone/{sid}")
        if response.status_code == 404:
            assert response.headers["content-type"].startswith("text/html")
            assert "Page not found" in response.text
            return False
        assert response.status_code in (200, 303), response.text
        if response.status_code == 303:  # to its canonical address, or its post's
            response = await viewer.get(response.headers["location"])
            assert response.status_code in (200, 303), response.text
            if response.status_code == 303:
                response = await viewer.get(response.headers["location"])
        assert response.status_code == 200, response.text
        return True

    return check


def _listed(path: Callable[[Web, Pair], str], which: str) -> Check:
    """Whether a page that lists posts links to ``which`` of the pair's posts."""

    async def check(web: Web, pair: Pair, viewer: Browser) -> bool | None:
        response = await viewer.get(path(web, pair))
        if response.status_code == 303 and response.headers["location"].startswith("/signin"):
            return None
        if response.status_code == 404:
            return False
        assert response.status_code == 200, response.text
        return _post_path(pair, getattr(pair, which)) in response.text

    return check


async def _likers(web: Web, pair: Pair, viewer: Browser) -> bool:
    response = await viewer.get(f"{_post_path(pair, pair.public)}/likes")
    if response.status_code == 404:
        return False
    assert response.status_code == 200
    assert f'href="/@{web.world.neutral.username}"' in response.text
    return True


async def _like(web: Web, pair: Pair, viewer: Browser) -> bool | None:
    path = _post_path(pair, pair.public)
    if pair.viewer is None:
        response = await viewer.http.get(path)
        return None if response.status_code in (200, 404) else False
    # The form comes from the viewer's home page: the post's own page may be hidden.
    response = await viewer.submit(f"{path}/like", page="/")
    assert response.status_code in (303, 404), response.text
    return response.status_code == 303


async def _comment(web: Web, pair: Pair, viewer: Browser) -> bool | None:
    if pair.viewer is None:
        return None
    path = _post_path(pair, pair.private)
    response = await viewer.submit(f"{path}/comment", {"text": "hi from the web"}, page="/")
    assert response.status_code in (303, 404), response.text
    return response.status_code == 303


async def _notified(web: Web, pair: Pair, viewer: Browser) -> bool | None:
    response = await viewer.get("/notifications")
    if response.status_code == 303:
        return None
    assert response.status_code == 200
    return f'href="/@{_author(pair)}"' in response.text


CHECKS: dict[str, Check] = {
    "status: public post": _page(lambda w, p: p.public),
    "status: private post": _page(lambda w, p: p.private),
    "status: comment on public": _page(lambda w, p: p.on_public),
    "status: comment on private": _page(lambda w, p: p.on_private),
    "status: author's comment": _page(lambda w, p: p.by_author),
    "home: public post": _listed(lambda w, p: "/", "public"),
    "home: private post": _listed(lambda w, p: "/", "private"),
    "account: public post": _listed(lambda w, p: f"/@{_author(p)}", "public"),
    "account: private post": _listed(lambda w, p: f"/@{_author(p)}", "private"),
    "public: public post": _listed(lambda w, p: "/explore", "public"),
    "public: private post": _listed(lambda w, p: "/explore", "private"),
    "tag: public post": _listed(lambda w, p: "/tags/matrix", "public"),
    "tag: private post": _listed(lambda w, p: "/tags/matrix", "private"),
    "favourited_by: author's post": _likers,
    "like: public post": _like,
    "comment: private post": _comment,
}


def _expected(check: str, relationship: str) -> bool | None:
    if check == "notified":
        rows = [MATRIX[name] for name in MATRIX if name.startswith("notified:")]
        cells = {row[RELATIONSHIPS.index(relationship)] for row in rows}
        return None if cells == {None} else True in cells
    return MATRIX[check][RELATIONSHIPS.index(relationship)]


@pytest.mark.parametrize("relationship", RELATIONSHIPS)
async def test_pages_follow_the_visibility_matrix(web: Web, relationship: str) -> None:
    pair = web.world.pairs[relationship]
    viewer = web.browsers[relationship]
    wrong = []
    checks: list[tuple[str, Check]] = [*CHECKS.items(), ("notified", _notified)]
    for name, check in checks:
        expected = _expected(name, relationship)
        try:
            seen = await check(web, pair, viewer)
        except AssertionError as failed:
            wrong.append(f"{name}: {failed}")
            continue
        if seen is not expected:
            wrong.append(f"{name}: expected {expected}, got {seen}")
    assert not wrong, f"{relationship}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("relationship", RELATIONSHIPS)
async def test_every_page_answers_without_a_server_error(web: Web, relationship: str) -> None:
    """Each page a viewer in this relationship can open about the author, and the
    deleted post (gone for everyone, its author too)."""
    pair = web.world.pairs[relationship]
    viewer = web.browsers[relationship]
    author = _author(pair)
    for path in (
        f"/@{author}",
        f"/@{author}/followers",
        f"/@{author}/following",
        f"/@{author}/{pair.public}/likes",
        f"/@{author}/{pair.private}/likes",
        "/explore",
        "/tags/matrix",
        "/notifications",
        "/follow_requests",
        "/settings",
        "/new",
        "/",
    ):
        response = await viewer.get(path)  # asserts no 5xx
        assert response.status_code in (200, 303, 404), f"{path}: {response.status_code}"
        if response.status_code != 303:
            assert response.headers["content-type"].startswith("text/html")
    gone = await viewer.get(_post_path(pair, web.deleted[relationship]))
    assert gone.status_code == 404
    blocked = await viewer.get(f"/@{author}")
    assert blocked.status_code == (404 if relationship == "blocked" else 200)
    if relationship == "blocking":
        assert "You blocked" in blocked.text


async def test_a_private_account_asks_and_its_owner_answers(web: Web) -> None:
    """The pending viewer's request is on the author's follow requests page, and
    accepting it there makes the followers-only post visible."""
    pair = web.world.pairs["pending"]
    assert pair.viewer is not None
    async with browser(web.world.client) as owner:
        await sign_in(owner, pair.author.username)
        requests = await owner.get("/follow_requests")
        assert f'href="/@{pair.viewer.username}"' in requests.text
        viewer = web.browsers["pending"]
        profile = await viewer.get(f"/@{pair.author.username}")
        assert "This account is private" in profile.text
        assert "Cancel request" in profile.text
        accepted = await owner.submit(
            f"/follow_requests/{pair.viewer.id}/authorize", page="/follow_requests"
        )
        assert accepted.status_code == 303
        await web.world.client.settle()
        shown = await viewer.get(_post_path(pair, pair.private))
        assert shown.status_code == 200
        # Back as it was, for the other tests of the module.
        await act(web.world.client, pair.viewer, f"/api/v1/accounts/{pair.author.id}/unfollow")
        await act(web.world.client, pair.viewer, f"/api/v1/accounts/{pair.author.id}/follow")
        await web.world.client.settle()
