"""REST API. Handlers translate HTTP to the job functions in :mod:`web.jobs` and back."""
from __future__ import annotations

import csv
import io
import json
import logging
import time

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    request,
    stream_with_context,
    url_for,
)
from kombu.exceptions import OperationalError as BrokerError
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shared.logs import kv
from shared.models import DONE, ERROR, RESULT_FIELDS, ImageItem, Job, csv_cells
from shared.queue import enqueue_images
from shared.storage import TooLarge
from shared.thumbnails import rendition

from . import jobs
from .auth import current_owner
from .errors import ApiError
from .names import clean_filename
from .openapi import OPENAPI
from .watch import RECHECK_S, TooManyWaiting

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)

MAX_PAGE = 1000
MAX_WAIT_S = 30.0
RETRY_WAIT_S = 5


def services():
    return current_app.extensions["pixelproof"]


def db_session() -> Session:
    if "db_session" not in g:
        g.db_session = services().db.sessionmaker()
    return g.db_session


def _job_or_404(job_id: str, owner: str | None) -> Job:
    job = db_session().get(Job, job_id) if len(job_id) <= 32 else None
    if job is None or job.owner != owner:  # another token's job looks exactly like a missing one
        raise ApiError(404, f"no job with id {job_id!r}")
    return job


def _client_key(owner: str | None) -> str:
    """Who a limit counts against: the resolved token when tokens are on (never the raw header, which can be
    spelt many ways), else the client's address."""
    return f"token:{owner}" if owner else f"addr:{request.remote_addr or '?'}"


def _check_rate(owner: str | None) -> None:
    retry = services().limiter.check(_client_key(owner))
    if retry is not None:
        limit = services().settings.rate_limit_per_minute
        raise ApiError(429, f"too many upload requests: the limit is {limit} per minute; retry in {retry} s",
                       headers={"Retry-After": str(retry)})


def _store_uploads(job: Job, already: int) -> list[jobs.Upload]:
    """Stream every part to content-addressed storage. Any refusal rejects the whole request."""
    settings = services().settings
    files = request.files.getlist("files")
    if not files:
        raise ApiError(400, "no files: send one or more multipart fields named 'files'")
    if len(files) > settings.max_files_per_request:
        raise ApiError(413, f"{len(files)} files in one request; the limit is {settings.max_files_per_request}: "
                            "send the rest in further requests to POST /api/jobs/<id>/files")
    if already + len(files) > settings.max_files_per_job:
        raise ApiError(413, f"a job holds at most {settings.max_files_per_job} files "
                            f"(it has {already}, this request adds {len(files)})")
    uploads = []
    for f in files:
        name = clean_filename(f.filename)
        try:
            sha, size = services().storage.put_stream(f.stream, settings.max_file_bytes)
        except TooLarge as exc:
            raise ApiError(413, f"{name}: the file is larger than the limit of {exc.limit} bytes; "
                                "nothing from this request was added", filename=name, limit=exc.limit) from None
        uploads.append(jobs.Upload(filename=name, sha256=sha, size_bytes=size))
    return uploads


def _accept(job: Job, uploads: list[jobs.Upload], created: bool) -> Response:
    """Commit first, then enqueue: a worker never sees an id the database does not have."""
    session = db_session()
    ids = jobs.add_images(session, job, uploads)
    session.commit()
    log.info(kv(event="files_accepted", job_id=job.id, files=len(ids), created=created))
    try:
        enqueue_images(services().celery, ids, services().settings.batch_size)
    except (BrokerError, RedisError, OSError) as exc:
        log.error(kv(event="enqueue_failed", job_id=job.id, files=len(ids), reason=str(exc)))
        raise ApiError(503, "the job queue (Redis) is unreachable right now; your files are stored in job "
                            f"{job.id} and will be queued automatically when it is back",
                       headers={"Retry-After": "10"}, job=job.id) from None
    body = jobs.job_status(session, job)
    resp = jsonify(body)
    resp.status_code = 202
    resp.headers["Location"] = url_for("api.get_job", job_id=job.id)
    return resp


@api.post("/api/jobs")
def create_job():
    owner = current_owner()
    _check_rate(owner)
    job = Job(owner=owner)
    uploads = _store_uploads(job, 0)
    db_session().add(job)
    return _accept(job, uploads, created=True)


@api.post("/api/jobs/<job_id>/files")
def add_files(job_id: str):
    owner = current_owner()
    _check_rate(owner)
    job = _job_or_404(job_id, owner)
    uploads = _store_uploads(job, jobs.count_images(db_session(), job.id))
    return _accept(job, uploads, created=False)


