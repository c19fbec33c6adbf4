"""64-bit time-sortable IDs that carry their logical shard.

Layout (Instagram, 2011), most significant bit first::

    | 41 bits: milliseconds since EPOCH | 13 bits: logical shard | 10 bits: sequence |

so the shard of any object is ``(id >> 10) & 0x1FFF`` and no lookup service is
needed to route by ID.

Two flaws of the published ``next_id()`` are fixed here:

* **Sign.** 41 bits of milliseconds overflow a signed BIGINT once the top bit
  is set, 2^40 ms (34.8 years) after the epoch. The rule: the time field never
  exceeds ``MAX_MS`` (2^40 - 1), so the sign bit is always 0. With the epoch at
  2026-01-01 UTC, IDs stay positive until ``HORIZON`` (2060-11-03); generating
  an ID after that raises instead of wrapping negative.
* **Repeats.** Instagram computed ``nextval() % 1024`` next to the clock, so a
  1,025th insert in one millisecond reused an ID. Here the per-shard state is a
  51-bit counter ``T = ms << 10 | sequence`` that only ever goes up: each ID
  takes ``T_last + 1``, raised to ``now_ms << 10`` once it lags the clock by
  more than ``CATCH_UP_MS``. When more than 1,024 IDs are taken in one
  millisecond the time field runs ahead of the clock (borrowing from the next
  milliseconds) until the rate drops; IDs stay unique and strictly increasing
  within a shard, and the clock stepping backwards cannot make them repeat.

The catch-up tolerance means an ID's time field can trail its insert by up to
``CATCH_UP_MS``; in exchange the counter is written back (a WAL record on
PostgreSQL) at most once a millisecond per shard instead of for every ID.

Bulk inserts reserve a block instead (``reserve_ids``; ``next_ids(n)`` in SQL):
one lock and one counter write give ``n`` consecutive counter values, the same
IDs that ``n`` successive ``next_id()`` calls would have made, at the cost of one
call per batch instead of one per row.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType

TIME_BITS = 41
SHARD_BITS = 13
SEQUENCE_BITS = 10

MAX_SHARDS = 1 << SHARD_BITS  # 8,192 logical shards
SHARD_MASK = MAX_SHARDS - 1
SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1
SHARD_SHIFT = SEQUENCE_BITS
TIME_SHIFT = SHARD_BITS + SEQUENCE_BITS

#: The custom epoch. Recent on purpose: every millisecond before it is range wasted.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH_MS = int(EPOCH.timestamp() * 1000)

#: The time field stays below 2^40 so that bit 63, the sign bit, is never set.
MAX_MS = (1 << (TIME_BITS - 1)) - 1
MAX_COUNTER = ((MAX_MS + 1) << SEQUENCE_BITS) - 1
HORIZON = EPOCH + timedelta(milliseconds=MAX_MS)
MAX_ID = (MAX_MS << TIME_SHIFT) | (SHARD_MASK << SHARD_SHIFT) | SEQUENCE_MASK

#: How far the counter may trail the clock before it is raised to it.
CATCH_UP_MS = 1

#: Advisory-lock class for the PostgreSQL ID function ("phid"); the shard is the object.
ADVISORY_LOCK_CLASS = int.from_bytes(b"phid", "big")

_DIGITS = re.compile(r"[0-9]{1,19}")


class InvalidIdError(ValueError):
    pass


class IdHorizonError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class IdParts:
    id: int
    ms: int
    shard: int
    sequence: int

    @property
    def timestamp(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.ms)

    def as_json(self) -> dict[str, int | str]:
        stamp = self.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "id": str(self.id),
            "timestamp": stamp,
            "shard": self.shard,
            "sequence": self.sequence,
        }


def compose(ms: int, shard: int, sequence: int) -> int:
    if not 0 <= ms <= MAX_MS:
        raise ValueError(f"milliseconds since epoch out of range: {ms}")
    if not 0 <= shard <= SHARD_MASK:
        raise ValueError(f"logical shard out of range: {shard}")
    if not 0 <= sequence <= SEQUENCE_MASK:
        raise ValueError(f"sequence out of range: {sequence}")
    return (ms << TIME_SHIFT) | (shard << SHARD_SHIFT) | sequence


def decompose(id_: int) -> IdParts:
    if not 0 < id_ <= MAX_ID:
        raise InvalidIdError(f"not a photogram ID: {id_}")
    return IdParts(
        id=id_,
        ms=id_ >> TIME_SHIFT,
        shard=(id_ >> SHARD_SHIFT) & SHARD_MASK,
        sequence=id_ & SEQUENCE_MASK,
    )


def shard_of(id_: int) -> int:
    return (id_ >> SHARD_SHIFT) & SHARD_MASK


def parse_id(text: str) -> int:
    """The ID in ``text`` (decimal, as the API and CLI show it), or InvalidIdError."""
    stripped = text.strip()
    if not _DIGITS.fullmatch(stripped):
        raise InvalidIdError(f"not a photogram ID: {text!r} (expected a positive decimal number)")
    value = int(stripped)
    if not 0 < value <= MAX_ID:
        raise InvalidIdError(f"not a photogram ID: {text!r} (out of range)")
    return value


def from_counter(counter: int, shard: int) -> int:
    """The ID for per-shard counter value ``T = ms << 10 | sequence``."""
    return (
        ((counter >> SEQUENCE_BITS) << TIME_SHIFT)
        | (shard << SHARD_SHIFT)
        | (counter & SEQUENCE_MASK)
    )


def counter_floor(when_ms: int) -> int:
    """The least counter value a clock reading of ``when_ms`` (Unix ms) allows."""
    return (when_ms - EPOCH_MS) << SEQUENCE_BITS


def check_block_size(n: object) -> int:
    """``n`` if it is a usable number of IDs to reserve at once, else ValueError."""
    # bool is an int to Python but never a count anyone meant.
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"a block of IDs needs a positive whole number of IDs, not {n!r}")
    return n


# --- PostgreSQL: the ID is made inside the database, per logical shard schema ---------------

_PG_EXHAUSTED = f"photogram ID space exhausted (time field ends at {HORIZON.isoformat()})"


def pg_next_id_ddl(schema: str, shard: int) -> list[str]:
    """DDL giving ``schema`` its counter sequence and its ``next_id()`` function.

    The sequence holds the counter T. Raising it to the clock needs a
    read-modify-write that PostgreSQL sequences cannot do atomically (a bare
    ``setval`` racing a ``nextval`` could move the counter back and repeat an
    ID), so it is done under a per-shard session advisory lock that is
    taken and released *inside one expression*: no statement boundary, hence
    no interrupt check, falls between lock and unlock, so a cancelled query can
    never leave the lock held (a session lock that leaked would stall every
    insert on the shard). The lock is held for microseconds and only
    serialises ID allocation on one logical shard, never whole transactions,
    and it is released before the statement ends, so it is safe behind
    PgBouncer in transaction mode.
    """
    if not 0 <= shard <= SHARD_MASK:
        raise ValueError(f"logical shard out of range: {shard}")
    seq = f"{schema}.id_counter"
    clock_ms = f"(floor(date_part('epoch', clock_timestamp()) * 1000)::bigint - {EPOCH_MS})"
    return [
        f"CREATE SEQUENCE IF NOT EXISTS {seq} AS bigint MINVALUE 0 START 0",
        f"""
