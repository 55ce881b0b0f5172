"""GET /metrics: the counters and histograms every web and worker process wrote (shared.metrics), added up,
and gauges read when scraped: queue depth, images by status, workers answering, the current model."""
from __future__ import annotations

import os
import threading
import time

from flask import Blueprint, Response, current_app
from redis.exceptions import RedisError
from sqlalchemy import func, select

from shared import jobs
from shared.metrics import ENV
from shared.models import ImageItem
from shared.queue import QUEUE

from .auth import current_owner

metrics_page = Blueprint("metrics", __name__)
WORKERS_CACHE_S = 10.0  # a ping waits for answers: a scrape every few seconds must not wait each time


class _ScrapeCollector:
    """Read at scrape time from the database, Redis and the workers, never stored in files."""

    def __init__(self, services):
        self.services = services
        self._workers: tuple[float, int] = (0.0, 0)
        self._lock = threading.Lock()

    def _workers_alive(self) -> int:
        with self._lock:
            at, count = self._workers
            if time.monotonic() - at > WORKERS_CACHE_S:
                try:
                    # On a connection of its own, closed here: pooled, it would keep the unread answer to its
                    # last wait for replies, which kombu reads again in any process forked later (and blocks).
                    with self.services.celery.connection_for_read() as connection:
                        count = len(self.services.celery.control.ping(timeout=0.5, connection=connection) or [])
                except Exception:  # noqa: BLE001 - a broker that is down means no worker is reachable
                    count = 0
                self._workers = (time.monotonic(), count)
            return count

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("pixelproof_queue_depth", "Classify tasks waiting in the Redis queue")
        try:
            depth.add_metric([], self.services.redis.llen(QUEUE))
        except (RedisError, OSError):
            depth.add_metric([], float("nan"))
        yield depth
        images = GaugeMetricFamily("pixelproof_images", "Images in the database, by status", labels=["status"])
        model = GaugeMetricFamily("pixelproof_model_info", "The model workers loaded last (value 1)",
                                  labels=["name", "version"])
        with self.services.db.session() as s:
            for status, n in s.execute(select(ImageItem.status, func.count()).group_by(ImageItem.status)):
                images.add_metric([status], n)
            current = jobs.current_model(s)
        if current:
            model.add_metric([current["name"], current["version"]], 1)
        yield images
        yield model
        workers = GaugeMetricFamily("pixelproof_workers_alive", "Celery workers that answered a ping")
        workers.add_metric([], self._workers_alive())
        yield workers


@metrics_page.get("/metrics")
def metrics():
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
    )
    from prometheus_client.multiprocess import MultiProcessCollector

    current_owner()  # with API tokens on, a scraper sends one too (Prometheus: authorization.credentials)
    services = current_app.extensions["pixelproof"]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ[ENV])
    registry.register(services.scrape_collector)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def make_scrape_collector(services) -> _ScrapeCollector:
    return _ScrapeCollector(services)
