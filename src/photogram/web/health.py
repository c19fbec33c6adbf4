"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from photogram.db.router import Router
from photogram.web.errors import error_response

api = APIRouter()


@api.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is up. Says nothing of the databases, so a database outage
    does not make an orchestrator restart healthy app servers."""
    return {"status": "ok"}


@api.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """Ready for traffic only when the global and every physical shard database answers."""
    router: Router = request.app.state.router
    answers = await router.ping()
    failing = {name: why for name, why in answers.items() if why is not None}
    if failing:
        names = ", ".join(sorted(failing))
        return error_response(503, f"database unavailable: {names}", databases=failing)
    return JSONResponse({"status": "ready", "databases": sorted(answers)})
