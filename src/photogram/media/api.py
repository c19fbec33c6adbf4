"""Photo endpoints: upload (``/api/v2/media``), read and edit, filters, and serving the files."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path
from typing import IO, Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from photogram.media import actions, filters
from photogram.media.processing import describe_bytes
from photogram.media.schemas import MediaAttachment, MediaForm, PhotoFilter
from photogram.media.stores import InvalidKeyError, ObjectNotFoundError, StoreUnavailableError
from photogram.web.auth import Viewer, require_viewer
from photogram.web.body import (
    BodyTooLargeError,
    body_openapi,
    form_or_json,
    read_params_within,
    validate,
)
from photogram.web.deps import RuntimeDep
from photogram.web.errors import ApiError
from photogram.web.signing import verify

api = APIRouter(tags=["media"])

WriteMedia = Annotated[Viewer, Depends(require_viewer("write:media"))]

#: Room for the other form fields and the multipart framing around the photo itself.
FORM_OVERHEAD = 64 * 1024
COPY_CHUNK = 1024 * 1024
CONTENT_TYPES = {"jpg": "image/jpeg", "webp": "image/webp", "png": "image/png"}


async def spool_upload(upload: UploadFile, directory: Path, limit: int) -> Path:
    """The upload copied to a private file in ``directory``, at most ``limit`` bytes."""

    def create() -> IO[bytes]:
        directory.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False)

    handle = await asyncio.to_thread(create)
    path = Path(handle.name)
    try:
        written = 0
        with handle:
            while chunk := await upload.read(COPY_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise actions.refused(f"The photo is larger than {describe_bytes(limit)}")
                await asyncio.to_thread(handle.write, chunk)
        return path
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise


@api.post(
    "/api/v2/media",
    response_model=MediaAttachment,
    responses={202: {"model": MediaAttachment, "description": "Accepted; still processing."}},
    openapi_extra=body_openapi(MediaForm, multipart=True),
)
async def upload(request: Request, runtime: RuntimeDep, viewer: WriteMedia) -> JSONResponse:
    """Upload a photo: 200 with the attachment once processed, 202 while still processing."""
    settings = runtime.settings
    try:
        params, files = await read_params_within(request, settings.media_max_bytes + FORM_OVERHEAD)
    except BodyTooLargeError:
        raise actions.refused(
            f"The photo is larger than {describe_bytes(settings.media_max_bytes)}"
        ) from None
    spooled: Path | None = None
    try:
        form = validate(MediaForm, params)
        edit = actions.check_edit(form.description, form.focus)
        filter_name = actions.check_filter(form.filter)
        upload_file = files.get("file")
        if upload_file is None:
            raise actions.refused("file is required: the photo, sent as multipart/form-data")
        spooled = await spool_upload(
            upload_file, actions.spool_directory(runtime), settings.media_max_bytes
        )
        await actions.check_photo(runtime, spooled)
        media_id, row_id = await actions.do_upload(
            runtime, viewer.account_id, spooled, edit, filter_name
        )
        spooled = None  # it is the upload's now
    finally:
        for file in files.values():
            await file.close()
        if spooled is not None:
            await asyncio.to_thread(spooled.unlink, missing_ok=True)
    done = await actions.wait_for_processing(runtime, row_id)
    row = await actions.own_media(runtime, viewer.account_id, str(media_id))
    body = await actions.render(runtime, row)
    ready = done and row.state == "ready"
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 202)


@api.get(
    "/api/v1/media/{id}",
    response_model=MediaAttachment,
    responses={206: {"model": MediaAttachment, "description": "Still processing."}},
)
async def get_media(id: str, runtime: RuntimeDep, viewer: WriteMedia) -> JSONResponse:
    """One of the viewer's uploads: 200 when processed, 206 while processing."""
    row = await actions.own_media(runtime, viewer.account_id, id)
    if row.state == "failed":
        raise ApiError(422, f"The photo could not be processed: {row.error}")
    body = await actions.render(runtime, row)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=200 if row.state == "ready" else 206
    )


@api.put(
    "/api/v1/media/{id}",
    response_model=MediaAttachment,
    openapi_extra=body_openapi(MediaForm),
)
async def edit_media(
    id: str,
    runtime: RuntimeDep,
    viewer: WriteMedia,
    form: Annotated[MediaForm, Depends(form_or_json(MediaForm))],
) -> MediaAttachment:
    """Change an upload's description or focal point, until it is attached to a post."""
    row = await actions.own_media(runtime, viewer.account_id, id)
    edit = actions.check_edit(form.description, form.focus)
    return await actions.render(runtime, await actions.do_edit(runtime, row, edit))


@api.get("/api/v1/photogram/filters", response_model=list[PhotoFilter], tags=["photogram"])
async def list_filters() -> list[PhotoFilter]:
    """The photo filters an upload can ask for (``filter``), in display order."""
    return [PhotoFilter(**f) for f in filters.list_filters()]


@api.get("/media/p/{key:path}", include_in_schema=False)
async def serve(
    key: str,
    request: Request,
    runtime: RuntimeDep,
    expires: str | None = None,
    signature: str | None = None,
) -> Response:
    """A stored photo, if the URL's signature is right and unexpired (else 403)."""
    secret = runtime.settings.secret_key.get_secret_value()
    if not verify(secret, f"/media/p/{key}", expires, signature):
        raise ApiError(403, "This media URL is invalid or has expired")
    try:
        data = await runtime.store.get(key)
    except (ObjectNotFoundError, InvalidKeyError):
        raise ApiError(404, "Record not found") from None
    except StoreUnavailableError:
        raise ApiError(503, "The media store is unavailable; try again shortly") from None
    # The bytes under a key never change, so the key itself makes a strong ETag.
    etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        # The bytes under a key never change, and the URL carries its own expiry.
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media_type = CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")
    return Response(data, media_type=media_type, headers=headers)
