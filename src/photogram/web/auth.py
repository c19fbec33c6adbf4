"""Bearer tokens and OAuth scopes, as Mastodon clients expect them.

Scopes are ``read``, ``write``, ``follow`` and ``push`` and their children
(``read:accounts``, ``write:follows`` …). A granted parent covers its children, and
the legacy ``follow`` covers reading and writing follows, blocks and mutes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from photogram.cache import Record, RowShape, token_key
from photogram.db.metadata import oauth_tokens
from photogram.web.deps import RuntimeDep

if TYPE_CHECKING:
    from photogram.runtime import Runtime

TOP_SCOPES = ("read", "write", "follow", "push")
CHILD_SCOPES = {
    "read": (
        "accounts",
        "blocks",
        "bookmarks",
        "favourites",
        "filters",
        "follows",
        "lists",
        "mutes",
        "notifications",
        "search",
        "statuses",
    ),
    "write": (
        "accounts",
        "blocks",
        "bookmarks",
        "conversations",
        "favourites",
        "filters",
        "follows",
        "lists",
        "media",
        "mutes",
        "notifications",
        "reports",
        "statuses",
    ),
}
ALL_SCOPES = frozenset(TOP_SCOPES) | {
    f"{top}:{child}" for top, children in CHILD_SCOPES.items() for child in children
}
# What the legacy `follow` scope grants.
FOLLOW_COVERS = frozenset(
    {
        "read:follows",
        "read:blocks",
        "read:mutes",
        "write:follows",
        "write:blocks",
        "write:mutes",
    }
)


def parse_scopes(text: str | None, default: str = "read") -> frozenset[str]:
    """The scopes in a space-separated (or, as some clients send, comma-separated) string."""
    raw = (text or default).replace(",", " ").replace("+", " ").split()
    return frozenset(raw)


def unknown_scopes(scopes: frozenset[str]) -> list[str]:
    return sorted(scopes - ALL_SCOPES)


def scope_allows(granted: frozenset[str], needed: str) -> bool:
    if needed in granted:
        return True
    top, _, _ = needed.partition(":")
    return top in granted or (needed in FOLLOW_COVERS and "follow" in granted)


def hash_secret(raw: str) -> str:
    """Tokens, codes and client secrets are random and long: sha256 is the right hash."""
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    id: int
    app_id: int
    account_id: int | None
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope_allows(self.scopes, scope)


@dataclass(frozen=True)
class Viewer:
    """A request made on behalf of a signed-in account."""

    token: Token
    account_id: int


bearer = HTTPBearer(auto_error=False, description="An OAuth access token.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def unauthorized(message: str = "The access token is invalid") -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


async def optional_token(request: Request, runtime: RuntimeDep, creds: BearerDep) -> Token | None:
    """The request's token, None without one, 401 for a bad one (never silently anonymous)."""
    header = request.headers.get("authorization")
    if creds is None:
        if header:
            raise unauthorized("The Authorization header must be `Bearer <token>`")
        return None
    row = await load_token(runtime, hash_secret(creds.credentials))
    if row is None or (row.expires_at is not None and row.expires_at <= datetime.now(UTC)):
        raise unauthorized()
    token = Token(row.id, row.app_id, row.account_id, frozenset(row.scopes.split()))
    request.state.token = token
    return token


#: What a request needs of its token, cached by the token's hash (``token_key``).
TOKEN = RowShape(
    (
        oauth_tokens.c.id,
        oauth_tokens.c.app_id,
        oauth_tokens.c.account_id,
        oauth_tokens.c.scopes,
        oauth_tokens.c.expires_at,
    )
)


async def load_token(runtime: Runtime, token_hash: str) -> Record | None:
    """The unrevoked token with this hash, through the cache (expired ones included: the
    clock is compared on every request). Revoking invalidates its key after the commit."""
    key = token_key(token_hash)

    async def fetch(_keys: list[str]) -> dict[str, Any]:
        async with runtime.router.global_connect() as conn:
            row = (
                await conn.execute(
                    select(*TOKEN.columns).where(
                        oauth_tokens.c.token_hash == token_hash,
                        oauth_tokens.c.revoked_at.is_(None),
                    )
                )
            ).one_or_none()
        return {} if row is None else {key: TOKEN.dump(row)}

    found = await runtime.cache.read_through(
        [key], fetch, ttl=runtime.settings.cache_token_ttl_seconds
    )
    return None if key not in found else TOKEN.record(found[key])


OptionalTokenDep = Annotated[Token | None, Depends(optional_token)]


def require_token(scope: str) -> Callable[..., Awaitable[Token]]:
    """A dependency: any valid token (an app's or a user's) that grants ``scope``."""

    async def dependency(token: OptionalTokenDep) -> Token:
        if token is None:
            raise unauthorized("This method requires an access token")
        if not token.allows(scope):
            raise HTTPException(403, f"This action is outside the authorized scopes ({scope})")
        return token

    return dependency


def require_viewer(scope: str) -> Callable[..., Awaitable[Viewer]]:
    """A dependency: a user's token that grants ``scope``."""
    token_dependency = require_token(scope)

    # A default, not an Annotated hint: the hint would name a local, which string
    # annotations (this module's `from __future__ import annotations`) cannot see.
    async def dependency(token: Token = Depends(token_dependency)) -> Viewer:  # noqa: B008
        if token.account_id is None:
            raise HTTPException(422, "This method requires an authenticated user")
        return Viewer(token, token.account_id)

    return dependency


async def optional_viewer(token: OptionalTokenDep) -> Viewer | None:
    """For public endpoints that say more to a signed-in account (a bad token is still 401)."""
    if token is None or token.account_id is None:
        return None
    return Viewer(token, token.account_id)


OptionalViewerDep = Annotated[Viewer | None, Depends(optional_viewer)]


def optional_reader(scope: str) -> Callable[..., Awaitable[Viewer | None]]:
    """A dependency for public reads: anyone may read; a token, if sent, must grant
    ``scope`` (as Mastodon checks), and a user's token lets the answer fit that user."""

    async def dependency(token: OptionalTokenDep) -> Viewer | None:
        if token is None:
            return None
        if not token.allows(scope):
            raise HTTPException(403, f"This action is outside the authorized scopes ({scope})")
        return None if token.account_id is None else Viewer(token, token.account_id)

    return dependency
