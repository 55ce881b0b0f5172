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


# On a CPU a forward pass goes through the model in slices of about this many input pixels (8 crops of 128 px,
# 128 images of 32 px). The default model's per-crop cost tripled once a pass held more than 16 crops of 128 px
# (0.8 ms a crop in bfloat16 up to 16, 2.3 ms at the 72 a worker's batch holds; measured, AVX-512 EPYC): its
# feature maps no longer stay in the cache between one operation and the next. A GPU takes the whole batch.
CPU_SLICE_PIXELS = 8 * 128 * 128


@torch.inference_mode()
def crop_logits(model: torch.nn.Module, images: list[Prepared], device: str | torch.device = "cpu") -> np.ndarray:
    """The raw logit of every crop of ``images``, in order (on a CPU, in slices: CPU_SLICE_PIXELS)."""
    if not images:
        return np.zeros(0, dtype=np.float32)
    x = torch.from_numpy(np.concatenate([p.inputs for p in images]))
    step = max(1, CPU_SLICE_PIXELS // (x.shape[2] * x.shape[3])) if torch.device(device).type == "cpu" else len(x)
    return torch.cat([model(as_input(x[i: i + step], device)).float() for i in range(0, len(x), step)]).cpu().numpy()


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
