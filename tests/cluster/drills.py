"""The RabbitMQ restart under load: a drill run on request, not in the suite.

    .venv/bin/pytest tests/cluster/drills.py -rP

It stops and starts the machine's own RabbitMQ (``rabbitmqctl stop_app``/``start_app``),
which the tests in tests/tasks share, with tests/cluster/test_faults.py's cluster, mix and
checks. It passes on a quiet machine; once, beside the whole suite, photos uploaded while
RabbitMQ came back waited for their outbox claims to lapse (docs/operations.md#fault-drills).
"""

from __future__ import annotations

import shutil
import subprocess
import time

from tests.cluster.test_faults import (
    PATIENCE,
    Cluster,
    Community,
    assert_every_write_is_there,
    assert_no_read_failed,
    assert_writes_failed_only_with_a_5xx,
    cluster,
    community,
    under_load,
)

__all__ = ["cluster", "community"]  # the fixtures the drill uses

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


async def test_rabbitmq_restarted(cluster: Cluster, community: Community) -> None:
    def rabbitmqctl(command: str) -> None:
        subprocess.run([RABBITMQCTL, "-q", command], check=True, timeout=PATIENCE)

    def fault() -> tuple[float, float]:
        broken = time.monotonic()
        rabbitmqctl("stop_app")
        time.sleep(2.0)
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        return broken, time.monotonic()

    run = await under_load(cluster, community, "RabbitMQ stopped and started", fault)
    assert_no_read_failed(run)
    assert_writes_failed_only_with_a_5xx(run)
    await assert_every_write_is_there(cluster, community)
