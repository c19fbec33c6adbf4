"""The lease protocol, the same on memcached and in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from photogram.cache import LeaseCache, status_counters_key, status_key
from tests.cache.conftest import LEASE_WAIT, Database, MakeCache


def counter(name: str, dataset: str = "status") -> float:
    return REGISTRY.get_sample_value(f"photogram_cache_{name}_total", {"dataset": dataset}) or 0.0


class Counters:
    """How much each cache counter moved since this was made."""

    NAMES = (
        "hits",
        "misses",
        "lease_waits",
        "lease_timeouts",
        "loads",
        "fills",
        "fill_rejections",
        "stale_served",
        "invalidations",
    )

    def __init__(self, dataset: str = "status") -> None:
        self.dataset = dataset
        self.start = {name: counter(name, dataset) for name in self.NAMES}

    def __getitem__(self, name: str) -> float:
        return counter(name, self.dataset) - self.start[name]


def count_waiters(cache: LeaseCache, enough: int) -> asyncio.Event:
    """An event set once ``enough`` readers have started waiting on someone else's lease."""
    waiting = asyncio.Event()
    entered = 0
    wait = cache.wait

    async def counting(keys: Sequence[str], deadline: float, attempt: int) -> None:
        nonlocal entered
        if attempt == 0:
            entered += 1
            if entered >= enough:
                waiting.set()
        await wait(keys, deadline, attempt)

    cache.wait = counting  # type: ignore[method-assign]
    return waiting


async def test_a_fill_is_read_back_and_a_hit_never_loads(make_cache: MakeCache) -> None:
    cache = await make_cache()
    keys = [status_key(i) for i in range(1, 41)]
    db = Database({key: {"id": key, "n": i} for i, key in enumerate(keys)})
    moved = Counters()

    assert await cache.read_through(keys, db.load) == db.rows
    assert await cache.read_through(keys, db.load) == db.rows

    assert db.loads == [keys]  # one load for the whole page, none on the second read
    assert (moved["misses"], moved["loads"], moved["fills"], moved["hits"]) == (40, 40, 40, 40)


async def test_rows_the_loader_did_not_find_are_cached_as_missing(make_cache: MakeCache) -> None:
    cache = await make_cache()
    db = Database({status_key(1): "one"})
    keys = [status_key(1), status_key(2)]

    assert await cache.read_through(keys, db.load) == {status_key(1): "one"}
    assert await cache.read_through(keys, db.load) == {status_key(1): "one"}
    assert db.loads == [keys]


async def test_a_fill_needs_the_lease_the_key_still_has(make_cache: MakeCache) -> None:
    cache = await make_cache()
    key = status_key(3)

    lookup = (await cache.get_many([key]))[key]
    assert lookup.value is None
    assert lookup.lease is not None
    # The second reader finds the lease taken: nothing to fill, nothing to read yet.
    other = (await cache.get_many([key]))[key]
    assert other.value is None
    assert other.lease is None
    assert other.reachable

    await cache.invalidate([key])
    assert not await cache.fill(key, b'"late"', lookup.lease)

    again = (await cache.get_many([key]))[key]
    assert again.lease is not None
    assert await cache.fill(key, b'"fresh"', again.lease)
    assert not await cache.fill(key, b'"twice"', again.lease)
    assert (await cache.get_many([key]))[key].value == b'"fresh"'


async def test_thundering_herd_loads_once(make_cache: MakeCache) -> None:
    """500 readers of a key just invalidated: one database load, no failure, no reader
    waiting past the lease bound."""
    cache = await make_cache()
    key = status_key(42)
    db = Database({key: "before"})
    await cache.read_through([key], db.load)
    db.rows[key] = "after"
    await cache.invalidate([key])
    db.loads.clear()
    moved = Counters()
    readers = 500
    # The lease holder's load ends only once every other reader is waiting on it, so each
    # of them did miss, and still none loads.
    all_waiting = count_waiters(cache, readers - 1)

    async def load(keys: list[str]) -> dict[str, Any]:
        async with asyncio.timeout(LEASE_WAIT / 2):
            await all_waiting.wait()
        return await db.load(keys)

    loop = asyncio.get_running_loop()

    async def read() -> tuple[dict[str, Any], float]:
        started = loop.time()
        got = await cache.read_through([key], load)
        return got, loop.time() - started

    results = await asyncio.gather(*(read() for _ in range(readers)))

    assert db.loads == [[key]]
    assert all(got == {key: "after"} for got, _ in results)
    assert max(took for _, took in results) < LEASE_WAIT
    assert moved["lease_waits"] == readers - 1
    assert (moved["fills"], moved["lease_timeouts"], moved["loads"]) == (1, 0, 1)


