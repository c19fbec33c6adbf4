"""Choosing a home page's IDs: muted accounts are left out on both paths (so a page is
full), until the mute lapses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from photogram.cache import relationship_key
from photogram.db.metadata import mutes
from photogram.graph import actions as graph
from photogram.web.paging import Page
from tests.conftest import MakeSettings
from tests.feeds.support import make_accounts, new_post, open_runtime, pulled, pushed, traverse


async def test_muted_accounts_are_not_chosen_until_the_mute_lapses(
    make_settings: MakeSettings, redis_url: str
) -> None:
    runtime = await open_runtime(await make_settings(redis_url=redis_url))
    try:
        viewer, loud, quiet = await make_accounts(runtime, [0, 5, 9])
        for other in (loud, quiet):
            target = await graph.check_follow(runtime, viewer, str(other))
            await graph.do_follow(runtime, viewer, target, None, None)
        await runtime.relay.sweep()
        quiet_posts = [await new_post(runtime, quiet) for _ in range(3)]
        loud_posts = [await new_post(runtime, loud) for _ in range(3)]

        await graph.do_mute(runtime, viewer, loud, True, 3600)
        for fetch in (pushed(runtime, viewer), pulled(runtime, viewer)):
            # A full page of the quiet one's, not a page of muted posts left empty.
            assert await fetch(Page(3)) == quiet_posts[::-1]

        # The mute has lapsed (written behind the app's back, so its cache key goes too).
        async with runtime.router.begin_for(viewer) as conn:
            await conn.execute(
                update(mutes)
                .where(mutes.c.account_id == viewer)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        await runtime.invalidate([relationship_key(viewer, loud)])
        expected = [loud_posts[::-1], quiet_posts[::-1]]
        assert await traverse(pushed(runtime, viewer), 3) == expected
        assert await traverse(pulled(runtime, viewer), 3) == expected
    finally:
        await runtime.close()
