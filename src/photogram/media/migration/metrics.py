"""Media store migration metrics, in the process's default Prometheus registry.

Every process routes media by the phase it last read, so the phase and read percentage
are gauges of what *this* process follows; the job counters count what this process's
backfill or verifier did; ``status`` adds up every process's work from the database.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from photogram.media.migration.phases import ORDER, State

PHASE = Gauge(
    "photogram_media_migration_phase",
    "1 for the migration phase this process follows, 0 for the others.",
    ["phase"],
)
READ_PERCENT = Gauge(
    "photogram_media_migration_read_percent",
    "Share of media reads this process sends to the target store first.",
)
FALLBACKS = Counter(
    "photogram_media_migration_fallbacks",
    "Reads the target store failed that the source store answered, by reason.",
    ["reason"],
)
SECONDARY_FAILURES = Counter(
    "photogram_media_migration_secondary_failures",
    "Writes or deletes in the secondary store that failed, by operation (queued for repair).",
    ["operation"],
)
OBJECTS = Counter(
    "photogram_media_migration_objects",
    "Objects handled by the backfill and the verifier, by job and outcome.",
    ["job", "outcome"],
)
BYTES = Counter("photogram_media_migration_bytes", "Bytes copied or read back, by job.", ["job"])


def follow(state: State) -> None:
    for phase in ORDER:
        PHASE.labels(phase.value).set(1 if phase is state.phase else 0)
    READ_PERCENT.set(state.read_percent if state.target is not None else 0)


for _phase in ORDER:
    PHASE.labels(_phase.value)
for _job, _outcomes in (
    ("backfill", ("copied", "present", "mismatched", "quarantined")),
    ("verify", ("verified", "mismatched", "repaired", "quarantined", "removed")),
):
    for _outcome in _outcomes:
        OBJECTS.labels(_job, _outcome)
    BYTES.labels(_job)
