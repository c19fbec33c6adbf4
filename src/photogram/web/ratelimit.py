"""Request rate limits per access token and per client address, with Mastodon's headers.

Fixed windows counted in this process. Behind a load balancer each app server counts
its own share, so the effective limit is per server; a shared counter belongs in Redis
once the cluster has one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from photogram.settings import Settings

EXEMPT = frozenset({"/healthz", "/readyz"})


@dataclass
class Window:
    limit: int
    seconds: int
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (window, n)
    _last_purge: int = 0

    def hit(self, key: str, now: float) -> tuple[int, int, int]:
        """Count a request; (limit, remaining, reset as Unix time)."""
        window = int(now // self.seconds)
        if window != self._last_purge:  # forget finished windows once per window
            self.counts = {k: v for k, v in self.counts.items() if v[0] == window}
            self._last_purge = window
        started, used = self.counts.get(key, (window, 0))
        used = used + 1 if started == window else 1
        self.counts[key] = (window, used)
        return self.limit, self.limit - used, (window + 1) * self.seconds


class RateLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        window = settings.rate_limit_window_seconds
        self.by_token = Window(settings.rate_limit_per_token, window)
        self.by_address = Window(settings.rate_limit_per_ip, window)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        now = time.time()
        client = scope.get("client")
        address = client[0] if client else "unknown"
        verdicts = [self.by_address.hit(address, now)]
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        if authorization.lower().startswith(b"bearer "):
            key = hashlib.sha256(authorization[7:].strip()).hexdigest()
            verdicts.append(self.by_token.hit(key, now))
        # Show the tightest budget; refuse if any is spent.
        limit, remaining, reset = min(verdicts, key=lambda v: v[1])
        headers = [
            (b"x-ratelimit-limit", str(limit).encode()),
            (b"x-ratelimit-remaining", str(max(remaining, 0)).encode()),
            (b"x-ratelimit-reset", datetime.fromtimestamp(reset, UTC).isoformat().encode()),
        ]
        if remaining < 0:
            body = b'{"error":"Too many requests"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(max(int(reset - now), 1)).encode()),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, with_headers)
