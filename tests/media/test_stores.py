"""Blob stores: one suite run against LocalStore and against S3Store on a real S3 server.

The S3 server is moto's standalone server, started once per module as a subprocess on a
loopback port; each test gets a fresh bucket. Settings tests close the file.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import itertools
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from photogram.errors import ConfigError
from photogram.media import local
from photogram.media.local import LocalStore
from photogram.media.s3 import S3Store
from photogram.media.stores import (
    BlobStore,
    ObjectNotFoundError,
    StoredObject,
    StoreError,
    StoreUnavailableError,
    open_store,
    open_stores,
)
from photogram.settings import (
    FilesystemStoreSettings,
    S3StoreSettings,
    Settings,
    load_settings,
)
from tests.media.s3server import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    create_bucket,
    free_port,
    list_raw_keys,
)

MiB = 1024 * 1024
_buckets = itertools.count()


def s3_config(endpoint: str | None, bucket: str, **extra: Any) -> S3StoreSettings:
    fields: dict[str, Any] = {
        "endpoint_url": endpoint,
        "bucket": bucket,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }
    return S3StoreSettings(kind="s3", **(fields | extra))


async def new_bucket(endpoint: str) -> str:
    bucket = f"photogram-test-{next(_buckets)}"
    await create_bucket(endpoint, bucket)
    return bucket


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[BlobStore]:
    opened: BlobStore
    if request.param == "local":
        opened = LocalStore(tmp_path / "media")
    else:
        opened = S3Store(s3_config(s3_endpoint, await new_bucket(s3_endpoint)))
    async with opened:
        yield opened


def everything_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


async def keys_of(store: BlobStore, prefix: str = "", start_after: str = "") -> list[str]:
    return [info.key async for info in store.iterate(prefix, start_after=start_after)]


# -- the shared suite ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 5 * MiB])
async def test_put_get_head_delete_round_trip(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    key = f"media/123/{size}.jpg"

    stored = await store.put(key, data)

    expected_md5 = hashlib.md5(data).hexdigest()
    assert stored == StoredObject(key, size, expected_md5)
    read_back = await store.get(key)
    assert read_back == data
    assert hashlib.md5(read_back).hexdigest() == stored.md5_hex
    assert await store.digest(key) == stored

    info = await store.head(key)
    assert info is not None
    assert (info.key, info.size) == (key, size)
    # S3 keeps the MD5 photogram sent as metadata; a filesystem keeps none.
    assert info.md5_hex == (expected_md5 if isinstance(store, S3Store) else None)
    assert info.modified is not None
    assert abs(info.modified - datetime.now(UTC)) < timedelta(minutes=5)
    assert await store.exists(key)

    async with await store.open(key) as stream:
        assert stream.size == size
        chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == data
    assert all(chunks)

    await store.delete(key)
    assert not await store.exists(key)
    assert await store.head(key) is None
    with pytest.raises(ObjectNotFoundError, match="has no object 'media/123/"):
        await store.get(key)
    with pytest.raises(ObjectNotFoundError):
        await store.open(key)
    with pytest.raises(ObjectNotFoundError):
        await store.digest(key)
    assert await keys_of(store) == []


async def test_overwrite_replaces_the_object(store: BlobStore) -> None:
    await store.put("media/1/original.jpg", b"first version")
    stored = await store.put("media/1/original.jpg", b"second")
    assert stored.md5_hex == hashlib.md5(b"second").hexdigest()
    assert await store.get("media/1/original.jpg") == b"second"
    info = await store.head("media/1/original.jpg")
    assert info is not None
    assert info.size == len(b"second")
    assert await keys_of(store) == ["media/1/original.jpg"]


@pytest.mark.parametrize("source_kind", ["local", "s3"])
async def test_copy_from_checks_the_source_and_skips_what_is_there(
    store: BlobStore, source_kind: str, tmp_path: Path, s3_endpoint: str
) -> None:
    """A migration's bulk copy, from either kind of store into either kind (a filesystem
    into a filesystem takes its one-trip path)."""
    source: BlobStore
    if source_kind == "local":
        source = LocalStore(tmp_path / "source", name="source")
    else:
        source = S3Store(s3_config(s3_endpoint, await new_bucket(s3_endpoint)), name="source")
    async with source:
        data = os.urandom(150_000)
        md5 = hashlib.md5(data).hexdigest()
        await source.put("media/7/1080.jpg", data)

        assert await store.copy_from(source, "media/7/1080.jpg", len(data), md5) == "copied"
        await store.flush()
        assert await store.digest("media/7/1080.jpg") == StoredObject(
            "media/7/1080.jpg", len(data), md5
        )
        assert await store.copy_from(source, "media/7/1080.jpg", len(data), md5) == "present"
        # The source does not hold what the record says: nothing is written.
        wrong = hashlib.md5(b"other").hexdigest()
        assert await store.copy_from(source, "media/7/1080.jpg", 1, wrong) == "source-differs"
        await source.put("media/8/1080.jpg", b"spoilt")
        outcome = await store.copy_from(source, "media/8/1080.jpg", 6, wrong)
        assert outcome == "source-differs"
        assert await store.copy_from(source, "media/9/1080.jpg", 6, wrong) == "source-differs"
        await store.flush()
        assert await keys_of(store) == ["media/7/1080.jpg"]
        if isinstance(store, LocalStore):
            assert not list((tmp_path / "media").rglob(".tmp-*"))


async def test_a_stream_closed_early_releases_the_object(store: BlobStore) -> None:
    data = os.urandom(3 * MiB)
    await store.put("media/2/big.jpg", data)
    stream = await store.open("media/2/big.jpg")
    first = await stream.__anext__()
    assert data.startswith(first)
    await stream.aclose()
    # Closed: iteration ends, and the store serves the next reader as usual.
    assert [chunk async for chunk in stream] == []
    assert await store.get("media/2/big.jpg") == data


async def test_deleting_a_missing_key_is_fine(store: BlobStore) -> None:
    await store.delete("media/never/was.jpg")
    await store.put("media/9/x.jpg", b"x")
    await store.delete("media/9/x.jpg")
    await store.delete("media/9/x.jpg")
    assert not await store.exists("media/9/x.jpg")


async def test_iterate_lists_keys_in_order_under_a_prefix(store: BlobStore) -> None:
    keys = ["a/1.jpg", "a/2.jpg", "a-b.jpg", "a/sub/3.jpg", "ab/4.jpg", "b.jpg", "a/sub-x/5.jpg"]
    for number, key in enumerate(keys):
        await store.put(key, b"x" * number)

    # Byte order, as S3 lists: "a-b.jpg" sorts before "a/…" since "-" < "/".
    assert await keys_of(store) == sorted(keys)
    assert await keys_of(store, "a/") == ["a/1.jpg", "a/2.jpg", "a/sub-x/5.jpg", "a/sub/3.jpg"]
    assert await keys_of(store, "a") == sorted(k for k in keys if k.startswith("a"))
    assert await keys_of(store, "a/sub") == ["a/sub-x/5.jpg", "a/sub/3.jpg"]
    assert await keys_of(store, "a/sub/") == ["a/sub/3.jpg"]
    assert await keys_of(store, "zzz") == []
    assert await keys_of(store, "a/1.jpg") == ["a/1.jpg"]

    # Resuming a scan after the last key handled.
    assert await keys_of(store, start_after="a/2.jpg") == [
        "a/sub-x/5.jpg",
        "a/sub/3.jpg",
        "ab/4.jpg",
        "b.jpg",
    ]
    assert await keys_of(store, "a/", start_after="a/sub-x/5.jpg") == ["a/sub/3.jpg"]
    assert await keys_of(store, start_after="a/sub-") == sorted(keys)[3:]

    sizes = {info.key: info.size async for info in store.iterate()}
    assert sizes == {key: number for number, key in enumerate(keys)}


async def test_iterate_pages_through_more_keys_than_one_listing(store: BlobStore) -> None:
    keys = sorted(f"media/{n % 11:02d}/{n:05d}.jpg" for n in range(1100))
    limit = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with limit:
            await store.put(key, key.encode())

    await asyncio.gather(*(put(key) for key in keys))
    if isinstance(store, S3Store):
        assert store.page_size < len(keys)  # so the listing below is two pages at least

    assert await keys_of(store) == keys
    assert await keys_of(store, "media/03/") == [k for k in keys if k.startswith("media/03/")]
    assert await keys_of(store, start_after=keys[1049]) == keys[1050:]


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside.jpg",
    "media/../../outside.jpg",
    "media/./x.jpg",
    ".hidden",
    "media/.tmp-0123456789abcdef",
    "media//x.jpg",
    "media/",
    "media\\x.jpg",
    "media/x y.jpg",
    "médià.jpg",
    "media/x.jpg\n",
    "media/\x00.jpg",
    "x" * 600,
    "a/" + "x" * 300,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused_before_any_io(
    store: BlobStore, key: str, tmp_path: Path
) -> None:
    before = everything_under(tmp_path)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.put(key, b"payload")
    with pytest.raises(ValueError, match="invalid object key"):
        await store.get(key)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.head(key)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.exists(key)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.delete(key)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.open(key)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.presigned_url(key, 60)
    assert everything_under(tmp_path) == before
    assert await keys_of(store) == []


@pytest.mark.parametrize("prefix", ["/", "../", "a//", ".tmp", "a/../"])
async def test_bad_prefixes_are_refused(store: BlobStore, prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        await keys_of(store, prefix)


async def test_keys_photogram_makes_are_accepted(store: BlobStore) -> None:
    keys = ["media/123/1080.jpg", "-leading-dash", "_x", "a/b/c/d/e.f.g", "A/B-c_D.webp"]
    for key in keys:
        await store.put(key, b"ok")
    assert await keys_of(store) == sorted(keys)


async def test_check_passes_on_a_usable_store(store: BlobStore) -> None:
    await store.check()


# -- presigned URLs and addressing ----------------------------------------------------------


def sigv4_query_signature_valid(url: str, secret_key: str) -> bool:
    """Check a SigV4 presigned GET URL the way S3 does (an implementation independent of
    botocore's): canonical request, string to sign, derived key, HMAC."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = params.pop("X-Amz-Signature")
    canonical_query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(params.items())
    )
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_key).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


