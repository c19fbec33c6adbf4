"""Blob stores: where media bytes live, behind one interface.

Everything else in photogram reaches stored media only through ``BlobStore``, so a store can
be swapped, wrapped (the store migration writes to two at once) or faked without the
callers knowing. Two implementations exist: ``LocalStore`` (files under the data dir, the
embedded default) and ``S3Store`` (any S3-compatible service). ``open_store`` builds one
from settings by name.

Every ``put`` returns the size and MD5 of the bytes photogram sent, computed by photogram
itself: that is what the database records and what the migration verifier later compares
a store's content against. An ETag is the store's opinion and is never taken for an MD5.

Callers see only the errors below, never botocore's or ``OSError``: ``ObjectNotFoundError``
(the key has no object), ``StoreUnavailableError`` (the store cannot answer now: unreachable,
timing out, disk full; worth retrying) and ``StoreError`` for the rest (misconfiguration,
access denied). A key that breaks the key rules is a ``ValueError`` before any I/O.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

from photogram.errors import ConfigError, PhotogramError

if TYPE_CHECKING:
    from photogram.settings import Settings

#: One path segment of a key. Never starting with "." rules out "." and "..", hidden files
#: and the temporary files LocalStore writes through, in one stroke.
SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
KEY = re.compile(rf"{SEGMENT}(?:/{SEGMENT})*")
#: S3 allows 1,024 bytes including a store's prefix; filesystems allow 255 per segment.
MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 255

#: Chunks handed out by ``BlobStore.open``: large enough to keep per-chunk overhead low,
#: small enough that serving many photos at once stays cheap in memory.
CHUNK_SIZE = 256 * 1024
#: Below this size an MD5 is computed on the event loop; above it, in a thread (hashlib
#: releases the GIL, so a 5 MiB photo does not stall other requests for ~10 ms).
INLINE_DIGEST_LIMIT = 256 * 1024


class StoreError(PhotogramError):
    """A store refused or failed an operation; the message names the store and says why."""


class StoreUnavailableError(StoreError):
    """The store cannot answer now (unreachable, timing out, out of space): retry later."""


class ObjectNotFoundError(StoreError):
    """No object under the key."""


class InvalidKeyError(ValueError):
    """A key (or key prefix) photogram would never make: refused before any I/O."""


def check_key(key: str) -> str:
    """``key`` if it is a valid object key, else InvalidKeyError.

    Keys are relative, "/"-separated paths of letters, digits, ".", "_" and "-", no segment
    starting with ".": the same key is then a safe file path under LocalStore's root and a
    plain S3 key, and cannot name anything outside the store.
    """
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_LENGTH
        or not KEY.fullmatch(key)
        or any(len(segment) > MAX_SEGMENT_LENGTH for segment in key.split("/"))
    ):
        raise InvalidKeyError(
            f"invalid object key {key!r}: expected segments of letters, digits, '.', '_' "
            "and '-' separated by '/', none starting with '.', at most "
            f"{MAX_KEY_LENGTH} characters"
        )
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` if some valid key could start with it ("" included), else InvalidKeyError."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


@dataclass(frozen=True, slots=True)
class Digest:
    size: int
    md5: bytes

    @property
    def md5_hex(self) -> str:
        return self.md5.hex()

    @property
    def md5_base64(self) -> str:
        """As the Content-MD5 header wants it."""
        return base64.b64encode(self.md5).decode("ascii")


async def compute_digest(data: bytes) -> Digest:
    if len(data) > INLINE_DIGEST_LIMIT:
        return await asyncio.to_thread(digest_now, data)
    return digest_now(data)


def digest_now(data: bytes) -> Digest:
    return Digest(len(data), hashlib.md5(data, usedforsecurity=False).digest())


#: What ``BlobStore.copy_from`` did: found the object already there, copied it, or found
#: the source without the bytes the caller expected (missing, or another size or MD5).
CopyOutcome = Literal["present", "copied", "source-differs"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a put wrote: the record the database keeps for the object."""

    key: str
    size: int
    md5_hex: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store says about an object it holds.

    ``md5_hex`` is the MD5 photogram recorded with the object when it wrote it, where the
    store keeps such a record (S3 user metadata, from ``head`` only), else None. It is the
    store's word, not a check of the content: ``BlobStore.digest`` reads the content.
    """

    key: str
    size: int
    md5_hex: str | None = None
    modified: datetime | None = None


class ObjectStream:
    """An object being read: its info, then its bytes in chunks by ``async for``.

    Closes itself when read to the end or when reading fails; otherwise close it with
    ``aclose()`` (or ``async with``). A reader keeps the version of the object it opened
    even if the key is overwritten meanwhile (a file by rename, S3 by one GET).
    """

    def __init__(
        self,
        info: ObjectInfo,
        read: Callable[[int], Awaitable[bytes]],
        close: Callable[[], Awaitable[None]],
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.info = info
        self._read = read
        self._close = close
        self._chunk_size = chunk_size
        self._closed = False

    @property
    def size(self) -> int:
        return self.info.size

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await self._read(self._chunk_size)
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """Everything not read yet."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class BlobStore(ABC):
    """Objects under keys. Every method validates its key first (``check_key``).

    Concurrent calls are safe. Writes are atomic per key: a reader sees the old object or
    the new one, never a mixture, and a failed or interrupted put leaves the old one (or
    nothing) under the key.
    """

    #: The name the store has in settings (``media_stores``); used in every message.
    name: str

    @abstractmethod
    async def put(self, key: str, data: bytes) -> StoredObject:
        """Store ``data`` under ``key``, replacing any object there.

        Returns once the object is durable; size and MD5 are of ``data`` as sent.
        """

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The object's bytes; ObjectNotFoundError if there is none."""

    @abstractmethod
    async def open(self, key: str) -> ObjectStream:
        """The object as a stream of chunks; ObjectNotFoundError (raised here, before any
        byte is read) if there is none."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """Size (and what else the store knows) of the object, or None if there is none."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; a key without one is not an error (deletes are retried)."""

    @abstractmethod
    def iterate(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (byte order, as S3
        lists), starting after key ``start_after`` if given, so a long scan can resume
        from the last key it handled. Objects under names photogram could not have made
        (temporary files, foreign keys) are not listed."""

    @abstractmethod
    async def check(self) -> None:
        """Return if the store can be written now; else StoreError saying why."""

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def digest(self, key: str) -> StoredObject:
        """Size and MD5 of the object's content as read back now (streamed, not buffered)."""
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        async with await self.open(key) as stream:
            async for chunk in stream:
                size += len(chunk)
                md5.update(chunk)
        return StoredObject(key, size, md5.hexdigest())

    async def copy_from(self, source: BlobStore, key: str, size: int, md5_hex: str) -> CopyOutcome:
        """Copy ``key`` from ``source`` unless this store holds it already (same size, and
        the same MD5 where the store keeps one). The source's bytes must be ``size`` bytes
        with MD5 ``md5_hex``; otherwise nothing is written.

        This is the bulk copy of a store migration: what it writes may be durable only
        after the next ``flush()``.
        """
        info = await self.head(key)
        if info is not None and info.size == size and info.md5_hex in (None, md5_hex):
            return "present"
        try:
            data = await source.get(key)
        except ObjectNotFoundError:
            return "source-differs"
        if len(data) != size or (await compute_digest(data)).md5_hex != md5_hex:
            return "source-differs"
        await self.put(key, data)
        return "copied"

    async def flush(self) -> None:
        """Make everything ``copy_from`` wrote so far durable (a store whose every write
        is durable at once has nothing to do)."""
        return

    async def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        """A URL that fetches the object directly from the store until it expires, or None
        if the store cannot make one (then photogram serves the object itself)."""
        check_key(key)
        return None

    @abstractmethod
    async def close(self) -> None:
        """Release connections; a store used again afterwards opens new ones."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class WrappingStore(BlobStore):
    """A store in front of another: each call goes through to ``inner`` unless a subclass
    changes it. ``digest``, ``exists`` and ``copy_from`` keep BlobStore's own, built on this
    store's reads and writes, so what a subclass changes applies to them too."""

    def __init__(self, inner: BlobStore, *, name: str) -> None:
        self.inner = inner
        self.name = name

    async def put(self, key: str, data: bytes) -> StoredObject:
        return await self.inner.put(key, data)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def open(self, key: str) -> ObjectStream:
        return await self.inner.open(key)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.inner.head(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    def iterate(self, prefix: str = "", *, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.iterate(prefix, start_after=start_after)

    async def check(self) -> None:
        await self.inner.check()

    async def flush(self) -> None:
        await self.inner.flush()

    async def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        return await self.inner.presigned_url(key, expires_seconds)

    async def close(self) -> None:
        await self.inner.close()


def open_store(settings: Settings, name: str | None = None) -> BlobStore:
    """The store ``name`` from ``settings.media_stores`` (default: ``settings.media_store``).

    Opening does no I/O: connections are made on first use, so an unreachable store shows
    up as StoreUnavailableError from the first call (or from ``check()``).
    """
    from photogram.settings import FaultyStoreSettings, FilesystemStoreSettings

    chosen = settings.media_store if name is None else name
    config = settings.media_stores.get(chosen)
    if config is None:
        known = ", ".join(sorted(settings.media_stores)) or "none configured"
        raise ConfigError(f"unknown media store {chosen!r} (media_stores: {known})")
    if isinstance(config, FilesystemStoreSettings):
        from photogram.media.local import LocalStore

        return LocalStore(config.path, name=chosen)
    if isinstance(config, FaultyStoreSettings):
        from photogram.media.faulty import FaultyStore

        return FaultyStore(open_store(settings, config.store), config, name=chosen)
    # Imported only here: the embedded default never loads botocore (~0.3 s at start-up).
    from photogram.media.s3 import S3Store

    return S3Store(config, name=chosen)


def open_stores(settings: Settings) -> dict[str, BlobStore]:
    """Every configured store by name (close each when done)."""
    return {name: open_store(settings, name) for name in settings.media_stores}
