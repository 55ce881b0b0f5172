"""Jobs as the API, the page, webhooks and the CLI see them: creation, summaries, result pages, cancel and
review. Free of Flask, so the worker (webhooks) and tests call the same functions as the web."""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Select, and_, case, false, func, literal, null, or_, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from shared.model_version import name_of
from shared.models import (
    CANCELLED,
    DONE,
    ERROR,
    QUEUED,
    REVIEW_VERDICTS,
    RUNNING,
    UNFINISHED,
    ImageItem,
    Job,
    ModelVersion,
    Prediction,
    Review,
    WebhookAttempt,
    utcnow,
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


def uploads_of(session: Session, job_id: str) -> list[Upload]:
    """A job's files as they were uploaded, in upload order: what a rerun of it classifies again."""
    rows = session.execute(select(ImageItem.filename, ImageItem.sha256, ImageItem.size_bytes)
                           .where(ImageItem.job_id == job_id).order_by(ImageItem.id))
    return [Upload(filename=f, sha256=h, size_bytes=n) for f, h, n in rows]


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
    # One pass over the job's predictions for two counts: files whose own metadata declare them AI-generated
    # (whatever their status), and classified files by encoding. Each is a join over every image of the job
    # (7-17 ms for 10,000 on SQLite and PostgreSQL here), and the page asks at every long-poll answer.
    classified = ImageItem.status == DONE
    declared, encodings = 0, {}
    for is_classified, encoding, n, n_declared in session.execute(
        select(classified, Prediction.encoding, func.count(), func.sum(case((Prediction.declares_ai.is_(True), 1), else_=0)))
        .select_from(ImageItem)
        .join(Prediction, (Prediction.sha256 == ImageItem.sha256) & (Prediction.model_version == ImageItem.model_version))
        .where(ImageItem.job_id == job.id)
        .group_by(classified, Prediction.encoding)
    ):
        declared += n_declared or 0
        if is_classified and encoding is not None:
            encodings[encoding] = n
    reviews = dict(session.execute(select(Review.verdict, func.count()).join(ImageItem, ImageItem.id == Review.image_id)
                                   .where(ImageItem.job_id == job.id).group_by(Review.verdict)).all())
    used = [v for v in session.scalars(select(ImageItem.model_version).where(ImageItem.job_id == job.id).distinct()) if v]
    # One query for their records; _model then finds each in the session. Oldest to newest by when a worker
    # last loaded them (then by name): "model" is the newest, not the alphabetically last.
    loaded = {m.version: m.loaded_at for m in session.scalars(select(ModelVersion).where(ModelVersion.version.in_(used)))}
    models = [_model(session, v) for v in sorted(used, key=lambda v: (_iso(loaded.get(v)) or "", v))]
    status, total, done = _progress(by_status, job.cancelled_at is not None)
    return {
        "id": job.id,
        "title": job.title,
        "status": status,
        "total": total,
        "done": done,
        "errors": by_status.get(ERROR, 0),
        "cancelled": by_status.get(CANCELLED, 0),
        "queued": by_status.get(QUEUED, 0),
        "running": by_status.get(RUNNING, 0),
        "counts": {"real": labels.get("real", 0), "fake": labels.get("fake", 0), "uncertain": labels.get("uncertain", 0)},
        "reviews": {v: reviews.get(v, 0) for v in REVIEW_VERDICTS},  # people's verdicts given so far
        "declared_ai": declared,  # files whose own metadata or Content Credentials say they are AI-generated
        # classified files by encoding (shared.encoding.group): more than one, and verdicts may follow compression
        "encodings": dict(sorted(encodings.items(), key=lambda kv: (-kv[1], kv[0]))),
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "finished_at": _iso(finished[0]) if status in FINAL_STATUSES else None,
        "cancelled_at": _iso(job.cancelled_at),
        "rerun_of": job.rerun_of,
        "model": models[-1] if models else None,
        "models": models,
        "callback": _callback(session, job),
    }


FINAL_STATUSES = ("done", "cancelled")  # a job in one of these changes no more (unless files are added)


def _progress(by_status: dict[str, int], cancelled: bool) -> tuple[str, int, int]:
    """(status, total, done) from a job's images counted by status; done counts every image that will not
    change any more: classified, failed or cancelled. Only a cancel makes an image `cancelled`, so one such
    image says the job was cancelled even where the job row was read before that cancel committed and its
    images after (a request that loaded the job just before: it had answered `done`, and a page that
    long-polls stopped there)."""
    total = sum(by_status.values())
    done = by_status.get(DONE, 0) + by_status.get(ERROR, 0) + by_status.get(CANCELLED, 0)
    if (cancelled or by_status.get(CANCELLED)) and done == total:
        return "cancelled", total, done
    if total and done == total:
        return "done", total, done
    return ("running" if by_status.get(RUNNING) or done else "queued"), total, done


def jobs_page(session: Session, owner: str, cursor: str, limit: int, title: str = "") -> tuple[list[dict], str | None]:
    """A page of one owner's jobs, newest first, each summed up from one grouped query over the whole page's
    images (not a job_status of several queries each). Keyset pages on (created_at, id): a cursor is the last
    job's."""
    page = session.scalars(owner_jobs_query(owner, cursor, limit + 1, title)).all()
    more, page = len(page) > limit, page[:limit]
    ids = [j.id for j in page]
    by_status: dict[str, dict[str, int]] = {i: {} for i in ids}
    labels: dict[str, dict[str, int]] = {i: {} for i in ids}  # of classified images only
    finished: dict[str, object] = {}
    for job_id, status, label, n, last in session.execute(
            select(ImageItem.job_id, ImageItem.status, ImageItem.label, func.count(), func.max(ImageItem.finished_at))
            .where(ImageItem.job_id.in_(ids)).group_by(ImageItem.job_id, ImageItem.status, ImageItem.label)):
        by_status[job_id][status] = by_status[job_id].get(status, 0) + n
        if status == DONE:
            labels[job_id][label] = n
        if last is not None and (finished.get(job_id) is None or last > finished[job_id]):
            finished[job_id] = last
    items = []
    for job in page:
        status, total, done = _progress(by_status[job.id], job.cancelled_at is not None)
        counts = labels[job.id]
        items.append({"id": job.id, "title": job.title, "status": status, "total": total, "done": done,
                      "errors": by_status[job.id].get(ERROR, 0), "cancelled": by_status[job.id].get(CANCELLED, 0),
                      "counts": {k: counts.get(k, 0) for k in ("real", "fake", "uncertain")},
                      "created_at": _iso(job.created_at),
                      "finished_at": _iso(finished.get(job.id)) if status in FINAL_STATUSES else None,
                      "cancelled_at": _iso(job.cancelled_at), "rerun_of": job.rerun_of})
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = _pack(_iso(last.created_at), last.id)
    return items, next_cursor


def owner_jobs_query(owner: str, cursor: str, limit: int, title: str = "") -> Select:
    """One owner's jobs after the cursor, newest first: a range of ix_jobs_owner_created, read backwards; with
    `title`, those whose title contains it in any case (% and _ plain characters), filtered along that range."""
    query = select(Job).where(Job.owner == owner)
    if title:
        query = query.where(Job.title.icontains(title, autoescape=True))
    if cursor:
        created, last_id = _decode_job_cursor(cursor)
        # a row comparison, which both databases turn into the start of the index range (an OR of the two
        # columns would be read from the owner's newest job on and filtered: later pages would cost more)
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(literal(created, Job.created_at.type), literal(last_id, Job.id.type)))
    return query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)


