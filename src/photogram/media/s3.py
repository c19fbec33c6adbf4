"""The S3 store: AWS S3 or any S3-compatible service (MinIO, SeaweedFS, Ceph RGW, R2 …).

One aiobotocore client per store, made on first use and closed by ``close()``; its
connection pool is shared by every concurrent call.

Choices that keep it working beyond AWS:

- Requests are signed with SigV4 (every region and every S3-compatible store accepts it;
  SigV2 is gone from newer AWS regions).
- botocore's default checksums (CRC32 trailers since botocore 1.36) are turned off and each
  PUT carries a Content-MD5 instead: several S3-compatible stores reject the trailers,
  while all of them check Content-MD5, so bytes damaged in transit are refused by the
  store rather than stored.
- The MD5 photogram computed is also kept as user metadata (``x-amz-meta-md5``), which
  ``head`` reports. ETags are not used: a multipart upload, SSE-KMS or another store's
  idea of an ETag is not the MD5 of the content.

A PUT of one object in one request is atomic on S3 (readers see the old or the new
object), which is why ``put`` takes bytes: media objects are at most a few MiB, well below
where a multipart upload would pay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime
from functools import cache
from typing import Any, NoReturn

import aiohttp
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from photogram.media.stores import (
    KEY,
    BlobStore,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStream,
    StoredObject,
    StoreError,
    StoreUnavailableError,
    check_key,
    check_prefix,
    compute_digest,
)
from photogram.settings import S3StoreSettings

#: What S3 allows for a presigned URL signed with SigV4: one week.
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
#: The most keys one ListObjectsV2 call returns (S3's own maximum).
PAGE_SIZE = 1000

#: Content types by extension, stored with each object so that a presigned URL serves the
#: right type. A fixed table, unlike ``mimetypes``, does not vary with the host's mime.types.
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "heic": "image/heic",
    "gif": "image/gif",
    "json": "application/json",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"

#: S3 error codes that mean "try again later" rather than "this will never work".
_TRANSIENT_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
}
_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
#: Failures to reach the store or to finish reading from it.
_NETWORK_ERRORS = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)
_ERRORS = (ClientError, *_NETWORK_ERRORS)


@cache
def _session() -> Any:
    # One botocore session for every store in the process: a session loads the S3 service
    # model (~0.3 s) once and every client made from it shares that.
    return get_session()


def content_type_of(key: str) -> str:
    _, dot, extension = key.rpartition(".")
    return (
        CONTENT_TYPES.get(extension.lower(), DEFAULT_CONTENT_TYPE) if dot else DEFAULT_CONTENT_TYPE
    )


class S3Store(BlobStore):
    def __init__(
        self, config: S3StoreSettings, *, name: str = "s3", page_size: int = PAGE_SIZE
    ) -> None:
        self.config = config
        self.name = name
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.page_size = page_size
        self._client: Any = None
        self._exit_stack: AsyncExitStack | None = None
        self._client_lock = asyncio.Lock()

    @property
    def location(self) -> str:
        endpoint = self.config.endpoint_url or f"AWS S3 ({self.config.region})"
        return f"bucket {self.bucket!r} at {endpoint}"

    def _client_config(self) -> Any:
        config = self.config
        return AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path" if config.path_style else "virtual"},
            region_name=config.region,
            connect_timeout=config.connect_timeout_seconds,
            read_timeout=config.read_timeout_seconds,
            retries={"mode": "standard", "max_attempts": config.max_attempts},
            max_pool_connections=config.max_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="photogram",
        )

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    stack = AsyncExitStack()
                    secret = self.config.secret_access_key
                    creator = _session().create_client(
                        "s3",
                        endpoint_url=self.config.endpoint_url,
                        region_name=self.config.region,
                        aws_access_key_id=self.config.access_key_id,
                        aws_secret_access_key=None if secret is None else secret.get_secret_value(),
                        config=self._client_config(),
                    )
                    self._client = await stack.enter_async_context(creator)
                    self._exit_stack = stack
        return self._client

    async def close(self) -> None:
        async with self._client_lock:
            stack, self._exit_stack, self._client = self._exit_stack, None, None
            if stack is not None:
                await stack.aclose()

    def _full_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, exc: Exception, action: str, key: str | None = None) -> NoReturn:
        """Raise the StoreError that says what ``exc`` means for the caller."""
        where = f"{action} {key!r}" if key is not None else action
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if key is not None and code in _MISSING_KEY_CODES:
                raise ObjectNotFoundError(
                    f"media store {self.name!r} has no object {key!r}"
                ) from exc
            if code in ("NoSuchBucket",) or (key is None and status == 404):
                raise StoreError(
                    f"media store {self.name!r}: {self.location} does not exist"
                ) from exc
            if code in _DENIED_CODES or status in (401, 403):
                raise StoreError(
                    f"media store {self.name!r} was refused access to {self.location} "
                    f"({code or status}); check its credentials and bucket policy"
                ) from exc
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                raise StoreUnavailableError(
                    f"media store {self.name!r} is unavailable ({code or status}) "
                    f"and could not {where}"
                ) from exc
            message = error.get("Message") or code or status
            raise StoreError(f"media store {self.name!r} could not {where}: {message}") from exc
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            raise StoreError(
                f"media store {self.name!r} has no credentials: set access_key_id and "
                "secret_access_key, or provide them the AWS way (environment, role)"
            ) from exc
        if isinstance(exc, ParamValidationError):
            raise StoreError(f"media store {self.name!r} could not {where}: {exc}") from exc
        raise StoreUnavailableError(
            f"media store {self.name!r} is unreachable ({self.location}) "
            f"and could not {where}: {exc}"
        ) from exc

    async def put(self, key: str, data: bytes) -> StoredObject:
        full_key = self._full_key(key)
        digest = await compute_digest(data)
        try:
            client = await self._s3()
            await client.put_object(
                Bucket=self.bucket,
                Key=full_key,
                Body=data,
                ContentLength=digest.size,
                ContentMD5=digest.md5_base64,
                ContentType=content_type_of(key),
                Metadata={"md5": digest.md5_hex},
            )
        except _ERRORS as exc:
            self._fail(exc, "write", key)
        return StoredObject(key, digest.size, digest.md5_hex)

    async def _get_object(self, key: str) -> dict[str, Any]:
        full_key = self._full_key(key)
        try:
            client = await self._s3()
            response: dict[str, Any] = await client.get_object(Bucket=self.bucket, Key=full_key)
        except _ERRORS as exc:
            self._fail(exc, "read", key)
        return response

    async def get(self, key: str) -> bytes:
        response = await self._get_object(key)
        try:
            async with response["Body"] as body:
                data: bytes = await body.read()
        except _ERRORS as exc:
            self._fail(exc, "read", key)
        return data

    async def open(self, key: str) -> ObjectStream:
        response = await self._get_object(key)
        body = response["Body"]

        async def read(size: int) -> bytes:
            try:
                chunk: bytes = await body.read(size)
            except _ERRORS as exc:
                self._fail(exc, "read", key)
            return chunk

        async def close() -> None:
            body.close()

        return ObjectStream(self._info(key, response), read, close)

    def _info(self, key: str, response: dict[str, Any]) -> ObjectInfo:
        md5 = response.get("Metadata", {}).get("md5")
        modified: datetime | None = response.get("LastModified")
        return ObjectInfo(key, int(response["ContentLength"]), md5, modified)

    async def head(self, key: str) -> ObjectInfo | None:
        full_key = self._full_key(key)
        try:
            client = await self._s3()
            response = await client.head_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            # A HEAD error has no body, so a missing key is just "404".
            if exc.response.get("Error", {}).get("Code") in _MISSING_KEY_CODES:
                return None
            self._fail(exc, "look up", key)
        except _NETWORK_ERRORS as exc:
            self._fail(exc, "look up", key)
        return self._info(key, response)

    async def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        try:
            client = await self._s3()
            # S3 answers 204 whether or not the key existed: idempotent by nature.
            await client.delete_object(Bucket=self.bucket, Key=full_key)
        except _ERRORS as exc:
            self._fail(exc, "delete", key)

    async def iterate(
        self, prefix: str = "", *, start_after: str = ""
    ) -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": self.page_size,
        }
        if start_after:
            request["StartAfter"] = self.prefix + start_after
        while True:
            try:
                client = await self._s3()
                page = await client.list_objects_v2(**request)
            except _ERRORS as exc:
                self._fail(exc, "list", prefix or "/")
            for item in page.get("Contents", []):
                key = item["Key"].removeprefix(self.prefix)
                # Objects other tools put in the bucket under names photogram never makes
                # (and could not read back) are not photogram's to list.
                if KEY.fullmatch(key):
                    yield ObjectInfo(key, int(item["Size"]), None, item.get("LastModified"))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token

    async def check(self) -> None:
        try:
            client = await self._s3()
            await client.head_bucket(Bucket=self.bucket)
        except _ERRORS as exc:
            self._fail(exc, "reach the bucket")

    async def presigned_url(self, key: str, expires_seconds: int) -> str:
        full_key = self._full_key(key)
        if not 1 <= expires_seconds <= MAX_PRESIGNED_SECONDS:
            raise ValueError(
                f"expires_seconds must be from 1 to {MAX_PRESIGNED_SECONDS}, not {expires_seconds}"
            )
        try:
            client = await self._s3()
            # Signed locally, without a request: the URL is made even while the store is down.
            url: str = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": full_key},
                ExpiresIn=expires_seconds,
            )
        except _ERRORS as exc:
            self._fail(exc, "sign a URL for", key)
        return url
