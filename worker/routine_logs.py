"""The sweeper runs every PIXELPROOF_SWEEP_INTERVAL seconds (10 by default). Celery writes three INFO lines for
each run (beat sends it, the worker receives it, it succeeds), which on a quiet service were nearly all of its
log: 26,000 lines a day that said nothing. They are dropped; the sweep logs what it does when it does something
(event=requeued_stale), and its warnings and failures are kept. PIXELPROOF_LOG_LEVEL=DEBUG shows them all."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

# Where Celery logs a task's routine: beat sending it, the worker receiving it, the task's outcome.
CELERY_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


class RoutineTasks(logging.Filter):
    def __init__(self, task_names: Iterable[str]):
        super().__init__()
        self.names = frozenset(task_names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        args = record.args
        if isinstance(args, Mapping):  # the worker: Task %(name)s[%(id)s] received / succeeded
            return args.get("name") not in self.names
        if isinstance(args, tuple) and len(args) == 2:  # beat: Sending due task %s (%s), entry and task
            return args[1] not in self.names
        return True


def quiet_routine_tasks(task_names: Iterable[str], level: str) -> None:
    if level == "DEBUG":
        return
    routine = RoutineTasks(task_names)
    for name in CELERY_LOGGERS:
        logging.getLogger(name).addFilter(routine)
