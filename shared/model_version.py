"""A model version is "<name>-<12 hex digits of its content hash>": checkpoints build it, and the web (which
never opens a checkpoint) reads the name back for versions recorded before workers registered their models."""
from __future__ import annotations

DIGEST_CHARS = 12


def make_version(name: str, hexdigest: str) -> str:
    return f"{name}-{hexdigest[:DIGEST_CHARS]}"


def name_of(version: str) -> str:
    head, sep, tail = version.rpartition("-")
    return head if sep and len(tail) == DIGEST_CHARS else version
