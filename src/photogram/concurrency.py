"""``gather``: asyncio.gather that lets no work outlive its caller.

``asyncio.gather`` raises the first failure at once and leaves the other awaitables
running, unowned: a request answers while its siblings still hold database connections,
and a shutdown that then disposes the engines strands those connections (they are
returned to a pool that no longer exists, and never closed). This one waits for every
awaitable to finish, then raises the first failure in argument order, or returns the
results. Cancelling it cancels them all and waits for them, as ``asyncio.gather`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")


@overload
async def gather(a: Awaitable[T1], b: Awaitable[T2], /) -> tuple[T1, T2]: ...
@overload
async def gather(a: Awaitable[T1], b: Awaitable[T2], c: Awaitable[T3], /) -> tuple[T1, T2, T3]: ...
@overload
async def gather(
    a: Awaitable[T1], b: Awaitable[T2], c: Awaitable[T3], d: Awaitable[T4], /
) -> tuple[T1, T2, T3, T4]: ...
@overload
async def gather(*aws: Awaitable[T1]) -> list[T1]: ...
async def gather(*aws: Awaitable[Any]) -> Any:
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
