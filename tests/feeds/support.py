"""What the feeds tests share: an instance with feeds on (its background work run at once,
or held for the test to deliver late), accounts and posts made through the real actions,
and whole home timelines read page by page through either path."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY
from sqlalchemy import insert, select

from photogram.db.ids import next_id, shard_of
from photogram.db.metadata import accounts, media_attachments
from photogram.db.router import Router
from photogram.feeds.store import Window, pack_id
from photogram.media.stores import open_stores
from photogram.posts import timelines
from photogram.posts.actions import Draft, do_post
from photogram.runtime import Runtime
from photogram.settings import Settings
from photogram.tasks.outbox import Relay
from photogram.web.paging import Page
from tests.api import FAST
from tests.conftest import init_test_cluster
from tests.relay import LateRelay


async def open_runtime(settings: Settings, *, late: bool = False) -> Runtime:
    """A new instance (16 logical shards) on ``settings``; with ``late``, a ``LateRelay``."""
    settings = settings.model_copy(update=FAST)
    await init_test_cluster(settings, 16)
    router = await Router.open(settings)
    relay = LateRelay(router) if late else Relay(router)
    return Runtime(settings=settings, router=router, relay=relay, stores=open_stores(settings))


async def settle(runtime: Runtime) -> None:
    """Everything pending, and what it queues, run now."""
    relay = runtime.relay
    if isinstance(relay, LateRelay):
        await relay.deliver_all()
    while await relay.sweep():
        pass
    if isinstance(relay, LateRelay):
        relay.held.clear()


async def make_accounts(runtime: Runtime, shards: list[int], *, locked: int = -1) -> list[int]:
    """One account on each of ``shards`` (the ``locked``-th one locked)."""
    made = []
    for i, shard in enumerate(shards):
        name = f"f{uuid.uuid4().hex[:12]}"
        async with runtime.router.begin(shard) as conn:
            account_id = await conn.scalar(
                insert(accounts)
                .values(
                    id=next_id(shard),
                    username=name,
                    email=f"{name}@example.com",
                    password_hash="-",
                    locked=(i == locked),
                )
                .returning(accounts.c.id)
            )
        made.append(int(account_id))
    return made


async def new_post(runtime: Runtime, author: int, visibility: str | None = None) -> int:
    """A post with one photo (its row written as processing would leave it), through
    ``do_post``."""
    shard = shard_of(author)
    async with runtime.router.begin(shard) as conn:
        media_id = await conn.scalar(
            insert(media_attachments)
            .values(id=next_id(shard), account_id=author, state="ready")
            .returning(media_attachments.c.id)
        )
    draft = Draft(
        text="",
        media_ids=[int(media_id)],
        in_reply_to_id=None,
        sensitive=False,
        spoiler_text="",
        visibility=visibility,
        language=None,
    )
    return await do_post(runtime, author, draft, None, None)


Fetch = Callable[[Page], Awaitable[list[int]]]


async def traverse(fetch: Fetch, limit: int) -> list[list[int]]:
    """A whole timeline, page by page, each next page below the last ID looked at (what
    the Link header's ``next`` says)."""
    pages: list[list[int]] = []
    page = Page(limit)
    while True:
        ids = await fetch(page)
        if not ids:
            return pages
        pages.append(ids)
        page = Page(limit, max_id=ids[-1])
        assert len(pages) < 1000, "paging goes round in circles"


def pushed(runtime: Runtime, viewer: int) -> Fetch:
    async def fetch(page: Page) -> list[int]:
        assert runtime.feeds is not None
        return await timelines.home_ids(runtime, viewer, page)

    return fetch


def pulled(runtime: Runtime, viewer: int) -> Fetch:
    async def fetch(page: Page) -> list[int]:
        return await timelines.pulled_home_ids(runtime, viewer, page)

    return fetch


async def feed_of(runtime: Runtime, account: int) -> Window | None:
    """Everything in the account's feed, newest first (None: it has none)."""
    assert runtime.feeds is not None
    return await runtime.feeds.read(
        account, hi=b"+", lo=b"[" + pack_id(1), lo_id=1, count=10_000, newest_first=True
    )


async def followers_count(runtime: Runtime, account: int) -> int:
    async with runtime.router.connect_for(account) as conn:
        return int(
            await conn.scalar(select(accounts.c.followers_count).where(accounts.c.id == account))
            or 0
        )


def home_reads(*sources: str) -> float:
    """How many home pages (with feeds on) came from these sources so far."""
    return sum(
        REGISTRY.get_sample_value("photogram_home_reads_total", {"source": s}) or 0.0
        for s in sources
    )
