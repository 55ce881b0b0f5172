"""REST API. Handlers translate HTTP to the job functions in :mod:`shared.jobs` and back."""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from datetime import datetime, timezone

from flask import (
    Blueprint,
    Response,
    jsonify,
    request,
    stream_with_context,
    url_for,
)
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from shared import jobs, webhooks
from shared.logs import kv
from shared.metrics import record
from shared.models import (
    DONE,
    ERROR,
    LABELS,
    RESULT_FIELDS,
    STATUSES,
    IdempotencyKey,
    ImageItem,
    Job,
    csv_cells,
)
from shared.names import MAX_NAME, search_text
from shared.queue import enqueue_images
from shared.thumbnails import rendition

from .auth import current_owner
from .context import (
    MAX_ID,
    client_key,
    db_session,
    flag_arg,
    image_or_404,
    int_arg,
    job_or_404,
    lock_job,
    number_arg,
    services,
    title_or_400,
)
from .errors import ApiError
from .idempotency import earlier_answer, idempotency_key, remembered_as
from .openapi import OPENAPI
from .uploads import StoredPart, boundary, discard, drop_spares, receive_files, settle
from .watch import RECHECK_S, TooManyWaiting

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)

MAX_PAGE = 1000
MAX_WAIT_S = 30.0
NEVER_SENT = datetime(2000, 1, 1, tzinfo=timezone.utc)  # touched_at of images whose task could not be sent
RETRY_WAIT_S = 5


def _check_rate(owner: str | None) -> None:
    retry = services().limiter.check(client_key(owner))
    if retry is not None:
        limit = services().settings.rate_limit_per_minute
        raise ApiError(429, f"too many upload requests: the limit is {limit} per minute; retry in {retry} s",
                       headers={"Retry-After": str(retry)})


def _store_uploads(already: int) -> list[StoredPart]:
    """Stream every part into content-addressed storage. Any refusal rejects the whole request."""
    settings = services().settings
    per_request, per_job = settings.max_files_per_request, settings.max_files_per_job

    def too_many(n: int) -> ApiError:
        if n > per_request:
            return ApiError(413, f"more than {per_request} files in one request: send the rest in further "
                                 "requests to POST /api/jobs/<id>/files; nothing from this request was added")
        return _job_full(already, n)

    return receive_files(request.stream, request.content_type, services().storage, settings.max_file_bytes,
                         min(per_request, max(0, per_job - already)), too_many)


def _job_full(already: int, adding: int) -> ApiError:
    limit = services().settings.max_files_per_job
    return ApiError(413, f"a job holds at most {limit} files (it has {already}, this request adds {adding}); "
                         "nothing from this request was added")


def _discard(parts: list[StoredPart]) -> None:
    """Remove the blobs this request created, unless a committed image refers to them: a concurrent request
    for the same bytes (a retried upload) may have found this request's blob and committed first."""
    drop_spares(parts)
    created = [p for p in parts if p.created]
    if not created:
        return
    try:
        with services().db.session() as s:
            held = set(s.scalars(select(ImageItem.sha256).where(ImageItem.sha256.in_({p.sha256 for p in created}))))
    except OperationalError:  # the database is what failed: keep the files rather than guess
        return
    discard(services().storage, [p for p in created if p.sha256 not in held])


def _refuse_if_cancelled(job: Job) -> None:
    if job.cancelled_at is not None:
        raise ApiError(409, f"job {job.id} was cancelled: start a new job for these files")


