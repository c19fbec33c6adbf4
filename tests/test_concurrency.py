from __future__ import annotations

import asyncio

import pytest

from photogram.concurrency import gather


async def test_a_failure_waits_for_the_others_then_raises_the_first() -> None:
    finished: list[str] = []
    slow_may_end = asyncio.Event()

    async def fail(name: str) -> int:
        await asyncio.sleep(0)
        raise ValueError(name)

    async def slow() -> int:
        await slow_may_end.wait()
        finished.append("slow")
        return 1

    call = asyncio.create_task(gather(slow(), fail("first"), fail("second")))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not call.done()  # the failures are in, the slow one is not
    slow_may_end.set()
    with pytest.raises(ValueError, match="first"):
        await call
    assert finished == ["slow"]


async def test_results_in_argument_order() -> None:
    async def after(turns: int, value: str) -> str:
        for _ in range(turns):
            await asyncio.sleep(0)
        return value

    assert await gather(after(3, "a"), after(1, "b"), after(2, "c")) == ["a", "b", "c"]
    assert await gather(*(after(5 - i, str(i)) for i in range(5))) == list("01234")


async def test_cancelling_it_cancels_and_waits_for_them_all() -> None:
    started = asyncio.Event()
    cleaned: list[int] = []

    async def worker(n: int) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)
            cleaned.append(n)

    call = asyncio.create_task(gather(worker(1), worker(2)))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert sorted(cleaned) == [1, 2]