def _decode_job_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = _unpack(cursor)
        if not isinstance(created, str) or not isinstance(job_id, str):
            raise BadCursor(cursor)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise BadCursor(cursor)
        return when.astimezone(timezone.utc), job_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadCursor(cursor) from None


def _callback(session: Session, job: Job) -> dict | None:
    """The job's webhook and every attempt to deliver it, as the receiver answered."""
    if not job.callback_url:
        return None
    attempts = session.scalars(select(WebhookAttempt).where(WebhookAttempt.job_id == job.id)
                               .order_by(WebhookAttempt.id)).all()
    return {"url": job.callback_url, "status": job.webhook_status or "waiting",
            "attempts": [{"round": a.round, "attempt": a.attempt, "at": _iso(a.at), "status_code": a.status_code, "error": a.error,
                          "ms": round(a.ms, 1)} for a in attempts]}


def cancel(session: Session, job: Job) -> int:
    """Cancel what is not finished: queued images are never classified, and a batch a worker is classifying
    right now has its results dropped (worker.service only finishes running rows). Returns how many."""
    now = utcnow()
    if job.cancelled_at is None:
        job.cancelled_at = now
    result = session.execute(update(ImageItem).where(ImageItem.job_id == job.id, ImageItem.status.in_(UNFINISHED))
                             .values(status=CANCELLED, finished_at=now, touched_at=now))
    return result.rowcount


