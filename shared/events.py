"""Job change notices over Redis pub/sub: a worker publishes the jobs it just finished images of, and the web's
long-polls wake on them instead of querying the database in a loop.

A notice is only a hint: the database stays the source of truth, a waiter always re-reads it, and a lost
notice costs a waiter at most its re-check interval.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import RedisError

from .logs import kv

CHANNEL = "pixelproof:job-changed"
log = logging.getLogger(__name__)


def publish_changes(redis: Redis, job_ids: Iterable[str]) -> None:
    """Best effort: a broker hiccup must not fail a batch whose results are already committed."""
    for job_id in sorted(set(job_ids)):
        try:
            redis.publish(CHANNEL, job_id)
        except (RedisError, OSError) as exc:
            log.warning(kv(event="notice_failed", job_id=job_id, reason=str(exc)))
            return
