"""Account entities as the Mastodon client API defines them."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from photogram.settings import Settings

DEFAULT_AVATAR_PATH = "/avatars/original/missing.png"


class AccountField(BaseModel):
    name: str
    value: str
    verified_at: str | None = None


class Account(BaseModel):
    id: str = Field(description="The account's ID (a decimal string).")
    username: str
    acct: str = Field(description="The username: accounts here are all local.")
    url: str
    uri: str
    display_name: str
    note: str = Field(description="The bio, as HTML.")
    avatar: str
    avatar_static: str
    header: str
    header_static: str
    locked: bool
    fields: list[AccountField] = []
    emojis: list[dict[str, Any]] = []
    bot: bool = False
    group: bool = False
    discoverable: bool | None = None
    indexable: bool = False
    noindex: bool = False
    created_at: str
    last_status_at: str | None = None
    statuses_count: int
    followers_count: int
    following_count: int


class Source(BaseModel):
    privacy: str = "public"
    sensitive: bool = False
    language: str = ""
    note: str
    fields: list[AccountField] = []
    follow_requests_count: int = 0


class CredentialAccount(Account):
    source: Source


def note_html(note: str) -> str:
    """A plain-text bio as the HTML clients expect: escaped, paragraphs and line breaks."""
    paragraphs = [p for p in note.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def avatar_url(settings: Settings, key: str | None) -> str:
    return f"{settings.base_url}/media/{key}" if key else settings.base_url + DEFAULT_AVATAR_PATH


def render_account(row: Any, settings: Settings) -> Account:
    """The Account entity of an ``accounts`` row."""
    avatar = avatar_url(settings, row.avatar_key)
    header = settings.base_url + DEFAULT_AVATAR_PATH.replace("avatars", "headers")
    url = f"{settings.base_url}/@{row.username}"
    created = row.created_at.replace(hour=0, minute=0, second=0, microsecond=0)
    return Account(
        id=str(row.id),
        username=row.username,
        acct=row.username,
        url=url,
        uri=f"{settings.base_url}/users/{row.username}",
        display_name=row.display_name,
        note=note_html(row.note),
        avatar=avatar,
        avatar_static=avatar,
        header=header,
        header_static=header,
        locked=row.locked,
        discoverable=row.discoverable,
        created_at=_iso(created),
        last_status_at=row.last_status_at.date().isoformat() if row.last_status_at else None,
        statuses_count=row.statuses_count,
        followers_count=row.followers_count,
        following_count=row.following_count,
    )


def render_credential_account(
    row: Any, settings: Settings, follow_requests_count: int
) -> CredentialAccount:
    account = render_account(row, settings)
    return CredentialAccount(
        **account.model_dump(),
        source=Source(
            privacy="private" if row.locked else "public",
            note=row.note,
            follow_requests_count=follow_requests_count,
        ),
    )