def set_review(session: Session, image_id: int, verdict: str, note: str | None) -> Review:
    review = session.get(Review, image_id)
    if review is None:
        review = Review(image_id=image_id)
        session.add(review)
    review.verdict, review.note, review.updated_at = verdict, note, utcnow()
    return review


def _model(session: Session, version: str) -> dict:
    """A model version: its label thresholds, and the scope and limits its checkpoint states (recorded by the
    worker that loaded it; thresholds fall back to those recorded with its predictions)."""
    row = session.get(ModelVersion, version)
    name = row.name if row else name_of(version)
    thresholds = row.thresholds if row else None
    if not thresholds:
        details = session.scalar(select(Prediction.details).where(Prediction.model_version == version,
                                                                  Prediction.details.is_not(None)).limit(1))
        thresholds = (details or {}).get("thresholds")
    notes = (row.notes if row else None) or {}
    return {"name": name, "version": version, "thresholds": thresholds, "scope": notes.get("scope"),
            "limits": notes.get("limits") or [], "card": notes.get("card"),
            "max_false_fake": notes.get("max_false_fake")}


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


def result_row(item: ImageItem, details: dict | None = None, review: Review | None = None,
               earlier: ImageItem | None = None) -> dict:
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
        "encoding": details.get("encoding"),
        "regions": details.get("regions"),
        "evidence": details.get("evidence") or [],
        "evidence_note": details.get("evidence_note"),
        "review": review.verdict if review else None,
        "review_note": review.note if review else None,
        # In a rerun: the same file (name and content) as the earlier job left it, to see what the new model changed.
        "earlier": None if earlier is None else {"status": earlier.status, "label": earlier.label,
                                                 "p_fake": earlier.p_fake, "model_version": earlier.model_version},
    }


@dataclass(frozen=True)
class ResultFilter:
    """Which results a page lists, and in which order (API ?label=&status=&review=&p_min=&p_max=&name=&sort=)."""

    labels: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    reviews: tuple[str, ...] = ()  # a person's verdict (REVIEW_FILTERS): "none" is a result nobody reviewed yet
    p_min: float | None = None
    p_max: float | None = None
    name: str = ""  # part of the file name or its folder path, in any case; % and _ are plain characters
    changed: bool = False  # a rerun's results whose label differs from the earlier job's (both classified)
    sort: str = "id"

    def where(self) -> list:
        out = []
        if self.name:
            out.append(ImageItem.filename.icontains(self.name, autoescape=True))
        if self.labels:
            out.append(ImageItem.label.in_(self.labels))
        if self.statuses:
            out.append(ImageItem.status.in_(self.statuses))
        if self.reviews:  # results_page joins each result's review, if any
            verdicts = [v for v in self.reviews if v != NOT_REVIEWED]
            out.append(or_(Review.verdict.in_(verdicts),
                           Review.image_id.is_(None) if NOT_REVIEWED in self.reviews else false()))
        if self.p_min is not None:
            out.append(ImageItem.p_fake >= self.p_min)
        if self.p_max is not None:
            out.append(ImageItem.p_fake <= self.p_max)
        return out


NOT_REVIEWED = "none"
REVIEW_FILTERS = (*REVIEW_VERDICTS, NOT_REVIEWED)  # what ?review= takes


# sort name -> (key, descending). Images without a P (queued, failed) sort as -1: first going up, last going down.
SORTS = {
    "id": (ImageItem.id, False),
    "p_fake": (func.coalesce(ImageItem.p_fake, -1.0), False),
    "-p_fake": (func.coalesce(ImageItem.p_fake, -1.0), True),
    "filename": (ImageItem.filename, False),
    "-filename": (ImageItem.filename, True),
}


