"""Log lines are key=value pairs that a log search can split without guessing."""
from __future__ import annotations

from shared.logs import kv


def test_values_with_spaces_quotes_or_nothing_are_quoted():
    assert kv(job="j1", n=3, msg='a "b"', empty="") == 'job=j1 n=3 msg="a \\"b\\"" empty=""'


def test_the_sweepers_routine_lines_are_dropped_and_its_failures_kept():
    import logging

    from worker.routine_logs import RoutineTasks

    routine = RoutineTasks(["pixelproof.sweep"])

    def record(level, msg, args):
        return logging.LogRecord("celery.app.trace", level, __file__, 1, msg, args, None)

    trace = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"
    sweep = {"name": "pixelproof.sweep", "id": "a1", "runtime": 0.01, "return_value": 0}
    assert not routine.filter(record(logging.INFO, trace, (sweep,)))
    assert not routine.filter(record(logging.INFO, "Scheduler: Sending due task %s (%s)",
                                     ("sweep-stale-images", "pixelproof.sweep")))
    assert routine.filter(record(logging.ERROR, "Task %(name)s[%(id)s] raised unexpected: %(exc)s",
                                 ({**sweep, "exc": "OperationalError"},)))
    assert routine.filter(record(logging.INFO, trace, ({**sweep, "name": "pixelproof.classify"},)))
    assert routine.filter(record(logging.INFO, "Scheduler: Sending due task %s (%s)",
                                 ("retention", "pixelproof.retention")))
