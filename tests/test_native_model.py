"""Crop-based checkpoints: training on native-resolution crops, held-out sources, three labels, evaluation."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from shared.imaging import Preprocessing, preprocess_bytes
from shared.modeling.checkpoint import load_for_inference
from shared.modeling.registry import NeighbourResidual
from shared.modeling.scorer import score_prepared
from shared.scoring import Thresholds, choose_thresholds, image_logits
from training.data import DatasetUnavailable, source_of
from training.native import CropAugment, load_native_set, split_validation
from training.train import TrainConfig, train

NATIVE = Preprocessing(input_size=64, resize="native_crops", max_crops=4)


def _toy_image(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A stand-in for the two classes with a known, pixel-level difference: 'generated' images are up-sampled
    by nearest neighbour (neighbouring pixels tied in 2 x 2 blocks, as a generator's last up-sampling leaves
    them), 'camera' images carry independent per-pixel noise. The scenes themselves are drawn alike."""
    w, h = (int(v) for v in rng.integers(90, 170, 2) // 2 * 2)
    scene = np.asarray(Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    if fake:
        half = scene[::2, ::2]
        return half.repeat(2, axis=0).repeat(2, axis=1)
    return np.clip(scene + rng.normal(0, 6, scene.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for label, sources in (("real", ("cam-a", "cam-b")), ("fake", ("gen-a", "gen-b"))):
        (root / label).mkdir()
        for src in sources:
            for i in range(20):
                Image.fromarray(_toy_image(rng, label == "fake")).save(root / label / f"{src}__{i:03d}.png")
    return root


def test_sources_come_from_file_names_and_validation_keeps_every_source(toy_dir):
    data = load_native_set(str(toy_dir))
    assert len(data) == 80 and set(data.sources) == {"cam-a", "cam-b", "gen-a", "gen-b"}
    assert source_of("fake/gen-a__003.png") == "gen-a" and source_of("plain.jpg") == ""
    rest, held = data.without_sources(("cam-b", "gen-b"))
    assert set(held.sources) == {"cam-b", "gen-b"} and set(rest.sources) == {"cam-a", "gen-a"}
    # A fold may name sources that only its evaluation data holds (aligned pairs); naming none of these fails.
    assert set(data.without_sources(("cam-b", "only-elsewhere"))[1].sources) == {"cam-b"}
    with pytest.raises(DatasetUnavailable, match="only-elsewhere.*sources: cam-a, cam-b, gen-a, gen-b"):
        data.without_sources(("only-elsewhere",))
    unnamed = data.subset(np.arange(len(data)))
    unnamed.names = [n.replace("__", "-") for n in unnamed.names]  # not named <source>__<id>: it says how
    with pytest.raises(DatasetUnavailable, match="no file name here names a source: name files <source>__<id>"):
        unnamed.without_sources(("cam-a",))
    train_part, val_part = split_validation(rest, 0.25, seed=0)
    assert set(val_part.sources) == set(train_part.sources) == {"cam-a", "gen-a"} and len(val_part) == 10
    assert not set(train_part.names) & set(val_part.names)


def test_crop_augmentation_cuts_native_pixels_and_pads_small_crops():
    img = np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    plain = CropAugment(64, p_resize=0, p_jpeg=0, p_small=0, p_flip=0, seed=1)
    crop = plain(img)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    hits = [(y, x) for y in range(37) for x in range(27) if np.array_equal(img[y:y + 64, x:x + 64], crop)]
    assert hits  # an exact window of the image: nothing resampled or re-encoded
    small = CropAugment(64, p_resize=0, p_jpeg=0, p_small=1.0, p_flip=0, seed=3)
    shapes = {tuple(small(img).shape) for _ in range(20)}
    assert shapes == {(64, 64, 3)}  # always the model's input size, smaller crops padded up to it
    busy = CropAugment(64, p_resize=1.0, p_jpeg=1.0, seed=2)
    assert all(busy(img).shape == (64, 64, 3) for _ in range(20))


def test_neighbour_residual_is_zero_on_nearest_upsampled_input():
    x = torch.randn(1, 3, 8, 8).repeat_interleave(2, 2).repeat_interleave(2, 3)
    out = NeighbourResidual()(x)
    assert out.shape == (1, 6, 16, 16)
    torch.testing.assert_close(out[:, :3], x)
    assert out[:, 3:].abs().max() == 0
    assert NeighbourResidual()(torch.randn(1, 3, 16, 16))[:, 3:].abs().max() > 0


def test_thresholds_bound_false_alarms_on_validation_scores():
    labels = np.array([0] * 100 + [1] * 100)
    p = np.r_[np.linspace(0.0, 0.6, 100), np.linspace(0.3, 1.0, 100)]
    t = choose_thresholds(labels, p, max_false_fake=0.01, max_false_real=0.05)
    assert (p[:100] >= t.fake_from).mean() <= 0.01 and (p[:100] >= t.fake_from).sum() == 1
    assert (p[100:] < t.real_below).mean() <= 0.05 and (p[100:] < t.real_below).sum() == 5
    assert t.real_below < t.fake_from
    assert [t.label(v) for v in (0.0, 0.45, 0.99)] == ["real", "uncertain", "fake"]
    # Scores that separate perfectly: one threshold keeps both promises, and nothing is uncertain.
    crossed = choose_thresholds(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), 0.0, 0.5)
    assert crossed.real_below == crossed.fake_from and 0.2 < crossed.fake_from < 0.21
    with pytest.raises(ValueError):
        Thresholds(0.8, 0.2)
    assert list(image_logits(np.array([1.0, 3.0, -2.0]), [2, 1])) == [2.0, -2.0]


def test_crop_model_trains_holds_out_sources_and_labels_in_three(toy_dir, tmp_path):
    cfg = TrainConfig(data=str(toy_dir), out=tmp_path, arch="tiny_resnet", epochs=6, batch_size=32, lr=3e-3,
                      arch_args={"widths": [8, 16, 32], "input_filter": "npr"}, threads=1, crops_per_image=16,
                      holdout=("cam-b", "gen-b"), val_fraction=0.25, precision="float32", patience=6, preprocessing=NATIVE,
                      crop_augment={"p_jpeg": 0.0, "p_resize": 0.0})
    path, meta = train(cfg)
    assert meta.preprocessing == NATIVE and list(meta.training["config"]["holdout"]) == ["cam-b", "gen-b"]
    rule = meta.label_rule
    assert set(meta.thresholds) == {"real_below", "fake_from"} and rule.real_below <= rule.fake_from
    # The pixel-level difference transfers to the sources it never saw.
    assert meta.metrics["held_out"]["n"] == 40 and meta.metrics["held_out"]["roc_auc"] > 0.9

    model, loaded = load_for_inference(path, precision="float32")
    data = (toy_dir / "fake" / "gen-b__000.png").read_bytes()
    prepared = preprocess_bytes(data, loaded.preprocessing)
    [scored] = score_prepared(model, loaded, [prepared])
    assert len(scored.crop_p) == len(prepared.boxes) >= 1 and scored.label in ("real", "fake", "uncertain")
    assert scored.label == rule.label(scored.p_fake)


def test_evaluate_scores_held_out_sources_with_robustness_and_source_rows(toy_dir, tmp_path):
    from pixelproof.cli import main

    path, _ = train(TrainConfig(data=str(toy_dir), out=tmp_path / "run", epochs=1, batch_size=32, threads=1,
                                arch_args={"widths": [8, 16]}, holdout=("cam-b", "gen-b"), preprocessing=NATIVE))
    assert main(["evaluate", "--checkpoint", str(path), "--data", str(toy_dir), "--held-out",
                 "--cross-domain", str(toy_dir), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["results"]["held_out"]["n"] == 40
    assert {f"held_out+{k}" for k in ("jpeg75", "half_size", "png_resave", "centre_crop", "jpeg85_real_only",
                                      "jpeg85_fake_only")} <= set(report["results"])
    assert set(report["per_source"]) == {"cam-b (real)", "gen-b (fake)"}
    row = report["results"]["held_out"]
    assert abs(row["real_called_fake"] + row["real_called_uncertain"] + row["real_called_real"] - 1) < 1e-9
    assert "| held_out |" in (tmp_path / "report" / "report.md").read_text()


def test_small_and_odd_images_reach_a_crop_model(tmp_path):
    """Sizes below a crop, odd sides and extreme aspect ratios all give a score and stay inside the image, down
    to MIN_SIDE; a sliver below it is refused by name, whatever its other side."""
    from shared.imaging import ImageRejected
    from shared.limits import MIN_SIDE

    def png(w, h):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    for w, h in ((17, 16), (65, MIN_SIDE), (MIN_SIDE, 65), (301, 64), (1000, 70)):
        prepared = preprocess_bytes(png(w, h), NATIVE)
        assert prepared.inputs.shape[1:] == (3, 64, 64) and 1 <= len(prepared.inputs) <= 4
        assert all(b.x + b.w <= w and b.y + b.h <= h for b in prepared.boxes)
    for w, h in ((1000, MIN_SIDE - 1), (MIN_SIDE - 1, 40), (1, 1)):
        with pytest.raises(ImageRejected, match=f"{w}x{h} pixels, too small to judge: .* at least {MIN_SIDE} pixels"):
            preprocess_bytes(png(w, h), NATIVE)


def test_calibrate_fits_temperature_and_thresholds_on_out_of_fold_scores(toy_dir, tmp_path):
    from pixelproof.cli import main
    from shared.modeling.checkpoint import load_checkpoint, read_meta

    def run(name, holdout=()):
        cfg = TrainConfig(data=str(toy_dir), out=tmp_path / name, epochs=1, batch_size=32, threads=1, holdout=holdout,
                          arch_args={"widths": [8, 16]}, preprocessing=NATIVE)
        return train(cfg)[0]

    full = run("full")
    folds = [run("a", ("cam-a", "gen-a")), run("b", ("cam-b", "gen-b"))]
    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", "--checkpoint", str(full), "--folds", *map(str, folds), "--data", str(toy_dir),
                 "--out", str(out)]) == 0
    before, after = read_meta(full), read_meta(out)
    oof = after.metrics["out_of_fold"]
    assert oof["n"] == 80 and after.temperature == oof["temperature"] and after.thresholds == oof["thresholds"]
    assert after.version != before.version and after.training["calibrated_on"]["folds"] == list(map(str, folds))
    a, _ = load_checkpoint(full)
    b, _ = load_checkpoint(out)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # weights untouched
    # a fold model of another recipe cannot stand in for this one's unseen sources
    other = train(TrainConfig(data=str(toy_dir), out=tmp_path / "other", epochs=1, batch_size=32, threads=1,
                              holdout=("cam-a", "gen-a"), arch_args={"widths": [8, 8]}, preprocessing=NATIVE))[0]
    assert main(["calibrate", "--checkpoint", str(full), "--folds", str(other), "--data", str(toy_dir),
                 "--out", str(tmp_path / "x.safetensors")]) == 2


def test_max_minutes_shortens_the_schedule_to_what_fits(toy_dir, tmp_path):
    cfg = TrainConfig(data=str(toy_dir), out=tmp_path, epochs=50, patience=50, batch_size=32, threads=1,
                      arch_args={"widths": [8, 16]}, preprocessing=NATIVE, max_minutes=0.0001)
    _, meta = train(cfg)
    epochs = meta.training["config"]["epochs"]
    assert epochs < 50 and len(meta.training["history"]) == epochs  # the redrawn schedule ran to its end


def test_residual_energy_ignores_flat_colour_and_brightness():
    """Its filters sum to zero, so a uniform shift of any channel, i.e. colour cast or brightness, cannot
    change what it sees; a change of fine detail does."""
    from shared.modeling.registry import build_model

    model = build_model("residual_energy").eval()
    x = torch.randn(2, 3, 64, 64)
    shift = torch.tensor([0.7, -0.3, 1.1]).view(1, 3, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(model(x + shift), model(x), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x * 0.5), model(x), atol=1e-3)


def test_relative_residual_energy_ignores_how_much_detail_but_not_its_shape():
    """relative: scaling every residual alike (more or less contrast, detail or noise of the same make-up)
    leaves the score as it was, so "smoother" alone cannot read as generated; a change in which frequencies
    carry the detail still changes it."""
    from shared.modeling.registry import build_model

    torch.manual_seed(0)
    model = build_model("residual_energy", relative=True).eval()
    x = torch.randn(2, 3, 64, 64)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    with torch.inference_mode():
        torch.testing.assert_close(model(x * 0.5 + 0.2), model(x), atol=1e-3, rtol=1e-3)
        assert not torch.allclose(model(blurred), model(x), atol=1e-2)
        absolute = build_model("residual_energy").eval()
        absolute.load_state_dict(model.state_dict())  # the same weights: only the features' reference differs
        assert not torch.allclose(absolute(x * 0.5), absolute(x), atol=1e-3)


def test_a_cpu_forward_in_slices_gives_every_crop_its_own_logit_in_order():
    """crop_logits runs a worker's batch through the model a few crops at a time (CPU_SLICE_PIXELS): each
    crop's logit must be what the whole batch in one pass gives it, in the same order."""
    from shared.imaging import Box, Prepared
    from shared.modeling.registry import build_model
    from shared.modeling.scorer import CPU_SLICE_PIXELS, crop_logits

    torch.manual_seed(0)
    model = build_model("residual_energy").eval()
    images = [Prepared(np.random.default_rng(i).normal(size=(n, 3, 128, 128)).astype(np.float32),
                       (Box(0, 0, 128, 128),) * n, 128, 128) for i, n in enumerate((9, 1, 4, 9))]
    assert sum(len(p.inputs) for p in images) > 2 * CPU_SLICE_PIXELS // (128 * 128)  # at least three slices
    with torch.inference_mode():
        whole = model(torch.from_numpy(np.concatenate([p.inputs for p in images]))).numpy()
    np.testing.assert_allclose(crop_logits(model, images), whole, rtol=1e-4, atol=1e-4)


def test_residual_stats_reads_fixed_residuals_and_learns_only_its_read_out():
    """Its filters are fixed (a buffer saved with the checkpoint, not trained) and sum to zero on luminance,
    so brightness cannot pass; only the standardisation and the linear read-out have parameters."""
    from shared.modeling.registry import build_model, fixed_bank

    torch.manual_seed(0)
    model = build_model("residual_stats")
    assert {n for n, _ in model.named_parameters()} == {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    assert "bank" in model.state_dict() and torch.equal(model.state_dict()["bank"], fixed_bank())
    torch.testing.assert_close(fixed_bank().sum(dim=(2, 3)), torch.zeros(11, 3), atol=1e-6, rtol=0)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x + 0.4), model(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(model(x * 0.5), model(x), atol=1e-3)


def test_lbfgs_fits_the_read_out_of_fixed_statistics_to_its_optimum(toy_dir, tmp_path):
    """--optimizer lbfgs: the statistics of the augmented crops are computed once and the read-out fitted on
    them; the fitted weights sit where the objective's gradient vanishes, the model then scores exactly the
    standardised statistics through them, and what it learns transfers to the sources it never saw."""
    from shared.modeling.checkpoint import load_checkpoint
    from training import readout

    cfg = TrainConfig(data=str(toy_dir), out=tmp_path, arch="residual_stats", optimizer="lbfgs", weight_decay=1e-3,
                      threads=1, crops_per_image=4, holdout=("cam-b", "gen-b"), val_fraction=0.25,
                      precision="float32", preprocessing=NATIVE)
    path, meta = train(cfg)
    [row] = meta.training["history"]
    assert row["crops"] == 4 * meta.training["n_train"] and row["train_acc"] > 0.9
    assert meta.metrics["held_out"]["n"] == 40 and meta.metrics["held_out"]["roc_auc"] > 0.9

    model, _ = load_checkpoint(path)
    model.eval()
    torch.manual_seed(0)
    feats = model.features(torch.randn(64, 3, 64, 64)).double()
    labels = (feats[:, 0] > feats[:, 0].median()).double()
    readout.fit_readout(model, feats, labels, l2=1e-2)
    w = model.head.weight.detach().double().view(-1).requires_grad_(True)
    b = model.head.bias.detach().double().requires_grad_(True)
    z = (feats - model.norm.running_mean.double()) / torch.sqrt(model.norm.running_var.double() + model.norm.eps)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, labels) + 0.5e-2 * w.square().sum()
    loss.backward()
    assert max(w.grad.abs().max().item(), b.grad.abs().item()) < 1e-5
    with torch.inference_mode():
        torch.testing.assert_close(model.head(model.norm(feats.float())).squeeze(1).double(), (z @ w + b).detach(),
                                   atol=1e-4, rtol=1e-4)


def test_lbfgs_refuses_a_model_without_a_fixed_read_out(toy_dir, tmp_path):
    from training.train import RunMismatch

    cfg = TrainConfig(data=str(toy_dir), out=tmp_path, arch="tiny_resnet", arch_args={"widths": [8, 16, 32]},
                      optimizer="lbfgs", threads=1, preprocessing=NATIVE)
    with pytest.raises(RunMismatch, match="linear read-out on fixed statistics"):
        train(cfg)


def _reference_spectral_ratio(x: torch.Tensor, low=(0.125, 0.25), high=(0.375, 0.5)) -> torch.Tensor:
    """The statistic written the long way, in float64: luminance, its 5-point Laplacian (circular), a Hann
    window, the full 2-D power spectrum and the mean power in each radial band."""
    y = (x.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)).sum(1)
    y = y - y.mean((1, 2), keepdim=True)
    h, w = y.shape[1:]
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                         torch.hann_window(w, periodic=False, dtype=torch.float64))
    power = torch.fft.fft2(y * window).abs().square()
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64)[None]
    power = power * (4 - 2 * torch.cos(2 * torch.pi * fy) - 2 * torch.cos(2 * torch.pi * fx)).square()
    radius = torch.sqrt(fy.square() + fx.square())
    mean = [power[:, (radius >= lo) & (radius < hi)].mean(1) for lo, hi in (low, high)]
    return (torch.log(mean[0]) - torch.log(mean[1])).unsqueeze(1)


