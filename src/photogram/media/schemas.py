"""MediaAttachment entities (Mastodon's shape) and the forms that create and edit them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: The variant a client shows full size, and the one it shows in lists.
FULL, PREVIEW = "original", "640"


class MetaSize(BaseModel):
    width: int
    height: int
    size: str
    aspect: float


class Focus(BaseModel):
    x: float
    y: float


class MediaMeta(BaseModel):
    original: MetaSize | None = None
    small: MetaSize | None = None
    focus: Focus


class MediaAttachment(BaseModel):
    id: str
    type: str = Field(default="image", description="Always image: photogram takes photos only.")
    url: str | None = Field(description="The full-size photo; null while processing.")
    preview_url: str | None
    remote_url: str | None = None
    preview_remote_url: str | None = None
    text_url: str | None = None
    meta: MediaMeta
    description: str | None
    blurhash: str | None


class MediaForm(BaseModel):
    model_config = ConfigDict(extra="ignore")

    description: str | None = Field(default=None, description="Alt text, at most 1,500 characters.")
    focus: str | None = Field(default=None, description='Focal point "x,y", each from -1.0 to 1.0.')
    filter: str | None = Field(
        default=None, description="A photo filter by id (GET /api/v1/photogram/filters)."
    )
    file: Any = Field(
        default=None,
        description="The photo (multipart).",
        json_schema_extra={"type": "string", "format": "binary"},
    )


class PhotoFilter(BaseModel):
    id: str
    title: str
    description: str


def _size(width: int, height: int) -> MetaSize:
    return MetaSize(width=width, height=height, size=f"{width}x{height}", aspect=width / height)


def render_attachment(
    row: Any, objects: Mapping[str, Any], url_of: Callable[[Any], str]
) -> MediaAttachment:
    """The entity of a ``media_attachments`` row and its stored objects by variant."""
    full, preview = objects.get(FULL), objects.get(PREVIEW)
    return MediaAttachment(
        id=str(row.id),
        url=url_of(full) if full is not None else None,
        preview_url=url_of(preview) if preview is not None else None,
        meta=MediaMeta(
            original=_size(full.width, full.height) if full is not None else None,
            small=_size(preview.width, preview.height) if preview is not None else None,
            focus=Focus(x=row.focus_x, y=row.focus_y),
        ),
        description=row.description or None,
        blurhash=row.blurhash,
    )
