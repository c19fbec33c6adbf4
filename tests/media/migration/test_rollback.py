"""Rolling the media migration back to legacy from every phase loses nothing.

One instance goes through a migration cycle per phase: start, move forward to the phase
(checking on the way that each step out of order is refused), upload, change avatars and
delete photos there (with the target failing every write for part of it, and in
new_primary the source too), roll back to legacy and carry on there. After each cycle,
once the queued repairs have run: every object the database records is in the source with
its recorded MD5, every photo and avatar is served, and nothing deleted is left in either
store.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from photogram.media.migration import jobs
from photogram.media.migration.phases import MigrationError, Phase
from tests.accounts.images import quadrant_jpeg
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings, sqlite_settings
from tests.media.migration.support import (
    MIGRATION_SETTINGS,
    SOURCE,
    SOURCE_DISK,
    STORES,
    TARGET,
    TARGET_DISK,
    directory,
    drain,
    held,
    no_retry_pauses,
    photo_keys,
    records,
    rollback,
    run_pass,
    set_writes_failing,
    start,
    verify,
)
from tests.test_cli import env_for, one_line_error, photogram

#: The phases a rollback to legacy is taken from, in the order the cycles visit them.
ROLLBACK_FROM = (
    Phase.DUAL_WRITE,
    Phase.BACKFILL,
    Phase.VERIFY,
    Phase.READ_RAMP,
    Phase.NEW_PRIMARY,
)


async def refused(step: Any, *fragments: str) -> None:
    """``step`` (an awaitable) is refused with a one-line MigrationError naming ``fragments``."""
    with pytest.raises(MigrationError) as raised:
        await step
    message = str(raised.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


async def advance(client: Client, to: Phase) -> None:
    """Move a migration just started (dual_write) forward to phase ``to``, as an operator
    would, trying each step out of order first."""
    runtime = client.runtime
    await refused(jobs.enter(runtime, Phase.READ_RAMP, read_percent=10), "cannot go from")
    await refused(jobs.enter(runtime, Phase.NEW_PRIMARY), "cannot go from")
    await refused(jobs.begin_verify(runtime), "backfill")
    await refused(rollback(runtime, Phase.DUAL_WRITE), "not an earlier phase")
    if to is Phase.DUAL_WRITE:
        return
    await jobs.enter(runtime, Phase.BACKFILL)
    await refused(jobs.begin_verify(runtime), "shards")
    await run_pass(runtime, "backfill")
    await refused(jobs.enter(runtime, Phase.READ_RAMP, read_percent=10), "cannot go from")
    if to is Phase.BACKFILL:
        return
    await jobs.begin_verify(runtime)
    await refused(jobs.enter(runtime, Phase.READ_RAMP, read_percent=10), "verification")
    assert await verify(runtime)
    if to is Phase.VERIFY:
        return
    await jobs.enter(runtime, Phase.READ_RAMP, read_percent=50)
    await refused(jobs.enter(runtime, Phase.NEW_PRIMARY), "ramp to 100")
    await refused(jobs.enter(runtime, Phase.RETIRED), "cannot go from")
    if to is Phase.READ_RAMP:
        return
    await jobs.enter(runtime, Phase.READ_RAMP, read_percent=100)
    await jobs.enter(runtime, Phase.NEW_PRIMARY)
    await refused(jobs.enter(runtime, Phase.RETIRED), "no verification pass")
    await refused(rollback(runtime, Phase.RETIRED), "not an earlier phase")


@dataclass
class World:
    """What the users did, to check the stores against."""

    client: Client
    users: list[User] = field(default_factory=list)
    photos: dict[int, User] = field(default_factory=dict)  # live photos and their owner
    deleted: set[str] = field(default_factory=set)  # keys of objects deleted
    uploads: int = 0

    async def upload(self, user: User, *, ready: bool = True) -> int:
        """A photo uploaded through the API; its ID. With ``ready``, it must be processed
        at once (else it may be left processing, as when the primary fails its writes)."""
        self.uploads += 1
        response = await self.client.post(
            "/api/v2/media",
            headers=user.headers,
            files={"file": ("p.jpg", quadrant_jpeg(64 + self.uploads, 48), "image/jpeg")},
        )
        assert response.status_code in ((200,) if ready else (200, 202)), response.text
        media_id = int(response.json()["id"])
        self.photos[media_id] = user
        return media_id

    async def change_avatar(self, user: User) -> None:
        """A new avatar through the API (a new key; the old object is deleted)."""
        old = await self.avatar_key(user)
        self.uploads += 1
        response = await self.client.patch(
            "/api/v1/accounts/update_credentials",
            headers=user.headers,
            files={"avatar": ("a.jpg", quadrant_jpeg(40 + self.uploads, 40), "image/jpeg")},
        )
        assert response.status_code == 200, response.text
        if old is not None:
            self.deleted.add(old)

    async def avatar_key(self, user: User) -> str | None:
        me = await self.client.get("/api/v1/accounts/verify_credentials", headers=user.headers)
        assert me.status_code == 200, me.text
        path = urlsplit(me.json()["avatar"]).path
        return path.removeprefix("/media/") if path.startswith("/media/avatars/") else None

    async def delete(self, media_ids: list[int]) -> None:
        """Post the photos (one owner's) and delete the post, which deletes them."""
        user = self.photos[media_ids[0]]
        keys = set[str]().union(
            *[await photo_keys(self.client.runtime, media_id) for media_id in media_ids]
        )
        posted = await self.client.post(
            "/api/v1/statuses",
            headers=user.headers,
            json={"status": "soon gone", "media_ids": [str(m) for m in media_ids]},
        )
        assert posted.status_code == 200, posted.text
        gone = await self.client.delete(
            f"/api/v1/statuses/{posted.json()['id']}", headers=user.headers
        )
        assert gone.status_code == 200, gone.text
        for media_id in media_ids:
            del self.photos[media_id]
        self.deleted |= keys

    async def fetch(self, url: str) -> int:
        parts = urlsplit(url)
        return (await self.client.get(f"{parts.path}?{parts.query}")).status_code

    async def check_served(self) -> None:
        """Every live photo is ready and its URLs fetch; so does every avatar."""
        for media_id, user in self.photos.items():
            response = await self.client.get(f"/api/v1/media/{media_id}", headers=user.headers)
            assert response.status_code == 200, (media_id, response.text)
            body = response.json()
            for url in (body["url"], body["preview_url"]):
                assert await self.fetch(url) == 200, (media_id, url)
            assert len(await photo_keys(self.client.runtime, media_id)) == 5
        for user in self.users:
            key = await self.avatar_key(user)
            assert key is not None
            assert (await self.client.get(f"/media/{key}")).status_code == 200, key

    async def check_stores(self) -> None:
        """Every recorded object is in the source with its MD5; nothing deleted is anywhere."""
        runtime = self.client.runtime
        recorded = await records(runtime)
        source = held(directory(runtime, SOURCE_DISK))
        target = held(directory(runtime, TARGET_DISK))
        assert {key: source.get(key) for key in recorded} == recorded
        assert not self.deleted & recorded.keys()
        assert not self.deleted & source.keys()
        assert not self.deleted & target.keys()
        live = {key for media_id in self.photos for key in await photo_keys(runtime, media_id)}
        avatars = {await self.avatar_key(user) for user in self.users}
        assert recorded.keys() == live | avatars


async def in_phase(world: World, phase: Phase) -> None:
    """What users do while the migration is in ``phase``, with the target failing every
    write for part of it (and, with the target primary, the source too)."""
    runtime = world.client.runtime
    alice, bob = world.users
    older = next(iter(world.photos))
    fine = await world.upload(alice)
    await world.change_avatar(alice)
    set_writes_failing(runtime, TARGET, True)
    # With the target primary its failure leaves the photo processing, to be finished
    # (in the source) once the migration is rolled back.
    pending = await world.upload(bob, ready=phase is not Phase.NEW_PRIMARY)
    if phase is not Phase.NEW_PRIMARY:
        await world.change_avatar(bob)
        await world.delete([pending])
    await world.delete([older, fine] if world.photos[older] is alice else [fine])
    set_writes_failing(runtime, TARGET, False)
    if phase is Phase.NEW_PRIMARY:
        # The source is the secondary now: its failed writes are queued for repair.
        set_writes_failing(runtime, SOURCE, True)
        await world.upload(alice)
        await world.change_avatar(bob)
        set_writes_failing(runtime, SOURCE, False)
    await world.upload(bob)


async def in_legacy(world: World) -> None:
    alice, bob = world.users
    await world.upload(alice)
    kept = await world.upload(bob)
    await world.change_avatar(bob)
    await world.delete([kept])


async def test_rollback_from_every_phase_loses_nothing(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_retry_pauses(monkeypatch)
    settings = await make_settings(**MIGRATION_SETTINGS)
    async with api_client(settings) as client:
        runtime = client.runtime
        world = World(client)
        world.users = [await client.sign_up("alice"), await client.sign_up("bob")]
        for user in world.users:
            await world.change_avatar(user)
            await world.upload(user)
        await refused(rollback(runtime), "nothing to roll back")

        for phase in ROLLBACK_FROM:
            assert (await start(runtime)).phase is Phase.DUAL_WRITE
            await advance(client, phase)
            assert runtime.media.known_state.phase is phase
            await in_phase(world, phase)
            await rollback(runtime)
            await refused(jobs.enter(runtime, Phase.BACKFILL), "start it again")
            await in_legacy(world)
            await drain(runtime)
            await world.check_served()
            await world.check_stores()

        # And a migration that goes all the way: then there is no way back.
        await start(runtime)
        await advance(client, Phase.NEW_PRIMARY)
        await world.upload(world.users[0])
        assert await verify(runtime)
        await jobs.enter(runtime, Phase.RETIRED)
        await refused(rollback(runtime), "retired", "cannot be rolled back")
        await refused(rollback(runtime, Phase.NEW_PRIMARY), "retired")
        await world.upload(world.users[1])
        await drain(runtime)
        await world.check_served()
        recorded = await records(runtime)
        target = held(directory(runtime, TARGET_DISK))
        assert {key: target.get(key) for key in recorded} == recorded


async def test_the_cli_refuses_a_rollback_that_is_not_back_or_after_retire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_retry_pauses(monkeypatch)
    settings = sqlite_settings(tmp_path, **MIGRATION_SETTINGS)
    env = env_for(
        settings,
        PHOTOGRAM_MEDIA_STORES=json.dumps(STORES),
        PHOTOGRAM_MEDIA_STORE=SOURCE,
        PHOTOGRAM_MEDIA_MIGRATION_REFRESH_SECONDS="0.1",
        PHOTOGRAM_MEDIA_MIGRATION_ORPHAN_GRACE_SECONDS="0",
    )
    async with api_client(settings) as client:
        runtime = client.runtime
        world = World(client)
        world.users = [await client.sign_up("alice")]
        await world.upload(world.users[0])
        await start(runtime)
        await advance(client, Phase.READ_RAMP)
        same, promote = await asyncio.gather(
            photogram("media", "migrate", "rollback", "--to", "read_ramp", env=env),
            photogram("media", "migrate", "promote", env=env),
        )
        one_line_error(same, "cannot roll back from read_ramp to read_ramp")
        one_line_error(promote, "ramp to 100")
        await jobs.enter(runtime, Phase.READ_RAMP, read_percent=100)
        await jobs.enter(runtime, Phase.NEW_PRIMARY)
        assert await verify(runtime)
        await jobs.enter(runtime, Phase.RETIRED)
        one_line_error(await photogram("media", "migrate", "rollback", env=env), "retired")
        state = await runtime.media.refresh()
        assert (state.phase, state.source, state.target) == (Phase.RETIRED, SOURCE, TARGET)
