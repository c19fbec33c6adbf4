"""What every request and task needs, opened once per process."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from photogram.db.router import Router
from photogram.settings import Settings
from photogram.tasks.outbox import Relay


@dataclass
class Runtime:
    settings: Settings
    router: Router
    relay: Relay
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        router = await Router.open(settings)
        return cls(settings=settings, router=router, relay=Relay(router))

    def start_background(self) -> None:
        """Keep re-running outbox work left pending (by a crash, or a failed first attempt)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(
                self.relay.sweep_forever(self.settings.outbox_sweep_seconds)
            )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.router.close()
