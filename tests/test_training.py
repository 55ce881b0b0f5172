"""Training, checkpoints and metrics: every registered model trains, round-trips, and is scored correctly."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from shared.imaging import Preprocessing, preprocess_bytes, to_array
from shared.modeling.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_for_inference,
    read_meta,
)
from shared.modeling.registry import REGISTRY
from training.data import load_image_sets
from training.metrics import classification_report, expected_calibration_error
from training.train import RunMismatch, TrainConfig, fit_temperature, train


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_each_model_trains_and_round_trips(arch, mini_dir, tmp_path):
    cfg = TrainConfig(data=str(mini_dir), out=tmp_path, arch=arch, epochs=1, batch_size=64, limit=256,
                      threads=1, name=f"test-{arch}", optimizer="adam" if arch == "seed_cnn" else "adamw")
    path, meta = train(cfg)
    assert meta.architecture == arch and meta.classes == ("real", "fake") and meta.temperature > 0
    assert meta.version.startswith(f"test-{arch}-") and meta.training["history"][0]["epoch"] == 1
    assert read_meta(path).to_json() == meta.to_json()

    model, loaded = load_checkpoint(path)
    again, _ = load_checkpoint(path)
    x = torch.from_numpy(np.concatenate([preprocess_bytes(p.read_bytes(), loaded.preprocessing).inputs
                                         for p in sorted(mini_dir.rglob("*.jpg"))[:16]]))
    served, _ = load_for_inference(path, precision="float32")  # batchnorm folded, channels-last, as workers run it
    halved, _ = load_for_inference(path, precision="bfloat16")
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))
        x_cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(served(x_cl), model(x), atol=1e-4, rtol=1e-4)
        # bfloat16 keeps 8 bits of mantissa: logits move by a few hundredths, and come back as float32
        assert halved(x_cl).dtype == torch.float32
        torch.testing.assert_close(halved(x_cl), model(x), atol=0.1, rtol=0.05)
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())
    assert (tmp_path / "history.json").exists()


def test_tampered_or_corrupt_checkpoint_is_refused(mini_dir, tmp_path):
    path, _ = train(TrainConfig(data=str(mini_dir), out=tmp_path, arch="seed_cnn", epochs=1, limit=64, threads=1))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip a weight byte: the content hash no longer matches the recorded version
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash"):
        load_checkpoint(bad)
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(bad)


def test_training_and_serving_preprocessing_are_identical(mini_dir):
    """The training dataset and the worker must hand the model the same tensor for the same file."""
    spec = Preprocessing()
    sets = load_image_sets(str(mini_dir), spec, splits=("train",), keep_raw=("train",), cache_dir=None)
    train_set = sets["train"]
    for i in range(0, len(train_set), 50):
        served = preprocess_bytes(train_set.raw[i], spec).inputs[0]
        from training.data import pil_from_uint8
        trained = to_array(pil_from_uint8(train_set.images[i]), spec)
        assert served.dtype == np.float32 and served.shape == (3, 32, 32)
        np.testing.assert_array_equal(served, trained)


def test_metrics_match_hand_computed_values():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.1, 0.6, 0.4, 0.9])
    rep = classification_report(labels, probs)
    assert rep["accuracy"] == 0.5 and rep["precision"] == 0.5 and rep["recall"] == 0.5 and rep["f1"] == 0.5
    assert rep["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (fake, real) pairs are ordered right
    assert rep["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}
    # confidences 0.9, 0.6, 0.6, 0.9; the 0.9 pair is right (gap 0.1), the 0.6 pair wrong (gap 0.6)
    assert rep["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_roc_auc_interval_is_delongs():
    """DeLong's variance from its definition (every real-fake pair compared, ties counting half), against the
    midrank computation the reports use; and it narrows as the set grows."""
    from statistics import NormalDist

    from training.metrics import roc_auc_interval

    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(40), np.ones(30)].astype(int)
    probs = np.round(np.r_[rng.normal(0, 1, 40), rng.normal(0.5, 1, 30)], 1)  # rounded: ties on purpose
    pos, neg = probs[labels == 1], probs[labels == 0]
    wins = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])  # 30 x 40
    auc = wins.mean()
    var = wins.mean(1).var(ddof=1) / len(pos) + wins.mean(0).var(ddof=1) / len(neg)
    half = NormalDist().inv_cdf(0.975) * np.sqrt(var)
    assert roc_auc_interval(labels, probs) == pytest.approx((auc - half, auc + half), abs=1e-12)
    assert classification_report(labels, probs)["roc_auc_ci95"] == pytest.approx([auc - half, auc + half], abs=1e-12)
    # four times the images, the same two distributions: about half as wide
    big = np.r_[rng.normal(0, 1, 160), rng.normal(0.5, 1, 120)]
    lo, hi = roc_auc_interval(np.r_[np.zeros(160), np.ones(120)], big)
    assert 0.35 < (hi - lo) / (2 * half) < 0.65
    # clipped to [0, 1]; undefined with one class
    assert roc_auc_interval(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == (1.0, 1.0)
    assert all(np.isnan(roc_auc_interval(np.array([1, 1]), np.array([0.2, 0.8]))))


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    assert fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.05)
    # Logits far smaller than 1 (a residual_energy run's were): LBFGS from T = 1 stopped at 0.92 here.
    assert fit_temperature(true_logits * 0.01, labels) == pytest.approx(0.01, rel=0.05)
    assert fit_temperature(true_logits * 0.0002, labels) == pytest.approx(0.0002, rel=0.05)


def test_one_class_perturbation_alters_that_class_only(mini_dir):
    from training.evaluate import _jpeg85, perturb_class

    files = [next((mini_dir / c).iterdir()).read_bytes() for c in ("real", "fake", "real")]
    out = perturb_class(files, np.array([0, 1, 0]), _jpeg85, 1)
    assert out[0] is files[0] and out[2] is files[2]
    assert out[1] != files[1] and out[1][:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(out[1])) as img:  # what cameras and web sites write: 4:2:0 chroma
        assert img.format == "JPEG" and JpegImagePlugin.get_sampling(img) == 2


def test_cli_evaluate_writes_report(mini_dir, tmp_path):
    from pixelproof.cli import main

    path, _ = train(TrainConfig(data=str(mini_dir), out=tmp_path / "run", arch="seed_cnn", epochs=1, limit=64, threads=1))
    assert main(["evaluate", "--checkpoint", str(path), "--data", str(mini_dir), "--split", "train",
                 "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["results"]["cifake-mini"]["n"] == 500  # a folder's row is named after the folder
    assert {f"cifake-mini+{k}" for k in ("jpeg75", "half_size", "png_resave", "centre_crop", "jpeg85_real_only",
                                         "jpeg85_fake_only")} <= set(report["results"])
    assert 0 <= report["results"]["cifake-mini"]["tpr_at_fpr_5"] <= 1
    results = report["results"]
    for row, kept in (("cifake-mini+jpeg85_real_only", "fake"), ("cifake-mini+jpeg85_fake_only", "real")):
        for word in ("fake", "uncertain", "real"):  # the class left alone is scored exactly as in the main row
            key = f"{kept}_called_{word}"
            assert results[row][key] == results["cifake-mini"][key]
    for png in ("training_curves.png", "roc.png", "reliability.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000


def test_a_folder_from_a_mac_is_evaluated_and_its_broken_image_named(mini_dir, tmp_path, caplog):
    """Hidden files (.DS_Store, AppleDouble `._` companions, .git) are nobody's images; a broken one that is not
    hidden is counted as undecodable, named once, and left out of the altered copies, not fatal to them."""
    from shared.settings import DEFAULT_CHECKPOINT
    from training.evaluate import evaluate

    folder = tmp_path / "desk"
    for label in ("real", "fake"):
        (folder / label / "2026").mkdir(parents=True)
        for i, f in enumerate(sorted((mini_dir / label).iterdir())[:6]):
            (folder / label / ("2026" if i % 2 else "") / f.name).write_bytes(f.read_bytes())
            (folder / label / f"._{f.name}").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)  # AppleDouble
    (folder / "real" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "fake" / ".git").mkdir()
    (folder / "fake" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "fake" / "2026" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short in transfer")
    with caplog.at_level("WARNING", logger="training.evaluate"):
        report = evaluate(DEFAULT_CHECKPOINT, str(folder), tmp_path / "report", precision="float32")
    rows = report["results"]
    assert rows["desk"]["n"] == 12 and rows["desk"]["undecodable"] == 1
    assert {f"desk+{k}" for k in ("jpeg75", "half_size", "png_resave", "centre_crop", "jpeg85_real_only",
                                  "jpeg85_fake_only")} <= set(rows)
    assert all(rows[f"desk+{k}"]["n"] == 12 and rows[f"desk+{k}"]["undecodable"] == 0 for k in ("jpeg75", "half_size"))
    warned = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(warned) == 1 and "file=fake/2026/cut.jpg" in warned[0]


def test_a_nested_folder_trains_and_an_image_it_cannot_read_is_skipped_by_name(mini_dir, tmp_path, caplog):
    """Files at any depth below real/ and fake/ keep their folder's label (the `datasets` imagefolder builder
    drops every label when depths differ), hidden files are left out, and a broken image is named."""
    folder = tmp_path / "mine"
    for label in ("real", "fake"):
        (folder / label / "midjourney").mkdir(parents=True)
        for i, f in enumerate(sorted((mini_dir / label).iterdir())[:12]):
            (folder / label / ("midjourney" if i % 3 == 0 else "") / f.name).write_bytes(f.read_bytes())
    (folder / "fake" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short in transfer")
    (folder / "real" / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)
    with caplog.at_level("WARNING", logger="training.data"):
        _, meta = train(TrainConfig(data=str(folder), out=tmp_path / "run", arch="seed_cnn", epochs=1, threads=1))
    assert meta.training["n_train"] + meta.training["n_val"] == 24
    skipped = [r.getMessage() for r in caplog.records if "training_image_skipped" in r.getMessage()]
    assert len(skipped) == 1 and "name=fake/cut.jpg" in skipped[0], skipped


def test_a_folder_without_classes_or_a_file_that_is_no_checkpoint_is_one_line(mini_dir, tmp_path, capsys):
    """The user's to fix, so exit 2 and one line that says what is wrong, not a traceback (a --cross-domain
    folder is checked before the main set is scored, not after)."""
    from pixelproof.cli import main
    from shared.settings import DEFAULT_CHECKPOINT

    flat, named, empty, split = tmp_path / "flat", tmp_path / "named", tmp_path / "empty", tmp_path / "split"
    flat.mkdir()
    for folder in (empty / "real", empty / "fake", split / "train" / "real", split / "train" / "fake"):
        folder.mkdir(parents=True)
    (empty / "real" / ".DS_Store").write_bytes(b"\x00")  # hidden: no image
    for i, f in enumerate(sorted((mini_dir / "real").iterdir())[:4]):
        (flat / f.name).write_bytes(f.read_bytes())
        (named / ("cats" if i % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
        (named / ("cats" if i % 2 else "dogs") / f.name).write_bytes(f.read_bytes())
    cases = [
        (["train", "--data", str(flat), "--arch", "seed_cnn"], "has no labels: an image folder needs a sub-folder"),
        (["train", "--data", str(named), "--arch", "seed_cnn"], "has no labels (its sub-folders: cats, dogs): an image"),
        (["evaluate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--data", str(named)],
         "has no labels (its sub-folders: cats, dogs): an image"),
        (["train", "--data", str(mini_dir), "--arch", "seed_cnm"], "unknown architecture 'seed_cnm'; registered: "),
        (["train", "--data", str(mini_dir), "--arch", "seed_cnn", "--arch-args", '{"widths": [8]}'],
         "--arch-args {\"widths\": [8]} do not fit seed_cnn"),
        (["evaluate", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(mini_dir)],
         "model checkpoint not found"),
        (["evaluate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--data", str(mini_dir), "--cross-domain",
          str(tmp_path / "nowhere")], "--cross-domain " + str(tmp_path / "nowhere") + " is not a folder"),
        (["evaluate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--data", str(mini_dir), "--cross-domain", str(named)],
         f"--cross-domain {named} has no labels (its sub-folders: cats, dogs): an image"),
        (["train", "--data", str(empty), "--arch", "seed_cnn"],
         f"{empty} has no labelled images: its class folders (fake, real) hold no files"),
        (["evaluate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--data", str(split)],
         f"{split} has no labelled images: its class folders (train/fake, train/real) hold no files"),
        (["evaluate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--data", str(mini_dir), "--cross-domain", str(empty)],
         f"--cross-domain {empty} has no labelled images: its class folders (fake, real) hold no files"),
        (["calibrate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--own-photos", str(flat), "--out", str(tmp_path)],
         f"--out {tmp_path} is a folder; name the checkpoint file to write"),
        (["evaluate", "--checkpoint", str(DEFAULT_CHECKPOINT), "--data", str(mini_dir), "--out",
          str(flat / sorted(p.name for p in flat.iterdir())[0] / "report")], "is a file, not a folder"),
        (["evaluate", "--checkpoint", str(mini_dir / "real" / sorted(p.name for p in (mini_dir / "real").iterdir())[0]),
          "--data", str(mini_dir)], "is not a readable safetensors file"),
    ]
    for args, says in cases:
        assert main([*args] if "--out" in args else [*args, "--out", str(tmp_path / "out")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: ") and says in err, (args, err)


@pytest.mark.parametrize("args, says", [
    (["train", "--data", "d", "--out", "o", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["train", "--data", "d", "--out", "o", "--batch-size", "-4"], "argument --batch-size: must be at least 1"),
    (["train", "--data", "d", "--out", "o", "--lr", "-1"], "argument --lr: must be above 0"),
    (["train", "--data", "d", "--out", "o", "--val-fraction", "1.5"], "argument --val-fraction: must be below 1"),
    (["train", "--data", "d", "--out", "o", "--crops-per-image", "0"], "argument --crops-per-image: must be at least 1"),
    (["train", "--data", "d", "--out", "o", "--limit", "many"], "argument --limit: not an integer: 'many'"),
    (["evaluate", "--checkpoint", "c", "--data", "d", "--out", "o", "--limit", "-3"], "argument --limit: must be at least 0"),
    (["make-aligned", "--data", "d", "--out", "o", "--every", "0"], "argument --every: must be at least 1"),
    (["submit", "--parallel", "0", "folder"], "argument --parallel: must be at least 1, got 0"),
])
def test_a_number_out_of_range_is_refused_before_anything_runs(args, says, capsys):
    """Out of range, a flag had been met later as a traceback from deep in torch (batch_size=0, a negative
    learning rate, an empty validation split) or quietly misused (a negative --limit)."""
    from pixelproof.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_a_folder_that_comes_split_trains_on_train_and_is_evaluated_on_test(mini_dir, tmp_path):
    """Kaggle's layout (train/REAL, train/FAKE, test/REAL, test/FAKE), which the datasets imagefolder builder
    read and the folder rule must too."""
    from training.evaluate import evaluate

    folder = tmp_path / "kaggle"
    for split, n in (("train", 10), ("test", 4)):
        for label, word in (("real", "REAL"), ("fake", "FAKE")):
            (folder / split / word).mkdir(parents=True)
            for f in sorted((mini_dir / label).iterdir())[:n] if split == "train" else sorted((mini_dir / label).iterdir())[-n:]:
                (folder / split / word / f.name).write_bytes(f.read_bytes())
    path, meta = train(TrainConfig(data=str(folder), out=tmp_path / "run", arch="seed_cnn", epochs=1, threads=1))
    assert meta.training["n_train"] + meta.training["n_val"] == 20
    report = evaluate(path, str(folder), tmp_path / "report", robustness=False)
    assert report["results"]["kaggle"]["n"] == 8 and all(n.startswith("test/") for n in report["scores"]["names"])


def test_only_visible_files_are_a_folders_own(tmp_path):
    from shared.folders import visible_files

    root = tmp_path / ".photos"  # a hidden folder named on purpose is still read
    for name in ("a.jpg", "b/c.jpg", "._a.jpg", ".DS_Store", "b/.hidden/d.jpg", ".git/HEAD"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "b" / "empty").mkdir()
    assert [str(p.relative_to(root)) for p in visible_files(root)] == ["a.jpg", "b/c.jpg"]


def test_resume_continues_from_saved_state(mini_dir, tmp_path, monkeypatch):
    """A run stopped after its first epoch and resumed ends exactly as the same run left alone."""
    import training.train as train_module

    def run(out, **kw):
        return TrainConfig(data=str(mini_dir), out=out, arch="seed_cnn", epochs=2, limit=64, threads=1, **kw)

    _, whole = train(run(tmp_path / "whole"))

    real_save = torch.save

    def save_then_stop(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if isinstance(obj, dict) and obj.get("epoch") == 0:
            raise KeyboardInterrupt  # as if the machine went away after the first epoch was saved

    monkeypatch.setattr(train_module.torch, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(run(tmp_path / "parts"))
    monkeypatch.setattr(train_module.torch, "save", real_save)
    assert len(torch.load(tmp_path / "parts" / "state.pt", weights_only=False)["history"]) == 1
    _, resumed = train(run(tmp_path / "parts", resume=True))

    def numbers(history):  # every figure of every epoch but its duration
        return [v for row in history for k, v in sorted(row.items()) if k != "seconds"]

    assert numbers(resumed.training["history"]) == pytest.approx(numbers(whole.training["history"]), abs=1e-6)
    assert resumed.version == whole.version  # the same weights, so the same content version
    _, again = train(run(tmp_path / "parts", resume=True))  # both epochs done: nothing is trained again
    assert again.version == whole.version


def test_resume_refuses_a_run_folder_written_with_other_arguments(mini_dir, tmp_path, capsys):
    from pixelproof.cli import main

    args = ["train", "--data", str(mini_dir), "--out", str(tmp_path), "--arch", "seed_cnn", "--limit", "64", "--threads", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    # More epochs would stretch a one-cycle schedule that has already ended; say so instead of failing inside torch.
    assert main([*args, "--epochs", "3", "--resume"]) == 2
    assert "different arguments (epochs)" in capsys.readouterr().err
    assert main([*args, "--epochs", "1", "--resume", "--threads", "2"]) == 0  # threads do not change what is trained


def test_default_card_numbers_are_reproduced_by_evaluate(tmp_path):
    """The default checkpoint, evaluated on mixed100 through the service's own scoring, gives the numbers its
    card quotes: the same thresholds, the same labels, the same ROC-AUC."""
    from shared.settings import DEFAULT_CHECKPOINT
    from training.evaluate import evaluate

    from .conftest import DATASETS, unavailable

    if not (DATASETS / "mixed100").is_dir():
        unavailable("mixed100 not found")
    card = json.loads((DEFAULT_CHECKPOINT.parent / "default.metrics.json").read_text())
    meta = read_meta(DEFAULT_CHECKPOINT)
    assert card["summary"]["version"] == meta.version and card["summary"]["precision"] == "float32"
    assert card["summary"]["thresholds"] == meta.label_rule.to_dict() and meta.thresholds  # three labels
    report = evaluate(DEFAULT_CHECKPOINT, str(DATASETS / "mixed100"), tmp_path, robustness=False, precision="float32")
    fresh, quoted = report["results"]["mixed100"], card["results"]["mixed100"]
    for key in ("n", "accuracy", "roc_auc", "ece", "tpr_at_fpr_5", "real_called_fake", "fake_called_fake",
                "real_called_uncertain", "confusion_matrix"):
        assert fresh[key] == pytest.approx(quoted[key], abs=1e-6), key
    card_text = (DEFAULT_CHECKPOINT.parent / "MODEL_CARD.md").read_text()
    assert meta.version in card_text and f"| mixed100 | {quoted['n']} | {quoted['roc_auc']:.4f} |" in card_text


def test_cifake_card_numbers_are_reproduced_by_evaluate(tmp_path):
    """The CIFAKE checkpoint, evaluated on the CIFAKE test split, gives the numbers its card quotes."""
    from shared.settings import CIFAKE_CHECKPOINT
    from training.evaluate import evaluate

    from .conftest import DATASETS, unavailable

    if not (DATASETS / "cifake").is_dir():
        unavailable("CIFAKE parquet not found")
    card = json.loads((CIFAKE_CHECKPOINT.parent / "metrics.json").read_text())
    assert card["summary"]["version"] == read_meta(CIFAKE_CHECKPOINT).version
    # Only float32 is the same arithmetic on every CPU: bfloat16 is native on some and emulated (with other
    # rounding, and minutes slower) on the rest, so numbers measured in it cannot be checked everywhere.
    assert card["summary"]["precision"] == "float32", "measure the card's numbers with --precision float32"
    report = evaluate(CIFAKE_CHECKPOINT, str(DATASETS / "cifake"), tmp_path, robustness=False, precision="float32")
    fresh, quoted = report["results"]["test"], card["results"]["test"]
    for key in ("n", "accuracy", "roc_auc", "ece", "precision", "recall", "f1", "confusion_matrix"):
        # 1e-6, not 0: kernels differ across CPUs in the last float bits, which can swap two near-equal scores
        assert fresh[key] == pytest.approx(quoted[key], abs=1e-6), key
    card_text = (CIFAKE_CHECKPOINT.parent / "MODEL_CARD.md").read_text()
    assert f"| test | {quoted['n']} | {quoted['accuracy']:.4f} | {quoted['roc_auc']:.4f} |" in card_text


def _seed_datasets_cache(mini_dir, cache, repo_id: str) -> None:
    """Lay the mini set out in the datasets cache exactly as an earlier download of `repo_id` would have."""
    import shutil

    from datasets import load_dataset

    staging = cache.parent / "staging"
    load_dataset("imagefolder", data_dir=str(mini_dir), cache_dir=str(staging))
    [prepared] = [p for p in staging.glob("imagefolder/*/*/*") if p.is_dir()]
    owner, name = repo_id.split("/")
    target = cache / f"{owner}___{name}" / "default" / prepared.parent.name / prepared.name
    shutil.copytree(prepared, target)
    for arrow in target.glob("imagefolder-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("imagefolder-", f"{name}-", 1)))


def test_hub_dataset_name_trains_from_the_local_datasets_cache(mini_dir, tmp_path):
    """A hub name goes through datasets' own hub loader; offline it is served from an earlier download."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "hf-datasets"
    _seed_datasets_cache(mini_dir, cache, "acme/ai-vs-real")
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pixelproof.cli", "train", "--data", "acme/ai-vs-real", "--out", str(tmp_path / "run"),
         "--arch", "seed_cnn", "--epochs", "1", "--limit", "128", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    meta = read_meta(tmp_path / "run" / "model.safetensors")
    assert meta.training["config"]["data"] == "acme/ai-vs-real"
    assert meta.training["n_train"] == 128

    missing = subprocess.run(
        [sys.executable, "-m", "pixelproof.cli", "train", "--data", "acme/never-downloaded", "--out",
         str(tmp_path / "run2"), "--epochs", "1"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert missing.returncode == 2
    assert "acme/never-downloaded" in missing.stderr and "Traceback" not in missing.stderr
    unreadable = subprocess.run(
        [sys.executable, "-m", "pixelproof.cli", "evaluate", "--checkpoint", str(tmp_path / "run" / "model.safetensors"),
         "--data", "acme/never-downloaded", "--out", str(tmp_path / "report")],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert unreadable.returncode == 2
    assert "acme/never-downloaded" in unreadable.stderr and "Traceback" not in unreadable.stderr


def test_shift_augmentation_moves_whole_pixels_and_invents_none():
    from PIL import Image

    from training.augment import shift

    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.asarray(shift(Image.fromarray(a), 2, -1))
    assert b.shape == a.shape
    np.testing.assert_array_equal(b[1:, :30], a[:31, 2:])  # content moved left 2 and down 1
    np.testing.assert_array_equal(b[0, :30], a[1, 2:])  # the new top row mirrors the old second row
    assert set(map(tuple, b.reshape(-1, 3))) <= set(map(tuple, a.reshape(-1, 3)))


def test_fine_tune_with_ema_and_shift_starts_from_our_checkpoint(mini_dir, tmp_path):
    first, first_meta = train(TrainConfig(data=str(mini_dir), out=tmp_path / "a", arch="seed_cnn", epochs=1,
                                          limit=64, threads=1))
    cfg = TrainConfig(data=str(mini_dir), out=tmp_path / "b", arch="tiny_resnet", epochs=1, limit=64, threads=1,
                      init_from=str(first), ema_decay=0.9, p_shift=0.5)
    path, meta = train(cfg)
    assert meta.architecture == "seed_cnn"  # the source checkpoint's architecture wins over --arch
    assert meta.training["init_from_version"] == first_meta.version
    assert meta.training["config"]["ema_decay"] == 0.9
    model, _ = load_checkpoint(path)
    source, _ = load_checkpoint(first)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, source.state_dict()[k])]
    assert changed  # it trained: the EMA copy moved away from the starting weights


def test_precision_follows_the_hardware_unless_named():
    from shared.modeling.device import bf16_native, compute_dtype

    assert compute_dtype("cpu", "float32") is None
    assert compute_dtype("cpu", "bfloat16") == torch.bfloat16
    assert compute_dtype("cuda", "auto") == torch.float16
    assert compute_dtype("mps", "auto") is None
    assert compute_dtype("cpu", "auto") == (torch.bfloat16 if bf16_native() else None)
    with pytest.raises(ValueError, match="precision must be one of"):
        compute_dtype("cpu", "int8")


def test_distillation_learns_from_a_teacher_checkpoint(mini_dir, tmp_path):
    teacher, teacher_meta = train(TrainConfig(data=str(mini_dir), out=tmp_path / "t", arch="tiny_resnet", epochs=1,
                                              limit=64, threads=1))
    cfg = TrainConfig(data=str(mini_dir), out=tmp_path / "s", arch="tiny_resnet", arch_args={"widths": [8, 16]},
                      epochs=1, limit=64, threads=1, teacher=str(teacher), workers=2)
    path, meta = train(cfg)
    assert meta.training["teacher_version"] == teacher_meta.version
    assert meta.arch_args == {"widths": [8, 16]}  # the student keeps its own, smaller architecture
    assert meta.training["config"]["teacher"] == str(teacher)
    # a teacher that saw other preprocessing would teach the student about other inputs: refused
    other = TrainConfig(data=str(mini_dir), out=tmp_path / "u", epochs=1, limit=64, threads=1, teacher=str(teacher),
                        preprocessing=Preprocessing(resize="center_crop"))
    with pytest.raises(RunMismatch, match="different preprocessing"):
        train(other)


def test_distillation_loss_matches_hand_computed_value():
    from training.train import distillation_loss

    student, teacher, t = torch.tensor([0.0, 2.0]), torch.tensor([2.0, -2.0]), 2.0
    soft = 1 / (1 + np.exp(-np.array([1.0, -1.0])))  # teacher / T
    z = np.array([0.0, 1.0])  # student / T
    expected = np.mean(-(soft * np.log(1 / (1 + np.exp(-z))) + (1 - soft) * np.log(1 - 1 / (1 + np.exp(-z))))) * t**2
    assert distillation_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    # a student that agrees with the teacher pays only the teacher's own entropy, the minimum
    assert distillation_loss(teacher, teacher, t) < distillation_loss(student, teacher, t)


def test_loader_processes_augment_differently():
    """Each DataLoader process gets a copy of the augmentation stream; unseeded, they would all draw the same
    flips and shifts, and a run with --workers 4 would see a quarter of the variety it asked for."""
    from torch.utils.data import DataLoader

    from training.augment import Augment
    from training.data import ImageSet
    from training.train import ArrayDataset, _seed_worker_augment

    one = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    images = ImageSet(np.repeat(one, 8, axis=0), np.zeros(8, dtype=np.int64))
    data = ArrayDataset(images, Preprocessing(), Augment(p_jpeg=0, p_resize=0, p_flip=0.5, p_shift=1.0, seed=0))
    def per_process(init_fn):
        loader = DataLoader(data, batch_size=1, num_workers=4, worker_init_fn=init_fn,
                            generator=torch.Generator().manual_seed(0))
        outs = [x[0].numpy().tobytes() for x, _ in loader]
        return {outs[w] + outs[w + 4] for w in range(4)}  # batch i comes from process i % 4

    assert len(per_process(None)) == 1  # the failure this guards against: four identical streams
    assert len(per_process(_seed_worker_augment)) == 4
