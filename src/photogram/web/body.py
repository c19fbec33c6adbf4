"""Request bodies as Mastodon clients send them: JSON, a form, or multipart.

Mastodon accepts the same parameters in any of these (and in the query string), and
client libraries differ in what they send, so each endpoint declares one pydantic model
and ``form_or_json`` fills it from whatever arrived. Array parameters follow Rails'
``name[]`` convention in forms and query strings.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Message

M = TypeVar("M", bound=BaseModel)

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _merge(target: dict[str, Any], items: list[tuple[str, Any]]) -> None:
    for key, value in items:
        if key.endswith("[]"):
            target.setdefault(key[:-2], []).append(value)
        elif isinstance(target.get(key), list):
            target[key].append(value)
        else:
            target[key] = value


async def read_params(request: Request) -> tuple[dict[str, Any], dict[str, UploadFile]]:
    """Every parameter of the request (query string, then body), and any uploaded files."""
    params: dict[str, Any] = {}
    files: dict[str, UploadFile] = {}
    _merge(params, list(request.query_params.multi_items()))
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in JSON_TYPES:
        raw = await request.body()
        if raw.strip():
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise HTTPException(400, "The request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise HTTPException(422, "The request body must be a JSON object")
            params.update(data)
    elif ctype in FORM_TYPES:
        try:
            form = await request.form()
        except Exception:  # malformed multipart: the parser's own errors vary
            raise HTTPException(400, "The request body is not a valid form") from None
        fields: list[tuple[str, Any]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[key] = value
            else:
                fields.append((key, value))
        _merge(params, fields)
    return params, files


class BodyTooLargeError(Exception):
    """The request body went past the limit; reading stopped there."""


async def read_params_within(
    request: Request, limit: int
) -> tuple[dict[str, Any], dict[str, UploadFile]]:
    """``read_params`` under a hard limit on the body's size.

    A declared Content-Length over the limit is refused before reading; otherwise reading
    stops as soon as the limit is passed, so an endless upload costs neither memory nor
    disk. Uploaded files beyond a megabyte wait in temporary files, not in memory.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    received = 0

    async def bounded_receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLargeError
        return message

    try:
        return await read_params(Request(request.scope, bounded_receive))
    except (BodyTooLargeError, HTTPException):
        if received > limit:  # the form parser turns our error into a 400 of its own
            raise BodyTooLargeError from None
        raise


def validate(model: type[M], params: dict[str, Any]) -> M:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def form_or_json(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency giving ``model`` filled from the request's parameters, or a 422."""

    async def dependency(request: Request) -> M:
        params, _files = await read_params(request)
        return validate(model, params)

    return dependency


def body_openapi(model: type[BaseModel], *, multipart: bool = False) -> dict[str, Any]:
    """``openapi_extra`` describing ``model`` as the JSON and form body of an operation."""
    schema = model.model_json_schema()
    content: dict[str, Any] = {
        "application/json": {"schema": schema},
        "application/x-www-form-urlencoded": {"schema": schema},
    }
    if multipart:
        content["multipart/form-data"] = {"schema": schema}
    return {"requestBody": {"required": False, "content": content}}
