"""Statements about the follow graph, and the few helpers that run them.

Builders return statements; the ``*_edge`` and ``reconcile`` helpers run them inside a
transaction the caller owns (they never begin or commit), so an edge and the counter that
counts it always change in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    CompoundSelect,
    Insert,
    Integer,
    Select,
    Table,
    Update,
    cast,
    delete,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningDelete

from photogram.cache import account_counters_key, relationship_key
from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import (
    UtcDateTime,
    accounts,
    blocked_by,
    blocks,
    follow_requests_in,
    follow_requests_out,
    followers,
    follows,
    mutes,
)
from photogram.web.paging import Page

if TYPE_CHECKING:
    from photogram.runtime import Runtime

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


def edge_keys(account_id: int, target_id: int) -> tuple[str, str]:
    """The cached data that edges ``account_id -> target_id`` (on ``account_id``'s shard)
    and the counts beside them make up: to invalidate after changing them."""
    return relationship_key(account_id, target_id), account_counters_key(account_id)


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

# The edges between a viewer and another account kept on the viewer's shard, by the
# number ``relation_edges`` tags each with.
RELATION_TABLES = (follows, followers, follow_requests_out, follow_requests_in, blocks, blocked_by)
MUTES = len(RELATION_TABLES)


def relation_edges(account_id: int, targets: list[int]) -> CompoundSelect[Any]:
    """Every edge ``account_id -> target`` of the relationship kinds (and mutes), in one
    statement: (kind, target_id, a, b, at), where a and b are a follow's show_reblogs and
    notify or a mute's hide_notifications, and at a mute's expiry."""
    no_flag, no_time = cast(null(), Boolean), cast(null(), UtcDateTime())
    parts = []
    for kind, table in enumerate((*RELATION_TABLES, mutes)):
        a: ColumnElement[Any] = no_flag
        b: ColumnElement[Any] = no_flag
        at: ColumnElement[Any] = no_time
        if table is follows:
            a, b = follows.c.show_reblogs, follows.c.notify
        elif table is mutes:
            a, at = mutes.c.hide_notifications, mutes.c.expires_at
        parts.append(
            select(
                literal_column(str(kind), Integer).label("kind"),
                table.c.target_id,
                a.label("a"),
                b.label("b"),
                at.label("at"),
            ).where(table.c.account_id == account_id, table.c.target_id.in_(targets))
        )
    return union_all(*parts)


@dataclass(frozen=True)
class Relation:
    """The edges from one account to another, as kept on the first one's shard (cached
    under ``relationship_key``)."""

    following: tuple[bool, bool] | None = None  # show_reblogs, notify
    followed_by: bool = False
    requested: bool = False
    requested_by: bool = False
    blocking: bool = False
    blocked_by: bool = False
    muting: tuple[bool, datetime | None] | None = None  # hide notifications, expires at

    def muted(self, now: datetime) -> bool | None:
        """Whether notifications are hidden too, if the mute still stands; else None."""
        if self.muting is None:
            return None
        hide, expires_at = self.muting
        return hide if expires_at is None or expires_at > now else None

    def dump(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.following is not None:
            found["following"] = list(self.following)
        for name in ("followed_by", "requested", "requested_by", "blocking", "blocked_by"):
            if getattr(self, name):
                found[name] = True
        if self.muting is not None:
            hide, expires_at = self.muting
            found["muting"] = [hide, None if expires_at is None else expires_at.isoformat()]
        return found

    @classmethod
    def load(cls, data: dict[str, Any]) -> Relation:
        following = data.get("following")
        muting = data.get("muting")
        return cls(
            following=None if following is None else (bool(following[0]), bool(following[1])),
            followed_by=bool(data.get("followed_by")),
            requested=bool(data.get("requested")),
            requested_by=bool(data.get("requested_by")),
            blocking=bool(data.get("blocking")),
            blocked_by=bool(data.get("blocked_by")),
            muting=None
            if muting is None
            else (
                bool(muting[0]),
                None if muting[1] is None else datetime.fromisoformat(muting[1]).astimezone(UTC),
            ),
        )


NONE = Relation()


async def load_relations(
    runtime: Runtime, account_id: int, targets: Iterable[int]
) -> dict[int, Relation]:
    """How ``account_id`` relates to each of ``targets``, through the cache; what it misses
    is one statement on the account's own shard (that is what the mirrors are for)."""
    wanted = sorted(set(targets))
    if not wanted:
        return {}
    target_of = {relationship_key(account_id, t): t for t in wanted}

    async def fetch(keys: list[str]) -> Mapping[str, Any]:
        missing = sorted(target_of[k] for k in keys)
        edges: dict[int, dict[str, Any]] = {t: {} for t in missing}
        async with runtime.router.connect_for(account_id) as conn:
            for row in await conn.execute(relation_edges(account_id, missing)):
                found = edges[int(row.target_id)]
                if row.kind == MUTES:
                    found["muting"] = (bool(row.a), row.at)
                elif RELATION_TABLES[row.kind] is follows:
                    found["following"] = (bool(row.a), bool(row.b))
                else:
                    found[_RELATION_NAMES[row.kind]] = True
        # An account with no edges at all is cached too, as an empty relation.
        return {relationship_key(account_id, t): Relation(**e).dump() for t, e in edges.items()}

    cached = await runtime.cache.read_through(target_of, fetch)
    return {t: Relation.load(cached[k]) if k in cached else NONE for k, t in target_of.items()}


_RELATION_NAMES = {
    RELATION_TABLES.index(table): name
    for table, name in (
        (followers, "followed_by"),
        (follow_requests_out, "requested"),
        (follow_requests_in, "requested_by"),
        (blocks, "blocking"),
        (blocked_by, "blocked_by"),
    )
}


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


async def viewer_edges(runtime: Runtime, viewer_id: int, targets: Iterable[int]) -> ViewerEdges:
    """The viewer's edges to ``targets`` (``load_relations``, so through the cache)."""
    found = ViewerEdges()
    now = datetime.now(UTC)
    for target, relation in (await load_relations(runtime, viewer_id, targets)).items():
        if relation.following is not None:
            found.following[target] = relation.following
        for name in ("followed_by", "requested", "requested_by", "blocking", "blocked_by"):
            if getattr(relation, name):
                getattr(found, name).add(target)
        muted = relation.muted(now)
        if muted is not None:
            found.muting[target] = muted
    return found
