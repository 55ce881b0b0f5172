"""What the tasks do, callable without Celery (tests drive these directly).

Idempotent by construction: rows already final are skipped, results are the same on every delivery, and job
counts are derived from row statuses, so a redelivered batch can never count an image twice.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shared import webhooks
from shared.db import Database
from shared.deletion import remove_unreferenced
from shared.encoding import group as encoding_group
from shared.evidence import declares_ai
from shared.logs import kv
from shared.metrics import failure_reason, observe, record
from shared.models import (
    ERROR,
    QUEUED,
    RUNNING,
    TERMINAL,
    ImageItem,
    ModelVersion,
    Prediction,
    utcnow,
)
from shared.storage import LocalStorage, StorageFull
from shared.thumbnails import THUMBNAIL_SIZES

from .inference import Classifier, Outcome, file_facts, thumbnails_of

log = logging.getLogger(__name__)
READ_RETRY_S = 0.1  # how long a reader waits once for a file a racing delete has moved aside (shared.deletion)


class _Row(NamedTuple):
    id: int
    sha256: str
    job_id: str
    attempts: int


class _Claimed(NamedTuple):
    id: int
    sha256: str
    job_id: str
    created_at: object  # when it was uploaded: upload-to-result latency


def _unfinished(db: Database, image_ids: Sequence[int], max_attempts: int) -> tuple[list[_Row], set[str]]:
    """The images still to classify, and the jobs of those given up on.

    An image already delivered max_attempts times without finishing (it overran the task's time limit or
    took its worker down each time) is marked `error` instead, so its job can finish.
    """
    with db.session() as s:
        rows = [_Row(*r) for r in s.execute(
            select(ImageItem.id, ImageItem.sha256, ImageItem.job_id, ImageItem.attempts)
            .where(ImageItem.id.in_(image_ids), ImageItem.status.notin_(TERMINAL)).order_by(ImageItem.id)
        ).all()]
        spent = [r for r in rows if r.attempts >= max_attempts]
        if spent:
            now = utcnow()
            s.execute(
                update(ImageItem).where(ImageItem.id.in_([r.id for r in spent]), ImageItem.status.notin_(TERMINAL))
                .values(status=ERROR, finished_at=now, touched_at=now,
                        error=f"the image was tried {max_attempts} times and never finished: it takes too long to "
                              "classify, or stops the worker")
            )
            s.commit()
            record("failed", len(spent), reason="gave_up")
            for r in spent:
                log.warning(kv(event="gave_up", job_id=r.job_id, image_id=r.id, attempts=r.attempts))
        return [r for r in rows if r.attempts < max_attempts], {r.job_id for r in spent}


def _claim(db: Database, rows: Sequence[_Row]) -> list[_Claimed]:
    """Mark the rows running and count the attempt, just before they are classified."""
    with db.session() as s:
        claimed = dict(s.execute(
            update(ImageItem)
            .where(ImageItem.id.in_([r.id for r in rows]), ImageItem.status.notin_(TERMINAL))
            .values(status=RUNNING, touched_at=utcnow(), attempts=ImageItem.attempts + 1)
            .returning(ImageItem.id, ImageItem.created_at)
        ).all())
        s.commit()
    return [_Claimed(r.id, r.sha256, r.job_id, claimed[r.id]) for r in rows if r.id in claimed]


def _cached(db: Database, shas: set[str], version: str) -> dict[str, Outcome]:
    with db.session() as s:
        found = s.scalars(select(Prediction).where(Prediction.sha256.in_(shas), Prediction.model_version == version))
        return {p.sha256: Outcome(p_fake=p.p_fake, label=p.label, error=p.error, details=p.details) for p in found}


def _store_predictions(db: Database, version: str, fresh: dict[str, Outcome]) -> None:
    rows = [
        {"sha256": sha, "model_version": version, "p_fake": o.p_fake, "label": o.label, "error": o.error,
         "details": o.details, "declares_ai": declares_ai((o.details or {}).get("evidence") or []),
         "encoding": encoding_group((o.details or {}).get("encoding"))}
        for sha, o in fresh.items() if o.cacheable
    ]
    if not rows:
        return
    insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
    with db.session() as s:
        # One statement with a parameter list: compiled once and cached, where a multi-row VALUES clause was
        # compiled again for every batch (a fifth of a worker's time per batch, measured).
        s.execute(insert(Prediction.__table__).on_conflict_do_nothing(), rows)
        s.commit()


def _fill_file_facts(db: Database, storage: LocalStorage, version: str, known: dict[str, Outcome]) -> None:
    """A prediction stored by an earlier version, before results named their file's encoding (or carried the
    file's own evidence), gets them once, from the stored file's header: they are read from the file, never
    from the model, so the cached score stays as it is, and a job that reuses it counts the file in its
    `encodings` and its declared-AI count like a file scored now."""
    stale = {sha: o for sha, o in known.items() if "encoding" not in (o.details or {})}
    rows = []
    for sha, outcome in stale.items():
        try:
            data = _reader(storage, sha)()
        except FileNotFoundError:  # the cached score still holds; the facts wait for a worker that has the file
            continue
        old = outcome.details or {}
        details = {**file_facts(data, evidence="evidence" not in old), **old}  # evidence it already has is kept
        known[sha] = replace(outcome, details=details)
        rows.append({"b_sha": sha, "details": details, "declares_ai": declares_ai(details["evidence"]),
                     "encoding": encoding_group(details["encoding"])})
    if rows:
        with db.session() as s:
            s.execute(_FILL, [{**r, "b_version": version} for r in rows])
            s.commit()
        log.info(kv(event="cached_predictions_filled", images=len(rows), model_version=version))


_predictions = Prediction.__table__
_FILL = update(_predictions).where(_predictions.c.sha256 == bindparam("b_sha"),
                                   _predictions.c.model_version == bindparam("b_version")).values(
    {c: bindparam(c) for c in ("details", "declares_ai", "encoding")}
)
_images = ImageItem.__table__
# Only a row still running is finished: one cancelled (or deleted) meanwhile keeps its state.
_FINISH = update(_images).where(_images.c.id == bindparam("b_id"), _images.c.status == RUNNING).values(
    {c: bindparam(c) for c in ("status", "label", "p_fake", "error", "model_version", "finished_at", "touched_at")}
)


def classify_images(db: Database, storage: LocalStorage, classifier: Classifier, image_ids: Sequence[int],
                    notify: Callable[[set[str]], None] | None = None, max_attempts: int = 3) -> dict:
    """Score the given images (skipping finished ones), reusing cached predictions for known content.

    A batch delivered again after a failure is classified one image at a time, each committed on its own, so
    one image that overruns the time limit or kills the worker costs only itself (see _claim).
    notify: told the ids of the jobs that moved, after the commit (wakes the web's long-polls).
    """
    rows, gave_up = _unfinished(db, image_ids, max_attempts)
    if gave_up and notify:
        notify(gave_up)
    if not rows:
        return {"claimed": 0}
    if any(r.attempts for r in rows):  # delivered before: one at a time, the least-tried first
        groups = [[r] for r in sorted(rows, key=lambda r: (r.attempts, r.id))]
    else:
        groups = [rows]
    totals = {"claimed": 0, "cached": 0, "computed": 0}
    for group in groups:
        claimed = _claim(db, group)
        if claimed:
            for key, value in _classify_claimed(db, storage, classifier, claimed, notify).items():
                totals[key] += value
    return totals if totals["claimed"] else {"claimed": 0}


def _classify_claimed(db: Database, storage: LocalStorage, classifier: Classifier,
                      claimed: list[_Claimed], notify: Callable[[set[str]], None] | None) -> dict:
    version = classifier.version
    shas = {c.sha256 for c in claimed}
    known = _cached(db, shas, version)
    _fill_file_facts(db, storage, version, known)
    todo = sorted(shas - known.keys())
    fresh = dict(zip(todo, classifier.classify([_reader(storage, sha) for sha in todo])))
    _store_thumbnails(storage, fresh, known, classifier.max_pixels, classifier.max_scans)
    _store_predictions(db, version, fresh)
    outcome = {**known, **fresh}
    now = utcnow()
    params = [
        {"b_id": iid, "status": ERROR if outcome[sha].error else "done", "label": outcome[sha].label,
         "p_fake": outcome[sha].p_fake, "error": outcome[sha].error, "model_version": version,
         "finished_at": now, "touched_at": now}
        for iid, sha, _, _ in claimed
    ]
    with db.session() as s:
        s.execute(_FINISH, params)  # Core executemany: the ORM's bulk update by key costs more per row
        # Which rows this batch finished (executemany gives no per-row count): the others were cancelled or
        # deleted while it ran, their results dropped, and must not be counted as classified either.
        finished = set(s.scalars(select(_images.c.id).where(
            _images.c.id.in_([c.id for c in claimed]), _images.c.finished_at == now,
            _images.c.status.in_(("done", ERROR)))))
        s.commit()
    _count([c for c in claimed if c.id in finished], outcome, now)
    dropped = {c.sha256 for c in claimed if c.id not in finished}
    if dropped:  # deleted meanwhile: what this batch wrote for content no job holds any more goes too
        remove_unreferenced(db, storage, dropped)
    if notify:
        notify({c.job_id for c in claimed})
    for job_id in sorted({c.job_id for c in claimed}):
        mine = [c for c in claimed if c.job_id == job_id]
        done = [c for c in mine if c.id in finished]
        log.info(kv(event="classified", job_id=job_id, images=len(done), cached=sum(c.sha256 in known for c in done),
                    dropped=len(mine) - len(done), model_version=version))
    return {"claimed": len(claimed), "cached": len(known), "computed": len(todo)}


def _count(claimed: list[_Claimed], outcome: dict[str, Outcome], now) -> None:
    for c in claimed:
        result = outcome[c.sha256]
        if result.error:
            record("failed", reason=failure_reason(result.error))
        else:
            record("classified", label=result.label or "none")
        created = c.created_at if c.created_at.tzinfo else c.created_at.replace(tzinfo=now.tzinfo)  # SQLite: naive
        observe("latency", max(0.0, (now - created).total_seconds()))


def _store_thumbnails(storage: LocalStorage, fresh: dict[str, Outcome], known: dict[str, Outcome],
                      max_pixels: int, max_scans: int) -> None:
    """Thumbnails are written before the image is marked done, so the page never asks for one too early.
    A full disk costs the thumbnails (the page shows none), never the classification."""
    try:
        for sha, outcome in fresh.items():
            if outcome.thumbnails:
                for size, jpeg in outcome.thumbnails.items():
                    storage.put_thumbnail(sha, size, jpeg)
        for sha, outcome in known.items():  # cached before thumbnails were stored: make them once now
            if not outcome.error and not storage.has_thumbnails(sha, THUMBNAIL_SIZES):
                for size, jpeg in (thumbnails_of(_reader(storage, sha), max_pixels, max_scans) or {}).items():
                    storage.put_thumbnail(sha, size, jpeg)
    except StorageFull as exc:
        log.error(kv(event="thumbnails_not_stored", reason=str(exc)))


def _reader(storage: LocalStorage, sha: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return storage.read(sha)
        except FileNotFoundError:  # a delete racing an upload of these bytes moves the file aside for a moment
            time.sleep(READ_RETRY_S)
            return storage.read(sha)

    return read


def register_model(db: Database, name: str, version: str, thresholds: dict, notes: dict) -> None:
    """Record the model this worker serves (newest load wins), for the web to describe it next to results."""
    row = {"version": version, "name": name, "thresholds": thresholds, "notes": notes or None, "loaded_at": utcnow()}
    insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
    stmt = insert(ModelVersion.__table__).values(**row)
    stmt = stmt.on_conflict_do_update(index_elements=["version"],
                                      set_={k: stmt.excluded[k] for k in ("name", "thresholds", "notes", "loaded_at")})
    with db.session() as s:
        s.execute(stmt)
        s.commit()


def sweep_stale(db: Database, enqueue: Callable[[list[int]], None], stale_after: float, limit: int = 10_000) -> int:
    """Re-enqueue images left queued or running past ``stale_after`` seconds (lost messages, killed workers)."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    with db.session() as s:
        rows = s.execute(
            select(ImageItem.id, ImageItem.job_id)
            .where(ImageItem.status.in_((QUEUED, RUNNING)), ImageItem.touched_at < cutoff)
            .order_by(ImageItem.id)
            .limit(limit)
        ).all()
        if not rows:
            return 0
        ids = [r.id for r in rows]
        s.execute(update(ImageItem).where(ImageItem.id.in_(ids), ImageItem.status.notin_(TERMINAL)).values(touched_at=utcnow()))
        s.commit()
    enqueue(ids)
    for job_id in sorted({r.job_id for r in rows}):
        log.info(kv(event="requeued_stale", job_id=job_id, images=sum(1 for r in rows if r.job_id == job_id)))
    return len(ids)


def due_webhooks(db: Database, job_ids: set[str] | None, stale_after: float | None = None) -> list[str]:
    """Jobs whose webhook is now due: those of job_ids that just finished (None: any job), and, for the
    sweeper (stale_after), due ones whose delivery task was lost."""
    with db.session() as s:
        due = webhooks.claim_finished(s, None if job_ids is None else sorted(job_ids))
        if stale_after is not None:
            due += webhooks.stale_pending(s, stale_after)
    return due


def deliver_webhook(db: Database, job_id: str, policy: webhooks.Policy) -> webhooks.Attempt | None:
    with db.session() as s:
        attempt = webhooks.deliver(s, job_id, policy)
    if attempt is not None:
        outcome = "delivered" if attempt.error is None else "retry" if attempt.retry_in is not None else "failed"
        record("webhooks", outcome=outcome)
        log.info(kv(event="webhook_attempt", job_id=job_id, attempt=attempt.number, status=attempt.status_code,
                    outcome=outcome, error=attempt.error, retry_in=attempt.retry_in))
    return attempt
