"""Job creation and read models, kept free of Flask so tests can call them directly."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import (
    DONE,
    ERROR,
    QUEUED,
    RUNNING,
    ImageItem,
    Job,
    ModelVersion,
    Prediction,
)


@dataclass
class Upload:
    filename: str
    sha256: str
    size_bytes: int


def add_images(session: Session, job: Job, uploads: list[Upload]) -> list[int]:
    items = [ImageItem(job=job, filename=u.filename, sha256=u.sha256, size_bytes=u.size_bytes, status=QUEUED) for u in uploads]
    session.add_all(items)
    session.flush()
    return [i.id for i in items]


def count_images(session: Session, job_id: str) -> int:
    return session.scalar(select(func.count()).select_from(ImageItem).where(ImageItem.job_id == job_id)) or 0


def job_status(session: Session, job: Job) -> dict:
    by_status = dict(
        session.execute(select(ImageItem.status, func.count()).where(ImageItem.job_id == job.id).group_by(ImageItem.status)).all()
    )
    labels = dict(
        session.execute(
            select(ImageItem.label, func.count()).where(ImageItem.job_id == job.id, ImageItem.status == DONE).group_by(ImageItem.label)
        ).all()
    )
    finished = session.execute(
        select(func.max(ImageItem.finished_at), func.min(ImageItem.finished_at)).where(ImageItem.job_id == job.id)
    ).one()
    declared = session.scalar(
        select(func.count()).select_from(ImageItem)
        .join(Prediction, (Prediction.sha256 == ImageItem.sha256) & (Prediction.model_version == ImageItem.model_version))
        .where(ImageItem.job_id == job.id, Prediction.declares_ai.is_(True))
    ) or 0
    used = [v for v in session.scalars(select(ImageItem.model_version).where(ImageItem.job_id == job.id).distinct()) if v]
    # One query for their records; _model then finds each in the session. Oldest to newest by when a worker
    # last loaded them (then by name): "model" is the newest, not the alphabetically last.
    loaded = {m.version: m.loaded_at for m in session.scalars(select(ModelVersion).where(ModelVersion.version.in_(used)))}
    models = [_model(session, v) for v in sorted(used, key=lambda v: (_iso(loaded.get(v)) or "", v))]
    total = sum(by_status.values())
    done = by_status.get(DONE, 0) + by_status.get(ERROR, 0)
    if total and done == total:
        status = "done"
    elif by_status.get(RUNNING) or done:
        status = "running"
    else:
        status = "queued"
    return {
        "id": job.id,
        "status": status,
        "total": total,
        "done": done,
        "errors": by_status.get(ERROR, 0),
        "queued": by_status.get(QUEUED, 0),
        "running": by_status.get(RUNNING, 0),
        "counts": {"real": labels.get("real", 0), "fake": labels.get("fake", 0), "uncertain": labels.get("uncertain", 0)},
        "declared_ai": declared,  # files whose own metadata or Content Credentials say they are AI-generated
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "finished_at": _iso(finished[0]) if status == "done" else None,
        "model": models[-1] if models else None,
        "models": models,
    }


def _model(session: Session, version: str) -> dict:
    """A model version: its label thresholds, and the scope and limits its checkpoint states (recorded by the
    worker that loaded it; thresholds fall back to those recorded with its predictions)."""
    row = session.get(ModelVersion, version)
    name = row.name if row else (version.rsplit("-", 1)[0] if "-" in version else version)
    thresholds = row.thresholds if row else None
    if not thresholds:
        details = session.scalar(select(Prediction.details).where(Prediction.model_version == version,
                                                                  Prediction.details.is_not(None)).limit(1))
        thresholds = (details or {}).get("thresholds")
    notes = (row.notes if row else None) or {}
    return {"name": name, "version": version, "thresholds": thresholds, "scope": notes.get("scope"),
            "limits": notes.get("limits") or [], "card": notes.get("card")}


def current_model(session: Session) -> dict | None:
    """The model the workers loaded most recently (what a new upload will be classified by), if any."""
    version = session.scalar(select(ModelVersion.version).order_by(ModelVersion.loaded_at.desc()).limit(1))
    return _model(session, version) if version else None


def _iso(dt) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite hands back naive datetimes; every stored time is UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat()


def result_row(item: ImageItem, details: dict | None = None) -> dict:
    details = details or {}
    thresholds = details.get("thresholds") or {}
    return {
        "id": item.id,
        "filename": item.filename,
        "sha256": item.sha256,
        "size_bytes": item.size_bytes,
        "status": item.status,
        "label": item.label,
        "p_fake": item.p_fake,
        "real_below": thresholds.get("real_below"),
        "fake_from": thresholds.get("fake_from"),
        "error": item.error,
        "model_version": item.model_version,
        "image_width": details.get("width"),
        "image_height": details.get("height"),
        "regions": details.get("regions"),
        "evidence": details.get("evidence") or [],
        "evidence_note": details.get("evidence_note"),
    }


def results_page(session: Session, job_id: str, after_id: int, limit: int) -> tuple[list[dict], int | None]:
    """A page of results with what the worker recorded about each prediction (crop scores, thresholds)."""
    rows = session.execute(
        select(ImageItem, Prediction.details)
        .outerjoin(Prediction, (Prediction.sha256 == ImageItem.sha256) & (Prediction.model_version == ImageItem.model_version))
        .where(ImageItem.job_id == job_id, ImageItem.id > after_id).order_by(ImageItem.id).limit(limit + 1)
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [result_row(item, details) for item, details in rows], (rows[-1][0].id if more else None)


def iter_results(session: Session, job_id: str, chunk: int = 1000) -> Iterator[dict]:
    after = 0
    while True:
        rows, next_id = results_page(session, job_id, after, chunk)
        yield from rows
        if next_id is None:
            return
        after = next_id
