"""Celery on RabbitMQ: the outbox's rows, handed to workers (docs/tasks.md).

A message carries one thing, an outbox row ID: the row is the truth (task, payload,
attempts, done or not), the message only says "run it". So a message delivered twice,
or published again by a sweep after a worker died, runs the task at most once more, and
tasks are idempotent; a message lost with the broker is published again from the row.
Retries are the outbox's too (``available_at``, ``attempts``, ``dead_at``), not Celery's:
they survive a broker restart, and dead tasks can be listed across every shard.

Each worker thread keeps one event loop and one Runtime for its life; the Celery task
runs the row on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, signals
from kombu import Connection, Producer, Queue

from photogram.settings import Settings
from photogram.tasks.outbox import QUEUES

log = logging.getLogger(__name__)

#: The one Celery task: run an outbox row.
RUN = "photogram.run"

#: Message priority by queue. Each queue is its own stream (a worker takes from all of
#: them in turn, so a flood on one cannot starve another); priorities order work within
#: a queue and say what matters most when one queue takes several kinds of task.
PRIORITY = {"media": 9, "notifications": 6, "default": 5, "fanout": 3, "maintenance": 1}
MAX_PRIORITY = 10
#: The longest a publish may wait on the broker (a socket read or write, or a publisher
#: confirm) before it counts as failed, its rows left to the sweep: a broker that is
#: starting or stalled must not hold the publishing thread, and every publish behind it.
PUBLISH_TIMEOUT_SECONDS = 10.0


def queue_name(settings: Settings, queue: str) -> str:
    return settings.broker_queue_prefix + queue


#: AMQP heartbeat of a worker's consuming connection (``broker_heartbeat``).
HEARTBEAT_SECONDS = 10


def make_celery(settings: Settings) -> Celery:
    """The Celery app for ``settings.broker_url`` (publishing and the worker both use it)."""
    if not settings.broker_url:
        raise ValueError("broker_url is not set")
    app = Celery("photogram", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[
            Queue(
                queue_name(settings, q),
                routing_key=queue_name(settings, q),
                queue_arguments={"x-max-priority": MAX_PRIORITY},
            )
            for q in QUEUES
        ],
        task_default_queue=queue_name(settings, "default"),
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A message is acknowledged when its task has finished, and given to another
        # worker if its worker dies first: a killed worker loses nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per worker process: nothing waits behind a long task in
        # a prefetch buffer while another process is idle.
        worker_prefetch_multiplier=1,
        # Publisher confirms: "published" means the broker has the message.
        broker_transport_options={"confirm_publish": True},
        broker_connection_timeout=2.0,
        broker_connection_retry_on_startup=True,
        # The worker's consuming connection exchanges AMQP heartbeats this often, and
        # drops and remakes a connection that has been silent for two of them. Celery's
        # default (120 s, which RabbitMQ lowers to 60) left a worker whose connection went
        # dead around a broker restart taking no task for two minutes. Publishing
        # connections carry no heartbeat: a publish that fails is retried on a new one.
        broker_heartbeat=HEARTBEAT_SECONDS,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.task(name=RUN, ignore_result=True)(_run_row)
    return app


class CeleryPublisher:
    """Publishes outbox rows from async code, on one thread of its own (kombu blocks).

    The thread keeps one connection of its own rather than one from kombu's pools: those
    are shared by every Celery app in the process with the same broker URL, and keep a
    connection the broker has since dropped (after a restart, say). A publish that fails
    on a connection that had worked is tried once more on a new one, so the first upload
    after a broker restart is not left for the sweep.
    """

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="photogram-publish")
        self._connection: Connection | None = None
        self._producer: Producer | None = None

    async def publish(self, rows: Sequence[tuple[int, str]]) -> int:
        if not rows:
            return 0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._publish, list(rows))

    def _publish(self, rows: list[tuple[int, str]]) -> int:
        sent = 0
        reused = self._producer is not None
        while True:
            try:
                producer = self._connect()
                for row_id, queue in rows[sent:]:
                    self.app.send_task(
                        RUN,
                        args=[row_id],
                        queue=queue_name(self.settings, queue),
                        routing_key=queue_name(self.settings, queue),
                        priority=PRIORITY.get(queue, 5),
                        producer=producer,
                        retry=False,
                        timeout=PUBLISH_TIMEOUT_SECONDS,
                        confirm_timeout=PUBLISH_TIMEOUT_SECONDS,
                    )
                    sent += 1
                return sent
            except Exception:
                self._disconnect()
                if not reused:
                    log.warning(
                        "the broker took %d of %d outbox rows", sent, len(rows), exc_info=True
                    )
                    return sent
                reused = False  # once more, on a new connection

    def _connect(self) -> Producer:
        if self._producer is None:
            connection = self.app.connection_for_write(
                transport_options={
                    "read_timeout": PUBLISH_TIMEOUT_SECONDS,
                    "write_timeout": PUBLISH_TIMEOUT_SECONDS,
                }
            )
            try:
                connection.ensure_connection(max_retries=0)
                self._producer = Producer(connection)
            except BaseException:
                connection.release()
                raise
            self._connection = connection
        return self._producer

    def _disconnect(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=True)


# --- in a worker process ------------------------------------------------------------------


@dataclass
class _Worker:
    """One worker thread's event loop and Runtime, made on first use and kept."""

    settings: Settings
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    runtime: Any = None

    def run(self, row_id: int) -> bool:
        if self.runtime is None:
            from photogram.runtime import Runtime

            self.runtime = self.loop.run_until_complete(Runtime.open(self.settings))
        return bool(self.loop.run_until_complete(self.runtime.relay.run(row_id)))

    def close(self) -> None:
        if self.runtime is not None:
            self.loop.run_until_complete(self.runtime.close())
            self.runtime = None
        self.loop.close()


