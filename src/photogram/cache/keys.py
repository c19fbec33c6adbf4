"""One key function per cached dataset.

A key is ``<dataset>:v<version>:<ids>``. The version belongs to the dataset: bump it when
the shape of what is cached for that dataset changes, and a rolling deploy never has old
and new app servers reading each other's values (each version is a key space of its own;
the old one simply expires). The whole cache is further namespaced on the wire by
``settings.cache_key_version`` (see ``LeaseCache.prefix``), to start over with everything.

The dataset name (the part before the first ``:``) labels the cache metrics.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    version: int

    def key(self, *ids: int) -> str:
        # IDs are ints, so a key never holds the spaces or control characters memcached
        # refuses, and stays far below its 250-byte limit.
        return f"{self.name}:v{self.version}:" + ":".join(str(int(i)) for i in ids)


#: An account's row as every page shows it (profile fields, avatar key), without its counts.
ACCOUNTS = Dataset("account", 1)
#: A status's row without its counts, and the accounts it mentions.
STATUSES = Dataset("status", 1)
#: An account's followers/following/statuses counts and last post: changed by other
#: people's writes, so kept apart from the account itself, which then stays cached across
#: follows.
ACCOUNT_COUNTERS = Dataset("account_counts", 1)
#: A status's favourites/replies counts: the most written part of a status.
STATUS_COUNTERS = Dataset("status_counts", 1)
#: How one account relates to another (follow, request, block, mute), seen from the first:
#: the edges between them kept on the first one's shard.
RELATIONSHIPS = Dataset("relationship", 1)
#: A photo's row and the rows of its stored objects (not their URLs: those are signed,
#: and expire, so they are made as the photo is shown).
MEDIA = Dataset("media", 1)

#: An access token's row, by the token's hash: what every signed-in request checks first.
#: Kept for ``cache_token_ttl_seconds`` at most, so that a revocation whose invalidation was
#: lost (a crash between commit and delete) lapses soon.
TOKENS = Dataset("token", 1)

DATASETS = (ACCOUNTS, STATUSES, ACCOUNT_COUNTERS, STATUS_COUNTERS, RELATIONSHIPS, MEDIA, TOKENS)


def account_key(account_id: int) -> str:
    return ACCOUNTS.key(account_id)


def status_key(status_id: int) -> str:
    return STATUSES.key(status_id)


def account_counters_key(account_id: int) -> str:
    return ACCOUNT_COUNTERS.key(account_id)


def status_counters_key(status_id: int) -> str:
    return STATUS_COUNTERS.key(status_id)


def relationship_key(account_id: int, target_id: int) -> str:
    return RELATIONSHIPS.key(account_id, target_id)


def media_key(media_id: int) -> str:
    return MEDIA.key(media_id)


def token_key(token_hash: str) -> str:
    # A sha256 in hex: 64 characters memcached accepts, never a client's raw text.
    if len(token_hash) != 64 or token_hash.strip("0123456789abcdef"):
        raise ValueError("a token key is the token's sha256, in lower-case hex")
    return f"{TOKENS.name}:v{TOKENS.version}:{token_hash}"


def dataset_of(key: str) -> str:
    return key.partition(":")[0]
