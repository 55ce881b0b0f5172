"""Self-describing checkpoints: safetensors weights with everything needed to serve them in the header."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from shared.imaging import Preprocessing
from shared.logs import kv
from shared.model_version import make_version
from shared.scoring import Thresholds

from .device import InPrecision, compute_dtype, memory_format
from .registry import build_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


@dataclass
class CheckpointMeta:
    architecture: str
    arch_args: dict
    preprocessing: Preprocessing
    classes: tuple[str, ...] = ("real", "fake")
    temperature: float = 1.0  # logits are divided by this before the sigmoid (fitted on validation)
    threshold: float = 0.5  # on the calibrated P(fake); the two-label rule of checkpoints without thresholds
    # {"real_below": a, "fake_from": b}: the three-label rule (shared.scoring.Thresholds), chosen on validation
    thresholds: dict = field(default_factory=dict)
    name: str = "pixelproof"
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # What a user must know before trusting a verdict: {"scope": "...", "limits": ["...", ...]}. Shown on the
    # page and in the job JSON; like metrics, not part of the content version (it can be reworded).
    notes: dict = field(default_factory=dict)
    version: str = ""  # derived from content on save; never set by hand

    @property
    def false_fake_share(self) -> float | None:
        """The share of real photos its fake threshold was set to let through, where its calibration recorded
        one: on a deployment's own photos (``calibrate --own-photos``) over out-of-fold scores."""
        done = self.training.get("calibrated_on") or {}
        share = (done.get("own_photos") or {}).get("max_false_fake", done.get("max_false_fake"))
        return float(share) if share is not None else None

    @property
    def label_rule(self) -> Thresholds:
        if self.thresholds:
            return Thresholds(**self.thresholds)
        return Thresholds(self.threshold, self.threshold)

    def to_json(self) -> str:
        data = {
            "format": FORMAT_VERSION,
            "architecture": self.architecture,
            "arch_args": self.arch_args,
            "preprocessing": self.preprocessing.to_dict(),
            "classes": list(self.classes),
            "temperature": self.temperature,
            "threshold": self.threshold,
            "name": self.name,
            "training": self.training,
            "metrics": self.metrics,
            "version": self.version,
        }
        if self.thresholds:  # absent from older checkpoints, whose content versions must not change
            data["thresholds"] = self.thresholds
        if self.notes:
            data["notes"] = self.notes
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        data = json.loads(text)
        if data.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"unsupported checkpoint format {data.get('format')!r}")
        return cls(
            architecture=data["architecture"],
            arch_args=data["arch_args"],
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            classes=tuple(data["classes"]),
            temperature=float(data["temperature"]),
            threshold=float(data["threshold"]),
            thresholds=dict(data.get("thresholds") or {}),
            name=data.get("name", "pixelproof"),
            training=data.get("training", {}),
            metrics=data.get("metrics", {}),
            notes=data.get("notes", {}),
            version=data.get("version", ""),
        )


def _content_version(name: str, state: dict[str, torch.Tensor], meta: CheckpointMeta) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    unversioned = CheckpointMeta(**{**meta.__dict__, "version": "", "metrics": {}, "training": {}, "notes": {}})
    digest.update(unversioned.to_json().encode())
    return make_version(name, digest.hexdigest())


def save_checkpoint(model: nn.Module, meta: CheckpointMeta, path: Path) -> CheckpointMeta:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta.version = _content_version(meta.name, state, meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={"pixelproof": meta.to_json()})
    tmp.replace(path)
    return meta


def read_meta(path: Path) -> CheckpointMeta:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"model checkpoint not found: {path}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"model checkpoint {path} is not a readable safetensors file: {exc}") from None
    if "pixelproof" not in header:
        raise CheckpointError(f"{path} is a safetensors file without Pixelproof metadata")
    try:
        return CheckpointMeta.from_json(header["pixelproof"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has invalid Pixelproof metadata: {exc}") from None


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Load, verify the content hash, and return the model in eval mode."""
    path = Path(path)
    meta = read_meta(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"model checkpoint {path} is corrupt: {exc}") from None
    expected = _content_version(meta.name, state, meta)
    if expected != meta.version:
        raise CheckpointError(f"model checkpoint {path} is corrupt: content hash {expected} != recorded {meta.version}")
    model = build_model(meta.architecture, **meta.arch_args)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"model checkpoint {path} does not match architecture {meta.architecture}: {exc}") from None
    return model.to(device).eval(), meta


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution before it: the same function in fewer passes over
    memory (15-40% more images/s on a CPU). Models that torch.fx cannot trace are returned unchanged."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval(), inplace=False)
    except Exception as exc:  # an architecture with data-dependent control flow still serves, unfolded
        log.warning(kv(event="batchnorm_folding_skipped", arch=type(model).__name__, reason=str(exc)))
        return model


def load_for_inference(path: Path, device: str | torch.device = "cpu",
                       precision: str = "auto") -> tuple[InPrecision, CheckpointMeta]:
    """The model as every scorer runs it (worker, evaluation, benchmarks), so that what is measured is what serves.

    ``precision`` (shared.modeling.device.compute_dtype) is the arithmetic of the forward pass; the model card
    states which one its numbers were measured in."""
    model, meta = load_checkpoint(path, device="cpu")
    device = torch.device(device)
    folded = fold_batchnorm(model).to(device, memory_format=memory_format(device))
    return InPrecision(folded, device, compute_dtype(device, precision)).eval(), meta
