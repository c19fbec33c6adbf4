"""Photo processing metrics, in the process's default Prometheus registry."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PROCESSED = Counter(
    "photogram_media_processed",
    "Photos processed, by outcome (ready, refused: not a photo we can take).",
    ["outcome"],
)
PROCESS_SECONDS = Histogram(
    "photogram_media_process_seconds",
    "Time to decode, filter and encode every size of one photo.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
STORED_BYTES = Counter("photogram_media_stored_bytes", "Bytes of photo variants stored.")

for _outcome in ("ready", "refused"):
    PROCESSED.labels(_outcome)
