"""Statements about the follow graph, and the few helpers that run them.

Builders return statements; the ``*_edge`` and ``reconcile`` helpers run them inside a
transaction the caller owns (they never begin or commit), so an edge and the counter that
counts it always change in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Insert, Select, Table, Update, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningDelete

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import (
    accounts,
    blocked_by,
    blocks,
    follow_requests_in,
    follow_requests_out,
    followers,
    follows,
    mutes,
)
from photogram.db.router import Router
from photogram.web.paging import Page

# --- statements ----------------------------------------------------------------------------


def lock_account(account_id: int) -> Select[Any]:
    """Take the account's row lock (PostgreSQL; SQLite's write transaction is already
    exclusive). Every graph write on an account's shard takes it first, so writes about
    one account's edges are serialised and each reads what the previous one committed."""
    return select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()


def edge(table: Table, account_id: int, target_id: int) -> Select[Any]:
    return select(table).where(table.c.account_id == account_id, table.c.target_id == target_id)


def insert_edge(
    dialect: str, table: Table, account_id: int, target_id: int, id_: int | None, **extra: Any
) -> Insert:
    """Insert the edge unless it exists; RETURNING says whether a row was really added.

    ``id_`` None makes a new ID on the edge's shard (an authoritative edge); a mirror
    passes its authoritative edge's ID, so both sides page and match by the same ID.
    """
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = make(table).values(
        id=next_id(shard_of(account_id)) if id_ is None else id_,
        account_id=account_id,
        target_id=target_id,
        **extra,
    )
    return stmt.on_conflict_do_nothing(index_elements=["account_id", "target_id"]).returning(
        table.c.id
    )


def delete_edge(
    table: Table,
    account_id: int,
    target_id: int,
    id_: int | None = None,
    before: int | None = None,
) -> ReturningDelete[Any]:
    """Delete the edge (only the one with ``id_``, or only if made before the object with
    ID ``before``, if given); RETURNING says whether it was."""
    stmt = delete(table).where(table.c.account_id == account_id, table.c.target_id == target_id)
    if id_ is not None:
        stmt = stmt.where(table.c.id == id_)
    if before is not None:
        stmt = stmt.where(table.c.id < before)
    return stmt.returning(table.c.id)


def bump(counter: Column[int], account_id: int, delta: int) -> Update:
    return update(accounts).where(accounts.c.id == account_id).values({counter: counter + delta})


def upsert_mute(
    dialect: str,
    account_id: int,
    target_id: int,
    hide_notifications: bool,
    expires_at: datetime | None,
) -> Insert:
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = make(mutes).values(
        id=next_id(shard_of(account_id)),
        account_id=account_id,
        target_id=target_id,
        hide_notifications=hide_notifications,
        expires_at=expires_at,
    )
    return stmt.on_conflict_do_update(
        index_elements=["account_id", "target_id"],
        set_={"hide_notifications": hide_notifications, "expires_at": expires_at},
    )


def edge_page(table: Table, account_id: int, page: Page) -> Select[Any]:
    """One page of an account's edges of one kind, by the edge's own ID (newest first)."""
    stmt = select(table.c.id, table.c.target_id).where(table.c.account_id == account_id)
    return page.apply(stmt, table.c.id)


def edges_to(table: Table, account_id: int, targets: list[int], *extra: Column[Any]) -> Select[Any]:
    return select(table.c.target_id, *extra).where(
        table.c.account_id == account_id, table.c.target_id.in_(targets)
    )


# --- helpers run in the caller's transaction ------------------------------------------------


def _dialect(conn: AsyncConnection) -> str:
    return conn.dialect.name


async def add_edge(
    conn: AsyncConnection,
    table: Table,
    account_id: int,
    target_id: int,
    *,
    id_: int | None = None,
    counter: Column[int] | None = None,
    **extra: Any,
) -> int | None:
    """Add the edge if missing (and count it on ``account_id``); the new row's ID, or None."""
    added = await conn.scalar(
        insert_edge(_dialect(conn), table, account_id, target_id, id_, **extra)
    )
    if added is not None and counter is not None:
        await conn.execute(bump(counter, account_id, +1))
    return None if added is None else int(added)


async def remove_edge(
    conn: AsyncConnection,
    table: Table,
    account_id: int,
    target_id: int,
    *,
    id_: int | None = None,
    before: int | None = None,
    counter: Column[int] | None = None,
) -> int | None:
    """Remove the edge if present (and uncount it); the removed row's ID, or None."""
    removed = await conn.scalar(delete_edge(table, account_id, target_id, id_, before))
    if removed is not None and counter is not None:
        await conn.execute(bump(counter, account_id, -1))
    return None if removed is None else int(removed)


async def reconcile(
    conn: AsyncConnection,
    mirror: Table,
    account_id: int,
    target_id: int,
    want_id: int | None,
    counter: Column[int] | None = None,
) -> bool:
    """Make the mirror edge ``account_id -> target_id`` match its authoritative edge.

    ``want_id`` is the authoritative edge's ID, None when it does not exist. The counter
    moves only when a row really appears or disappears; an edge that was removed and
    made again (a new ID) is replaced in place, its count unchanged. Whether anything
    changed.
    """
    current = await conn.scalar(
        select(mirror.c.id).where(
            mirror.c.account_id == account_id, mirror.c.target_id == target_id
        )
    )
    if current == want_id:
        return False
    if want_id is None:
        await remove_edge(conn, mirror, account_id, target_id, counter=counter)
    elif current is None:
        await add_edge(conn, mirror, account_id, target_id, id_=want_id, counter=counter)
    else:
        await conn.execute(update(mirror).where(mirror.c.id == current).values(id=want_id))
    return True


# --- reads ---------------------------------------------------------------------------------


@dataclass
class ViewerEdges:
    """Everything a viewer's Relationships need, read from the viewer's own shard."""

    following: dict[int, tuple[bool, bool]] = field(default_factory=dict)  # -> reblogs, notify
    followed_by: set[int] = field(default_factory=set)
    requested: set[int] = field(default_factory=set)
    requested_by: set[int] = field(default_factory=set)
    blocking: set[int] = field(default_factory=set)
    blocked_by: set[int] = field(default_factory=set)
    muting: dict[int, bool] = field(default_factory=dict)  # -> hide notifications


async def viewer_edges(router: Router, viewer_id: int, targets: Iterable[int]) -> ViewerEdges:
    """One query per edge kind, all on the viewer's shard (that is what the mirrors are for)."""
    wanted = sorted(set(targets))
    found = ViewerEdges()
    if not wanted:
        return found
    now = datetime.now(UTC)
    async with router.connect_for(viewer_id) as conn:
        for row in await conn.execute(
            edges_to(follows, viewer_id, wanted, follows.c.show_reblogs, follows.c.notify)
        ):
            found.following[row.target_id] = (row.show_reblogs, row.notify)
        for table, into in (
            (followers, found.followed_by),
            (follow_requests_out, found.requested),
            (follow_requests_in, found.requested_by),
            (blocks, found.blocking),
            (blocked_by, found.blocked_by),
        ):
            into.update((await conn.execute(edges_to(table, viewer_id, wanted))).scalars())
        for row in await conn.execute(
            edges_to(mutes, viewer_id, wanted, mutes.c.hide_notifications, mutes.c.expires_at)
        ):
            if row.expires_at is None or row.expires_at > now:
                found.muting[row.target_id] = row.hide_notifications
    return found
