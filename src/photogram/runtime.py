"""What every request and task needs, opened once per process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field

from photogram.db.router import Router
from photogram.media.stores import BlobStore, open_stores
from photogram.settings import Settings
from photogram.tasks.outbox import Relay

#: How long shutdown waits for a sweep under way to finish.
SHUTDOWN_GRACE_SECONDS = 10.0


@dataclass
class Runtime:
    settings: Settings
    router: Router
    relay: Relay
    #: Media stores by name; ``store`` is the one in use.
    stores: dict[str, BlobStore]
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: Work started for a request that answered before it finished (kept from collection).
    _background: set[asyncio.Task[object]] = field(default_factory=set, repr=False)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        router = await Router.open(settings)
        runtime = cls(settings, router, Relay(router), open_stores(settings))
        runtime.relay.runtime = runtime
        return runtime

    @property
    def store(self) -> BlobStore:
        return self.stores[self.settings.media_store]

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
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._sweeper is not None:
            self._stop.set()
            # Past the grace period wait_for cancels it: a stuck sweep does not block exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweeper, SHUTDOWN_GRACE_SECONDS)
            self._sweeper = None
        for store in self.stores.values():
            await store.close()
        await self.router.close()
