"""The media store migration's phases, kept in the global database, and the moves between them.

    legacy → dual_write → backfill → verify → read_ramp → new_primary → retired

Every app server and worker re-reads the one ``media_migration`` row every
``media_migration_refresh_seconds`` and routes reads, writes and deletes by its phase
(``MigratingStore``). An operator moves it forward with the ``photogram media migrate``
commands, each of which checks that the move is legal; until ``retired``, ``rollback``
takes it back to any earlier phase, because until then the source store is written
whole (docs/media-migration.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.metadata import (
    media_migration,
    media_migration_progress,
    media_migration_quarantine,
)
from photogram.errors import PhotogramError

MIGRATION_ROW = 1


class Phase(enum.StrEnum):
    LEGACY = "legacy"
    DUAL_WRITE = "dual_write"
    BACKFILL = "backfill"
    VERIFY = "verify"
    READ_RAMP = "read_ramp"
    NEW_PRIMARY = "new_primary"
    RETIRED = "retired"

    @property
    def rank(self) -> int:
        return ORDER.index(self)


ORDER = tuple(Phase)


class MigrationError(PhotogramError):
    """A move the migration cannot make now; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class State:
    """The migration as the global database has it (``target`` is None when there is none)."""

    source: str
    target: str | None = None
    phase: Phase = Phase.LEGACY
    read_percent: int = 0
    phase_changed_at: datetime | None = None
    verified_from: datetime | None = None
    verified_at: datetime | None = None

    @property
    def primary(self) -> str:
        """The store that is authoritative: an upload succeeds once it holds the object."""
        if self.target is not None and self.phase.rank >= Phase.NEW_PRIMARY.rank:
            return self.target
        return self.source

    @property
    def secondary(self) -> str | None:
        """The store written besides the primary (a failure there is queued for repair)."""
        if self.target is None or self.phase in (Phase.LEGACY, Phase.RETIRED):
            return None
        return self.source if self.phase is Phase.NEW_PRIMARY else self.target

    @property
    def delete_from(self) -> tuple[str, ...]:
        """Every store a delete must reach: both until retired, so that nothing deleted
        lingers in the target, even after a rollback to legacy."""
        if self.target is None:
            return (self.source,)
        if self.phase is Phase.RETIRED:
            return (self.target,)
        return (self.primary, self.source if self.primary == self.target else self.target)

    @property
    def active(self) -> bool:
        """Whether objects are being moved (a phase between legacy and retired)."""
        return self.target is not None and self.phase not in (Phase.LEGACY, Phase.RETIRED)


def no_migration(default_store: str) -> State:
    return State(source=default_store)


def _state(row: Any) -> State:
    return State(
        source=row.source,
        target=row.target,
        phase=Phase(row.phase),
        read_percent=row.read_percent,
        phase_changed_at=row.phase_changed_at,
        verified_from=row.verified_from,
        verified_at=row.verified_at,
    )


async def load(conn: AsyncConnection, default_store: str) -> State:
    row = (
        await conn.execute(select(media_migration).where(media_migration.c.id == MIGRATION_ROW))
    ).first()
    return no_migration(default_store) if row is None else _state(row)


