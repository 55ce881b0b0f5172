"""Log lines are key=value pairs that a log search can split without guessing."""
from __future__ import annotations

from shared.logs import kv


def test_values_with_spaces_quotes_or_nothing_are_quoted():
    assert kv(job="j1", n=3, msg='a "b"', empty="") == 'job=j1 n=3 msg="a \\"b\\"" empty=""'
