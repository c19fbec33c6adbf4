"""The ASGI application: stateless, so any number of these run behind a load balancer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from photogram import __version__
from photogram.db.router import Router
from photogram.settings import Settings
from photogram.web import errors, health


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router = await Router.open(settings)
        app.state.router = router
        try:
            yield
        finally:
            await router.close()

    app = FastAPI(title="photogram", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    app.include_router(health.api)
    return app
