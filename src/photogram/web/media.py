"""Serving avatars (from the media store) and the default images.

Stored avatars never change under their name (a new upload gets a new name), so they are
served as immutable: a client or proxy may keep them for a year without asking again.
The default images are drawn with libvips on first use instead of being shipped as files.
"""

from __future__ import annotations

import asyncio
import hashlib
from functools import cache

import pyvips
from fastapi import APIRouter, Request, Response

from photogram.accounts import avatars
from photogram.media.stores import ObjectNotFoundError, StoreUnavailableError
from photogram.web.deps import RuntimeDep
from photogram.web.errors import ApiError, not_found

api = APIRouter(tags=["media"])

IMMUTABLE = "public, max-age=31536000, immutable"
# The default images may be redrawn differently by a later version: cached for a day only.
DEFAULT_CACHE = "public, max-age=86400"

BACKGROUND = 0xB8  # neutral grey
FIGURE = 0xE4  # lighter grey silhouette


def _etag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _image_response(
    request: Request, content: bytes, media_type: str, cache_control: str
) -> Response:
    etag = _etag(content)
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        # User-supplied content (re-encoded, but still): never let a browser sniff it as HTML.
        "X-Content-Type-Options": "nosniff",
    }
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@api.api_route("/media/avatars/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def avatar(request: Request, runtime: RuntimeDep, name: str) -> Response:
    # Only names photogram makes are looked up, so nothing a client writes here can name
    # any other object.
    key = avatars.key_of(name)
    if key is None:
        raise not_found()
    try:
        content = await runtime.store.get(key)
    except ObjectNotFoundError:
        raise not_found() from None
    except StoreUnavailableError:
        raise ApiError(503, "The media store is unavailable; try again shortly") from None
    return _image_response(request, content, "image/jpeg", IMMUTABLE)


@cache
def default_avatar() -> bytes:
    """A 400x400 grey square with a lighter head-and-shoulders silhouette, as PNG."""
    size = avatars.SIZE
    xyz = pyvips.Image.xyz(size, size)
    x, y = xyz[0], xyz[1]
    head = (x - size / 2) ** 2 + (y - size * 0.38) ** 2 < (size * 0.17) ** 2
    shoulders = ((x - size / 2) / (size * 0.34)) ** 2 + ((y - size) / (size * 0.32)) ** 2 < 1
    image = (head | shoulders).ifthenelse(FIGURE, BACKGROUND).cast("uchar")
    png: bytes = image.copy(interpretation="b-w").pngsave_buffer(compression=9, keep="none")
    return png


@cache
def default_header() -> bytes:
    """A plain grey 1500x500 header, as PNG (Mastodon's header proportions)."""
    image = (pyvips.Image.black(1500, 500) + BACKGROUND).cast("uchar")
    png: bytes = image.copy(interpretation="b-w").pngsave_buffer(compression=9, keep="none")
    return png


@api.api_route("/avatars/original/missing.png", methods=["GET", "HEAD"], include_in_schema=False)
async def missing_avatar(request: Request) -> Response:
    content = await asyncio.to_thread(default_avatar)
    return _image_response(request, content, "image/png", DEFAULT_CACHE)


@api.api_route("/headers/original/missing.png", methods=["GET", "HEAD"], include_in_schema=False)
async def missing_header(request: Request) -> Response:
    content = await asyncio.to_thread(default_header)
    return _image_response(request, content, "image/png", DEFAULT_CACHE)
