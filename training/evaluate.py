"""Evaluate a checkpoint exactly as the service would score uploads, and write a report folder.

Every image goes through :func:`shared.imaging.preprocess_bytes` from its file bytes and is scored by
:func:`shared.modeling.scorer.score_prepared`, the worker's own path. The robustness rows alter those bytes
first, as happens to uploads on the way: JPEG quality 75, a half-size copy, a screenshot-like PNG re-save and
a centre crop.
"""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.imaging import ImageRejected, load_rgb, preprocess_bytes
from shared.logs import kv
from shared.modeling.checkpoint import CheckpointMeta, load_for_inference
from shared.modeling.device import precision_name
from shared.modeling.scorer import in_batches, score_prepared

from . import plots
from .data import (
    DatasetUnavailable,
    folder_files,
    is_image_folder,
    labelled_files,
    no_labelled_images,
    source_of,
)
from .metrics import classification_report, label_shares, reliability_bins, roc_points

log = logging.getLogger(__name__)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(data: bytes, quality: int) -> bytes:
    """Re-encoded as most cameras and web sites write JPEG (Pillow's 4:2:0 chroma at these qualities)."""
    buf = io.BytesIO()
    load_rgb(data, 10**9).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _jpeg75(data: bytes) -> bytes:
    return _jpeg(data, 75)


def _jpeg85(data: bytes) -> bytes:
    return _jpeg(data, 85)


def _half_size(data: bytes) -> bytes:
    img = load_rgb(data, 10**9)
    return _png(img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.BICUBIC, reducing_gap=3.0))


def _png_resave(data: bytes) -> bytes:
    """What a screenshot of the image shown at 100% gives: the same pixels, saved losslessly as PNG."""
    return _png(load_rgb(data, 10**9))


