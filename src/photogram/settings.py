"""One validated settings object.

Sources, strongest first: keyword arguments, ``PHOTOGRAM_*`` environment
variables, then the TOML file named by ``config_file`` (``--config`` or
``PHOTOGRAM_CONFIG``). With nothing set at all, photogram runs the embedded
default: one SQLite file under ``./photogram-data``.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from photogram.db.ids import MAX_SHARDS
from photogram.errors import ConfigError

#: What ``secret_key`` says until an operator sets it; refused outside development.
PLACEHOLDER_SECRET = "change-me"  # noqa: S105 (a marker, not a credential)

SQLITE_FILE = "photogram.sqlite3"

_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalise_dsn(dsn: str) -> str:
    """``dsn`` with the async driver photogram uses; ValueError for other databases."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme.lower() not in _DRIVERS:
        raise ValueError(
            f"unsupported database URL {redact_dsn(dsn)!r}: "
            "expected postgresql://… or sqlite:///path"
        )
    return f"{_DRIVERS[scheme.lower()]}://{rest}"


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password masked, fit for messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    credentials, _, host = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


#: Media store names are kept in the global database (the store migration records which
#: store it moves from and to) and appear in metrics: short, lower-case and plain.
STORE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: A path segment of an object key or key prefix: the syntax photogram.media.stores checks.
_KEY_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
#: S3 bucket naming rules (DNS-compatible, so virtual-hosted addressing always works).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class FilesystemStoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["filesystem"]

    # A directory of its own (everything in it is taken to be media); a relative path is
    # taken under data_dir.
    path: Path = Path("media")


