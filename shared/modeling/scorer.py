"""Prepared images -> calibrated scores: the one forward-and-score path of the worker and of evaluation."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from shared.imaging import Prepared
from shared.scoring import calibrated, image_logits

from .checkpoint import CheckpointMeta
from .device import as_input


@dataclass
class Scored:
    p_fake: float  # the image's calibrated P(AI-generated)
    logit: float  # the aggregated crop logit before calibration
    label: str  # real / fake / uncertain (CheckpointMeta.label_rule)
    crop_p: np.ndarray  # each crop's calibrated P, in the order of Prepared.boxes


T = TypeVar("T")


def in_batches(items: Iterable[T], crops: Callable[[T], int], max_crops: int) -> Iterator[list[T]]:
    """Group items (images, or anything that holds some) into runs of at least ``max_crops`` crops, the last
    run shorter: one forward pass each, and an image's crops never split between two."""
    run, n = [], 0
    for item in items:
        run.append(item)
        n += crops(item)
        if n >= max_crops:
            yield run
            run, n = [], 0
    if run:
        yield run


@torch.inference_mode()
def crop_logits(model: torch.nn.Module, images: list[Prepared], device: str | torch.device = "cpu") -> np.ndarray:
    """The raw logit of every crop of ``images``, in order, from one forward pass."""
    if not images:
        return np.zeros(0, dtype=np.float32)
    return model(as_input(torch.from_numpy(np.concatenate([p.inputs for p in images])), device)).float().cpu().numpy()


def score_prepared(model: torch.nn.Module, meta: CheckpointMeta, images: list[Prepared],
                   device: str | torch.device = "cpu") -> list[Scored]:
    """One forward pass over every crop of ``images``; each image's crop logits aggregated by the checkpoint's
    rule, then calibrated by its temperature and labelled by its thresholds."""
    counts = [len(p.inputs) for p in images]
    crops = crop_logits(model, images, device)
    logits = image_logits(crops, counts, meta.preprocessing.aggregate)
    rule, crop_p = meta.label_rule, np.split(calibrated(crops, meta.temperature), np.cumsum(counts)[:-1])
    return [Scored(float(p), float(z), rule.label(float(p)), cp)
            for z, p, cp in zip(logits, calibrated(logits, meta.temperature), crop_p)]