def _accept(job: Job, parts: list[StoredPart], created: bool, key: str | None = None) -> Response:
    """Commit first, then enqueue: a worker never sees an id the database does not have."""
    session = db_session()
    what = "create" if created else f"files:{job.id}"
    try:
        if not created:
            # Locked before counting, so concurrent requests adding to one job are counted one after the other
            # against its limit. New files make the job unfinished again: its webhook is due again when they are.
            lock_job(session, job, webhook_status=None)
            _refuse_if_cancelled(job)
            already = jobs.count_images(session, job.id)
            if already + len(parts) > services().settings.max_files_per_job:
                raise _job_full(already, len(parts))
        uploads = [jobs.Upload(filename=p.filename, sha256=p.sha256, size_bytes=p.size_bytes) for p in parts]
        ids = jobs.add_images(session, job, uploads)
        if key is not None:
            session.add(IdempotencyKey(owner=job.owner or "", key=key, request=remembered_as(what), job_id=job.id))
        session.commit()
    except IntegrityError:
        # The same Idempotency-Key committed by a concurrent twin of this request: answer with its job.
        session.rollback()
        _discard(parts)
        answered = earlier_answer(job.owner, key, what)
        if answered is None:
            raise
        return answered
    except BaseException:
        session.rollback()
        _discard(parts)  # nothing from a refused request stays on disk
        raise
    try:
        settle(services().storage, parts)
    except OSError as exc:  # the rows are committed: the worker reports a missing upload for that image alone
        log.error(kv(event="upload_not_settled", job_id=job.id, reason=str(exc)))
        drop_spares(parts)
    record("submitted", len(ids))
    log.info(kv(event="files_accepted", job_id=job.id, files=len(ids), created=created))
    return _queue(session, job, ids)


def _queue(session, job: Job, ids: list[int]) -> Response:
    """Enqueue committed images and answer 202 with their job; with Redis down, the sweeper sends them later."""
    try:
        enqueue_images(services().celery, ids, services().settings.batch_size)
    except (BrokerError, RedisError, OSError) as exc:
        log.error(kv(event="enqueue_failed", job_id=job.id, files=len(ids), reason=str(exc)))
        # Backdated so the sweeper's next run (every PIXELPROOF_SWEEP_INTERVAL once the queue is back) sends them,
        # instead of waiting PIXELPROOF_STALE_AFTER as for a message lost after it was sent.
        session.execute(update(ImageItem).where(ImageItem.id.in_(ids)).values(touched_at=NEVER_SENT))
        session.commit()
        raise ApiError(503, "the job queue (Redis) is unreachable right now; your files are stored in job "
                            f"{job.id} and will be queued automatically when it is back",
                       headers={"Retry-After": "10"}, job=job.id) from None
    body = jobs.job_status(session, job)
    resp = jsonify(body)
    resp.status_code = 202
    resp.headers["Location"] = url_for("api.get_job", job_id=job.id)
    return resp


def _callback_url() -> str | None:
    callback_url = request.args.get("callback_url") or None
    if callback_url is not None:
        problem = webhooks.url_problem(callback_url, services().settings.webhook_allowlist)
        if problem:
            raise ApiError(400, problem)
    return callback_url


KEEP = object()  # no ?title=: the new job keeps the earlier job's


def _title(default: object = None) -> object:
    return title_or_400(request.args["title"]) if "title" in request.args else default


@api.post("/api/jobs")
def create_job():
    owner = current_owner()
    key = idempotency_key()
    boundary(request.content_type)
    callback_url, title = _callback_url(), _title()  # a request refused for them has no stored answer either
    answered = earlier_answer(owner, key, "create")  # before reading the body: a retry is not stored twice
    if answered is not None:
        return answered
    _check_rate(owner)
    parts = _store_uploads(0)
    job = Job(owner=owner, callback_url=callback_url, title=title)
    db_session().add(job)
    return _accept(job, parts, created=True, key=key)


@api.get("/api/jobs")
def list_jobs():
    """The caller's jobs, newest first. Only with API tokens: without them a job's id is what grants access to
    it, and a list would hand every job to whoever can reach the server."""
    owner = current_owner()
    if owner is None:
        raise ApiError(403, "listing jobs needs API tokens (PIXELPROOF_API_TOKENS): without them a job's id is "
                            "what grants access to it, so no list of jobs is given out")
    limit = int(number_arg("limit", 50, 1, MAX_PAGE))
    cursor = request.args.get("cursor") or ""
    if len(cursor) > 200:
        raise ApiError(400, "cursor must be the next_cursor value of the previous page")
    try:
        items, next_cursor = jobs.jobs_page(db_session(), owner, cursor, limit, _title() or "")
    except jobs.BadCursor:
        raise ApiError(400, "cursor must be the next_cursor value of the previous page") from None
    return jsonify({"items": items, "next_cursor": next_cursor})