async def test_presigned_urls_fetch_the_object_and_carry_a_signed_expiry(
    s3_endpoint: str,
) -> None:
    """moto serves presigned URLs without checking signature or expiry, so the expiry is
    shown by verifying the SigV4 signature independently: X-Amz-Expires is covered by the
    signature, hence enforced by any store that checks signatures (AWS, MinIO, …)."""
    async with S3Store(s3_config(s3_endpoint, await new_bucket(s3_endpoint))) as store:
        data = os.urandom(2000)
        await store.put("media/5/640.jpg", data)
        url = await store.presigned_url("media/5/640.jpg", 60)

        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "image/jpeg"

        params = dict(parse_qsl(urlsplit(url).query))
        assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert params["X-Amz-Expires"] == "60"
        assert params["X-Amz-Credential"].startswith(f"{ACCESS_KEY_ID}/")
        assert params["X-Amz-Credential"].endswith(f"/{REGION}/s3/aws4_request")
        signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert abs(signed_at - datetime.now(UTC)) < timedelta(minutes=1)
        assert sigv4_query_signature_valid(url, SECRET_ACCESS_KEY)

        # Changing the expiry, or the object, or signing with another secret breaks it.
        assert not sigv4_query_signature_valid(
            url.replace("X-Amz-Expires=60", "X-Amz-Expires=604800"), SECRET_ACCESS_KEY
        )
        assert not sigv4_query_signature_valid(
            url.replace("640.jpg", "1080.jpg"), SECRET_ACCESS_KEY
        )
        assert not sigv4_query_signature_valid(url, "another-secret")

        for bad in (0, -5, 7 * 24 * 3600 + 1):
            with pytest.raises(ValueError, match="expires_seconds"):
                await store.presigned_url("media/5/640.jpg", bad)


