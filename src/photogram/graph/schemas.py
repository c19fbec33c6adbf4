"""The Relationship entity and the request bodies of the graph endpoints."""

from __future__ import annotations

from pydantic import BaseModel, Field

from photogram.graph.queries import ViewerEdges


class FollowForm(BaseModel):
    reblogs: bool | None = Field(
        default=None, description="Show this account's boosts in the home timeline (default true)."
    )
    notify: bool | None = Field(
        default=None, description="Be notified when this account posts (default false)."
    )
    languages: list[str] | None = Field(
        default=None, description="Accepted for compatibility; every language is shown."
    )


class MuteForm(BaseModel):
    notifications: bool = Field(default=True, description="Mute notifications from them too.")
    duration: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Seconds until the mute ends; 0: never."
    )


class Relationship(BaseModel):
    """What the viewer and one other account are to each other (viewer -> ``id``)."""

    id: str
    following: bool
    showing_reblogs: bool
    notifying: bool
    languages: list[str] | None = None
    followed_by: bool
    blocking: bool
    blocked_by: bool
    muting: bool
    muting_notifications: bool
    requested: bool
    requested_by: bool
    domain_blocking: bool = False
    endorsed: bool = False
    note: str = ""


def render_relationship(target_id: int, edges: ViewerEdges) -> Relationship:
    follow = edges.following.get(target_id)
    requested = target_id in edges.requested
    muting = target_id in edges.muting
    return Relationship(
        id=str(target_id),
        following=follow is not None,
        # A pending request carries no options of its own: it becomes a follow with the
        # defaults (boosts shown), as Mastodon reports it.
        showing_reblogs=follow[0] if follow is not None else requested,
        notifying=follow[1] if follow is not None else False,
        followed_by=target_id in edges.followed_by,
        blocking=target_id in edges.blocking,
        blocked_by=target_id in edges.blocked_by,
        muting=muting,
        muting_notifications=muting and edges.muting[target_id],
        requested=requested,
        requested_by=target_id in edges.requested_by,
    )
