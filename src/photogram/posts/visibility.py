"""Who may see a status. One rule, used by every read path (a status, a thread, every
timeline, likes lists, notifications), so no path can show what another would hide.

- A block, either way, hides the blocked account's statuses, comments and likes, and
  every comment on a post by an account hidden that way.
- ``private`` (followers only) reaches the post owner's approved followers; so does
  everything a locked (private) account posts, whatever visibility it was given — as on
  Instagram, making an account private hides its earlier posts from non-followers too.
- A comment is seen by whoever sees its post (a comment's visibility is its post's,
  or narrower).
- Muted accounts vanish from the muter's timelines (not from threads they open).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from photogram.graph.queries import load_relations

if TYPE_CHECKING:
    from photogram.runtime import Runtime


@dataclass
class Lens:
    """What one viewer's relationships say about a set of accounts."""

    viewer_id: int | None
    hidden: set[int] = field(default_factory=set)  # blocked either way
    following: set[int] = field(default_factory=set)
    #: account -> whether its notifications are hidden too
    muted: dict[int, bool] = field(default_factory=dict)


async def lens_for(runtime: Runtime, viewer_id: int | None, accounts: Iterable[int]) -> Lens:
    """The viewer's blocks, follows and mutes among ``accounts``: the viewer's relations
    (``graph.queries.load_relations``: the cache, else the viewer's own shard, where the
    mirrors keep the other side's blocks)."""
    lens = Lens(viewer_id)
    wanted = sorted({a for a in accounts if a != viewer_id})
    if viewer_id is None or not wanted:
        return lens
    now = datetime.now(UTC)
    for target, relation in (await load_relations(runtime, viewer_id, wanted)).items():
        if relation.blocking or relation.blocked_by:
            lens.hidden.add(target)
        if relation.following is not None:
            lens.following.add(target)
        muted = relation.muted(now)
        if muted is not None:
            lens.muted[target] = muted
    return lens


def effective_visibility(status: Any, owner: Any) -> str:
    """The visibility a status is shown with: private whenever its post's owner is locked."""
    return "private" if owner is not None and owner.locked else str(status.visibility)


def can_see(lens: Lens, status: Any, owner: Any) -> bool:
    """Whether ``lens.viewer_id`` may see ``status``; ``owner`` is its post owner's account
    row (None if that account is gone, which hides the status)."""
    if owner is None:
        return False
    viewer = lens.viewer_id
    if viewer == status.account_id:
        return True
    involved = (status.account_id, status.post_account_id, status.in_reply_to_account_id)
    if any(a in lens.hidden for a in involved if a is not None):
        return False
    if effective_visibility(status, owner) == "private":
        return viewer is not None and (
            viewer == status.post_account_id or status.post_account_id in lens.following
        )
    return True


def visible(lens: Lens, rows: Iterable[Any], owners: Mapping[int, Any]) -> list[Any]:
    return [r for r in rows if can_see(lens, r, owners.get(r.post_account_id))]
