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


def _pairs_folder(tmp_path):
    """make-aligned on ten different detailed photos under two sources (cams, phones), at a side of 80 px."""
    _autoencoder()
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    photos = sorted((DATASETS / "realworld" / "real").glob("sr-testsets-real__*"))[:10]
    if len(photos) < 10:
        unavailable("realworld's sr-testsets-real photos not found")
    for k, path in enumerate(photos):
        rgb = centre(load_rgb_array(path.read_bytes(), 10**9), 96)
        Image.fromarray(rgb).save(data / "real" / f"{('cams', 'phones')[k // 5]}__{k % 5}.png")
    out = tmp_path / "pairs"
    make_pairs(str(data), TAEF2, out, max_side=80)  # not the default side: pairing finds how they were cut
    return out


def test_paired_crops_line_up_and_pairs_stay_together(tmp_path):
    """train --paired: a photo and its reconstruction are matched by name, cut alike, augmented alike (the
    same crop, flip, resampling and JPEG quality), and a pair never straddles training and held-out data."""
    from shared.imaging import Preprocessing
    from training.native import (
        CropAugment,
        PairedCropDataset,
        aligned_pairs,
        flatten_pairs,
        load_native_set,
        split_pairs,
    )

    out = _pairs_folder(tmp_path)
    Image.fromarray(_photo()).save(out / "fake" / f"{PREFIX}nowhere__0.jpg")  # no real photo of that name
    pairs = aligned_pairs(load_native_set(str(out)), PREFIX, side=192)
    assert len(pairs) == 20 and list(pairs.labels) == [0, 1] * 10
    assert all(pairs.names[k + 1] == f"fake/{PREFIX}" + pairs.names[k][5:].replace(".png", ".jpg")
               for k in range(0, 20, 2))
    assert all(pairs.images[k].shape == (80, 80, 3) and psnr(pairs.images[k], pairs.images[k + 1]) > 20
               for k in range(0, 20, 2))

    train, val, held = split_pairs(pairs, ("phones",), fraction=0.2, seed=0)
    assert len(train) == 4 and len(val) == 2 and len(held) == 10
    assert set(held.sources) == {"phones", PREFIX + "phones"} and list(held.labels) == [0, 1] * 5
    assert list(val.sources) == ["cams", PREFIX + "cams"]
    # Every source of two or more pairs is checked in validation, however small the fraction.
    train, val, held = split_pairs(pairs, ("phones",), fraction=0.05, seed=0)
    assert (len(train), len(val)) == (4, 2) and list(val.sources) == ["cams", PREFIX + "cams"]

    spec = Preprocessing(resize="native_crops", input_size=48, mean=(0.5,) * 3, std=(0.25,) * 3)
    ds = PairedCropDataset(train, spec, CropAugment(48, p_resize=0.5, p_jpeg=0.5, p_flip=0.5, seed=3), samples=40)
    x, y = flatten_pairs([ds[i] for i in range(40)])
    assert x.shape == (80, 3, 48, 48) and y.tolist() == [0.0, 1.0] * 40
    # Same place, same augmentation: each pair differs by the decoder's traces, far less than two crops do.
    within = (x[0::2] - x[1::2]).abs().mean().item()
    across = (x[0::2] - x[0::2].roll(1, 0)).abs().mean().item()
    assert within < across / 3, (within, across)


def test_train_paired_holds_out_whole_pairs_and_scores_them(tmp_path):
    from shared.imaging import Preprocessing
    from training.config import TrainConfig
    from training.train import train

    out = _pairs_folder(tmp_path)
    spec = Preprocessing(input_size=48, resize="native_crops", max_crops=4)
    path, meta = train(TrainConfig(data=str(out), out=tmp_path / "run", arch="residual_energy", epochs=2,
                                   batch_size=2, paired=True, holdout=("phones",), val_fraction=0.2, threads=1,
                                   precision="float32", preprocessing=spec))
    assert path.is_file() and len(meta.training["history"]) == 2
    assert (meta.training["n_train"], meta.training["n_val"]) == (8, 2)  # 4 pairs and 1 pair, as images
    assert meta.metrics["held_out"]["n"] == 10 and meta.metrics["held_out"]["sources"] == ["phones"]
    assert meta.training["config"]["paired"] is True


