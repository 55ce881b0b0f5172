"""Idempotency-Key: a client that retries a request after a timeout gets the job the first one made, and no
file is added twice (the key is stored with the images it brought, in one transaction: web.api._accept)."""
from __future__ import annotations

import logging

from flask import Response, jsonify, request, url_for

from shared import jobs
from shared.logs import kv
from shared.models import IdempotencyKey, Job

from .context import db_session, services
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
    """The request as its key remembers it: what it did, its body's length and its multipart boundary's, so
    that a key sent again with other files is refused instead of answered with the first upload's job (the
    IETF Idempotency-Key draft: a key reused with a different payload is a 422). A retry sends the same parts;
    only its boundary may differ (:func:`same_parts`)."""
    length = request.content_length
    if length is None:
        return what
    return f"{what} bytes={length}+{len(request.mimetype_params.get('boundary', ''))}"


def same_parts(then: str, now: str, most_parts: int) -> bool:
    """Whether two bodies, each "<length>+<boundary length>", can hold the same parts. The boundary appears
    once before each part and once at the end, so bodies of the same parts under boundaries of lengths b1 and
    b2 differ in length by exactly (parts + 1) * (b2 - b1)."""
    (size, _, boundary), (size_now, _, boundary_now) = then.partition("+"), now.partition("+")
    longer, wider = int(size_now) - int(size), int(boundary_now) - int(boundary)
    if wider == 0:
        return longer == 0
    marks, rest = divmod(longer, wider)

    def room(length: int, width: int) -> bool:  # "--b\r\n" and at least a bare part's 43 bytes per part
        return marks * (width + 4) + (marks - 1) * 43 <= length

    return (rest == 0 and 2 <= marks <= most_parts + 1 and room(int(size), int(boundary))
            and room(int(size_now), int(boundary_now)))


def earlier_answer(owner: str | None, key: str | None, what: str) -> Response | None:
    """The answer a request with this Idempotency-Key already got: its job, as it is now."""
    if key is None:
        return None
    row = db_session().get(IdempotencyKey, (owner or "", key))
    if row is None:
        return None
    (did, _, then), (does, _, now) = row.request.partition(" bytes="), remembered_as(what).partition(" bytes=")
    if did != does:
        raise ApiError(422, f"this {IDEMPOTENCY_HEADER} was already used for another request ({did}); "
                            "use a new key for each distinct request")
    if then and now and not same_parts(then, now, services().settings.max_files_per_request):
        raise ApiError(422, f"this {IDEMPOTENCY_HEADER} was already used for another upload (a body of "
                            f"{then.partition('+')[0]} bytes; this one has {now.partition('+')[0]}); a retry must "
                            "send the same files, and other files need a new key")  # keys from before lengths: no check
    job = db_session().get(Job, row.job_id)
    resp = jsonify(jobs.job_status(db_session(), job))
    resp.status_code = 202
    resp.headers["Location"] = url_for("api.get_job", job_id=job.id)
    resp.headers["Idempotent-Replayed"] = "true"
    log.info(kv(event="idempotent_replay", job_id=job.id, request=what))
    return resp
