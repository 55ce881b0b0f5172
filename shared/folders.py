"""The files of a folder that a command takes as the user's: every regular file under it, hidden ones left out.

A folder copied from a Mac or a repository holds .DS_Store, AppleDouble companions (`._IMG_0001.jpg`, which
carry an image's name and no image) and .git; they are nobody's photos. One rule for every command, so that
`submit`, `train`, `evaluate` and `calibrate --own-photos` agree on what a folder holds.
"""
from __future__ import annotations

from pathlib import Path


def visible_files(root: Path) -> list[Path]:
    """Sorted; a file is hidden when any part of its path below root starts with a dot."""
    root = Path(root)
    return [p for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
