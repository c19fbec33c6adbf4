"""Uploading, processing and editing photos: checks (``check_*``) then changes (``do_*``).

An upload is checked by content in the request (``probe``: type, size, pixel count, a
full decode), so hostile files are refused at once and nothing is stored for them. The
accepted bytes wait in a private spool file under the data dir (or, for workers on other
hosts, in the private ``media_spool_store``), never in the media store that is served:
they still carry their metadata (GPS). Processing (sizes, filter, blurhash) is an outbox
task, first run straight after the upload commits; only its stripped variants are
stored, each recorded with its size and MD5 in the transaction that marks the photo ready.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.cache import media_key
from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import media_attachments, media_objects
from photogram.media import filters, metrics, processing
from photogram.media.schemas import MediaAttachment, render_attachment
from photogram.media.stores import BlobStore, ObjectNotFoundError
from photogram.runtime import Runtime
from photogram.tasks.outbox import Payload, Relay, enqueue, task
from photogram.web.deps import path_id
from photogram.web.errors import ApiError, not_found
from photogram.web.signing import sign

PROCESS = "media.process"
DELETE = "media.delete"
DELETE_OBJECTS = "media.delete_objects"
MAX_DESCRIPTION = 1500


def refused(message: str) -> ApiError:
    return ApiError(422, message)


@dataclass(frozen=True)
class Edit:
    description: str | None
    focus: tuple[float, float] | None


def check_edit(description: str | None, focus: str | None) -> Edit:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise refused(f"description is longer than {MAX_DESCRIPTION} characters")
    if description is not None and any(ord(c) < 32 and c not in "\n\t" for c in description):
        raise refused("description contains control characters")
    point = None
    if focus is not None and focus != "":
        try:
            x_text, y_text = focus.split(",")
            point = (float(x_text), float(y_text))
        except ValueError:
            raise refused('focus must be "x,y" with two numbers') from None
        if not all(-1.0 <= v <= 1.0 for v in point):
            raise refused("focus coordinates must each be from -1.0 to 1.0")
    return Edit(description, point)


def check_filter(name: str | None) -> str:
    try:
        return filters.get_filter(name or None).name
    except filters.UnknownFilter as exc:
        raise refused(str(exc)) from None


async def check_photo(runtime: Runtime, path: Path) -> processing.Probe:
    settings = runtime.settings
    try:
        return await asyncio.to_thread(
            processing.probe,
            path,
            max_bytes=settings.media_max_bytes,
            max_pixels=settings.media_max_pixels,
        )
    except processing.InvalidImage as exc:
        raise refused(str(exc)) from None


def spool_directory(runtime: Runtime) -> Path:
    return runtime.settings.data_dir / "spool"


def spool_path(runtime: Runtime, media_id: int) -> Path:
    return spool_directory(runtime) / f"{media_id}.upload"


def spool_key(media_id: int) -> str:
    """An upload's key in ``media_spool_store``."""
    return f"spool/{shard_of(media_id):04d}/{media_id}.upload"


def spool_store(runtime: Runtime) -> BlobStore | None:
    name = runtime.settings.media_spool_store
    return None if name is None else runtime.stores[name]


async def _keep_upload(runtime: Runtime, spooled: Path, media_id: int) -> None:
    """Keep an accepted upload where processing will find it, under its media ID."""
    store = spool_store(runtime)
    if store is None:
        await asyncio.to_thread(os.replace, spooled, spool_path(runtime, media_id))
        return
    await store.put(spool_key(media_id), await asyncio.to_thread(spooled.read_bytes))
    await asyncio.to_thread(spooled.unlink, missing_ok=True)


async def _fetch_upload(runtime: Runtime, media_id: int) -> Path | None:
    """The upload as a local file to process (fetched from the spool store if there is
    one); None if it is gone."""
    store = spool_store(runtime)
    if store is None:
        path = spool_path(runtime, media_id)
        return path if await asyncio.to_thread(path.exists) else None
    try:
        data = await store.get(spool_key(media_id))
    except ObjectNotFoundError:
        return None
    local = spool_directory(runtime) / f"{media_id}.{secrets.token_hex(4)}.fetched"
    await asyncio.to_thread(_write_private, local, data)
    return local


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


async def _forget_upload(runtime: Runtime, media_id: int) -> None:
    """Remove the waiting upload: processed, failed or deleted."""
    store = spool_store(runtime)
    if store is None:
        await asyncio.to_thread(spool_path(runtime, media_id).unlink, missing_ok=True)
    else:
        await store.delete(spool_key(media_id))


def object_key(media_id: int, variant: str, extension: str) -> str:
    """Where a variant is stored: derived from the media ID alone (its shard first)."""
    return f"{shard_of(media_id):04d}/{media_id}/{variant}.{extension}"


