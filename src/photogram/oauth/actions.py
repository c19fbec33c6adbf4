"""OAuth 2 apps, tokens and grants (RFC 6749, PKCE per RFC 7636), as Mastodon speaks them.

Secrets (client secrets, access and refresh tokens, authorization codes) are random and
are stored only as sha256 hashes. Every check that can fail raises ``OAuthError``,
whose ``error`` codes are RFC 6749's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from photogram.accounts.passwords import verify_password
from photogram.accounts.queries import email_entry, load_account
from photogram.cache import token_key
from photogram.db.metadata import accounts, oauth_apps, oauth_codes, oauth_tokens
from photogram.runtime import Runtime
from photogram.web.auth import hash_secret, parse_scopes, scope_allows, unknown_scopes
from photogram.web.errors import ApiError

OOB = "urn:ietf:wg:oauth:2.0:oob"
# The longest redirect URI an authorization code can record (oauth_codes.redirect_uri).
MAX_REDIRECT_URI = 2000


class OAuthError(ApiError):
    """RFC 6749's error body: ``{"error": code, "error_description": text}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(status, error, error_description=description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class App:
    id: int
    client_id: str
    name: str
    website: str | None
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    refresh_token: str | None
    scopes: frozenset[str]
    created_at: datetime
    expires_in: int | None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _app(row: Row[Any]) -> App:
    return App(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        website=row.website,
        redirect_uris=tuple(row.redirect_uris.split()),
        scopes=frozenset(row.scopes.split()),
    )


# --- apps -----------------------------------------------------------------------------------


def check_redirect_uris(raw: str) -> tuple[str, ...]:
    uris = tuple(raw.split())
    if not uris:
        raise OAuthError("invalid_request", "redirect_uris must name at least one URI", 422)
    for uri in uris:
        if uri == OOB:
            continue
        if len(uri) > MAX_REDIRECT_URI:
            raise OAuthError(
                "invalid_request",
                f"redirect_uris: a URI may be at most {MAX_REDIRECT_URI} characters",
                422,
            )
        parts = urlsplit(uri)
        if (
            not parts.scheme
            or parts.fragment
            or (parts.scheme in ("http", "https") and not parts.netloc)
        ):
            raise OAuthError(
                "invalid_request", f"redirect_uris: {uri!r} is not an absolute URI", 422
            )
    return uris


def check_scopes(raw: str | None) -> frozenset[str]:
    scopes = parse_scopes(raw)
    unknown = unknown_scopes(scopes)
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scopes: {' '.join(unknown)}", 422)
    return scopes


async def do_create_app(
    runtime: Runtime, name: str, redirect_uris: str, scopes: str | None, website: str | None
) -> tuple[App, str]:
    """A new app and its client secret (shown this once, stored hashed)."""
    uris = check_redirect_uris(redirect_uris)
    granted = check_scopes(scopes)
    client_id, client_secret = new_secret(), new_secret()
    async with runtime.router.global_begin() as conn:
        app_id = await conn.scalar(
            insert(oauth_apps)
            .values(
                client_id=client_id,
                client_secret_hash=hash_secret(client_secret),
                name=name,
                website=website or None,
                redirect_uris="\n".join(uris),
                scopes=" ".join(sorted(granted)),
            )
            .returning(oauth_apps.c.id)
        )
    assert app_id is not None
    return App(int(app_id), client_id, name, website or None, uris, granted), client_secret


async def load_app(runtime: Runtime, app_id: int) -> App | None:
    async with runtime.router.global_connect() as conn:
        row = (await conn.execute(select(oauth_apps).where(oauth_apps.c.id == app_id))).first()
    return _app(row) if row else None


async def find_client(runtime: Runtime, client_id: str | None) -> App:
    if not client_id:
        raise OAuthError("invalid_client", "client_id is required", 401)
    async with runtime.router.global_connect() as conn:
        row = (
            await conn.execute(select(oauth_apps).where(oauth_apps.c.client_id == client_id))
        ).first()
    if row is None:
        raise OAuthError("invalid_client", "Client authentication failed", 401)
    return _app(row)


