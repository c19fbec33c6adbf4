"""Password hashing with argon2id, off the event loop (it is deliberately slow)."""

from __future__ import annotations

import asyncio
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from photogram.settings import Settings


@cache
def _hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def hasher(settings: Settings) -> PasswordHasher:
    return _hasher(settings.password_time_cost, settings.password_memory_kib)


async def hash_password(settings: Settings, password: str) -> str:
    return await asyncio.to_thread(hasher(settings).hash, password)


@cache
def _stand_in_hash(time_cost: int, memory_kib: int) -> str:
    return _hasher(time_cost, memory_kib).hash(secrets.token_urlsafe(16))


async def verify_password(settings: Settings, stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``. With no stored hash (no such account) the
    same work is done against a stand-in, so timing does not tell which accounts exist."""

    def check() -> bool:
        target = stored or _stand_in_hash(settings.password_time_cost, settings.password_memory_kib)
        try:
            return hasher(settings).verify(target, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)
