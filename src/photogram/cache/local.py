"""The embedded default: an in-process cache with memcached's lease semantics.

It follows memcached's meta protocol rule for rule (see memcached.py), so the embedded
default and the cluster behave alike and the tests run the same cases on both: a miss
creates an empty placeholder that lives ``lease_ttl`` seconds and hands out one win; a
fill must carry the CAS token of the win; an invalidation deletes (or marks stale and bumps
the CAS, handing out one new win). Values are kept as bytes, so a caller mutating what it
read never changes what the next reader gets.

Only one process sees it: with several app processes, configure memcached servers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from photogram.cache import metrics
from photogram.cache.base import Lease, LeaseCache, Lookup
from photogram.cache.keys import dataset_of


@dataclass(slots=True)
class _Entry:
    #: None: a placeholder, created by a miss for the lease holder to fill.
    value: bytes | None
    cas: int
    expires: float
    stale: bool = False
    #: The win for this placeholder or stale value was handed out.
    leased: bool = False
    #: Set (and dropped) when the entry is filled, invalidated, expires or is evicted.
    changed: asyncio.Event | None = None

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None


class LocalLeaseCache(LeaseCache):
    def __init__(
        self,
        *,
        lease_ttl_seconds: int,
        lease_wait_seconds: float,
        ttl_seconds: int,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(lease_wait_seconds=lease_wait_seconds, ttl_seconds=ttl_seconds)
        self.lease_ttl_seconds = lease_ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._cas = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self._clock():
            del self._entries[key]
            entry.notify()
            return None
        return entry

    def _store(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            _, evicted = self._entries.popitem(last=False)
            evicted.notify()

    async def get_many(self, keys: Sequence[str], *, lease: bool = True) -> dict[str, Lookup]:
        found: dict[str, Lookup] = {}
        for key in keys:
            entry = self._live(key)
            if entry is None:
                if not lease:
                    found[key] = Lookup()
                    continue
                cas = next(self._cas)
                self._store(
                    key, _Entry(None, cas, self._clock() + self.lease_ttl_seconds, leased=True)
                )
                found[key] = Lookup(lease=Lease(key, cas))
                continue
            self._entries.move_to_end(key)
            win = lease and (entry.value is None or entry.stale) and not entry.leased
            if win:
                entry.leased = True
            found[key] = Lookup(entry.value, entry.stale, Lease(key, entry.cas) if win else None)
        return found

    async def fill_many(
        self, fills: Sequence[tuple[Lease, bytes]], *, ttl: int | None = None
    ) -> dict[str, bool | None]:
        stored: dict[str, bool | None] = {}
        for lease, value in fills:
            entry = self._live(lease.key)
            if entry is None or entry.cas != lease.token:
                stored[lease.key] = False
                continue
            entry.value = value
            entry.cas = next(self._cas)
            entry.expires = self._clock() + (ttl or self.ttl_seconds)
            entry.stale = entry.leased = False
            entry.notify()
            stored[lease.key] = True
        return stored

    async def invalidate(self, keys: Iterable[str], *, stale: bool = False) -> None:
        for key in keys:
            metrics.INVALIDATIONS.labels(dataset_of(key)).inc()
            entry = self._live(key)
            if entry is None:
                continue
            if stale:
                # memcached's `md <key> I T<lease ttl>`: a new CAS voids the lease, the win is
                # handed out anew, and the stale value lives only as long as a lease would.
                entry.stale = True
                entry.leased = False
                entry.cas = next(self._cas)
                entry.expires = self._clock() + self.lease_ttl_seconds
            else:
                del self._entries[key]
            entry.notify()

    async def wait(self, keys: Sequence[str], deadline: float, attempt: int) -> None:
        events: list[asyncio.Event] = []
        for key in keys:
            entry = self._live(key)
            if entry is None:
                return  # gone: the re-read wins a lease
            if entry.changed is None:
                entry.changed = asyncio.Event()
            if entry.changed not in events:
                events.append(entry.changed)
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            return
        if len(events) == 1:
            # The common case (one hot key), without a task per waiter.
            try:
                async with asyncio.timeout(timeout):
                    await events[0].wait()
            except TimeoutError:
                pass
            return
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
