"""The allocator setting the web starts with (shared.malloc): freed photo-sized memory is
reused, not handed back to the kernel and faulted in again for the next photo."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Eight 1 MiB pieces made and freed 50 times, in a thread (its own heap, as in gunicorn's threads) and then in
# the main thread: the page faults each side takes.
ROUNDS = """
import os, resource, sys, threading
sys.path.insert(0, {root!r})
if {tuned}:
    from shared.malloc import keep_freed_memory
    assert keep_freed_memory()
def rounds(out):
    for _ in range(3):
        x = [os.urandom(1 << 20) for _ in range(8)]; del x
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        x = [os.urandom(1 << 20) for _ in range(8)]; del x
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
out = []
t = threading.Thread(target=rounds, args=(out,)); t.start(); t.join()
rounds(out)
print(*out)
"""


def faults(tuned: bool) -> list[int]:
    code = ROUNDS.format(root=str(ROOT), tuned=tuned)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [int(v) for v in out.split()]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_freed_photo_sized_memory_is_reused_without_page_faults():
    pages = 50 * 8 * (1 << 20) // 4096
    assert all(n > pages // 4 for n in faults(tuned=False))  # glibc's default gives it back and faults it in again
    assert all(n < pages // 100 for n in faults(tuned=True))