@pytest.mark.parametrize("mark_stale", [False, True], ids=["delete", "mark-stale"])
async def test_stale_set_race_late_fill_is_refused(make_cache: MakeCache, mark_stale: bool) -> None:
    """A reader loads the old row; a writer commits and invalidates before the reader fills.
    The fill is refused, so the cache never holds the old row after the write."""
    cache = await make_cache()
    key = status_key(7)
    db = Database({key: "old"})
    if mark_stale:
        # A stale value to keep: the reader then wins the lease to refill it.
        await cache.read_through([key], db.load)
        await cache.invalidate([key], stale=True)
    read_db = asyncio.Event()
    fill = asyncio.Event()

    async def slow_load(keys: list[str]) -> dict[str, Any]:
        rows = await db.load(keys)
        read_db.set()
        await fill.wait()
        return rows

    reader = asyncio.create_task(cache.read_through([key], slow_load))
    await read_db.wait()
    moved = Counters()
    db.rows[key] = "new"  # the writer's transaction commits…
    await cache.invalidate([key], stale=mark_stale)  # …then it invalidates
    fill.set()

    assert await reader == {key: "old"}  # what it read, before the write
    assert moved["fill_rejections"] == 1
    assert moved["fills"] == 0
    db.loads.clear()
    assert await cache.read_through([key], db.load) == {key: "new"}
    assert await cache.read_through([key], db.load) == {key: "new"}
    assert db.loads == [[key]]


async def test_stale_value_is_served_while_one_reader_refills(make_cache: MakeCache) -> None:
    cache = await make_cache()
    key = status_counters_key(9)
    db = Database({key: {"favourites": 1}})
    await cache.read_through([key], db.load)
    db.rows[key] = {"favourites": 2}
    await cache.invalidate([key], stale=True)
    moved = Counters("status_counts")
    loading = asyncio.Event()
    release = asyncio.Event()

    async def slow_load(keys: list[str]) -> dict[str, Any]:
        loading.set()
        await release.wait()
        return await db.load(keys)

    async def must_not_load(keys: list[str]) -> dict[str, Any]:
        raise AssertionError(f"loaded {keys} while a stale value was there")

    refill = asyncio.create_task(cache.read_through([key], slow_load))
    await loading.wait()
    assert await cache.read_through([key], must_not_load) == {key: {"favourites": 1}}
    release.set()
    assert await refill == {key: {"favourites": 2}}
    assert await cache.read_through([key], must_not_load) == {key: {"favourites": 2}}
    assert (moved["stale_served"], moved["fills"], moved["loads"]) == (1, 1, 1)


async def test_a_lease_never_filled_holds_readers_off_only_for_the_wait_bound(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache(lease_wait_seconds=0.05)
    key = status_key(11)
    db = Database({key: "row"})
    held = (await cache.get_many([key]))[key]
    assert held.lease is not None  # taken by a reader that died before filling
    moved = Counters()

    assert await cache.read_through([key], db.load) == {key: "row"}
    assert db.loads == [[key]]
    assert (moved["lease_waits"], moved["lease_timeouts"], moved["fills"]) == (1, 1, 0)


async def test_one_page_mixes_hits_own_leases_and_others_leases(make_cache: MakeCache) -> None:
    cache = await make_cache()
    cached, mine, theirs = status_key(21), status_key(22), status_key(23)
    db = Database({cached: "c", mine: "m", theirs: "t"})
    await cache.read_through([cached], db.load)
    other = (await cache.get_many([theirs]))[theirs]
    assert other.lease is not None
    db.loads.clear()
    all_waiting = count_waiters(cache, 1)

    async def other_reader_fills() -> None:
        await all_waiting.wait()
        assert other.lease is not None
        assert await cache.fill(theirs, b'"t"', other.lease)

    filler = asyncio.create_task(other_reader_fills())
    got = await cache.read_through([cached, mine, theirs], db.load)
    await filler

    assert got == {cached: "c", mine: "m", theirs: "t"}
    assert db.loads == [[mine]]
