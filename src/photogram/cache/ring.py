"""Consistent hashing of keys onto cache servers (uhashring: an MD5 ring, 160 points a server).

Adding or removing a server moves only about 1/N of the keys, and only to or from that
server, so a server that dies costs only its own keys: without it, each of its points on the
ring falls to the next point, spreading its keys evenly over the survivors.
"""

from __future__ import annotations

from collections.abc import Iterable

from uhashring import HashRing  # type: ignore[import-untyped]

#: Points per server: enough that each server's share stays within a few percent of 1/N.
VNODES = 160


class Ring:
    def __init__(self, servers: Iterable[str]) -> None:
        self.servers = tuple(dict.fromkeys(servers))
        self._ring = HashRing(list(self.servers), vnodes=VNODES) if self.servers else None

    def server_for(self, key: str) -> str | None:
        """The server that holds ``key``; None on an empty ring."""
        if self._ring is None:
            return None
        server: str = self._ring.get_node(key)
        return server

    def without(self, servers: Iterable[str]) -> Ring:
        gone = set(servers)
        return Ring(s for s in self.servers if s not in gone)
