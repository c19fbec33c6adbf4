"""Counts stay exact when many people like, unlike and comment at the same moment."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from photogram.db.metadata import account_favourites, favourites, statuses
from tests.api import Client, User, api_client
from tests.conftest import MakeSettings
from tests.posts.support import ids, post, posts_settings

PEOPLE = 30


async def _press(client: Client, user: User, sid: str, verb: str) -> None:
    response = await client.post(f"/api/v1/statuses/{sid}/{verb}", headers=user.headers)
    assert response.status_code == 200, response.text


async def _likes(client: Client, sid: str) -> tuple[int, int]:
    """The status's favourites_count and its number of favourites rows."""
    status_id = int(sid)
    async with client.runtime.router.connect_for(status_id) as conn:
        counted = await conn.scalar(
            select(statuses.c.favourites_count).where(statuses.c.id == status_id)
        )
        rows = await conn.scalar(
            select(func.count()).select_from(favourites).where(favourites.c.status_id == status_id)
        )
    return int(counted or 0), int(rows or 0)


async def test_concurrent_likes_and_unlikes(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        author = await client.sign_up("author")
        sid = (await post(client, author))["id"]
        people = await asyncio.gather(*(client.sign_up(f"fan{n}") for n in range(PEOPLE)))
        stays = people[: PEOPLE // 2]  # like, unlike, like: end liked
        leaves = people[PEOPLE // 2 :]  # like, unlike: end not liked

        async def like_unlike_like(user: User) -> None:
            for verb in ("favourite", "unfavourite", "favourite"):
                await _press(client, user, sid, verb)

        async def like_unlike(user: User) -> None:
            for verb in ("favourite", "unfavourite"):
                await _press(client, user, sid, verb)

        async def like_twice_at_once(user: User) -> None:
            await asyncio.gather(*(_press(client, user, sid, "favourite") for _ in range(2)))

        await asyncio.gather(
            *(like_unlike_like(u) for u in stays),
            *(like_unlike(u) for u in leaves),
            *(like_twice_at_once(u) for u in people[:5]),
        )
        assert await _likes(client, sid) == (len(stays), len(stays))
        seen = await client.get(f"/api/v1/statuses/{sid}", headers=author.headers)
        assert seen.json()["favourites_count"] == len(stays)
        likers = ids(await client.get(f"/api/v1/statuses/{sid}/favourited_by?limit=80"))
        assert sorted(likers) == sorted(u.id for u in stays)

        # Each liker's own list follows once the background sync has run.
        await client.settle()
        for user in people:
            async with client.runtime.router.connect_for(int(user.id)) as conn:
                mirrored = list(
                    await conn.scalars(
                        select(account_favourites.c.target_id).where(
                            account_favourites.c.account_id == int(user.id)
                        )
                    )
                )
            assert mirrored == ([int(sid)] if user in stays else []), user.username
            listed = ids(await client.get("/api/v1/favourites", headers=user.headers))
            assert listed == ([sid] if user in stays else []), user.username

        # Everyone unlikes at once: nothing left, and the count never goes below zero.
        await asyncio.gather(*(_press(client, u, sid, "unfavourite") for u in people * 2))
        assert await _likes(client, sid) == (0, 0)


async def test_concurrent_comments(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with api_client(await posts_settings(make_settings, tmp_path)) as client:
        author = await client.sign_up("author")
        sid = (await post(client, author))["id"]
        people = await asyncio.gather(*(client.sign_up(f"fan{n}") for n in range(PEOPLE)))

        async def say(user: User, text: str, on: str = sid) -> str:
            response = await client.post(
                "/api/v1/statuses",
                headers=user.headers,
                json={"status": text, "in_reply_to_id": on},
            )
            assert response.status_code == 200, response.text
            return str(response.json()["id"])

        written = await asyncio.gather(*(say(u, f"{u.username} was here") for u in people))
        assert len(set(written)) == PEOPLE
        seen = await client.get(f"/api/v1/statuses/{sid}")
        assert seen.json()["replies_count"] == PEOPLE
        thread = (await client.get(f"/api/v1/statuses/{sid}/context")).json()
        assert sorted(s["id"] for s in thread["descendants"]) == sorted(written)

        # Replies to one comment while others are deleted: both counts stay exact.
        first = written[0]
        doomed = written[1 : PEOPLE // 2]
        deletions = [
            client.delete(f"/api/v1/statuses/{c}", headers=people[written.index(c)].headers)
            for c in doomed
        ]
        answers, removed = await asyncio.gather(
            asyncio.gather(*(say(u, "indeed", on=first) for u in people)),
            asyncio.gather(*deletions),
        )
        assert all(r.status_code == 200 for r in removed)
        assert len(set(answers)) == PEOPLE
        on_post = (await client.get(f"/api/v1/statuses/{sid}")).json()
        assert on_post["replies_count"] == PEOPLE - len(doomed)
        on_first = (await client.get(f"/api/v1/statuses/{first}")).json()
        assert on_first["replies_count"] == PEOPLE
        async with client.runtime.router.connect_for(int(sid)) as conn:
            rows = await conn.scalar(
                select(func.count())
                .select_from(statuses)
                .where(statuses.c.post_id == int(sid), statuses.c.id != int(sid))
            )
        assert rows == PEOPLE - len(doomed) + PEOPLE
