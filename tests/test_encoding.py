"""How a file was encoded, read from its header (shared.encoding): shown beside the verdict, never to the model."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.encoding import describe, group, jpeg_quality, libjpeg_table, summary


def _noise(size=(48, 40)) -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype("uint8"))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [5, 30, 50, 75, 85, 90, 95, 100])
@pytest.mark.parametrize("subsampling,chroma", [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_a_jpeg_says_the_quality_and_chroma_it_was_written_with(quality, subsampling, chroma):
    d = describe(_save(_noise(), "JPEG", quality=quality, subsampling=subsampling))
    assert d == {"format": "JPEG", "quality": quality, "quality_exact": True, "chroma": chroma, "progressive": False}


def test_progressive_greyscale_and_custom_tables():
    assert describe(_save(_noise(), "JPEG", quality=70, progressive=True))["progressive"] is True
    grey = describe(_save(_noise().convert("L"), "JPEG", quality=60))
    assert (grey["quality"], grey["chroma"]) == (60, "greyscale")
    # A table of its own (as cameras and some editors write): the nearest libjpeg quality, flagged as not exact.
    own = [max(1, round(v * 0.9)) for v in libjpeg_table(80)]
    d = describe(_save(_noise(), "JPEG", qtables=[own, own]))
    assert d["quality_exact"] is False and 80 <= d["quality"] <= 84
    assert jpeg_quality(libjpeg_table(33)) == (33, True)


def test_other_formats_and_files_it_cannot_follow():
    img = _noise()
    assert describe(_save(img, "PNG")) == {"format": "PNG"}
    assert describe(_save(img, "WEBP", quality=80)) == {"format": "WEBP", "lossless": False}
    assert describe(_save(img, "WEBP", lossless=True)) == {"format": "WEBP", "lossless": True}
    for fmt in ("GIF", "TIFF", "BMP"):
        assert describe(_save(img, fmt)) == {"format": fmt}
    assert describe(b"") is None and describe(b"%PDF-1.7") is None
    jpeg = _save(img, "JPEG", quality=90)
    unknown = {"format": "JPEG", "quality": None, "quality_exact": None, "chroma": None, "progressive": None}
    assert describe(jpeg[:3]) == unknown
    dqt = jpeg.index(b"\xff\xdb")
    assert describe(jpeg[: dqt + 30]) == unknown  # cut inside its first table: nothing half-read is reported
    assert describe(jpeg[:dqt] + b"\xff\xdb\x00\x03\x00" + jpeg[dqt:])["quality"] == 90  # an empty table skipped


def test_a_jobs_encodings_are_counted_in_quality_bands_and_a_mix_is_flagged():
    jpeg = {"format": "JPEG", "quality": 92, "quality_exact": False, "chroma": "4:2:0", "progressive": False}
    assert [group({**jpeg, "quality": q}) for q in (100, 95, 94, 90, 85, 70, 69)] == [
        "JPEG quality 95-100", "JPEG quality 95-100", "JPEG quality 90-94", "JPEG quality 90-94",
        "JPEG quality 80-89", "JPEG quality 70-79", "JPEG quality below 70"]
    assert group({**jpeg, "quality": None}) == "JPEG" and group({"format": "WEBP", "lossless": True}) == "WEBP lossless"
    assert group(None) is None and summary({}) is None
    assert summary({"JPEG quality 90-94": 2}) == "encodings: JPEG quality 90-94 x2"
    mixed = summary({"PNG": 1, "JPEG quality 90-94": 2})
    assert mixed.startswith("encodings: JPEG quality 90-94 x2, PNG x1. This job mixes encodings")
