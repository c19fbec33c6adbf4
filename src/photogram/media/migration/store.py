"""The media store every request and task uses: one store, or two while media moves.

``MigratingStore`` is a ``BlobStore`` that routes each call by the migration's phase,
re-read from the global database every ``media_migration_refresh_seconds``:

| phase | writes | reads | deletes |
|---|---|---|---|
| legacy (or none) | source | source | source (and a named target) |
| dual_write, backfill, verify | source, then target | source | both |
| read_ramp | source, then target | target for a share of keys, else source | both |
| new_primary | target, then source | target | both |
| retired | target | target | target |

A read from the target that fails or misses falls back to the source (and is counted).

A write succeeds once the *primary* store holds the object; the other write is attempted
and, if it fails, handed to ``on_secondary_failure`` (the runtime queues a repair task).
The target is not trusted until it is verified, so every write to it is read back and
compared with the MD5 of the bytes sent, and written again on a mismatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from photogram.media.migration import metrics
from photogram.media.migration.phases import Phase, State
from photogram.media.stores import (
    BlobStore,
    Digest,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStream,
    StoredObject,
    StoreError,
    StoreUnavailableError,
    compute_digest,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Writes to the target: attempts (a failed or corrupted write is made again) and the pause
#: before each retry.
TARGET_WRITE_ATTEMPTS = 4
TARGET_RETRY_PAUSE = 0.05

StateLoader = Callable[[], Awaitable[State]]
FailureHandler = Callable[[str, str, str], Awaitable[None]]  # store name, key, operation


def read_bucket(key: str) -> int:
    """0 to 99, stable per key: a ramp to N% reads the keys whose bucket is below N."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 100


async def put_verified(
    store: BlobStore, key: str, data: bytes, sent: Digest, *, attempts: int = TARGET_WRITE_ATTEMPTS
) -> StoredObject:
    """Write ``data`` and read it back until the store holds exactly those bytes.

    StoreError if it still does not after ``attempts`` writes (the last error or a
    mismatch). This is how a write reaches a store that is not trusted yet.
    """
    last: str = ""
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(TARGET_RETRY_PAUSE * attempt)
        try:
            await store.put(key, data)
            held = await store.digest(key)
        except (StoreUnavailableError, ObjectNotFoundError) as exc:
            last = str(exc)
            continue
        if held.size == sent.size and held.md5_hex == sent.md5_hex:
            return StoredObject(key, sent.size, sent.md5_hex)
        last = f"media store {store.name!r} kept different bytes for {key} (MD5 {held.md5_hex})"
    # Wrong bytes must not stay where a read may find them: without the object a read
    # misses and falls back; the repair queue or the verifier writes it again.
    with contextlib.suppress(StoreError):
        await store.delete(key)
    raise StoreUnavailableError(last or f"media store {store.name!r} could not write {key}")


