"""What an operator sees: request metrics per route, database time per shard, and logs whose
lines carry the ID of the request they belong to — in the request, and in every task it
queued, wherever that runs (docs/observability.md).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

#: The request this code runs for (an HTTP request, or the request that queued a task).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
#: A client or proxy may bring its own request ID (nginx's $request_id, say) if it looks sane.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
#: The execution option that names the logical shard a connection is for.
SHARD_OPTION = "photogram_shard"

log = logging.getLogger("photogram.access")

REQUESTS = Counter(
    "photogram_http_requests",
    "HTTP requests answered, by method, route (the path template) and status code.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "photogram_http_request_seconds",
    "Time to answer an HTTP request, by method and route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_SECONDS = Counter(
    "photogram_db_seconds",
    "Time spent in database statements, by physical database and logical shard "
    "(shard 'global' for the global database, 'none' for work outside a shard).",
    ["database", "shard"],
)
DB_STATEMENTS = Counter(
    "photogram_db_statements",
    "Database statements run, by database and shard.",
    ["database", "shard"],
)
DB_STATEMENT_SECONDS = Histogram(
    "photogram_db_statement_seconds",
    "Time of one database statement, by physical database.",
    ["database"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)


def new_request_id() -> str:
    return secrets.token_hex(8)


# --- HTTP ----------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class Observe:
    """ASGI middleware: a request ID for every request (``X-Request-Id``, in and out), its
    metrics by route, and one structured access log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_ID.fullmatch(given) else new_request_id()
        token = REQUEST_ID.set(request_id)
        status = 500
        started = time.perf_counter()

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or ())
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            seconds = time.perf_counter() - started
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(method, route, str(status)).inc()
            REQUEST_SECONDS.labels(method, route).observe(seconds)
            log.info(
                "%s %s %s",
                method,
                scope.get("path", ""),
                status,
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
            REQUEST_ID.reset(token)


# --- the database --------------------------------------------------------------------------------


def instrument_engine(engine: AsyncEngine, database: str) -> None:
    """Count every statement's time against ``database`` and the shard its connection is for."""
    sync = engine.sync_engine

    @event.listens_for(sync, "before_cursor_execute")
    def _before(
        conn: Any, _cursor: Any, _stmt: Any, _params: Any, context: Any, _many: Any
    ) -> None:
        conn.info.setdefault("photogram_started", []).append(time.perf_counter())

    @event.listens_for(sync, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, _stmt: Any, _params: Any, context: Any, _many: Any) -> None:
        stack = conn.info.get("photogram_started")
        if not stack:
            return
        seconds = time.perf_counter() - stack.pop()
        shard = conn.get_execution_options().get(SHARD_OPTION)
        label = str(shard) if shard is not None else "global" if database == "global" else "none"
        DB_SECONDS.labels(database, label).inc(seconds)
        DB_STATEMENTS.labels(database, label).inc()
        DB_STATEMENT_SECONDS.labels(database).observe(seconds)


# --- logs ----------------------------------------------------------------------------------------

#: LogRecord attributes that are not extra fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
#: … and those not worth a field: the request ID has its own, uvicorn's colours are noise.
_SKIPPED = _STANDARD | {"request_id", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request ID, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _SKIPPED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = getattr(record, "request_id", None) or REQUEST_ID.get() or "-"
        return super().format(record)


def configure_logging(log_format: str, level: str) -> None:
    """Send every log line (photogram's, uvicorn's, Celery's) to stderr in one format."""
    make_record = logging.getLogRecordFactory()

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        # The request ID as the line is logged (a handler may format it later, elsewhere).
        record = make_record(*args, **kwargs)
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(stamped)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "gunicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The access line comes from Observe, with the route and request ID: not uvicorn's.
    logging.getLogger("uvicorn.access").disabled = True
