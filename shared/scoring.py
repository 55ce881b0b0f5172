"""From model outputs to what a user reads: one image's P(AI-generated) and its label.

One owner for the rule, used by the worker, evaluation and training alike (no torch here). A crop-based
checkpoint scores several crops of an image; their logits are averaged (``mean_logit``: every region has an
equal say, and a single odd crop cannot make a real photo "fake" on its own), then divided by the
checkpoint's temperature and passed through the logistic function. The label has three values:

- ``fake`` when P >= ``fake_from``, a threshold chosen on validation data so that few real photos reach it;
- ``real`` when P < ``real_below``, chosen so that few generated images fall under it;
- ``uncertain`` in between: the model has no verdict it can stand behind.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = ("real", "fake", "uncertain")


@dataclass(frozen=True)
class Thresholds:
    real_below: float = 0.5
    fake_from: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.real_below <= self.fake_from <= 1.0:
            raise ValueError(f"thresholds must satisfy 0 <= real_below <= fake_from <= 1, got {self}")

    def label(self, p: float) -> str:
        if p >= self.fake_from:
            return "fake"
        return "real" if p < self.real_below else "uncertain"

    def labels(self, p: np.ndarray) -> np.ndarray:
        return np.where(p >= self.fake_from, "fake", np.where(p < self.real_below, "real", "uncertain"))

    def to_dict(self) -> dict:
        return {"real_below": self.real_below, "fake_from": self.fake_from}


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # no exp overflow for large |x|


def aggregate(crop_logits: np.ndarray, rule: str = "mean_logit") -> float:
    if rule != "mean_logit":
        raise ValueError(f"unknown aggregation rule {rule!r}")
    return float(np.mean(crop_logits))


def image_logits(crop_logits: np.ndarray, counts: list[int], rule: str = "mean_logit") -> np.ndarray:
    """Consecutive runs of crop logits (``counts[i]`` crops for image i) -> one logit per image."""
    out = np.empty(len(counts))
    start = 0
    for i, n in enumerate(counts):
        out[i] = aggregate(crop_logits[start:start + n], rule)
        start += n
    return out


def calibrated(logits: np.ndarray | float, temperature: float) -> np.ndarray:
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


def just_above(scores: np.ndarray, k: int) -> float:
    """The smallest threshold that k of the scores reach: just above the (k+1)-th highest."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    return float(np.nextafter(scores[len(scores) - k - 1], 1.0)) if k < len(scores) else 0.0


def choose_thresholds(labels: np.ndarray, p: np.ndarray, max_false_fake: float = 0.01,
                      max_false_real: float = 0.05) -> Thresholds:
    """Thresholds from validation scores: ``fake_from`` lets at most ``max_false_fake`` of the real photos
    through (a real photo called fake is the costliest error), ``real_below`` at most ``max_false_real`` of
    the generated ones. Where the two cross, the scores separate so well that one threshold keeps both
    promises: the band closes at ``fake_from`` and no image is uncertain."""
    labels = np.asarray(labels).astype(int)
    p = np.asarray(p, dtype=np.float64)
    real, fake = np.sort(p[labels == 0]), np.sort(p[labels == 1])
    if not len(real) or not len(fake):
        raise ValueError("thresholds need validation images of both classes")
    fake_from = just_above(real, int(np.floor(max_false_fake * len(real))))  # mean(real >= t) <= max_false_fake
    # Largest t with mean(fake < t) <= max_false_real: the j-th smallest fake score.
    j = int(np.floor(max_false_real * len(fake)))
    real_below = float(fake[j]) if j < len(fake) else 1.0
    return Thresholds(real_below=min(real_below, fake_from), fake_from=fake_from)
