"""A pool of memcached servers: bulk round trips, and servers that die, stall or return."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from photogram.cache import UNREACHABLE, MemcachedLeaseCache, status_key
from photogram.cache import memcached as memcached_module
from tests.cache.conftest import Database, Memcached

Pool = Callable[..., MemcachedLeaseCache]


class Clock:
    """Time as the cache sees it (for marking servers down and trying them again)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def count_round_trips(cache: MemcachedLeaseCache) -> list[str]:
    """Every round trip the cache makes, by server name."""
    trips: list[str] = []
    exchange = cache._exchange

    async def counting(server: Any, payload: bytes, count: int, **kw: Any) -> Any:
        trips.append(server.name)
        return await exchange(server, payload, count, **kw)

    cache._exchange = counting  # type: ignore[method-assign]
    return trips


@pytest.fixture
async def two_servers(
    memcached: Callable[[], Memcached],
) -> tuple[Memcached, Memcached]:
    return memcached(), memcached()


def server_errors(name: str) -> float:
    return REGISTRY.get_sample_value("photogram_cache_server_errors_total", {"server": name}) or 0


async def test_a_page_is_one_round_trip_per_server(
    pool: Pool, two_servers: tuple[Memcached, Memcached]
) -> None:
    cache = pool([s.address for s in two_servers])
    keys = [status_key(i) for i in range(1, 41)]
    db = Database({key: i for i, key in enumerate(keys)})
    assert {cache.home_of(key) for key in keys} == {s.address for s in two_servers}
    trips = count_round_trips(cache)

    await cache.read_through(keys, db.load)
    assert sorted(trips) == sorted([s.address for s in two_servers] * 2)  # get, then fill
    trips.clear()
    assert await cache.read_through(keys, db.load) == db.rows
    assert sorted(trips) == sorted(s.address for s in two_servers)


async def test_killing_one_server_mid_traffic_costs_only_its_keys(
    pool: Pool,
    two_servers: tuple[Memcached, Memcached],
) -> None:
    first, second = two_servers
    cache = pool([first.address, second.address])
    keys = [status_key(i) for i in range(1, 201)]
    db = Database({key: f"row {key}" for key in keys})
    await cache.read_through(keys, db.load)
    db.loads.clear()
    its_keys = {key for key in keys if cache.home_of(key) == second.address}
    assert 0 < len(its_keys) < len(keys)
    errors_before = server_errors(second.address)

    rounds = 0
    enough = asyncio.Event()
    killed = asyncio.Event()
    stop = asyncio.Event()

    async def reader(seed: int) -> None:
        nonlocal rounds
        pick = random.Random(seed)
        while not stop.is_set():
            page = pick.sample(keys, 20)
            assert await cache.read_through(page, db.load) == {key: db.rows[key] for key in page}
            rounds += 1
            if rounds == 50:
                enough.set()
            if killed.is_set() and rounds >= 200:
                stop.set()

    traffic = [asyncio.create_task(reader(seed)) for seed in range(20)]
    await enough.wait()
    assert db.loads == []  # everything was cached
    second.kill()
    killed.set()
    await asyncio.gather(*traffic)  # any failed read fails here

    assert db.loaded
    assert set(db.loaded) <= its_keys
    assert cache.servers_down == [second.address]
    assert server_errors(second.address) > errors_before
    # Its keys now live on the survivor: once read, never loaded again.
    await cache.read_through(keys, db.load)
    db.loads.clear()
    assert await cache.read_through(keys, db.load) == db.rows
    assert db.loads == []
    assert all(cache.server_for(key) == first.address for key in keys)


async def test_its_keys_go_to_the_database_once_then_to_the_survivor(
    pool: Pool,
    two_servers: tuple[Memcached, Memcached],
) -> None:
    first, second = two_servers
    cache = pool([first.address, second.address])
    keys = [status_key(i) for i in range(1, 101)]
    db = Database({key: key for key in keys})
    await cache.read_through(keys, db.load)
    db.loads.clear()
    its_keys = [key for key in keys if cache.home_of(key) == second.address]

    second.kill()
    assert await cache.read_through(keys, db.load) == db.rows
    # Exactly the returned server's keys were loaded again, the others not. They may come
    # in more than one batch: the read the pause left queued (key 35) can reach memcached
    # after the flush and take that key's lease, so its load waits for the lease.
    assert sorted(key for batch in db.loads for key in batch) == sorted(its_keys)
    assert await cache.read_through(keys, db.load) == db.rows
    # Exactly the returned server's keys were loaded again, the others not. They may come
    # in more than one batch: the read the pause left queued (key 35) can reach memcached
    # after the flush and take that key's lease, so its load waits for the lease.
    assert sorted(key for batch in db.loads for key in batch) == sorted(its_keys)


