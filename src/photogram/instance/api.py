"""Instance information: what clients read first, to learn the version and the limits."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from sqlalchemy import func, select

from photogram import __version__
from photogram.db.metadata import usernames
from photogram.media.processing import supported_mime_types
from photogram.posts.actions import MAX_CHARACTERS, MAX_MEDIA_ATTACHMENTS, MAX_PINNED
from photogram.runtime import Runtime
from photogram.settings import Settings
from photogram.web.deps import RuntimeDep

api = APIRouter(tags=["instance"])

#: The Mastodon API version photogram implements the subset of. Clients' feature
#: detection parses the leading version; the rest says what this really is.
MASTODON_COMPATIBLE = "4.3.0"
VERSION = f"{MASTODON_COMPATIBLE} (compatible; photogram {__version__})"


def _configuration(settings: Settings) -> dict[str, Any]:
    return {
        "accounts": {"max_featured_tags": 0, "max_pinned_statuses": MAX_PINNED},
        "statuses": {
            "max_characters": MAX_CHARACTERS,
            "max_media_attachments": MAX_MEDIA_ATTACHMENTS,
            "characters_reserved_per_url": 23,
        },
        "media_attachments": {
            # What this libvips decodes: HEIC and AVIF appear where it can.
            "supported_mime_types": list(supported_mime_types()),
            "image_size_limit": settings.media_max_bytes,
            "image_matrix_limit": settings.media_max_pixels,
            # Photos only: no video or audio is accepted.
            "video_size_limit": 0,
            "video_frame_rate_limit": 0,
            "video_matrix_limit": 0,
        },
        "polls": {
            "max_options": 0,
            "max_characters_per_option": 0,
            "min_expiration": 0,
            "max_expiration": 0,
        },
    }


async def _user_count(runtime: Runtime) -> int:
    async with runtime.router.global_connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(usernames).where(usernames.c.confirmed)
        )
    return int(count or 0)


@api.get("/api/v1/instance")
async def instance_v1(runtime: RuntimeDep) -> dict[str, Any]:
    """Instance information (version 1 of the entity, still read by many clients)."""
    settings = runtime.settings
    domain = urlsplit(settings.base_url).netloc
    return {
        "uri": domain,
        "title": settings.instance_title,
        "short_description": settings.instance_description,
        "description": settings.instance_description,
        "email": settings.contact_email,
        "version": VERSION,
        "urls": {"streaming_api": ""},
        "stats": {"user_count": await _user_count(runtime), "status_count": 0, "domain_count": 0},
        "thumbnail": None,
        "languages": ["en"],
        "registrations": settings.registrations_open,
        "approval_required": False,
        "invites_enabled": False,
        "configuration": _configuration(settings),
        "contact_account": None,
        "rules": [],
    }


@api.get("/api/v2/instance")
async def instance_v2(runtime: RuntimeDep) -> dict[str, Any]:
    """Instance information (version 2 of the entity)."""
    settings = runtime.settings
    configuration = _configuration(settings) | {
        "urls": {"streaming": ""},
        "vapid": {"public_key": ""},
        "translation": {"enabled": False},
    }
    return {
        "domain": urlsplit(settings.base_url).netloc,
        "title": settings.instance_title,
        "version": VERSION,
        "source_url": settings.source_url,
        "description": settings.instance_description,
        "usage": {"users": {"active_month": await _user_count(runtime)}},
        "thumbnail": {"url": settings.base_url + "/avatars/original/missing.png"},
        "languages": ["en"],
        "configuration": configuration,
        "registrations": {
            "enabled": settings.registrations_open,
            "approval_required": False,
            "message": None,
        },
        "api_versions": {"mastodon": 2},
        "contact": {"email": settings.contact_email, "account": None},
        "rules": [],
    }
