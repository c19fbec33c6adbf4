"""The server-rendered OAuth sign-in and consent page (``/oauth/authorize``)."""

from __future__ import annotations

from fastapi import APIRouter

api = APIRouter(tags=["oauth"])
