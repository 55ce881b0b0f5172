"""A per-client fixed-window limit on upload requests; 0 disables it.

In-process on purpose: each gunicorn worker counts its own share, which keeps the web free of extra state
for a limit whose job is to stop runaway scripts, not to meter exactly.
"""
from __future__ import annotations

import threading
import time


class RateLimiter:
    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._window = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> int | None:
        """Return None when allowed, else the seconds until the window resets."""
        if not self.per_minute:
            return None
        now = time.time()
        window = int(now // 60)
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            count = self._counts.get(client, 0) + 1
            self._counts[client] = count
        if count > self.per_minute:
            return max(1, int(60 - now % 60))
        return None
