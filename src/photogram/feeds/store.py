"""Home feeds in Redis: one capped sorted set of post IDs per account, and its Lua scripts.

Redis scores are doubles and cannot hold a 64-bit ID exactly, so every member has score 0
and the set is read in lexicographic order: a member is 16 bytes, ``>QQ`` (status ID,
author ID), and big-endian bytes sort as the numbers do. Pages are ``ZRANGE … BYLEX``
windows.

The feed's state lives in the same key, as its lowest member (the *sentinel*): eight zero
bytes (below any real ID), then the **horizon**, the ID at and above which the feed holds
every post it should (below it, posts may be missing: they were trimmed, or never loaded).
A sentinel with a random token after the horizon marks a feed being rebuilt. One key per
feed means it expires, is evicted (``maxmemory``) and is flushed as a whole: a feed can
never look built while its entries are gone. See docs/feeds.md.

Every Redis error opens a circuit breaker for ``redis_retry_seconds``: until then every
call raises ``FeedsUnavailable`` at once, and home timelines are read from the shards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from photogram.settings import Settings

log = logging.getLogger(__name__)

#: ``(status_id, author_id)``: what a feed holds of a post.
Entry = tuple[int, int]

ZERO8 = bytes(8)
BUILDING = b"\xff" * 8
#: How long a feed may stay "being rebuilt": a reader that died mid-build leaves a marker
#: that lapses after this, and the next read builds again.
BUILD_SECONDS = 30
#: Members written per ZADD inside a script (Lua's ``unpack`` has a stack limit).
ZADD_CHUNK = 500

T = TypeVar("T")


class FeedsUnavailable(Exception):
    """Redis failed, or failed recently: use the shards."""


def pack_id(id_: int) -> bytes:
    return struct.pack(">Q", id_)


def member(status_id: int, author_id: int) -> bytes:
    return struct.pack(">QQ", status_id, author_id)


def unpack(data: bytes) -> Entry:
    status_id, author_id = struct.unpack(">QQ", data)
    return int(status_id), int(author_id)


def feed_key(account_id: int) -> str:
    # The braces are a Redis Cluster hash tag: whatever else is ever kept about a feed
    # goes to the same slot as the feed itself.
    return f"feed:{{{account_id}}}"


# --- Lua --------------------------------------------------------------------------------------

_LIB = r"""
local ZERO8 = string.rep('\0', 8)
-- a < b for byte strings of the same length. Lua's own < on strings follows the
-- server's collation locale, not bytes.
local function lt(a, b)
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end
-- The feed's sentinel (its lowest member), or nil when there is no feed.
local function sentinel(key)
  local first = redis.call('ZRANGE', key, 0, 0)[1]
  if first and #first >= 16 and string.sub(first, 1, 8) == ZERO8 then return first end
  return nil
end
local function building(s) return #s > 16 end
local function horizon(s) return string.sub(s, 9, 16) end
local function set_horizon(key, s, h)
  if h == horizon(s) and not building(s) then return s end
  redis.call('ZREM', key, s)
  s = ZERO8 .. h
  redis.call('ZADD', key, 0, s)
  return s
end
-- Keep the newest max entries; the horizon rises to the oldest one kept if any went.
local function trim(key, s, max)
  local n = redis.call('ZCARD', key) - 1
  if n <= max then return s end
  redis.call('ZREMRANGEBYRANK', key, 1, n - max)
  local oldest = string.sub(redis.call('ZRANGE', key, 1, 1)[1], 1, 8)
  if lt(horizon(s), oldest) then s = set_horizon(key, s, oldest) end
  return s
