"""The database's record of stored objects, as the migration reads it.

``media_objects`` names every live object with its size and MD5, recorded when it was
written. The backfill and the verifier walk it shard by shard in (media_id, variant) order;
every copy is checked against it, and a key it no longer names is a deleted object.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select

from photogram.db.ids import SHARD_MASK, SHARD_SHIFT, shard_of
from photogram.db.metadata import media_objects
from photogram.db.router import Router

#: Photo variants: ``<shard>/<media_id>/<variant>.<ext>``; avatars:
#: ``avatars/<account_id>-<random>.jpg``. Either way the key names the ID whose shard
#: holds its record.
_PHOTO_KEY = re.compile(r"\d{4}/(\d+)/[^/]+")
_AVATAR_KEY = re.compile(r"avatars/(\d+)-[^/]+")


def owner_of(key: str) -> int | None:
    """The ID (photo or account) whose shard records ``key``; None for a key photogram
    does not make (such an object is never touched)."""
    match = _PHOTO_KEY.fullmatch(key) or _AVATAR_KEY.fullmatch(key)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Record:
    media_id: int
    variant: str
    key: str
    size: int
    md5: str


def _on_shard(conn_dialect: str, shard: int) -> list[ColumnElement[bool]]:
    """SQLite keeps every logical shard in one table: keep to ``shard``'s rows there."""
    if conn_dialect != "sqlite":
        return []
    return [media_objects.c.media_id.op(">>")(SHARD_SHIFT).op("&")(SHARD_MASK) == shard]


async def count(router: Router, shard: int) -> int:
    async with router.connect(shard) as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(media_objects)
                .where(*_on_shard(conn.dialect.name, shard))
            )
            or 0
        )


async def page(router: Router, shard: int, after: tuple[int, str], limit: int) -> list[Record]:
    """The next ``limit`` records of ``shard`` after (media_id, variant) ``after``."""
    media_id, variant = after
    c = media_objects.c
    async with router.connect(shard) as conn:
        rows = await conn.execute(
            select(c.media_id, c.variant, c.key, c.size, c.md5)
            .where(or_(c.media_id > media_id, and_(c.media_id == media_id, c.variant > variant)))
            .where(*_on_shard(conn.dialect.name, shard))
            .order_by(c.media_id, c.variant)
            .limit(limit)
        )
        return [Record(r.media_id, r.variant, r.key, r.size, r.md5) for r in rows]


async def find(router: Router, key: str) -> Record | None:
    """The live record of ``key``, if the database has one."""
    owner = owner_of(key)
    if owner is None:
        return None
    c = media_objects.c
    async with router.connect(shard_of(owner)) as conn:
        row = (
            await conn.execute(
                select(c.media_id, c.variant, c.key, c.size, c.md5).where(c.key == key)
            )
        ).first()
    return None if row is None else Record(row.media_id, row.variant, row.key, row.size, row.md5)


async def live(router: Router, keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` the database still records (one query per shard they fall in)."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for key in keys:
        owner = owner_of(key)
        if owner is not None:
            by_shard[shard_of(owner)].append(key)
    found: set[str] = set()
    for shard, wanted in by_shard.items():
        async with router.connect(shard) as conn:
            found.update(
                await conn.scalars(
                    select(media_objects.c.key).where(media_objects.c.key.in_(wanted))
                )
            )
    return found
