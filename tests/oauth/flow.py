"""The authorization code flow as a browser and an app go through it, for the OAuth tests."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.api import PASSWORD, App, Client, User

REDIRECT = "https://client.example/callback"
OOB = "urn:ietf:wg:oauth:2.0:oob"
CSRF_COOKIE = "photogram_csrf"


class _Forms(HTMLParser):
    """The page's form: its action, every input by name, and the labels' targets."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.labels: set[str] = set()
        self.buttons: dict[str, dict[str, str | None]] = {}
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.action, self.method = found.get("action"), found.get("method")
        elif tag == "input":
            self.inputs[found.get("name") or found.get("id") or ""] = found
        elif tag == "label" and found.get("for"):
            self.labels.add(found["for"] or "")
        elif tag == "button":
            self.buttons[found.get("value") or ""] = found
        elif tag == "script":
            self.scripts += 1


def parse_page(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    return parser


def hidden_fields(page: httpx.Response) -> dict[str, str]:
    inputs = parse_page(page.text).inputs
    return {
        name: attrs.get("value") or ""
        for name, attrs in inputs.items()
        if attrs.get("type") == "hidden"
    }


def pkce_pair(method: str = "S256") -> tuple[str, str]:
    """A code verifier and its challenge."""
    verifier = secrets.token_urlsafe(48)
    if method == "plain":
        return verifier, verifier
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(app: App, **params: str | None) -> dict[str, str]:
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": REDIRECT,
        "scope": "read",
        "state": "opaque-state",
        **params,
    }
    return {name: value for name, value in query.items() if value is not None}


async def open_page(client: Client, app: App, **params: str | None) -> httpx.Response:
    return await client.get("/oauth/authorize", params=authorize_params(app, **params))


async def submit(
    client: Client,
    page: httpx.Response,
    email: str | None,
    password: str | None = PASSWORD,
    decision: str = "authorize",
    **overrides: str | None,
) -> httpx.Response:
    """Fill in and send the page's form (with the cookie the page set, as a browser would)."""
    assert page.status_code in (200, 422), page.text  # the page, or the page again
    action = parse_page(page.text).action
    assert action == "/oauth/authorize"
    form: dict[str, str | None] = {
        **hidden_fields(page),
        "email": email,
        "password": password,
        "decision": decision,
        **overrides,
    }
    data = {name: value for name, value in form.items() if value is not None}
    return await client.post(action, data=data)


def redirect_params(response: httpx.Response, redirect_uri: str = REDIRECT) -> dict[str, str]:
    """The query the app receives at its redirect URI (asserting that is where it goes)."""
    assert response.status_code in (302, 303), response.text
    location = urlsplit(response.headers["location"])
    wanted = urlsplit(redirect_uri)
    assert (location.scheme, location.netloc, location.path) == (
        wanted.scheme,
        wanted.netloc,
        wanted.path,
    )
    query = parse_qs(location.query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), query
    return {name: values[0] for name, values in query.items()}


@dataclass
class Code:
    code: str
    state: str | None


async def get_code(
    client: Client, app: App, user: User, password: str = PASSWORD, **params: str | None
) -> Code:
    """Go through the page as ``user`` and come back with the code and state."""
    page = await open_page(client, app, **params)
    response = await submit(client, page, user.email, password)
    received = redirect_params(response, params.get("redirect_uri") or REDIRECT)
    assert "error" not in received, received
    return Code(received["code"], received.get("state"))


async def exchange(
    client: Client,
    app: App,
    code: str,
    redirect_uri: str | None = REDIRECT,
    code_verifier: str | None = None,
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    return await client.post(
        "/oauth/token", data={name: value for name, value in form.items() if value is not None}
    )
