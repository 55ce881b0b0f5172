"""Train a registered architecture and write a self-describing, calibrated checkpoint."""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from shared.imaging import Preprocessing, to_array
from shared.modeling.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from shared.modeling.device import InPrecision, as_input, autocast, compute_dtype, memory_format, pick_device, precision_name
from shared.modeling.registry import build_model
from shared.scoring import calibrated, choose_thresholds, image_logits

from . import native
from .augment import Augment
from .data import ImageSet, load_image_sets, pil_from_uint8, split_validation
from .metrics import classification_report

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: Path
    arch: str = "tiny_resnet"
    arch_args: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    ema_decay: float = 0.0  # > 0 keeps an exponential moving average of the weights and validates/saves that
    optimizer: str = "adamw"  # "adam" reproduces the report's seed CNN
    val_fraction: float = 0.1
    seed: int = 0
    patience: int = 3
    device: str = "auto"
    limit: int = 0  # use only this many training images (quick runs, tests)
    augment: bool = True
    p_shift: float = 0.0  # probability of a whole-pixel mirrored shift (up to 3 px) in augmentation
    threads: int = 0
    precision: str = "auto"  # shared.modeling.device.compute_dtype: float16 on CUDA, bfloat16 on a CPU that has it
    resume: bool = False
    init_from: str = ""  # a checkpoint whose architecture and weights this run starts from (fine-tuning)
    teacher: str = ""  # a checkpoint whose scores this run also learns from (knowledge distillation)
    distill_weight: float = 0.7  # share of the loss taken by the teacher's softened scores
    distill_temperature: float = 2.0
    workers: int = 0  # DataLoader processes decoding and augmenting; a GPU outruns one CPU core
    # Crop-based checkpoints (preprocessing.resize == "native_crops"):
    holdout: tuple[str, ...] = ()  # sources (file-name prefixes) kept out of training and scored at the end
    crops_per_image: int = 1  # random crops of each training image per epoch
    crop_augment: dict = field(default_factory=dict)  # overrides of training.native.CropAugment's arguments
    max_false_fake: float = 0.01  # the three-label thresholds (shared.scoring.choose_thresholds)
    max_false_real: float = 0.05
    max_minutes: float = 0.0  # > 0: after the first epoch, shorten the schedule to the epochs that fit in this time
    name: str = "pixelproof"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


class RunMismatch(ValueError):
    """The arguments contradict the run folder or the checkpoint they point at; the user must choose."""


# What may differ between an interrupted run and its resumption: these do not change what is trained.
_RESUMABLE_CHANGES = {"resume", "threads", "device", "patience", "workers", "max_minutes"}


def _config_dict(cfg: TrainConfig, leave_out: set[str]) -> dict:
    """The configuration as plain JSON-able values (paths as strings), for the checkpoint and the resume state."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in leave_out}


def _run_arguments(cfg: TrainConfig) -> dict:
    return _config_dict(cfg, _RESUMABLE_CHANGES)


class ArrayDataset(Dataset):
    """uint8 images -> the exact tensors serving produces (shared.imaging.to_array), plus augmentation."""

    def __init__(self, images: ImageSet, spec: Preprocessing, augment: Augment | None):
        self.images, self.spec, self.augment = images, spec, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = pil_from_uint8(self.images.images[i])
        if self.augment is not None:
            img = self.augment(img)
        return torch.from_numpy(to_array(img, self.spec)), torch.tensor(float(self.images.labels[i]))


def _seed_worker_augment(worker_id: int) -> None:
    """Each loader process starts with a copy of the same augmentation stream; give each its own.

    torch.initial_seed() differs per worker and per epoch and follows from the loader's generator, so a
    run is still reproducible for a given --workers.
    """
    info = torch.utils.data.get_worker_info()
    if info is not None and info.dataset.augment is not None:
        info.dataset.augment.rng.seed(torch.initial_seed())


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Binary knowledge distillation (Hinton et al. 2015): cross-entropy against the teacher's softened
    P(fake), scaled by T^2 so its gradients keep their size as T changes."""
    soft = torch.sigmoid(teacher.float() / temperature)
    return nn.functional.binary_cross_entropy_with_logits(student.float() / temperature, soft) * temperature**2


