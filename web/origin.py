"""Cross-site requests may not change anything: a page on another origin could otherwise create jobs with a
plain form POST (CSRF), which a browser sends without asking, cookies or not.

Browsers name the page that sent a request in `Origin` (and `Sec-Fetch-Site`); the CLI and scripts send
neither and are unaffected.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, request

from .errors import ApiError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def refuse_cross_site_writes(app: Flask) -> None:
    @app.before_request
    def _same_origin_only():
        if request.method in SAFE_METHODS:
            return None
        origin = request.headers.get("Origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host):
            raise ApiError(403, f"cross-site request refused: a page on {origin} may not change jobs here")
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise ApiError(403, "cross-site request refused: a page on another site may not change jobs here")
        return None
