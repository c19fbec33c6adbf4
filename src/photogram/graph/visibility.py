"""Who is hidden from whom: blocking, either way, hides two accounts from each other."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, union

from photogram.db.metadata import blocked_by, blocks
from photogram.db.router import Router


async def hidden_from(router: Router, viewer_id: int, candidates: Iterable[int]) -> set[int]:
    """Of ``candidates``, the accounts ``viewer_id`` blocks or is blocked by.

    Both edges are on the viewer's own shard (``blocked_by`` mirrors the other side's
    ``blocks``), so this is one query whatever the candidates' shards.
    """
    wanted = [c for c in set(candidates) if c != viewer_id]
    if not wanted:
        return set()
    stmt = union(
        select(blocks.c.target_id).where(
            blocks.c.account_id == viewer_id, blocks.c.target_id.in_(wanted)
        ),
        select(blocked_by.c.target_id).where(
            blocked_by.c.account_id == viewer_id, blocked_by.c.target_id.in_(wanted)
        ),
    )
    async with router.connect_for(viewer_id) as conn:
        return {int(i) for i in (await conn.execute(stmt)).scalars()}
