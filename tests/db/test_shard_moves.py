"""Moving a logical shard to another database while people keep using the app."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert, text, update

from photogram.db.ids import shard_of
from photogram.db.metadata import outbox, shard_moves
from photogram.db.migrations import init_cluster
from photogram.db.moves import _bump, checksums, plan_rebalance
from photogram.db.router import Router
from photogram.db.shardmap import schema_name
from photogram.errors import DatabaseUnavailableError
from photogram.settings import Settings
from tests.api import Client, User, api_client
from tests.conftest import sqlite_settings
from tests.posts.support import act
from tests.test_cli import env_for, one_line_error, photogram


async def _cluster(postgres: Any, tmp_path: Path) -> Settings:
    return await postgres.cluster_settings(
        data_dir=tmp_path, shard_map_refresh_seconds=0.2, logical_shards=8
    )


async def _shard_checksums(router: Router, shard: int) -> dict[str, tuple[int, str]]:
    async with router.connect(shard) as conn:
        return await checksums(conn, shard)


async def test_a_shard_moves_under_load_with_no_failed_request(
    postgres: Any, tmp_path: Path
) -> None:
    settings = await _cluster(postgres, tmp_path)
    env = env_for(settings, PHOTOGRAM_SHARD_MAP_REFRESH_SECONDS="0.2")
    async with api_client(settings) as client:
        users = [await client.sign_up(f"user{n}") for n in range(6)]
        moving = shard_of(int(users[0].id))
        source = client.runtime.router.shard_map.database_of(moving)
        target = next(name for name in settings.databases if name != source)
        failures: list[str] = []
        named: dict[str, str] = {}  # the last display name each user's write was acknowledged for
        stop = asyncio.Event()

        async def someone(user: User) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                changed = await client.patch(
                    "/api/v1/accounts/update_credentials",
                    headers=user.headers,
                    data={"display_name": f"{user.username} {n}"},
                )
                if changed.status_code == 200:
                    named[user.id] = f"{user.username} {n}"
                else:
                    failures.append(f"update {changed.status_code} {changed.text}")
                for path in (f"/api/v1/accounts/{user.id}", "/api/v1/timelines/home"):
                    read = await client.get(path, headers=user.headers)
                    if read.status_code != 200:
                        failures.append(f"{path} {read.status_code} {read.text}")
                await asyncio.sleep(0.02)

        async def follows(client: Client) -> None:
            for follower in users[1:]:
                await act(client, follower, f"/api/v1/accounts/{users[0].id}/follow")

        load = [asyncio.create_task(someone(u)) for u in users]
        await follows(client)
        await asyncio.sleep(0.5)
        moved = await photogram("shards", "move", str(moving), "--to", target, env=env)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*load)
        assert moved.code == 0, moved.err
        assert "rows verified" in moved.out
        assert failures == []

        router = client.runtime.router
        await router.refresh(force=True)
        assert router.shard_map.database_of(moving) == target
        # Every acknowledged write is there, wherever its account lives now.
        for user in users:
            seen = await client.get(f"/api/v1/accounts/{user.id}")
            assert seen.json()["display_name"] == named[user.id]
        followers = await client.get(f"/api/v1/accounts/{users[0].id}/followers")
        assert len(followers.json()) == len(users) - 1

        # Moving back with nothing else going on leaves every table exactly as it was.
        before = await _shard_checksums(router, moving)
        back = await photogram("shards", "move", str(moving), "--to", source, env=env)
        assert back.code == 0, back.err
        await router.refresh(force=True)
        assert router.shard_map.database_of(moving) == source
        assert await _shard_checksums(router, moving) == before

        one_line_error(
            await photogram("shards", "move", str(moving), "--to", source, env=env),
            "already on",
        )
        one_line_error(
            await photogram("shards", "move", str(moving), "--to", "nowhere", env=env),
            "unknown database 'nowhere'",
        )
        one_line_error(
            await photogram("shards", "move", "99", "--to", target, env=env), "does not exist"
        )
        planned = await photogram("shards", "rebalance", "--plan", "--json", env=env)
        assert planned.code == 0, planned.err
        assert isinstance(planned.json, list)


async def test_a_write_to_a_frozen_shard_waits_out_the_copy_and_no_longer(
    postgres: Any, tmp_path: Path
) -> None:
    """While a move's copy holds the shard's tables, a write waits on its share lock; once
    the lock goes it runs (here the map did not move, so in place). A copy that holds the
    shard longer than shard_move_pause_seconds fails the write as unavailable (a 503)."""
    settings = (await _cluster(postgres, tmp_path)).model_copy(
        update={"shard_move_pause_seconds": 2.0}
    )
    shard = 3
    await init_cluster(settings, 8)
    router = await Router.open(settings)
    try:
        async with router.global_begin() as conn:
            await conn.execute(
                insert(shard_moves).values(
                    shard=shard, target="elsewhere", phase="frozen", started_at=datetime.now(UTC)
                )
            )
            await _bump(conn)
        await router.refresh(force=True)
        assert shard in router.shard_map.frozen
        home = router.shard_map.database_of(shard)

        async def write() -> None:
            async with router.begin(shard) as conn:
                # The wait's bound is not the caller's: its statements wait as usual.
                assert await conn.scalar(text("SHOW lock_timeout")) == "0"
                # A write that changes nothing: what matters is that it may run.
                await conn.execute(
                    update(outbox).where(outbox.c.id == 0).values(attempts=outbox.c.attempts)
                )

        async with router.engines.shard_engines[home].connect() as mover:
            await mover.execute(
                text(f"LOCK TABLE {schema_name(shard)}.shard_migrations IN EXCLUSIVE MODE")
            )
            with pytest.raises(DatabaseUnavailableError, match="is being moved"):
                await write()
            waiting = asyncio.create_task(write())
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await mover.rollback()  # the copy is over
            await waiting
    finally:
        await router.close()


async def test_the_embedded_default_has_nowhere_to_move_a_shard(tmp_path: Path) -> None:
    env = env_for(sqlite_settings(tmp_path))
    assert (await photogram("init", env=env)).code == 0
    one_line_error(await photogram("shards", "move", "0", "--to", "main", env=env), "already on")


@given(
    sizes=st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
    databases=st.integers(1, 4),
    data=st.data(),
)
def test_a_rebalance_plan_only_narrows_the_gap(
    sizes: list[int], databases: int, data: st.DataObject
) -> None:
    names = [f"db{n}" for n in range(databases)]
    placement = tuple(data.draw(st.sampled_from(names)) for _ in sizes)
    by_shard = dict(enumerate(sizes))

    def gap(where: tuple[str, ...]) -> int:
        load = dict.fromkeys(names, 0)
        for shard, size in by_shard.items():
            load[where[shard]] += size
        return max(load.values()) - min(load.values())

    where = list(placement)
    last = gap(placement)
    for move in plan_rebalance(by_shard, placement, names):
        assert where[move.shard] == move.source != move.target
        where[move.shard] = move.target
        now = gap(tuple(where))
        assert now < last
        last = now
