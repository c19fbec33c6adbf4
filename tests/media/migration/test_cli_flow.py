"""The whole migration through its CLI, with the app serving photos all along."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from photogram.db.metadata import media_objects
from photogram.settings import Settings
from tests.accounts.images import quadrant_jpeg
from tests.api import Client, User, api_client
from tests.conftest import sqlite_settings
from tests.test_cli import env_for, one_line_error, photogram

STORES = {
    "old": {"kind": "filesystem", "path": "old"},
    "new": {"kind": "filesystem", "path": "new"},
}


def _settings(tmp_path: Path) -> Settings:
    return sqlite_settings(
        tmp_path,
        media_stores=STORES,
        media_store="old",
        media_migration_refresh_seconds=0.1,
        media_migration_orphan_grace_seconds=0,
    )


async def _upload(client: Client, user: User, seed: int) -> dict:  # type: ignore[type-arg]
    response = await client.post(
        "/api/v2/media",
        headers=user.headers,
        files={"file": ("p.jpg", quadrant_jpeg(400 + seed, 300), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _records(client: Client) -> dict[str, str]:
    found: dict[str, str] = {}
    router = client.runtime.router
    for shard in range(router.logical_shards):
        async with router.connect(shard) as conn:
            for row in await conn.execute(select(media_objects.c.key, media_objects.c.md5)):
                found[row.key] = row.md5
    return found


def _held(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


async def test_migrate_through_every_phase(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    env = env_for(
        settings,
        PHOTOGRAM_MEDIA_STORES=json.dumps(STORES),
        PHOTOGRAM_MEDIA_STORE="old",
        PHOTOGRAM_MEDIA_MIGRATION_REFRESH_SECONDS="0.1",
        PHOTOGRAM_MEDIA_MIGRATION_ORPHAN_GRACE_SECONDS="0",
    )
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        before = [await _upload(client, alice, n) for n in range(3)]

        one_line_error(
            await photogram("media", "migrate", "start", "--to", "nowhere", env=env),
            "unknown media store 'nowhere'",
        )
        one_line_error(
            await photogram("media", "migrate", "ramp", "50", env=env), "no migration is under way"
        )
        ran = await photogram("media", "migrate", "start", "--to", "new", env=env)
        assert ran.code == 0, ran.err
        one_line_error(await photogram("media", "migrate", "verify", env=env), "backfill")
        during = await _upload(client, alice, 10)
        ran = await photogram("media", "migrate", "backfill", env=env)
        assert ran.code == 0, ran.err
        ran = await photogram("media", "migrate", "verify", env=env)
        assert ran.code == 0, ran.err
        for percent in ("10", "100"):
            ran = await photogram("media", "migrate", "ramp", percent, env=env)
            assert ran.code == 0, ran.err
        ran = await photogram("media", "migrate", "promote", env=env)
        assert ran.code == 0, ran.err
        one_line_error(await photogram("media", "migrate", "retire", env=env), "verif")
        ran = await photogram("media", "migrate", "verify", env=env)
        assert ran.code == 0, ran.err
        ran = await photogram("media", "migrate", "status", "--json", env=env)
        assert ran.code == 0, ran.err
        status = ran.json
        assert status["phase"] == "new_primary", status  # type: ignore[index]
        ran = await photogram("media", "migrate", "retire", env=env)
        assert ran.code == 0, ran.err
        await client.runtime.media.refresh()
        after = await _upload(client, alice, 20)
        records = await _records(client)
        held = _held(tmp_path / "new")
        assert {k: held.get(k) for k in records} == records
        for attachment in (*before, during, after):
            parts = urlsplit(attachment["url"])
            fetched = await client.get(f"{parts.path}?{parts.query}")
            assert fetched.status_code == 200
