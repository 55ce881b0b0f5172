"""Training-time augmentations that teach the model to ignore what uploads vary in.

Re-encoding as JPEG at random quality and shrinking-then-enlarging both happen to real uploads; a model
that keyed on compression or resampling traces would fail on them (robustness table in the model card).
"""
from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image

from shared.imaging import _RESAMPLE


def jpeg_reencode(img: Image.Image, quality: int, subsampling: int = -1) -> Image.Image:
    """subsampling: Pillow's chroma layout (0 = 4:4:4, 2 = 4:2:0, -1 = its default)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def down_up(img: Image.Image, factor: float = 0.5, resample: str = "bicubic") -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, int(w * factor)), max(1, int(h * factor))), _RESAMPLE[resample])
    return small.resize((w, h), _RESAMPLE[resample])


def shift(img: Image.Image, dx: int, dy: int) -> Image.Image:
    """Move the picture by whole pixels, mirroring at the edges: no pixel is interpolated, so the local
    statistics a detector reads stay intact while the model stops memorising where things sit."""
    arr = np.asarray(img)
    m = max(abs(dx), abs(dy))
    padded = np.pad(arr, ((m, m), (m, m), (0, 0)), mode="reflect")
    h, w = arr.shape[:2]
    return Image.fromarray(np.ascontiguousarray(padded[m + dy: m + dy + h, m + dx: m + dx + w]))


class Augment:
    def __init__(self, p_jpeg: float = 0.3, p_resize: float = 0.4, p_flip: float = 0.5, p_shift: float = 0.0,
                 max_shift: int = 3, seed: int = 0):
        self.p_jpeg, self.p_resize, self.p_flip, self.p_shift = p_jpeg, p_resize, p_flip, p_shift
        self.max_shift = max_shift
        self.rng = random.Random(seed)

    def __call__(self, img: Image.Image) -> Image.Image:
        r = self.rng
        if r.random() < self.p_flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if r.random() < self.p_shift:
            k = self.max_shift
            img = shift(img, r.randint(-k, k), r.randint(-k, k))
        if r.random() < self.p_resize:
            img = down_up(img, r.choice((0.5, 0.5, 0.625, 0.75)), r.choice(("bicubic", "bilinear", "area")))
        if r.random() < self.p_jpeg:
            img = jpeg_reencode(img, r.randint(60, 95))
        return img