CREATE OR REPLACE FUNCTION {schema}.next_id() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    t bigint;
BEGIN
    -- One expression, evaluated in this order: lock, nextval, clock, then either
    -- setval (the counter lags the clock by more than CATCH_UP_MS) or currval, then
    -- unlock. Function arguments, CASE and GREATEST evaluate left to right.
    t := greatest(
        CASE WHEN nextval(CASE WHEN pg_advisory_lock({ADVISORY_LOCK_CLASS}, {shard}) IS NULL
                               THEN '{seq}'::regclass ELSE '{seq}'::regclass END)
                  < ({clock_ms} - {CATCH_UP_MS}) << {SEQUENCE_BITS}
             THEN setval('{seq}', {clock_ms} << {SEQUENCE_BITS})
             ELSE currval('{seq}') END,
        pg_advisory_unlock({ADVISORY_LOCK_CLASS}, {shard})::int - 1);
    IF t > {MAX_COUNTER} THEN
        RAISE EXCEPTION '{_PG_EXHAUSTED}';
    END IF;
    RETURN ((t >> {SEQUENCE_BITS}) << {TIME_SHIFT}) | {shard << SHARD_SHIFT}
        | (t & {SEQUENCE_MASK});
END
$fn$""",
        *pg_next_ids_ddl(schema, shard),
    ]


def pg_next_ids_ddl(schema: str, shard: int) -> list[str]:
    """DDL giving ``schema`` (which has ``next_id()``) block reservation.

    ``next_ids(n)`` reserves ``n`` consecutive counter values and returns the
    first, ``T``; the block's IDs are ``id_from_counter(T)`` …
    ``id_from_counter(T + n - 1)``, exactly what ``n`` successive ``next_id()``
    calls would have returned. It returns the counter rather than an ID
    because a block that crosses a millisecond is not a run of consecutive IDs
    (the sequence field wraps into the time field, past the shard bits).

    The lock discipline is ``next_id()``'s: lock, read, clock, write, unlock in
    one expression. The counter is read with ``pg_sequence_last_value`` (which
    does not advance it) and written once, by the ``setval`` that moves it to
    the block's last value, so a block costs one lock and one counter write
    whatever its size. The read is a function argument, not a scalar subquery
    (which PostgreSQL may run as an init plan, outside the evaluation order
    the lock relies on). Both reads happen under the lock, which every writer
    of the sequence holds, so they see the same value.

    ``id_from_counter(t)`` is a one-expression SQL function that the planner
    inlines, so ``INSERT … SELECT id_from_counter(first + g)`` pays for no
    function call per row.
    """
    if not 0 <= shard <= SHARD_MASK:
        raise ValueError(f"logical shard out of range: {shard}")
    seq = f"{schema}.id_counter"
    clock_ms = f"(floor(date_part('epoch', clock_timestamp()) * 1000)::bigint - {EPOCH_MS})"
    # The counter's last value; -1 before anything was taken, so the first ID is counter 0.
    locked_last = (
        f"coalesce(pg_sequence_last_value(CASE WHEN pg_advisory_lock({ADVISORY_LOCK_CLASS}, "
        f"{shard}) IS NULL THEN '{seq}'::regclass ELSE '{seq}'::regclass END), -1)"
    )
    last = f"coalesce(pg_sequence_last_value('{seq}'::regclass), -1)"
    return [
        f"""