class MigratingStore(BlobStore):
    def __init__(
        self,
        stores: dict[str, BlobStore],
        load_state: StateLoader,
        *,
        refresh_seconds: float,
        initial: State,
        on_secondary_failure: FailureHandler | None = None,
    ) -> None:
        self.stores = stores
        self._load_state = load_state
        self._refresh_seconds = refresh_seconds
        self._state = initial
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self.on_secondary_failure = on_secondary_failure

    # --- the phase ---------------------------------------------------------------------------

    @property
    def name(self) -> str:  # type: ignore[override]
        """The primary store's name, as this process last knew it."""
        return self._state.primary

    @property
    def known_state(self) -> State:
        return self._state

    async def state(self) -> State:
        """The migration's state, re-read if older than the refresh interval.

        If the global database cannot be read, the last state read stands (and the next
        call tries again): media keeps being served through a database outage.
        """
        if time.monotonic() - self._loaded_at < self._refresh_seconds:
            return self._state
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self._refresh_seconds:
                await self.refresh()
        return self._state

    async def refresh(self) -> State:
        try:
            fresh = await self._load_state()
        except Exception as exc:
            log.warning("media migration state not refreshed (keeping %s): %s", self._state, exc)
        else:
            if fresh != self._state:
                log.info("media migration: now following %s", fresh)
            self._state = fresh
            metrics.follow(fresh)
        self._loaded_at = time.monotonic()
        return self._state

    def _read_order(self, state: State, key: str) -> list[BlobStore]:
        source = self.stores[state.source]
        if state.target is None:
            return [source]
        target = self.stores[state.target]
        if state.phase is Phase.RETIRED:
            return [target]
        if state.phase is Phase.NEW_PRIMARY or (
            state.phase is Phase.READ_RAMP and read_bucket(key) < state.read_percent
        ):
            return [target, source]
        return [source]

    async def _secondary_failed(self, store: str, key: str, operation: str, why: object) -> None:
        metrics.SECONDARY_FAILURES.labels(operation).inc()
        log.warning(
            "media migration: %s of %s in %r failed, queued: %s", operation, key, store, why
        )
        if self.on_secondary_failure is not None:
            try:
                await self.on_secondary_failure(store, key, operation)
            except Exception as exc:  # the verifier finds it on its next pass
                log.warning("media migration: repair of %s not queued: %s", key, exc)

    # --- writes ------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> StoredObject:
        state = await self.state()
        sent = await compute_digest(data)
        primary = self.stores[state.primary]
        if state.primary == state.target and state.phase is not Phase.RETIRED:
            written = await put_verified(primary, key, data, sent)
        else:
            written = await primary.put(key, data)
        secondary = state.secondary
        if secondary is not None:
            store = self.stores[secondary]
            try:
                if secondary == state.target:
                    await put_verified(store, key, data, sent)
                else:
                    await store.put(key, data)
            except StoreError as exc:
                await self._secondary_failed(secondary, key, "put", exc)
        return written

    async def delete(self, key: str) -> None:
        state = await self.state()
        first, *others = state.delete_from
        await self.stores[first].delete(key)
        for name in others:
            try:
                await self.stores[name].delete(key)
            except StoreError as exc:
                await self._secondary_failed(name, key, "delete", exc)

    async def delete_recorded(self, key: str, recorded_in: str) -> None:
        """Delete an object the database recorded in store ``recorded_in``: wherever the
        migration keeps it, and in that store too if it is another configured one."""
        await self.delete(key)
        state = self._state
        if recorded_in in self.stores and recorded_in not in (state.source, state.target):
            await self.stores[recorded_in].delete(key)

    # --- reads -------------------------------------------------------------------------------

    async def _first_answer(self, key: str, read: Callable[[BlobStore], Awaitable[T]]) -> T:
        *preferred, last = self._read_order(await self.state(), key)
        for store in preferred:
            try:
                return await read(store)
            except ObjectNotFoundError:
                reason = "missing"
            except StoreError as exc:
                reason = "error"
                log.warning("media migration: reading %s from %r failed: %s", key, store.name, exc)
            metrics.FALLBACKS.labels(reason).inc()
        return await read(last)

    async def get(self, key: str) -> bytes:
        return await self._first_answer(key, lambda store: store.get(key))

    async def open(self, key: str) -> ObjectStream:
        return await self._first_answer(key, lambda store: store.open(key))

    async def head(self, key: str) -> ObjectInfo | None:
        async def head(store: BlobStore) -> ObjectInfo:
            info = await store.head(key)
            if info is None:
                raise ObjectNotFoundError(key)
            return info

        try:
            return await self._first_answer(key, head)
        except ObjectNotFoundError:
            return None

    async def digest(self, key: str) -> StoredObject:
        return await self._first_answer(key, lambda store: store.digest(key))

    def iterate(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        return self.stores[self._state.primary].iterate(prefix, start_after=start_after)

    async def check(self) -> None:
        await self.stores[(await self.state()).primary].check()

    async def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        """A URL straight to the store, unless a read of this key may need the fallback:
        then None, so that photogram serves it itself (and falls back on a miss)."""
        order = self._read_order(await self.state(), key)
        if len(order) > 1:
            return None
        return await order[0].presigned_url(key, expires_seconds)

    async def close(self) -> None:
        """The stores it routes to are closed by their owner (the runtime)."""
