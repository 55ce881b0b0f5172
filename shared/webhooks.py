"""Signed webhooks: when a job with a callback_url finishes, its summary is POSTed there.

Each POST carries ``Pixelproof-Signature: t=<unix seconds>,v1=<hex>``, where v1 is HMAC-SHA256 keyed with
PIXELPROOF_WEBHOOK_SECRET over ``"<t>." + body`` (the scheme Stripe and GitHub receivers know): the receiver
recomputes it, compares in constant time and refuses old timestamps, so a captured request cannot be replayed
later. Only URLs under an operator's allow-list are ever contacted, redirects are not followed, and every
attempt is recorded on the job. Delivery is at least once: a receiver may see a job twice.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .jobs import job_status
from .models import (
    UNFINISHED,
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
    WEBHOOK_PENDING,
    ImageItem,
    Job,
    WebhookAttempt,
    utcnow,
)

SIGNATURE_HEADER = "Pixelproof-Signature"
EVENT = "job.finished"
TOLERANCE_S = 300  # how old a signed timestamp a receiver should accept
MAX_URL = 2048


def url_problem(url: str, allowlist: Sequence[str]) -> str | None:
    """Why nothing may be sent to url, or None. An entry allows its scheme, host and port, and paths under it."""
    if not allowlist:
        return "webhooks are off on this server: its operator has not set PIXELPROOF_WEBHOOK_ALLOWLIST"
    if len(url) > MAX_URL:
        return f"callback_url is longer than {MAX_URL} characters"
    try:
        target = urlsplit(url)
        port = _port(target)
    except ValueError:
        return "callback_url is not a valid URL"
    if target.scheme not in ("http", "https") or not target.hostname:
        return "callback_url must be an http:// or https:// URL"
    if target.username is not None or target.password is not None:
        return "callback_url must not carry a user name or password"
    if ".." in target.path or "%2e" in target.path.lower() or any(ord(c) < 33 for c in url):
        return "callback_url must not contain dot segments, spaces or control characters"
    for entry in allowlist:
        allowed = urlsplit(entry)
        base = allowed.path.rstrip("/")
        if ((target.scheme, target.hostname, port) == (allowed.scheme, allowed.hostname, _port(allowed))
                and (not base or target.path == base or target.path.startswith(base + "/"))):
            return None
    return "callback_url is not under any address this server's operator allows (PIXELPROOF_WEBHOOK_ALLOWLIST)"


def _port(parts) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = TOLERANCE_S, now: float | None = None) -> bool:
    """What a receiver does (the README shows the same steps): recompute, compare in constant time, refuse old."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={fields.get('v1', '')}")


def claim_finished(session: Session, job_ids: Sequence[str] | None = None) -> list[str]:
    """Mark the webhooks of jobs that have just finished as due, and return those jobs (each exactly once, even
    when several workers finish a job's last images at the same time). None: look at every job."""
    unfinished = exists().where(ImageItem.job_id == Job.id, ImageItem.status.in_(UNFINISHED))
    has_images = exists().where(ImageItem.job_id == Job.id)
    stmt = update(Job).where(Job.callback_url.is_not(None), Job.webhook_status.is_(None), has_images, ~unfinished)
    if job_ids is not None:
        # Most jobs have no webhook: a read first, so a worker's batch takes no write lock for nothing.
        waiting = session.scalars(select(Job.id).where(Job.id.in_(list(job_ids)), Job.callback_url.is_not(None),
                                                       Job.webhook_status.is_(None))).all()
        session.rollback()
        if not waiting:
            return []
        stmt = stmt.where(Job.id.in_(waiting))
    claimed = session.execute(stmt.values(webhook_status=WEBHOOK_PENDING, webhook_at=utcnow(),
                                          webhook_round=Job.webhook_round + 1)
                              .returning(Job.id)).scalars().all()
    session.commit()
    return sorted(claimed)


def stale_pending(session: Session, stale_after: float) -> list[str]:
    """Due webhooks nobody has tried for stale_after seconds (a lost task): touched and returned to re-send."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    ids = session.scalars(select(Job.id).where(Job.webhook_status == WEBHOOK_PENDING, Job.webhook_at < cutoff)
                          .limit(1000)).all()
    if ids:
        session.execute(update(Job).where(Job.id.in_(ids)).values(webhook_at=utcnow()))
        session.commit()
    return list(ids)


@dataclass(frozen=True)
class Policy:
    secret: str
    allowlist: tuple[str, ...]
    max_attempts: int
    backoff_s: float
    timeout_s: float

    def delay(self, attempt: int) -> float:
        """Exponential backoff before the attempt after `attempt`: backoff, 2x, 4x, ..."""
        return self.backoff_s * 2 ** (attempt - 1)


@dataclass(frozen=True)
class Attempt:
    number: int
    status_code: int | None
    error: str | None
    ms: float
    retry_in: float | None  # seconds until the next attempt; None when this was the last


def deliver(session: Session, job_id: str, policy: Policy) -> Attempt | None:
    """One delivery attempt of a due webhook, recorded on the job. None when there is nothing to send (the job
    was deleted, or its webhook already delivered or given up)."""
    job = session.get(Job, job_id)
    if job is None or job.webhook_status != WEBHOOK_PENDING:
        return None
    round_ = job.webhook_round
    number = (session.scalar(select(func.count()).select_from(WebhookAttempt)
                             .where(WebhookAttempt.job_id == job_id, WebhookAttempt.round == round_)) or 0) + 1
    url = job.callback_url or ""
    body = json.dumps({"event": EVENT, "job": job_status(session, job)}, separators=(",", ":")).encode()
    session.commit()  # no transaction stays open while the receiver takes its time
    started = time.monotonic()
    refused = url_problem(url, policy.allowlist)
    status_code, error = (None, refused) if refused else _post(url, body, policy, number)
    ms = (time.monotonic() - started) * 1000
    ok = status_code is not None and 200 <= status_code < 300
    final = ok or number >= policy.max_attempts or refused is not None
    session.add(WebhookAttempt(job_id=job_id, round=round_, attempt=number, status_code=status_code, error=error, ms=ms))
    # Only the webhook this attempt was for: a job deleted or given new files meanwhile is left as it is.
    session.execute(update(Job).where(Job.id == job_id, Job.webhook_status == WEBHOOK_PENDING,
                                      Job.webhook_round == round_).values(
        webhook_status=WEBHOOK_DELIVERED if ok else WEBHOOK_FAILED if final else WEBHOOK_PENDING, webhook_at=utcnow()))
    try:
        session.commit()
    except IntegrityError:  # the job was deleted while its webhook was in flight
        session.rollback()
        return None
    return Attempt(number, status_code, error, ms, None if final else policy.delay(number))


def _post(url: str, body: bytes, policy: Policy, number: int) -> tuple[int | None, str | None]:
    """POST once with the standard library: no redirect is ever followed (it could leave the allow-list)."""
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = connection(parts.hostname, parts.port, timeout=policy.timeout_s)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Pixelproof-Webhook/1",
        "Pixelproof-Event": EVENT,
        "Pixelproof-Attempt": str(number),
        SIGNATURE_HEADER: sign(policy.secret, body, int(time.time())),
    }
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body, headers)
        resp = conn.getresponse()
        resp.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    finally:
        conn.close()
    if 300 <= resp.status < 400:
        return resp.status, "redirects are not followed: give the final URL as callback_url"
    return resp.status, None if 200 <= resp.status < 300 else f"the receiver answered HTTP {resp.status}"
