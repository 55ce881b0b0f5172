"""key=value log lines, so a job id can be grepped across web and worker logs."""
from __future__ import annotations

import logging
import sys


def kv(**fields: object) -> str:
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' ="'):
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = kv(ts=self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), level=record.levelname, logger=record.name)
        line = f"{head} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
