"""Statuses as pages show them: photos with every size for ``srcset``, and a few comments.

Which statuses a viewer sees is decided before anything here runs, by the same read paths
as the API (``posts.timelines``, ``posts.actions``): these only dress what they returned.
The Status entity names two sizes of each photo (full and preview); a page wants all of
them, so the photos' stored variants are read again (``posts.render.load_media``, through
the cache) for the photos of those statuses only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from photogram.cache import Record
from photogram.concurrency import gather
from photogram.media.actions import media_url
from photogram.media.processing import SIZES, THUMB_SIZE
from photogram.media.schemas import FULL
from photogram.posts import actions as posts
from photogram.posts.render import load_media
from photogram.posts.schemas import Status
from photogram.runtime import Runtime
from photogram.web.errors import ApiError
from photogram.web.pages.common import status_path

#: The sizes a photo is offered in, smallest first (the thumbnail is square: grids only).
SIZED_VARIANTS = (*sorted(SIZES, key=SIZES.__getitem__), FULL)
THUMB = "thumb"
#: Comments shown under a post in the feed.
PREVIEW_COMMENTS = 2


@dataclass(frozen=True)
class Photo:
    id: str
    alt: str
    blurhash: str | None
    width: int
    height: int
    src: str
    srcset: str
    grid_src: str
    grid_srcset: str


@dataclass
class Card:
    status: Status
    photos: list[Photo]
    path: str
    comments: list[Status] = field(default_factory=list)


def _srcset(urls: list[tuple[str, int]]) -> str:
    # A photo smaller than a size is never upscaled to it, so sizes can repeat a width.
    widths = {width: url for url, width in reversed(urls)}
    return ", ".join(f"{url} {width}w" for width, url in sorted(widths.items()))


async def photos_of(runtime: Runtime, statuses: list[Status]) -> dict[str, list[Photo]]:
    """Each status's photos (those processed), by status ID, in the status's order."""
    wanted = [int(m.id) for s in statuses for m in s.media_attachments]
    if not wanted:
        return {s.id: [] for s in statuses}
    _rows, variants = await load_media(runtime, wanted)
    keys = sorted({o.key for v in variants.values() for o in v.values()})
    urls = dict(zip(keys, await gather(*(media_url(runtime, k) for k in keys)), strict=True))
    out: dict[str, list[Photo]] = {}
    for status in statuses:
        photos = []
        for media in status.media_attachments:
            stored: dict[str, Record] = variants.get(int(media.id), {})
            sized = [
                (urls[stored[n].key], int(stored[n].width)) for n in SIZED_VARIANTS if n in stored
            ]
            full = stored.get(FULL)
            if full is None or not sized:
                continue
            thumb = stored.get(THUMB)
            grid = [(urls[thumb.key], int(thumb.width))] if thumb is not None else []
            grid += [s for s in sized if s[1] > THUMB_SIZE]
            # The first size of at least 1080 pixels, for browsers without srcset.
            src = next((u for u, w in sized if w >= SIZES["1080"]), sized[-1][0])
            photos.append(
                Photo(
                    id=media.id,
                    alt=media.description or "",
                    blurhash=media.blurhash,
                    width=int(full.width),
                    height=int(full.height),
                    src=src,
                    srcset=_srcset(sized),
                    grid_src=grid[0][0],
                    grid_srcset=_srcset(grid),
                )
            )
        out[status.id] = photos
    return out


async def _first_comments(runtime: Runtime, viewer_id: int | None, status: Status) -> list[Status]:
    if status.replies_count == 0:
        return []
    try:
        found, _more = await posts.context(runtime, viewer_id, status.id, PREVIEW_COMMENTS, None)
    except ApiError:  # deleted, or hidden, since the page was chosen
        return []
    return found.descendants


async def cards_for(
    runtime: Runtime, viewer_id: int | None, statuses: list[Status], *, comments: bool = True
) -> list[Card]:
    """Cards for ``statuses`` (already checked visible), with their first comments."""
    photos = await photos_of(runtime, statuses)
    previews: list[list[Status]] = [[] for _ in statuses]
    if comments:
        previews = list(await gather(*(_first_comments(runtime, viewer_id, s) for s in statuses)))
    return [
        Card(s, photos.get(s.id, []), status_path(s.account.username, s.id), found)
        for s, found in zip(statuses, previews, strict=True)
    ]
