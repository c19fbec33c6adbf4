"""The Notification entity as the Mastodon client API defines it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from photogram.accounts.schemas import Account
from photogram.posts.schemas import Status


class Notification(BaseModel):
    id: str
    type: str = Field(description="mention, favourite, follow or follow_request.")
    created_at: str
    group_key: str = Field(
        description="Shared by notifications grouped together; each of these stands alone "
        "(ungrouped-<id>)."
    )
    account: Account = Field(description="Who did it.")
    status: Status | None = Field(
        default=None, description="The status it is about (favourite and mention)."
    )
