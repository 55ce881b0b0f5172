"""Security headers on every response: the page runs only its own script and style, and nothing frames it.

A handful of fixed headers, so written here rather than pulling in a middleware (flask-talisman) whose main
feature, forcing HTTPS, is wrong for a service that listens on loopback by default.
"""
from __future__ import annotations

from flask import Flask, Response

# Scripts, styles, fetches only from this origin; thumbnails arrive as blob: URLs made from authorised fetches.
# Inline style attributes and <script> blocks are refused; the page sets styles through the CSSOM.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def add_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(resp: Response) -> Response:
        for name, value in HEADERS.items():
            resp.headers.setdefault(name, value)
        return resp
