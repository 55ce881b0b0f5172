"""The thumbnail renditions a worker stores for each upload, and which one serves a requested size.

Its own module so the web can pick a stored file without importing a decoder: it never decodes uploads.
"""
from __future__ import annotations

# Rows of the results table, and the per-image view.
THUMBNAIL_SIZES = (128, 512)


def rendition(size: int) -> int:
    """The smallest stored rendition at least ``size`` pixels on its longer side (else the largest)."""
    return next((s for s in sorted(THUMBNAIL_SIZES) if s >= size), max(THUMBNAIL_SIZES))
