"""Helpers for tests that speak to photogram over HTTP, as a Mastodon client would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from photogram.app import create_app
from photogram.runtime import Runtime
from photogram.settings import Settings
from tests.conftest import init_test_cluster

PASSWORD = "correct horse battery staple"
SCOPES = "read write follow push"
# Fast password hashing: the tests sign up hundreds of accounts.
FAST = {"password_time_cost": 1, "password_memory_kib": 8}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class App:
    client_id: str
    client_secret: str


@dataclass
class User:
    id: str
    username: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


class Client(httpx.AsyncClient):
    runtime: Runtime

    async def register_app(
        self, scopes: str = SCOPES, redirect_uris: str = "urn:ietf:wg:oauth:2.0:oob"
    ) -> App:
        response = await self.post(
            "/api/v1/apps",
            data={"client_name": "tests", "redirect_uris": redirect_uris, "scopes": scopes},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return App(body["client_id"], body["client_secret"])

    async def app_token(self, app: App, scope: str = SCOPES) -> str:
        response = await self.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def sign_up(self, username: str, app: App | None = None, scope: str = SCOPES) -> User:
        app = app or await self.register_app()
        token = await self.app_token(app, scope)
        email = f"{username.lower()}@example.com"
        response = await self.post(
            "/api/v1/accounts",
            headers={"Authorization": f"Bearer {token}"},
            data={"username": username, "email": email, "password": PASSWORD, "agreement": "true"},
        )
        assert response.status_code == 200, response.text
        user_token = response.json()["access_token"]
        me = await self.get(
            "/api/v1/accounts/verify_credentials", headers={"Authorization": f"Bearer {user_token}"}
        )
        assert me.status_code == 200, me.text
        return User(me.json()["id"], username, email, user_token)

    async def log_in(self, app: App, email: str, scope: str = SCOPES) -> str:
        """A new token for an existing account, with ``scope`` (the password grant)."""
        response = await self.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "username": email,
                "password": PASSWORD,
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def revoke(self, app: App, token: str) -> httpx.Response:
        """``POST /oauth/revoke`` of an access or refresh token, as ``app``."""
        return await self.post(
            "/oauth/revoke",
            data={"client_id": app.client_id, "client_secret": app.client_secret, "token": token},
        )

    async def settle(self) -> None:
        """Run every pending background task now (the app's sweeper is off in tests)."""
        while await self.runtime.relay.sweep():
            pass


@asynccontextmanager
async def api_client(settings: Settings, *, init: bool = True) -> AsyncIterator[Client]:
    """An HTTP client talking to a fresh app over ASGI (no sockets), lifespan included."""
    settings = settings.model_copy(update=FAST)
    if init:
        await init_test_cluster(settings, 16)
    app = create_app(settings, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with Client(transport=transport, base_url="http://photogram.test") as client:
            client.runtime = app.state.runtime
            yield client
