"""The model in a worker process: load once, then decode in threads while the forward pass runs.

An image reaches the model as one or more crops (shared.imaging.preprocess_bytes); crops of many images share
a forward pass, and each image's crop scores are aggregated, calibrated and labelled by shared.scoring.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shared import jpeg_regions
from shared.encoding import describe as describe_encoding
from shared.evidence import gather as gather_evidence
from shared.imaging import (
    ImageRejected,
    Prepared,
    preprocess_bytes,
    thumbnails_of_bytes,
)
from shared.limits import BATCH_SIZE, MAX_JPEG_SCANS, MAX_PIXELS
from shared.logs import kv
from shared.modeling.checkpoint import load_for_inference
from shared.modeling.device import pick_device, precision_name
from shared.modeling.scorer import score_prepared

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    p_fake: float | None = None
    label: str | None = None
    error: str | None = None
    details: dict | None = None  # where the model looked: image size, each crop's box and P(fake), the thresholds
    cacheable: bool = True  # a fault of ours (missing file) must not be remembered as a property of the bytes
    thumbnails: dict[int, bytes] | None = None  # JPEG renditions to store (shared.imaging.THUMBNAIL_SIZES)


class Classifier:
    def __init__(self, checkpoint: Path, device: str = "auto", batch_size: int = BATCH_SIZE, decode_threads: int = 2,
                 max_pixels: int = MAX_PIXELS, precision: str = "auto", max_scans: int = MAX_JPEG_SCANS):
        self.device = pick_device(device)
        self.model, self.meta = load_for_inference(checkpoint, device=self.device, precision=precision)
        self.thresholds = self.meta.label_rule.to_dict()  # recorded with every prediction
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.max_scans = max_scans
        self.pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")
        log.info(kv(event="model_loaded", model_version=self.version, device=self.device,
                    precision=precision_name(self.model.dtype), arch=self.meta.architecture,
                    jpeg_regions="libturbojpeg" if jpeg_regions.available() else "unavailable"))

    @property
    def version(self) -> str:
        return self.meta.version

    def _prepare(self, read: Callable[[], bytes]) -> tuple[Prepared | Outcome, dict]:
        """Decode for the model, and read what the file says about itself (shared.evidence), in one thread."""
        try:
            data = read()
        except FileNotFoundError:
            return Outcome(error="the stored upload is missing on this worker's storage", cacheable=False), {}
        evidence = file_facts(data)
        try:
            return preprocess_bytes(data, self.meta.preprocessing, self.max_pixels, with_thumbnails=True,
                                    max_scans=self.max_scans), evidence
        except ImageRejected as exc:
            return Outcome(error=str(exc), details=evidence), evidence
        except Exception as exc:  # a decoder bug must cost one image, not the batch
            log.exception(kv(event="decode_failed", reason=type(exc).__name__))
            return Outcome(error=f"the image could not be decoded ({type(exc).__name__})", details=evidence), evidence

    def _outcome(self, prepared: Prepared, scored, evidence: dict) -> Outcome:
        details = {"width": prepared.width, "height": prepared.height, "thresholds": self.thresholds,
                   "regions": [{"x": b.x, "y": b.y, "w": b.w, "h": b.h, "p_fake": round(float(q), 4)}
                               for b, q in zip(prepared.boxes, scored.crop_p)], **evidence}
        return Outcome(p_fake=scored.p_fake, label=scored.label, details=details, thumbnails=prepared.thumbnails)

    def classify(self, readers: Sequence[Callable[[], bytes]]) -> list[Outcome]:
        """Decoding runs ahead in the thread pool while the model works on the part already decoded.

        A task's images go through the model in two halves at least, so decoding the second half overlaps
        the forward pass of the first instead of the model waiting for the whole task to be decoded. A forward
        pass takes about batch_size crops (an image's crops are never split between passes).
        """
        chunk = max(1, min(self.batch_size, (len(readers) + 1) // 2))
        outcomes: list[Outcome | None] = [None] * len(readers)
        pending_idx: list[int] = []
        pending: list[Prepared] = []
        pending_evidence: list[dict] = []
        crops = 0

        def flush() -> None:
            scores = score_prepared(self.model, self.meta, pending, self.device)
            for i, prepared, scored, evidence in zip(pending_idx, pending, scores, pending_evidence):
                outcomes[i] = self._outcome(prepared, scored, evidence)
            pending_idx.clear()
            pending.clear()
            pending_evidence.clear()

        for i, (prepared, evidence) in enumerate(self.pool.map(self._prepare, readers)):
            if isinstance(prepared, Outcome):
                outcomes[i] = prepared
                continue
            pending_idx.append(i)
            pending.append(prepared)
            pending_evidence.append(evidence)
            crops += len(prepared.inputs)
            if len(pending) >= chunk or crops >= self.batch_size:
                flush()
                crops = 0
        if pending:
            flush()
        return outcomes  # type: ignore[return-value]


def file_facts(data: bytes, evidence: bool = True) -> dict:
    """What a file says about itself (its evidence, and how it was encoded), read from its bytes and never
    given to the model: stored in a prediction's details beside what the model found. ``evidence=False``
    leaves out the evidence, whose reading (Content Credentials' signatures among it) a caller that already
    has it need not pay again."""
    facts = {"encoding": describe_encoding(data)}
    if evidence:
        facts["evidence"], facts["evidence_note"] = gather_evidence(data)
    return facts


def thumbnails_of(read: Callable[[], bytes], max_pixels: int, max_scans: int = MAX_JPEG_SCANS) -> dict[int, bytes] | None:
    """Thumbnails alone, for content whose prediction was cached before thumbnails were stored."""
    try:
        return thumbnails_of_bytes(read(), max_pixels, max_scans)
    except Exception:  # noqa: BLE001 - a cached error already says why this file is not an image
        return None


def default_torch_threads(requested: int, processes: int = 1) -> int:
    """Split the cores between the pool's processes: oversubscribed OpenMP threads spin against each other
    (measured: one 2-thread process beside the web ran at a third of two 1-thread processes)."""
    return requested or max(1, (os.cpu_count() or 1) // max(1, processes))