class S3StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["s3"]

    # The S3 API address of MinIO, SeaweedFS, Ceph, R2 …, e.g. http://minio:9000.
    # Unset: AWS S3 in `region`.
    endpoint_url: str | None = None

    # Created beforehand: photogram never creates or deletes buckets.
    bucket: str

    # AWS region, part of every request signature; S3-compatible stores mostly take any.
    region: str = "us-east-1"

    # Static credentials, both or neither. Neither: the usual AWS chain (AWS_* environment
    # variables, ~/.aws, an instance or task role).
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    # "path" puts the bucket in the path (http://minio:9000/bucket/key), "virtual" in the
    # host name (https://bucket.s3.amazonaws.com/key). Unset: path with an endpoint_url
    # (what self-hosted stores serve without wildcard DNS), virtual on AWS.
    addressing_style: Literal["path", "virtual"] | None = None

    # Keys are stored under this prefix, so several instances (or stores) can share a bucket.
    prefix: str = ""

    # A request that cannot connect in this long, or stalls this long mid-response, fails
    # (and is retried up to max_attempts in all, with jittered backoff).
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3

    # Concurrent HTTP connections this process keeps to the store (a backfill copies in
    # parallel; botocore's default of 10 would queue it).
    max_connections: Annotated[int, Field(ge=1)] = 32

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError(f"must be the store's address only, without a path: {value!r}")
        return value.rstrip("/")

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value:
            raise ValueError(
                f"{value!r} is not a valid bucket name "
                "(3 to 63 lower-case letters, digits, dots and hyphens)"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", value):
            raise ValueError(f"{value!r} is not a region name (like us-east-1)")
        return value

    @field_validator("prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        body = value.removesuffix("/")
        if not body:
            return ""
        if not re.fullmatch(rf"{_KEY_SEGMENT}(?:/{_KEY_SEGMENT})*", body):
            raise ValueError(
                f"{value!r} is not a valid key prefix (segments of letters, digits, "
                "'.', '_' and '-' separated by '/', none starting with '.')"
            )
        return body + "/"

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> S3StoreSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set access_key_id and secret_access_key together, or neither")
        return self

    @property
    def path_style(self) -> bool:
        if self.addressing_style is None:
            return self.endpoint_url is not None
        return self.addressing_style == "path"


class FaultyStoreSettings(BaseModel):
    """Another store with faults injected: for drills and tests of the media migration.

    Writes fail or silently keep wrong bytes at the given rates, and every call is delayed,
    the way a struggling new store behaves. Never point ``media_store`` at one in earnest.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["faulty"]
    # The store that really keeps the objects: another of the media_stores.
    store: str
    # Shares of writes that fail, and that succeed but keep corrupted bytes (silently).
    write_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    corrupt_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Share of reads that fail.
    read_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Added to every call: a random delay up to this long.
    latency_seconds: Annotated[float, Field(ge=0)] = 0.0


AnyStoreSettings = FilesystemStoreSettings | S3StoreSettings | FaultyStoreSettings
MediaStoreSettings = Annotated[AnyStoreSettings, Field(discriminator="kind")]


def _default_media_stores() -> dict[str, AnyStoreSettings]:
    return {"local": FilesystemStoreSettings(kind="filesystem")}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PHOTOGRAM_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # TOML file with more settings (PHOTOGRAM_CONFIG); the environment still wins over it.
    config_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("config_file", "PHOTOGRAM_CONFIG")
    )

    # "development" tolerates placeholder secrets; anything else refuses them at start-up.
    environment: Literal["development", "production"] = "development"

    # Where the embedded default keeps its SQLite file (and, later, media).
    data_dir: Path = Path("photogram-data")

    # The unsharded database (shard map, username directory, OAuth apps).
    # Unset: the SQLite file under data_dir.
    global_database: str | None = None

    # Physical shard databases by name. Names are what the shard map stores, so a
    # server can change address without touching the map. Unset: {"main": global_database}.
    databases: dict[str, str] = Field(default_factory=dict)

    # Logical shards for `photogram init` of a new cluster: a power of two up to 8,192.
    # Fixed once the cluster exists: moving data changes placement, never the count.
    logical_shards: int = 1024

    # Signs sessions, tokens and media URLs. Generate with `python -c "import secrets;
    # print(secrets.token_urlsafe(48))"`.
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)

    # Address `photogram serve` binds.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000

    # How often an app server re-reads the shard map version from the global database.
    shard_map_refresh_seconds: Annotated[float, Field(gt=0)] = 2.0
    # The longest a write waits for a shard being moved (then it fails with a 503).
    shard_move_pause_seconds: Annotated[float, Field(gt=0)] = 30.0

    # Connections each app process keeps per physical PostgreSQL database.
    database_pool_size: Annotated[int, Field(ge=1)] = 10

    # The address clients use to reach this instance (links, avatar URLs, Link headers).
    # Unset: http://<host>:<port>.
    public_url: str | None = None

    # What /api/v1/instance tells clients and people.
    instance_title: str = "photogram"
    instance_description: str = "A photo-sharing community."
    contact_email: str = ""
    registrations_open: bool = True
    # Where people can get this server's source code (the AGPL asks that they can).
    source_url: str = ""

    # Requests allowed per window, per access token and per client address; over it, 429
    # (Mastodon's defaults: 300 per token and 7,500 per address in five minutes).
    rate_limit_per_token: Annotated[int, Field(ge=1)] = 300
    rate_limit_per_ip: Annotated[int, Field(ge=1)] = 7500
    rate_limit_window_seconds: Annotated[int, Field(ge=1)] = 300

    # Access tokens never expire unless set (Mastodon clients do not refresh); refresh
    # tokens rotate them either way.
    access_token_ttl_seconds: Annotated[int, Field(ge=60)] | None = None
    authorization_code_ttl_seconds: Annotated[int, Field(ge=10)] = 600

    # Avatars: the largest upload accepted, and the largest image (in pixels) decoded.
    avatar_max_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    avatar_max_pixels: Annotated[int, Field(ge=1)] = 40_000_000

    # Where media is kept, by name: each a {"kind": "filesystem", "path": …} or {"kind": "s3",
    # "bucket": …} table (docs/media-stores.md). Several may exist at once: moving media
    # to another store names both. Unset: {"local": a filesystem store at <data_dir>/media}.
    media_stores: dict[str, MediaStoreSettings] = Field(default_factory=_default_media_stores)

    # The media store in use: one of the names in media_stores.
    media_store: str = "local"

    # Where uploads wait for processing when workers run on other hosts than the app
    # servers: one of the media_stores, private (an upload still carries its metadata, GPS
    # included, until processing strips it), and never the media_store itself. Unset: a
    # directory under data_dir, which app servers and workers must then share.
    media_spool_store: str | None = None

    # argon2id cost for password hashes (RFC 9106's low-memory profile by default).
    password_time_cost: Annotated[int, Field(ge=1)] = 3
    password_memory_kib: Annotated[int, Field(ge=8)] = 65536

    # Photos: the largest upload accepted, and the largest image (in pixels) decoded. The
    # pixel limit is checked from the file's header, before any decoding.
    media_max_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    media_max_pixels: Annotated[int, Field(ge=1)] = 50_000_000

    # glibc malloc arenas in processes that process photos (app servers and workers):
    # fewer arenas keep a long-running worker near one photo's peak memory. 0 leaves
    # glibc's default (eight per core); the MALLOC_ARENA_MAX environment variable wins.
    media_malloc_arenas: Annotated[int, Field(ge=0)] = 2

    # Media URLs are signed and expire after this long (rounded up to the hour, so they
    # stay cacheable).
    media_url_ttl_seconds: Annotated[int, Field(ge=60)] = 7 * 24 * 3600

    # Serve media from this base URL (a CDN in front of photogram's /media/p/ path) instead
    # of from photogram's own address. The URLs are signed the same way either way.
    media_cdn_url: str | None = None

    # Logs: "text" (for a terminal) or "json" (one object per line, for a log pipeline), and
    # the lowest level written. Every line carries the ID of the request it belongs to.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # This app server's name for feature gates rolled out by server (docs/gates.md): stable
    # across restarts, different on each server. Unset: the host name.
    server_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    # How often every process re-reads the feature gates.
    gates_refresh_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0

    # Moving media to another store (docs/media-migration.md): how often every process
    # re-reads the migration's phase from the global database (a phase change reaches
    # them all within this long), and how old an object in the new store must be, with
    # no record in the database, before the verifier removes it.
    media_migration_refresh_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    media_migration_orphan_grace_seconds: Annotated[float, Field(ge=0)] = 3600.0

    # How long an upload request waits for its photo to be processed before answering
    # 202 (still processing) instead of 200.
    media_wait_seconds: Annotated[float, Field(ge=0)] = 5.0

    # How often a process re-runs background work that is still pending in the outbox
    # (work is first attempted right after the commit that wrote it).
    outbox_sweep_seconds: Annotated[float, Field(gt=0)] = 5.0

    # Behind PgBouncer in transaction mode without prepared-statement support
    # (PgBouncer < 1.21 or max_prepared_statements = 0): turn off asyncpg's statement cache.
    pgbouncer: bool = False

    # memcached servers ("host:port", memcached >= 1.6) the cache is spread over by
    # consistent hashing. Empty: an in-process cache with the same lease semantics, right
    # for one process only (each process would otherwise keep its own stale copies).
    cache_servers: list[str] = Field(default_factory=list)

    # How long a lease (one reader's right to fill a missing key) holds the others off: a
    # holder that dies delays that key's fill this long at most. memcached counts seconds.
    cache_lease_ttl_seconds: Annotated[int, Field(ge=1, le=3600)] = 5

    # How long a reader waits for another's fill before loading from the database itself:
    # the most a cache miss adds to a request beyond its own database query.
    cache_lease_wait_seconds: Annotated[float, Field(gt=0)] = 0.5

    # Cached values expire after this long even if no write invalidates them: the bound on
    # the staleness an invalidation lost to a crash can cause. At most 30 days (beyond,
    # memcached reads a TTL as a date).
    cache_ttl_seconds: Annotated[int, Field(ge=1, le=30 * 24 * 3600)] = 3600

    # Access tokens are cached for at most this long: revoking one invalidates it at once,
    # and this bounds how long a revocation whose invalidation was lost still lets it in.
    cache_token_ttl_seconds: Annotated[int, Field(ge=1, le=3600)] = 60

    # A memcached server that fails or times out is skipped for this long (its keys go to
    # the database, then to the other servers), then tried again.
    cache_server_retry_seconds: Annotated[float, Field(gt=0)] = 10.0

    # A memcached request that takes longer fails, and its server is skipped: memcached
    # answers in well under a millisecond, so a slow answer means a sick server.
    cache_timeout_seconds: Annotated[float, Field(gt=0)] = 0.5

    # Keys filled on a stand-in while their own server is down expire after this long: they
    # stop being read or invalidated once that server is back, and must not outlive it.
    cache_failover_ttl_seconds: Annotated[int, Field(ge=1, le=3600)] = 10

    # Part of every cache key: change it to start over with an empty cache (the old keys
    # are never read again and expire), or to let two instances share memcached servers.
    cache_key_version: Annotated[int, Field(ge=0)] = 1

    # Entries the in-process cache holds; the least recently used go first.
    cache_local_max_entries: Annotated[int, Field(ge=1)] = 100_000

    # --- background work (docs/tasks.md) ---

    # The Celery broker (RabbitMQ), e.g. "amqp://guest:guest@127.0.0.1:5672//". Unset: the
    # outbox's work runs in each app process itself, with no broker and no worker.
    broker_url: str | None = None

    # Broker queue names start with this, so several instances can share one RabbitMQ vhost.
    broker_queue_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]*$")] = "photogram."

    # A task that has failed this many times is dead: it is not retried again until an
    # operator says so (`photogram tasks dead`, `photogram tasks retry`).
    task_max_attempts: Annotated[int, Field(ge=1)] = 8

    # A task handed to the broker that has not finished after this long is handed over
    # again (its worker died, or the message was lost). Tasks are idempotent.
    task_republish_seconds: Annotated[float, Field(gt=0)] = 120.0

    # --- home feeds in Redis (docs/feeds.md) ---

    # Redis for precomputed home feeds, e.g. "redis://127.0.0.1:6379/0". Unset: home
    # timelines are assembled from the shards on every read.
    redis_url: str | None = None

    # ``redis_url`` names one node of a Redis Cluster rather than a single server.
    redis_cluster: bool = False

    # A Redis command that takes longer fails, and the home timeline is read from the
    # shards instead; after a failure Redis is left alone for ``redis_retry_seconds``.
    redis_timeout_seconds: Annotated[float, Field(gt=0)] = 0.5
    redis_retry_seconds: Annotated[float, Field(gt=0)] = 5.0

    # Post IDs a feed keeps; pages older than that are read from the shards.
    feed_max_entries: Annotated[int, Field(ge=1)] = 800

    # Accounts with more followers than this are not fanned out: their posts are merged
    # into their followers' home timelines when read.
    feed_fanout_max_followers: Annotated[int, Field(ge=0)] = 10_000

    # Followers written per fan-out task (one batch of Redis writes).
    feed_fanout_batch: Annotated[int, Field(ge=1)] = 1000

    # A feed not read for this long is dropped and no longer fanned out to; it is rebuilt
    # from the shards when its reader returns.
    feed_inactive_seconds: Annotated[int, Field(ge=60)] = 30 * 24 * 3600

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        chosen = init_settings().get("config_file") or env_settings().get("config_file")
        if not chosen:
            return (init_settings, env_settings)
        path = Path(chosen)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    @field_validator("logical_shards")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 1 or value > MAX_SHARDS or value & (value - 1):
            raise ValueError(f"must be a power of two from 1 to {MAX_SHARDS}, not {value}")
        return value

    @field_validator("global_database")
    @classmethod
    def _global_dsn(cls, value: str | None) -> str | None:
        return None if value is None else normalise_dsn(value)

    @field_validator("databases")
    @classmethod
    def _shard_dsns(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"database name {name!r} must be a plain identifier")
        return {name: normalise_dsn(dsn) for name, dsn in value.items()}

    @field_validator("cache_servers")
    @classmethod
    def _cache_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"cache server {address!r} is not host:port")
        if len(set(value)) != len(value):
            raise ValueError("cache servers are listed more than once")
        return value

    @field_validator("media_stores")
    @classmethod
    def _store_names(cls, value: dict[str, AnyStoreSettings]) -> dict[str, AnyStoreSettings]:
        for name in value:
            if not STORE_NAME.fullmatch(name):
                raise ValueError(
                    f"media store name {name!r} must be 1 to 32 lower-case letters, digits, "
                    "'_' or '-'"
                )
        return value

    @model_validator(mode="after")
    def _media_stores(self) -> Settings:
        for setting in ("media_store", "media_spool_store"):
            chosen = getattr(self, setting)
            if chosen is not None and chosen not in self.media_stores:
                raise ValueError(
                    f"{setting} {chosen!r} is not one of the media_stores "
                    f"({', '.join(sorted(self.media_stores)) or 'none configured'})"
                )
        for name, store in self.media_stores.items():
            if isinstance(store, FaultyStoreSettings):
                inner = self.media_stores.get(store.store)
                if inner is None or isinstance(inner, FaultyStoreSettings):
                    raise ValueError(
                        f"media store {name!r}: store {store.store!r} must be one of the "
                        "other media_stores (and not a faulty one)"
                    )
        if self.media_spool_store == self.media_store:
            raise ValueError(
                "media_spool_store must not be the media_store: uploads waiting there still "
                "carry their metadata, and the media store is served"
            )
        # Made absolute here, once: the directory a store names must not depend on the
        # working directory of whichever process opens it later.
        data_dir = self.data_dir.absolute()
        roots: dict[str, Path] = {}
        for name, store in self.media_stores.items():
            if isinstance(store, FilesystemStoreSettings):
                root = Path(os.path.normpath(data_dir / store.path))
                self.media_stores[name] = store.model_copy(update={"path": root})
                roots[name] = root
        # Everything under a store's directory is taken to be media: listing it feeds the
        # migration's clean-up of objects the database no longer knows, which must never
        # reach the database file, the avatars or another store's objects.
        for name, root in roots.items():
            if root == data_dir or root in data_dir.parents:
                raise ValueError(
                    f"media store {name!r}: path {str(root)!r} must be a directory of its "
                    "own, not data_dir or a directory holding it"
                )
            for other, other_root in roots.items():
                if other < name and (
                    root == other_root or root in other_root.parents or other_root in root.parents
                ):
                    raise ValueError(
                        f"media stores {other!r} and {name!r} must not share a directory "
                        "or nest one in the other"
                    )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.environment != "development" and (
            self.secret_key.get_secret_value() in ("", PLACEHOLDER_SECRET)
        ):
            raise ValueError(
                "secret_key is still the placeholder; set PHOTOGRAM_SECRET_KEY "
                f"(environment is {self.environment!r})"
            )
        return self

    @property
    def global_dsn(self) -> str:
        if self.global_database:
            return self.global_database
        return f"sqlite+aiosqlite:///{(self.data_dir / SQLITE_FILE).resolve()}"

    @property
    def shard_dsns(self) -> dict[str, str]:
        return dict(self.databases) if self.databases else {"main": self.global_dsn}

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def embedded(self) -> bool:
        """True when every database is SQLite: the single-process embedded default."""
        return all(dsn.startswith("sqlite") for dsn in [self.global_dsn, *self.shard_dsns.values()])


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment (and ``config_file``), or ConfigError with one clear line."""
    if config_file is not None:
        overrides["config_file"] = config_file
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file is not valid TOML: {exc}") from None
