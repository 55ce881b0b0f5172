"""A deployment's own photos set the served checkpoint's fake threshold (`pixelproof calibrate --own-photos`)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelproof.cli import main
from shared.modeling.checkpoint import load_checkpoint, read_meta
from shared.settings import DEFAULT_CHECKPOINT
from training.evaluate import score_bytes
from training.own_photos import false_fake_bound

from .conftest import DATASETS, unavailable


@pytest.fixture
def own_photos(tmp_path):
    """A newsroom's folder: 120 of one source's photos, a stray note and a photo cut short in transfer."""
    photos = sorted((DATASETS / "realworld" / "real").glob("blog-stephen688-real__*"))[:121]
    if len(photos) < 121:
        unavailable("realworld's blog-stephen688-real photos not found")
    folder = tmp_path / "ours"
    (folder / "2026").mkdir(parents=True)
    for photo in photos[:120]:
        (folder / "2026" / photo.name).write_bytes(photo.read_bytes())
    (folder / "README.txt").write_text("photos from the desk's cameras")
    (folder / "2026" / "cut.jpg").write_bytes(photos[120].read_bytes()[:200])
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "copy of first.jpg").write_bytes(photos[0].read_bytes())  # filed twice: counts once
    return folder


def test_own_photos_refit_only_the_fake_threshold_to_let_the_asked_share_through(own_photos, tmp_path):
    out = tmp_path / "site.safetensors"
    assert main(["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--own-photos", str(own_photos),
                 "--out", str(out), "--max-false-fake", "0.02"]) == 0
    before, after = read_meta(DEFAULT_CHECKPOINT), read_meta(out)
    report = after.metrics["own_photos"]
    assert report["n"] == 120 and sorted(report["skipped"]) == ["2026/cut.jpg", "README.txt"]
    assert report["duplicates"] == ["copy of first.jpg"]  # sorted after 2026/, so the copy is the one left out

    model, meta = load_checkpoint(out)
    photos = sorted((own_photos / "2026").glob("blog-*"))
    p = score_bytes(model, meta, [f.read_bytes() for f in photos])
    fake_from = after.thresholds["fake_from"]
    # For the photos to come: a new one like these reaches the (k+1)-th highest of n with probability
    # (k+1)/(n+1), so k = floor(0.02 * 121) - 1 = 1 photo reaches it, and any lower threshold lets a second through.
    assert int(np.sum(p >= fake_from)) == 1 and int(np.sum(p >= np.nextafter(fake_from, 0.0))) == 2
    assert report["false_fake"] == 1 / 120 and report["expected_false_fake"] == 2 / 121 <= 0.02
    assert report["false_fake_bound"] == pytest.approx(false_fake_bound(120, 1))
    assert fake_from != before.thresholds["fake_from"]
    assert after.thresholds["real_below"] == min(before.thresholds["real_below"], fake_from)
    # P keeps its meaning (same temperature, same weights); the labels and the version change.
    assert after.temperature == before.temperature and after.version != before.version
    a, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), model.state_dict().values()))
    assert after.training["calibrated_on"]["own_photos"]["n"] == 120
    assert (before.false_fake_share, after.false_fake_share) == (0.01, 0.02)  # what the page's legend states
    assert after.training["calibrated_on"]["folds"] == before.training["calibrated_on"]["folds"]
    assert "set on 120 photos this deployment supplied as real" in after.notes["limits"][-1]
    assert after.notes["limits"][:-1] == before.notes["limits"]
    # calibrated again (another desk's folder, another share): one line about it, the latest
    again = tmp_path / "again.safetensors"
    assert main(["calibrate", "--checkpoint", str(out), "--own-photos", str(own_photos), "--out", str(again),
                 "--max-false-fake", "0.05"]) == 0
    latest = read_meta(again)
    assert latest.notes["limits"][:-1] == before.notes["limits"] and "at most 5.0%" in latest.notes["limits"][-1]
    assert latest.thresholds["fake_from"] < fake_from


def test_too_few_photos_or_a_muddled_command_write_nothing(own_photos, tmp_path, capsys):
    out = tmp_path / "site.safetensors"
    # 120 photos cannot place a threshold that lets 1 in 200 through
    assert main(["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--own-photos", str(own_photos),
                 "--out", str(out), "--max-false-fake", "0.005"]) == 2
    assert "has 120 readable photos" in capsys.readouterr().err and not out.exists()
    assert main(["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--own-photos", str(own_photos),
                 "--data", str(own_photos), "--out", str(out)]) == 2
    assert main(["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--out", str(out)]) == 2
    assert main(["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--folds", str(DEFAULT_CHECKPOINT),
                 "--out", str(out)]) == 2  # --folds without --data
    assert main(["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--own-photos", str(tmp_path / "none"),
                 "--out", str(out)]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--own-photos", str(own_photos),
              "--out", str(out), "--max-false-fake", "0.7"])
    assert exit_.value.code == 2 and not out.exists()


@pytest.mark.parametrize("n", [50, 120, 1000])
def test_the_false_fake_bound_is_the_order_statistics_quantile(n):
    # no photo at the threshold: the share is Beta(1, n), whose 95% quantile has a closed form
    assert false_fake_bound(n, 0) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    # one photo: P(Binomial(n, x) >= 2) = 1 - (1 - x)^n - n x (1 - x)^(n - 1) is 0.95 at the bound
    x = false_fake_bound(n, 1)
    assert 1 - (1 - x) ** n - n * x * (1 - x) ** (n - 1) == pytest.approx(0.95, abs=1e-9)
    assert false_fake_bound(n, 0) < x < false_fake_bound(n, 2) < 1
    assert false_fake_bound(10 * n, 10) < false_fake_bound(n, 1)  # more photos, a closer bound at the same share
    assert math.isfinite(false_fake_bound(n, n // 10))
