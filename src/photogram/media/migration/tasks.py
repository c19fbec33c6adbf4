"""Repairs queued when a secondary write or delete fails during a migration.

A write succeeds once the primary store has the object; if the other store then fails,
the key is queued here (an outbox task on the shard that records it) and made right later:
copied from a store holding the recorded bytes, or removed if the database no longer
records it. The verifier catches anything a repair misses.
"""

from __future__ import annotations

import time

from photogram.db.ids import shard_of
from photogram.media.migration import objects
from photogram.media.migration.objects import owner_of
from photogram.media.migration.store import put_verified
from photogram.media.stores import ObjectNotFoundError, StoreError, digest_now
from photogram.runtime import Runtime
from photogram.tasks.outbox import Payload, Relay, enqueue, task

SYNC = "media.sync_object"

#: An object with no record may belong to an upload whose record is not committed yet:
#: its repair waits (the outbox retries it) this long before taking it for deleted.
RECORD_GRACE_SECONDS = 120.0


async def queue_sync(runtime: Runtime, store: str, key: str, operation: str) -> None:
    """Queue making ``key`` in ``store`` agree with the database (``MigratingStore`` calls it)."""
    owner = owner_of(key)
    if owner is None:
        return
    # Left to the outbox sweep rather than started now: the object's record is usually not
    # committed yet (the write that failed comes first), so a repair at once would only
    # find nothing to repair and wait for its retry.
    async with runtime.router.begin_for(owner) as conn:
        await enqueue(conn, shard_of(owner), SYNC, key=key, store=store, queued_at=time.time())


class NotRecordedYet(Exception):
    """The object has no record yet; the repair is retried later."""


@task(SYNC, queue="media")
async def sync_object(relay: Relay, payload: Payload) -> None:
    runtime = relay.runtime
    assert runtime is not None
    key, name = payload["key"], payload["store"]
    store = runtime.stores[name]
    record = await objects.find(runtime.router, key)
    if record is None:
        if time.time() - float(payload.get("queued_at", 0)) < RECORD_GRACE_SECONDS:
            raise NotRecordedYet(f"{key} has no record yet; it may still be committing")
        await store.delete(key)
        return
    try:
        held = await store.digest(key)
        if held.size == record.size and held.md5_hex == record.md5:
            return
    except ObjectNotFoundError:
        pass
    state = await runtime.media.state()
    for other in {state.source, state.target} - {name, None}:
        assert other is not None
        try:
            data = await runtime.stores[other].get(key)
        except StoreError:
            continue
        sent = digest_now(data)
        if sent.size == record.size and sent.md5_hex == record.md5:
            await put_verified(store, key, data, sent)
            if await objects.find(runtime.router, key) is None:
                await store.delete(key)  # deleted while it was copied: do not resurrect it
            return
    raise StoreError(f"no store holds the recorded bytes of {key} to repair {name!r} with")
