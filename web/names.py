"""Uploaded file names are shown to users, never used as paths."""
from __future__ import annotations

import unicodedata

MAX_NAME = 1024


def clean_filename(raw: str | None) -> str:
    """Keep the relative folder path a browser sends, drop anything that could climb or hide."""
    if not raw:
        return "unnamed"
    text = unicodedata.normalize("NFC", raw).replace("\\", "/")
    text = "".join(ch for ch in text if ch.isprintable() and ch not in "\x00")
    parts = [p.strip() for p in text.split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    name = "/".join(parts) or "unnamed"
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME // 2 - 1] + "…" + name[-(MAX_NAME // 2) :]
    return name