class BadCursor(ValueError):
    pass


class NotARerun(ValueError):
    """?changed= asked of a job that classifies no earlier job's files again."""


def _pack(value: object, row_id: object) -> str:
    """A keyset cursor that is not a plain id: the last row's sort key and id, as unpadded url-safe base64 JSON."""
    return base64.urlsafe_b64encode(json.dumps([value, row_id]).encode()).decode().rstrip("=")


def _unpack(cursor: str) -> tuple[object, object]:
    """_pack's two values; ValueError (or TypeError, binascii.Error, UnicodeDecodeError) for anything else."""
    value, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return value, row_id


def _encode_cursor(sort: str, value: object, image_id: int) -> str:
    if sort == "id":
        return str(image_id)  # plain ids, as before sorting existed: old clients keep paging
    return _pack(value, image_id)


def _decode_cursor(sort: str, cursor: str) -> tuple[object, int] | None:
    if cursor in ("", "0"):
        return None
    try:
        if sort == "id":
            return None, int(cursor)
        value, image_id = _unpack(cursor)
        want = float if "p_fake" in sort else str
        if isinstance(value, int) and want is float:
            value = float(value)
        if not isinstance(value, want) or not isinstance(image_id, int) or isinstance(image_id, bool):
            raise BadCursor(cursor)
        return value, image_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadCursor(cursor) from None


def results_page(session: Session, job_id: str, cursor: str, limit: int,
                 filt: ResultFilter = ResultFilter()) -> tuple[list[dict], str | None]:
    """A page of results with what the worker recorded about each prediction (crop scores, thresholds) and any
    person's review. Keyset pages: a cursor is the last row's sort key and id, so deep pages cost no more."""
    key, descending = SORTS[filt.sort]
    rerun_of = session.scalar(select(Job.rerun_of).where(Job.id == job_id))
    if filt.changed and rerun_of is None:
        raise NotARerun(job_id)
    earlier = aliased(ImageItem)
    query = (
        select(ImageItem, Prediction.details, Review, earlier if rerun_of else null())
        .outerjoin(Prediction, (Prediction.sha256 == ImageItem.sha256) & (Prediction.model_version == ImageItem.model_version))
        .outerjoin(Review, Review.image_id == ImageItem.id)
        .where(ImageItem.job_id == job_id, *filt.where())
    )
    if rerun_of is not None:
        # Each file of the earlier job once: its first image of that name and content (a folder may hold the
        # same file twice), so a result is never listed twice.
        first = (select(func.min(ImageItem.id).label("id"), ImageItem.filename, ImageItem.sha256)
                 .where(ImageItem.job_id == rerun_of).group_by(ImageItem.filename, ImageItem.sha256).subquery())
        query = (query.outerjoin(first, (first.c.filename == ImageItem.filename) & (first.c.sha256 == ImageItem.sha256))
                 .outerjoin(earlier, earlier.id == first.c.id))
        if filt.changed:
            query = query.where(ImageItem.status == DONE, earlier.status == DONE, earlier.label != ImageItem.label)
    after = _decode_cursor(filt.sort, cursor)
    if filt.sort == "id":
        if after:
            query = query.where(ImageItem.id > after[1])
        query = query.order_by(ImageItem.id)
    else:
        if after:
            value, last_id = after
            beyond = key < value if descending else key > value
            query = query.where(or_(beyond, and_(key == value, ImageItem.id > last_id)))
        query = query.order_by(key.desc() if descending else key, ImageItem.id)
    rows = session.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1][0]
        value = {"p_fake": last.p_fake if last.p_fake is not None else -1.0, "filename": last.filename}
        next_cursor = _encode_cursor(filt.sort, value.get(filt.sort.lstrip("-")), last.id)
    return [result_row(item, details, review, before) for item, details, review, before in rows], next_cursor


def iter_results(session: Session, job_id: str, chunk: int = 1000,
                 filt: ResultFilter = ResultFilter()) -> Iterator[dict]:
    cursor: str | None = "0"
    while cursor is not None:
        rows, cursor = results_page(session, job_id, cursor, chunk, filt)
        yield from rows
