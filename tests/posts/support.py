"""Helpers for tests of posts: an instance with media, photos to post, and posting them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from httpx import Response

from photogram.settings import Settings
from tests.accounts.images import quadrant_jpeg
from tests.api import Client, User
from tests.conftest import MakeSettings, PostgresFactory, sqlite_settings

#: A small photo: processing it is quick, and it is still a real JPEG.
PHOTO = quadrant_jpeg(64, 48)


async def posts_settings(make_settings: MakeSettings, tmp_path: Path, **extra: object) -> Settings:
    """Settings for the backend under test (media and spool in the test's own directory)."""
    return await make_settings(**extra)


def settings_maker(backend: str, postgres: PostgresFactory, directory: Path) -> MakeSettings:
    """What ``make_settings`` gives a test, for fixtures of a wider scope: ``backend``'s
    settings (``posts_settings(settings_maker(…), directory)`` keeps media in ``directory``)."""

    async def make(**extra: object) -> Settings:
        if backend == "sqlite":
            return sqlite_settings(directory, **extra)
        return await postgres.cluster_settings(**extra)

    return make


async def upload(client: Client, user: User, description: str = "") -> str:
    response = await client.post(
        "/api/v2/media",
        headers=user.headers,
        files={"file": ("photo.jpg", PHOTO, "image/jpeg")},
        data={"description": description} if description else {},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def post(
    client: Client, user: User, caption: str = "", photos: int = 1, **fields: Any
) -> dict[str, Any]:
    """Upload ``photos`` photos and post them with ``caption``; the Status."""
    media_ids = [await upload(client, user) for _ in range(photos)]
    response = await client.post(
        "/api/v1/statuses",
        headers=user.headers,
        json={"status": caption, "media_ids": media_ids, **fields},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def comment(client: Client, user: User, on: str, text: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/statuses",
        headers=user.headers,
        json={"status": text, "in_reply_to_id": on, **fields},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(response: Response) -> list[str]:
    """The IDs of a list response (statuses or accounts), in order."""
    assert response.status_code == 200, response.text
    return [str(item["id"]) for item in response.json()]


async def act(client: Client, user: User, path: str, **data: str) -> dict[str, Any]:
    """POST ``path`` as ``user`` (follow, block, favourite…), expecting success."""
    response = await client.post(path, headers=user.headers, data=data)
    assert response.status_code == 200, f"{path}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


async def lock(client: Client, user: User) -> None:
    response = await client.patch(
        "/api/v1/accounts/update_credentials", headers=user.headers, data={"locked": "true"}
    )
    assert response.status_code == 200, response.text


async def walk(client: Client, user: User | None, path: str, rel: str = "next") -> list[list[str]]:
    """The pages of a list, following its Link header's ``rel`` until a page is empty or
    has no such link; each page's IDs."""
    headers = user.headers if user else {}
    pages: list[list[str]] = []
    url: str | None = path
    while url is not None:
        response = await client.get(url, headers=headers)
        page = ids(response)
        if not page:
            break
        pages.append(page)
        url = response.links.get(rel, {}).get("url")
        assert len(pages) < 100, "the Link header goes round in circles"
    return pages
