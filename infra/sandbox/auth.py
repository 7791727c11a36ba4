"""Session tokens and rate limits of the sandbox gateway.

Tokens are real JWTs (HS256, signed with a per-gateway random secret; claims ``sub``, ``jti``,
``iat``, ``exp`` in epoch seconds) so that clients which read ``exp`` to schedule a refresh work,
but validity is decided by the server's own table: a token is valid until its ``exp`` (wall-clock
time, not replay time), :meth:`TokenStore.revoke` (``Auth/logout``) or
:meth:`TokenStore.expire_all` (the ``expire_tokens`` fault). Tokens are secrets: never log them.

Rate limits are sliding windows per key (the bearer token, or the client address for calls
without one): at most ``limit`` accepted requests in any ``window_s`` seconds; refused requests do
not count.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenStore:
    """Issues and checks session tokens.

    Args:
        username: the ``sub`` claim.
        ttl_s: lifetime of a token in seconds (the gateway documents 24 h).
    """

    def __init__(self, username: str, ttl_s: float) -> None:
        self._username = username
        self._ttl_s = ttl_s
        self._secret = secrets.token_bytes(32)
        self._expiry: dict[str, float] = {}  # token -> wall-clock expiry (epoch s)
        self._lock = threading.Lock()

    def issue(self) -> str:
        """A new token valid for ``ttl_s`` seconds."""
        now = time.time()
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": self._username, "jti": uuid.uuid4().hex, "iat": int(now), "exp": int(now + self._ttl_s)}
        body = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self._secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
        token = f"{header}.{body}.{signature}"
        with self._lock:
            self._expiry[token] = now + self._ttl_s
        return token

    def valid(self, token: str | None) -> bool:
        """True if ``token`` was issued here and is neither expired nor revoked."""
        with self._lock:
            expiry = self._expiry.get(token) if token else None
        return expiry is not None and time.time() < expiry

    def revoke(self, token: str) -> None:
        """Invalidate one token (logout)."""
        with self._lock:
            self._expiry.pop(token, None)

    def expire_all(self) -> None:
        """Invalidate every token issued so far."""
        with self._lock:
            self._expiry.clear()


class RateLimiter:
    """Sliding-window limit: at most ``limit`` requests per key in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count a request for ``key`` and return True, or return False (not counted) if over the limit."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, None if absent or another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
