"""``photogram demo``: a community that looks alive, whose rows are the ones users make."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Select, Table, select

from photogram import demo
from photogram.accounts.actions import USERNAME
from photogram.db.metadata import (
    account_favourites,
    accounts,
    favourites,
    follow_requests_in,
    follow_requests_out,
    followers,
    follows,
    media_attachments,
    media_objects,
    notifications,
    shard_data_tables,
    status_mentions,
    status_tags,
    statuses,
)
from photogram.db.router import Router
from photogram.posts import text
from photogram.runtime import Runtime
from photogram.settings import Settings
from tests.api import api_client, bearer
from tests.conftest import MakeSettings, init_test_cluster
from tests.posts.support import posts_settings
from tests.test_cli import env_for, one_line_error, photogram

FAST = {"password_time_cost": 1, "password_memory_kib": 8}
FAST_ENV = {"PHOTOGRAM_PASSWORD_TIME_COST": "1", "PHOTOGRAM_PASSWORD_MEMORY_KIB": "8"}


# --- the plan ---------------------------------------------------------------------------------


def test_the_plan_is_reproducible_and_keeps_to_the_rules() -> None:
    plan = demo.make_plan(11, 60, 150)
    assert plan == demo.make_plan(11, 60, 150)
    assert plan != demo.make_plan(12, 60, 150)
    names = [p.username for p in plan.people]
    assert len(set(names)) == len(names)
    assert all(USERNAME.fullmatch(n) and n == n.lower() for n in names)
    assert any(p.locked for p in plan.people)
    assert all(len(p.display_name) <= 30 for p in plan.people)
    fans = plan.followers_of()
    for me, (approved, pending) in enumerate(zip(plan.following, plan.requested, strict=True)):
        assert me not in approved
        assert me not in pending
        assert not set(approved) & set(pending)
        assert len(set(approved)) == len(approved)
        assert all(plan.people[t].locked for t in pending)  # only locked accounts make requests
    # About the asked-for number of follows each (a quarter of 60 by default).
    assert 10 <= plan.follow_count / len(plan.people) <= 20
    assert any(len(p.photos) > 1 for p in plan.posts)  # carousels
    assert any(text.hashtags(p.caption) for p in plan.posts)
    assert any(text.mentions(p.caption) for p in plan.posts)
    for post in plan.posts:
        audience = set(fans[post.author])
        assert post.author not in post.likers
        assert len(set(post.likers)) == len(post.likers)
        if plan.people[post.author].locked:  # followers-only: only followers see it
            assert set(post.likers) <= audience
        for comment in post.comments:
            if comment.parent is None:
                assert comment.author in audience
            else:
                assert comment.author == post.author
                assert post.comments[comment.parent].parent is None
        assert {plan.photos[i].kind for i in post.photos} == {plan.photos[post.photos[0]].kind}


def test_the_plan_avoids_usernames_already_taken() -> None:
    first = demo.make_plan(5, 10, 0)
    taken = {first.people[0].username, first.people[3].username.upper()}
    again = demo.make_plan(5, 10, 0, taken=taken)
    assert not {p.username for p in again.people} & {t.lower() for t in taken}


@pytest.mark.parametrize(
    ("users", "posts", "follows", "message"),
    [(1, 10, None, "at least 2 users"), (5, -1, None, "negative"), (5, 5, 5, "from 0 to 4")],
)
def test_impossible_plans_are_refused(
    users: int, posts: int, follows: int | None, message: str
) -> None:
    with pytest.raises(demo.DemoError, match=message):
        demo.make_plan(1, users, posts, follows)


def test_photos_differ_and_are_jpegs() -> None:
    plan = demo.make_plan(3, 10, 12, photo_size=200)
    drawn = [demo.render(spec) for spec in plan.photos[:8]]
    assert all(d.startswith(b"\xff\xd8\xff") for d in drawn)
    assert len({hashlib.md5(d).hexdigest() for d in drawn}) == len(drawn)
    assert demo.render(plan.photos[0]) == drawn[0]
    assert all(spec.description for spec in plan.photos)


# --- rows -----------------------------------------------------------------------------------


async def all_rows(router: Router, stmt: Select[Any]) -> list[Any]:
    """``stmt`` on every logical shard (once on SQLite, where they share one schema)."""
    if router.engine_for(0).dialect.name == "sqlite":
        async with router.connect(0) as conn:
            return list((await conn.execute(stmt)).all())
    rows: list[Any] = []
    for shard in range(router.logical_shards):
        async with router.connect(shard) as conn:
            rows += (await conn.execute(stmt)).all()
    return rows


async def table(router: Router, t: Table) -> list[Any]:
    return await all_rows(router, select(t))


async def check_consistent(router: Router) -> dict[str, int]:
    """Every counter matches its rows and every mirror its authoritative side; the census."""
    people = await table(router, accounts)
    posts = await table(router, statuses)
    likes = await table(router, favourites)
    follow_rows = await table(router, follows)
    requests = await table(router, follow_requests_out)
    top = [s for s in posts if s.in_reply_to_id is None]
    for account in people:
        assert account.statuses_count == sum(s.account_id == account.id for s in top)
        assert account.following_count == sum(f.account_id == account.id for f in follow_rows)
        assert account.followers_count == sum(f.target_id == account.id for f in follow_rows)
        assert (account.last_status_at is not None) == (account.statuses_count > 0)
    mirrored = {(r.id, r.target_id, r.account_id) for r in await table(router, followers)}
    assert mirrored == {(f.id, f.account_id, f.target_id) for f in follow_rows}
    asked = {(r.id, r.target_id, r.account_id) for r in await table(router, follow_requests_in)}
    assert asked == {(r.id, r.account_id, r.target_id) for r in requests}
    liked = {(r.id, r.account_id, r.target_id) for r in await table(router, account_favourites)}
    assert liked == {(r.id, r.account_id, r.status_id) for r in likes}
    for status in posts:
        assert status.favourites_count == sum(r.status_id == status.id for r in likes)
        assert status.replies_count == sum(s.in_reply_to_id == status.id for s in posts)
    tags = {(r.tag, r.status_id) for r in await table(router, status_tags)}
    assert tags == {
        (tag, s.id) for s in top if s.visibility == "public" for tag in text.hashtags(s.text)
    }
    media = {r.id: r for r in await table(router, media_attachments)}
    objects = Counter(r.media_id for r in await table(router, media_objects))
    for status in top:
        assert status.media_ids
        for media_id in map(int, status.media_ids):
            assert media[media_id].status_id == status.id
            assert media[media_id].state == "ready"
            assert objects[media_id] == 5  # original, 1080, 640, 320, thumb
    return {
        "users": len(people),
        "locked": sum(a.locked for a in people),
        "follows": len(follow_rows),
        "pending_requests": len(requests),
        "posts": len(top),
        "photos": sum(len(s.media_ids) for s in top),
        "likes": len(likes),
        "comments": len(posts) - len(top),
    }


# --- the command ------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["--actions", "--bulk"])
async def test_demo_makes_a_living_instance(
    make_settings: MakeSettings, tmp_path: Path, writer: str
) -> None:
    settings = await posts_settings(make_settings, tmp_path)
    env = env_for(settings, **FAST_ENV)
    initialised = await photogram("init", "--shards", "16", env=env)
    assert initialised.code == 0, initialised.err
    args = ["demo", "--users", "8", "--posts", "20", "--seed", "3", "--photo-size", "200"]
    made = await photogram(*args, writer, "--json", env=env)
    assert made.code == 0, made.err
    report: dict[str, Any] = made.json  # type: ignore[assignment]
    assert report["writer"] == writer.removeprefix("--")
    assert (report["users"], report["posts"]) == (8, 20)
    assert report["example_email"].endswith("@demo.invalid")

    # A second run is refused whatever the checks below do (they add no account): it
    # starts now, beside them (it is mostly a process starting).
    again = asyncio.create_task(photogram(*args, env=env))
    try:
        await _check_living(settings, report)
    finally:
        refused = await again
    one_line_error(refused, "already has a demo community", "8 accounts")


async def _check_living(settings: Settings, report: dict[str, Any]) -> None:
    """What the demo made, through the API: consistent rows, a timeline, photos."""
    async with api_client(settings, init=False) as client:
        census = await check_consistent(client.runtime.router)
        assert census == {k: report[k] for k in census}
        assert min(census["likes"], census["comments"], census["locked"]) > 0

        app = await client.register_app()
        signed_in = await client.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "username": report["example_email"],
                "password": report["password"],
                "scope": "read",
            },
        )
        assert signed_in.status_code == 200, signed_in.text
        headers = bearer(signed_in.json()["access_token"])
        home = await client.get("/api/v1/timelines/home", headers=headers)
        assert home.status_code == 200, home.text
        assert home.json(), "a demo account's home timeline is empty"

        public = await client.get("/api/v1/timelines/public", params={"limit": 10})
        assert public.status_code == 200, public.text
        assert public.json()
        for status in public.json():
            assert status["account"]["avatar"]
            assert status["media_attachments"]
            for attachment in status["media_attachments"]:
                assert attachment["description"]
                for url in (attachment["url"], attachment["preview_url"]):
                    parts = urlsplit(url)
                    fetched = await client.get(f"{parts.path}?{parts.query}")
                    assert fetched.status_code == 200, url
                    assert fetched.content.startswith(b"\xff\xd8\xff")


async def test_demo_needs_an_initialised_cluster(tmp_path: Path, postgres: Any) -> None:
    settings = await postgres.cluster_settings(data_dir=tmp_path)
    ran = await photogram("demo", "--users", "3", env=env_for(settings))
    one_line_error(ran, "photogram init")


async def test_demo_refuses_what_it_cannot_make(tmp_path: Path) -> None:
    refusals = [
        (["--users", "1"], "at least 2 users"),
        (["--users", "4", "--follows", "9"], "--follows must be from 0 to 3"),
        (["--photo-size", "9000"], "--photo-size must be"),
        (["--password", "short"], "8 to 128 characters"),
    ]
    # At once, each in a directory of its own: each run is mostly a process starting.
    runs = await asyncio.gather(
        *(
            photogram(
                "demo", "--posts", "0", *args, env=env_for(Settings(data_dir=tmp_path / str(n)))
            )
            for n, (args, _) in enumerate(refusals)
        )
    )
    for (args, message), ran in zip(refusals, runs, strict=True):
        assert ran.code != 0, args
        one_line_error(ran, message)


# --- both writers make the same rows ----------------------------------------------------------


async def summary(router: Router) -> dict[str, Any]:
    """What the instance holds, with every ID and time replaced by what they name."""
    people = await table(router, accounts)
    name = {a.id: a.username for a in people}
    posts = await table(router, statuses)
    said = {s.id: (name[s.account_id], s.text) for s in posts}
    media = await table(router, media_attachments)
    media_of = {m.id: said[m.status_id] for m in media}
    for account in people:
        media_of[account.id] = (account.username, "avatar")
    counts = {t.name: len(await table(router, t)) for t in shard_data_tables()}
    del counts["outbox"]  # the actions' background work, done; the bulk writer has none

    def pattern(rows: list[Any]) -> set[frozenset[str]]:
        """Which columns are empty, row by row: the shapes of the rows written."""
        return {frozenset(k for k, v in r._mapping.items() if v is None) for r in rows}

    def row_of(r: Any, *skip: str) -> tuple[Any, ...]:
        return tuple(v for k, v in r._mapping.items() if k not in skip)

    return {
        "counts": counts,
        "accounts": sorted(
            row_of(a, "id", "password_hash", "avatar_key", "created_at", "last_status_at")
            for a in people
        ),
        "statuses": sorted(
            (
                said[s.id],
                said[s.post_id],
                said.get(s.in_reply_to_id),
                name.get(s.in_reply_to_account_id),
                *row_of(s, *(c for c in s._mapping if c.endswith(("id", "_at", "ids")))),
                len(s.media_ids),
            )
            for s in posts
        ),
        "media": sorted(
            (
                media_of[m.id],
                *row_of(m, "id", "account_id", "status_id", "created_at", "processed_at"),
            )
            for m in media
            if m.id in media_of
        )
        + sorted(
            (media_of[o.media_id], o.variant, o.size, o.md5, o.width, o.height, o.content_type)
            for o in await table(router, media_objects)
        ),
        "edges": {
            t.name: sorted((name[r.account_id], name[r.target_id]) for r in await table(router, t))
            for t in (follows, followers, follow_requests_out, follow_requests_in)
        },
        "likes": sorted(
            (name[r.account_id], said[r.status_id]) for r in await table(router, favourites)
        ),
        "mentions": sorted(
            (said[r.status_id], name[r.account_id]) for r in await table(router, status_mentions)
        ),
        "tags": sorted((r.tag, said[r.status_id]) for r in await table(router, status_tags)),
        "notifications": sorted(
            (name[r.account_id], r.type, name[r.from_account_id], said.get(r.status_id))
            for r in await table(router, notifications)
        ),
        "shapes": {
            t.name: pattern(await table(router, t))
            for t in (accounts, statuses, media_attachments, notifications, follows)
        },
    }


async def filled(settings: Settings, plan: demo.Plan, bulk: bool) -> dict[str, Any]:
    await init_test_cluster(settings, 16)
    runtime = await Runtime.open(settings)
    try:
        write = demo.write_in_bulk if bulk else demo.write_with_actions
        await write(runtime, plan, "demo password")
        return await summary(runtime.router)
    finally:
        await runtime.close()


async def test_the_bulk_writer_writes_what_the_actions_write(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    plan = demo.make_plan(0, 9, 14, photo_size=200)
    # A seed whose plan has each kind of row: a pending request, a reply to a comment,
    # @mentions in a caption and in a comment, likes on a locked account's post.
    assert plan.pending_count
    assert any(c.parent is not None for p in plan.posts for c in p.comments)
    assert any(text.mentions(p.caption) for p in plan.posts)
    assert any(text.mentions(c.text) and c.parent is None for p in plan.posts for c in p.comments)
    assert any(plan.people[p.author].locked and p.likers for p in plan.posts)
    by_actions = await filled(
        await posts_settings(make_settings, tmp_path / "a", **FAST), plan, False
    )
    in_bulk = await filled(await posts_settings(make_settings, tmp_path / "b", **FAST), plan, True)
    for part in by_actions:
        assert in_bulk[part] == by_actions[part], part
