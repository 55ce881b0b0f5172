"""What a training run is: one dataclass whose fields carry their defaults and help. `pixelproof train`'s
flags are made from it (add_flags, from_flags), so a default is written here and nowhere else.

Light on purpose (no torch): the CLI builds its parser from this module for every command.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.settings import PRECISIONS

# make-aligned: the centre of each photo that is reconstructed, at most this many px a side (light, for the CLI)
ALIGNED_MAX_SIDE = 192

if TYPE_CHECKING:
    from shared.imaging import Preprocessing


def _preprocessing() -> Preprocessing:
    from shared.imaging import Preprocessing

    return Preprocessing()


def _opt(default: Any, help: str, **cli: Any) -> Any:
    """A field with its default and what `pixelproof train --help` says of it (cli: flag=, choices=)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **cli})
    return field(default=default, metadata={"help": help, **cli})


def bounded(kind: type, low: float | None = None, high: float | None = None, *, above: float | None = None,
            below: float | None = None):
    """An argparse type: a `kind` within [low, high], or strictly above / below a bound. A value out of range
    is refused with the flag's name before anything runs, not met later as a traceback from deep in torch."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        for bad, words in ((low is not None and value < low, f"at least {low}"),
                           (high is not None and value > high, f"at most {high}"),
                           (above is not None and value <= above, f"above {above}"),
                           (below is not None and value >= below, f"below {below}")):
            if bad:
                raise argparse.ArgumentTypeError(f"must be {words}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _sources(text: str) -> tuple[str, ...]:
    return tuple(s for s in text.split(",") if s)


@dataclass(frozen=True)
class TrainConfig:
    data: str = field(metadata={"help": "parquet dir, image folder (real/ and fake/, images at any depth below "
                                        "them), or Hugging Face dataset name"})
    out: Path = field(metadata={"help": "run folder (checkpoint, history, resume state)"})
    arch: str = _opt("tiny_resnet", "architecture from the model registry (tiny_resnet, residual_energy, ...; "
                     "shared/modeling/registry.py); --init-from's wins")
    arch_args: dict = _opt({}, "JSON, e.g. '{\"widths\": [16, 32, 64, 128]}'")
    epochs: int = _opt(10, "passes over the training data (the one-cycle schedule spans them)", type=bounded(int, 1))
    batch_size: int = _opt(128, "images per step", type=bounded(int, 1))
    lr: float = _opt(3e-3, "peak learning rate of the one-cycle schedule", type=bounded(float, above=0))
    weight_decay: float = _opt(5e-4, "AdamW weight decay", type=bounded(float, 0))
    ema_decay: float = _opt(0.0, "EMA decay of the weights per step, e.g. 0.999 (0: off); the average is "
                            "validated and saved", flag="--ema", type=bounded(float, 0, below=1))
    optimizer: str = _opt("adamw", "optimiser (adam reproduces the report's seed CNN; lbfgs fits a fixed-statistics "
                          "model's linear read-out to convergence on crops_per_image crops of each image, with "
                          "--weight-decay as its L2, and ignores the epoch settings)",
                          choices=["adamw", "adam", "lbfgs"])
    val_fraction: float = _opt(0.1, "share of the data held out for validation (stratified by class, and by "
                               "source for crops)", type=bounded(float, above=0, below=1))
    seed: int = _opt(0, "seed of the split, the initialisation and the augmentation")
    patience: int = _opt(3, "early stopping on validation loss", type=bounded(int, 1))
    device: str = _opt("auto", "where to train: auto picks CUDA, then MPS, then the CPU",
                       choices=["auto", "cpu", "cuda", "mps"])
    limit: int = _opt(0, "train on at most this many images (quick runs, tests; 0: all)", type=bounded(int, 0))
    augment: bool = _opt(True, "turn augmentation off", flag="--no-augment")
    p_shift: float = _opt(0.0, "probability of a mirrored shift of up to 3 px", flag="--shift",
                          type=bounded(float, 0, 1))
    threads: int = _opt(0, "CPU threads for torch (0: all cores)", type=bounded(int, 0))
    precision: str = _opt("auto", "auto: float16 on CUDA, bfloat16 on a CPU with native support, else float32",
                          choices=list(PRECISIONS))
    resume: bool = _opt(False, "continue the run in --out from its last saved epoch")
    init_from: str = _opt("", "fine-tune: start from this checkpoint's architecture, weights and (unless "
                          "given) preprocessing")
    teacher: str = _opt("", "distil: also learn from this checkpoint's softened scores")
    distill_weight: float = _opt(0.7, "share of the loss given to the teacher", type=bounded(float, 0, 1))
    distill_temperature: float = _opt(2.0, "temperature that softens the teacher's scores",
                                      type=bounded(float, above=0))
    workers: int = _opt(0, "data-loading processes (GPU training wants several)", type=bounded(int, 0))
    # Crop-based checkpoints (preprocessing.resize == "native_crops"):
    holdout: tuple[str, ...] = _opt((), "native_crops: comma-separated sources (file names <source>__<id>) kept "
                                    "out of training and scored at the end", type=_sources)
    paired: bool = _opt(False, "native_crops: DATA is a `make-aligned` folder; each batch holds every real crop "
                        "beside its reconstruction cut at the same place through the same augmentation, so the "
                        "classes differ only by the decoder's traces (--batch-size counts pairs); --holdout "
                        "names the real photos' sources")
    with_pairs: str = _opt("", "native_crops: also train on this `make-aligned` folder's pairs: each item of a batch "
                           "is one crop of DATA beside one real crop and its reconstruction's crop (cut alike, "
                           "as --paired cuts them), so the model learns the generators of DATA and a decoder's "
                           "traces at once (--batch-size counts items of three crops); --holdout and the "
                           "validation split leave out the pairs of the photos they leave out")
    crops_per_image: int = _opt(1, "native_crops: random crops of each image per epoch", type=bounded(int, 1))
    crop_augment: dict = _opt({}, "native_crops: JSON overrides of the augmentation, e.g. '{\"p_jpeg\": 0.8}' "
                              "(training.native.CropAugment)")
    max_false_fake: float = _opt(0.01, "native_crops: share of real validation photos the fake threshold lets "
                                 "through (shared.scoring.choose_thresholds)", type=bounded(float, above=0, below=0.5))
    max_false_real: float = _opt(0.05, "native_crops: share of generated validation images labelled real at most",
                                 type=bounded(float, above=0, below=0.5))
    max_minutes: float = _opt(0.0, "after the first epoch, shorten the schedule to the epochs that fit in this many "
                              "minutes (0: off)", type=bounded(float, 0))
    name: str = _opt("pixelproof", "model name, the first part of the checkpoint's version")
    preprocessing: Preprocessing = field(default_factory=_preprocessing, metadata={"cli": False})


def add_flags(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One flag per field: --name-with-dashes (or the field's flag=), typed by its default."""
    for f in fields(cls):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        opts: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if f.default is MISSING and f.default_factory is MISSING:
            parser.add_argument(flag, required=True, type=Path if f.type in ("Path", Path) else str,
                                default=argparse.SUPPRESS, **opts)
            continue
        default = _default(f)
        if isinstance(default, bool):  # a switch: its help says what giving it does, no default is shown
            parser.add_argument(flag, action="store_false" if default else "store_true", default=argparse.SUPPRESS,
                                **opts)
            continue
        kind = meta.get("type") or (json.loads if isinstance(default, dict) else type(default))
        parser.add_argument(flag, type=kind, default=default, choices=meta.get("choices"), **opts)


def from_flags(args: argparse.Namespace, cls: type = TrainConfig, **given: Any):
    """The config the parsed flags describe; given: fields the flags do not carry (preprocessing)."""
    values = {f.name: getattr(args, f.name, None) for f in fields(cls) if f.metadata.get("cli") is not False}
    return cls(**{k: _default(f) if values[k] is None else values[k] for f in fields(cls) if (k := f.name) in values},
               **given)


def _default(f) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()
