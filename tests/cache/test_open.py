"""Choosing the cache from settings, and exporting its counters."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from photogram.cache import (
    LocalLeaseCache,
    MemcachedLeaseCache,
    account_counters_key,
    account_key,
    open_cache,
    relationship_key,
    status_counters_key,
    status_key,
)
from photogram.settings import Settings
from photogram.web import metrics
from tests.cache.conftest import Database


async def test_no_servers_is_the_in_process_cache(tmp_path: pytest.TempPathFactory) -> None:
    cache = open_cache(Settings(data_dir=tmp_path))
    assert isinstance(cache, LocalLeaseCache)
    await cache.close()


async def test_servers_are_memcached(tmp_path: pytest.TempPathFactory) -> None:
    settings = Settings(data_dir=tmp_path, cache_servers=["10.0.0.1:11211", "cache:11211"])
    cache = open_cache(settings)
    assert isinstance(cache, MemcachedLeaseCache)
    assert cache.prefix == "pg1:"
    await cache.close()


@pytest.mark.parametrize("bad", [["cache"], ["cache:"], ["cache:0"], [":11211"], ["a:1", "a:1"]])
def test_bad_server_lists_are_refused(bad: list[str]) -> None:
    with pytest.raises(ValidationError, match="cache_servers"):
        Settings(cache_servers=bad)


def test_one_key_space_per_dataset() -> None:
    keys = [
        account_key(5),
        status_key(5),
        account_counters_key(5),
        status_counters_key(5),
        relationship_key(5, 6),
    ]
    assert len(set(keys)) == len(keys)
    assert status_key(5) == "status:v1:5"
    assert relationship_key(5, 6) != relationship_key(6, 5)


async def test_metrics_endpoint_exports_the_cache_counters(
    tmp_path: pytest.TempPathFactory,
) -> None:
    cache = open_cache(Settings(data_dir=tmp_path))
    await cache.read_through([account_key(1)], Database({account_key(1): "a"}).load)
    app = FastAPI()
    app.include_router(metrics.api)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://photogram") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'photogram_cache_fills_total{dataset="account"}' in response.text
    assert "photogram_cache_server_errors_total" in response.text
    assert "/metrics" not in app.openapi()["paths"]