async def authenticate_client(
    runtime: Runtime, client_id: str | None, client_secret: str | None
) -> App:
    if not client_id or not client_secret:
        raise OAuthError("invalid_client", "Client authentication failed", 401)
    async with runtime.router.global_connect() as conn:
        row = (
            await conn.execute(select(oauth_apps).where(oauth_apps.c.client_id == client_id))
        ).first()
    if row is None or not hmac.compare_digest(row.client_secret_hash, hash_secret(client_secret)):
        raise OAuthError("invalid_client", "Client authentication failed", 401)
    return _app(row)


def narrow_scopes(app: App, requested: str | None) -> frozenset[str]:
    """The scopes a token gets: what was asked for (``read`` if nothing), within the app's."""
    wanted = check_scopes(requested or "read")
    beyond = sorted(s for s in wanted if not scope_allows(app.scopes, s))
    if beyond:
        raise OAuthError("invalid_scope", f"The app was not registered for: {' '.join(beyond)}")
    return wanted


# --- tokens ---------------------------------------------------------------------------------


async def issue_token(
    conn: AsyncConnection,
    runtime: Runtime,
    app: App,
    account_id: int | None,
    scopes: frozenset[str],
) -> IssuedToken:
    """A new access token (and, for a user, a refresh token) in ``conn``'s transaction."""
    access, refresh = new_secret(), (new_secret() if account_id is not None else None)
    now = datetime.now(UTC)
    ttl = runtime.settings.access_token_ttl_seconds
    await conn.execute(
        insert(oauth_tokens).values(
            token_hash=hash_secret(access),
            refresh_hash=hash_secret(refresh) if refresh else None,
            app_id=app.id,
            account_id=account_id,
            scopes=" ".join(sorted(scopes)),
            expires_at=now + timedelta(seconds=ttl) if ttl else None,
            created_at=now,
        )
    )
    return IssuedToken(access, refresh, scopes, now, ttl)


async def _account_by_email(runtime: Runtime, email: str) -> Row[Any] | None:
    async with runtime.router.global_connect() as conn:
        account_id = await conn.scalar(email_entry(email))
    if account_id is None:
        return None
    async with runtime.router.connect_for(int(account_id)) as conn:
        row: Row[Any] | None = (
            await conn.execute(
                select(accounts.c.id, accounts.c.password_hash).where(
                    accounts.c.id == int(account_id)
                )
            )
        ).first()
    return row


async def authenticate_user(runtime: Runtime, email: str, password: str) -> int:
    """The account ``email`` names if ``password`` is its password. An unknown address costs
    the same hashing work as a wrong password, so timing does not tell which addresses exist."""
    row = await _account_by_email(runtime, email)
    stored = row.password_hash if row is not None else None
    matches = await verify_password(runtime.settings, stored, password)
    if row is None or not matches:
        raise OAuthError("invalid_grant", "The e-mail address or password is wrong")
    return int(row.id)


async def grant_password(
    runtime: Runtime, app: App, username: str, password: str, scope: str | None
) -> IssuedToken:
    scopes = narrow_scopes(app, scope)
    account_id = await authenticate_user(runtime, username, password)
    async with runtime.router.global_begin() as conn:
        return await issue_token(conn, runtime, app, account_id, scopes)


async def grant_client_credentials(runtime: Runtime, app: App, scope: str | None) -> IssuedToken:
    scopes = narrow_scopes(app, scope)
    async with runtime.router.global_begin() as conn:
        return await issue_token(conn, runtime, app, None, scopes)


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    else:
        computed = verifier
    return hmac.compare_digest(computed, challenge)


