"""What a job's owner does to it after uploading: rename, cancel or delete it, review its results."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from shared import jobs, webhooks
from shared.deletion import delete_jobs
from shared.logs import kv
from shared.metrics import record
from shared.models import REVIEW_VERDICTS
from shared.queue import WEBHOOK_TASK

from .auth import current_owner
from .context import db_session, image_or_404, job_or_404, lock_job, notify, services, title_or_400
from .errors import ApiError

log = logging.getLogger(__name__)
actions = Blueprint("actions", __name__)
MAX_NOTE = 2000


@actions.patch("/api/jobs/<job_id>")
def rename_job(job_id: str):
    """Give a job a title, or another one (null or "" removes it); its files and results are untouched."""
    owner = current_owner()
    session = db_session()
    job = job_or_404(job_id, owner)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"title"} or not isinstance(body["title"], (str, type(None))):
        raise ApiError(400, 'send JSON: {"title": "..."} (null or "" removes the title)')
    job.title = title_or_400(body["title"])
    session.commit()
    log.info(kv(event="job_renamed", job_id=job.id, titled=job.title is not None))
    return jsonify(jobs.job_status(session, job))


@actions.post("/api/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    """Stop a job: its queued images are never classified; finished ones keep their results."""
    owner = current_owner()
    session = db_session()
    job = job_or_404(job_id, owner)
    lock_job(session, job)  # one cancel at a time, and none while files are being added
    if job.cancelled_at is None and jobs.job_status(session, job)["status"] == "done":
        session.rollback()
        raise ApiError(409, f"job {job.id} has already finished: there is nothing left to cancel")
    cancelled = jobs.cancel(session, job)
    session.commit()
    record("cancelled", cancelled)
    log.info(kv(event="job_cancelled", job_id=job.id, images=cancelled))
    _job_changed(session, job.id)
    return jsonify(jobs.job_status(session, job))


@actions.delete("/api/jobs/<job_id>")
def delete_job(job_id: str):
    """Delete a job for good: its rows, and the stored uploads, thumbnails and cached verdicts of content that
    no other job refers to."""
    owner = current_owner()
    session = db_session()
    job = job_or_404(job_id, owner)
    jobs.cancel(session, job)  # workers skip its images from now on
    session.commit()
    session.close()
    deleted = delete_jobs(services().db, services().storage, [job.id])
    record("deleted", deleted.jobs, why="request")
    notify(job.id)
    return jsonify({"deleted": job.id, "images": deleted.images, "files_removed": deleted.files_removed,
                    "files_kept": deleted.files_kept})


def _job_changed(session: Session, job_id: str) -> None:
    """After a commit that finished a job here (a cancel): wake its long-polls and send its webhook."""
    notify(job_id)
    for due in webhooks.claim_finished(session, [job_id]):
        try:
            services().celery.send_task(WEBHOOK_TASK, args=[due])
        except (BrokerError, RedisError, OSError) as exc:  # the sweeper re-sends due webhooks later
            log.error(kv(event="webhook_not_queued", job_id=due, reason=str(exc)))


@actions.post("/api/jobs/<job_id>/images/<int:image_id>/review")
def review_image(job_id: str, image_id: int):
    """A person's verdict on one result (real / fake / unsure) and a note; sending another replaces it."""
    owner = current_owner()
    session = db_session()
    job = job_or_404(job_id, owner)
    item = image_or_404(job, image_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, 'send JSON: {"verdict": "real" | "fake" | "unsure", "note": "..."}')
    verdict, note = body.get("verdict"), body.get("note")
    if verdict not in REVIEW_VERDICTS:
        raise ApiError(400, f"verdict must be one of {', '.join(REVIEW_VERDICTS)}, got {str(verdict)[:40]!r}")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise ApiError(400, f"note must be text of at most {MAX_NOTE} characters")
    jobs.set_review(session, item.id, verdict, note or None)
    session.commit()
    log.info(kv(event="reviewed", job_id=job.id, image_id=item.id, verdict=verdict, model_label=item.label))
    items, _ = jobs.results_page(session, job.id, str(item.id - 1), 1)
    return jsonify(items[0])
