"""Table definitions: the few global tables and the tables every logical shard has.

Sharded tables belong to ``shard_metadata``, whose schema is the symbolic name
``SHARD_SCHEMA``. Nothing ever sets a real schema on these Table objects: the
router renders the shard's schema into each statement with SQLAlchemy's
``schema_translate_map`` (``s0042`` on PostgreSQL, none on SQLite).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

SHARD_SCHEMA = "shard"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, always timezone-aware UTC in Python on either backend.

    SQLite has no timezone-aware type and hands back naive values; they were UTC when
    written, so they are marked UTC again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


global_metadata = MetaData(naming_convention=NAMING)
shard_metadata = MetaData(schema=SHARD_SCHEMA, naming_convention=NAMING)


def shard_id_column() -> Column[int]:
    """The primary key of a sharded table: a 64-bit ID made by the shard's ``next_id()``."""
    return Column("id", BigInteger, primary_key=True, autoincrement=False, info={"shard_id": True})


def created_at_column() -> Column[object]:
    return Column("created_at", UtcDateTime(), nullable=False, server_default=func.now())


# --- global (unsharded) ----------------------------------------------------------------------

# One row: what `photogram init` fixed for this cluster.
cluster = Table(
    "cluster",
    global_metadata,
    Column("id", Integer, primary_key=True),
    Column("logical_shards", Integer, nullable=False),
    # Raised on every placement change; app servers poll it to know when to re-read the map.
    Column("map_version", BigInteger, nullable=False),
    created_at_column(),
)

# Logical shard -> physical database name, one row per logical shard.
shard_map = Table(
    "shard_map",
    global_metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("database", String(64), nullable=False),
    # The map_version at which this shard got its current placement.
    Column("since_version", BigInteger, nullable=False),
)


def migrations_table(name: str, metadata: MetaData) -> Table:
    """Where one migration target records the versions it has reached."""
    return Table(
        name,
        metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("name", String(200), nullable=False),
        Column("applied_at", UtcDateTime(), nullable=False, server_default=func.now()),
    )


global_migrations = migrations_table("global_migrations", global_metadata)

# Usernames are unique across all shards: this directory is where that is decided. A row is
# written (unconfirmed) before the account row on its shard, and confirmed after it, so a
# sign-up that died in between can be told apart from a live account.
usernames = Table(
    "usernames",
    global_metadata,
    Column("username", String(30), primary_key=True),  # lower-cased
    Column("account_id", BigInteger, nullable=False, unique=True),
    Column("confirmed", Boolean, nullable=False, server_default=false()),
    created_at_column(),
)

# The password grant names an account by e-mail (as Mastodon's does): e-mail -> account.
emails = Table(
    "emails",
    global_metadata,
    Column("email", String(254), primary_key=True),  # lower-cased
    Column("account_id", BigInteger, nullable=False, unique=True),
    created_at_column(),
)

oauth_apps = Table(
    "oauth_apps",
    global_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("client_id", String(64), nullable=False, unique=True),
    Column("client_secret_hash", String(64), nullable=False),  # sha256 hex
    Column("name", String(200), nullable=False),
    Column("website", String(2000)),
    Column("redirect_uris", Text, nullable=False),  # one per line
    Column("scopes", String(1000), nullable=False),  # space separated
    created_at_column(),
)

# Access tokens (and their refresh tokens) are stored as sha256 hashes: a copy of this table
# grants nothing.
oauth_tokens = Table(
    "oauth_tokens",
    global_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("refresh_hash", String(64), unique=True),
    Column("app_id", BigInteger, nullable=False, index=True),
    Column("account_id", BigInteger, index=True),  # None: an app (client_credentials) token
    Column("scopes", String(1000), nullable=False),
    Column("expires_at", UtcDateTime()),
    Column("revoked_at", UtcDateTime()),
    created_at_column(),
)