async def do_authorize(
    runtime: Runtime,
    app: App,
    account_id: int,
    redirect_uri: str,
    scopes: frozenset[str],
    code_challenge: str | None,
    code_challenge_method: str | None,
) -> str:
    """A one-time authorization code for ``account_id`` (stored hashed, short-lived)."""
    code = new_secret()
    expires = datetime.now(UTC) + timedelta(seconds=runtime.settings.authorization_code_ttl_seconds)
    async with runtime.router.global_begin() as conn:
        await conn.execute(
            insert(oauth_codes).values(
                code_hash=hash_secret(code),
                app_id=app.id,
                account_id=account_id,
                redirect_uri=redirect_uri,
                scopes=" ".join(sorted(scopes)),
                code_challenge=code_challenge,
                code_challenge_method=(code_challenge_method or "plain")
                if code_challenge
                else None,
                expires_at=expires,
            )
        )
    return code


async def grant_authorization_code(
    runtime: Runtime, app: App, code: str, redirect_uri: str | None, code_verifier: str | None
) -> IssuedToken:
    now = datetime.now(UTC)
    async with runtime.router.global_begin() as conn:
        row = (
            await conn.execute(
                select(oauth_codes).where(oauth_codes.c.code_hash == hash_secret(code))
            )
        ).first()
        bad = OAuthError("invalid_grant", "The authorization code is invalid or expired")
        if row is None or row.app_id != app.id or row.used_at is not None or row.expires_at <= now:
            raise bad
        if (redirect_uri or OOB) != row.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        if row.code_challenge is not None and (
            not code_verifier
            or not pkce_matches(code_verifier, row.code_challenge, row.code_challenge_method)
        ):
            raise OAuthError("invalid_grant", "The PKCE code_verifier does not match")
        # Single use, even against a concurrent redemption: only one UPDATE finds it unused.
        used = await conn.execute(
            update(oauth_codes)
            .where(oauth_codes.c.code_hash == row.code_hash, oauth_codes.c.used_at.is_(None))
            .values(used_at=now)
        )
        if used.rowcount != 1:
            raise bad
        if await load_account(runtime.router, row.account_id) is None:
            raise bad
        return await issue_token(conn, runtime, app, row.account_id, frozenset(row.scopes.split()))


async def grant_refresh_token(
    runtime: Runtime, app: App, refresh_token: str, scope: str | None
) -> IssuedToken:
    """A new access and refresh token; the old pair stops working (rotation)."""
    async with runtime.invalidating() as revoked_keys, runtime.router.global_begin() as conn:
        row = (
            await conn.execute(
                select(oauth_tokens).where(
                    oauth_tokens.c.refresh_hash == hash_secret(refresh_token),
                    oauth_tokens.c.revoked_at.is_(None),
                )
            )
        ).first()
        if row is None or row.app_id != app.id:
            raise OAuthError("invalid_grant", "The refresh token is invalid")
        granted = frozenset(row.scopes.split())
        scopes = check_scopes(scope) if scope else granted
        # Narrowing to a child of a granted scope (read -> read:accounts) is no gain.
        if not all(scope_allows(granted, s) for s in scopes):
            raise OAuthError("invalid_scope", "A refreshed token cannot gain scopes")
        revoked = await conn.execute(
            update(oauth_tokens)
            .where(oauth_tokens.c.id == row.id, oauth_tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        if revoked.rowcount != 1:
            raise OAuthError("invalid_grant", "The refresh token is invalid")
        revoked_keys.add(token_key(row.token_hash))
        return await issue_token(conn, runtime, app, row.account_id, scopes)


async def do_revoke(runtime: Runtime, app: App, token: str) -> None:
    """Revoke an access or refresh token of ``app`` (RFC 7009: unknown tokens are no error)."""
    hashed = hash_secret(token)
    async with runtime.invalidating() as revoked_keys, runtime.router.global_begin() as conn:
        revoked = await conn.execute(
            update(oauth_tokens)
            .where(
                oauth_tokens.c.app_id == app.id,
                oauth_tokens.c.revoked_at.is_(None),
                (oauth_tokens.c.token_hash == hashed) | (oauth_tokens.c.refresh_hash == hashed),
            )
            .values(revoked_at=datetime.now(UTC))
            .returning(oauth_tokens.c.token_hash)
        )
        revoked_keys.update(token_key(h) for h in revoked.scalars())
