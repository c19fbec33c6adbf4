"""The cluster cache: a pool of memcached servers (>= 1.6) spoken to in the meta protocol.

Commands are encoded and responses parsed by ``meta_memcache_socket`` (the protocol core of
the meta-memcache client); this module only carries them over asyncio streams, pipelined,
one round trip per server for a batch of keys. How the lease protocol maps onto it:

- lease get: ``mg <key> v c f N<lease ttl>``. A miss creates an empty placeholder item for
  ``lease ttl`` seconds and answers ``W`` (won: load and fill) to the first caller and ``Z``
  (someone else is filling) to the rest. A stale item (see below) comes back with ``X``,
  and ``W`` to one caller. Our values carry client flag 1; a placeholder has 0.
- fill: ``ms <key> <size> C<cas> F1 T<ttl>`` with the CAS token that came with the win.
  memcached refuses it (``EX``, or ``NF`` once deleted) if the item changed since.
- invalidate: ``md <key>`` (then the next fill finds nothing and is refused), or
  ``md <key> I T<lease ttl>``: mark stale and bump the CAS, which voids the lease too.

A server that fails or times out is marked down for ``retry_seconds``: its keys are routed
to the next server on the ring (filled there with a short ``failover_ttl``, since they go
back to their own server when it returns), where the request that failed is sent again.
Deletes it could not receive are remembered and replayed before it is used again (all of
its keys are flushed if there were too many), so it cannot serve what was invalidated while
it was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from meta_memcache_socket import (
    RESPONSE_CONFLICT,
    RESPONSE_MISS,
    RESPONSE_NOT_STORED,
    RESPONSE_SUCCESS,
    RESPONSE_VALUE,
    RequestFlags,
    ResponseFlags,
    build_meta_delete,
    build_meta_get,
    build_meta_set,
    parse_header,
)

from photogram.cache import metrics
from photogram.cache.base import UNREACHABLE, Lease, LeaseCache, Lookup
from photogram.cache.keys import dataset_of
from photogram.cache.ring import Ring
from photogram.concurrency import gather

log = logging.getLogger(__name__)

#: The client flag our values carry; memcached's placeholder for a lease has 0.
VALUE_FLAG = 1
#: Deletes remembered for a server that is down; past this, it is flushed when it returns.
MAX_MISSED_DELETES = 10_000

_NOOP = b"mn\r\n"
_FLUSH = b"flush_all\r\n"

#: (response type, flags, value); type None: the server answered SERVER_ERROR to it.
_Response = tuple[int | None, ResponseFlags | None, bytes | None]
_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _ServerDown(Exception):
    pass


class _ProtocolError(Exception):
    pass


def parse_server(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a cache server is host:port, not {address!r}")
    return host.strip("[]"), int(port)


@dataclass(eq=False)
class _Server:
    name: str
    host: str
    port: int
    slots: asyncio.Semaphore
    idle: list[_Connection] = field(default_factory=list)
    #: Clock time from which the server may be tried again; None while it is up.
    down_until: float | None = None
    #: Keys deleted elsewhere while it was down; None: too many to replay, flush it.
    missed: set[str] | None = field(default_factory=set)
    reviving: bool = False

    def note_missed(self, key: str) -> None:
        if self.missed is not None:
            self.missed.add(key)
            if len(self.missed) > MAX_MISSED_DELETES:
                self.missed = None

    def close_idle(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> _Response:
    line = await reader.readuntil(b"\r\n")
    parsed = parse_header(line, 0, len(line))
    if parsed is None:
        raise _ProtocolError(f"unreadable response {line[:80]!r}")
    _, kind, size, flags = parsed
    if kind is None:
        if line.startswith(b"SERVER_ERROR"):
            # About this one command (an item too large, out of memory): the connection is
            # still in step, and the server still serves everything else.
            log.warning("memcached: %s", line.strip().decode(errors="replace"))
            return None, None, None
        raise _ProtocolError(f"unexpected response {line[:80]!r}")
    value = None
    if kind == RESPONSE_VALUE:
        if size is None:
            raise _ProtocolError(f"value without a size {line[:80]!r}")
        value = (await reader.readexactly(size + 2))[:-2]
    return kind, flags, value


class MemcachedLeaseCache(LeaseCache):
    def __init__(
        self,
        servers: Sequence[str],
        *,
        prefix: str,
        lease_ttl_seconds: int,
        lease_wait_seconds: float,
        ttl_seconds: int,
        failover_ttl_seconds: int,
        retry_seconds: float,
        timeout_seconds: float,
        max_connections: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(lease_wait_seconds=lease_wait_seconds, ttl_seconds=ttl_seconds)
        if not servers:
            raise ValueError("memcached needs at least one server")
        self.prefix = prefix
        self.lease_ttl_seconds = lease_ttl_seconds
        self.failover_ttl_seconds = failover_ttl_seconds
        self.retry_seconds = retry_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._servers: dict[str, _Server] = {}
        for address in servers:
            host, port = parse_server(address)
            self._servers[address] = _Server(
                address, host, port, asyncio.Semaphore(max_connections)
            )
        #: Every server: where a key lives when all are up.
        self._home = Ring(self._servers)
        #: The servers up: where a key is looked for now.
        self._ring = self._home
        self._revivals: set[asyncio.Task[None]] = set()
        self._get_lease = RequestFlags(
            return_value=True,
            return_cas_token=True,
            return_client_flag=True,
            vivify_on_miss_ttl=lease_ttl_seconds,
        )
        self._get_plain = RequestFlags(
            return_value=True, return_cas_token=True, return_client_flag=True
        )
        self._mark_stale = RequestFlags(mark_stale=True, cache_ttl=lease_ttl_seconds)

    # -- routing and server health ------------------------------------------------------

    def server_for(self, key: str) -> str | None:
        """The server ``key`` is read from and written to now; None with every server down."""
        return self._ring.server_for(key)

    def home_of(self, key: str) -> str:
        """The server ``key`` belongs to when every server is up."""
        home = self._home.server_for(key)
        assert home is not None
        return home

    @property
    def servers_down(self) -> list[str]:
        return [s.name for s in self._servers.values() if s.down_until is not None]

    def _mark_down(self, server: _Server, error: BaseException) -> None:
        metrics.SERVER_ERRORS.labels(server.name).inc()
        server.close_idle()
        was_up = server.down_until is None
        server.down_until = self._clock() + self.retry_seconds
        if was_up:
            log.warning(
                "memcached %s is down (%s); its keys go to the database and the other servers",
                server.name,
                repr(error),
            )
            self._ring = self._home.without(self.servers_down)

    def _revive_due(self) -> None:
        now = self._clock()
        for server in self._servers.values():
            if server.down_until is not None and now >= server.down_until and not server.reviving:
                server.reviving = True
                task = asyncio.create_task(self._revive(server))
                self._revivals.add(task)
                task.add_done_callback(self._revivals.discard)

    async def _revive(self, server: _Server) -> None:
        """Probe a server that was down, replay the deletes it missed, and use it again."""
        try:
            while True:
                missed, server.missed = server.missed, set()
                if missed is None:
                    payload, count = _FLUSH, 1
                else:
                    payload = b"".join(build_meta_delete(self._wire(k)) for k in missed) + _NOOP
                    count = len(missed) + 1
                try:
                    await self._exchange(server, payload, count, reviving=True)
                except _ServerDown:
                    if missed is None or server.missed is None:
                        server.missed = None
                    else:
                        server.missed |= missed
                    return
                # Deletes noted during the round trip are replayed before it is used, too.
                if server.missed == set():
                    break
            server.down_until = None
            self._ring = self._home.without(self.servers_down)
            log.warning("memcached %s is back", server.name)
        finally:
            server.reviving = False

    async def check_servers(self) -> list[str]:
        """Try the servers due for it now, and wait for the answer; the servers still down."""
        self._revive_due()
        if self._revivals:
            await asyncio.gather(*self._revivals, return_exceptions=True)
        return self.servers_down

    def _route(self, keys: Iterable[str]) -> tuple[dict[_Server, list[str]], list[str]]:
        self._revive_due()
        routes: dict[_Server, list[str]] = {}
        unrouted: list[str] = []
        for key in keys:
            name = self._ring.server_for(key)
            if name is None:
                unrouted.append(key)
            else:
                routes.setdefault(self._servers[name], []).append(key)
        return routes, unrouted

    def _wire(self, key: str) -> str:
        return self.prefix + key

    # -- one pipelined round trip ----------------------------------------------------

    async def _exchange(
        self, server: _Server, payload: bytes, count: int, *, reviving: bool = False
    ) -> list[_Response]:
        """Send pipelined commands and read their ``count`` responses, or _ServerDown
        (having marked the server down) if it fails or takes longer than the timeout."""
        async with server.slots:
            # Waiting for a connection is not the server's fault and is not timed; but a
            # server found down meanwhile is not waited on once more.
            if server.down_until is not None and not reviving:
                raise _ServerDown(server.name)
            connection: _Connection | None = None
            done = False
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    if server.idle:
                        connection = server.idle.pop()
                    else:
                        connection = await asyncio.open_connection(server.host, server.port)
                    reader, writer = connection
                    writer.write(payload)
                    await writer.drain()
                    responses = [await _read_response(reader) for _ in range(count)]
                done = True
                return responses
            except (OSError, TimeoutError, EOFError, _ProtocolError) as exc:
                # IncompleteReadError is an EOFError: the server went away mid-response.
                self._mark_down(server, exc)
                raise _ServerDown(server.name) from exc
            finally:
                if connection is not None:
                    if done:
                        server.idle.append(connection)
                    else:
                        # Cancelled or failed mid-exchange: what is left unread on it would
                        # be taken for the answers to the next request.
                        connection[1].close()

    # -- the LeaseCache operations -----------------------------------------------------

    async def get_many(self, keys: Sequence[str], *, lease: bool = True) -> dict[str, Lookup]:
        flags = self._get_lease if lease else self._get_plain
        found: dict[str, Lookup] = {}
        wanted = list(dict.fromkeys(keys))
        todo = wanted
        # A server failing mid-call: its keys are tried once more, on their new servers.
        for _ in range(2):
            routes, unrouted = self._route(todo)
            found.update(dict.fromkeys(unrouted, UNREACHABLE))
            answers = await gather(
                *(self._get_on(server, batch, flags) for server, batch in routes.items())
            )
            todo = []
            for batch, answer in zip(routes.values(), answers, strict=True):
                if answer is None:
                    todo.extend(batch)
                else:
                    found.update(answer)
            if not todo:
                break
        found.update(dict.fromkeys(todo, UNREACHABLE))
        return {key: found[key] for key in wanted}

    async def _get_on(
        self, server: _Server, keys: list[str], flags: RequestFlags
    ) -> dict[str, Lookup] | None:
        payload = b"".join(build_meta_get(self._wire(key), flags) for key in keys)
        try:
            responses = await self._exchange(server, payload, len(keys))
        except _ServerDown:
            return None
        found: dict[str, Lookup] = {}
        for key, (kind, meta, value) in zip(keys, responses, strict=True):
            if kind == RESPONSE_VALUE and meta is not None:
                lease = None
                if meta.win and meta.cas_token is not None:
                    lease = Lease(key, meta.cas_token, server.name)
                if meta.client_flag != VALUE_FLAG:
                    value = None  # the placeholder of a lease
                found[key] = Lookup(value, meta.stale, lease)
            elif kind == RESPONSE_MISS:
                found[key] = Lookup()
            else:
                found[key] = UNREACHABLE
        return found

    async def fill_many(
        self, fills: Sequence[tuple[Lease, bytes]], *, ttl: int | None = None
    ) -> dict[str, bool | None]:
        stored: dict[str, bool | None] = {}
        batches: dict[_Server, list[tuple[Lease, bytes]]] = {}
        for lease, value in fills:
            server = self._servers.get(lease.server)
            if server is None or server.down_until is not None:
                stored[lease.key] = None
            else:
                batches.setdefault(server, []).append((lease, value))
        answers = await gather(
            *(
                self._fill_on(server, batch, ttl or self.ttl_seconds)
                for server, batch in batches.items()
            )
        )
        for answer in answers:
            stored.update(answer)
        return stored

    async def _fill_on(
        self, server: _Server, fills: list[tuple[Lease, bytes]], ttl: int
    ) -> dict[str, bool | None]:
        parts: list[bytes] = []
        for lease, value in fills:
            # A stand-in for a server that is down keeps the key only briefly: when the
            # key's own server returns, this copy is no longer read nor invalidated.
            if self.home_of(lease.key) != server.name:
                key_ttl = min(ttl, self.failover_ttl_seconds)
            else:
                key_ttl = ttl
            flags = RequestFlags(cas_token=lease.token, client_flag=VALUE_FLAG, cache_ttl=key_ttl)
            parts += (build_meta_set(self._wire(lease.key), len(value), flags), value, b"\r\n")
        try:
            responses = await self._exchange(server, b"".join(parts), len(fills))
        except _ServerDown:
            return {lease.key: None for lease, _ in fills}
        stored: dict[str, bool | None] = {}
        for (lease, _), (kind, _, _) in zip(fills, responses, strict=True):
            if kind == RESPONSE_SUCCESS:
                stored[lease.key] = True
            elif kind in (RESPONSE_CONFLICT, RESPONSE_MISS, RESPONSE_NOT_STORED):
                stored[lease.key] = False
            else:
                stored[lease.key] = None
        return stored

    async def invalidate(self, keys: Iterable[str], *, stale: bool = False) -> None:
        todo = list(dict.fromkeys(keys))
        for key in todo:
            metrics.INVALIDATIONS.labels(dataset_of(key)).inc()
        flags = self._mark_stale if stale else None
        # A server failing mid-call: its keys are deleted once more, on their new servers
        # (which may hold copies from an earlier failover).
        for _ in range(2):
            routes, unrouted = self._route(todo)
            for key in unrouted:
                self._servers[self.home_of(key)].note_missed(key)
            for server, batch in routes.items():
                for key in batch:
                    home = self._servers[self.home_of(key)]
                    if home is not server:
                        home.note_missed(key)
            answers = await gather(
                *(self._delete_on(server, batch, flags) for server, batch in routes.items())
            )
            todo = []
            for (server, batch), ok in zip(routes.items(), answers, strict=True):
                if not ok:
                    for key in batch:
                        server.note_missed(key)
                    todo.extend(batch)
            if not todo:
                break

    async def _delete_on(
        self, server: _Server, keys: list[str], flags: RequestFlags | None
    ) -> bool:
        payload = b"".join(build_meta_delete(self._wire(key), flags) for key in keys)
        try:
            await self._exchange(server, payload, len(keys))
        except _ServerDown:
            return False
        return True

    async def wait(self, keys: Sequence[str], deadline: float, attempt: int) -> None:
        # Another process may hold the lease, so there is nothing to be told: poll, 1 ms
        # doubling to 32 ms, which finds a fill soon after it lands without hammering the
        # server when the filler is slow.
        delay = min(0.001 * 2**attempt, 0.032, deadline - asyncio.get_running_loop().time())
        if delay > 0:
            await asyncio.sleep(delay)

    async def close(self) -> None:
        for task in list(self._revivals):
            task.cancel()
        if self._revivals:
            await asyncio.gather(*self._revivals, return_exceptions=True)
        for server in self._servers.values():
            server.close_idle()
