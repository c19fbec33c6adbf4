"""Every error leaves as JSON ``{"error": "..."}`` with the right status, never a traceback."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from photogram.errors import DatabaseUnavailableError
from photogram.media.stores import StoreUnavailableError


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, for people.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The request is malformed.",
        401: "No valid access token.",
        403: "The token or account may not do this.",
        404: "Not found, or not visible to this account.",
        422: "A parameter is invalid.",
        429: "Too many requests.",
        503: "A database is unavailable.",
    }.items()
}


def error_response(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class ApiError(Exception):
    """An error with more than a message: ``{"error": message, **extra}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def invalid(message: str) -> HTTPException:
    """A 422 for a parameter the client got wrong."""
    return HTTPException(422, message)


def not_found(message: str = "Record not found") -> ApiError:
    return ApiError(404, message)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _describe_validation(exc))

    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, **exc.extra)

    @app.exception_handler(DatabaseUnavailableError)
    async def _unavailable(_request: Request, exc: DatabaseUnavailableError) -> JSONResponse:
        return error_response(503, "a database is unavailable; try again shortly")

    @app.exception_handler(StoreUnavailableError)
    async def _store_unavailable(_request: Request, exc: StoreUnavailableError) -> JSONResponse:
        return error_response(503, "the media store is unavailable; try again shortly")
