"""Mastodon's ID paging: ``max_id``, ``since_id``, ``min_id`` and ``limit``, plus Link headers.

IDs sort by time, so every list pages by the ID that orders it. ``max_id`` and
``since_id`` page backwards from the newest (results newest first); ``min_id`` pages
forwards from just after an ID (results still returned newest first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from sqlalchemy import ColumnElement, Select

from photogram.db.ids import InvalidIdError, parse_id
from photogram.web.errors import invalid


@dataclass(frozen=True)
class Page:
    limit: int
    max_id: int | None = None
    since_id: int | None = None
    min_id: int | None = None

    def apply(self, stmt: Select[Any], column: ColumnElement[int]) -> Select[Any]:
        """``stmt`` narrowed to this page, ordered to be read with ``in_order``."""
        if self.max_id is not None:
            stmt = stmt.where(column < self.max_id)
        if self.since_id is not None:
            stmt = stmt.where(column > self.since_id)
        if self.min_id is not None:
            return stmt.where(column > self.min_id).order_by(column.asc()).limit(self.limit)
        return stmt.order_by(column.desc()).limit(self.limit)

    def in_order(self, rows: Sequence[Any]) -> list[Any]:
        """Rows of ``apply``'s statement, newest first whichever way they were fetched."""
        return list(reversed(rows)) if self.min_id is not None else list(rows)


def _parse_optional_id(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return parse_id(value)
    except InvalidIdError:
        raise invalid(f"{name} is not a valid ID") from None


DEFAULT_LIMIT = 40
MAX_LIMIT = 80


def page_params(
    max_id: Annotated[str | None, Query(description="Return results older than this ID.")] = None,
    since_id: Annotated[str | None, Query(description="Return results newer than this ID.")] = None,
    min_id: Annotated[
        str | None, Query(description="Return results immediately newer than this ID.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, description="How many results (at most 80; more is capped).")
    ] = DEFAULT_LIMIT,
) -> Page:
    """The paging parameters of a list request (Mastodon's defaults: 40, at most 80)."""
    return Page(
        limit=min(limit, MAX_LIMIT),
        max_id=_parse_optional_id("max_id", max_id),
        since_id=_parse_optional_id("since_id", since_id),
        min_id=_parse_optional_id("min_id", min_id),
    )


PageDep = Annotated[Page, Depends(page_params)]


def set_link_header(
    request: Request, response: Response, newest: int | None, oldest: int | None
) -> None:
    """``Link: <…max_id=oldest>; rel="next", <…min_id=newest>; rel="prev"`` for a page."""
    if newest is None or oldest is None:
        return
    base = request.url.remove_query_params(["max_id", "since_id", "min_id"])
    next_url = base.include_query_params(max_id=str(oldest))
    prev_url = base.include_query_params(min_id=str(newest))
    response.headers["Link"] = f'<{next_url}>; rel="next", <{prev_url}>; rel="prev"'
