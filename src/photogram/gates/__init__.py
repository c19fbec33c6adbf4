"""Feature gates: a new code path, switched on for a share of people or of app servers.

Each gate is a row in the global database (``gates``): a name, a percentage and what the
percentage counts — ``user`` (a stable share of accounts: the same people stay in as it
grows from 1% to 100%) or ``server`` (a stable share of app servers, by
``server_name``: a canary). Every process keeps the whole table in memory and re-reads it
every ``gates_refresh_seconds``, so ``photogram gates set NAME PERCENT`` reaches the cluster
within seconds and a check costs no I/O. A gate the table does not name is at its
``default``, chosen by the code it guards (docs/gates.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.db.metadata import gates as gates_table
from photogram.errors import PhotogramError

log = logging.getLogger(__name__)

Unit = Literal["user", "server"]
NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")

#: Gates the code consults, with what each guards (``gates list`` shows them even unset).
KNOWN: dict[str, str] = {
    "home.push_feeds": "home timelines from the Redis feeds (with redis_url); off: read-time",
}


class GateError(PhotogramError):
    """A gate name or percentage that cannot be."""


@dataclass(frozen=True, slots=True)
class Gate:
    name: str
    percent: int
    unit: Unit
    updated_at: datetime | None = None


def bucket(name: str, subject: str) -> int:
    """0 to 99, stable per gate and subject, independent between gates (each gate draws its
    own share of people, not always the same first few percent)."""
    digest = hashlib.blake2b(f"{name}\0{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise GateError(
            f"invalid gate name {name!r}: lower-case letters, digits, '_', '.', '-', starting "
            "with a letter, at most 64 characters"
        )
    return name


class Gates:
    """The gates as this process last read them."""

    def __init__(
        self,
        load: Callable[[], Awaitable[dict[str, Gate]]],
        *,
        server_name: str,
        refresh_seconds: float,
    ) -> None:
        self._load = load
        self.server_name = server_name
        self._refresh_seconds = refresh_seconds
        self._gates: dict[str, Gate] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> dict[str, Gate]:
        try:
            self._gates = await self._load()
        except Exception as exc:  # keep the last known gates through an outage
            log.warning("gates not refreshed: %s", exc)
        self._loaded_at = time.monotonic()
        return self._gates

    async def current(self) -> dict[str, Gate]:
        if time.monotonic() - self._loaded_at >= self._refresh_seconds:
            async with self._lock:
                if time.monotonic() - self._loaded_at >= self._refresh_seconds:
                    await self.refresh()
        return self._gates

    async def enabled(self, name: str, *, user_id: int | None = None, default: bool) -> bool:
        """Whether the code path gated by ``name`` runs for ``user_id`` on this server.

        A ``user`` gate with no user (a signed-out request) is on only at 100%.
        """
        gate = (await self.current()).get(name)
        if gate is None:
            return default
        if gate.percent >= 100:
            return True
        if gate.percent <= 0:
            return False
        if gate.unit == "server":
            return bucket(name, self.server_name) < gate.percent
        return user_id is not None and bucket(name, str(user_id)) < gate.percent


async def load(conn: AsyncConnection) -> dict[str, Gate]:
    rows = await conn.execute(select(gates_table))
    return {r.name: Gate(r.name, r.percent, r.unit, r.updated_at) for r in rows}


async def set_gate(conn: AsyncConnection, name: str, percent: int, unit: Unit) -> Gate:
    check_name(name)
    if not 0 <= percent <= 100:
        raise GateError(f"a gate's percentage is 0 to 100, not {percent}")
    now = datetime.now(UTC)
    values = {"percent": percent, "unit": unit, "updated_at": now}
    changed = await conn.execute(
        update(gates_table).where(gates_table.c.name == name).values(**values)
    )
    if changed.rowcount == 0:
        await conn.execute(insert(gates_table).values(name=name, **values))
    return Gate(name, percent, unit, now)


async def remove_gate(conn: AsyncConnection, name: str) -> bool:
    result = await conn.execute(delete(gates_table).where(gates_table.c.name == check_name(name)))
    return bool(result.rowcount)
