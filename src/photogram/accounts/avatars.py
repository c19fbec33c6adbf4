"""Avatars: an upload checked by its content, re-encoded, and stored under a fresh name.

An upload is hostile until proven otherwise. It is read under a hard byte limit, recognised
by its magic bytes (never by its file name or the content type the client claims), its
pixel count is checked from the header before a single pixel is decoded, and it is decoded
strictly (a truncated or corrupt file is refused rather than padded with grey). What is
stored is never the upload itself but a fresh 400x400 sRGB JPEG re-encoded by libvips with
every metadata block dropped: EXIF orientation is applied first, and GPS, camera serials,
XMP, IPTC, ICC profiles and comments (or a script smuggled into one) go nowhere.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Protocol

import pyvips

from photogram.media.processing import describe_bytes
from photogram.settings import Settings

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


def directory(settings: Settings) -> Path:
    return settings.data_dir / "media" / DIRECTORY


def path_of(settings: Settings, name: str) -> Path | None:
    """Where the avatar called ``name`` is stored; None for any name photogram never makes."""
    return directory(settings) / name if NAME.fullmatch(name) else None


def store(settings: Settings, account_id: int, jpeg: bytes) -> str:
    """Write ``jpeg`` under a fresh name; its key (``avatars/<name>``). Blocking.

    Written to a temporary file in the same directory, flushed to disk, then renamed into
    place: a crash leaves either no file or the whole file under the final name, never a
    torn one. The name is new on every upload, so a URL, once given out, always means the
    same bytes (it is served as immutable).
    """
    target_dir = directory(settings)
    target_dir.mkdir(parents=True, exist_ok=True)
    name = f"{account_id}-{secrets.token_urlsafe(16)}.jpg"
    fd, temporary = tempfile.mkstemp(dir=target_dir, prefix=".incoming-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(jpeg)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # public images; mkstemp's 0600 would hide them from a proxy
        os.replace(temporary, target_dir / name)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(target_dir)  # makes the rename itself durable
    return f"{DIRECTORY}/{name}"


def delete(settings: Settings, key: str | None) -> None:
    """Remove the stored avatar ``key`` names, if it is one of ours and still there. Blocking."""
    if not key:
        return
    prefix, _, name = key.partition("/")
    path = path_of(settings, name) if prefix == DIRECTORY else None
    if path is not None:
        path.unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # platforms that cannot open a directory (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
