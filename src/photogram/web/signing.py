"""Signed, expiring URLs for media: HMAC-SHA256 over the path and an expiry time.

The expiry is rounded up to a whole window, so every URL made for one object within a
window is the same string and browsers and CDNs can cache it; a URL stays valid for at
least ``ttl`` and at most ``ttl`` plus one window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

#: Expiries are rounded up to a multiple of this many seconds.
WINDOW_SECONDS = 3600


def _key(secret: str) -> bytes:
    # A key of its own, so a media signature can never stand in for any other HMAC.
    return hmac.new(secret.encode(), b"photogram media url", hashlib.sha256).digest()


def _signature(secret: str, path: str, expires: int) -> str:
    mac = hmac.new(_key(secret), f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def sign(secret: str, path: str, ttl: int, now: float | None = None) -> str:
    """``path?expires=…&signature=…``, valid for at least ``ttl`` seconds."""
    moment = time.time() if now is None else now
    expires = -(-int(moment + ttl) // WINDOW_SECONDS) * WINDOW_SECONDS
    return f"{path}?expires={expires}&signature={_signature(secret, path, expires)}"


def verify(
    secret: str, path: str, expires: str | None, signature: str | None, now: float | None = None
) -> bool:
    """Whether a URL's signature is right for ``path`` and has not expired."""
    if not expires or not signature or not expires.isdigit() or len(expires) > 12:
        return False
    moment = time.time() if now is None else now
    if int(expires) < moment:
        return False
    expected = _signature(secret, path, int(expires))
    return hmac.compare_digest(expected.encode(), signature.encode())
