"""memcached servers of the tests' own, and caches of both kinds over them.

Each server is a real memcached (>= 1.6) on a free loopback port, started and stopped by the
fixtures; a test may kill, pause or resume one mid-test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from photogram.cache import LeaseCache, LocalLeaseCache, MemcachedLeaseCache

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"

#: Generous on purpose: no test may depend on how fast this machine is.
LEASE_WAIT = 5.0
TIMEOUT = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Memcached:
    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [MEMCACHED, "-p", str(self.port), "-U", "0", "-l", "127.0.0.1", "-m", "32"]
        if os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root unless told so
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise RuntimeError(f"memcached did not start: {self.proc.stderr.read()!r}")
            time.sleep(0.025)
        raise RuntimeError(f"memcached on port {self.port} does not answer")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        """The process stops answering but keeps its connections and its data."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        # The signal lands asynchronously: wait until every thread is stopped, or a
        # request sent right after could still be answered.
        tasks = Path(f"/proc/{self.proc.pid}/task")
        for _ in range(400):
            states = [
                (task / "stat").read_text().rpartition(")")[2].split()[0]
                for task in tasks.iterdir()
            ]
            if all(state == "T" for state in states):
                return
            time.sleep(0.005)
        raise RuntimeError("memcached did not stop")

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # nothing in it is worth a graceful shutdown
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def memcached() -> Iterator[Callable[[], Memcached]]:
    """Starts memcached servers for one test, all stopped at its end."""
    started: list[Memcached] = []

    def start() -> Memcached:
        server = Memcached()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_memcached() -> Iterator[Memcached]:
    """One server for the tests that do not stop it; each cache has its own key prefix."""
    server = Memcached()
    yield server
    server.stop()


@pytest.fixture
async def pool() -> AsyncIterator[Callable[..., MemcachedLeaseCache]]:
    """Makes memcached caches (as memcached_cache does), closed at the end of the test."""
    made: list[MemcachedLeaseCache] = []

    def make(servers: list[str], **overrides: Any) -> MemcachedLeaseCache:
        made.append(memcached_cache(servers, **overrides))
        return made[-1]

    yield make
    for cache in made:
        await cache.close()


def memcached_cache(servers: list[str], **overrides: Any) -> MemcachedLeaseCache:
    options: dict[str, Any] = {
        "prefix": f"t{uuid.uuid4().hex[:8]}:",
        "lease_ttl_seconds": 30,
        "lease_wait_seconds": LEASE_WAIT,
        "ttl_seconds": 3600,
        "failover_ttl_seconds": 10,
        "retry_seconds": 10.0,
        "timeout_seconds": TIMEOUT,
    }
    return MemcachedLeaseCache(servers, **options | overrides)


def local_cache(**overrides: Any) -> LocalLeaseCache:
    options: dict[str, Any] = {
        "lease_ttl_seconds": 30,
        "lease_wait_seconds": LEASE_WAIT,
        "ttl_seconds": 3600,
        "max_entries": 10_000,
    }
    return LocalLeaseCache(**options | overrides)


MakeCache = Callable[..., Awaitable[LeaseCache]]


@pytest.fixture(params=["local", "memcached"])
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[MakeCache]:
    """Makes caches of the kind under test (keyword arguments override their settings)."""
    made: list[LeaseCache] = []
    server: Memcached | None = None
    if request.param == "memcached":
        server = request.getfixturevalue("shared_memcached")

    async def make(**overrides: Any) -> LeaseCache:
        cache: LeaseCache
        if server is None:
            cache = local_cache(**overrides)
        else:
            cache = memcached_cache([server.address], **overrides)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


class Database:
    """Stands in for the database: values by key, and every load it served."""

    def __init__(self, rows: dict[str, Any] | None = None) -> None:
        self.rows: dict[str, Any] = dict(rows or {})
        self.loads: list[list[str]] = []

    @property
    def loaded(self) -> list[str]:
        return [key for batch in self.loads for key in batch]

    async def load(self, keys: list[str]) -> dict[str, Any]:
        self.loads.append(list(keys))
        return {key: self.rows[key] for key in keys if key in self.rows}
