"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from photogram.web.deps import RuntimeDep
from photogram.web.errors import error_response

api = APIRouter()


@api.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is up. Says nothing of the databases, so a database outage
    does not make an orchestrator restart healthy app servers."""
    return {"status": "ok"}


@api.get("/readyz", include_in_schema=False)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready for traffic only when the global and every physical shard database answers."""
    answers = await runtime.router.ping()
    failing = {name: why for name, why in answers.items() if why is not None}
    if failing:
        names = ", ".join(sorted(failing))
        return error_response(503, f"database unavailable: {names}", databases=failing)
    return JSONResponse({"status": "ready", "databases": sorted(answers)})
