"""Evaluate a checkpoint exactly as the service would score uploads, and write a report folder.

Every image goes through :func:`shared.imaging.preprocess_bytes` from its
file bytes; the robustness rows re-encode those bytes first (JPEG q75; half-size and back, saved losslessly).
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.imaging import RESIZE_MODES, ImageRejected, Preprocessing, preprocess_bytes
from shared.modeling.checkpoint import CheckpointMeta, load_for_inference
from shared.modeling.device import as_input, precision_name

from . import plots
from .augment import down_up
from .data import folder_files, load_image_sets
from .metrics import classification_report, reliability_bins, roc_points

log = logging.getLogger(__name__)


def _jpeg75(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def _half_and_back(data: bytes) -> bytes:
    buf = io.BytesIO()
    down_up(Image.open(io.BytesIO(data)).convert("RGB"), 0.5).save(buf, format="PNG")
    return buf.getvalue()


@torch.inference_mode()
def score_bytes(model, meta: CheckpointMeta, files: list[bytes], batch: int = 512, spec: Preprocessing | None = None) -> np.ndarray:
    """Calibrated P(fake) for each file's bytes (NaN where the file cannot be decoded)."""
    out = np.full(len(files), np.nan)
    spec = spec or meta.preprocessing
    for start in range(0, len(files), batch):
        arrays, idx = [], []
        for i in range(start, min(start + batch, len(files))):
            try:
                arrays.append(preprocess_bytes(files[i], spec))
                idx.append(i)
            except ImageRejected as exc:
                log.warning("undecodable index=%d reason=%r", i, str(exc))
        if arrays:
            logits = model(as_input(torch.from_numpy(np.stack(arrays)), "cpu")).float()
            out[idx] = torch.sigmoid(logits / meta.temperature).numpy()
    return out


def evaluate(checkpoint: Path, data: str, out: Path, split: str = "test", cross_domain: str | None = None,
             robustness: bool = True, limit: int = 0, precision: str = "auto") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, meta = load_for_inference(checkpoint, precision=precision)
    sets = load_image_sets(data, meta.preprocessing, splits=(split,), keep_raw=(split,))
    test = sets[split]
    if limit:
        test = test.subset(np.arange(min(limit, len(test))))
    labels = test.labels
    files = test.raw
    results: dict[str, dict] = {}
    curves, rel = {}, {}

    def record(name: str, y: np.ndarray, p: np.ndarray) -> None:
        ok = ~np.isnan(p)
        rep = classification_report(y[ok], p[ok], meta.threshold)
        rep["undecodable"] = int((~ok).sum())
        results[name] = rep
        if rep["n"] and len(np.unique(y[ok])) == 2:
            fpr, tpr = roc_points(y[ok], p[ok])
            curves[name] = (fpr, tpr, rep["roc_auc"])
            rel[name] = reliability_bins(y[ok], p[ok])
        log.info("eval set=%s n=%d accuracy=%.4f roc_auc=%.4f ece=%.4f", name, rep["n"], rep["accuracy"], rep["roc_auc"], rep["ece"])

    record(split, labels, score_bytes(model, meta, files))
    if robustness:
        record(f"{split}+jpeg75", labels, score_bytes(model, meta, [_jpeg75(b) for b in files]))
        record(f"{split}+half_and_back", labels, score_bytes(model, meta, [_half_and_back(b) for b in files]))
    if cross_domain:
        # The checkpoint's own preprocessing is the row that counts; the other resize modes are measured
        # beside it so the choice of how a large photo reaches the model rests on numbers.
        items = folder_files(Path(cross_domain))
        y = np.array([lab for _, lab in items])
        blobs = [p.read_bytes() for p, _ in items]
        own = meta.preprocessing.resize
        for mode in [own] + [m for m in RESIZE_MODES if m != own]:
            name = Path(cross_domain).name + ("" if mode == own else f"[resize={mode}]")
            record(name, y, score_bytes(model, meta, blobs, batch=16, spec=replace(meta.preprocessing, resize=mode)))

    plots.training_curves(meta.training.get("history", []), out / "training_curves.png")
    plots.roc(curves, out / "roc.png")
    plots.reliability(rel, out / "reliability.png")
    drops = robustness_drops(results, split)
    summary = {
        "checkpoint": str(checkpoint), "version": meta.version, "architecture": meta.architecture,
        "temperature": meta.temperature, "precision": precision_name(model.dtype),
        **{name: {k: r[k] for k in ("n", "accuracy", "roc_auc", "ece", "precision", "recall", "f1")} for name, r in results.items()},
        "robustness_drop_points": {name: round(d, 2) for name, d in drops.items()},
    }
    report = {"summary": summary, "results": results}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown_table(results, drops))
    return report


def robustness_drops(results: dict[str, dict], split: str) -> dict[str, float]:
    """Accuracy points lost by each perturbed copy of the split (named split+perturbation)."""
    base = results[split]["accuracy"]
    return {name: 100 * (base - r["accuracy"]) for name, r in results.items() if name.startswith(split + "+")}


def markdown_table(results: dict[str, dict], drops: dict[str, float]) -> str:
    """The table the model card quotes, so its numbers come straight from an evaluate run."""
    lines = ["| set | n | accuracy | ROC-AUC | ECE | precision | recall | F1 | drop vs clean (points) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        drop = f"{drops[name]:.2f}" if name in drops else ""
        lines.append(f"| {name} | {r['n']} | {r['accuracy']:.4f} | {r['roc_auc']:.4f} | {r['ece']:.4f} | "
                     f"{r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {drop} |")
    return "\n".join(lines) + "\n"