async def test_with_every_server_down_the_database_serves(
    pool: Pool,
    two_servers: tuple[Memcached, Memcached],
) -> None:
    cache = pool([s.address for s in two_servers])
    keys = [status_key(i) for i in range(1, 21)]
    db = Database({key: key for key in keys})
    await cache.read_through(keys, db.load)
    lookups = await cache.get_many(keys)
    for server in two_servers:
        server.kill()
    db.loads.clear()

    assert await cache.read_through(keys, db.load) == db.rows
    assert await cache.read_through(keys, db.load) == db.rows
    assert db.loads == [keys, keys]
    assert await cache.get_many(keys) == dict.fromkeys(keys, UNREACHABLE)
    await cache.invalidate(keys)
    await cache.invalidate(keys, stale=True)
    held = [lookup.lease for lookup in lookups.values() if lookup.lease is not None]
    assert all(ok is None for ok in (await cache.fill_many([(h, b"1") for h in held])).values())


async def test_servers_that_never_answered_are_no_error(
    pool: Pool,
) -> None:
    cache = pool(["127.0.0.1:1", "127.0.0.1:2"])
    db = Database({status_key(1): "row"})
    assert await cache.read_through([status_key(1)], db.load) == {status_key(1): "row"}
    assert sorted(cache.servers_down) == ["127.0.0.1:1", "127.0.0.1:2"]


async def test_a_server_back_from_a_stall_has_missed_no_invalidation(
    pool: Pool,
    two_servers: tuple[Memcached, Memcached],
) -> None:
    """Deletes a stalled server could not receive are replayed before it is read again, so
    it cannot serve a row that was changed meanwhile."""
    first, second = two_servers
    clock = Clock()
    cache = pool(
        [first.address, second.address], clock=clock, timeout_seconds=0.2, retry_seconds=10.0
    )
    keys = [status_key(i) for i in range(1, 41)]
    db = Database(dict.fromkeys(keys, "v1"))
    await cache.read_through(keys, db.load)
    its_keys = [key for key in keys if cache.home_of(key) == second.address]
    changed = its_keys[0]

    # It stalls (keeping its data, the old rows), and a read finds it out.
    second.pause()
    assert await cache.read_through([its_keys[1]], db.load) == {its_keys[1]: "v1"}
    assert cache.servers_down == [second.address]
    trips = count_round_trips(cache)
    db.rows[changed] = "v2"
    await cache.invalidate([changed])
    assert trips == [first.address]
    assert (await cache.read_through([changed], db.load))[changed] == "v2"

    second.resume()
    assert await cache.check_servers() == [second.address]  # not before the retry interval
    clock.now += 10.0
    assert await cache.check_servers() == []
    db.loads.clear()
    got = await cache.read_through(keys, db.load)
    assert got == db.rows
    assert db.loads == [[changed]]  # the rest of its keys were still good


async def test_a_server_that_missed_too_much_is_flushed_on_return(
    pool: Pool, two_servers: tuple[Memcached, Memcached], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memcached_module, "MAX_MISSED_DELETES", 2)
    first, second = two_servers
    clock = Clock()
    cache = pool([first.address, second.address], clock=clock, timeout_seconds=0.2)
    keys = [status_key(i) for i in range(1, 41)]
    db = Database(dict.fromkeys(keys, "v1"))
    await cache.read_through(keys, db.load)
    its_keys = [key for key in keys if cache.home_of(key) == second.address]
    assert len(its_keys) > 3

    second.pause()
    await cache.read_through([its_keys[-1]], db.load)
    assert cache.servers_down == [second.address]
    await cache.invalidate(its_keys[:3])
    second.resume()
    clock.now += 10.0
    assert await cache.check_servers() == []
    db.loads.clear()
    assert await cache.read_through(keys, db.load) == db.rows
    # Exactly the returned server's keys were loaded again, the others not. They may come
    # in more than one batch: the read the pause left queued (key 35) can reach memcached
    # after the flush and take that key's lease, so its load waits for the lease.
    assert sorted(key for batch in db.loads for key in batch) == sorted(its_keys)
