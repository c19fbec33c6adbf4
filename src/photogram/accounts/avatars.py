"""Avatars: an upload checked by its content, re-encoded, and stored under a fresh key in
the media store in use (so every app server, and the media migration, sees them).

An upload is hostile until proven otherwise. It is read under a hard byte limit, recognised
by its magic bytes (never by its file name or the content type the client claims), its
pixel count is checked from the header before a single pixel is decoded, and it is decoded
strictly (a truncated or corrupt file is refused rather than padded with grey). What is
stored is never the upload itself but a fresh 400x400 sRGB JPEG re-encoded by libvips with
every metadata block dropped: EXIF orientation is applied first, and GPS, camera serials,
XMP, IPTC, ICC profiles and comments (or a script smuggled into one) go nowhere.
"""

from __future__ import annotations

import re
import secrets
from typing import Protocol

import pyvips

from photogram.media.processing import describe_bytes

SIZE = 400
JPEG_QUALITY = 85
#: Longest side over shortest side. A 1x100000 strip fits any pixel budget, yet covering a
#: 400x400 square with it means upscaling it to 400x40,000,000 before the crop, and what
#: survives the crop is a smear: such an upload is refused rather than "repaired".
MAX_ASPECT = 20
CHUNK = 64 * 1024

DIRECTORY = "avatars"
#: ``<account id>-<22 random URL-safe characters>.jpg``: the only names ever stored or served.
NAME = re.compile(r"[0-9]{1,20}-[A-Za-z0-9_-]{22}\.jpg")

ACCEPTED = "a JPEG, PNG, WebP or GIF image"


class AvatarRejectedError(ValueError):
    """The upload is not an acceptable avatar; the message says why, to the client."""


class Readable(Protocol):
    async def read(self, size: int = -1) -> bytes: ...


async def read_limited(upload: Readable, limit: int) -> bytes:
    """The upload's bytes, or AvatarRejectedError as soon as more than ``limit`` arrive."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise AvatarRejectedError(f"is larger than {describe_bytes(limit)}")
        chunks.append(chunk)
    return b"".join(chunks)


def sniff(data: bytes) -> str | None:
    """The libvips loader for ``data``'s format, judged by its magic bytes; None if refused.

    Deciding here, before libvips looks, means a file in any other format (SVG, PDF, TIFF,
    HEIF …) never reaches the parser for that format, whatever libvips could open.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "jpegload_buffer"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "pngload_buffer"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gifload_buffer"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webpload_buffer"
    return None


def process(data: bytes, max_pixels: int) -> bytes:
    """``data`` as a 400x400 sRGB JPEG without metadata, or AvatarRejectedError.

    CPU-bound and blocking: run it in a thread.
    """
    if not data:
        raise AvatarRejectedError("is empty")
    loader = sniff(data)
    if loader is None:
        raise AvatarRejectedError(f"is not {ACCEPTED}")
    try:
        # Lazy: only the header is parsed here, so a decompression bomb costs nothing yet.
        # revalidate: never answer from libvips' operation cache, so the sizes checked
        # below are this upload's own.
        header = pyvips.Image.new_from_buffer(data, "", revalidate=True)
        width, height = int(header.width), int(header.height)
        picked = header.get("vips-loader")
    except pyvips.Error:
        raise AvatarRejectedError("could not be read as an image") from None
    if picked != loader:
        raise AvatarRejectedError(f"is not {ACCEPTED}")
    if width < 1 or height < 1:
        raise AvatarRejectedError("has no pixels")
    if width * height > max_pixels:
        raise AvatarRejectedError(
            f"is too large an image ({width}x{height}; at most {max_pixels:,} pixels)"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise AvatarRejectedError(
            f"is too long and thin ({width}x{height}; at most {MAX_ASPECT}:1)"
        )
    try:
        image = pyvips.Image.thumbnail_buffer(
            data,
            SIZE,
            height=SIZE,
            size="both",  # small avatars are scaled up: every stored avatar is 400x400
            crop="centre",
            export_profile="srgb",
            # Given as loader options: thumbnail's own fail_on keyword does not reach the
            # loader. "error" refuses truncated and corrupt files instead of padding them.
            option_string="fail_on=error",
        )
        if image.get("vips-loader") != loader:  # the same bytes, so never; but be sure
            raise AvatarRejectedError(f"is not {ACCEPTED}")
        if image.interpretation != "srgb":
            image = image.colourspace("srgb")
        if image.hasalpha():
            image = image.flatten(background=[255, 255, 255])
        if (image.width, image.height) != (SIZE, SIZE):
            image = image.gravity("centre", SIZE, SIZE, extend="copy")
        jpeg: bytes = image.cast("uchar").jpegsave_buffer(
            Q=JPEG_QUALITY, keep="none", optimize_coding=True
        )
    except pyvips.Error:
        raise AvatarRejectedError("could not be decoded (corrupt or truncated)") from None
    return jpeg


def new_key(account_id: int) -> str:
    """A fresh store key for an avatar of ``account_id``: ``avatars/<id>-<random>.jpg``.

    The name is new on every upload, so a URL, once given out, always means the same
    bytes (it is served as immutable).
    """
    return f"{DIRECTORY}/{account_id}-{secrets.token_urlsafe(16)}.jpg"


def key_of(name: str) -> str | None:
    """The store key of the avatar called ``name``; None for any name photogram never makes."""
    return f"{DIRECTORY}/{name}" if NAME.fullmatch(name) else None
