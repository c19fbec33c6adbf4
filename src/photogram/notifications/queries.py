"""Statements about notifications. Builders only: callers own the transaction.

Every one of them reads or writes the recipient's own shard, where its notifications are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Delete, Select, delete, select
from sqlalchemy.sql.dml import ReturningDelete

from photogram.db.metadata import follow_requests_in, notifications
from photogram.web.paging import Page

COLUMNS = (
    notifications.c.id,
    notifications.c.type,
    notifications.c.from_account_id,
    notifications.c.status_id,
    notifications.c.created_at,
)


def page_of(
    account_id: int, page: Page, types: list[str], from_account_id: int | None
) -> Select[Any]:
    stmt = select(*COLUMNS).where(
        notifications.c.account_id == account_id, notifications.c.type.in_(types)
    )
    if from_account_id is not None:
        stmt = stmt.where(notifications.c.from_account_id == from_account_id)
    return page.apply(stmt, notifications.c.id)


def one(account_id: int, notification_id: int) -> Select[Any]:
    return select(*COLUMNS).where(
        notifications.c.account_id == account_id, notifications.c.id == notification_id
    )


def pending_requests(account_id: int, requesters: Iterable[int]) -> Select[Any]:
    """Of ``requesters``, those whose follow request to ``account_id`` is still pending."""
    return select(follow_requests_in.c.target_id).where(
        follow_requests_in.c.account_id == account_id,
        follow_requests_in.c.target_id.in_(sorted(set(requesters))),
    )


def dismiss(account_id: int, notification_id: int) -> ReturningDelete[Any]:
    return (
        delete(notifications)
        .where(notifications.c.account_id == account_id, notifications.c.id == notification_id)
        .returning(notifications.c.id)
    )


def clear(account_id: int) -> Delete:
    return delete(notifications).where(notifications.c.account_id == account_id)