oauth_codes = Table(
    "oauth_codes",
    global_metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("app_id", BigInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("scopes", String(1000), nullable=False),
    Column("code_challenge", String(128)),
    Column("code_challenge_method", String(10)),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("used_at", UtcDateTime()),
    created_at_column(),
)

# Accounts whose posts are not fanned out to their followers' home feeds (they had more
# followers than ``feed_fanout_max_followers`` when they last posted): readers merge their
# posts in from the shards instead (docs/feeds.md).
big_accounts = Table(
    "big_accounts",
    global_metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("followers_count", Integer, nullable=False),
    created_at_column(),
)

# Moving the media store to another (docs/media-migration.md). One row, the current
# migration: every app server and worker re-reads it every few seconds and routes reads,
# writes and deletes by its phase.
media_migration = Table(
    "media_migration",
    global_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("source", String(32), nullable=False),  # the store media moves from
    Column("target", String(32), nullable=False),  # … and to
    Column("phase", String(16), nullable=False),
    Column("read_percent", Integer, nullable=False, server_default="0"),
    Column("phase_changed_at", UtcDateTime(), nullable=False),
    # The end of the last verification pass that found every live object intact in the
    # target (nothing quarantined), and when that pass began.
    Column("verified_from", UtcDateTime()),
    Column("verified_at", UtcDateTime()),
    created_at_column(),
)

# Where each job (backfill, verify) stands on each logical shard: its checkpoint (the last
# media_objects row it finished, in (media_id, variant) order) and its counts.
media_migration_progress = Table(
    "media_migration_progress",
    global_metadata,
    Column("job", String(16), primary_key=True),
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("pass_started_at", UtcDateTime(), nullable=False),
    Column("after_media_id", BigInteger, nullable=False, server_default="0"),
    Column("after_variant", String(16), nullable=False, server_default=""),
    Column("total", BigInteger, nullable=False, server_default="0"),
    Column("done", BigInteger, nullable=False, server_default="0"),
    Column("bytes", BigInteger, nullable=False, server_default="0"),
    Column("copied", BigInteger, nullable=False, server_default="0"),
    Column("present", BigInteger, nullable=False, server_default="0"),
    Column("verified", BigInteger, nullable=False, server_default="0"),
    Column("mismatched", BigInteger, nullable=False, server_default="0"),
    Column("repaired", BigInteger, nullable=False, server_default="0"),
    Column("quarantined", BigInteger, nullable=False, server_default="0"),
    Column("removed", BigInteger, nullable=False, server_default="0"),
    Column("finished_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Objects the verifier could not make right in the target after its retries, for a report.
# A later pass that finds one intact (or gone from the database) takes it off the list.
media_migration_quarantine = Table(
    "media_migration_quarantine",
    global_metadata,
    Column("key", String(300), primary_key=True),
    Column("media_id", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Logical shards being moved to another physical database (docs/sharding.md#moving-a-shard).
# While a shard's row says "frozen", every router holds writes to it back until the move
# switches the map; reads go on.
shard_moves = Table(
    "shard_moves",
    global_metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("target", String(64), nullable=False),
    Column("phase", String(16), nullable=False),  # copying | frozen
    Column("started_at", UtcDateTime(), nullable=False),
)

# Feature gates (docs/gates.md): a code path on for a share of accounts or of app servers.
gates = Table(
    "gates",
    global_metadata,
    Column("name", String(64), primary_key=True),
    Column("percent", Integer, nullable=False),
    Column("unit", String(8), nullable=False),  # user | server
    Column("updated_at", UtcDateTime(), nullable=False),
)

# --- per logical shard -----------------------------------------------------------------------

shard_migrations = migrations_table("shard_migrations", shard_metadata)

# Work to do after a commit, written in the same transaction as the change that needs it,
# so a broker outage delays work and never loses it.
outbox = Table(
    "outbox",
    shard_metadata,
    shard_id_column(),
    Column("task", String(200), nullable=False),
    Column("payload", Json, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("available_at", UtcDateTime(), nullable=False, server_default=func.now()),
    Column("done_at", UtcDateTime()),
    created_at_column(),
    # With a broker: when the row was last handed to it (None: not handed over, or its
    # hand-over failed). A row handed over long ago and not done is handed over again.
    Column("published_at", UtcDateTime()),
    # Set once it has failed ``task_max_attempts`` times: it waits for an operator.
    Column("dead_at", UtcDateTime()),
    Column("last_error", Text()),
    Index(
        "ix_outbox_pending",
        "available_at",
        postgresql_where=text("done_at IS NULL"),
        sqlite_where=text("done_at IS NULL"),
    ),
)

#: The columns shard migration 6 added to ``outbox``.
OUTBOX_STATE_COLUMNS = ("published_at", "dead_at", "last_error")

# An account lives on its home shard, chosen at sign-up; its ID carries that shard.
accounts = Table(
    "accounts",
    shard_metadata,
    shard_id_column(),
    Column("username", String(30), nullable=False, unique=True),  # as chosen, case kept
    Column("email", String(254), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("display_name", String(100), nullable=False, server_default=""),
    Column("note", Text, nullable=False, server_default=""),  # plain text, as written
    Column("avatar_key", String(200)),
    Column("locked", Boolean, nullable=False, server_default=false()),
    Column("discoverable", Boolean, nullable=False, server_default=true()),
    Column("followers_count", Integer, nullable=False, server_default="0"),
    Column("following_count", Integer, nullable=False, server_default="0"),
    Column("statuses_count", Integer, nullable=False, server_default="0"),
    Column("last_status_at", UtcDateTime()),
    created_at_column(),
)


def edge_table(name: str, *extra: Column[object]) -> Table:
    """A directed edge ``account_id -> target_id`` kept on ``account_id``'s shard.

    Its own ``id`` orders an account's edges (newest first) for paging.
    """
    return Table(
        name,
        shard_metadata,
        shard_id_column(),
        Column("account_id", BigInteger, nullable=False),
        Column("target_id", BigInteger, nullable=False),
        *extra,
        created_at_column(),
        UniqueConstraint("account_id", "target_id"),
        Index(f"ix_{name}_account_id_id", "account_id", "id"),
    )


# The follow graph. Each edge kind has an authoritative side, written by the action, and a
# mirror on the other account's shard, written from the outbox: so everything a viewer's
# relationships need is on the viewer's own shard.
follows = edge_table(  # follower -> followee, on the follower's shard (authoritative)
    "follows",
    Column("show_reblogs", Boolean, nullable=False, server_default=true()),
    Column("notify", Boolean, nullable=False, server_default=false()),
)
followers = edge_table("followers")  # followee -> follower, on the followee's shard (mirror)
follow_requests_out = edge_table("follow_requests_out")  # requester -> locked (authoritative)
follow_requests_in = edge_table("follow_requests_in")  # locked -> requester (mirror)
blocks = edge_table("blocks")  # blocker -> blocked (authoritative)
blocked_by = edge_table("blocked_by")  # blocked -> blocker (mirror)
mutes = edge_table(  # muter -> muted (one side only: nobody else needs to know)
    "mutes",
    Column("hide_notifications", Boolean, nullable=False, server_default=true()),
    Column("expires_at", UtcDateTime()),
)

# A photo as uploaded: it lives on the uploader's shard, as will the post it is attached to.
media_attachments = Table(
    "media_attachments",
    shard_metadata,
    shard_id_column(),
    Column("account_id", BigInteger, nullable=False),
    Column("status_id", BigInteger),  # the post it is attached to, once attached
    Column("state", String(16), nullable=False),  # processing | ready | failed
    Column("filter", String(32), nullable=False, server_default="normal"),
    Column("description", Text, nullable=False, server_default=""),
    Column("focus_x", Float, nullable=False, server_default="0"),
    Column("focus_y", Float, nullable=False, server_default="0"),
    Column("width", Integer),
    Column("height", Integer),
    Column("blurhash", String(64)),
    Column("error", Text),
    created_at_column(),
    Column("processed_at", UtcDateTime()),
    Index("ix_media_attachments_account_id_id", "account_id", "id"),
)

# Every object stored for a photo, recorded when it is written: the MD5 and size here,
# not a store listing or an ETag, are what the migration verifier trusts.
media_objects = Table(
    "media_objects",
    shard_metadata,
    Column("media_id", BigInteger, primary_key=True),
    Column("variant", String(16), primary_key=True),  # original | 1080 | 640 | 320 | thumb
    Column("store", String(64), nullable=False),
    Column("key", String(300), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("md5", String(32), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("content_type", String(64), nullable=False),
    created_at_column(),
)


# --- posts ---------------------------------------------------------------------------------

# A post, or a comment on one. A whole thread lives on the post owner's shard: a comment's
# ID is made there (so it carries that shard), whoever writes it, so a post, its comments
# and their likes are read and counted in one database.
statuses = Table(
    "statuses",
    shard_metadata,
    shard_id_column(),
    Column("account_id", BigInteger, nullable=False),  # the author
    # The top-level post this belongs to (its own ID for a post) and that post's author.
    Column("post_id", BigInteger, nullable=False),
    Column("post_account_id", BigInteger, nullable=False),
    Column("in_reply_to_id", BigInteger),
    Column("in_reply_to_account_id", BigInteger),
    Column("text", Text, nullable=False, server_default=""),  # as written; HTML is rendered
    Column("spoiler_text", Text, nullable=False, server_default=""),
    Column("sensitive", Boolean, nullable=False, server_default=false()),
    # public | unlisted | private; a comment takes its post's when that is narrower.
    Column("visibility", String(10), nullable=False),
    Column("language", String(16)),
    Column("media_ids", Json, nullable=False),  # a post's photos, in carousel order
    Column("favourites_count", Integer, nullable=False, server_default="0"),
    Column("replies_count", Integer, nullable=False, server_default="0"),
    Column("pinned_at", UtcDateTime()),
    Column("edited_at", UtcDateTime()),
    Column("application", String(200)),
    created_at_column(),
    Index("ix_statuses_account_id_id", "account_id", "id"),
    Index("ix_statuses_post_id_id", "post_id", "id"),
    # The public timeline: public top-level posts, newest first.
    Index(
        "ix_statuses_public",
        "id",
        postgresql_where=text("visibility = 'public' AND in_reply_to_id IS NULL"),
        sqlite_where=text("visibility = 'public' AND in_reply_to_id IS NULL"),
    ),
)

# The hashtag index of public posts (what tag timelines read); a status's own tags are
# parsed from its text when it is shown.
status_tags = Table(
    "status_tags",
    shard_metadata,
    Column("tag", String(100), primary_key=True),  # lower-cased
    Column("status_id", BigInteger, primary_key=True),
    Column("account_id", BigInteger, nullable=False),
)

# Who a status mentions (existing accounts only), on the status's shard.
status_mentions = Table(
    "status_mentions",
    shard_metadata,
    Column("status_id", BigInteger, primary_key=True),
    Column("account_id", BigInteger, primary_key=True),
)

# Likes, on the liked status's shard (authoritative: the count is kept beside them).
favourites = Table(
    "favourites",
    shard_metadata,
    shard_id_column(),
    Column("status_id", BigInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    created_at_column(),
    UniqueConstraint("status_id", "account_id"),
    Index("ix_favourites_status_id_id", "status_id", "id"),
)
# The liker's list of likes (mirror, same IDs), on the liker's shard: account -> status.
account_favourites = edge_table("account_favourites")
# Saves: only the saver ever reads them, so one side only. account -> status.
bookmarks = edge_table("bookmarks")

# Notifications, on the recipient's shard. One per (type, sender, status): a task that
# runs twice notifies once. ``status_id`` 0 means none (NULLs would not be unique).
notifications = Table(
    "notifications",
    shard_metadata,
    shard_id_column(),
    Column("account_id", BigInteger, nullable=False),  # the recipient
    Column("type", String(20), nullable=False),
    Column("from_account_id", BigInteger, nullable=False),
    Column("status_id", BigInteger, nullable=False, server_default="0"),
    created_at_column(),
    UniqueConstraint("account_id", "type", "from_account_id", "status_id"),
    Index("ix_notifications_account_id_id", "account_id", "id"),
)

# ``Idempotency-Key`` of status creation, on the shard the status was written to.
idempotency_keys = Table(
    "idempotency_keys",
    shard_metadata,
    Column("account_id", BigInteger, primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("status_id", BigInteger, nullable=False),
    created_at_column(),
)


def shard_data_tables() -> list[Table]:
    """The tables that hold a shard's data (for row counts and shard moves)."""
    return [t for t in shard_metadata.sorted_tables if t is not shard_migrations]
