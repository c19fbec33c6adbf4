"""What every request and task needs, opened once per process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field

from photogram.cache import LeaseCache, open_cache
from photogram.db.router import Router
from photogram.feeds.store import FeedStore
from photogram.gates import Gate, Gates
from photogram.gates import load as load_gates
from photogram.media.migration import phases
from photogram.media.migration.store import MigratingStore
from photogram.media.stores import BlobStore, open_stores
from photogram.settings import Settings
from photogram.tasks.outbox import Publisher, Relay

#: How long shutdown waits for a sweep under way to finish.
SHUTDOWN_GRACE_SECONDS = 10.0


def open_publisher(settings: Settings) -> Publisher | None:
    """The broker publisher for ``broker_url``; None runs tasks in this process."""
    if not settings.broker_url:
        return None
    from photogram.tasks.broker import CeleryPublisher, make_celery

    return CeleryPublisher(make_celery(settings), settings)


@dataclass
class Runtime:
    settings: Settings
    router: Router
    relay: Relay
    #: Media stores by name, as configured.
    stores: dict[str, BlobStore]
    #: The media store every caller uses: the one in use, or two while media moves to
    #: another store (docs/media-migration.md). Also ``store``.
    media: MigratingStore = field(init=False)
    #: Feature gates (docs/gates.md), re-read every ``gates_refresh_seconds``.
    gates: Gates = field(init=False)
    #: The look-aside cache (docs/cache.md): memcached with ``cache_servers``, else in-process.
    cache: LeaseCache = field(init=False)
    #: Home feeds in Redis (docs/feeds.md); None without ``redis_url``.
    feeds: FeedStore | None = field(init=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: Work started for a request that answered before it finished (kept from collection).
    _background: set[asyncio.Task[object]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.cache = open_cache(self.settings)
        self.feeds = FeedStore.open(self.settings)
        self.gates = Gates(
            self._load_gates,
            server_name=self.settings.server_name,
            refresh_seconds=self.settings.gates_refresh_seconds,
        )
        self.media = MigratingStore(
            self.stores,
            self._load_migration,
            refresh_seconds=self.settings.media_migration_refresh_seconds,
            initial=phases.no_migration(self.settings.media_store),
            on_secondary_failure=self._queue_media_repair,
        )
        # Tasks reach the cache (and the stores) through their relay.
        if self.relay.runtime is None:
            self.relay.runtime = self

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        router = await Router.open(settings)
        try:
            return cls(
                settings, router, Relay(router, open_publisher(settings)), open_stores(settings)
            )
        except BaseException:
            await router.close()
            raise

    @property
    def store(self) -> MigratingStore:
        return self.media

    async def _load_gates(self) -> dict[str, Gate]:
        async with self.router.global_connect() as conn:
            return await load_gates(conn)

    async def _load_migration(self) -> phases.State:
        async with self.router.global_connect() as conn:
            return await phases.load(conn, self.settings.media_store)

    async def _queue_media_repair(self, store: str, key: str, operation: str) -> None:
        from photogram.media.migration.tasks import queue_sync

        await queue_sync(self, store, key, operation)

    @contextlib.asynccontextmanager
    async def invalidating(self, *keys: str) -> AsyncIterator[set[str]]:
        """Invalidate ``keys``, and the keys added to the set it yields, as the block ends.

        Open it around the transaction that changes what they cache, never inside it::

            async with runtime.invalidating(key) as changed, runtime.router.begin(shard) as conn:
                ...  # changed.add(other_key)

        The transaction's block ends first, so the keys go after the commit, and a reader
        that filled them from the database meanwhile has its lease voided (docs/cache.md).
        They go however the block ends (an early return commits too; a rollback makes them
        only miss once).
        """
        changed = set(keys)
        try:
            yield changed
        finally:
            await self.cache.invalidate(changed)

    async def invalidate(self, keys: Iterable[str]) -> None:
        """Invalidate ``keys`` now: call it after the commit of what changed them."""
        await self.cache.invalidate(keys)

    def in_background(self, work: Coroutine[object, object, object]) -> asyncio.Task[object]:
        """Run ``work`` beyond the request that started it (the app waits for it at shutdown)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def start_background(self) -> None:
        """Keep re-running outbox work left pending (by a crash, or a failed first attempt)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(
                self.relay.sweep_forever(self.settings.outbox_sweep_seconds, self._stop)
            )

    async def close(self) -> None:
        # Background work may start more as it runs: wait until none is left.
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._sweeper is not None:
            self._stop.set()
            # Past the grace period wait_for cancels it: a stuck sweep does not block exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweeper, SHUTDOWN_GRACE_SECONDS)
            self._sweeper = None
        if self.relay.publisher is not None:
            await self.relay.publisher.close()
        for store in self.stores.values():
            await store.close()
        await self.cache.close()
        if self.feeds is not None:
            await self.feeds.close()
        await self.router.close()
