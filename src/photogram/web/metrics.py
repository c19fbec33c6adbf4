"""Prometheus metrics of this process, in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# Imported for their side effect: the cache and task counters exist (at zero) from the
# first scrape, whether or not anything has used them yet.
import photogram.cache.metrics
import photogram.media.metrics
import photogram.media.migration.metrics
import photogram.tasks.metrics  # noqa: F401

api = APIRouter()


@api.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