async def do_upload(
    runtime: Runtime, account_id: int, spooled: Path, edit: Edit, filter_name: str
) -> tuple[int, int]:
    """Record the photo (processing) and its processing task; (media ID, outbox row ID).

    ``spooled`` is moved under the media ID before the row commits, so a committed row
    always finds its upload; a crash before the commit leaves only a stray spool file.
    """
    shard = shard_of(account_id)
    async with runtime.invalidating() as changed, runtime.router.begin(shard) as conn:
        media_id = int(await conn.scalar(select(next_id(shard))) or 0)
        # Its key may hold "no such photo", cached by a request that named the ID early.
        changed.add(media_key(media_id))
        await _keep_upload(runtime, spooled, media_id)
        focus_x, focus_y = edit.focus or (0.0, 0.0)
        await conn.execute(
            insert(media_attachments).values(
                id=media_id,
                account_id=account_id,
                state="processing",
                filter=filter_name,
                description=edit.description or "",
                focus_x=focus_x,
                focus_y=focus_y,
            )
        )
        row_id = await enqueue(conn, shard, PROCESS, media_id=media_id)
    return media_id, row_id


@task(PROCESS, queue="media")
async def process_photo(relay: Relay, payload: Payload) -> None:
    """Make, store and record every variant of one upload. Idempotent: a photo already
    ready is left alone, and a re-run rewrites the same keys with the same bytes."""
    runtime = relay.runtime
    assert runtime is not None
    media_id = int(payload["media_id"])
    async with runtime.router.connect_for(media_id) as conn:
        row = (
            await conn.execute(
                select(media_attachments.c.state, media_attachments.c.filter).where(
                    media_attachments.c.id == media_id
                )
            )
        ).first()
    if row is None or row.state != "processing":
        await _forget_upload(runtime, media_id)
        return
    source = await _fetch_upload(runtime, media_id)
    if source is None:
        # A run that finished meanwhile removed it (the retry then finds the photo ready),
        # or this host cannot see the spool: retried, and dead if it never appears.
        where = runtime.settings.media_spool_store or str(spool_directory(runtime))
        raise FileNotFoundError(
            f"upload {media_id} is not in the spool ({where}); workers on other hosts than "
            "the app servers need a shared media_spool_store"
        )
    try:
        await _process(runtime, media_id, source, row.filter)
    finally:
        if source != spool_path(runtime, media_id):  # a copy fetched from the spool store
            await asyncio.to_thread(source.unlink, missing_ok=True)


async def _process(runtime: Runtime, media_id: int, source: Path, filter_name: str) -> None:
    try:
        with metrics.PROCESS_SECONDS.time():
            made = await asyncio.to_thread(
                processing.process,
                source,
                filter_name=filter_name,
                max_pixels=runtime.settings.media_max_pixels,
                max_bytes=runtime.settings.media_max_bytes,
            )
    except processing.InvalidImage as exc:  # probe passed; a mismatch here is not retried
        metrics.PROCESSED.labels("refused").inc()
        await _mark_failed(runtime, media_id, str(exc))
        await _forget_upload(runtime, media_id)
        return
    store = runtime.store
    stored = []
    for variant in made.variants.values():
        key = object_key(media_id, variant.name, variant.extension)
        written = await store.put(key, variant.data)
        if written.md5_hex != variant.md5 or written.size != variant.size:
            raise RuntimeError(f"store {store.name!r} wrote {key} differently; retrying")
        stored.append((variant, key))
        metrics.STORED_BYTES.inc(variant.size)
    async with (
        runtime.invalidating(media_key(media_id)),
        runtime.router.begin_for(media_id) as conn,
    ):
        # Two runs of this task can overlap (a sweep or a broker may start one again): only
        # the first to get here records the photo, and a run that finds the photo deleted
        # meanwhile takes back what it wrote, so a deleted photo's bytes never come back.
        state = await conn.scalar(
            select(media_attachments.c.state)
            .where(media_attachments.c.id == media_id)
            .with_for_update()
        )
        if state == "processing":
            await _record(conn, media_id, made, stored, store.name)
            metrics.PROCESSED.labels("ready").inc()
        gone = state is None
    if gone:
        for _variant, key in stored:
            await store.delete(key)
    await _forget_upload(runtime, media_id)


async def _record(
    conn: AsyncConnection,
    media_id: int,
    made: processing.Processed,
    stored: list[tuple[processing.Variant, str]],
    store_name: str,
) -> None:
    """Record a processed photo's objects (size and MD5 as written) and mark it ready."""
    await conn.execute(delete(media_objects).where(media_objects.c.media_id == media_id))
    await conn.execute(
        insert(media_objects),
        [
            {
                "media_id": media_id,
                "variant": variant.name,
                "store": store_name,
                "key": key,
                "size": variant.size,
                "md5": variant.md5,
                "width": variant.width,
                "height": variant.height,
                "content_type": variant.mime_type,
            }
            for variant, key in stored
        ],
    )
    await conn.execute(
        update(media_attachments)
        .where(media_attachments.c.id == media_id)
        .values(
            state="ready",
            width=made.width,
            height=made.height,
            blurhash=made.blurhash,
            processed_at=datetime.now(UTC),
        )
    )


