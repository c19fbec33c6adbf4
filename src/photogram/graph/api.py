"""Follow-graph endpoints: follows, blocks, mutes, relationships, follow requests."""

from __future__ import annotations

from fastapi import APIRouter

api = APIRouter(tags=["graph"])