CREATE OR REPLACE FUNCTION {schema}.next_ids(n integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    t bigint;
BEGIN
    IF n IS NULL OR n < 1 THEN
        RAISE EXCEPTION 'next_ids(n) needs a positive number of IDs, not %',
            coalesce(n::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One expression, evaluated in this order: lock, read the counter, clock, setval to
    -- the block's last value (from the clock if the counter lags it by more than
    -- CATCH_UP_MS, as next_id() does), unlock. t is then the block's first value.
    t := greatest(
        setval('{seq}', CASE WHEN {locked_last} + 1
                                  < ({clock_ms} - {CATCH_UP_MS}) << {SEQUENCE_BITS}
                             THEN {clock_ms} << {SEQUENCE_BITS}
                             ELSE {last} + 1 END + n - 1),
        pg_advisory_unlock({ADVISORY_LOCK_CLASS}, {shard})::int - 1) - (n - 1);
    IF t + (n - 1) > {MAX_COUNTER} THEN
        RAISE EXCEPTION '{_PG_EXHAUSTED}';
    END IF;
    RETURN t;
END
$fn$""",
        f"""
CREATE OR REPLACE FUNCTION {schema}.id_from_counter(t bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT ((t >> {SEQUENCE_BITS}) << {TIME_SHIFT}) | {shard << SHARD_SHIFT} | (t & {SEQUENCE_MASK})
$fn$""",
    ]


# --- SQLite: the same counter, kept in a table of the one database file ---------------------

SQLITE_COUNTER_TABLE = "id_counters"
SQLITE_FUNCTION = "photogram_next_id"
SQLITE_BLOCK_FUNCTION = "photogram_next_ids"

# Moves the shard's counter to the last value of a block of ?3 and returns it: from
# the clock floor ?2 when the row is new or lags it by more than CATCH_UP_MS, else
# straight on from the counter. A single ID is the block of one.
_SQLITE_BUMP = f"""
INSERT INTO {SQLITE_COUNTER_TABLE} (shard, counter) VALUES (?1, ?2 + ?3 - 1)
ON CONFLICT (shard) DO UPDATE SET counter = CASE
    WHEN counter + 1 < ?2 - ({CATCH_UP_MS} << {SEQUENCE_BITS}) THEN ?2 + ?3 - 1
    ELSE counter + ?3 END
RETURNING counter
"""


def _sqlite_shard(shard: object) -> int:
    if not isinstance(shard, int) or not 0 <= shard <= SHARD_MASK:
        raise ValueError(f"logical shard out of range: {shard!r}")
    return shard


def _sqlite_reserve(conn: sqlite3.Connection, shard: int, n: int) -> int:
    """The first counter value of a fresh block of ``n`` on ``shard``'s counter row."""
    floor = max(counter_floor(time.time_ns() // 1_000_000), 0)
    (last,) = conn.execute(_SQLITE_BUMP, (shard, floor, n)).fetchone()
    if last > MAX_COUNTER:
        raise IdHorizonError(f"ID space exhausted: the time field ends at {HORIZON}")
    return int(last) - (n - 1)


def sqlite_next_id_function(conn: sqlite3.Connection) -> Callable[[object], int]:
    """``photogram_next_id(shard)`` for SQLite, to register on ``conn``.

    The function raises the shard's counter row inside the caller's own write
    transaction. SQLite admits one writer at a time, so this is as atomic
    across processes as the PostgreSQL sequence is across sessions, and a
    rolled-back transaction takes its counter values back with it.
    """

    def next_id(shard: object) -> int:
        checked = _sqlite_shard(shard)
        return from_counter(_sqlite_reserve(conn, checked, 1), checked)

    return next_id


def sqlite_next_ids_function(conn: sqlite3.Connection) -> Callable[[object, object], int]:
    """``photogram_next_ids(shard, n)`` for SQLite, to register on ``conn``: PostgreSQL's
    ``next_ids(n)``, the first counter value of a block of ``n``, with one counter update."""

    def next_ids(shard: object, n: object) -> int:
        return _sqlite_reserve(conn, _sqlite_shard(shard), check_block_size(n))

    return next_ids


# --- In statements: the same call on both backends --------------------------------------------


class NextId(ColumnElement[int]):
    """A fresh ID of logical shard ``shard``, made by the database, for an INSERT's ``id``.

    PostgreSQL renders ``<shard schema>.next_id()`` through the statement's schema
    translation, so one compiled statement serves every shard; SQLite renders
    ``photogram_next_id(:shard)``.
    """

    inherit_cache = True
    type = BigInteger()
    # SQLAlchemy reads this class attribute to build the statement cache key.
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012
        ("shard", InternalTraversal.dp_clauseelement)
    ]

    def __init__(self, shard: int) -> None:
        if not 0 <= shard <= SHARD_MASK:
            raise ValueError(f"logical shard out of range: {shard}")
        self.shard = bindparam("next_id_shard", shard, type_=Integer(), unique=True)


@compiles(NextId, "postgresql")
def _next_id_postgresql(element: NextId, compiler: SQLCompiler, **kw: Any) -> str:
    from photogram.db.metadata import shard_migrations  # any table of the shard schema

    preparer = compiler.preparer
    return f"{preparer.quote_schema(preparer.schema_for_object(shard_migrations))}.next_id()"


@compiles(NextId, "sqlite")
def _next_id_sqlite(element: NextId, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{SQLITE_FUNCTION}({compiler.process(element.shard, **kw)})"


def next_id(shard: int) -> NextId:
    return NextId(shard)


class _ReserveBlock(ColumnElement[int]):
    """The first counter value of a fresh block of ``:next_ids_n`` IDs on shard
    ``:next_ids_shard`` (see reserve_ids)."""

    inherit_cache = True
    type = BigInteger()
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012
        ("shard", InternalTraversal.dp_clauseelement),
        ("n", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self) -> None:
        self.shard = bindparam("next_ids_shard", type_=Integer())
        self.n = bindparam("next_ids_n", type_=Integer())


@compiles(_ReserveBlock, "postgresql")
def _reserve_block_postgresql(element: _ReserveBlock, compiler: SQLCompiler, **kw: Any) -> str:
    from photogram.db.metadata import shard_migrations  # any table of the shard schema

    preparer = compiler.preparer
    schema = preparer.quote_schema(preparer.schema_for_object(shard_migrations))
    return f"{schema}.next_ids({compiler.process(element.n, **kw)})"


@compiles(_ReserveBlock, "sqlite")
def _reserve_block_sqlite(element: _ReserveBlock, compiler: SQLCompiler, **kw: Any) -> str:
    shard = compiler.process(element.shard, **kw)
    return f"{SQLITE_BLOCK_FUNCTION}({shard}, {compiler.process(element.n, **kw)})"


# Built once: a bulk path calls this per batch, and building and keying a statement
# each time would cost as much as the database call.
_RESERVE_BLOCK = select(_ReserveBlock())


def block_ids(first: int, n: int, shard: int) -> list[int]:
    """The IDs of counter values ``first`` … ``first + n - 1`` on ``shard``, in order."""
    # Within one millisecond consecutive counter values are consecutive IDs, so the
    # block is a few ranges (one per millisecond it spans), not n conversions.
    made: list[int] = []
    counter, end = first, first + n
    while counter < end:
        stop = min(end, (counter | SEQUENCE_MASK) + 1)
        start_id = from_counter(counter, shard)
        made.extend(range(start_id, start_id + (stop - counter)))
        counter = stop
    return made


async def reserve_ids(conn: AsyncConnection, shard: int, n: int) -> list[int]:
    """``n`` fresh IDs of logical shard ``shard``, in increasing order, for explicit inserts.

    They are the IDs ``n`` successive ``next_id(shard)`` calls would make, taken
    with one database call, one lock and one counter write instead of ``n``.
    ``conn`` must be routed to the shard (its schema translation names the
    shard's schema), as ``Router.begin(shard)`` gives it. On SQLite the block
    is taken inside ``conn``'s transaction and a rollback returns it; on
    PostgreSQL, as with ``next_id()``, it is gone whatever happens.
    """
    if not 0 <= shard <= SHARD_MASK:
        raise ValueError(f"logical shard out of range: {shard}")
    check_block_size(n)
    params = {"next_ids_shard": shard, "next_ids_n": n}
    first = (await conn.execute(_RESERVE_BLOCK, params)).scalar_one()
    return block_ids(first, n, shard)
