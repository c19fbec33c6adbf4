"""The lease cache interface, and ``read_through``: the whole lease protocol for a batch of keys.

Leases are Facebook's answer to two problems of a look-aside cache (Nishtala et al., *Scaling
Memcache at Facebook*, NSDI 2013, §3.2.1):

- the thundering herd: a hot key is invalidated and every reader misses at once. A miss
  hands exactly one reader a lease, the right to fill; the others wait briefly and re-read,
  or take the stale value if the write marked it stale instead of deleting it;
- the stale set: a reader misses, reads the database, and a write commits and invalidates
  before the reader fills; without leases the late fill puts the old value back until the
  TTL. An invalidation voids outstanding leases, so that fill is refused.

Backends store bytes. ``read_through`` stores compact JSON, with ``null`` for what the
loader did not find (so a missing row is not looked up again on every request); a value
that is itself ``None`` therefore reads as absent.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from photogram.cache import metrics
from photogram.cache.keys import dataset_of

#: Loads the values of the keys it is given from the database, in one go. Keys it leaves out
#: do not exist (and are cached as such).
Loader = Callable[[list[str]], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to fill ``key``, valid until the key is invalidated (or the lease expires)."""

    key: str
    token: int
    #: The memcached server that handed it out: the token means nothing to any other.
    server: str = ""


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lease get found for one key.

    ``value`` set and not stale: a hit. ``lease`` set: this caller must load and fill (a stale
    ``value`` may come with it). Neither: another caller holds the lease; wait and re-read,
    unless ``stale`` value is there to take. ``reachable`` false: the key's cache server is
    down: go to the database, and fill nothing.
    """

    value: bytes | None = None
    stale: bool = False
    lease: Lease | None = None
    reachable: bool = True


UNREACHABLE = Lookup(reachable=False)


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)


class LeaseCache(ABC):
    """A look-aside cache with leases. Keys come from ``photogram.cache.keys``."""

    def __init__(self, *, lease_wait_seconds: float, ttl_seconds: int) -> None:
        self.lease_wait_seconds = lease_wait_seconds
        self.ttl_seconds = ttl_seconds

    @abstractmethod
    async def get_many(self, keys: Sequence[str], *, lease: bool = True) -> dict[str, Lookup]:
        """Look up every key, one round trip per server.

        With ``lease``, a miss creates a lease: the first caller to miss a key gets it."""

    @abstractmethod
    async def fill_many(
        self, fills: Sequence[tuple[Lease, bytes]], *, ttl: int | None = None
    ) -> dict[str, bool | None]:
        """Store values under leases: True stored, False refused (the key was invalidated
        since the lease was handed out, or the lease expired), None the server is down."""

    async def fill(self, key: str, value: bytes, lease: Lease, *, ttl: int | None = None) -> bool:
        if lease.key != key:
            raise ValueError(f"lease for {lease.key!r} used to fill {key!r}")
        return bool((await self.fill_many([(lease, value)], ttl=ttl))[key])

    @abstractmethod
    async def invalidate(self, keys: Iterable[str], *, stale: bool = False) -> None:
        """Delete the keys, after the transaction that changed them committed; this voids
        their outstanding leases. With ``stale``, keep the old values marked stale, for
        readers to take while one of them refills (for data where a moment's staleness is
        fine, such as counters)."""

    async def delete(self, keys: Iterable[str]) -> None:
        await self.invalidate(keys)

    @abstractmethod
    async def wait(self, keys: Sequence[str], deadline: float, attempt: int) -> None:
        """Return when one of ``keys`` may have been filled, or at ``deadline`` (loop time)
        at the latest. ``attempt`` counts the waits of one read, for backoff."""

    async def close(self) -> None:  # noqa: B027 (a backend with nothing to close needs nothing)
        pass

    async def read_through(
        self, keys: Iterable[str], loader: Loader, *, ttl: int | None = None
    ) -> dict[str, Any]:
        """The values of ``keys`` (those that exist), from the cache or else from ``loader``.

        A bulk lease get; the misses this caller won the lease for go to ``loader`` in one
        call and are filled; those another caller is filling are waited for (at most
        ``lease_wait_seconds``) and re-read, then loaded without filling if still missing.
        Stale values are taken while another caller refills. Cache servers that are down
        cost a database load, never an exception.
        """
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        lookups = await self.get_many(wanted)
        first = True
        waiting: list[str] = []
        deadline = 0.0
        attempt = 0
        while True:
            won: dict[str, Lease] = {}
            load: list[str] = []
            for key, lookup in lookups.items():
                dataset = dataset_of(key)
                if lookup.value is not None and not lookup.stale:
                    found[key] = decode(lookup.value)
                    if first:
                        metrics.HITS.labels(dataset).inc()
                    continue
                if first:
                    metrics.MISSES.labels(dataset).inc()
                if lookup.lease is not None:
                    won[key] = lookup.lease
                    load.append(key)
                elif lookup.value is not None:
                    found[key] = decode(lookup.value)
                    metrics.STALE_SERVED.labels(dataset).inc()
                elif not lookup.reachable:
                    load.append(key)
                else:
                    if first:
                        metrics.LEASE_WAITS.labels(dataset).inc()
                    waiting.append(key)
            if load:
                await self._load(load, won, loader, found, ttl)
            if not waiting:
                break
            loop = asyncio.get_running_loop()
            if first:
                deadline = loop.time() + self.lease_wait_seconds
            elif loop.time() >= deadline:
                for key in waiting:
                    metrics.LEASE_TIMEOUTS.labels(dataset_of(key)).inc()
                await self._load(waiting, {}, loader, found, ttl)
                break
            first = False
            await self.wait(waiting, deadline, attempt)
            attempt += 1
            lookups = await self.get_many(waiting)
            waiting = []
        return {key: found[key] for key in wanted if found.get(key) is not None}

    async def _load(
        self,
        keys: list[str],
        won: dict[str, Lease],
        loader: Loader,
        found: dict[str, Any],
        ttl: int | None,
    ) -> None:
        """Load ``keys`` in one call, and fill those this caller holds a lease for."""
        loaded = await loader(keys)
        for key in keys:
            found[key] = loaded.get(key)
            metrics.LOADS.labels(dataset_of(key)).inc()
        if not won:
            return
        stored = await self.fill_many(
            [(lease, encode(found[key])) for key, lease in won.items()], ttl=ttl
        )
        for key, ok in stored.items():
            if ok:
                metrics.FILLS.labels(dataset_of(key)).inc()
            elif ok is False:
                metrics.FILL_REJECTIONS.labels(dataset_of(key)).inc()
