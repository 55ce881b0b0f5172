"""The thumbnail renditions a worker stores for each upload, and which one serves a requested size.

Its own module so the web can pick a stored file without importing a decoder: it never decodes uploads.
"""
from __future__ import annotations

# Rows of the results table, and the per-image view.
THUMBNAIL_SIZES = (128, 512)
THUMBNAIL_QUALITY = 85  # JPEG; a preview to look at, never evidence: the upload itself is kept as sent
# Newest first: thumbnails stored before they were JPEG are PNG, and are still served until the upload goes.
THUMBNAIL_TYPES = {".jpg": "image/jpeg", ".png": "image/png"}


def rendition(size: int) -> int:
    """The smallest stored rendition at least ``size`` pixels on its longer side (else the largest)."""
    return next((s for s in sorted(THUMBNAIL_SIZES) if s >= size), max(THUMBNAIL_SIZES))
