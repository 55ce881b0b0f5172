"""Set a checkpoint's ``fake`` threshold on photos a deployment knows are real.

The shipped thresholds were fitted on pooled sources the model never saw, and its scores sit at different
levels from one source to the next (model card, "What it keys on"), so its promise of at most 1% of real
photos called fake is kept on average over sources, not on any one of them: 0% of one source's photos, 3%
of another's. An operator holding a folder of their own photos (their cameras, their pipeline) can make
the promise hold where their uploads come from. Only ``fake_from`` is refitted: how many generated images
would fall under ``real_below`` cannot be measured without generated images of the same kind, so it stays
(lowered to ``fake_from`` where it would cross it). The temperature stays, so P(AI-generated) keeps its
meaning and only the labels move; the weights stay; the version changes, because thresholds are part of
what a version names.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.folders import visible_files
from shared.logs import kv
from shared.modeling.checkpoint import load_checkpoint, save_checkpoint
from shared.scoring import Thresholds, just_above

from .data import DatasetUnavailable
from .evaluate import score_bytes

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
NOTE = "Its fake threshold was set on"


def photo_files(folder: Path) -> list[Path]:
    """Every file under the folder, hidden ones left out: which of them are images, decoding decides."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetUnavailable(f"{root} is not a folder of photos")
    return visible_files(root)


class _Bytes(Sequence):
    """Each file read when it is scored, so a folder of camera photos never sits in memory at once, and its
    digest kept (a photo filed twice must count once: the threshold's promise assumes independent photos);
    one that cannot be read scores as undecodable instead of ending the run."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.digests: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        try:
            data = self.paths[i].read_bytes()
        except OSError as exc:
            log.warning(kv(event="unreadable", file=self.paths[i], reason=exc.strerror or exc))
            return b""
        self.digests[i] = hashlib.sha256(data).hexdigest()
        return data


def false_fake_bound(n: int, k: int, confidence: float = CONFIDENCE) -> float:
    """Upper confidence bound on the share of new photos like these that reach a threshold set just above the
    (k+1)-th highest of n scores. That share is Beta(k+1, n-k) distributed whatever the scores' distribution
    (order statistics of exchangeable draws); its quantile is where P(Binomial(n, x) >= k+1) = confidence."""
    def reached(x: float) -> float:  # P(Binomial(n, x) >= k + 1)
        if x <= 0.0:
            return 0.0
        if x >= 1.0:
            return 1.0
        logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(x)
                + (n - i) * math.log1p(-x) for i in range(k + 1)]
        return 1.0 - sum(math.exp(v) for v in logs)

    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reached(mid) < confidence else (lo, mid)
    return hi


def calibrate_on_photos(checkpoint: Path, folder: Path, out: Path, max_false_fake: float = 0.01) -> dict:
    if not 0.0 < max_false_fake < 0.5:
        raise ValueError(f"--max-false-fake must lie between 0 and 0.5, got {max_false_fake}")
    paths = photo_files(folder)
    model, meta = load_checkpoint(checkpoint)
    files = _Bytes(paths)
    p = score_bytes(model, meta, files)
    ok = ~np.isnan(p)
    skipped = [str(f.relative_to(folder)) for f, good in zip(paths, ok) if not good]
    seen, duplicates = set(), []
    for i in np.flatnonzero(ok):
        if files.digests[i] in seen:
            ok[i] = False
            duplicates.append(str(paths[i].relative_to(folder)))
        seen.add(files.digests[i])
    scores = p[ok]
    n, needed = len(scores), math.ceil(1.0 / max_false_fake) - 1
    if n < needed:
        raise DatasetUnavailable(f"{folder} has {n} readable photos; a fake threshold that lets at most "
                                 f"{max_false_fake:g} of photos like them through needs at least {needed} "
                                 "(a thousand or more hold it closely)")
    k = max(int(math.floor(max_false_fake * (n + 1))) - 1, 0)
    before = meta.label_rule
    fake_from = just_above(scores, k)
    rule = Thresholds(real_below=min(before.real_below, fake_from), fake_from=fake_from)
    reached = int(np.sum(scores >= fake_from))
    report = {"n": n, "skipped": skipped, "duplicates": duplicates, "max_false_fake": max_false_fake,
              "false_fake": reached / n, "expected_false_fake": (k + 1) / (n + 1),
              "false_fake_bound": false_fake_bound(n, k), "confidence": CONFIDENCE,
              "thresholds": rule.to_dict(), "thresholds_before": before.to_dict()}
    meta.thresholds = rule.to_dict()
    meta.metrics = {**meta.metrics, "own_photos": report}
    meta.training = {**meta.training, "calibrated_on": {**meta.training.get("calibrated_on", {}), "own_photos": {
        "folder": str(folder), "n": n, "max_false_fake": max_false_fake}}}
    if meta.notes:  # shown beside every verdict; a second calibration replaces the first one's line
        limits = [line for line in meta.notes.get("limits", []) if not line.startswith(NOTE)]
        meta.notes = {**meta.notes, "limits": [*limits, (
            f"{NOTE} {n:,} photos this deployment supplied as real, so that on average at most "
            f"{max_false_fake:.1%} of photos like them are called fake (at {CONFIDENCE:.0%} confidence, at most "
            f"{report['false_fake_bound']:.1%}); photos unlike them carry no such promise.")]}
    meta = save_checkpoint(model, meta, out)
    log.info(kv(event="calibrated_on_photos", checkpoint=out, version=meta.version, n=n, skipped=len(skipped),
                duplicates=len(duplicates), fake_from=fake_from, fake_from_before=before.fake_from,
                false_fake_bound=f"{report['false_fake_bound']:.4f}"))
    return {"version": meta.version, **report}
