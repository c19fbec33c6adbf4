"""Status entities (a post or a comment) as the Mastodon client API defines them, and the
forms that create and edit them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from photogram.accounts.schemas import Account
from photogram.media.schemas import MediaAttachment

VISIBILITIES = ("public", "unlisted", "private")


class StatusMention(BaseModel):
    id: str
    username: str
    url: str
    acct: str


class StatusTag(BaseModel):
    name: str
    url: str


class Application(BaseModel):
    name: str
    website: str | None = None


class Status(BaseModel):
    id: str
    created_at: str
    in_reply_to_id: str | None
    in_reply_to_account_id: str | None
    sensitive: bool
    spoiler_text: str
    visibility: str = Field(description="public, unlisted or private (followers only).")
    language: str | None
    uri: str
    url: str
    replies_count: int
    reblogs_count: int = 0
    favourites_count: int
    edited_at: str | None
    favourited: bool | None = Field(default=None, description="Absent without a signed-in user.")
    reblogged: bool | None = None
    muted: bool | None = None
    bookmarked: bool | None = None
    pinned: bool | None = None
    content: str = Field(description="The caption or comment, as HTML.")
    text: str | None = Field(default=None, description="The source text (only when deleted).")
    filtered: list[Any] = []
    reblog: None = None
    application: Application | None = None
    account: Account
    media_attachments: list[MediaAttachment]
    mentions: list[StatusMention]
    tags: list[StatusTag]
    emojis: list[Any] = []
    card: None = None
    poll: None = None


class Context(BaseModel):
    ancestors: list[Status]
    descendants: list[Status]


class StatusSource(BaseModel):
    id: str
    text: str
    spoiler_text: str


class StatusForm(BaseModel):
    """``POST /api/v1/statuses`` (form or JSON; ``media_ids[]`` in a form)."""

    model_config = ConfigDict(extra="ignore")

    status: str | None = Field(default=None, description="The caption, or a comment's text.")
    media_ids: list[str] = Field(
        default_factory=list, description="1 to 10 uploaded photos (a post); none on a comment."
    )
    in_reply_to_id: str | None = Field(default=None, description="Comment on this status.")
    sensitive: bool = False
    spoiler_text: str | None = None
    visibility: str | None = Field(default=None, description="public, unlisted or private.")
    language: str | None = None


class EditForm(BaseModel):
    """``PUT /api/v1/statuses/:id``: the caption and its warning (the photos stay)."""

    model_config = ConfigDict(extra="ignore")

    status: str | None = None
    spoiler_text: str | None = None
    sensitive: bool | None = None
    language: str | None = None
    media_ids: list[str] | None = Field(
        default=None, description="The same photos, possibly reordered or fewer (at least one)."
    )
