"""Thin Celery tasks and the per-process lifecycle (engine disposed and model loaded after fork)."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import torch
from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded
from redis import Redis
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.db import Database
from shared.deletion import delete_expired
from shared.events import publish_changes
from shared.logs import kv
from shared.metrics import observe, record
from shared.queue import (
    CLASSIFY_TASK,
    RETENTION_TASK,
    SWEEP_TASK,
    WEBHOOK_TASK,
    enqueue_images,
)
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.webhooks import Policy

from . import service
from .inference import Classifier, default_torch_threads

log = logging.getLogger(__name__)


class WorkerContext:
    """Per-process state: one database, one storage handle, one model copy."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = Database(settings.db_url)
        self.storage = LocalStorage(settings.upload_dir)
        self._classifier: Classifier | None = None
        self._redis: Redis | None = None
        self._registered = False
        self.processes = 1  # the pool's size, learnt at worker start, so each process takes its share of cores
        self.in_pool_child = False  # a prefork child, which may exit to be replaced by a fresh one
        self._lock = threading.Lock()

    @property
    def classifier(self) -> Classifier:
        with self._lock:  # threads pool: load once
            if self._classifier is None:
                s = self.settings
                torch.set_num_threads(default_torch_threads(s.torch_threads, self.processes))
                self._classifier = Classifier(s.model_path, s.device, s.batch_size, s.decode_threads, s.max_pixels,
                                              precision=s.precision, max_scans=s.max_jpeg_scans)
            return self._classifier

    def register_model(self) -> None:
        """Once per process, before its first batch: the web shows what the model is from this record."""
        if self._registered:
            return
        c = self.classifier
        share = c.meta.false_fake_share  # shown with the thresholds: what fake_from was set to let through
        notes = {**c.meta.notes, "max_false_fake": share} if share is not None else c.meta.notes
        service.register_model(self.db, c.meta.name, c.version, c.thresholds, notes)
        self._registered = True

    def notify(self, job_ids: set[str]) -> None:
        if self._redis is None:
            self._redis = Redis.from_url(self.settings.broker_url(), socket_timeout=2, socket_connect_timeout=2)
        publish_changes(self._redis, job_ids)

    @property
    def webhook_policy(self) -> Policy:
        s = self.settings
        return Policy(s.webhook_secret or "", s.webhook_allowlist, s.webhook_max_attempts, s.webhook_backoff_s,
                      s.webhook_timeout_s)

    def after_fork(self) -> None:
        self.db.dispose()
        self._classifier = None
        self._redis = None  # a connection made before fork is never shared
        self._registered = False


def register_tasks(app: Celery, ctx: WorkerContext) -> None:
    def send_webhooks(job_ids: list[str]) -> None:
        for job_id in job_ids:
            app.send_task(WEBHOOK_TASK, args=[job_id])

    def changed(job_ids: set[str]) -> None:
        """After a commit that moved these jobs: wake their long-polls; send the webhooks of finished ones."""
        ctx.notify(job_ids)
        send_webhooks(service.due_webhooks(ctx.db, job_ids))

    @app.task(name=CLASSIFY_TASK, bind=True, acks_late=True, autoretry_for=(OperationalError, DBAPIError),
              retry_backoff=True, retry_backoff_max=60, retry_jitter=True, max_retries=8)
    def classify(self, image_ids: list[int]) -> None:
        ctx.register_model()
        started = time.monotonic()
        try:
            result = service.classify_images(ctx.db, ctx.storage, ctx.classifier, image_ids, notify=changed,
                                             max_attempts=ctx.settings.max_attempts)
        except SoftTimeLimitExceeded:
            log.error(kv(event="task_overran", task_id=self.request.id, images=len(image_ids),
                         limit_s=ctx.settings.task_time_limit, pid=os.getpid()))
            if ctx.in_pool_child:
                # A decoding thread cannot be stopped, and would keep this process busy for the next batches:
                # end the process instead. The message is not acknowledged (acks_late), so it is delivered
                # again, and the batch is then classified image by image (service.classify_images).
                logging.shutdown()
                os._exit(70)
            raise
        observe("task_seconds", time.monotonic() - started, task="classify")
        log.info(kv(event="task_done", task_id=self.request.id, redelivered=bool(self.request.delivery_info.get("redelivered")), **result))

    @app.task(name=SWEEP_TASK, autoretry_for=(OperationalError, DBAPIError), retry_backoff=True, max_retries=3)
    def sweep() -> int:
        # A due webhook untouched for longer than its longest backoff lost its task: send it again.
        policy = ctx.webhook_policy
        lost_after = max(ctx.settings.stale_after, policy.delay(policy.max_attempts) + policy.timeout_s)
        send_webhooks(service.due_webhooks(ctx.db, None, stale_after=lost_after))
        return service.sweep_stale(ctx.db, lambda ids: enqueue_images(app, ids, ctx.settings.batch_size),
                                   ctx.settings.stale_after)

    @app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, autoretry_for=(OperationalError, DBAPIError),
              retry_backoff=True, max_retries=8)
    def deliver_webhook(self, job_id: str) -> None:
        """One attempt; the next is this task again after the policy's backoff (its countdown)."""
        started = time.monotonic()
        attempt = service.deliver_webhook(ctx.db, job_id, ctx.webhook_policy)
        observe("task_seconds", time.monotonic() - started, task="webhook")
        if attempt is not None and attempt.retry_in is not None:
            raise self.retry(countdown=attempt.retry_in, max_retries=None)

    @app.task(name=RETENTION_TASK, autoretry_for=(OperationalError, DBAPIError), retry_backoff=True, max_retries=3)
    def retention() -> int:
        days = ctx.settings.retention_days
        if not days:
            return 0
        deleted = delete_expired(ctx.db, ctx.storage, days)
        record("deleted", deleted.jobs, why="retention")
        log.info(kv(event="retention", days=days, jobs=deleted.jobs, images=deleted.images,
                    files_removed=deleted.files_removed, files_kept=deleted.files_kept))
        return deleted.jobs

    @signals.worker_init.connect(weak=False)
    def _pool_size(sender=None, **_):
        ctx.processes = getattr(sender, "concurrency", 1) or 1

    @signals.worker_process_init.connect(weak=False)
    def _after_fork(**_):
        ctx.in_pool_child = True
        ctx.after_fork()
        ctx.classifier  # noqa: B018 - load now, after fork, so the first batch does not wait
        try:
            ctx.register_model()  # so the page can describe the model before the first upload
        except (OperationalError, DBAPIError) as exc:  # the database may come later: tried again per batch
            log.warning(kv(event="model_not_registered", reason=str(exc)))


def check_model(settings: Settings) -> None:
    """Refuse to start a worker whose checkpoint is missing or corrupt.

    Runs in the parent before fork, so it stays on the CPU (no CUDA context) and on one thread: an OpenMP pool
    created here would be inherited half-dead by the children and deadlock their first forward pass.
    """
    from shared.modeling.checkpoint import CheckpointError, load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, meta = load_checkpoint(settings.model_path, device="cpu")
    except CheckpointError as exc:
        hint = ("" if Path(settings.model_path).exists() else " (set PIXELPROOF_MODEL_PATH to the checkpoint the "
                "workers should serve; a checkout has models/default.safetensors)")
        log.critical(kv(event="model_unusable", reason=f"{exc}{hint}"))
        raise SystemExit(f"Pixelproof worker cannot start: {exc}{hint}") from None
    finally:
        torch.set_num_threads(threads)
    log.info(kv(event="model_ok", model_version=meta.version, path=settings.model_path))
