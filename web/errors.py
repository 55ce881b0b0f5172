"""Every error leaves the API as JSON with a message a person can act on."""
from __future__ import annotations

from flask import Flask, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from shared.logs import kv


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers or {}, extra


DISK_FULL = ("disk is full", "no space left", "disk full", "could not extend file")

FRIENDLY = {
    413: "the request is too large: split the upload into several requests (see README, Limits)",
    405: "this method is not allowed on this URL",
    404: "no such resource",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        resp = jsonify({"error": err.message, "status": err.status, **err.extra})
        resp.status_code = err.status
        resp.headers.update(err.headers)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        if not request.path.startswith("/api") and err.code == 404:
            return err
        message = FRIENDLY.get(err.code, err.description)
        if err.code == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            message = f"{message}; the limit is {limit / 2**20:g} MiB ({limit} bytes) per request"
        resp = jsonify({"error": message, "status": err.code})
        resp.status_code = err.code or 500
        for name, value in err.get_headers():  # e.g. a 405's Allow, which RFC 9110 requires
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp

    @app.errorhandler(OperationalError)
    def _database_down(err: OperationalError):
        reason = str(err.orig)
        if any(s in reason.lower() for s in DISK_FULL):  # SQLite "database or disk is full", PostgreSQL ENOSPC
            app.logger.error(kv(event="database_full", path=request.path, reason=reason))
            resp = jsonify({"error": "the server's disk is full: nothing was changed; retry when space has been "
                                     "freed", "status": 507})
            resp.status_code = 507
            resp.headers["Retry-After"] = "60"
            return resp
        app.logger.error(kv(event="database_unreachable", path=request.path, reason=reason))
        resp = jsonify({"error": "the database is unreachable right now; nothing was changed, retry shortly",
                        "status": 503})
        resp.status_code = 503
        resp.headers["Retry-After"] = "10"
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        app.logger.exception(kv(event="unhandled_error", path=request.path, error=type(err).__name__))
        resp = jsonify({"error": "internal error; the incident was logged", "status": 500})
        resp.status_code = 500
        return resp
