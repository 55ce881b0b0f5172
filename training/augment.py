"""Training-time augmentations that teach the model to ignore what uploads vary in.

Re-encoding as JPEG at random quality and shrinking-then-enlarging both happen to real uploads; a model
that keyed on compression or resampling traces would fail on them (robustness table in the model card).
"""
from __future__ import annotations

import io
import random

from PIL import Image

from shared.imaging import _RESAMPLE


def jpeg_reencode(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def down_up(img: Image.Image, factor: float = 0.5, resample: str = "bicubic") -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, int(w * factor)), max(1, int(h * factor))), _RESAMPLE[resample])
    return small.resize((w, h), _RESAMPLE[resample])


class Augment:
    def __init__(self, p_jpeg: float = 0.3, p_resize: float = 0.4, p_flip: float = 0.5, seed: int = 0):
        self.p_jpeg, self.p_resize, self.p_flip = p_jpeg, p_resize, p_flip
        self.rng = random.Random(seed)

    def __call__(self, img: Image.Image) -> Image.Image:
        r = self.rng
        if r.random() < self.p_flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if r.random() < self.p_resize:
            img = down_up(img, r.choice((0.5, 0.5, 0.625, 0.75)), r.choice(("bicubic", "bilinear", "area")))
        if r.random() < self.p_jpeg:
            img = jpeg_reencode(img, r.randint(60, 95))
        return img
