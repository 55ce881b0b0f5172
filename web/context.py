"""What every API handler uses: this process's services, the request's database session, the job and image
a URL names (or a 404), who a limit counts against, and numbers from the query string."""
from __future__ import annotations

import math

from flask import current_app, g, request
from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.events import publish_changes
from shared.models import ImageItem, Job, utcnow
from shared.names import job_title

from .errors import ApiError

MAX_ID = 2**63 - 1  # the largest id either database can hold


def services():
    return current_app.extensions["pixelproof"]


def db_session() -> Session:
    if "db_session" not in g:
        g.db_session = services().db.sessionmaker()
    return g.db_session


def job_or_404(job_id: str, owner: str | None) -> Job:
    job = db_session().get(Job, job_id) if len(job_id) <= 32 else None
    if job is None or job.owner != owner:  # another token's job looks exactly like a missing one
        raise ApiError(404, f"no job with id {job_id!r}")
    return job


def image_or_404(job: Job, image_id: int) -> ImageItem:
    item = None
    if image_id <= MAX_ID:  # a larger number is no row's id, and would overflow the database's integer
        item = db_session().scalar(select(ImageItem).where(ImageItem.id == image_id, ImageItem.job_id == job.id))
    if item is None:
        raise ApiError(404, f"job {job.id} has no image {image_id}")
    return item


def client_key(owner: str | None) -> str:
    """Who a limit counts against: the resolved token when tokens are on (never the raw header, which can be
    spelt many ways), else the client's address."""
    return f"token:{owner}" if owner else f"addr:{request.remote_addr or '?'}"


def number_arg(name: str, default: float, low: float, high: float) -> float:
    """A finite number within [low, high] from the query string, or a 400 that says which parameter is wrong."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g}, got {raw[:40]!r}")
    return value


def int_arg(name: str) -> int | None:
    """An optional whole number from the query string: a malformed one is a 400, never read as absent."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, got {raw[:40]!r}") from None


def flag_arg(name: str) -> bool:
    """?name=1 / true / yes (or 0 / false / no); anything else is a 400, so that download=0 never downloads."""
    raw = request.args.get(name)
    if raw is None:
        return False
    raw = raw.strip().lower()
    if raw in ("0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ApiError(400, f"{name} must be true or false (1 or 0), got {raw[:40]!r}")


def title_or_400(raw: str | None) -> str | None:
    """A job's title as stored (shared.names.job_title), or a 400 that says why it cannot be one."""
    try:
        return job_title(raw)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def notify(job_id: str) -> None:
    try:
        publish_changes(services().redis, [job_id])
    except (RedisError, OSError):
        pass  # a notice is a hint; waiters re-read the database anyway


def lock_job(session: Session, job: Job, **values) -> None:
    """Take the job's row lock (PostgreSQL) or the database's write lock (SQLite) for this transaction, setting
    values, and read the job again under it."""
    session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow(), **values))
    session.refresh(job)