async def load_for_update(conn: AsyncConnection, default_store: str) -> State:
    """The state, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    row = (
        await conn.execute(
            select(media_migration).where(media_migration.c.id == MIGRATION_ROW).with_for_update()
        )
    ).first()
    return no_migration(default_store) if row is None else _state(row)


def active_store(state: State) -> str:
    """The store media lives in when no migration is under way (after one: its target)."""
    if state.target is not None and state.phase is Phase.RETIRED:
        return state.target
    return state.source


async def start(conn: AsyncConnection, default_store: str, target: str) -> State:
    """Begin moving media from the store in use to ``target``: phase dual_write."""
    state = await load_for_update(conn, default_store)
    if state.active:
        raise MigrationError(
            f"a migration to {state.target!r} is already in phase {state.phase}; "
            "finish it (retire) or roll it back to legacy first"
        )
    source = active_store(state)
    if target == source:
        raise MigrationError(f"media is already in store {target!r}")
    now = datetime.now(UTC)
    values = {
        "source": source,
        "target": target,
        "phase": Phase.DUAL_WRITE.value,
        "read_percent": 0,
        "phase_changed_at": now,
        "verified_from": None,
        "verified_at": None,
    }
    # A new migration starts its jobs from the beginning.
    await conn.execute(delete(media_migration_progress))
    await conn.execute(delete(media_migration_quarantine))
    if state.target is None and state.phase_changed_at is None:
        await conn.execute(
            insert(media_migration).values(id=MIGRATION_ROW, created_at=now, **values)
        )
    else:
        await conn.execute(
            update(media_migration).where(media_migration.c.id == MIGRATION_ROW).values(**values)
        )
    return await load(conn, default_store)


async def move(
    conn: AsyncConnection,
    default_store: str,
    to: Phase,
    *,
    read_percent: int | None = None,
) -> State:
    """Move the migration to phase ``to`` if that is a legal step from where it is.

    Forward steps go one phase at a time, each after what it depends on is done (the
    backfill has finished every shard, a verification pass has found everything intact
    since …); ``rollback`` is the only way back.
    """
    state = await load_for_update(conn, default_store)
    if not state.active and not (state.phase is Phase.LEGACY and state.target is not None):
        raise MigrationError(
            "no migration is under way; start one with `photogram media migrate start --to STORE`"
        )
    _check_forward(state, to, read_percent)
    values: dict[str, Any] = {"phase": to.value}
    if to is not state.phase:
        values["phase_changed_at"] = datetime.now(UTC)
    if read_percent is not None:
        values["read_percent"] = read_percent
    if to is not state.phase and to in (Phase.VERIFY, Phase.NEW_PRIMARY):
        # The next step needs a clean pass made in this phase.
        values["verified_from"] = values["verified_at"] = None
    await conn.execute(
        update(media_migration).where(media_migration.c.id == MIGRATION_ROW).values(**values)
    )
    return await load(conn, default_store)


def _check_forward(state: State, to: Phase, read_percent: int | None) -> None:
    here = state.phase
    if here is Phase.LEGACY:
        raise MigrationError(
            f"the migration to {state.target!r} was rolled back to legacy; "
            "start it again with `photogram media migrate start --to STORE`"
        )
    allowed_from = {
        Phase.BACKFILL: (Phase.DUAL_WRITE, Phase.BACKFILL),
        Phase.VERIFY: (Phase.BACKFILL, Phase.VERIFY),
        Phase.READ_RAMP: (Phase.VERIFY, Phase.READ_RAMP),
        Phase.NEW_PRIMARY: (Phase.READ_RAMP,),
        Phase.RETIRED: (Phase.NEW_PRIMARY,),
    }
    if here not in allowed_from.get(to, ()):
        if to.rank < here.rank:
            raise MigrationError(
                f"the migration is in phase {here}, past {to}; use "
                f"`photogram media migrate rollback --to {to}` to go back"
            )
        raise MigrationError(f"cannot go from phase {here} to {to}: {_next_step(state)}")
    if to is Phase.READ_RAMP and here is Phase.VERIFY and state.verified_at is None:
        raise MigrationError(
            "no verification pass has found every object intact in "
            f"{state.target!r} yet; run `photogram media migrate verify` until it does"
        )
    if to is Phase.NEW_PRIMARY and state.read_percent < 100:
        raise MigrationError(
            f"reads are ramped to {state.read_percent}%; ramp to 100 before promoting "
            f"{state.target!r}"
        )
    if to is Phase.RETIRED and state.verified_at is None:
        raise MigrationError(
            f"no verification pass since {state.target!r} became primary has found every "
            "object intact; run `photogram media migrate verify` until it does"
        )
    if read_percent is not None and not 0 <= read_percent <= 100:
        raise MigrationError(f"a read percentage is 0 to 100, not {read_percent}")


def _next_step(state: State) -> str:
    return {
        Phase.DUAL_WRITE: "copy what the target lacks first (`photogram media migrate backfill`)",
        Phase.BACKFILL: "verify the copies first (`photogram media migrate verify`)",
        Phase.VERIFY: "ramp reads next (`photogram media migrate ramp PERCENT`)",
        Phase.READ_RAMP: "promote next (`photogram media migrate promote`)",
        Phase.NEW_PRIMARY: "retire next (`photogram media migrate retire`)",
        Phase.RETIRED: "the migration is finished",
    }.get(state.phase, "")


async def rollback(conn: AsyncConnection, default_store: str, to: Phase = Phase.LEGACY) -> State:
    """Take the migration back to an earlier phase (default: legacy, the source alone)."""
    state = await load_for_update(conn, default_store)
    if state.target is None:
        raise MigrationError("no migration is under way; there is nothing to roll back")
    if state.phase is Phase.RETIRED:
        raise MigrationError(
            f"the migration to {state.target!r} is retired: {state.source!r} is no longer "
            "written, so it cannot be rolled back; migrate back with `start --to "
            f"{state.source}` instead"
        )
    if to.rank >= state.phase.rank:
        raise MigrationError(
            f"cannot roll back from {state.phase} to {to}: it is not an earlier phase"
        )
    values: dict[str, Any] = {
        "phase": to.value,
        "phase_changed_at": datetime.now(UTC),
        "verified_from": None,
        "verified_at": None,
    }
    if to.rank < Phase.READ_RAMP.rank:
        values["read_percent"] = 0
    await conn.execute(
        update(media_migration).where(media_migration.c.id == MIGRATION_ROW).values(**values)
    )
    return await load(conn, default_store)


async def record_clean_pass(conn: AsyncConnection, began: datetime, ended: datetime) -> None:
    """A verification pass that began at ``began`` found every live object intact."""
    await conn.execute(
        update(media_migration)
        .where(media_migration.c.id == MIGRATION_ROW)
        # Only a pass that began after the last phase change counts for the next step.
        .where(media_migration.c.phase_changed_at <= began)
        .values(verified_from=began, verified_at=ended)
    )
