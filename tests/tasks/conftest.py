"""Background work on the real RabbitMQ: a vhost for the session, `photogram worker`
processes, and settings that reach both."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from photogram.db.migrations import init_cluster
from photogram.settings import Settings
from tests.conftest import SESSION_TAG, PostgresFactory, _key_spaces
from tests.memcached import Memcached

PHOTOGRAM = str(Path(sys.executable).with_name("photogram"))
RABBITMQCTL = "/usr/sbin/rabbitmqctl"
BROKER = os.environ.get("PHOTOGRAM_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672")

#: How long a test waits for background work before it fails (work stuck, not slow).
PATIENCE_SECONDS = 240.0

_prefixes = itertools.count(1)

T = TypeVar("T")


def rabbitmqctl(*args: str) -> None:
    subprocess.run([RABBITMQCTL, *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of the session's own (deleted at the end, queues and all)."""
    vhost = f"photogram_test_{SESSION_TAG}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"{BROKER}/{vhost}"
    with contextlib.suppress(subprocess.CalledProcessError):
        rabbitmqctl("delete_vhost", vhost)


BrokerSettings = Callable[..., Awaitable[Settings]]


@pytest.fixture
def broker_settings(
    postgres: PostgresFactory,
    cluster_memcached: Memcached,
    rabbitmq_vhost: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> BrokerSettings:
    """Initialised cluster settings with a broker: two PostgreSQL databases, the session's
    memcached, and queues of the test's own on the session's vhost."""

    async def make(**extra: object) -> Settings:
        settings = await postgres.cluster_settings(
            **{
                "data_dir": tmp_path_factory.mktemp("cluster"),
                "cache_servers": [cluster_memcached.address],
                "cache_key_version": next(_key_spaces),
                "broker_url": rabbitmq_vhost,
                "broker_queue_prefix": f"t{next(_prefixes)}.",
                "outbox_sweep_seconds": 0.5,
                "password_time_cost": 1,
                "password_memory_kib": 8,
                "media_wait_seconds": 120,
                **extra,
            }
        )
        await init_cluster(settings, 16)
        return settings

    return make


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the PHOTOGRAM_* environment of a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        if name == "secret_key":
            value = settings.secret_key.get_secret_value()
        env[f"PHOTOGRAM_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


class Worker:
    """A `photogram worker` process (Celery on the test's queues, and the outbox sweep)."""

    def __init__(self, settings: Settings, *args: str) -> None:
        self.settings = settings
        self.args = args
        # Beside the data dir, not in it: tests look at what a worker leaves there.
        self.log = Path(settings.data_dir).parent / f"worker-{os.getpid()}-{id(self)}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PHOTOGRAM, "worker", "--loglevel", "INFO", *self.args],
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool), as a crash would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_worker(settings: Settings, *args: str) -> Iterator[Worker]:
    worker = Worker(settings, *args).start()
    try:
        yield worker
    finally:
        worker.stop()


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``check`` until it returns something other than None (or False)."""
    import asyncio

    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        found = await check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.1)


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHOTOGRAM, *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """RabbitMQ's AMQP side stopped (the node keeps running) for the block; started again
    however the block ends."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)
