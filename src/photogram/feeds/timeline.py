"""The home timeline read from the viewer's precomputed feed (docs/feeds.md).

It chooses the very IDs the read-time path (``posts.timelines``) would: the feed holds
the IDs of the top-level posts of the accounts the viewer follows and the viewer's own,
complete at and above its horizon. A page takes the feed's entries in the window whose
author the viewer follows (and has not muted) — so entries left by an unfollow, or
pushed late, never show — merges in the posts of the followed big accounts (not fanned
out) from their shards, and reads whatever lies below the horizon from the shards too.
Hydration is then the same as the read-time path's.

No feed: it is built from the shards, then read. A feed being built by another reader,
Redis down or slow: the page is read from the shards.
"""

from __future__ import annotations

from prometheus_client import Counter

from photogram.feeds.big import load_big
from photogram.feeds.store import REBUILDING, FeedStore, FeedsUnavailable, Window, pack_id
from photogram.posts.timelines import following, home_authors, select_posts
from photogram.runtime import Runtime
from photogram.web.paging import Page

HOME_READS = Counter(
    "photogram_home_reads",
    "Home timeline pages with feeds on, by where they came from: feed, rebuilt (the feed "
    "was built for it), horizon (older than the feed holds: the shards), shards (no usable "
    "feed, or Redis down).",
    ["source"],
)


async def home_ids(
    runtime: Runtime, viewer_id: int, followed: list[int], muted: set[int], page: Page
) -> list[int]:
    """The page's IDs, newest first, from the feed when it can serve them."""
    store = runtime.feeds
    assert store is not None
    authors = home_authors(viewer_id, followed, muted)
    if store.available:
        try:
            found = await _from_feed(runtime, store, viewer_id, authors, page)
        except FeedsUnavailable:
            found = None
        if found is not None:
            return found
    HOME_READS.labels("shards").inc()
    return [i for i, _ in await select_posts(runtime, authors, page)]


async def rebuild(runtime: Runtime, store: FeedStore, viewer_id: int) -> bool:
    """Build the viewer's feed from the shards; False if it was not (another reader is
    building it, or the build was called off).

    The marker goes in first, and only then are the follow list and the posts read: a
    post committed after that read finds the marker and is pushed by its fan-out, and a
    follow committed after it drops the half-built feed (docs/feeds.md).
    """
    marker = await store.begin_build(viewer_id)
    if marker is None:
        return True  # there is one already; the read that follows says which state
    followed, _ = await following(runtime, viewer_id)
    n = store.max_entries
    posts = await select_posts(runtime, [viewer_id, *followed], Page(limit=n + 1))
    horizon = posts[n - 1][0] if len(posts) > n else 0
    return await store.finish_build(viewer_id, marker, posts[:n], horizon)


async def _from_feed(
    runtime: Runtime, store: FeedStore, viewer_id: int, authors: list[int], page: Page
) -> list[int] | None:
    """The page from the feed (and the shards for big accounts and below the horizon);
    None when the feed cannot be used."""
    ascending = page.min_id is not None
    lower = [x for x in (page.since_id, page.min_id) if x is not None]
    lo_id = max(max(lower, default=0) + 1, 1)  # the lowest ID the page may hold
    hi = b"+" if page.max_id is None else b"(" + pack_id(page.max_id)
    lo = b"[" + pack_id(lo_id)
    count = 2 * page.limit  # entries of authors no longer followed are skipped

    async def read(hi: bytes, lo: bytes, lo_id: int) -> Window | None:
        return await store.read(
            viewer_id, hi=hi, lo=lo, lo_id=lo_id, count=count, newest_first=not ascending
        )

    source = "feed"
    window = await read(hi, lo, lo_id)
    if window is None:
        if not await rebuild(runtime, store, viewer_id):
            return None
        source = "rebuilt"
        window = await read(hi, lo, lo_id)
    if window is None or window is REBUILDING:
        return None
    horizon = window.horizon
    if (ascending and lo_id < horizon) or (page.max_id is not None and page.max_id <= horizon):
        # The window starts (or lies wholly) below the horizon: the shards, by design.
        HOME_READS.labels("horizon").inc()
        return [i for i, _ in await select_posts(runtime, authors, page)]
    wanted = set(authors)
    chosen = [s for s, a in window.entries if a in wanted]
    while len(chosen) < page.limit and len(window.entries) == count:
        after = b"(" + (window.last or b"")
        if ascending:
            window = await read(hi, after, window.entries[-1][0])
        else:
            window = await read(after, lo, lo_id)
        if window is None or window is REBUILDING:
            return None
        horizon = max(horizon, window.horizon)
        chosen += [s for s, a in window.entries if a in wanted]
    chosen = [s for s in chosen if s >= horizon]  # in case the horizon rose meanwhile
    big = (await load_big(runtime)) & wanted - {viewer_id}
    if big:
        since = max(page.since_id or 0, horizon - 1)
        above = Page(page.limit, page.max_id, since or None, page.min_id)
        chosen += [s for s, _ in await select_posts(runtime, big, above)]
    ids = sorted(set(chosen), reverse=not ascending)[: page.limit]
    if not ascending and len(ids) < page.limit and lo_id < horizon:
        # The page reaches below the horizon, where the feed may lack posts.
        below = Page(page.limit - len(ids), max_id=horizon, since_id=page.since_id)
        ids += [s for s, _ in await select_posts(runtime, authors, below)]
    HOME_READS.labels(source).inc()
    return page.in_order(ids)
