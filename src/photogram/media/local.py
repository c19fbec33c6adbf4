"""The filesystem store: one file per object under a root directory (the embedded default).

A key maps to a path by its "/"-separated segments, so ``media/123/1080.jpg`` is
``<root>/media/123/1080.jpg`` and the tree can be served, backed up or synced with
ordinary tools. Keys are validated before they become paths; nothing can name a file
outside the root.

Writes are atomic and durable: the bytes go to a temporary file in the target's own
directory (a dot-name no key can have), which is fsynced, renamed over the final name with
``os.replace`` (atomic on POSIX within one filesystem) and followed by an fsync of the
directory so the rename itself survives a power cut. A crash at any point leaves either
the old object or the new one under the key, never a half-written file; what it may leave
is a temporary file, which no read or listing ever sees and ``remove_stale_temporaries``
clears. The one exception is the bulk copy of a store migration (``copy_from``): its files
skip the fsyncs and are made durable together by ``flush()``, one ``syncfs`` per batch,
before the migration records the batch as done.

All file I/O runs in worker threads (``asyncio.to_thread``): a slow disk delays the request
that waits on it, not the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NoReturn

from photogram.media.stores import (
    CHUNK_SIZE,
    KEY,
    BlobStore,
    CopyOutcome,
    Digest,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStream,
    StoredObject,
    StoreError,
    StoreUnavailableError,
    check_key,
    check_prefix,
    digest_now,
)

#: Temporary files start with a dot, which no key segment may: they can never be read,
#: listed or overwritten as objects.
TEMPORARY_PREFIX = ".tmp-"
#: Attempts at creating a temporary file when a concurrent delete keeps removing the
#: (empty) directory it goes in.
CREATE_ATTEMPTS = 5
#: Errors that say the key collides with the tree's shape (a key naming a directory, or a
#: path through a file) rather than that the disk is in trouble.
_SHAPE_ERRORS = (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY)


def _syncfs(fd: int) -> None:
    """Flush the whole filesystem holding ``fd`` (Linux ``syncfs``; ``sync`` elsewhere)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "syncfs"):
        os.sync()
        return
    if libc.syncfs(fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        # A concurrent delete emptied and pruned the directory after our change: its own
        # removal is the later state, and nothing of ours is left to make durable.
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    is_dir: bool
    size: int
    modified: float

    @property
    def sort_key(self) -> str:
        # A directory sorts as its name plus "/", so walking directories in this order
        # yields keys in plain string order: "a-b" comes before "a/x" as it does in S3.
        return self.name + "/" if self.is_dir else self.name


def _scan(directory: Path) -> list[_Entry]:
    """The directory's entries that can be objects or hold them, sorted for listing."""
    entries = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if not KEY.fullmatch(entry.name):
                    continue  # temporary files, lost+found and other foreign names
                try:
                    if entry.is_dir(follow_symlinks=False):
                        entries.append(_Entry(entry.name, True, 0, 0.0))
                    elif entry.is_file():
                        info = entry.stat()
                        entries.append(_Entry(entry.name, False, info.st_size, info.st_mtime))
                except FileNotFoundError:
                    continue  # deleted while we looked
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries.sort(key=lambda e: e.sort_key)
    return entries


def _modified(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class LocalStore(BlobStore):
    def __init__(self, root: Path, *, name: str = "local") -> None:
        # Absolute now: a later chdir must not move the store.
        self.root = Path(os.path.normpath(Path(root).absolute()))
        self.name = name

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _fail(self, exc: OSError, action: str, key: str | None = None) -> NoReturn:
        reason = exc.strerror or str(exc)
        if exc.errno in _SHAPE_ERRORS and key is not None:
            raise StoreError(
                f"media store {self.name!r} cannot {action} {key!r}: the key collides with an "
                f"existing object or directory ({reason})"
            ) from exc
        where = f"{action} {key!r}" if key is not None else action
        message = f"media store {self.name!r} cannot {where} under {str(self.root)!r}: {reason}"
        if exc.errno in _SHAPE_ERRORS:
            raise StoreError(message) from exc
        raise StoreUnavailableError(message) from exc

    async def put(self, key: str, data: bytes) -> StoredObject:
        path = self._path(key)
        try:
            digest = await asyncio.to_thread(self._put, path, data)
        except OSError as exc:
            self._fail(exc, "write", key)
        return StoredObject(key, digest.size, digest.md5_hex)

    def _put(self, path: Path, data: bytes) -> Digest:
        self._write(path, data, durable=True)
        return digest_now(data)

    def _write(self, path: Path, data: bytes, *, durable: bool) -> None:
        """Write ``data`` to a temporary file and rename it to ``path``; with ``durable``,
        fsync the file before the rename and the directories after it."""
        created: list[Path] = []
        for attempt in range(CREATE_ATTEMPTS):
            temporary = path.parent / f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}"
            try:
                created += self._make_directories(path.parent)
                # 0o644 less the umask: readable by a web server that serves the tree.
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                break
            except FileNotFoundError:
                # A delete pruned a directory on the way (it was empty until our file is
                # in it): make it again.
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
        try:
            try:
                _write_all(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
        if durable:
            _fsync_directory(path.parent)
            for directory in created:
                _fsync_directory(directory.parent)

    async def copy_from(self, source: BlobStore, key: str, size: int, md5_hex: str) -> CopyOutcome:
        """From another directory tree, in one trip to a worker thread: look, read, check
        and write, the source's MD5 computed once. What it writes is made durable by
        ``flush()`` (one ``syncfs`` for a whole batch) rather than by an fsync per file; the
        rename still makes each object appear whole or not at all."""
        if not isinstance(source, LocalStore):
            return await super().copy_from(source, key, size, md5_hex)
        path = self._path(key)
        return await asyncio.to_thread(self._copy_from, source, key, path, size, md5_hex)

    def _copy_from(
        self, source: LocalStore, key: str, path: Path, size: int, md5_hex: str
    ) -> CopyOutcome:
        try:
            status = os.stat(path)
            if stat.S_ISREG(status.st_mode) and status.st_size == size:
                return "present"
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            self._fail(exc, "look up", key)
        try:
            data = source._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return "source-differs"
        except OSError as exc:
            source._fail(exc, "read", key)
        if len(data) != size or hashlib.md5(data, usedforsecurity=False).hexdigest() != md5_hex:
            return "source-differs"
        try:
            self._write(path, data, durable=False)
        except OSError as exc:
            self._fail(exc, "write", key)
        return "copied"

    async def flush(self) -> None:
        try:
            await asyncio.to_thread(self._sync_filesystem)
        except OSError as exc:
            self._fail(exc, "flush")

    def _sync_filesystem(self) -> None:
        try:
            fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            return  # nothing written yet
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def _make_directories(self, directory: Path) -> list[Path]:
        """Create ``directory`` and missing parents; returns those created (for fsync)."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            if directory.parent == directory:
                break
            directory = directory.parent
        created = []
        for path in reversed(missing):
            try:
                path.mkdir()
                created.append(path)
            except FileExistsError:
                if not path.is_dir():
                    raise
        return created

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            self._fail(exc, "read", key)

    def _not_found(self, key: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(f"media store {self.name!r} has no object {key!r}")

    async def open(self, key: str) -> ObjectStream:
        path = self._path(key)
        try:
            file, info = await asyncio.to_thread(self._open, path, key)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            self._fail(exc, "read", key)

        async def read(size: int) -> bytes:
            try:
                return await asyncio.to_thread(file.read, size)
            except OSError as exc:
                self._fail(exc, "read", key)

        async def close() -> None:
            await asyncio.to_thread(file.close)

        return ObjectStream(info, read, close)

    def _open(self, path: Path, key: str) -> tuple[BinaryIO, ObjectInfo]:
        file = path.open("rb")
        try:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
        except BaseException:
            file.close()
            raise
        return file, ObjectInfo(key, status.st_size, None, _modified(status.st_mtime))

    async def digest(self, key: str) -> StoredObject:
        # As BlobStore.digest (streamed, chunk by chunk), but opened, read and hashed in
        # one trip to a worker thread rather than one per chunk.
        path = self._path(key)
        try:
            return await asyncio.to_thread(self._digest, path, key)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            self._fail(exc, "read", key)

    def _digest(self, path: Path, key: str) -> StoredObject:
        file, _info = self._open(path, key)
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        with file:
            while chunk := file.read(CHUNK_SIZE):
                size += len(chunk)
                md5.update(chunk)
        return StoredObject(key, size, md5.hexdigest())

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            status = await asyncio.to_thread(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._fail(exc, "look up", key)
        if not stat.S_ISREG(status.st_mode):
            return None
        # No MD5: the filesystem keeps none, and reading the file to make one is what
        # digest() is for.
        return ObjectInfo(key, status.st_size, None, _modified(status.st_mtime))

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(self._delete, path)
        except OSError as exc:
            self._fail(exc, "delete", key)

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        # Durable like a write: a delete undone by a power cut could resurrect an object
        # the database no longer knows.
        _fsync_directory(path.parent)
        # Directories left empty go too (one per deleted photo would pile up). A put racing
        # this into the same directory recreates it (see _write).
        directory = path.parent
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                break
            directory = directory.parent

    async def iterate(
        self, prefix: str = "", *, start_after: str = ""
    ) -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        # Start at the deepest directory the prefix names in full; the rest of the prefix
        # filters entries on the way down.
        base = prefix.rpartition("/")[0]
        start = self.root.joinpath(*base.split("/")) if base else self.root
        async for info in self._walk(base + "/" if base else "", start, prefix, start_after):
            yield info

    async def _walk(
        self, directory_key: str, directory: Path, prefix: str, start_after: str
    ) -> AsyncIterator[ObjectInfo]:
        try:
            entries = await asyncio.to_thread(_scan, directory)
        except OSError as exc:
            self._fail(exc, "list", directory_key or "/")
        for entry in entries:
            key = directory_key + entry.name
            if entry.is_dir:
                inner = key + "/"
                wanted = inner.startswith(prefix) or prefix.startswith(inner)
                # Every key inside sorts after `inner`: skip the directory when all of them
                # sort at or before start_after.
                passed = start_after >= inner and not start_after.startswith(inner)
                if wanted and not passed:
                    async for info in self._walk(
                        inner, directory / entry.name, prefix, start_after
                    ):
                        yield info
            elif key.startswith(prefix) and key > start_after:
                yield ObjectInfo(key, entry.size, None, _modified(entry.modified))

    async def close(self) -> None:
        pass  # every call opens and closes its own files

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._probe)
        except OSError as exc:
            self._fail(exc, "write")

    def _probe(self) -> None:
        self._make_directories(self.root)
        probe = self.root / f"{TEMPORARY_PREFIX}check-{secrets.token_hex(8)}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"photogram")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)

    async def remove_stale_temporaries(self, older_than_seconds: float = 86400) -> int:
        """Delete temporary files left by writes that crashed; returns how many.

        Only files older than ``older_than_seconds`` go, so writes in flight are left alone.
        """
        try:
            return await asyncio.to_thread(
                self._remove_temporaries, time.time() - older_than_seconds
            )
        except OSError as exc:
            self._fail(exc, "clean up")

    def _remove_temporaries(self, cutoff: float) -> int:
        removed = 0
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TEMPORARY_PREFIX):
                    continue
                path = Path(directory, name)
                with suppress(FileNotFoundError):
                    if path.lstat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed
