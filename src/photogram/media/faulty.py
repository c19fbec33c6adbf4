"""A store with faults injected (``kind = "faulty"``): failures, silent corruption, latency.

It wraps another configured store and misbehaves the way a new store does on a bad day:
a share of writes fail, a share *succeed* but keep corrupted bytes (``put`` still reports
the size and MD5 of what it was given, as a store with a bad disk or a buggy gateway
would), a share of reads fail, and every call waits a little. The media migration's
drills and tests point its target at one; nothing else should.
"""

from __future__ import annotations

import asyncio
import random

from photogram.media.stores import (
    BlobStore,
    ObjectInfo,
    ObjectStream,
    StoredObject,
    StoreUnavailableError,
    WrappingStore,
    digest_now,
)
from photogram.settings import FaultyStoreSettings


class FaultyStore(WrappingStore):
    def __init__(self, inner: BlobStore, config: FaultyStoreSettings, *, name: str) -> None:
        super().__init__(inner, name=name)
        self.config = config
        self._random = random.Random()  # noqa: S311 (faults, not secrets)

    async def _delay(self) -> None:
        if self.config.latency_seconds:
            await asyncio.sleep(self._random.uniform(0, self.config.latency_seconds))

    def _fail(self, rate: float, what: str) -> None:
        if rate and self._random.random() < rate:
            raise StoreUnavailableError(f"media store {self.name!r}: injected {what} failure")

    async def put(self, key: str, data: bytes) -> StoredObject:
        await self._delay()
        self._fail(self.config.write_error_rate, "write")
        if self.config.corrupt_rate and self._random.random() < self.config.corrupt_rate:
            sent = digest_now(data)
            spoiled = bytearray(data or b"\0")
            spoiled[self._random.randrange(len(spoiled))] ^= 0x5A
            await self.inner.put(key, bytes(spoiled))
            return StoredObject(key, sent.size, sent.md5_hex)
        return await self.inner.put(key, data)

    async def get(self, key: str) -> bytes:
        await self._delay()
        self._fail(self.config.read_error_rate, "read")
        return await self.inner.get(key)

    async def open(self, key: str) -> ObjectStream:
        await self._delay()
        self._fail(self.config.read_error_rate, "read")
        return await self.inner.open(key)

    async def head(self, key: str) -> ObjectInfo | None:
        await self._delay()
        return await self.inner.head(key)

    async def delete(self, key: str) -> None:
        await self._delay()
        await self.inner.delete(key)
