from __future__ import annotations

import pytest

from photogram.settings import Settings
from tests.api import api_client
from tests.conftest import MakeSettings


async def test_instance_v1_and_v2(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings(instance_title="Lens Club")) as client:
        await client.sign_up("alice")
        v1 = (await client.get("/api/v1/instance")).json()
        v2 = (await client.get("/api/v2/instance")).json()
    for body in (v1, v2):
        assert body["title"] == "Lens Club"
        assert body["version"].startswith("4.3.0 (compatible; photogram ")
        assert body["configuration"]["statuses"]["max_media_attachments"] == 10
        assert "image/jpeg" in body["configuration"]["media_attachments"]["supported_mime_types"]
    assert v1["stats"]["user_count"] == 1
    assert v2["usage"]["users"]["active_month"] == 1
    assert v2["registrations"]["enabled"] is True


async def test_rate_limit_per_token_and_address(tmp_path: object) -> None:
    settings = Settings(
        data_dir=tmp_path,  # type: ignore[arg-type]
        rate_limit_per_ip=30,
        rate_limit_per_token=5,
    )
    async with api_client(settings) as client:
        alice = await client.sign_up("alice")
        statuses = []
        for _ in range(6):
            response = await client.get(
                "/api/v1/accounts/verify_credentials", headers=alice.headers
            )
            statuses.append(response.status_code)
            if response.status_code == 200:
                assert int(response.headers["x-ratelimit-limit"]) == 5
        assert statuses[-1] == 429
        assert 200 in statuses
        refused = response.json()
        assert refused == {"error": "Too many requests"}
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert int(response.headers["retry-after"]) >= 1

        # Without a token the address budget applies, and it runs out too.
        codes = [(await client.get("/api/v1/instance")).status_code for _ in range(40)]
        assert codes[-1] == 429
        assert (await client.get("/healthz")).status_code == 200  # never limited


@pytest.mark.parametrize("path", ["/api/v1/instance", "/api/v2/instance"])
async def test_instance_needs_no_token(make_settings: MakeSettings, path: str) -> None:
    async with api_client(await make_settings()) as client:
        response = await client.get(path)
        assert response.status_code == 200
        assert "x-ratelimit-remaining" in response.headers
