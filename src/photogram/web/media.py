"""Serving stored media (avatars) and the default images."""

from __future__ import annotations

from fastapi import APIRouter

api = APIRouter(tags=["media"])