#: Set by ``run_worker`` before the pool starts.
_worker_settings: Settings | None = None
_local = threading.local()


def _run_row(row_id: int) -> bool:
    """The Celery task. Failures are recorded on the row (retried from there), not raised."""
    worker: _Worker | None = getattr(_local, "worker", None)
    if worker is None:
        if _worker_settings is None:
            raise RuntimeError("outbox rows run in `photogram worker` processes only")
        worker = _local.worker = _Worker(_worker_settings)
    return worker.run(int(row_id))


class Sweeper:
    """The relay's sweep in a worker's main process, on a thread with its own loop: it
    publishes rows whose first hand-over failed, retries that came due, and rows whose
    worker died."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="photogram-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def _main(self) -> None:
        asyncio.run(self._sweep())

    async def _sweep(self) -> None:
        from photogram.runtime import Runtime

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runtime = await Runtime.open(self.settings)
        try:
            await runtime.relay.sweep_forever(self.settings.outbox_sweep_seconds, self._stop)
        finally:
            await runtime.close()


#: How soon the worker's event loop notices a request to stop.
STOP_TICK_SECONDS = 1.0


def _on_ready(consumer: Any, sweeper: Sweeper) -> None:
    sweeper.start()
    hub = getattr(consumer, "hub", None)
    if hub is not None:
        # kombu's event loop sleeps until its next timer, up to 10 s, and a SIGTERM only
        # sets a flag it reads once awake: a timer a second keeps a stop to about a second.
        hub.call_repeatedly(STOP_TICK_SECONDS, _tick)


def _tick() -> None:
    pass


def run_worker(
    settings: Settings,
    *,
    queues: Sequence[str],
    concurrency: int,
    loglevel: str = "INFO",
    metrics_port: int | None = None,
) -> None:
    """``photogram worker``: a Celery worker on ``queues``, plus the outbox sweep."""
    from prometheus_client import start_http_server

    from photogram.media.arenas import limit_malloc_arenas
    from photogram.observe import configure_logging
    from photogram.tasks.registry import import_tasks

    limit_malloc_arenas(settings.media_malloc_arenas)  # before the pool's threads
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.host)
    global _worker_settings
    import_tasks()
    _worker_settings = settings
    app = make_celery(settings)
    sweeper = Sweeper(settings)

    # Celery leaves logging alone when something answers this signal: one format, with the
    # ID of the request that queued each task.
    signals.setup_logging.connect(
        lambda **_: configure_logging(settings.log_format, loglevel), weak=False
    )
    signals.worker_ready.connect(lambda sender=None, **_: _on_ready(sender, sweeper), weak=False)
    signals.worker_shutdown.connect(lambda **_: sweeper.stop(), weak=False)

    app.worker_main(
        [
            "worker",
            f"--queues={','.join(queue_name(settings, q) for q in queues)}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            # Threads, not forked processes: libvips (and its thread pool) is initialised
            # at import and does not survive a fork; photo work releases the GIL, and the
            # rest waits on databases, Redis and the broker.
            "--pool=threads",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=photogram-{os.getpid()}@%h",
        ]
    )
