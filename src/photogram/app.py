"""The ASGI application: stateless, so any number of these run behind a load balancer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from photogram import __version__
from photogram.accounts import api as accounts_api
from photogram.graph import api as graph_api
from photogram.instance import api as instance_api
from photogram.media import api as media_api
from photogram.media.arenas import limit_malloc_arenas
from photogram.notifications import api as notifications_api
from photogram.oauth import api as oauth_api
from photogram.oauth import pages as oauth_pages
from photogram.observe import Observe
from photogram.posts import api as posts_api
from photogram.runtime import Runtime
from photogram.settings import Settings
from photogram.web import errors, health, media, metrics
from photogram.web.pages import routes as pages
from photogram.web.ratelimit import RateLimit


def create_app(settings: Settings, *, background: bool = True) -> FastAPI:
    """The app. ``background=False`` leaves pending outbox work to an explicit sweep (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_malloc_arenas(settings.media_malloc_arenas)  # before the threads that process
        runtime = await Runtime.open(settings)
        app.state.runtime = runtime
        if background:
            runtime.start_background()
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="photogram",
        version=__version__,
        description="The Mastodon client API subset a photo-sharing app needs.",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(RateLimit, settings=settings)
    app.add_middleware(Observe)  # outermost: it times and counts everything, 429s included
    app.include_router(health.api)
    app.include_router(metrics.api)
    app.include_router(oauth_api.api)
    app.include_router(oauth_pages.api)
    app.include_router(accounts_api.api)
    app.include_router(graph_api.api)
    app.include_router(media.api)
    app.include_router(instance_api.api)
    app.include_router(media_api.api)
    app.include_router(posts_api.api)
    app.include_router(notifications_api.api)
    pages.install(app)
    return app