@api.get("/api/jobs/<job_id>")
def get_job(job_id: str):
    """Plain poll, or long poll with ?wait=S&done=N: answer as soon as `done` differs from N.

    A long-poll sleeps until a worker's notice for this job (web.watch), holding no database connection, and
    takes one of a bounded number of waiting places: past the bound it is a 429 at once.
    """
    owner = current_owner()
    session = db_session()
    job = _job_or_404(job_id, owner)
    wait = min(_float_arg("wait", 0.0), MAX_WAIT_S)
    seen = request.args.get("done", type=int)
    body = jobs.job_status(session, job)
    if not wait > 0 or body["done"] != seen or body["status"] == "done":
        return jsonify(body)
    watcher = services().watcher
    try:
        with watcher.slot(_client_key(owner)), watcher.watching(job.id) as changed:
            deadline = time.monotonic() + wait
            while body["done"] == seen and body["status"] != "done":
                session.rollback()  # end the snapshot (and free the connection) while waiting
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                changed.wait(min(RECHECK_S, left))
                changed.clear()
                body = jobs.job_status(session, job)
    except TooManyWaiting as exc:
        raise ApiError(429, f"too many requests are waiting on jobs from {exc}; ask again in {RETRY_WAIT_S} s "
                            "(a request without ?wait= is always answered at once)",
                       headers={"Retry-After": str(RETRY_WAIT_S)}) from None
    return jsonify(body)


@api.get("/api/jobs/<job_id>/results")
def get_results(job_id: str):
    owner = current_owner()
    job = _job_or_404(job_id, owner)
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "format must be 'json' or 'csv'")
    if request.args.get("download"):
        return _download(job.id, fmt)
    limit = int(_float_arg("limit", 100))
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"limit must be between 1 and {MAX_PAGE}")
    cursor = request.args.get("cursor", "0")
    if not cursor.isdigit():
        raise ApiError(400, "cursor must be the next_cursor value of the previous page")
    items, next_id = jobs.results_page(db_session(), job.id, int(cursor), limit)
    if fmt == "csv":
        resp = Response(_csv(items), mimetype="text/csv")
        if next_id is not None:
            resp.headers["X-Next-Cursor"] = str(next_id)
        return resp
    return jsonify({"job_id": job.id, "items": items, "next_cursor": str(next_id) if next_id is not None else None})


def _download(job_id: str, fmt: str) -> Response:
    db = services().db

    def generate():
        with db.session() as s:
            rows = jobs.iter_results(s, job_id)
            if fmt == "csv":
                yield _csv([], header=True)
                for row in rows:
                    yield _csv([row], header=False)
            else:
                yield '{"job_id": ' + json.dumps(job_id) + ', "items": ['
                for i, row in enumerate(rows):
                    yield ("," if i else "") + json.dumps(row)
                yield "]}"

    mimetype = "text/csv" if fmt == "csv" else "application/json"
    resp = Response(stream_with_context(generate()), mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="pixelproof-{job_id}.{fmt}"'
    return resp


def _csv(items: list[dict], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(csv_cells(i) for i in items)
    return buf.getvalue()


@api.get("/api/jobs/<job_id>/images/<int:image_id>/thumbnail")
def thumbnail(job_id: str, image_id: int):
    """The PNG the worker made when it classified the image: the web never decodes an upload."""
    owner = current_owner()
    job = _job_or_404(job_id, owner)
    item = db_session().scalar(select(ImageItem).where(ImageItem.id == image_id, ImageItem.job_id == job.id))
    if item is None:
        raise ApiError(404, f"job {job_id} has no image {image_id}")
    size = int(_float_arg("size", 96))
    if not 16 <= size <= 512:
        raise ApiError(400, "size must be between 16 and 512 pixels")
    if item.status == ERROR:
        raise ApiError(422, f"no thumbnail: {item.error}")
    path = services().storage.thumbnail_path(item.sha256, rendition(size))
    try:
        png = path.read_bytes()
    except FileNotFoundError:
        if item.status != DONE:
            raise ApiError(404, "no thumbnail yet: it is made when the image is classified") from None
        raise ApiError(404, "the stored thumbnail is missing") from None
    resp = Response(png, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, max-age=86400"
    return resp


@api.get("/healthz")
def healthz():
    checks = {}
    try:
        db_session().execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, don't raise: this endpoint exists to say what is down
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        Redis.from_url(services().settings.broker_url(), socket_timeout=2, socket_connect_timeout=2).ping()
        checks["broker"] = "ok"
    except (RedisError, OSError) as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if healthy else "degraded", "checks": checks}), 200 if healthy else 503


@api.get("/api/openapi.json")
def openapi():
    return jsonify(OPENAPI)


def _float_arg(name: str, default: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {raw!r}") from None
