"""Long-polls that wait on job change notices, with a bounded number of waiting requests.

Each web process runs one listener thread subscribed to the workers' notices (shared.events); a waiting
request sleeps on an Event until a notice for its job arrives, and re-reads the database only then (or every
RECHECK_S, in case a notice was lost). A waiting request still holds a gunicorn thread, so how many may wait is
bounded per process and per client; past either bound the request is refused with 429 at once, which leaves
the other threads for everyone else.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError

from shared.events import CHANNEL
from shared.logs import kv

log = logging.getLogger(__name__)
RECHECK_S = 5.0  # a waiter re-reads the database this often even with no notice
SUBSCRIBE_WAIT_S = 2.0  # how long a waiter waits for a listener it started to be subscribed (else RECHECK_S)
IDLE_S = 30.0  # the listener stops (and drops its connection) after this long with nobody waiting


class TooManyWaiting(Exception):
    pass


class JobWatcher:
    def __init__(self, redis_url: str, max_waiting: int, max_waiting_per_client: int):
        self.redis_url = redis_url
        self.max_waiting = max_waiting
        self.max_waiting_per_client = max_waiting_per_client
        self._lock = threading.Lock()
        self._waiting: Counter[str] = Counter()
        self._events: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        # Set while the listener's subscription is in place; cleared when it fails or stops (a stopped listener
        # is the only way _thread becomes None again), so a listener that starts always starts unsubscribed.
        self._subscribed = threading.Event()

    @contextmanager
    def slot(self, client: str):
        """Hold one of the bounded waiting places for the length of a long-poll, or raise TooManyWaiting."""
        with self._lock:
            if sum(self._waiting.values()) >= self.max_waiting:
                raise TooManyWaiting("the server")
            if self._waiting[client] >= self.max_waiting_per_client:
                raise TooManyWaiting("this client")
            self._waiting[client] += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting[client] -= 1
                if not self._waiting[client]:
                    del self._waiting[client]

    @contextmanager
    def watching(self, job_id: str):
        """An Event set by every notice for the job. Register before reading the job, so no notice falls
        between the read and the wait; this returns once the listener is subscribed, because a notice
        published before its SUBSCRIBE reached Redis is lost (one-image jobs waited RECHECK_S for it: p95
        5 s of one-image latency in benchmarks/run.py)."""
        event = threading.Event()
        with self._lock:  # one lock with the listener's decision to stop: a waiter is never left without one
            self._events.setdefault(job_id, set()).add(event)
            if self._thread is None:
                # Started lazily in the process that serves requests: gunicorn forks before the first one.
                self._thread = threading.Thread(target=self._listen, name="job-notices", daemon=True)
                self._thread.start()
        self._subscribed.wait(SUBSCRIBE_WAIT_S)  # Redis down: not subscribed, and the waiter re-reads every RECHECK_S
        try:
            yield event
        finally:
            with self._lock:
                waiters = self._events.get(job_id)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._events[job_id]

    def _idle_long_enough(self, idle_since: float) -> bool:
        with self._lock:
            if self._events:
                return False
            if time.monotonic() - idle_since < IDLE_S:
                return False
            self._thread = None
            self._subscribed.clear()
            return True

    def _wake(self, job_id: str) -> None:
        with self._lock:
            for event in self._events.get(job_id, ()):
                event.set()

    def _listen(self) -> None:
        failing = False
        idle_since = time.monotonic()
        while True:
            pubsub = None
            try:
                pubsub = Redis.from_url(self.redis_url, socket_connect_timeout=2, health_check_interval=30).pubsub()
                pubsub.subscribe(CHANNEL)
                while (pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
                    pass  # until Redis confirms the subscription: notices from then on reach us
                self._subscribed.set()
                if failing:
                    log.info(kv(event="notices_available"))
                    failing = False
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self._wake(message["data"].decode(errors="replace"))
                    if self._events:
                        idle_since = time.monotonic()
                    elif self._idle_long_enough(idle_since):
                        return
            except (RedisError, OSError) as exc:  # the broker is down: waiters fall back to RECHECK_S
                self._subscribed.clear()
                if not failing:
                    log.warning(kv(event="notices_unavailable", reason=str(exc)))
                    failing = True
                if self._idle_long_enough(idle_since):
                    return
                time.sleep(2.0)
            finally:
                if pubsub is not None:
                    pubsub.close()
