"""Every page, and the static files they use, for the app factory to mount."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles

from photogram.web.pages import accounts, feeds, people, posts
from photogram.web.pages.common import PageDep, PageRoute, not_found_page
from photogram.web.pages.templating import STATIC_DIRECTORY, STATIC_PACKAGE, STATIC_PREFIX

# Under the pages' own prefixes, an address no page has is a page too (not the API's JSON).
unknown = APIRouter(route_class=PageRoute, include_in_schema=False)


@unknown.get("/@{username}/{rest:path}")
@unknown.get("/tags/{rest:path}")
async def no_such_page(ctx: PageDep) -> Response:
    # ``ctx`` is asked for so that the error page knows who is signed in.
    raise not_found_page()


api = APIRouter(include_in_schema=False)
for module in (accounts, feeds, people, posts):
    api.include_router(module.api)
api.include_router(unknown)  # last: every real page is matched first


def install(app: FastAPI) -> None:
    """Mount the pages and ``/static`` on ``app``."""
    app.include_router(api)
    app.mount(
        STATIC_PREFIX,
        StaticFiles(packages=[(STATIC_PACKAGE, STATIC_DIRECTORY)]),
        name="static",
    )
