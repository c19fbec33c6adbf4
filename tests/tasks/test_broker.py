"""Background work through RabbitMQ and `photogram worker`, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from photogram.db.metadata import outbox
from photogram.feeds.store import feed_key, member
from photogram.posts import timelines
from photogram.runtime import Runtime
from photogram.settings import Settings
from photogram.tasks.admin import dead_tasks
from photogram.tasks.broker import HEARTBEAT_SECONDS
from photogram.web.paging import Page
from tests.api import Client, User, api_client
from tests.feeds.redis import RedisServer
from tests.graph.helpers import assert_converged, sign_up_spread
from tests.posts.support import PHOTO, act, comment, post, upload
from tests.server import free_port
from tests.tasks.conftest import (
    RABBITMQCTL,
    BrokerSettings,
    broker_stopped,
    eventually,
    run_cli,
    running_worker,
)

pytestmark = pytest.mark.postgres


async def unfinished(runtime: Runtime) -> list[tuple[int, str, int]]:
    """Outbox rows not done yet: (id, task, attempts)."""
    rows = await runtime.router.scatter(
        select(outbox.c.id, outbox.c.task, outbox.c.attempts)
        .where(outbox.c.done_at.is_(None))
        .order_by(outbox.c.id)
        .limit(1000),
        limit=1000,
        order="asc",
    )
    return [(int(r.id), r.task, int(r.attempts)) for r in rows]


def metric(exposition: str, sample: str) -> float:
    """A sample's value in Prometheus text (0 if absent)."""
    for line in exposition.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def all_done(runtime: Runtime) -> bool:
    return not await unfinished(runtime)


async def notification_types(client: Client, user: User) -> list[str]:
    response = await client.get("/api/v1/notifications", headers=user.headers)
    assert response.status_code == 200, response.text
    return sorted(n["type"] for n in response.json())