async def test_local_store_has_no_presigned_urls(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert await store.presigned_url("media/1/x.jpg", 60) is None


@pytest.mark.parametrize(
    ("endpoint", "extra", "expected"),
    [
        ("http://127.0.0.1:9000", {}, "http://127.0.0.1:9000/photos/media/1.jpg?"),
        (
            "http://localhost:9000",
            {"addressing_style": "virtual"},
            "http://photos.localhost:9000/media/1.jpg?",
        ),
        (None, {"region": "eu-west-1"}, "https://photos.s3.eu-west-1.amazonaws.com/media/1.jpg?"),
        (
            None,
            {"region": "eu-west-1", "addressing_style": "path"},
            "https://s3.eu-west-1.amazonaws.com/photos/media/1.jpg?",
        ),
        (
            "https://minio.example:9000/",
            {"prefix": "instance-a"},
            "https://minio.example:9000/photos/instance-a/media/1.jpg?",
        ),
    ],
)
async def test_addressing_style_shapes_the_urls(
    endpoint: str | None, extra: dict[str, Any], expected: str
) -> None:
    # Presigning is local work: none of these endpoints needs to exist.
    async with S3Store(s3_config(endpoint, "photos", **extra)) as store:
        url = await store.presigned_url("media/1.jpg", 300)
    assert url.startswith(expected)
    assert sigv4_query_signature_valid(url, SECRET_ACCESS_KEY)


async def test_a_prefix_keeps_stores_apart_in_one_bucket(s3_endpoint: str) -> None:
    bucket = await new_bucket(s3_endpoint)
    one = S3Store(s3_config(s3_endpoint, bucket, prefix="one"), name="one")
    two = S3Store(s3_config(s3_endpoint, bucket, prefix="two/"), name="two")
    whole = S3Store(s3_config(s3_endpoint, bucket), name="whole")
    async with one, two, whole:
        await one.put("media/1.jpg", b"one")
        await two.put("media/1.jpg", b"two")
        assert await one.get("media/1.jpg") == b"one"
        assert await two.get("media/1.jpg") == b"two"
        assert await keys_of(one) == ["media/1.jpg"]
        assert await keys_of(whole) == ["one/media/1.jpg", "two/media/1.jpg"]
        await one.delete("media/1.jpg")
        assert await two.get("media/1.jpg") == b"two"
    assert await list_raw_keys(s3_endpoint, bucket) == ["two/media/1.jpg"]


async def test_foreign_keys_in_a_bucket_are_not_listed(s3_endpoint: str) -> None:
    bucket = await new_bucket(s3_endpoint)
    async with httpx.AsyncClient() as client:  # moto takes unsigned requests
        for key in ("media/x.jpg", "other tool/file", "media/.hidden"):
            response = await client.put(f"{s3_endpoint}/{bucket}/{quote(key)}", content=b"x")
            assert response.status_code == 200
    async with S3Store(s3_config(s3_endpoint, bucket)) as store:
        assert await keys_of(store) == ["media/x.jpg"]


# -- failures ---------------------------------------------------------------------------------


def closed_port_store(**extra: Any) -> S3Store:
    return S3Store(s3_config(f"http://127.0.0.1:{free_port()}", "photos", **extra), name="down")


async def test_an_unreachable_store_fails_fast_and_clearly() -> None:
    async with closed_port_store(max_attempts=1, connect_timeout_seconds=1) as store:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "put": lambda: store.put("media/1.jpg", b"x"),
            "get": lambda: store.get("media/1.jpg"),
            "open": lambda: store.open("media/1.jpg"),
            "head": lambda: store.head("media/1.jpg"),
            "delete": lambda: store.delete("media/1.jpg"),
            "list": lambda: keys_of(store),
            "check": store.check,
        }
        for action, call in calls.items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=r"media store 'down' is unreachable"):
                await call()
            assert time.monotonic() - started < 2, action
        # Signing needs no connection: serving URLs can still be made.
        assert (await store.presigned_url("media/1.jpg", 60)).startswith("http://127.0.0.1:")


