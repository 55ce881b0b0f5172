"""Calibrate a checkpoint on sources it never saw: temperature and label thresholds from out-of-fold scores.

A model validated on held-out images of the sources it trained on is far surer of itself there than on an
upload from anywhere else, so a temperature and thresholds fitted there promise fewer false alarms than it
delivers. Here each fold checkpoint (the same recipe, trained with some sources held out) scores exactly its
held-out sources; the pooled out-of-fold logits stand in for "images from a source the model has not seen",
and the temperature (shared by the fold models' logit scale) and thresholds fitted on them are written into a
copy of the full checkpoint. The weights are untouched; the version changes, because the calibration is part
of what a version names.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared.logs import kv
from shared.modeling.checkpoint import (
    load_checkpoint,
    load_for_inference,
    save_checkpoint,
)
from shared.scoring import calibrated, choose_thresholds

from .data import labelled_files
from .evaluate import score_bytes
from .metrics import classification_report
from .train import RunMismatch, fit_temperature

log = logging.getLogger(__name__)


def out_of_fold(folds: list[Path], data: str, precision: str = "float32") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each fold checkpoint's raw image logits on the sources its run held out, pooled."""
    logits, labels, names = [], [], []
    for path in folds:
        model, meta = load_for_inference(path, precision=precision)
        held = tuple(meta.training.get("config", {}).get("holdout") or ())
        if not held:
            raise RunMismatch(f"{path} was trained without --holdout: it has no out-of-fold sources")
        files, y, n = labelled_files(data, sources=held)
        z = score_bytes(model, meta, files, logits=True, names=n)
        ok = ~np.isnan(z)
        logits.append(z[ok]), labels.append(y[ok]), names.extend(np.array(n)[ok])
        log.info(kv(event="out_of_fold", checkpoint=path, sources=",".join(held), n=int(ok.sum())))
    return np.concatenate(logits), np.concatenate(labels), names


def calibrate(checkpoint: Path, folds: list[Path], data: str, out: Path, max_false_fake: float = 0.01,
              max_false_real: float = 0.05) -> dict:
    model, meta = load_checkpoint(checkpoint)
    for path in folds:
        _, fold_meta = load_checkpoint(path)
        if (fold_meta.architecture, fold_meta.arch_args, fold_meta.preprocessing) != (meta.architecture, meta.arch_args, meta.preprocessing):
            raise RunMismatch(f"{path} is not the same recipe as {checkpoint} (architecture or preprocessing differ)")
    z, y, _ = out_of_fold(folds, data)
    temperature = fit_temperature(z, y)
    p = calibrated(z, temperature)
    rule = choose_thresholds(y, p, max_false_fake, max_false_real)
    report = {"n": int(len(y)), "temperature": temperature, "thresholds": rule.to_dict(), **classification_report(y, p, rule.fake_from)}
    meta.temperature, meta.thresholds = temperature, rule.to_dict()
    meta.metrics = {**meta.metrics, "out_of_fold": report}
    meta.training = {**meta.training, "calibrated_on": {"folds": [str(f) for f in folds], "data": data,
                                                        "max_false_fake": max_false_fake, "max_false_real": max_false_real}}
    meta = save_checkpoint(model, meta, out)
    log.info(kv(event="calibrated", checkpoint=out, version=meta.version, temperature=f"{temperature:.3f}",
                real_below=rule.real_below, fake_from=rule.fake_from, oof_auc=f"{report['roc_auc']:.4f}"))
    return {"version": meta.version, **report}