end
local function zadd(key, members, from)
  local args = {}
  for i = from, #members do
    args[#args + 1] = 0
    args[#args + 1] = members[i]
    if #args >= 2 * %(chunk)d then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call('ZADD', key, unpack(args)) end
end
""".replace("%(chunk)d", str(ZADD_CHUNK))

# ARGV: hi bound, lo bound, lowest ID wanted (8 bytes), count, '1' for newest first, TTL ms.
# Returns {} (no feed), {sentinel} (being built) or {sentinel, members...}; refreshes the
# TTL of a built feed (reading it is what keeps it alive).
_READ = r"""
local s = sentinel(KEYS[1])
if not s then return {} end
if building(s) then return {s} end
local lo = ARGV[2]
if lt(ARGV[3], horizon(s)) then lo = '[' .. horizon(s) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local found
if ARGV[5] == '1' then
  found = redis.call('ZRANGE', KEYS[1], ARGV[1], lo, 'BYLEX', 'REV', 'LIMIT', 0, ARGV[4])
else
  found = redis.call('ZRANGE', KEYS[1], lo, ARGV[1], 'BYLEX', 'LIMIT', 0, ARGV[4])
end
table.insert(found, 1, s)
return found
"""

# ARGV: the building sentinel, its TTL ms. Returns the sentinel now in place: ours if this
# call started the build.
_BEGIN = r"""
local s = sentinel(KEYS[1])
if s then return s end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return ARGV[1]
"""

# ARGV: our building sentinel, max entries, horizon (8 bytes), TTL ms, members...
# 1 if the feed is now built; 0 if our build was called off (the key went, or another
# build replaced ours).
_FINISH = r"""
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local s = ZERO8 .. ARGV[3]
redis.call('ZADD', KEYS[1], 0, s)
zadd(KEYS[1], ARGV, 5)
trim(KEYS[1], s, tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# ARGV: member, max entries. A new post into a built feed (or one being built, trimmed
# when the build ends). No feed: nothing (it is built from the shards when next read).
_PUSH = r"""
local s = sentinel(KEYS[1])
if not s then return 0 end
if building(s) then
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
  return 1
end
if lt(string.sub(ARGV[1], 1, 8), horizon(s)) then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
trim(KEYS[1], s, tonumber(ARGV[2]))
return 1
"""

# ARGV: max entries, floor (8 bytes), members... One author's newest posts, complete at
# and above ``floor``, into a built feed: the horizon rises to the floor. A feed being
# built is dropped instead (its snapshot may predate what is merged; the next read builds
# again).
_MERGE = r"""
local s = sentinel(KEYS[1])
if not s then return 0 end
if building(s) then
  redis.call('DEL', KEYS[1])
  return -1
end
local h = horizon(s)
if lt(h, ARGV[2]) then
  h = ARGV[2]
  s = set_horizon(KEYS[1], s, h)
end
local keep = {}
for i = 3, #ARGV do
  if not lt(string.sub(ARGV[i], 1, 8), h) then keep[#keep + 1] = ARGV[i] end
end
zadd(KEYS[1], keep, 1)
trim(KEYS[1], s, tonumber(ARGV[1]))
return 1
"""

# ARGV: author (8 bytes). Every entry of that author goes.
_DROP_AUTHOR = r"""
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 1, -1)) do
  if #m == 16 and string.sub(m, 9, 16) == ARGV[1] then
    redis.call('ZREM', KEYS[1], m)
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Script:
    name: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()


READ = Script("read", _LIB + _READ)
BEGIN = Script("begin", _LIB + _BEGIN)
FINISH = Script("finish", _LIB + _FINISH)
PUSH = Script("push", _LIB + _PUSH)
MERGE = Script("merge", _LIB + _MERGE)
DROP_AUTHOR = Script("drop_author", _DROP_AUTHOR)
SCRIPTS = (READ, BEGIN, FINISH, PUSH, MERGE, DROP_AUTHOR)


# --- the store ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """What a read found: the horizon, and entries of the window at or above it."""

    horizon: int
    entries: list[Entry]
    #: The last member read, to continue the window from.
    last: bytes | None


#: A read of a feed being rebuilt: the caller reads the shards instead.
REBUILDING = Window(horizon=-1, entries=[], last=None)

Client = Redis | RedisCluster


def open_client(settings: Settings) -> Client:
    assert settings.redis_url is not None
    timeout = settings.redis_timeout_seconds
    # One quick retry (a pooled connection the server closed), no backoff: a slow or
    # absent Redis must cost a request one timeout, then the breaker takes over.
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
    return Redis.from_url(settings.redis_url, **options)


class FeedStore:
    """The feeds of one Redis (server or cluster), behind a circuit breaker."""

    def __init__(
        self,
        client: Client,
        *,
        max_entries: int,
        ttl_seconds: int,
        retry_seconds: float,
    ) -> None:
        self.client = client
        self.max_entries = max_entries
        self.ttl_ms = ttl_seconds * 1000
        self.retry_seconds = retry_seconds
        self._down_until = 0.0

    @classmethod
    def open(cls, settings: Settings) -> FeedStore | None:
        """The feeds of ``redis_url``; None when it is unset (home is read from the shards)."""
        if not settings.redis_url:
            return None
        return cls(
            open_client(settings),
            max_entries=settings.feed_max_entries,
            ttl_seconds=settings.feed_inactive_seconds,
            retry_seconds=settings.redis_retry_seconds,
        )

    async def close(self) -> None:
        await self.client.aclose()

    # --- the breaker ----------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while the breaker is open (Redis failed less than ``retry_seconds`` ago)."""
        return time.monotonic() >= self._down_until

    async def _guarded(self, work: Callable[[], Awaitable[T]]) -> T:
        if not self.available:
            raise FeedsUnavailable("Redis failed recently")
        try:
            return await work()
        except (RedisError, RedisClusterException, OSError) as error:
            self._down_until = time.monotonic() + self.retry_seconds
            log.warning(
                "Redis failed (%s: %s); home feeds are read from the shards for %ss",
                type(error).__name__,
                error,
                self.retry_seconds,
            )
            raise FeedsUnavailable(str(error)) from error

    async def _load_scripts(self) -> None:
        # On a cluster, SCRIPT LOAD goes to every primary.
        for script in SCRIPTS:
            await self.client.script_load(script.text)

    async def _eval(self, script: Script, key: str, *args: bytes | int | str) -> Any:
        async def run() -> Any:
            try:
                return await self.client.execute_command("EVALSHA", script.sha, 1, key, *args)
            except NoScriptError:
                await self._load_scripts()
                return await self.client.execute_command("EVALSHA", script.sha, 1, key, *args)

        return await self._guarded(run)

    async def _eval_many(
        self, script: Script, calls: Sequence[tuple[str, Sequence[bytes | int | str]]]
    ) -> list[Any]:
        """``script`` once per (key, args), pipelined (on a cluster, one pipeline per node)."""
        if not calls:
            return []

        async def once() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for key, args in calls:
                # execute_command, not evalsha: a cluster pipeline refuses the latter by name.
                pipe.execute_command("EVALSHA", script.sha, 1, key, *args)
            return list(await pipe.execute(raise_on_error=False))

        async def run() -> list[Any]:
            results = await once()
            if any(isinstance(r, NoScriptError) for r in results):
                await self._load_scripts()
                results = await once()
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results

        return await self._guarded(run)

    # --- reading and rebuilding ---------------------------------------------------------------

    async def read(
        self, account_id: int, *, hi: bytes, lo: bytes, lo_id: int, count: int, newest_first: bool
    ) -> Window | None:
        """Up to ``count`` entries between the lex bounds ``hi`` and ``lo``, but none below
        ``lo_id`` or the horizon; None if the account has no feed, ``REBUILDING`` if it is
        being built. Reading a feed keeps it alive for ``feed_inactive_seconds``."""
        found = await self._eval(
            READ,
            feed_key(account_id),
            hi,
            lo,
            pack_id(max(lo_id, 1)),
            count,
            "1" if newest_first else "0",
            self.ttl_ms,
        )
        if not found:
            return None
        sentinel = bytes(found[0])
        if len(sentinel) > 16:
            return REBUILDING
        members = [bytes(m) for m in found[1:]]
        return Window(
            horizon=unpack(sentinel)[1],
            entries=[unpack(m) for m in members],
            last=members[-1] if members else None,
        )

    async def begin_build(self, account_id: int) -> bytes | None:
        """Mark the feed as being built; the marker to finish with, or None if the feed
        exists already (built, or being built by someone else)."""
        ours = ZERO8 + BUILDING + os.urandom(8)
        now = bytes(await self._eval(BEGIN, feed_key(account_id), ours, BUILD_SECONDS * 1000))
        return ours if now == ours else None

    async def finish_build(
        self, account_id: int, marker: bytes, entries: Sequence[Entry], horizon: int
    ) -> bool:
        """Fill the feed begun with ``marker``, complete at and above ``horizon``; False if
        the build was called off meanwhile (the next read builds again)."""
        done = await self._eval(
            FINISH,
            feed_key(account_id),
            marker,
            self.max_entries,
            pack_id(horizon),
            self.ttl_ms,
            *(member(s, a) for s, a in entries),
        )
        return bool(done)

    # --- writing --------------------------------------------------------------------------------

    async def push(self, account_ids: Iterable[int], status_id: int, author_id: int) -> None:
        """A new post into the built feeds of ``account_ids`` (the others are skipped)."""
        entry = member(status_id, author_id)
        await self._eval_many(
            PUSH, [(feed_key(a), (entry, self.max_entries)) for a in dict.fromkeys(account_ids)]
        )

    async def remove(self, account_ids: Iterable[int], status_id: int, author_id: int) -> None:
        """A deleted post out of the feeds of ``account_ids``."""
        entry = member(status_id, author_id)
        wanted = list(dict.fromkeys(account_ids))
        if not wanted:
            return

        async def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for account_id in wanted:
                pipe.zrem(feed_key(account_id), entry)
            await pipe.execute()

        await self._guarded(run)

    async def merge(self, account_ids: Iterable[int], entries: Sequence[Entry], floor: int) -> None:
        """One author's newest posts (``entries``, complete at and above ``floor``) into
        the built feeds of ``account_ids``: a new follow, or an account fanned out again."""
        members = [member(s, a) for s, a in entries]
        await self._eval_many(
            MERGE,
            [
                (feed_key(a), (self.max_entries, pack_id(floor), *members))
                for a in dict.fromkeys(account_ids)
            ],
        )

    async def drop_author(self, account_id: int, author_id: int) -> None:
        """Every post of ``author_id`` out of ``account_id``'s feed (an unfollow)."""
        await self._eval(DROP_AUTHOR, feed_key(account_id), pack_id(author_id))

    async def drop(self, account_id: int) -> None:
        """The whole feed: it is built again when next read."""

        async def run() -> None:
            await self.client.delete(feed_key(account_id))

        await self._guarded(run)