@pytest.mark.parametrize("size", [(128, 128), (64, 96), (33, 47)])
def test_residual_spectrum_is_the_band_ratio_of_the_full_spectrum(size):
    """The model reads half the spectrum (rfft2) through precomputed band weights; that must be the
    statistic itself, for even and odd sizes (which of rfft2's columns count twice differs)."""
    from shared.modeling.registry import build_model

    model = build_model("residual_spectrum").eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 3, *size)).astype(np.float32))
    smooth = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    for batch in (x, smooth):
        torch.testing.assert_close(model.features(batch).double(), _reference_spectral_ratio(batch),
                                   atol=1e-4, rtol=1e-4)


def test_residual_spectrum_ignores_level_and_reads_where_the_finest_detail_went():
    """A ratio of two bands of one crop: brightness, contrast and how much detail or noise there is (the level
    every fitted mix of statistics learned its training sources by) cannot move it; losing the finest detail,
    as a 2x up-sampling does, raises it."""
    from shared.modeling.registry import build_model

    torch.manual_seed(0)
    model = build_model("residual_spectrum").eval()
    with torch.no_grad():
        model.head.weight.fill_(1.0)
    x = torch.randn(4, 3, 64, 64)
    upsampled = torch.nn.functional.interpolate(x[:, :, ::2, ::2], scale_factor=2, mode="bilinear")
    with torch.inference_mode():
        torch.testing.assert_close(model(x * 0.3 + 0.7), model(x), atol=1e-4, rtol=1e-4)
        assert (model.features(upsampled) > model.features(x) + 1.0).all()
    assert {n for n, _ in model.named_parameters()} == {"norm.weight", "norm.bias", "head.weight", "head.bias"}


def test_residual_spectrum_serves_in_float32_under_autocast_and_traces():
    """Workers serve under bfloat16 autocast; rounding the luminance to bfloat16 would erase the finest detail
    this model reads, so its statistic and read-out must stay float32 there. And fold_batchnorm's torch.fx
    trace must go through it (a model it cannot trace is served unfolded, with a warning)."""
    from shared.modeling.checkpoint import fold_batchnorm
    from shared.modeling.registry import build_model

    torch.manual_seed(0)
    model = build_model("residual_spectrum").eval()
    with torch.no_grad():
        model.norm.running_mean.fill_(1.5), model.norm.running_var.fill_(0.3), model.head.weight.fill_(0.8)
    folded = fold_batchnorm(model)
    assert isinstance(folded, torch.fx.GraphModule)
    x = torch.rand(9, 3, 128, 128) * 4 - 2
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, feats = folded(x), model.features(x)
    assert out.dtype == feats.dtype == torch.float32
    torch.testing.assert_close(feats.double(), _reference_spectral_ratio(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