@api.post("/api/jobs/<job_id>/files")
def add_files(job_id: str):
    owner = current_owner()
    key = idempotency_key()
    job = job_or_404(job_id, owner)
    boundary(request.content_type)
    answered = earlier_answer(owner, key, f"files:{job.id}")
    if answered is not None:
        return answered
    _refuse_if_cancelled(job)
    _check_rate(owner)
    parts = _store_uploads(jobs.count_images(db_session(), job.id))
    return _accept(job, parts, created=False, key=key)


@api.post("/api/jobs/<job_id>/rerun")
def rerun_job(job_id: str):
    """A new job of the same stored files, for the model the workers serve now; the earlier job is untouched."""
    owner = current_owner()
    key = idempotency_key()
    what = f"rerun:{job_id[:32]}"  # a longer one is no job's id (404 below)
    callback_url, title = _callback_url(), _title(default=KEEP)
    answered = earlier_answer(owner, key, what)
    if answered is not None:
        return answered
    source = job_or_404(job_id, owner)
    title = source.title if title is KEEP else title
    _check_rate(owner)
    session = db_session()
    # The earlier job's row lock (PostgreSQL) or the database's write lock (SQLite) before its files are read: a
    # delete of it either waits until the new job holds them (so its uploads are kept) or has removed it (404).
    if not session.execute(update(Job).where(Job.id == source.id).values(updated_at=Job.updated_at)).rowcount:
        raise ApiError(404, f"no job with id {job_id!r}")
    job = Job(owner=owner, callback_url=callback_url, rerun_of=source.id, title=title)
    session.add(job)
    try:
        ids = jobs.add_images(session, job, jobs.uploads_of(session, source.id))
        if key is not None:
            session.add(IdempotencyKey(owner=owner or "", key=key, request=remembered_as(what), job_id=job.id))
        session.commit()
    except IntegrityError:  # the same Idempotency-Key committed by a concurrent twin of this request
        session.rollback()
        answered = earlier_answer(owner, key, what)
        if answered is None:
            raise
        return answered
    record("submitted", len(ids))
    log.info(kv(event="job_rerun", job_id=job.id, rerun_of=source.id, files=len(ids)))
    return _queue(session, job, ids)


@api.get("/api/jobs/<job_id>")
def get_job(job_id: str):
    """Plain poll, or long poll with ?wait=S&done=N: answer as soon as `done` differs from N.

    A long-poll sleeps until a worker's notice for this job (web.watch), holding no database connection, and
    takes one of a bounded number of waiting places: past the bound it is a 429 at once.
    """
    owner = current_owner()
    session = db_session()
    job = job_or_404(job_id, owner)
    wait = min(number_arg("wait", 0.0, 0, 1e9), MAX_WAIT_S)
    seen = int_arg("done")
    body = jobs.job_status(session, job)
    if not wait > 0 or body["done"] != seen or body["status"] in jobs.FINAL_STATUSES:
        return jsonify(body)
    watcher = services().watcher
    try:
        with watcher.slot(client_key(owner)), watcher.watching(job.id) as changed:
            body = jobs.job_status(session, job)  # again, now that no notice can be missed: one may have come
            deadline = time.monotonic() + wait
            while body["done"] == seen and body["status"] not in jobs.FINAL_STATUSES:
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
    job = job_or_404(job_id, owner)
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "format must be 'json' or 'csv'")
    filt = _result_filter()
    if filt.changed and job.rerun_of is None:
        raise ApiError(400, f"changed compares a rerun's results with the earlier job's, and job {job.id} is no "
                            "rerun (its rerun_of is null)")
    limit = int(number_arg("limit", 100, 1, MAX_PAGE))  # checked for a download too, which takes every page
    cursor = request.args.get("cursor") or "0"  # empty: the first page, as a null next_cursor sent back
    if len(cursor) > 2000 or (filt.sort == "id" and not (cursor.isascii() and cursor.isdigit() and int(cursor) <= MAX_ID)):
        raise ApiError(400, "cursor must be the next_cursor value of the previous page")
    if flag_arg("download"):
        return _download(job.id, fmt, filt)
    try:
        items, next_cursor = jobs.results_page(db_session(), job.id, cursor, limit, filt)
    except jobs.BadCursor:
        raise ApiError(400, "cursor must be the next_cursor value of the previous page, with the same sort") from None
    if fmt == "csv":
        resp = Response(_csv(items), mimetype="text/csv")
        if next_cursor is not None:
            resp.headers["X-Next-Cursor"] = next_cursor
        return resp
    return jsonify({"job_id": job.id, "items": items, "next_cursor": next_cursor})


