"""Deleting jobs for good (DELETE /api/jobs/<id> and the retention schedule): their rows, and every stored
upload, thumbnail and cached prediction that no remaining job refers to.

Rows go first, in one transaction; files are removed after the commit, for content no image row refers to
any more. Uploads are content-addressed and shared between jobs, so a file another job also uploaded stays.
An upload of the same bytes may be on its way meanwhile (its rows not yet committed), so a file is moved
aside, the rows are looked at again, and it comes back if one refers to it now; the upload itself puts its
own copy in place if it commits after that second look (LocalStorage.settle).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from .db import Database
from .logs import kv
from .models import (
    IdempotencyKey,
    ImageItem,
    Job,
    Prediction,
    Review,
    WebhookAttempt,
    utcnow,
)
from .storage import LocalStorage

log = logging.getLogger(__name__)
CHUNK = 500  # ids per IN (...) list: well inside SQLite's limit on bound parameters


@dataclass
class Deleted:
    jobs: int = 0
    images: int = 0
    files_removed: int = 0
    files_kept: int = 0  # uploads other jobs still refer to


def _chunks(items: Sequence, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def delete_jobs(db: Database, storage: LocalStorage, job_ids: Sequence[str]) -> Deleted:
    out = Deleted()
    job_ids = list(job_ids)
    if not job_ids:
        return out
    shas: set[str] = set()
    with db.session() as s:
        for ids in _chunks(job_ids):
            image_ids = s.scalars(select(ImageItem.id).where(ImageItem.job_id.in_(ids))).all()
            shas.update(s.scalars(select(ImageItem.sha256).where(ImageItem.job_id.in_(ids)).distinct()))
            for chunk in _chunks(image_ids):  # children first: SQLite enforces no cascade without the pragma
                s.execute(delete(Review).where(Review.image_id.in_(chunk)))
            s.execute(delete(WebhookAttempt).where(WebhookAttempt.job_id.in_(ids)))
            s.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id.in_(ids)))
            out.images += s.execute(delete(ImageItem).where(ImageItem.job_id.in_(ids))).rowcount
            out.jobs += s.execute(delete(Job).where(Job.id.in_(ids))).rowcount
        s.commit()
    out.files_removed, out.files_kept = remove_unreferenced(db, storage, shas)
    for job_id in job_ids:
        log.info(kv(event="job_deleted", job_id=job_id))
    return out


def remove_unreferenced(db: Database, storage: LocalStorage, shas: set[str] | Sequence[str]) -> tuple[int, int]:
    """Remove the uploads, thumbnails and cached predictions of the content no image row refers to any more:
    (files removed, files kept because a row still refers to them). Also called by the worker for images
    deleted while it classified them, whose thumbnails and prediction it may have written after the deletion."""
    shas = sorted(set(shas))
    orphans = _unreferenced(db, shas)
    retired, stuck = {}, set()
    for sha in orphans:
        try:
            retired[sha] = storage.retire(sha)  # None: the file was not there
        except OSError as exc:  # the rows are gone already; a file left behind is logged, not fatal
            stuck.add(sha)
            log.error(kv(event="file_not_removed", sha256=sha, reason=str(exc)))
    gone = set(_unreferenced(db, orphans))  # the second look: an upload of the same bytes committed meanwhile?
    for sha, trash in retired.items():
        if sha not in gone and trash is not None:
            storage.restore(trash, sha)
    with db.session() as s:  # the cached verdicts about content nobody holds any more go with it
        for chunk in _chunks(sorted(gone)):
            s.execute(delete(Prediction).where(Prediction.sha256.in_(chunk)))
        s.commit()
    removed = 0
    for sha in sorted(gone):
        try:
            # Only what retire() moved: an upload of the same bytes committed after the second look may have
            # stored its own copy and thumbnails at the same paths since (settle, the worker).
            if retired.get(sha) is not None:
                storage.drop_retired(retired[sha])
            removed += sha not in stuck
        except OSError as exc:  # the rows are gone already; a file left behind is logged, not fatal
            log.error(kv(event="file_not_removed", sha256=sha, reason=str(exc)))
    return removed, len(shas) - len(gone)


def _unreferenced(db: Database, shas: list[str]) -> list[str]:
    with db.session() as s:
        still = set()
        for chunk in _chunks(shas):
            still.update(s.scalars(select(ImageItem.sha256).where(ImageItem.sha256.in_(chunk)).distinct()))
    return [sha for sha in shas if sha not in still]


def delete_expired(db: Database, storage: LocalStorage, days: float, batch: int = 100) -> Deleted:
    """Retention: delete the jobs created more than `days` ago, a batch of jobs at a time."""
    cutoff = utcnow() - timedelta(days=days)
    total = Deleted()
    while True:
        with db.session() as s:
            ids = s.scalars(select(Job.id).where(Job.created_at < cutoff).order_by(Job.created_at).limit(batch)).all()
        if not ids:
            return total
        done = delete_jobs(db, storage, ids)
        for name in ("jobs", "images", "files_removed", "files_kept"):
            setattr(total, name, getattr(total, name) + getattr(done, name))
