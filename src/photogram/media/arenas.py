"""Fewer glibc malloc arenas in processes that process photos.

glibc gives threads heaps of their own ("arenas", up to eight per core), and memory freed
in an arena mostly stays with it. libvips' worker threads and
photogram's processing threads each end up with one, so a process that has handled a
batch of photos holds 40-50 MiB more than one photo's peak, and keeps it. Two arenas
keep it near one photo's peak at no cost in throughput (docs/media-processing.md).

``M_ARENA_MAX`` set with ``mallopt`` binds arenas made after the call, which is why
processes call this at start, before their threads exist; the ``MALLOC_ARENA_MAX``
environment variable, where set, wins.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's mallopt parameter number for the arena cap (malloc.h).
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (0: leave glibc's default); whether the cap
    is in place. Elsewhere than on glibc, or with ``MALLOC_ARENA_MAX`` set, it does nothing."""
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    return bool(mallopt(M_ARENA_MAX, arenas))
