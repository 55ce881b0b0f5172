"""The Celery app both sides share: the web enqueues by task name, the worker registers the tasks."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from celery import Celery

from .settings import Settings

CLASSIFY_TASK = "pixelproof.classify"
SWEEP_TASK = "pixelproof.sweep"
WEBHOOK_TASK = "pixelproof.deliver_webhook"
RETENTION_TASK = "pixelproof.retention"
QUEUE = "pixelproof"


def create_celery(settings: Settings) -> Celery:
    app = Celery("pixelproof", broker=settings.broker_url(), set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in the app database, never in a result backend
        result_backend=None,
        # At-least-once: a task is acknowledged only after it finished; a lost worker's task is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=max(5, settings.task_time_limit - 30),
        worker_max_memory_per_child=settings.worker_max_memory_kb,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
        beat_schedule=beat_schedule(settings),
    )
    return app


def beat_schedule(settings: Settings) -> dict:
    schedule = {"sweep-stale-images": {"task": SWEEP_TASK, "schedule": settings.sweep_interval}}
    if settings.retention_days:
        schedule["delete-expired-jobs"] = {"task": RETENTION_TASK, "schedule": settings.retention_interval_s}
    return schedule


def chunked(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    """As few chunks of at most ``size`` as hold the ids, of sizes that differ by at most one, in order.

    Even, not full-then-remainder: 20 photos at batch 16 as 16 + 4 kept one worker busy four times as long as
    the other; as 10 + 10 both finish together."""
    n = -(-len(ids) // size) if size > 0 else 0
    start = 0
    for i in range(n):
        end = start + len(ids) // n + (i < len(ids) % n)
        yield list(ids[start:end])
        start = end


def enqueue_images(celery: Celery, image_ids: Sequence[int], batch_size: int) -> int:
    """One classify task per batch of ids; returns how many tasks were sent. Ids only, never bytes."""
    sent = 0
    for chunk in chunked(image_ids, batch_size):
        celery.send_task(CLASSIFY_TASK, args=[chunk], queue=QUEUE)
        sent += 1
    return sent
