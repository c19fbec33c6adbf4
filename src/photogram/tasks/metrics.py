"""Background work counters, in the process's default Prometheus registry.

App servers serve them on /metrics; a worker on ``photogram worker --metrics-port``.
Runs by outcome per task (``succeeded``, ``failed`` (to be retried), ``dead``); hand-overs
to the broker and those that failed (the broker unreachable: the rows wait for a sweep).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RUNS = Counter("photogram_tasks_runs", "Outbox rows run, by task and outcome.", ["task", "outcome"])
SECONDS = Histogram(
    "photogram_tasks_seconds",
    "Time to run one outbox row's task.",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PUBLISHED = Counter("photogram_tasks_published", "Outbox rows handed to the broker.", ["queue"])
PUBLISH_FAILURES = Counter(
    "photogram_tasks_publish_failures",
    "Outbox rows whose hand-over to the broker failed (a sweep hands them over again).",
)
