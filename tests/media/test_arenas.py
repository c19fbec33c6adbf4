"""Processes that process photos cap glibc's malloc arenas (docs/media-processing.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from photogram.app import create_app
from tests.conftest import MakeSettings, init_test_cluster

# Eight threads allocate at once, then glibc reports its arenas (one "Arena N:" line each).
PROBE = textwrap.dedent(
    """
    import ctypes, sys, threading
    from photogram.media.arenas import limit_malloc_arenas

    print(limit_malloc_arenas(int(sys.argv[1])), flush=True)
    start, kept = threading.Barrier(8), []

    def work():
        start.wait()
        kept.append([bytearray(4096) for _ in range(200)])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctypes.CDLL(None).malloc_stats()
    """
)


def _arenas_after_eight_threads(cap: int, **env: str) -> tuple[str, int]:
    ran = subprocess.run(
        [sys.executable, "-c", PROBE, str(cap)],
        env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return ran.stdout.strip(), sum(line.startswith("Arena ") for line in ran.stderr.splitlines())


def test_the_cap_holds_threads_to_that_many_arenas() -> None:
    assert _arenas_after_eight_threads(2) == ("True", 2)
    took, uncapped = _arenas_after_eight_threads(0)
    assert took == "False"
    assert uncapped > 2  # glibc's default gives the threads arenas of their own


def test_the_environment_variable_wins() -> None:
    assert _arenas_after_eight_threads(2, MALLOC_ARENA_MAX="3") == ("False", 3)


@pytest.mark.parametrize("make_settings", ["sqlite"], indirect=True)
async def test_the_app_caps_them_as_it_starts(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = (await make_settings()).model_copy(update={"media_malloc_arenas": 3})
    await init_test_cluster(settings, 4)
    calls: list[int] = []
    monkeypatch.setattr("photogram.app.limit_malloc_arenas", calls.append)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert calls == [3]