async def enqueue_delete_media(conn: AsyncConnection, shard: int, media_ids: list[int]) -> int:
    """Queue the removal of photos (their rows, then their stored objects) from ``shard``."""
    return await enqueue(conn, shard, DELETE, media_ids=[str(m) for m in media_ids])


@task(DELETE, queue="media")
async def delete_photos(relay: Relay, payload: Payload) -> None:
    """Remove each photo's records, then (in a task queued with that change) its objects.

    The records go first, with the objects' removal queued in the same transaction: from
    then on no copy made for a store migration can bring an object back (the copier
    looks again at the records after copying), and a crash cannot leave an object in a
    store with neither a record nor a queued delete naming it.
    """
    runtime = relay.runtime
    assert runtime is not None
    for media_id in (int(m) for m in payload["media_ids"]):
        queued: list[int] = []
        async with (
            runtime.invalidating(media_key(media_id)),
            runtime.router.begin_for(media_id) as conn,
        ):
            stored = (
                await conn.execute(
                    select(media_objects.c.store, media_objects.c.key).where(
                        media_objects.c.media_id == media_id
                    )
                )
            ).all()
            await conn.execute(delete(media_objects).where(media_objects.c.media_id == media_id))
            await conn.execute(delete(media_attachments).where(media_attachments.c.id == media_id))
            if stored:
                objects = [[obj.store, obj.key] for obj in stored]
                queued.append(
                    await enqueue(conn, shard_of(media_id), DELETE_OBJECTS, objects=objects)
                )
        await relay.dispatch(queued)
        await _forget_upload(runtime, media_id)


@task(DELETE_OBJECTS, queue="media")
async def delete_objects(relay: Relay, payload: Payload) -> None:
    """Remove objects whose records are gone, from every store that may hold them."""
    runtime = relay.runtime
    assert runtime is not None
    for store, key in payload["objects"]:
        await runtime.media.delete_recorded(key, store)


async def _mark_failed(runtime: Runtime, media_id: int, why: str) -> None:
    async with (
        runtime.invalidating(media_key(media_id)),
        runtime.router.begin_for(media_id) as conn,
    ):
        await conn.execute(
            update(media_attachments)
            .where(media_attachments.c.id == media_id, media_attachments.c.state == "processing")
            .values(state="failed", error=why)
        )


async def wait_for_processing(runtime: Runtime, row_id: int) -> bool:
    """Start the processing; True if it finished within ``media_wait_seconds``.

    It goes on past that (and the outbox retries it if it fails).
    """
    return await runtime.relay.start_and_wait(row_id, runtime.settings.media_wait_seconds)


# --- reading --------------------------------------------------------------------------------


async def own_media(runtime: Runtime, account_id: int, media_id_text: str) -> Row[Any]:
    """The viewer's own upload, or the same 404 for anyone else's and for none."""
    media_id = path_id(runtime, media_id_text)
    async with runtime.router.connect_for(media_id) as conn:
        row: Row[Any] | None = (
            await conn.execute(select(media_attachments).where(media_attachments.c.id == media_id))
        ).first()
    if row is None or row.account_id != account_id:
        raise not_found()
    return row


#: The longest expiry S3's presigned URLs (SigV4) allow.
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600


async def media_url(runtime: Runtime, key: str) -> str:
    """A signed, expiring URL for a stored object.

    With a CDN configured: the CDN's address of photogram's own signed path. Otherwise a
    store that can presign (S3) is fetched from directly, and the local store through
    photogram's signed path.
    """
    settings = runtime.settings
    ttl = settings.media_url_ttl_seconds
    if not settings.media_cdn_url:
        presigned = await runtime.store.presigned_url(key, min(ttl, MAX_PRESIGNED_SECONDS))
        if presigned is not None:
            return presigned
    base = (settings.media_cdn_url or settings.base_url).rstrip("/")
    return base + sign(settings.secret_key.get_secret_value(), f"/media/p/{key}", ttl)


async def render(runtime: Runtime, row: Row[Any]) -> MediaAttachment:
    async with runtime.router.connect_for(row.id) as conn:
        objects = (
            await conn.execute(select(media_objects).where(media_objects.c.media_id == row.id))
        ).all()
    urls = {obj.key: await media_url(runtime, obj.key) for obj in objects}
    by_variant = {obj.variant: obj for obj in objects}
    return render_attachment(row, by_variant, lambda obj: urls[obj.key])


async def do_edit(runtime: Runtime, row: Row[Any], edit: Edit) -> Row[Any]:
    if row.status_id is not None:
        raise refused("This photo is already attached to a post")
    changes: dict[str, Any] = {}
    if edit.description is not None:
        changes["description"] = edit.description
    if edit.focus is not None:
        changes["focus_x"], changes["focus_y"] = edit.focus
    async with (
        runtime.invalidating(media_key(int(row.id))),
        runtime.router.begin_for(row.id) as conn,
    ):
        if changes:
            await conn.execute(
                update(media_attachments).where(media_attachments.c.id == row.id).values(**changes)
            )
        fresh: Row[Any] = (
            await conn.execute(select(media_attachments).where(media_attachments.c.id == row.id))
        ).one()
    return fresh
