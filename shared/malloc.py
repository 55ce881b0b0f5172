"""glibc's allocator, told to keep freed memory for reuse in the web, which passes uploads through memory.

By default glibc gives each block over 128 KiB pages of its own (raising that bar only as far as the largest
block freed so far) and hands freed memory back to the kernel once a little of it lies free at the top of a
heap. The web receives 4 MB photos in pieces of up to 1 MiB in 16 threads, and the kernel then found and
zeroed new pages for nearly every piece: page faults were a third of its CPU per 12-megapixel upload (16.8-18
-> 11-13 ms with this; peak RSS 112 -> 117 MB). Not in the workers: the same setting made the worker's own
code slower (the no-queue ceiling 34 -> 24-29 photos/s; with only one of the two thresholds, 16-24), so they
keep glibc's adaptive defaults."""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit: larger blocks still get pages of their own
TRIM_THRESHOLD = 256 * 1024 * 1024


def keep_freed_memory() -> bool:
    """True where the allocator took the settings (glibc); elsewhere nothing changes."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
