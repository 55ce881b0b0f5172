"""Prometheus metrics in multi-process mode: every gunicorn and Celery process writes its counters and
histograms to files in one folder (settings.prometheus_dir), and the web's /metrics adds them up.

prometheus-client decides at import whether values live in memory or in those files, so :func:`use_folder`
runs first in each process (web.app, worker.celery_app) and the metrics are made on first use. A process that
never called it (a unit test calling a service function) counts in memory, harmlessly.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

from .logs import kv

ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger(__name__)
# Made with registry=None: in multi-process mode /metrics reads every process's files (web.metrics), and a
# process's default registry is never exported. Upload to result for one image; and one classify task. Seconds.
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
TASK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


def use_folder(folder: Path) -> None:
    """Make this process write its metrics to folder (kept if the environment already names one)."""
    if ENV not in os.environ:
        os.environ[ENV] = str(folder)
    Path(os.environ[ENV]).mkdir(parents=True, exist_ok=True)


def clear_folder(folder: Path) -> None:
    """Start a fresh set of files (pixelproof up, before it starts any process): counters begin at zero."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.glob("*.db"):
        f.unlink(missing_ok=True)


_made: SimpleNamespace | None = None
_lock = threading.Lock()


def metrics() -> SimpleNamespace:
    """The metrics of this process, made once (the first requests of a threaded web process race for it)."""
    global _made
    if _made is None:
        with _lock:
            if _made is None:
                _made = _make()
    return _made


def _make() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram, values

    if os.environ.get(ENV):
        # Files are named by host and pid: containers sharing the folder each have a pid 1.
        host = socket.gethostname().replace("_", "-")
        values.ValueClass = values.MultiProcessValue(process_identifier=lambda: f"{host}-{os.getpid()}")
    return SimpleNamespace(
        submitted=Counter("pixelproof_images_submitted", "Images accepted into jobs by the web", registry=None),
        classified=Counter("pixelproof_images_classified", "Images classified, by label", ["label"], registry=None),
        failed=Counter("pixelproof_images_failed", "Images that ended in error, by reason", ["reason"],
                       registry=None),
        cancelled=Counter("pixelproof_images_cancelled", "Images cancelled before they were classified",
                          registry=None),
        task_seconds=Histogram("pixelproof_task_seconds", "Time a worker spent on one task", ["task"],
                               buckets=TASK_BUCKETS, registry=None),
        latency=Histogram("pixelproof_image_latency_seconds", "Upload to result, per classified image",
                          buckets=LATENCY_BUCKETS, registry=None),
        webhooks=Counter("pixelproof_webhook_attempts", "Webhook POSTs, by outcome", ["outcome"], registry=None),
        deleted=Counter("pixelproof_jobs_deleted", "Jobs deleted, by why", ["why"], registry=None),
    )


def record(name: str, amount: float = 1, **labels: str) -> None:
    """Add to a counter. Best effort: a metric that cannot be written (a full disk) never fails a request or
    a task whose work is already committed."""
    _safely(name, lambda m: m.inc(amount), labels)


def observe(name: str, value: float, **labels: str) -> None:
    _safely(name, lambda m: m.observe(value), labels)


def _safely(name: str, update, labels: dict) -> None:
    try:
        metric = getattr(metrics(), name)
        update(metric.labels(**labels) if labels else metric)
    except Exception as exc:  # noqa: BLE001 - see record()
        log.warning(kv(event="metric_not_recorded", metric=name, reason=f"{type(exc).__name__}: {exc}"))


def failure_reason(error: str | None) -> str:
    """A small fixed set of reasons for a label value (the error text itself is unbounded)."""
    text = (error or "").lower()
    for needle, reason in (("too small", "too_small"), ("scans", "too_many_scans"), ("pixels", "too_many_pixels"),
                           ("missing", "missing_upload"),
                           ("times and never finished", "gave_up"), ("not supported", "unsupported_format"),
                           ("not a recognised image", "not_an_image"), ("not an image", "not_an_image")):
        if needle in text:
            return reason
    return "undecodable"
