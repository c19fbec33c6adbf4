"""Cache counters, in the process's default Prometheus registry (served by /metrics).

Counted per key and labelled by dataset (``keys.dataset_of``). Hit ratio:
``hits / (hits + misses)`` (a stale value served counts as a miss, and in ``stale_served``).
Database load the cache let through: ``loads``. Leases working: ``fills`` close to one per
invalidation of a hot key, ``lease_waits`` high and ``lease_timeouts`` near zero.
"""

from __future__ import annotations

from prometheus_client import Counter

HITS = Counter("photogram_cache_hits", "Keys found fresh in the cache.", ["dataset"])
MISSES = Counter(
    "photogram_cache_misses",
    "Keys not found fresh in the cache (whoever then loads them).",
    ["dataset"],
)
LEASE_WAITS = Counter(
    "photogram_cache_lease_waits",
    "Keys a reader waited on because another held the lease to fill them.",
    ["dataset"],
)
LEASE_TIMEOUTS = Counter(
    "photogram_cache_lease_timeouts",
    "Keys still unfilled after the lease wait bound, then loaded from the database.",
    ["dataset"],
)
LOADS = Counter(
    "photogram_cache_loads",
    "Keys loaded from the database by read_through (with or without a lease).",
    ["dataset"],
)
FILLS = Counter("photogram_cache_fills", "Keys filled under a lease.", ["dataset"])
FILL_REJECTIONS = Counter(
    "photogram_cache_fill_rejections",
    "Fills refused because the key was invalidated after the lease was handed out.",
    ["dataset"],
)
STALE_SERVED = Counter(
    "photogram_cache_stale_served",
    "Stale values returned while another reader refilled the key.",
    ["dataset"],
)
INVALIDATIONS = Counter(
    "photogram_cache_invalidations", "Keys deleted or marked stale after a write.", ["dataset"]
)
SERVER_ERRORS = Counter(
    "photogram_cache_server_errors",
    "Requests to a cache server that failed or timed out (the server is then skipped).",
    ["server"],
)