def _centre_crop(data: bytes) -> bytes:
    img = load_rgb(data, 10**9)
    w, h = img.size
    return _png(img.crop((w // 4, h // 4, w // 4 + max(1, w // 2), h // 4 + max(1, h // 2))))


# Each robustness row: the alteration, and the class it alters (None: both). The last two alter one class and
# leave the other as it is: what a folder of camera JPEGs beside a generator's PNGs looks like. Only they show a
# model that ranks compression rather than origin; a ROC-AUC that rises there (a negative drop) is as much a
# warning as one that falls.
PERTURBATIONS: dict[str, tuple[Callable[[bytes], bytes], int | None]] = {
    "jpeg75": (_jpeg75, None), "half_size": (_half_size, None), "png_resave": (_png_resave, None),
    "centre_crop": (_centre_crop, None), "jpeg85_real_only": (_jpeg85, 0), "jpeg85_fake_only": (_jpeg85, 1),
}


def perturb_class(files: list[bytes], labels: np.ndarray, perturb: Callable[[bytes], bytes],
                  cls: int | None) -> list[bytes]:
    """The files of class `cls` altered (every file when cls is None), every other file as it was."""
    return [perturb(b) if cls is None or y == cls else b for b, y in zip(files, labels)]


@torch.inference_mode()
def score_bytes(model, meta: CheckpointMeta, files: list[bytes], max_crops: int = 2048, device: str = "cpu",
                logits: bool = False, names: list[str] | None = None) -> np.ndarray:
    """Calibrated P(fake) for each file's bytes, or the raw aggregated logits (NaN where a file cannot be
    decoded: logged with its name, where names are given, so that a person can find it)."""
    out = np.full(len(files), np.nan)

    def prepared():
        for i, data in enumerate(files):
            try:
                yield i, preprocess_bytes(data, meta.preprocessing, 10**9)
            except ImageRejected as exc:
                log.warning(kv(event="undecodable", file=names[i] if names else i, reason=str(exc)))

    for run in in_batches(prepared(), lambda item: len(item[1].inputs), max_crops):
        for (i, _), s in zip(run, score_prepared(model, meta, [p for _, p in run], device)):
            out[i] = s.logit if logits else s.p_fake
    return out


def evaluate(checkpoint: Path, data: str, out: Path, split: str = "test", cross_domain: str | None = None,
             robustness: bool = True, limit: int = 0, precision: str = "auto", sources: tuple[str, ...] = (),
             held_out: bool = False, device: str = "cpu") -> dict:
    """``held_out``: score only the sources the checkpoint's training run held out (its --holdout)."""
    cross = _cross_domain_files(Path(cross_domain)) if cross_domain else None  # checked before any scoring
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, meta = load_for_inference(checkpoint, device=device, precision=precision)
    if held_out:
        sources = tuple(meta.training.get("config", {}).get("holdout") or ())
        if not sources:
            raise DatasetUnavailable(f"{checkpoint} was trained without --holdout: it has no held-out sources")
    files, labels, names = labelled_files(data, split, sources)
    if limit:
        pick = np.sort(np.random.default_rng(0).permutation(len(files))[:limit])
        files, labels, names = [files[i] for i in pick], labels[pick], [names[i] for i in pick]
    rule = meta.label_rule
    # rows are named after what was scored: the held-out sources, a folder by its name, a dataset by its split
    name = "held_out" if held_out else Path(data).name if is_image_folder(data) else split
    results: dict[str, dict] = {}
    curves, rel = {}, {}

    def scores(files: list[bytes], names: list[str] | None = None) -> np.ndarray:
        return score_bytes(model, meta, files, device=device, names=names)

    def record(row: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        ok = ~np.isnan(p)
        rep = classification_report(y[ok], p[ok], rule.fake_from)
        rep.update(label_shares(y[ok], rule.labels(p[ok])))
        rep["undecodable"] = int((~ok).sum())
        results[row] = rep
        if rep["n"] and len(np.unique(y[ok])) == 2:
            fpr, tpr = roc_points(y[ok], p[ok])
            curves[row] = (fpr, tpr, rep["roc_auc"])
            rel[row] = reliability_bins(y[ok], p[ok])
        log.info(kv(event="eval", set=row, n=rep["n"], accuracy=f"{rep['accuracy']:.4f}",
                    roc_auc=f"{rep['roc_auc']:.4f}", tpr_at_fpr_5=f"{rep['tpr_at_fpr_5']:.3f}", ece=f"{rep['ece']:.4f}"))
        return p

    p_main = record(name, labels, scores(files, names))
    if robustness:
        # Only what decoded is altered (the main row counts the rest as undecodable, once): an altered copy of
        # a file that is no image is no image either.
        good = np.flatnonzero(~np.isnan(p_main))
        kept, y_kept = [files[i] for i in good], labels[good]
        for kind, (perturb, cls) in PERTURBATIONS.items():
            record(f"{name}+{kind}", y_kept, scores(perturb_class(kept, y_kept, perturb, cls)))
    per_source = source_rows(labels, p_main, names, rule)
    if cross:
        root = Path(cross_domain)
        y = np.array([lab for _, lab in cross])
        record(root.name, y, scores([p.read_bytes() for p, _ in cross], [str(p.relative_to(root)) for p, _ in cross]))

    plots.training_curves(meta.training.get("history", []), out / "training_curves.png")
    plots.roc(curves, out / "roc.png")
    plots.reliability(rel, out / "reliability.png")
    drops = robustness_drops(results, name)
    summary = {
        "checkpoint": str(checkpoint), "version": meta.version, "architecture": meta.architecture,
        "temperature": meta.temperature, "thresholds": rule.to_dict(), "precision": precision_name(model.dtype),
        "sources": list(sources),
        **{row: {k: r[k] for k in ("n", "accuracy", "roc_auc", "roc_auc_ci95", "tpr_at_fpr_1", "tpr_at_fpr_5", "ece",
                                   "real_called_fake", "fake_called_fake", "precision", "recall", "f1")}
           for row, r in results.items()},
        "robustness_auc_drop": {row: round(d, 4) for row, d in drops.items()},
    }
    report = {"summary": summary, "results": results, "per_source": per_source,
              "scores": {"names": names, "labels": labels.tolist(), "p_fake": [round(float(v), 5) for v in p_main]}}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown_table(results, drops) + "\n" + source_table(per_source))
    return report


def _cross_domain_files(root: Path) -> list[tuple[Path, int]]:
    if not root.is_dir():
        raise DatasetUnavailable(f"--cross-domain {root} is not a folder (an image folder with real/ and fake/)")
    items = folder_files(root)
    if not items:
        raise no_labelled_images(root, "--cross-domain")
    return items


def source_rows(labels: np.ndarray, p: np.ndarray, names: list[str], rule) -> dict[str, dict]:
    """Per source: how its images were labelled, and ROC-AUC of that source against the other class's images."""
    srcs = np.array([source_of(n) or "(unnamed)" for n in names])
    rows = {}
    for src in sorted(set(srcs)):
        for cls, word in ((0, "real"), (1, "fake")):
            mask = (srcs == src) & (labels == cls) & ~np.isnan(p)
            if not mask.any():
                continue
            other = (labels != cls) & ~np.isnan(p)
            y = np.r_[labels[mask], labels[other]]
            q = np.r_[p[mask], p[other]]
            named = rule.labels(p[mask])
            rows[f"{src} ({word})"] = {
                "n": int(mask.sum()), "mean_p_fake": float(p[mask].mean()),
                "called_fake": float((named == "fake").mean()), "called_uncertain": float((named == "uncertain").mean()),
                "called_real": float((named == "real").mean()),
                "roc_auc_vs_other_class": classification_report(y, q)["roc_auc"] if other.any() else float("nan"),
            }
    return rows


def robustness_drops(results: dict[str, dict], base: str) -> dict[str, float]:
    """ROC-AUC lost by each altered copy of the set (named base+alteration)."""
    auc = results[base]["roc_auc"]
    return {name: auc - r["roc_auc"] for name, r in results.items() if name.startswith(base + "+")}


def markdown_table(results: dict[str, dict], drops: dict[str, float]) -> str:
    """The table the model card quotes, so its numbers come straight from an evaluate run."""
    lines = ["| set | n | ROC-AUC | 95% CI | TPR @1% FPR | TPR @5% FPR | ECE | accuracy | real called fake "
             "| fake called fake | uncertain (real / fake) | AUC drop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        drop = f"{drops[name]:.4f}" if name in drops else ""
        lo, hi = r["roc_auc_ci95"]
        lines.append(f"| {name} | {r['n']} | {r['roc_auc']:.4f} | {lo:.2f}-{hi:.2f} | {r['tpr_at_fpr_1']:.3f} | {r['tpr_at_fpr_5']:.3f} | "
                     f"{r['ece']:.4f} | {r['accuracy']:.4f} | {r['real_called_fake']:.3f} | {r['fake_called_fake']:.3f} | "
                     f"{r['real_called_uncertain']:.3f} / {r['fake_called_uncertain']:.3f} | {drop} |")
    return "\n".join(lines) + "\n"


def source_table(rows: dict[str, dict]) -> str:
    lines = ["| source (class) | n | mean P(fake) | called fake | uncertain | called real | ROC-AUC vs the other class |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['n']} | {r['mean_p_fake']:.3f} | {r['called_fake']:.3f} | {r['called_uncertain']:.3f} | "
                     f"{r['called_real']:.3f} | {r['roc_auc_vs_other_class']:.4f} |")
    return "\n".join(lines) + "\n"
