"""Decoding by content, with a clear refusal for everything we do not classify."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.imaging import ImageRejected, Preprocessing, load_rgb, preprocess_bytes, thumbnail_png

from .corpus import corpus, exif_rotated_jpeg

CASES = corpus()


@pytest.mark.parametrize("name, data, expected", CASES, ids=[c[0] for c in CASES])
def test_corpus_file_is_classified_or_refused_clearly(name, data, expected):
    spec = Preprocessing()
    if expected == "ok":
        arr = preprocess_bytes(data, spec)
        assert arr.shape == (3, 32, 32) and arr.dtype == np.float32 and np.isfinite(arr).all()
    else:
        with pytest.raises(ImageRejected) as err:
            preprocess_bytes(data, spec)
        assert expected.lower() in str(err.value).lower()


def test_exif_rotation_is_applied():
    img = load_rgb(exif_rotated_jpeg(), 10**8)
    assert img.size == (20, 60)


def test_raw_size_never_reaches_the_model():
    """A large and a small copy of one picture give nearly the same input: only content survives."""
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).resize((64, 64), Image.NEAREST)
    small, big = io.BytesIO(), io.BytesIO()
    base.save(small, "PNG")
    base.resize((1024, 1024), Image.NEAREST).save(big, "PNG")
    a, b = preprocess_bytes(small.getvalue(), Preprocessing()), preprocess_bytes(big.getvalue(), Preprocessing())
    assert a.shape == b.shape == (3, 32, 32)
    assert np.abs(a - b).mean() < 0.15


def test_thumbnail_is_a_fresh_png():
    data = [d for n, d, e in CASES if n == "cmyk.jpg"][0]
    png = thumbnail_png(data, 10**8)
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size[0] <= 96
