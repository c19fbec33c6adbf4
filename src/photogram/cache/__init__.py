"""Look-aside cache with leases: memcached (meta protocol) or in-process. See docs/cache.md."""

from __future__ import annotations

from photogram.cache.base import UNREACHABLE, Lease, LeaseCache, Loader, Lookup
from photogram.cache.keys import (
    account_counters_key,
    account_key,
    media_key,
    relationship_key,
    status_counters_key,
    status_key,
    token_key,
)
from photogram.cache.local import LocalLeaseCache
from photogram.cache.memcached import MemcachedLeaseCache
from photogram.cache.rows import Record, RowShape
from photogram.settings import Settings

__all__ = [
    "UNREACHABLE",
    "Lease",
    "LeaseCache",
    "Loader",
    "LocalLeaseCache",
    "Lookup",
    "MemcachedLeaseCache",
    "Record",
    "RowShape",
    "account_counters_key",
    "account_key",
    "media_key",
    "open_cache",
    "relationship_key",
    "status_counters_key",
    "status_key",
    "token_key",
]


def open_cache(settings: Settings) -> LeaseCache:
    """The cache the settings name: memcached with ``cache_servers``, else in-process."""
    if not settings.cache_servers:
        return LocalLeaseCache(
            lease_ttl_seconds=settings.cache_lease_ttl_seconds,
            lease_wait_seconds=settings.cache_lease_wait_seconds,
            ttl_seconds=settings.cache_ttl_seconds,
            max_entries=settings.cache_local_max_entries,
        )
    return MemcachedLeaseCache(
        settings.cache_servers,
        prefix=f"pg{settings.cache_key_version}:",
        lease_ttl_seconds=settings.cache_lease_ttl_seconds,
        lease_wait_seconds=settings.cache_lease_wait_seconds,
        ttl_seconds=settings.cache_ttl_seconds,
        failover_ttl_seconds=settings.cache_failover_ttl_seconds,
        retry_seconds=settings.cache_server_retry_seconds,
        timeout_seconds=settings.cache_timeout_seconds,
    )
