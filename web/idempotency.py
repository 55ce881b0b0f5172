"""Idempotency-Key: a client that retries a request after a timeout gets the job the first one made, and no
file is added twice (the key is stored with the images it brought, in one transaction: web.api._accept)."""
from __future__ import annotations

import logging

from flask import Response, jsonify, request, url_for

from shared import jobs
from shared.logs import kv
from shared.models import IdempotencyKey, Job

from .context import db_session
from .errors import ApiError

log = logging.getLogger(__name__)
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise ApiError(400, f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters (a UUID is typical)")
    return key


def remembered_as(what: str) -> str:
    """The request as its key remembers it: what it did, and its body's length, so that a key sent again with
    another upload is refused instead of answered with the first one's job (the IETF Idempotency-Key draft:
    a key reused with a different payload is a 422). A retry sends the same body, so the same length."""
    length = request.content_length
    return what if length is None else f"{what} bytes={length}"


def earlier_answer(owner: str | None, key: str | None, what: str) -> Response | None:
    """The answer a request with this Idempotency-Key already got: its job, as it is now."""
    if key is None:
        return None
    row = db_session().get(IdempotencyKey, (owner or "", key))
    if row is None:
        return None
    (did, _, size), (does, _, now) = row.request.partition(" bytes="), remembered_as(what).partition(" bytes=")
    if did != does:
        raise ApiError(422, f"this {IDEMPOTENCY_HEADER} was already used for another request ({did}); "
                            "use a new key for each distinct request")
    if size and now and size != now:  # a key remembered before lengths were has none to compare
        raise ApiError(422, f"this {IDEMPOTENCY_HEADER} was already used for another upload ({size} bytes; this one "
                            f"has {now}); a retry must send the same files, and other files need a new key")
    job = db_session().get(Job, row.job_id)
    resp = jsonify(jobs.job_status(db_session(), job))
    resp.status_code = 202
    resp.headers["Location"] = url_for("api.get_job", job_id=job.id)
    resp.headers["Idempotent-Replayed"] = "true"
    log.info(kv(event="idempotent_replay", job_id=job.id, request=what))
    return resp