async def test_an_unreachable_store_with_default_retries_gives_up_within_seconds() -> None:
    async with closed_port_store() as store:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.get("media/1.jpg")
        assert time.monotonic() - started < 10


async def test_a_missing_bucket_is_a_clear_configuration_error(s3_endpoint: str) -> None:
    async with S3Store(s3_config(s3_endpoint, "never-created"), name="lost") as store:
        with pytest.raises(StoreError, match=r"'lost'.*bucket 'never-created'.*does not exist"):
            await store.check()
        with pytest.raises(StoreError, match="does not exist") as raised:
            await store.put("media/1.jpg", b"x")
        assert not isinstance(raised.value, StoreUnavailableError)


async def test_a_store_can_be_used_again_after_close(s3_endpoint: str) -> None:
    store = S3Store(s3_config(s3_endpoint, await new_bucket(s3_endpoint)))
    await store.put("a.jpg", b"1")
    await store.close()
    assert await store.get("a.jpg") == b"1"
    await store.close()
    await store.close()


# -- LocalStore: atomic writes ----------------------------------------------------------------


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_a_write_failing_half_way_leaves_the_old_object_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    await store.put("media/1/x.jpg", b"old version")
    real_write_all = local._write_all

    def disk_full_half_way(fd: int, data: bytes) -> None:
        real_write_all(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "_write_all", disk_full_half_way)
    with pytest.raises(StoreUnavailableError, match="No space left on device"):
        await store.put("media/1/x.jpg", b"new version " * 1000)
    with pytest.raises(StoreUnavailableError):
        await store.put("media/2/y.jpg", b"new object " * 1000)

    assert await store.get("media/1/x.jpg") == b"old version"
    with pytest.raises(ObjectNotFoundError):
        await store.get("media/2/y.jpg")
    assert await keys_of(store) == ["media/1/x.jpg"]
    assert files_under(tmp_path) == ["media/1/x.jpg"]  # no temporary file left behind


CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from photogram.media import local

    real_write_all = local._write_all

    def crash_half_way(fd, data):
        real_write_all(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    local._write_all = crash_half_way
    store = local.LocalStore(Path(sys.argv[1]))
    asyncio.run(store.put(sys.argv[2], b"new version " * 100_000))
    """
)


@pytest.mark.parametrize("existing", [True, False], ids=["overwrite", "new-key"])
async def test_a_crash_mid_write_never_leaves_a_half_file_under_the_key(
    tmp_path: Path, existing: bool
) -> None:
    store = LocalStore(tmp_path / "media")
    if existing:
        await store.put("media/1/x.jpg", b"old version")

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        str(store.root),
        "media/1/x.jpg",
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr.decode()

    # The half-written bytes exist, in a temporary file no key can name.
    leftovers = [p for p in (store.root / "media" / "1").iterdir() if p.name != "x.jpg"]
    assert len(leftovers) == 1
    assert leftovers[0].name.startswith(".tmp-")
    assert 0 < leftovers[0].stat().st_size < len(b"new version " * 100_000)

    if existing:
        assert await store.get("media/1/x.jpg") == b"old version"
        assert await keys_of(store) == ["media/1/x.jpg"]
    else:
        with pytest.raises(ObjectNotFoundError):
            await store.get("media/1/x.jpg")
        assert await store.head("media/1/x.jpg") is None
        assert await keys_of(store) == []

    # Fresh temporaries are left alone (a write may be in flight); stale ones go.
    assert await store.remove_stale_temporaries(older_than_seconds=3600) == 0
    assert await store.remove_stale_temporaries(older_than_seconds=0) == 1
    assert not leftovers[0].exists()
    await store.put("media/1/x.jpg", b"after the crash")
    assert await store.get("media/1/x.jpg") == b"after the crash"


async def test_local_listing_skips_names_no_key_can_have(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("media/1/x.jpg", b"x")
    (tmp_path / "media" / "1" / ".tmp-feedface").write_bytes(b"half")
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "lost+found" / "123").write_bytes(b"?")
    (tmp_path / "media" / "a file.jpg").write_bytes(b"?")
    assert await keys_of(store) == ["media/1/x.jpg"]


async def test_deletes_prune_empty_directories_without_breaking_concurrent_puts(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)

    async def churn(n: int) -> None:
        await store.put(f"media/{n % 3}/a.jpg", b"a")
        await store.delete(f"media/{n % 3}/a.jpg")
        await store.put(f"media/{n % 3}/b{n}.jpg", b"b")
        await store.delete(f"media/{n % 3}/b{n}.jpg")

    await asyncio.gather(*(churn(n) for n in range(300)))
    assert await keys_of(store) == []
    assert everything_under(tmp_path) == []


async def test_a_key_colliding_with_a_directory_is_a_store_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("media/1/x.jpg", b"x")
    with pytest.raises(StoreError, match="collides") as raised:
        await store.put("media/1", b"y")
    assert not isinstance(raised.value, StoreUnavailableError)
    with pytest.raises(StoreError, match="collides"):
        await store.put("media/1/x.jpg/z", b"y")
    assert await store.head("media/1") is None
    with pytest.raises(ObjectNotFoundError):
        await store.get("media/1")
    await store.delete("media/1")  # a directory is no object: nothing to delete
    assert await store.get("media/1/x.jpg") == b"x"


async def test_local_check_refuses_an_unusable_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = LocalStore(tmp_path / "file" / "media", name="broken")
    with pytest.raises(StoreError, match="media store 'broken'"):
        await store.check()
    fresh = LocalStore(tmp_path / "new" / "media")
    await fresh.check()
    assert (tmp_path / "new" / "media").is_dir()
    assert list((tmp_path / "new" / "media").iterdir()) == []


# -- settings ---------------------------------------------------------------------------------


def test_the_default_is_one_filesystem_store_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.media_store == "local"
    assert settings.media_stores == {
        "local": FilesystemStoreSettings(
            kind="filesystem", path=tmp_path / "photogram-data" / "media"
        )
    }
    store = open_store(settings)
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "photogram-data" / "media"
    assert store.name == "local"
    assert set(open_stores(settings)) == {"local"}


def test_stores_from_the_environment_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHOTOGRAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(
        "PHOTOGRAM_MEDIA_STORES",
        '{"local": {"kind": "filesystem", "path": "media"},'
        ' "minio": {"kind": "s3", "endpoint_url": "http://127.0.0.1:9000", "bucket": "photos",'
        ' "access_key_id": "AKID", "secret_access_key": "s3cr3t", "prefix": "prod"}}',
    )
    monkeypatch.setenv("PHOTOGRAM_MEDIA_STORE", "minio")
    settings = load_settings()
    assert settings.media_store == "minio"
    minio = settings.media_stores["minio"]
    assert isinstance(minio, S3StoreSettings)
    assert minio.path_style  # a custom endpoint means path style unless told otherwise
    assert minio.prefix == "prod/"
    assert minio.secret_access_key is not None
    assert minio.secret_access_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(settings)
    stores = open_stores(settings)
    assert isinstance(stores["local"], LocalStore)
    assert stores["local"].root == tmp_path / "media"
    assert isinstance(open_store(settings), S3Store)
    assert open_store(settings).name == "minio"


def test_stores_from_a_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "photogram.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            data_dir = "{tmp_path / "data"}"
            media_store = "aws"

            [media_stores.local]
            kind = "filesystem"
            path = "{tmp_path / "elsewhere"}"

            [media_stores.aws]
            kind = "s3"
            bucket = "photogram-media"
            region = "eu-central-1"
            """
        )
    )
    settings = load_settings(config)
    local_config = settings.media_stores["local"]
    assert isinstance(local_config, FilesystemStoreSettings)
    assert local_config.path == tmp_path / "elsewhere"
    aws = settings.media_stores["aws"]
    assert isinstance(aws, S3StoreSettings)
    assert aws.endpoint_url is None
    assert not aws.path_style
    assert aws.access_key_id is None  # the AWS credential chain
    assert (aws.connect_timeout_seconds, aws.max_attempts) == (5.0, 3)


