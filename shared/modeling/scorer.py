"""Prepared images -> calibrated scores: the one forward-and-score path of the worker and of evaluation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.imaging import Prepared
from shared.scoring import aggregate, calibrated

from .checkpoint import CheckpointMeta
from .device import as_input


@dataclass
class Scored:
    p_fake: float  # the image's calibrated P(AI-generated)
    logit: float  # the aggregated crop logit before calibration
    label: str  # real / fake / uncertain (CheckpointMeta.label_rule)
    crop_p: np.ndarray  # each crop's calibrated P, in the order of Prepared.boxes


@torch.inference_mode()
def score_prepared(model: torch.nn.Module, meta: CheckpointMeta, images: list[Prepared],
                   device: str | torch.device = "cpu") -> list[Scored]:
    """One forward pass over every crop of ``images``; each image's crop logits aggregated by the checkpoint's
    rule, then calibrated by its temperature and labelled by its thresholds."""
    if not images:
        return []
    logits = model(as_input(torch.from_numpy(np.concatenate([p.inputs for p in images])), device)).float().cpu().numpy()
    rule, out, start = meta.label_rule, [], 0
    for prepared in images:
        crop = logits[start:start + len(prepared.inputs)]
        start += len(prepared.inputs)
        logit = aggregate(crop, meta.preprocessing.aggregate)
        p = float(calibrated(logit, meta.temperature))
        out.append(Scored(p, logit, rule.label(p), calibrated(crop, meta.temperature)))
    return out
