"""Helpers for tests of the web pages: a browser-like client over ASGI (cookies kept,
redirects not followed), reading forms off pages and sending them back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx

from tests.api import PASSWORD, Client


class _Page(HTMLParser):
    """What tests read off a page: hidden inputs, links, images, ids, labels and scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}
        self.inputs: list[dict[str, str | None]] = []
        self.labels: set[str] = set()
        self.images: list[dict[str, str | None]] = []
        self.ids: set[str] = set()
        self.forms: list[dict[str, str | None]] = []
        self.landmarks: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"] or "")
        if tag == "input":
            self.inputs.append(found)
            if found.get("type") == "hidden" and found.get("name"):
                self.hidden[found["name"] or ""] = found.get("value") or ""
        elif tag in ("textarea", "select"):
            self.inputs.append({"type": tag, **found})
        elif tag == "label" and found.get("for"):
            self.labels.add(found["for"] or "")
        elif tag == "img":
            self.images.append(found)
        elif tag == "form":
            self.forms.append(found)
        elif tag in ("main", "nav", "header"):
            self.landmarks.add(tag)


def read_page(html: str) -> _Page:
    parser = _Page()
    parser.feed(html)
    return parser


@dataclass
class Browser:
    """One browser: its own cookie jar, the same app."""

    http: httpx.AsyncClient
    username: str | None = None
    pages: list[str] = field(default_factory=list)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(path, **kwargs)
        assert response.status_code < 500, f"{path}: {response.status_code} {response.text}"
        return response

    async def submit(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        page: str | None = None,
        files: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a form of ``page`` (default: ``path``) the way a browser would: with the
        CSRF token from that page."""
        shown = await self.get(page or path)
        token = read_page(shown.text).hidden.get("csrf_token")
        assert token, f"{page or path} has no CSRF token"
        response = await self.http.post(
            path, data={"csrf_token": token, **(data or {})}, files=files, headers=headers
        )
        assert response.status_code < 500, f"{path}: {response.status_code} {response.text}"
        return response


def new_browser(client: Client) -> Browser:
    """A new browser on ``client``'s app; ``browser.http.aclose()`` when done."""
    http = httpx.AsyncClient(
        transport=client._transport, base_url=str(client.base_url), follow_redirects=False
    )
    return Browser(http)


@asynccontextmanager
async def browser(client: Client) -> AsyncIterator[Browser]:
    """A new browser on ``client``'s app, closed afterwards."""
    opened = new_browser(client)
    try:
        yield opened
    finally:
        await opened.http.aclose()


def email_of(username: str) -> str:
    return f"{username.lower()}@example.com"


async def sign_up(web: Browser, username: str) -> httpx.Response:
    response = await web.submit(
        "/signup",
        {
            "username": username,
            "email": email_of(username),
            "password": PASSWORD,
            "agreement": "on",
        },
    )
    assert response.status_code == 303, response.text
    web.username = username
    return response


async def sign_in(web: Browser, username: str) -> httpx.Response:
    response = await web.submit("/signin", {"email": email_of(username), "password": PASSWORD})
    assert response.status_code == 303, response.text
    web.username = username
    return response
