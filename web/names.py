"""Uploaded file names are shown to users, never used as paths."""
from __future__ import annotations

import unicodedata

MAX_NAME = 1024


def clean_filename(raw: str | None) -> str:
    """Keep the relative folder path a browser sends, drop anything that could climb or hide."""
    if not raw:
        return "unnamed"
    parts = [p.strip() for p in _written_as_stored(raw).split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    name = "/".join(parts) or "unnamed"
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME // 2 - 1] + "…" + name[-(MAX_NAME // 2) :]
    return name


def search_text(raw: str) -> str:
    """Text to look for in stored names, written the way they are stored, so that a name typed on a Mac
    (decomposed accents), with Windows separators or pasted with a stray control character still finds its file."""
    return _written_as_stored(raw)


def _written_as_stored(text: str) -> str:
    """NFC, forward slashes, printable characters only."""
    text = unicodedata.normalize("NFC", text).replace("\\", "/")
    return "".join(ch for ch in text if ch.isprintable())