def _choices(name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """?name=a,b or ?name=a&name=b, each one of allowed."""
    values = tuple(v for raw in request.args.getlist(name) for v in raw.split(",") if v)
    wrong = [v for v in values if v not in allowed]
    if wrong:
        raise ApiError(400, f"{name} must be one or more of {', '.join(allowed)} (comma-separated), got {wrong[0][:40]!r}")
    return values


def _result_filter() -> jobs.ResultFilter:
    sort = request.args.get("sort", "id")
    if sort not in jobs.SORTS:
        raise ApiError(400, f"sort must be one of {', '.join(jobs.SORTS)}, got {sort[:40]!r}")
    p_min = number_arg("p_min", -1.0, 0, 1)
    p_max = number_arg("p_max", -1.0, 0, 1)
    name = request.args.get("name", "")
    if len(name) > MAX_NAME:  # as sent: what normalising takes out still counts
        raise ApiError(400, f"name must be at most {MAX_NAME} characters (a stored file name is no longer)")
    name = search_text(name)
    return jobs.ResultFilter(labels=_choices("label", LABELS), statuses=_choices("status", STATUSES),
                             reviews=_choices("review", jobs.REVIEW_FILTERS),
                             p_min=None if p_min < 0 else p_min, p_max=None if p_max < 0 else p_max, name=name,
                             changed=flag_arg("changed"), sort=sort)


def _download(job_id: str, fmt: str, filt: jobs.ResultFilter) -> Response:
    db = services().db

    def generate():
        with db.session() as s:
            rows = jobs.iter_results(s, job_id, filt=filt)
            if fmt == "csv":
                yield _csv([], header=True)
                for row in rows:
                    yield _csv([row], header=False)
            else:
                yield '{"job_id": ' + json.dumps(job_id) + ', "items": ['
                for i, row in enumerate(rows):
                    yield ("," if i else "") + json.dumps(row)
                yield '], "next_cursor": null}'  # a page's shape: the whole job is the last page

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
    """The JPEG the worker made when it classified the image: the web never decodes an upload."""
    owner = current_owner()
    job = job_or_404(job_id, owner)
    item = image_or_404(job, image_id)
    size = int(number_arg("size", 96, 16, 512))
    if item.status == ERROR:
        raise ApiError(422, f"no thumbnail: {item.error}")
    try:
        body, media_type = services().storage.find_thumbnail(item.sha256, rendition(size))
    except FileNotFoundError:
        if item.status != DONE:
            raise ApiError(404, "no thumbnail yet: it is made when the image is classified") from None
        raise ApiError(404, "the stored thumbnail is missing") from None
    resp = Response(body, mimetype=media_type)
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
        services().redis.ping()
        checks["broker"] = "ok"
    except (RedisError, OSError) as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    checks["storage"] = services().storage.problem() or "ok"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if healthy else "degraded", "checks": checks}), 200 if healthy else 503


@api.get("/api/config")
def config():
    """What a client needs before uploading: the limits it can check itself, and the model's scope. Public:
    nothing here belongs to a token."""
    settings = services().settings
    return jsonify({
        "limits": {"max_file_bytes": settings.max_file_bytes, "max_request_bytes": settings.max_request_bytes,
                   "max_files_per_request": settings.max_files_per_request,
                   "max_files_per_job": settings.max_files_per_job, "max_pixels": settings.max_pixels},
        "model": jobs.current_model(db_session()),
        # How long a job is kept (PIXELPROOF_RETENTION_DAYS; null: until it is deleted), and whether jobs may ask
        # for a webhook (an allow-list is set).
        "retention_days": settings.retention_days,
        "webhooks": bool(settings.webhook_allowlist),
    })


@api.get("/api/openapi.json")
def openapi():
    return jsonify(OPENAPI)


