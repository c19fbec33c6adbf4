"""Helpers for tests of posts: an instance with media, photos to post, and posting them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from photogram.settings import Settings
from tests.accounts.images import quadrant_jpeg
from tests.api import Client, User
from tests.conftest import MakeSettings

#: A small photo: processing it is quick, and it is still a real JPEG.
PHOTO = quadrant_jpeg(64, 48)


async def posts_settings(make_settings: MakeSettings, tmp_path: Path, **extra: object) -> Settings:
    """Settings whose media (and spool) live under ``tmp_path`` on either backend."""
    settings = await make_settings(**extra)
    if settings.embedded:
        return settings
    # A cluster's default data_dir is the working directory: keep media in the test's (the
    # default store's path is fixed when settings load, so they load again).
    chosen = {n: getattr(settings, n) for n in settings.model_fields_set if n != "media_stores"}
    return Settings(**chosen | {"data_dir": tmp_path})


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
