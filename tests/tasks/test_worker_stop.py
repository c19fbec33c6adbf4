"""A worker told to stop (SIGTERM, as systemd and `photogram cluster down` do) notices
within about a second, not after kombu's event loop wakes for its next timer."""

from __future__ import annotations

from types import SimpleNamespace

from kombu.asynchronous import Hub
from kombu.asynchronous.timer import Timer

from photogram.tasks.broker import STOP_TICK_SECONDS, _on_ready


class _Sweeper:
    started = False

    def start(self) -> None:
        self.started = True


def test_a_ready_worker_never_sleeps_longer_than_the_stop_tick() -> None:
    # As Celery makes it for a worker with an event loop (celery.worker.components.Timer).
    hub = Hub(timer=Timer(max_interval=10.0))
    try:
        # Celery's own timers are far apart: alone, the loop would sleep 10 s between them.
        hub.call_later(600, lambda: None)
        assert hub.fire_timers() == 10
        sweeper = _Sweeper()
        _on_ready(SimpleNamespace(hub=hub), sweeper)  # type: ignore[arg-type]
        assert sweeper.started
        assert hub.fire_timers() <= STOP_TICK_SECONDS
    finally:
        hub.close()


def test_a_worker_without_an_event_loop_still_starts_its_sweep() -> None:
    sweeper = _Sweeper()
    _on_ready(SimpleNamespace(), sweeper)  # type: ignore[arg-type]
    assert sweeper.started
