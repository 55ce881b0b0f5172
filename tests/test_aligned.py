"""Aligned pairs: the autoencoder rebuilt from its state dicts reproduces photos, and make-aligned writes
real links and reconstructions under names that keep the source."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.imaging import load_rgb_array
from training.aligned import PREFIX, Autoencoder, make_pairs, psnr
from training.data import DatasetUnavailable, source_of
from training.native import centre

from .conftest import DATASETS, REPO_ROOT, unavailable

TAEF2 = REPO_ROOT.parent / "shared" / "models" / "taef2"


def _autoencoder() -> Autoencoder:
    if not (TAEF2 / "taef2_decoder.pth").is_file():
        unavailable(f"{TAEF2} not found")
    return Autoencoder(TAEF2)


def _photo() -> np.ndarray:
    real = DATASETS / "mixed100" / "real"
    if not real.is_dir():
        unavailable(f"{real} not found")
    return centre(load_rgb_array(min(real.iterdir()).read_bytes(), 10**9), 96)


def test_the_rebuilt_autoencoder_reconstructs_a_photo_through_a_latent_at_one_eighth():
    ae = _autoencoder()
    photo = _photo()[:90, :93]  # sides cut to the latent grid: 88 x 88
    import torch

    latent = ae.encoder(torch.zeros(1, 3, 88, 88))
    assert latent.shape == (1, 32, 11, 11)
    rec = ae.reconstruct(photo)
    assert rec.shape == (88, 88, 3) and rec.dtype == np.uint8
    # A layer out of place gives noise or a flat image (under 15 dB); the real decoder keeps the picture but
    # not every pixel, the traces the pairs are for.
    assert 22 < psnr(rec, photo[:88, :88]) < 45
    assert psnr(rec, np.zeros_like(rec)) < 15


def test_make_aligned_links_reals_and_writes_named_reconstructions_once(tmp_path):
    _autoencoder()
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "fake").mkdir()
    photo = _photo()
    for i in range(2):
        Image.fromarray(photo).save(data / "real" / f"cams__{i}.png")
    Image.fromarray(photo).save(data / "fake" / "gen__0.png")  # generated images are not reconstructed
    (data / "real" / "cams__9.jpg").write_bytes(b"not an image")  # skipped, and the others still made
    out = tmp_path / "pairs"
    summary = make_pairs(str(data), TAEF2, out, max_side=64)
    assert summary["reals"] == 3 and summary["made"] == 2 and summary["mean_psnr_db"] > 20
    fakes = sorted(p.name for p in (out / "fake").iterdir())
    assert fakes == [f"{PREFIX}cams__0.jpg", f"{PREFIX}cams__1.jpg"]
    assert {source_of(n) for n in fakes} == {PREFIX + "cams"}
    assert Image.open(out / "fake" / fakes[0]).size == (64, 64)
    assert sorted(p.name for p in (out / "real").iterdir()) == ["cams__0.png", "cams__1.png"]
    assert (out / "real" / "cams__0.png").resolve() == (data / "real" / "cams__0.png").resolve()
    assert make_pairs(str(data), TAEF2, out, max_side=64)["made"] == 0  # an interrupted run continues


def test_make_aligned_names_what_is_missing(tmp_path):
    _autoencoder()
    with pytest.raises(DatasetUnavailable, match="not a folder"):
        make_pairs(str(tmp_path / "absent"), TAEF2, tmp_path / "out")
    (tmp_path / "empty" / "fake").mkdir(parents=True)
    with pytest.raises(DatasetUnavailable, match="no real photos"):
        make_pairs(str(tmp_path / "empty"), TAEF2, tmp_path / "out")
    with pytest.raises(DatasetUnavailable, match="taef2_encoder.pth"):
        make_pairs(str(tmp_path / "empty"), tmp_path, tmp_path / "out")
