"""Request-scoped dependencies shared by every API module."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from photogram.db.ids import InvalidIdError, parse_id
from photogram.runtime import Runtime
from photogram.web.errors import not_found


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def path_id(runtime: Runtime, raw: str) -> int:
    """The ID in a URL path; 404 for anything that cannot name a record here (malformed,
    out of range, or on a shard this cluster does not have), as for an unknown ID."""
    try:
        id_ = parse_id(raw)
    except InvalidIdError:
        raise not_found() from None
    if not runtime.router.holds(id_):
        raise not_found()
    return id_
