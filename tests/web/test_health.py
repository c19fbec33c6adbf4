from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from photogram.app import create_app
from photogram.db.migrations import init_cluster
from photogram.settings import Settings
from tests.conftest import MakeSettings


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://photogram") as client:
            yield client


async def test_healthy_and_ready(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    await init_cluster(settings, 8)
    async with client_for(settings) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert set(ready.json()["databases"]) == {"global", *settings.shard_dsns}


async def test_not_ready_while_a_shard_database_is_down(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    await init_cluster(settings, 8)
    name = list(settings.shard_dsns)[-1]
    databases = settings.shard_dsns | {name: "postgresql+asyncpg://postgres@127.0.0.1:1/gone"}
    down = settings.model_copy(update={"databases": databases})
    async with client_for(down) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["error"] == f"database unavailable: {name}"
        assert list(body["databases"]) == [name]


async def test_errors_are_json(make_settings: MakeSettings) -> None:
    settings = await make_settings()
    await init_cluster(settings, 8)
    async with client_for(settings) as client:
        missing = await client.get("/no/such/path")
        assert missing.status_code == 404
        assert missing.json() == {"error": "Not Found"}
