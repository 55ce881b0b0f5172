"""Jobs, their images, and the per-model prediction cache. The app database is the source of truth."""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.limits import MAX_TITLE
from shared.scoring import LABELS  # noqa: F401 - the label names, owned by the rule that gives them

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
TERMINAL = (DONE, ERROR, CANCELLED)
STATUSES = (QUEUED, RUNNING, DONE, ERROR, CANCELLED)
UNFINISHED = (QUEUED, RUNNING)
# A person's verdict on a result (POST .../review); "unsure" is recorded but never exported for training.
REVIEW_VERDICTS = ("real", "fake", "unsure")
# Where a job's webhook stands: due once the job finishes, then delivered or given up on.
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"
# The columns of a result as the API and the CLI export it (CSV header order). real_below and fake_from are the
# thresholds the label was given by; regions are the crops the model scored (JSON: x, y, w, h, p_fake); evidence
# is what the file says about itself (JSON: kind, says, strength, detail; shared.evidence); encoding is how the
# file was encoded (JSON: format, JPEG quality and chroma; shared.encoding); earlier is, in a rerun, the same file
# as the earlier job left it (JSON: status, label, p_fake, model_version).
RESULT_FIELDS = ("filename", "sha256", "status", "label", "p_fake", "real_below", "fake_from", "error",
                 "model_version", "image_width", "image_height", "encoding", "regions", "evidence", "review",
                 "review_note", "earlier")


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """One CSV cell, never a live formula: text that a spreadsheet would evaluate gets a leading apostrophe.

    Only text is touched (a negative number stays a number); the JSON API keeps the true value.
    """
    if isinstance(value, (list, dict)):  # regions, evidence, encoding: compact JSON instead of Python's repr
        value = json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_cells(row: dict) -> dict:
    return {k: csv_cell(v) for k, v in row.items()}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    # 128 random bits: job ids double as capabilities when no API tokens are configured.
    return secrets.token_urlsafe(16)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    # GET /api/jobs reads one owner's jobs newest first, a keyset page at a time: this index serves the filter,
    # the order and the cursor together, so a page costs the same however many jobs the owner has.
    __table_args__ = (Index("ix_jobs_owner_created", "owner", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    owner: Mapped[str | None] = mapped_column(String(64))  # sha256 of the API token, if any
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The job whose files this one classifies again with the model of the day (no foreign key: that job may be
    # deleted and this one kept).
    rerun_of: Mapped[str | None] = mapped_column(String(32))
    # What its owner calls it ("Election night, desk 2"; the page and `pixelproof submit` start from the folder's
    # name): ids are 128 random bits, which nobody tells apart in a list of jobs.
    title: Mapped[str | None] = mapped_column(String(MAX_TITLE))
    # Webhook: POSTed the job summary once it finishes (shared.webhooks); status NULL until then.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_status: Mapped[str | None] = mapped_column(String(16))
    webhook_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # last claim or attempt
    # Each time the job finishes (again, after files were added) its webhook is due again: a new round.
    webhook_round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    images: Mapped[list[ImageItem]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                                   passive_deletes=True)


class ImageItem(Base):
    """One uploaded file of a job. Its status only moves forward, so redelivered tasks are harmless."""

    __tablename__ = "images"
    __table_args__ = (Index("ix_images_job_status", "job_id", "status"), Index("ix_images_status_touched", "status", "touched_at"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    label: Mapped[str | None] = mapped_column(String(16))
    p_fake: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(80))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Last time a producer or worker took responsibility for this row; the sweeper re-enqueues stale ones.
    touched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    job: Mapped[Job] = relationship(back_populates="images")


class Prediction(Base):
    """Cache: the same content scored by the same model version is computed once."""

    __tablename__ = "predictions"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(80), primary_key=True)
    p_fake: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)  # a decode error is a property of the bytes: cache it too
    # Where the model looked and by which rule it labelled: {"width", "height", "thresholds", "regions": [...]}
    details: Mapped[dict | None] = mapped_column(JSON)
    # The file says it is AI-generated (shared.evidence): counted per job without reading every details.
    declares_ai: Mapped[bool | None] = mapped_column(Boolean)
    # The file's encoding in the bands a job's summary counts (shared.encoding.group), likewise.
    encoding: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A model a worker has served: its label thresholds and the scope and limits its checkpoint states, so the
    web (which never opens a checkpoint) can show them next to the results."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    thresholds: Mapped[dict | None] = mapped_column(JSON)
    notes: Mapped[dict | None] = mapped_column(JSON)  # {"scope": str, "limits": [str], "card": path}
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # latest load


class WebhookAttempt(Base):
    """One POST of a job's webhook, kept so the job's JSON can show what the receiver answered."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, ... within its round
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    ms: Mapped[float] = mapped_column(Float)


class IdempotencyKey(Base):
    """A client's Idempotency-Key, so a request retried after a timeout returns the job it already made."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" when no API tokens are configured
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request: Mapped[str] = mapped_column(String(64))  # "create" or "files:<job id>", " bytes=<length>+<boundary's>"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Review(Base):
    """A person's verdict on one result, and why: shown beside the model's, exported for fine-tuning."""

    __tablename__ = "reviews"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
