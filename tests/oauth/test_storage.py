"""Secrets are stored hashed: a copy of the OAuth tables grants nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from photogram.db.metadata import oauth_apps, oauth_codes, oauth_tokens
from photogram.web.auth import hash_secret
from tests.api import PASSWORD, api_client
from tests.conftest import MakeSettings
from tests.oauth.flow import REDIRECT, exchange, get_code


async def test_tokens_codes_and_secrets_are_stored_hashed(make_settings: MakeSettings) -> None:
    async with api_client(await make_settings()) as client:
        app = await client.register_app(redirect_uris=REDIRECT)
        alice = await client.sign_up("alice", app)
        password = (
            await client.post(
                "/oauth/token",
                data={
                    "grant_type": "password",
                    "client_id": app.client_id,
                    "client_secret": app.client_secret,
                    "username": alice.email,
                    "password": PASSWORD,
                },
            )
        ).json()
        app_token = await client.app_token(app)
        code = (await get_code(client, app, alice)).code
        from_code = (await exchange(client, app, code)).json()

        secrets = [
            app.client_secret,
            alice.token,
            app_token,
            password["access_token"],
            password["refresh_token"],
            code,
            from_code["access_token"],
            from_code["refresh_token"],
        ]
        rows: dict[str, list[Any]] = {}
        async with client.runtime.router.global_connect() as conn:
            for table in (oauth_apps, oauth_tokens, oauth_codes):
                rows[table.name] = list((await conn.execute(select(table))).all())
        stored = repr(rows)
        for secret in secrets:
            assert secret not in stored

        token_hashes = {row.token_hash for row in rows["oauth_tokens"]}
        refresh_hashes = {row.refresh_hash for row in rows["oauth_tokens"]}
        for access in (alice.token, app_token, password["access_token"], from_code["access_token"]):
            assert hash_secret(access) in token_hashes
        assert hash_secret(password["refresh_token"]) in refresh_hashes
        assert hash_secret(code) in {row.code_hash for row in rows["oauth_codes"]}
        assert hash_secret(app.client_secret) in {
            row.client_secret_hash for row in rows["oauth_apps"]
        }