def test_relative_paths_are_taken_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        media_stores={"a": FilesystemStoreSettings(kind="filesystem", path=Path("photos/a"))},
        media_store="a",
    )
    config = settings.media_stores["a"]
    assert isinstance(config, FilesystemStoreSettings)
    assert config.path == tmp_path / "photos" / "a"
    # Validating again does not nest the directory twice.
    assert Settings(**settings.model_dump()).media_stores == settings.media_stores


@pytest.mark.parametrize(
    ("stores", "chosen", "message"),
    [
        ('{"s3": {"kind": "s3"}}', "s3", r"media_stores\.s3\.s3\.bucket: Field required"),
        ('{"x": {"kind": "gcs"}}', "x", r"does not match any of the expected tags"),
        ('{"x": {"path": "media"}}', "x", r"Unable to extract tag using discriminator 'kind'"),
        ('{"local": {"kind": "filesystem"}}', "other", r"media_store 'other' is not one of"),
        ('{"Bad Name": {"kind": "filesystem"}}', "Bad Name", r"media store name 'Bad Name'"),
        (
            '{"s3": {"kind": "s3", "bucket": "photos", "access_key_id": "AKID"}}',
            "s3",
            "access_key_id and secret_access_key together",
        ),
        (
            '{"s3": {"kind": "s3", "bucket": "photos", "secret_access_key": "s3cr3t"}}',
            "s3",
            "access_key_id and secret_access_key together",
        ),
        ('{"s3": {"kind": "s3", "bucket": "Photos_1"}}', "s3", "not a valid bucket name"),
        (
            '{"s3": {"kind": "s3", "bucket": "photos", "endpoint_url": "minio:9000"}}',
            "s3",
            "http:// or https:// URL",
        ),
        (
            '{"s3": {"kind": "s3", "bucket": "photos", "endpoint_url": "http://minio/photos"}}',
            "s3",
            "without a path",
        ),
        ('{"s3": {"kind": "s3", "bucket": "photos", "prefix": "../x"}}', "s3", "key prefix"),
        ('{"s3": {"kind": "s3", "bucket": "photos", "region": "EU West"}}', "s3", "region name"),
        (
            '{"s3": {"kind": "s3", "bucket": "photos", "addressing_style": "dns"}}',
            "s3",
            "addressing_style",
        ),
        ('{"s3": {"kind": "s3", "bucket": "photos", "max_attempts": 0}}', "s3", "max_attempts"),
        ('{"x": {"kind": "filesystem", "bucket": "photos"}}', "x", "bucket: Extra inputs"),
        ('{"x": {"kind": "filesystem", "path": "."}}', "x", "a directory of its own"),
        ('{"x": {"kind": "filesystem", "path": ".."}}', "x", "a directory of its own"),
        (
            '{"a": {"kind": "filesystem", "path": "m"},'
            ' "b": {"kind": "filesystem", "path": "m/b"}}',
            "a",
            "must not share a directory",
        ),
    ],
)
def test_bad_store_settings_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, stores: str, chosen: str, message: str
) -> None:
    monkeypatch.setenv("PHOTOGRAM_MEDIA_STORES", stores)
    monkeypatch.setenv("PHOTOGRAM_MEDIA_STORE", chosen)
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings()
    assert "\n" not in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


def test_opening_an_unknown_store_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown media store 'archive' \(media_stores: local\)"):
        open_store(Settings(data_dir=tmp_path), "archive")
