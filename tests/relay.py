"""A relay that holds outbox rows back until a test delivers them: late, out of order, or
never (what a crashed process leaves to the sweep)."""

from __future__ import annotations

import random
from collections.abc import Iterable

from photogram.db.router import Router
from photogram.tasks.outbox import Relay


class LateRelay(Relay):
    """Holds back everything dispatched; the test delivers rows when, and in the order,
    it chooses (undelivered rows are what a crashed process leaves to the sweep)."""

    def __init__(self, router: Router) -> None:
        super().__init__(router)
        self.held: list[int] = []

    async def dispatch(self, row_ids: Iterable[int]) -> None:
        self.held.extend(row_ids)

    async def deliver(self, pick: int) -> None:
        if self.held:
            await Relay.dispatch(self, [self.held.pop(pick % len(self.held))])

    async def deliver_all(self, seed: int | None = None) -> None:
        """Everything held, and whatever that queues in turn (shuffled, given a seed)."""
        while self.held:
            batch, self.held = self.held, []
            if seed is not None:
                random.Random(seed).shuffle(batch)
            await Relay.dispatch(self, batch)
