"""Shared set-up for the account tests: settings with their own media directory, graph rows."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import blocked_by, blocks, follows
from photogram.settings import FilesystemStoreSettings, Settings
from tests.api import Client
from tests.conftest import MakeSettings

PUBLIC_URL = "https://photogram.test"


async def settings_with_media(
    make_settings: MakeSettings, tmp_path: Path, **extra: object
) -> Settings:
    """Settings for the backend under test, with the public URL the tests expect (each
    backend's data_dir, where the local media store keeps avatars, is fresh already)."""
    return await make_settings(public_url=PUBLIC_URL, **extra)


def avatar_dir(settings: Settings) -> Path:
    store = settings.media_stores[settings.media_store]
    assert isinstance(store, FilesystemStoreSettings)
    return store.path / "avatars"


def stored_avatars(settings: Settings) -> list[str]:
    """Every file in the avatars directory, temporary ones included."""
    directory = avatar_dir(settings)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def block(client: Client, blocker: str, blocked: str) -> None:
    """``blocker`` blocks ``blocked``: both sides of the edge, as the graph code writes them."""
    router = client.runtime.router
    blocker_id, blocked_id = int(blocker), int(blocked)
    async with router.begin_for(blocker_id) as conn:
        await conn.execute(
            insert(blocks).values(
                id=next_id(shard_of(blocker_id)), account_id=blocker_id, target_id=blocked_id
            )
        )
    async with router.begin_for(blocked_id) as conn:
        await conn.execute(
            insert(blocked_by).values(
                id=next_id(shard_of(blocked_id)), account_id=blocked_id, target_id=blocker_id
            )
        )


async def follow(client: Client, follower: str, followee: str) -> None:
    """The follower's side of a follow (all that searching among follows reads)."""
    router = client.runtime.router
    follower_id = int(follower)
    async with router.begin_for(follower_id) as conn:
        await conn.execute(
            insert(follows).values(
                id=next_id(shard_of(follower_id)), account_id=follower_id, target_id=int(followee)
            )
        )