async def status_of(client: Client, user: User, status_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/statuses/{status_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_worker_runs_what_the_api_leaves_to_the_background(
    broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    """A worker on another host: it shares no data_dir with the app server, so uploads
    reach it through the private spool store (and leave it once processed)."""
    stores = {
        "photos": {"kind": "filesystem", "path": str(tmp_path / "photos")},
        "spool": {"kind": "filesystem", "path": str(tmp_path / "spool")},
    }
    settings = await broker_settings(
        media_stores=stores, media_store="photos", media_spool_store="spool"
    )
    elsewhere = settings.model_copy(
        update={"data_dir": tmp_path / "worker-host", "log_format": "json"}
    )
    port = free_port()
    with running_worker(elsewhere, "--concurrency", "2", "--metrics-port", str(port)) as worker:
        async with api_client(settings, init=False) as client:
            alice, bob, carol = await sign_up_spread(client, "alice", "bob", "carol")
            await act(client, bob, f"/api/v1/accounts/{alice.id}/follow")
            await act(client, carol, f"/api/v1/accounts/{alice.id}/follow")
            # The upload answers 200 once the worker has processed the photo.
            status = await post(client, alice, "morning light #sea")
            liking = await client.post(
                f"/api/v1/statuses/{status['id']}/favourite",
                headers={**bob.headers, "X-Request-Id": "trace-like-0001"},
            )
            assert liking.headers["x-request-id"] == "trace-like-0001"
            await act(client, carol, f"/api/v1/statuses/{status['id']}/favourite")
            await act(client, carol, f"/api/v1/statuses/{status['id']}/unfavourite")

            await eventually(lambda: all_done(client.runtime), "the outbox drains")
            await assert_converged(client.runtime, [int(u.id) for u in (alice, bob, carol)])
            assert await notification_types(client, alice) == ["favourite", "follow", "follow"]
            seen = await status_of(client, bob, status["id"])
            assert seen["favourites_count"] == 1
            assert seen["media_attachments"][0]["type"] == "image"
            liked = await client.get("/api/v1/favourites", headers=bob.headers)
            assert [s["id"] for s in liked.json()] == [status["id"]]

            published = (await client.get("/metrics")).text
            assert metric(published, 'photogram_tasks_published_total{queue="media"}') >= 1
        async with httpx.AsyncClient() as scraper:
            ran = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
        # The worker is a process of its own: its counters are this test's alone.
        assert (
            metric(ran, 'photogram_tasks_runs_total{outcome="succeeded",task="media.process"}') == 1
        )
        assert "photogram.run" in worker.output()
        # The like's tasks ran on the worker, and their log lines name the request.
        traced = [
            line
            for line in (
                json.loads(text) for text in worker.output().splitlines() if text[:1] == "{"
            )
            if line.get("request_id") == "trace-like-0001"
        ]
        assert any(line.get("task") == "posts.sync_favourites" for line in traced), traced


async def test_writes_succeed_with_the_broker_down_and_nothing_is_lost(
    broker_settings: BrokerSettings,
) -> None:
    """RabbitMQ stopped for a burst of follows, likes, a post, a comment and an upload:
    every request succeeds; once it is back, every task has run, once in effect, and every
    home feed in Redis is what the shards say."""
    redis = RedisServer()
    try:
        settings = await broker_settings(redis_url=redis.url)
        await _burst_while_the_broker_is_down(settings, redis)
    finally:
        redis.stop()


async def _burst_while_the_broker_is_down(settings: Settings, redis: RedisServer) -> None:
    with running_worker(settings, "--concurrency", "2"):
        async with api_client(settings, init=False) as client:
            users = await sign_up_spread(client, "ana", "ben", "cat", "dan")
            ana, others = users[0], users[1:]
            status = await post(client, ana, "before")
            photo = await upload(client, ana)
            for user in others:  # their feeds exist (built on this first read) before
                home = await client.get("/api/v1/timelines/home", headers=user.headers)
                assert home.status_code == 200
            await eventually(lambda: all_done(client.runtime), "sign-ups settle")

            async with broker_stopped():
                for user in others:
                    await act(client, user, f"/api/v1/accounts/{ana.id}/follow")
                    await act(client, user, f"/api/v1/statuses/{status['id']}/favourite")
                during = await client.post(
                    "/api/v1/statuses",
                    headers=ana.headers,
                    json={"status": "while the broker is down", "media_ids": [photo]},
                )
                assert during.status_code == 200, during.text
                await comment(client, others[0], status["id"], "lovely")
                media = await client.post(
                    "/api/v2/media",
                    headers=ana.headers,
                    files={"file": ("p.jpg", PHOTO, "image/jpeg")},
                )
                assert media.status_code == 202, media.text  # accepted; processed later
                assert len(await unfinished(client.runtime)) >= 2 * len(others) + 2

            # Back: the worker's sweep hands everything over, and it all runs.
            await eventually(lambda: all_done(client.runtime), "the outbox drains")
            ready = await client.get(f"/api/v1/media/{media.json()['id']}", headers=ana.headers)
            assert ready.status_code == 200, ready.text

            await assert_converged(client.runtime, [int(u.id) for u in users])
            assert await notification_types(client, ana) == sorted(
                ["favourite"] * 3 + ["follow"] * 3 + ["mention"]
            )
            seen = await status_of(client, ana, status["id"])
            assert (seen["favourites_count"], seen["replies_count"]) == (3, 1)
            for user in others:
                liked = await client.get("/api/v1/favourites", headers=user.headers)
                assert [s["id"] for s in liked.json()] == [status["id"]]

            # The follows merged ana's first post into the feeds, the fan-out the second.
            newest = [int(during.json()["id"]), int(status["id"])]
            for user in others:
                held = redis.client().zrange(feed_key(int(user.id)), 0, -1)
                assert {member(i, int(ana.id)) for i in newest} <= set(held)
                page = Page(limit=40)
                pushed = await timelines.home_ids(client.runtime, int(user.id), page)
                pulled = await timelines.pulled_home_ids(client.runtime, int(user.id), page)
                assert pushed == pulled == newest


async def test_the_first_upload_after_a_broker_restart_is_processed_at_once(
    broker_settings: BrokerSettings,
) -> None:
    """The publisher's connection from before a RabbitMQ restart is dead; the first
    publish after it goes out on a new one instead of failing and leaving the upload to
    the sweep (a 202 where a 200 was due)."""
    settings = await broker_settings()
    with running_worker(settings, "--concurrency", "1"):
        async with api_client(settings, init=False) as client:
            ana = await client.sign_up("ana")
            await upload(client, ana)  # 200: published on the connection it then keeps
            async with broker_stopped():
                pass
            await upload(client, ana)  # 200 again, not 202


async def test_a_worker_consumes_on_a_connection_with_short_heartbeats(
    broker_settings: BrokerSettings,
) -> None:
    """A consuming connection that goes silent (as one can around a broker restart) is
    noticed after two missed heartbeats: seconds, not Celery's default two minutes."""
    settings = await broker_settings()
    assert settings.broker_url is not None
    vhost = settings.broker_url.rsplit("/", 1)[1]

    async def heartbeats() -> list[int] | None:
        listed = (
            await asyncio.to_thread(
                subprocess.run,
                [RABBITMQCTL, "list_connections", "-q", "vhost", "timeout"],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
        ).stdout
        found = [
            int(t)
            for v, _, t in (line.partition("\t") for line in listed.splitlines())
            if v == vhost and t.strip().isdigit() and int(t) > 0
        ]
        return found or None

    with running_worker(settings, "--concurrency", "1"):
        assert await eventually(heartbeats, "the worker's consuming connection") == [
            HEARTBEAT_SECONDS
        ]


async def test_a_task_that_keeps_failing_is_dead_until_an_operator_retries_it(
    broker_settings: BrokerSettings,
) -> None:
    """An upload with no worker running answers 202, and is processed once one starts.
    Then the media store breaks: processing fails, is retried with backoff, then is dead
    and listed; once the store is mended, `photogram tasks retry` runs it again."""
    settings = await broker_settings(task_max_attempts=2, media_wait_seconds=0.5)
    media_dir = settings.data_dir / "media"
    async with api_client(settings, init=False) as client:
        ana = await client.sign_up("ana")
        early = await client.post(
            "/api/v2/media",
            headers=ana.headers,
            files={"file": ("p.jpg", PHOTO, "image/jpeg")},
        )
        assert early.status_code == 202  # accepted; it waits in the queue
        with running_worker(settings, "--concurrency", "1"):
            await eventually(lambda: all_done(client.runtime), "the queue drains")
            ready = await client.get(f"/api/v1/media/{early.json()['id']}", headers=ana.headers)
            assert ready.status_code == 200
            shutil.rmtree(media_dir, ignore_errors=True)
            media_dir.write_bytes(b"not a directory")  # every write to the store fails

            response = await client.post(
                "/api/v2/media",
                headers=ana.headers,
                files={"file": ("p.jpg", PHOTO, "image/jpeg")},
            )
            assert response.status_code == 202, response.text
            media_id = response.json()["id"]

            async def dead() -> bool:
                return bool(await dead_tasks(client.runtime.router))

            await eventually(dead, "the processing task is dead")
            listed = run_cli(settings, "tasks", "dead", "--json")
            assert listed.returncode == 0, listed.stderr
            (task,) = json.loads(listed.stdout)
            assert task["task"] == "media.process"
            assert task["queue"] == "media"
            assert task["attempts"] == 2
            assert task["payload"] == {"media_id": int(media_id)}
            assert task["request_id"]  # the upload that queued it, as its log lines say
            assert task["last_error"]

            media_dir.unlink()  # mended
            retried = run_cli(settings, "tasks", "retry", task["id"])
            assert retried.returncode == 0, retried.stderr
            assert "1 tasks retried" in retried.stdout
            await eventually(lambda: all_done(client.runtime), "the retried task runs")
            ready = await client.get(f"/api/v1/media/{media_id}", headers=ana.headers)
            assert ready.status_code == 200, ready.text
            assert run_cli(settings, "tasks", "dead", "--json").stdout.strip() == "[]"

            again = run_cli(settings, "tasks", "retry", task["id"])
            assert again.returncode == 1
            assert again.stderr.strip() == f"photogram: error: not dead tasks: {task['id']}"
