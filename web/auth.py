"""Optional API tokens: when configured, each call needs one, and a job is visible only to its creator."""
from __future__ import annotations

import hashlib
import hmac

from flask import current_app, request

from .errors import ApiError


def current_owner() -> str | None:
    """The hash of the caller's token (None when tokens are off). Tokens come in headers only, never in a URL,
    where access logs, browser history and Referer headers would keep them."""
    tokens: tuple[str, ...] = current_app.extensions["pixelproof"].settings.api_tokens
    if not tokens:
        return None
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("X-API-Token", "")
    if not token:
        raise ApiError(401, "an API token is required: send 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    given = token.encode("utf-8", "surrogateescape")  # compare bytes: compare_digest refuses non-ASCII str
    if not any(hmac.compare_digest(given, t.encode()) for t in tokens):
        raise ApiError(403, "this API token is not valid")
    return hashlib.sha256(token.encode()).hexdigest()
