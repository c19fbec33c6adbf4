"""Statements about posts, comments, likes and bookmarks. Builders only: they never commit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Insert, Select, Table, delete, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningDelete

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import (
    favourites,
    idempotency_keys,
    media_attachments,
    media_objects,
    status_mentions,
    status_tags,
    statuses,
)
from photogram.web.paging import Page


def _insert(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def select_statuses(ids: Iterable[int]) -> Select[Any]:
    return select(statuses).where(statuses.c.id.in_(list(ids)))


def lock_status(status_id: int) -> Select[Any]:
    """The status row under its row lock (PostgreSQL): changes to one thread's counts and
    to its existence are serialised on its post."""
    return select(statuses).where(statuses.c.id == status_id).with_for_update()


def claim_idempotency_key(dialect: str, account_id: int, key: str, status_id: int) -> Insert:
    """Record ``key`` for ``status_id`` unless the account used it already; RETURNING says
    whether this request is the first (a concurrent twin waits for the first to commit)."""
    stmt = _insert(dialect, idempotency_keys).values(
        account_id=account_id, key=key, status_id=status_id
    )
    return stmt.on_conflict_do_nothing(index_elements=["account_id", "key"]).returning(
        idempotency_keys.c.status_id
    )


def idempotent_status(account_id: int, key: str) -> Select[Any]:
    return select(idempotency_keys.c.status_id).where(
        idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key
    )


def attachable_media(account_id: int, media_ids: list[int]) -> Select[Any]:
    return (
        select(media_attachments.c.id, media_attachments.c.state, media_attachments.c.status_id)
        .where(media_attachments.c.id.in_(media_ids), media_attachments.c.account_id == account_id)
        .with_for_update()
    )


def bump_status(status_id: int, column: str, delta: int) -> Any:
    counter = statuses.c[column]
    return update(statuses).where(statuses.c.id == status_id).values({counter: counter + delta})


def insert_favourite(dialect: str, status_id: int, account_id: int) -> Insert:
    stmt = _insert(dialect, favourites).values(
        id=next_id(shard_of(status_id)), status_id=status_id, account_id=account_id
    )
    return stmt.on_conflict_do_nothing(index_elements=["status_id", "account_id"]).returning(
        favourites.c.id
    )


def delete_favourite(status_id: int, account_id: int) -> ReturningDelete[Any]:
    return (
        delete(favourites)
        .where(favourites.c.status_id == status_id, favourites.c.account_id == account_id)
        .returning(favourites.c.id)
    )


def favourite_of(status_id: int, account_id: int) -> Select[Any]:
    return select(favourites.c.id).where(
        favourites.c.status_id == status_id, favourites.c.account_id == account_id
    )


def favourited_among(account_id: int) -> Any:
    """A builder for ``Router.by_ids``: which of the given statuses ``account_id`` likes."""

    def build(status_ids: list[int]) -> Select[Any]:
        return select(favourites.c.status_id).where(
            favourites.c.account_id == account_id, favourites.c.status_id.in_(status_ids)
        )

    return build


def favourites_page(status_id: int, page: Page) -> Select[Any]:
    stmt = select(favourites.c.id, favourites.c.account_id).where(
        favourites.c.status_id == status_id
    )
    return page.apply(stmt, favourites.c.id)


def mentions_of(status_ids: list[int]) -> Select[Any]:
    return select(status_mentions).where(status_mentions.c.status_id.in_(status_ids))


def media_rows(media_ids: list[int]) -> Select[Any]:
    return select(media_attachments).where(media_attachments.c.id.in_(media_ids))


def media_object_rows(media_ids: list[int]) -> Select[Any]:
    return select(media_objects).where(media_objects.c.media_id.in_(media_ids))


def thread_shape(post_id: int) -> Select[Any]:
    """Every status of a thread as (id, in_reply_to_id): enough to walk it."""
    return (
        select(statuses.c.id, statuses.c.in_reply_to_id)
        .where(statuses.c.post_id == post_id)
        .order_by(statuses.c.id)
    )


def thread_authors(post_id: int) -> Select[Any]:
    return select(statuses.c.id, statuses.c.account_id).where(statuses.c.post_id == post_id)


def tag_rows(status_id: int) -> Any:
    return delete(status_tags).where(status_tags.c.status_id == status_id)


# --- timelines ------------------------------------------------------------------------------


def posts_by(account_ids: list[int], page: Page) -> Select[Any]:
    """Top-level posts of these accounts (all on one shard, or SQLite's one schema): their
    IDs and authors."""
    stmt = select(statuses.c.id, statuses.c.account_id).where(
        statuses.c.account_id.in_(account_ids), statuses.c.in_reply_to_id.is_(None)
    )
    return page.apply(stmt, statuses.c.id)


def public_posts(page: Page) -> Select[Any]:
    # A literal, not a bound parameter: PostgreSQL can use the partial index
    # ix_statuses_public only when it can see the value at planning time.
    stmt = select(statuses.c.id).where(
        statuses.c.visibility == literal_column("'public'"), statuses.c.in_reply_to_id.is_(None)
    )
    return page.apply(stmt, statuses.c.id)


def tagged_posts(tag: str, page: Page) -> Select[Any]:
    stmt = select(status_tags.c.status_id.label("id")).where(status_tags.c.tag == tag)
    return page.apply(stmt, status_tags.c.status_id)


def account_statuses(
    account_id: int,
    page: Page,
    *,
    visibilities: tuple[str, ...],
    exclude_replies: bool,
    pinned: bool,
) -> Select[Any]:
    stmt = select(statuses.c.id).where(
        statuses.c.account_id == account_id, statuses.c.visibility.in_(visibilities)
    )
    if exclude_replies:
        stmt = stmt.where(statuses.c.in_reply_to_id.is_(None))
    if pinned:
        stmt = stmt.where(statuses.c.pinned_at.is_not(None))
    return page.apply(stmt, statuses.c.id)
