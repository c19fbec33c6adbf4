"""A feature gate in use: home timelines from Redis for a share of accounts."""

from __future__ import annotations

from photogram.gates import bucket, set_gate
from tests.api import api_client
from tests.conftest import MakeSettings
from tests.feeds.support import home_reads
from tests.posts.support import act, post


async def test_gate_ramps_push_feeds_by_account(
    make_settings: MakeSettings, redis_url: str
) -> None:
    async with api_client(await make_settings(redis_url=redis_url)) as client:
        author = await client.sign_up("author")
        readers = [await client.sign_up(f"reader{n}") for n in range(8)]
        for reader in readers:
            await act(client, reader, f"/api/v1/accounts/{author.id}/follow")
        await post(client, author, "hello")
        await client.settle()

        async def pushed_share(percent: int) -> set[str]:
            async with client.runtime.router.global_begin() as conn:
                await set_gate(conn, "home.push_feeds", percent, "user")
            await client.runtime.gates.refresh()
            pushed = set()
            for reader in readers:
                before = home_reads("feed", "rebuilt", "horizon", "shards")
                response = await client.get("/api/v1/timelines/home", headers=reader.headers)
                assert response.status_code == 200
                assert [s["content"] for s in response.json()] == ["<p>hello</p>"]
                if home_reads("feed", "rebuilt", "horizon", "shards") > before:
                    pushed.add(reader.id)
            return pushed

        # Unset, the gate is at its default (on); at 0% nobody, at 100% everybody; between,
        # exactly the accounts whose bucket is under the percentage, the same ones as it grows.
        assert len(await pushed_share(100)) == len(readers)
        assert await pushed_share(0) == set()
        half = await pushed_share(50)
        assert half == {r.id for r in readers if bucket("home.push_feeds", r.id) < 50}
        assert half <= await pushed_share(80)
