"""Reading and dismissing notifications.

A notification row only records that something happened; whether the viewer is shown it
is decided here, when it is read, by the rules every other read path uses: it is dropped
if its status no longer exists or the viewer may not see it (``statuses_for`` leaves such
statuses out), if a block stands between the viewer and its sender (either way), if the
viewer muted the sender with their notifications, if the sender's account is gone, or if
it is a follow request that is no longer pending. Rows are never rewritten when any of
that changes: lifting a mute or a block brings them back, as it should.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Row, Select

from photogram.accounts.queries import load_accounts
from photogram.accounts.schemas import Account, render_account
from photogram.concurrency import gather
from photogram.notifications import queries
from photogram.notifications.schemas import Notification
from photogram.notifications.tasks import TYPES
from photogram.posts.render import iso, statuses_for
from photogram.posts.visibility import lens_for
from photogram.runtime import Runtime
from photogram.web.errors import not_found
from photogram.web.paging import Page

#: Reads one list request makes at most to fill its page when some of what it read is
#: hidden (see ``notifications_page``).
MAX_READS = 4


@dataclass(frozen=True)
class Filters:
    """Which notifications a list asks for (``types`` None: every type)."""

    types: frozenset[str] | None = None
    exclude_types: frozenset[str] = frozenset()
    from_account_id: int | None = None

    def wanted(self) -> list[str]:
        # Types photogram never makes are ignored; asking only for those finds nothing.
        chosen = set(TYPES) if self.types is None else self.types & set(TYPES)
        return sorted(chosen - self.exclude_types)


async def _read(
    runtime: Runtime, viewer_id: int, stmt: Select[Any]
) -> tuple[Sequence[Row[Any]], set[int]]:
    """The rows of ``stmt`` and, of their follow requests' senders, those still pending:
    both on the viewer's shard, in one connection."""
    async with runtime.router.connect_for(viewer_id) as conn:
        rows = (await conn.execute(stmt)).all()
        requesters = [int(r.from_account_id) for r in rows if r.type == "follow_request"]
        pending: set[int] = set()
        if requesters:
            found = await conn.execute(queries.pending_requests(viewer_id, requesters))
            pending = {int(i) for i in found.scalars()}
    return rows, pending


async def render(
    runtime: Runtime, viewer_id: int, rows: Sequence[Row[Any]], pending: set[int]
) -> list[Notification]:
    """Those of ``rows`` the viewer is to see, as entities, in order: their senders, the
    viewer's blocks and mutes of them, and their statuses each fetched once for all."""
    if not rows:
        return []
    senders = {int(r.from_account_id) for r in rows}
    status_ids = list(dict.fromkeys(int(r.status_id) for r in rows if r.status_id))
    accounts, lens, statuses = await gather(
        load_accounts(runtime, senders),
        lens_for(runtime, viewer_id, senders),
        statuses_for(runtime, viewer_id, status_ids),
    )
    shown_statuses = {int(s.id): s for s in statuses}
    rendered: dict[int, Account] = {}
    out = []
    for row in rows:
        sender_id, status_id = int(row.from_account_id), int(row.status_id)
        sender = accounts.get(sender_id)
        if sender is None or sender_id in lens.hidden or lens.muted.get(sender_id, False):
            continue
        if row.type == "follow_request" and sender_id not in pending:
            continue
        status = shown_statuses.get(status_id) if status_id else None
        if status_id and status is None:
            continue
        if sender_id not in rendered:
            rendered[sender_id] = render_account(sender, runtime.settings)
        out.append(
            Notification(
                id=str(row.id),
                type=row.type,
                created_at=iso(row.created_at),
                group_key=f"ungrouped-{row.id}",
                account=rendered[sender_id],
                status=status,
            )
        )
    return out


async def notifications_page(
    runtime: Runtime, viewer_id: int, page: Page, filters: Filters
) -> tuple[list[Notification], int | None, int | None]:
    """A page of the viewer's notifications, newest first, with the newest and oldest IDs
    read for it (what the Link header pages from).

    What the viewer is not to see is dropped after reading, and the page is then topped up
    from further along (a few reads at most), so a run of hidden notifications does not
    come back as an empty page, which ends a client's scrolling. Each further read asks
    for only as many as are still missing: every row read is either shown or hidden, so
    the next page starts right after the last one read and nothing is skipped.
    """
    types = filters.wanted()
    if not types:
        return [], None, None
    shown: list[Notification] = []
    read_ids: list[int] = []
    chunk = page
    for _ in range(MAX_READS):
        stmt = queries.page_of(viewer_id, chunk, types, filters.from_account_id)
        rows, pending = await _read(runtime, viewer_id, stmt)
        rows = chunk.in_order(rows)
        found = await render(runtime, viewer_id, rows, pending)
        read_ids += [int(r.id) for r in rows]
        # With min_id the page grows towards newer notifications, which go first.
        shown = found + shown if page.min_id is not None else shown + found
        missing = page.limit - len(shown)
        if len(rows) < chunk.limit or missing <= 0:
            break
        if page.min_id is not None:
            chunk = replace(page, limit=missing, min_id=max(read_ids))
        else:
            chunk = replace(page, limit=missing, max_id=min(read_ids))
    return shown, max(read_ids, default=None), min(read_ids, default=None)


async def notification(runtime: Runtime, viewer_id: int, notification_id: int) -> Notification:
    """One of the viewer's notifications, if it is shown in the list (else 404)."""
    rows, pending = await _read(runtime, viewer_id, queries.one(viewer_id, notification_id))
    found = await render(runtime, viewer_id, rows, pending)
    if not found:
        raise not_found()
    return found[0]


async def do_dismiss(runtime: Runtime, viewer_id: int, notification_id: int) -> None:
    async with runtime.router.begin_for(viewer_id) as conn:
        if await conn.scalar(queries.dismiss(viewer_id, notification_id)) is None:
            raise not_found()


async def do_clear(runtime: Runtime, viewer_id: int) -> None:
    async with runtime.router.begin_for(viewer_id) as conn:
        await conn.execute(queries.clear(viewer_id))