def _checkpoint_with_preprocessing(path: str, spec: Preprocessing, role: str) -> tuple[nn.Module, CheckpointMeta]:
    """A checkpoint this run builds on (fine-tuning or teaching); one made for other inputs is refused."""
    model, meta = load_checkpoint(Path(path))
    if meta.preprocessing.to_dict() != spec.to_dict():
        raise RunMismatch(f"{role}{path} was trained with different preprocessing: {meta.preprocessing.to_dict()}")
    return model, meta


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(False)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    scorer = InPrecision(model.eval(), device, dtype)  # validated in the arithmetic it trains and serves in
    logits, labels = [], []
    for x, y in loader:
        logits.append(scorer(as_input(x, device)).cpu())
        labels.append(y)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy().astype(int)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar fitted on held-out NLL."""
    z = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)
    loss_fn = nn.BCEWithLogitsLoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.exp().item())


@dataclass
class RunData:
    """What the loop needs from the data, whichever route the checkpoint takes to the model."""

    train: Dataset
    n_train: int
    n_val: int
    validate: Callable[..., tuple[np.ndarray, np.ndarray]]  # (model[, images]) -> (image logits, labels)
    held_out: native.NativeSet | None = None


def _resized_data(cfg: TrainConfig, device: torch.device, amp_dtype) -> RunData:
    spec = cfg.preprocessing
    if cfg.holdout:
        raise RunMismatch("--holdout needs a crop-based run (--resize native_crops): the whole-image data has no sources")
    sets = load_image_sets(cfg.data, spec, splits=("train",))
    train_set, val_set = split_validation(sets["train"], cfg.val_fraction, cfg.seed)
    if cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        train_set = train_set.subset(np.sort(rng.permutation(len(train_set))[: cfg.limit]))
        val_set = val_set.subset(np.arange(min(len(val_set), max(cfg.limit // 5, 16))))
    val_loader = DataLoader(ArrayDataset(val_set, spec, None), batch_size=512, num_workers=cfg.workers,
                            persistent_workers=cfg.workers > 0)
    augment = Augment(p_shift=cfg.p_shift, seed=cfg.seed) if cfg.augment else None
    return RunData(ArrayDataset(train_set, spec, augment), len(train_set), len(val_set),
                   lambda model: predict_logits(model, val_loader, device, amp_dtype))


def _native_data(cfg: TrainConfig, device: torch.device, amp_dtype) -> RunData:
    """Native-resolution images: held-out sources set aside first, then a validation split stratified by source."""
    spec = cfg.preprocessing
    everything = native.load_native_set(cfg.data)
    pool, held_out = everything.without_sources(tuple(cfg.holdout)) if cfg.holdout else (everything, None)
    train_set, val_set = native.split_validation(pool, cfg.val_fraction, cfg.seed)
    if cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        train_set = train_set.subset(np.sort(rng.permutation(len(train_set))[: cfg.limit]))
        val_set = val_set.subset(np.sort(rng.permutation(len(val_set))[: max(cfg.limit // 5, 16)]))
    if cfg.augment:
        augment = native.CropAugment(spec.input_size, seed=cfg.seed, **cfg.crop_augment)
    else:  # still a random crop: the images are larger than the model's input
        augment = native.CropAugment(spec.input_size, p_resize=0, p_jpeg=0, p_small=0, p_flip=0, seed=cfg.seed)

    def validate(model: nn.Module, images: native.NativeSet = val_set) -> tuple[np.ndarray, np.ndarray]:
        scorer = InPrecision(model.eval(), device, amp_dtype)
        logits, counts = native.crop_logits(scorer, images, spec, device)
        return image_logits(logits, counts, spec.aggregate), images.labels

    train_data = native.CropDataset(train_set, spec, augment, samples=len(train_set) * cfg.crops_per_image)
    return RunData(train_data, len(train_set), len(val_set), validate, held_out)


def _fit_schedule(cfg: TrainConfig, opt, sched, steps_per_epoch: int, done: int, seconds: float):
    """--max-minutes: from the first epoch's time, the epochs that fit; the one-cycle schedule is redrawn over
    them (at the point already reached), so the rate still anneals to its end instead of stopping mid-way.
    cfg.epochs is updated, so the checkpoint records the schedule that was run."""
    fit = max(done, int(cfg.max_minutes * 60 / max(seconds / done, 1e-6)))
    if fit >= cfg.epochs:
        return sched
    log.info("schedule shortened to fit max_minutes=%s epochs=%d (was %d)", cfg.max_minutes, fit, cfg.epochs)
    cfg.epochs = fit
    fresh = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, fit * steps_per_epoch), pct_start=0.15)
    for _ in range(min(done * steps_per_epoch, fit * steps_per_epoch - 1)):
        fresh.step()
    return fresh


def train(cfg: TrainConfig) -> tuple[Path, CheckpointMeta]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    spec = cfg.preprocessing

    amp_dtype = compute_dtype(device, cfg.precision)
    data = _native_data(cfg, device, amp_dtype) if spec.native else _resized_data(cfg, device, amp_dtype)
    log.info("data source=%s train=%d val=%d held_out=%d device=%s precision=%s", cfg.data, data.n_train, data.n_val,
             len(data.held_out) if data.held_out is not None else 0, device, precision_name(amp_dtype))
    gen = torch.Generator().manual_seed(cfg.seed)
    loader_opts = dict(num_workers=cfg.workers, persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    train_loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                              drop_last=len(data.train) > cfg.batch_size, worker_init_fn=_seed_worker_augment, **loader_opts)

    provenance: dict[str, str] = {}
    if cfg.init_from:
        # Start from our own earlier checkpoint: its architecture wins, and its version is recorded below.
        model, source = _checkpoint_with_preprocessing(cfg.init_from, spec, "")
        provenance["init_from_version"] = source.version
        cfg.arch, cfg.arch_args = source.architecture, dict(source.arch_args)
        model = model.train().to(device)
        log.info("init_from checkpoint=%s version=%s", cfg.init_from, source.version)
    else:
        model = build_model(cfg.arch, **cfg.arch_args).to(device)
    model = model.to(memory_format=memory_format(device))
    teacher = None
    if cfg.teacher:
        teacher, teacher_meta = _checkpoint_with_preprocessing(cfg.teacher, spec, "teacher ")
        teacher = teacher.eval().requires_grad_(False).to(device).to(memory_format=memory_format(device))
        provenance["teacher_version"] = teacher_meta.version
        log.info("teacher checkpoint=%s version=%s", cfg.teacher, teacher_meta.version)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, cfg.epochs * len(train_loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    # Averaging the weights along the trajectory smooths out the last noisy steps (Polyak averaging); torch's
    # AveragedModel also averages the BatchNorm statistics, so the averaged copy is complete on its own.
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
                                               use_buffers=True) if cfg.ema_decay > 0 else None)
    # float16 needs its gradients scaled to stay in range; bfloat16 has float32's exponent and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = nn.BCEWithLogitsLoss()

    history: list[dict] = []
    best_val, best_state, bad_epochs, start_epoch = float("inf"), None, 0, 0
    state_path = out / "state.pt"
    if cfg.resume and state_path.exists():
        st = torch.load(state_path, map_location=device, weights_only=False)
        # The learning-rate schedule, the data split and the augmentation all follow from the arguments; resuming
        # under others would silently train something no command describes (or fail deep in the scheduler).
        changed = sorted(k for k, v in _run_arguments(cfg).items() if st.get("arguments", {}).get(k, v) != v)
        if changed:
            raise RunMismatch(f"{state_path} belongs to a run with different arguments ({', '.join(changed)}); "
                              "resume with the same arguments, or train into a new --out")
        model.load_state_dict(st["model"]), opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
        if ema is not None and st.get("ema") is not None:
            ema.load_state_dict(st["ema"])
        history, best_val, best_state, bad_epochs = st["history"], st["best_val"], st["best_state"], st["bad_epochs"]
        start_epoch = st["epoch"] + 1
        torch.set_rng_state(st["rng"])
        log.info("resumed from epoch=%d", start_epoch)

    started = time.time()
    epoch = start_epoch
    while epoch < cfg.epochs:
        # Each epoch's shuffle and augmentation follow from (seed, epoch) alone, so a resumed run sees exactly what
        # the same run left alone would have (with persistent loader processes, the shuffle only).
        gen.manual_seed(cfg.seed * 10_007 + epoch)
        if getattr(data.train, "augment", None) is not None:
            data.train.augment.rng.seed(cfg.seed * 10_007 + epoch)
        model.train()
        # Running sums stay on the device: reading them every step would stall a GPU at each batch.
        t0, seen = time.time(), 0
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0)
        for step, (x, y) in enumerate(bar):
            x = as_input(x, device)
            y = y.to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                logits = model(x)
                hard = loss_fn(logits.float(), y)  # what train_loss reports: the same measure as val_loss
                loss = hard
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = (1 - cfg.distill_weight) * hard + cfg.distill_weight * distillation_loss(
                        logits, t_logits, cfg.distill_temperature)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            seen += len(y)
            loss_sum += hard.detach() * len(y)
            correct += ((logits.detach() > 0).float() == y).sum()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}", refresh=False)
        loss_sum, correct = loss_sum.item(), correct.item()
        scored = ema.module if ema is not None else model
        v_logits, v_labels = data.validate(scored)
        v_loss = float(loss_fn(torch.tensor(v_logits), torch.tensor(v_labels, dtype=torch.float32)))
        v_acc = float(((v_logits > 0).astype(int) == v_labels).mean())
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_loss": v_loss, "val_acc": v_acc, "seconds": round(time.time() - t0, 1)}
        history.append(row)
        log.info("epoch " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if cfg.max_minutes and epoch == start_epoch:
            sched = _fit_schedule(cfg, opt, sched, len(train_loader), epoch + 1, time.time() - started)
        if v_loss < best_val - 1e-4:
            best_val, bad_epochs = v_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
        else:
            bad_epochs += 1
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None, "history": history, "best_val": best_val, "best_state": best_state, "bad_epochs": bad_epochs,
                    "epoch": epoch, "rng": torch.get_rng_state(), "arguments": _run_arguments(cfg)}, state_path)
        (out / "history.json").write_text(json.dumps(history, indent=2))
        if bad_epochs >= cfg.patience:
            log.info("early stop epoch=%d best_val_loss=%.4f", epoch + 1, best_val)
            break
        epoch += 1

    model.load_state_dict(best_state)
    model = model.to(memory_format=torch.contiguous_format)
    v_logits, v_labels = data.validate(model)
    temperature = fit_temperature(v_logits, v_labels)
    v_p = calibrated(v_logits, temperature)
    thresholds = {}
    if spec.native:  # crop-based checkpoints give three labels; the older ones keep their one threshold
        thresholds = choose_thresholds(v_labels, v_p, cfg.max_false_fake, cfg.max_false_real).to_dict()
    metrics = {"validation": classification_report(v_labels, v_p)}
    if data.held_out is not None and len(data.held_out):
        h_logits, h_labels = data.validate(model, data.held_out)
        metrics["held_out"] = {"sources": list(cfg.holdout), **classification_report(h_labels, calibrated(h_logits, temperature))}
        log.info("held_out sources=%s n=%d roc_auc=%.4f", ",".join(cfg.holdout), len(h_labels), metrics["held_out"]["roc_auc"])
    cfg_dict = _config_dict(cfg, {"preprocessing"})
    meta = CheckpointMeta(
        architecture=cfg.arch, arch_args=cfg.arch_args, preprocessing=spec, temperature=temperature, name=cfg.name,
        thresholds=thresholds,
        training={"config": cfg_dict, "history": history, "n_train": data.n_train, "n_val": data.n_val,
                  "torch": torch.__version__, "device": str(device), **provenance},
        metrics=metrics,
    )
    path = out / "model.safetensors"
    meta = save_checkpoint(model.cpu(), meta, path)
    log.info("saved checkpoint=%s version=%s temperature=%.3f val_acc=%.4f val_auc=%.4f", path, meta.version, temperature,
             metrics["validation"]["accuracy"], metrics["validation"]["roc_auc"])
    return path, meta
