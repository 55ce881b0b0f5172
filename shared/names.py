"""Uploaded file names are shown to users, never used as paths."""
from __future__ import annotations

import re
import unicodedata

from shared.limits import MAX_TITLE

MAX_NAME = 1024
_SPACES = re.compile(r"\s+")


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


def job_title(raw: str | None) -> str | None:
    """A job's title as stored: NFC, every run of white space (a pasted line break, a tab) one space, other
    unprintable characters dropped, trimmed. Empty is no title. ValueError: longer than MAX_TITLE, refused
    rather than cut, since the sender chose every word of it."""
    if raw is None:
        return None
    text = "".join(ch for ch in unicodedata.normalize("NFC", raw) if ch.isprintable() or ch.isspace())
    text = _SPACES.sub(" ", text).strip()
    if max(len(raw), len(text)) > MAX_TITLE:  # as sent, too: what the API description promises a client
        raise ValueError(f"a job's title is at most {MAX_TITLE} characters (this one has {len(raw)})")
    return text or None


def _written_as_stored(text: str) -> str:
    """NFC, forward slashes, printable characters only."""
    text = unicodedata.normalize("NFC", text).replace("\\", "/")
    return "".join(ch for ch in text if ch.isprintable())