def test_train_with_pairs_mixes_them_into_every_batch_and_keeps_unseen_photos_out(tmp_path):
    """train --with-pairs: each item is a crop of DATA beside an aligned pair, augmented alike; the pairs of
    held-out sources and of validation photos are not trained on, so their scores stay those of new photos."""
    from shared.imaging import Preprocessing
    from training.aligned import MAX_SIDE
    from training.config import TrainConfig
    from training.native import (
        CropAugment,
        CropDataset,
        MixedCropDataset,
        PairedCropDataset,
        aligned_pairs,
        flatten_pairs,
        load_native_set,
        pairs_except,
    )
    from training.train import RunMismatch, train

    out = _pairs_folder(tmp_path)
    data = tmp_path / "data"
    (data / "fake").mkdir()
    fakes = sorted((DATASETS / "realworld" / "fake").glob("nexora-mini-fakes__*"))[:6]
    for k, path in enumerate(fakes):
        rgb = centre(load_rgb_array(path.read_bytes(), 10**9), 96)
        Image.fromarray(rgb).save(data / "fake" / f"{('gens', 'gens2')[k // 3]}__{k % 3}.png")

    pairs = aligned_pairs(load_native_set(str(out)), PREFIX, MAX_SIDE)
    photos = load_native_set(str(data))
    left_out = ["real/cams__1.png"]
    kept = pairs_except(pairs, ("phones",), left_out)
    assert len(kept) == 4  # cams 0, 2, 3, 4: neither a held-out source nor the left-out photo
    assert not any(np.array_equal(real, pairs.images[pairs.names.index("real/cams__1.png")]) for real, _ in kept)
    with pytest.raises(DatasetUnavailable, match="no aligned pairs left"):
        pairs_except(pairs, ("cams", "phones"), left_out)

    spec = Preprocessing(resize="native_crops", input_size=48, mean=(0.5,) * 3, std=(0.25,) * 3)
    augment = CropAugment(48, seed=1)
    mixed = MixedCropDataset(CropDataset(photos, spec, augment, samples=16), PairedCropDataset(kept, spec, augment))
    x, y = flatten_pairs([mixed[i] for i in range(16)])
    assert x.shape == (48, 3, 48, 48)
    assert y[1::3].tolist() == [0.0] * 16 and y[2::3].tolist() == [1.0] * 16
    assert y[0::3].tolist() == [float(photos.labels[i % len(photos)]) for i in range(16)]
    with pytest.raises(ValueError, match="share one augmentation"):
        MixedCropDataset(CropDataset(photos, spec, augment), PairedCropDataset(kept, spec, CropAugment(48)))

    spec = Preprocessing(input_size=48, resize="native_crops", max_crops=4)
    config = TrainConfig(data=str(data), out=tmp_path / "run", arch="residual_energy", epochs=2, batch_size=2,
                         with_pairs=str(out), holdout=("phones", "gens2"), val_fraction=0.2, threads=1,
                         precision="float32", preprocessing=spec)
    path, meta = train(config)
    # 6 images train (4 cams photos, 2 gens fakes), 2 validate (1 of each): 4 cams pairs remain, 8 images.
    assert (meta.training["n_train"], meta.training["n_val"]) == (14, 2)
    assert meta.metrics["held_out"]["n"] == 8 and meta.training["config"]["with_pairs"] == str(out)
    with pytest.raises(RunMismatch, match="give one"):
        train(TrainConfig(data=str(out), out=tmp_path / "run2", paired=True, with_pairs=str(out),
                          preprocessing=spec))
