"""Log lines are key=value and reach whatever stderr is current when they are written."""
from __future__ import annotations

import io
import logging
import sys

import pytest

from shared.logs import kv, setup_logging


def test_values_with_spaces_quotes_or_nothing_are_quoted():
    assert kv(job="j1", n=3, msg='a "b"', empty="") == 'job=j1 n=3 msg="a \\"b\\"" empty=""'


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_a_closed_stderr_from_before_does_not_break_logging(monkeypatch, restore_root_logger):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging()
    first.close()  # what pytest does to a test's captured stderr, and an embedding host may do too
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("pixelproof.test").info("event=%s job=%s", "done", "j42")
    assert "level=INFO logger=pixelproof.test event=done job=j42" in second.getvalue()
