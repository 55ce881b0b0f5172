"""Train a registered architecture and write a self-describing, calibrated checkpoint."""
from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from shared.imaging import Preprocessing, to_array
from shared.logs import kv
from shared.modeling.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from shared.modeling.device import (
    InPrecision,
    as_input,
    autocast,
    compute_dtype,
    memory_format,
    pick_device,
    precision_name,
)
from shared.modeling.registry import build_model
from shared.scoring import calibrated, choose_thresholds, image_logits

from . import aligned, native, readout
from .augment import Augment
from .config import TrainConfig
from .data import ImageSet, load_image_sets, pil_from_uint8, split_validation
from .metrics import classification_report

log = logging.getLogger(__name__)


class RunMismatch(ValueError):
    """The arguments cannot work (an unknown architecture, arguments it does not take), or contradict the run
    folder or the checkpoint they point at; the user must choose."""


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
    """Temperature scaling (Guo et al. 2017): one scalar fitted on held-out NLL.

    The NLL is convex in 1/T, but a gradient method started at T = 1 stalls where the logits are small (a
    model whose logits spread over +-0.01 needs T near 0.01; LBFGS stopped at 0.92) and can run off to
    T -> 0. So: the best of a log-spaced grid over 1e-6..1e4, then golden-section search around it."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # BCE with logits, without overflow

    grid = np.linspace(math.log(1e-6), math.log(1e4), 241)
    k = int(np.argmin([nll(g) for g in grid]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return math.exp((lo + hi) / 2)


@dataclass
class RunData:
    """What the loop needs from the data, whichever route the checkpoint takes to the model."""

    train: Dataset
    n_train: int
    n_val: int
    validate: Callable[..., tuple[np.ndarray, np.ndarray]]  # (model[, images]) -> (image logits, labels)
    held_out: native.NativeSet | None = None
    collate: Callable | None = None  # how the loader makes a batch of items (None: torch's default)


def _resized_data(cfg: TrainConfig, device: torch.device, amp_dtype) -> RunData:
    spec = cfg.preprocessing
    if cfg.holdout or cfg.with_pairs:
        raise RunMismatch("--holdout and --with-pairs need a crop-based run (--resize native_crops): the whole-image "
                          "data has no sources")
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
    if cfg.paired and cfg.with_pairs:
        raise RunMismatch("--paired trains on pairs alone and --with-pairs on pairs beside DATA: give one")
    everything = native.load_native_set(cfg.data)
    if cfg.paired:
        pairs = native.aligned_pairs(everything, aligned.PREFIX, aligned.MAX_SIDE)
        train_pairs, val_set, held_out = native.split_pairs(pairs, tuple(cfg.holdout), cfg.val_fraction, cfg.seed)
    else:
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

    if cfg.paired:  # n_train counts images, two a pair
        train_data = native.PairedCropDataset(train_pairs, spec, augment, samples=len(train_pairs) * cfg.crops_per_image)
        return RunData(train_data, 2 * len(train_pairs), len(val_set), validate, held_out, collate=native.flatten_pairs)
    train_data = native.CropDataset(train_set, spec, augment, samples=len(train_set) * cfg.crops_per_image)
    if cfg.with_pairs:  # an epoch draws every image's crops once and as many pairs beside them
        left_out = val_set.names + (held_out.names if held_out is not None else [])
        pairs = native.pairs_except(native.aligned_pairs(native.load_native_set(cfg.with_pairs), aligned.PREFIX,
                                                         aligned.MAX_SIDE), tuple(cfg.holdout), left_out)
        log.info(kv(event="with_pairs", folder=cfg.with_pairs, pairs=len(pairs)))
        mixed = native.MixedCropDataset(train_data, native.PairedCropDataset(pairs, spec, augment))
        return RunData(mixed, len(train_set) + 2 * len(pairs), len(val_set), validate, held_out,
                       collate=native.flatten_pairs)
    return RunData(train_data, len(train_set), len(val_set), validate, held_out)


def _fit_schedule(cfg: TrainConfig, run: Run, steps_per_epoch: int, done: int, seconds: float) -> TrainConfig:
    """--max-minutes: from the first epoch's time, the epochs that fit; the one-cycle schedule is redrawn over
    them (at the point already reached), so the rate still anneals to its end instead of stopping mid-way.
    Returns the config with those epochs, so the checkpoint records the schedule that was run."""
    fit = max(done, int(cfg.max_minutes * 60 / max(seconds / done, 1e-6)))
    if fit >= cfg.epochs:
        return cfg
    log.info(kv(event="schedule_shortened", max_minutes=cfg.max_minutes, epochs=fit, was=cfg.epochs))
    fresh = torch.optim.lr_scheduler.OneCycleLR(run.opt, max_lr=cfg.lr, total_steps=max(1, fit * steps_per_epoch),
                                                pct_start=0.15)
    for _ in range(min(done * steps_per_epoch, fit * steps_per_epoch - 1)):
        fresh.step()
    run.sched = fresh
    return replace(cfg, epochs=fit)


@dataclass
class Run:
    """What changes while a run trains: the model and what steps it, and the record kept for resuming."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    scaler: torch.amp.GradScaler
    teacher: nn.Module | None
    history: list[dict] = field(default_factory=list)
    best_val: float = float("inf")
    best_state: dict | None = None
    bad_epochs: int = 0

    @property
    def scored(self) -> nn.Module:
        """The weights validated and saved: the running average when there is one."""
        return self.ema.module if self.ema is not None else self.model


LOSS = nn.BCEWithLogitsLoss()


def _check_architecture(cfg: TrainConfig) -> None:
    """A misspelt --arch, or --arch-args it does not take, fails in one line before minutes of decoding; the
    throwaway copy draws from a forked generator, so the run's random streams are those it always had."""
    if cfg.init_from:
        return
    with torch.random.fork_rng(devices=[]):
        try:
            build_model(cfg.arch, **cfg.arch_args)
        except KeyError as exc:
            raise RunMismatch(exc.args[0]) from None
        except TypeError as exc:
            raise RunMismatch(f"--arch-args {json.dumps(cfg.arch_args)} do not fit {cfg.arch}: {exc}") from None


def _base_model(cfg: TrainConfig, device: torch.device) -> tuple[TrainConfig, nn.Module, dict[str, str]]:
    """A new model, or (fine-tuning) our own earlier checkpoint, whose architecture then wins."""
    if not cfg.init_from:
        return cfg, build_model(cfg.arch, **cfg.arch_args).to(device), {}
    model, source = _checkpoint_with_preprocessing(cfg.init_from, cfg.preprocessing, "")
    log.info(kv(event="init_from", checkpoint=cfg.init_from, version=source.version))
    cfg = replace(cfg, arch=source.architecture, arch_args=dict(source.arch_args))
    return cfg, model.train().to(device), {"init_from_version": source.version}


def _new_run(cfg: TrainConfig, model: nn.Module, device: torch.device, amp_dtype, steps_per_epoch: int,
             provenance: dict[str, str]) -> Run:
    model = model.to(memory_format=memory_format(device))
    teacher = None
    if cfg.teacher:
        teacher, teacher_meta = _checkpoint_with_preprocessing(cfg.teacher, cfg.preprocessing, "teacher ")
        teacher = teacher.eval().requires_grad_(False).to(device).to(memory_format=memory_format(device))
        provenance["teacher_version"] = teacher_meta.version
        log.info(kv(event="teacher", checkpoint=cfg.teacher, version=teacher_meta.version))
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch),
                                                pct_start=0.15)
    # Averaging the weights along the trajectory smooths out the last noisy steps (Polyak averaging); torch's
    # AveragedModel also averages the BatchNorm statistics, so the averaged copy is complete on its own.
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
                                               use_buffers=True) if cfg.ema_decay > 0 else None)
    # float16 needs its gradients scaled to stay in range; bfloat16 has float32's exponent and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return Run(model, opt, sched, ema, scaler, teacher)


def save_state(path: Path, run: Run, cfg: TrainConfig, epoch: int) -> None:
    torch.save({"model": run.model.state_dict(), "opt": run.opt.state_dict(), "sched": run.sched.state_dict(),
                "ema": run.ema.state_dict() if run.ema is not None else None, "history": run.history,
                "best_val": run.best_val, "best_state": run.best_state, "bad_epochs": run.bad_epochs,
                "epoch": epoch, "rng": torch.get_rng_state(), "arguments": _run_arguments(cfg)}, path)


def resume_state(path: Path, run: Run, cfg: TrainConfig, device: torch.device) -> int:
    """Load a saved run into `run`; returns the epoch to continue from."""
    st = torch.load(path, map_location=device, weights_only=False)
    # The learning-rate schedule, the data split and the augmentation all follow from the arguments; resuming
    # under others would silently train something no command describes (or fail deep in the scheduler).
    changed = sorted(k for k, v in _run_arguments(cfg).items() if st.get("arguments", {}).get(k, v) != v)
    if changed:
        raise RunMismatch(f"{path} belongs to a run with different arguments ({', '.join(changed)}); "
                          "resume with the same arguments, or train into a new --out")
    run.model.load_state_dict(st["model"])
    run.opt.load_state_dict(st["opt"])
    run.sched.load_state_dict(st["sched"])
    if run.ema is not None and st.get("ema") is not None:
        run.ema.load_state_dict(st["ema"])
    run.history, run.best_val, run.best_state = st["history"], st["best_val"], st["best_state"]
    run.bad_epochs = st["bad_epochs"]
    torch.set_rng_state(st["rng"])
    log.info(kv(event="resumed", epoch=st["epoch"] + 1))
    return st["epoch"] + 1


def train_one_epoch(cfg: TrainConfig, run: Run, loader: DataLoader, device: torch.device, amp_dtype,
                    epoch: int) -> dict:
    """One pass over the training data; returns its mean loss and accuracy (the hard-label loss, the measure
    validation reports too)."""
    run.model.train()
    # Running sums stay on the device: reading them every step would stall a GPU at each batch.
    t0, seen = time.time(), 0
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0)
    for step, (x, y) in enumerate(bar):
        x = as_input(x, device)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = run.model(x)
            hard = LOSS(logits.float(), y)
            loss = hard
            if run.teacher is not None:
                with torch.no_grad():
                    t_logits = run.teacher(x)
                loss = (1 - cfg.distill_weight) * hard + cfg.distill_weight * distillation_loss(
                    logits, t_logits, cfg.distill_temperature)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        seen += len(y)
        loss_sum += hard.detach() * len(y)
        correct += ((logits.detach() > 0).float() == y).sum()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}", refresh=False)
    return {"train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
            "seconds": round(time.time() - t0, 1)}


def evaluate(model: nn.Module, data: RunData) -> dict:
    """Validation loss and accuracy of model, by image."""
    v_logits, v_labels = data.validate(model)
    v_loss = float(LOSS(torch.tensor(v_logits), torch.tensor(v_labels, dtype=torch.float32)))
    return {"val_loss": v_loss, "val_acc": float(((v_logits > 0).astype(int) == v_labels).mean())}


def _keep_best(run: Run, val_loss: float) -> None:
    if val_loss < run.best_val - 1e-4:
        run.best_val, run.bad_epochs = val_loss, 0
        run.best_state = {k: v.detach().cpu().clone() for k, v in run.scored.state_dict().items()}
    else:
        run.bad_epochs += 1


def _checkpoint(cfg: TrainConfig, model: nn.Module, history: list[dict], data: RunData, device: torch.device,
                provenance: dict, out: Path) -> tuple[Path, CheckpointMeta]:
    """The trained weights, calibrated on validation (temperature, and for crop models the label thresholds)."""
    spec = cfg.preprocessing
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
        log.info(kv(event="held_out", sources=",".join(cfg.holdout), n=len(h_labels),
                    roc_auc=f"{metrics['held_out']['roc_auc']:.4f}"))
    meta = CheckpointMeta(
        architecture=cfg.arch, arch_args=cfg.arch_args, preprocessing=spec, temperature=temperature, name=cfg.name,
        thresholds=thresholds,
        training={"config": _config_dict(cfg, {"preprocessing"}), "history": history, "n_train": data.n_train,
                  "n_val": data.n_val, "torch": torch.__version__, "device": str(device), **provenance},
        metrics=metrics,
    )
    path = out / "model.safetensors"
    meta = save_checkpoint(model.cpu(), meta, path)
    log.info(kv(event="saved", checkpoint=path, version=meta.version, temperature=f"{temperature:.3f}",
                val_acc=f"{metrics['validation']['accuracy']:.4f}", val_auc=f"{metrics['validation']['roc_auc']:.4f}"))
    return path, meta


def train(cfg: TrainConfig) -> tuple[Path, CheckpointMeta]:
    """A whole run, the way torchvision's classification reference lays one out: data, model, optimiser, an
    optional resume, then train_one_epoch and evaluate per epoch with early stopping, then the checkpoint."""
    _check_architecture(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    amp_dtype = compute_dtype(device, cfg.precision)
    data = _native_data(cfg, device, amp_dtype) if cfg.preprocessing.native else _resized_data(cfg, device, amp_dtype)
    log.info(kv(event="data", source=cfg.data, train=data.n_train, val=data.n_val,
                held_out=len(data.held_out) if data.held_out is not None else 0, device=device,
                precision=precision_name(amp_dtype)))
    cfg, model, provenance = _base_model(cfg, device)
    if cfg.optimizer == "lbfgs":  # one pass of its own: no shuffled loader, no loader processes kept alive
        return _fit_readout_run(cfg, model, data, device, provenance, out)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                        drop_last=len(data.train) > cfg.batch_size, worker_init_fn=_seed_worker_augment,
                        collate_fn=data.collate,
                        num_workers=cfg.workers, persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    run = _new_run(cfg, model, device, amp_dtype, len(loader), provenance)
    state_path = out / "state.pt"
    start_epoch = resume_state(state_path, run, cfg, device) if cfg.resume and state_path.exists() else 0

    started = time.time()
    epoch = start_epoch
    while epoch < cfg.epochs:  # cfg.epochs may shrink after the first epoch (--max-minutes)
        # Each epoch's shuffle and augmentation follow from (seed, epoch) alone, so a resumed run sees exactly what
        # the same run left alone would have (with persistent loader processes, the shuffle only).
        gen.manual_seed(cfg.seed * 10_007 + epoch)
        if getattr(data.train, "augment", None) is not None:
            data.train.augment.rng.seed(cfg.seed * 10_007 + epoch)
        row = {"epoch": epoch + 1, **train_one_epoch(cfg, run, loader, device, amp_dtype, epoch),
               **evaluate(run.scored, data)}
        row = {k: row[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")}
        run.history.append(row)
        log.info(kv(event="epoch", **{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()}))
        if cfg.max_minutes and epoch == start_epoch:
            cfg = _fit_schedule(cfg, run, len(loader), epoch + 1, time.time() - started)
        _keep_best(run, row["val_loss"])
        save_state(state_path, run, cfg, epoch)
        (out / "history.json").write_text(json.dumps(run.history, indent=2))
        if run.bad_epochs >= cfg.patience:
            log.info(kv(event="early_stop", epoch=epoch + 1, best_val_loss=f"{run.best_val:.4f}"))
            break
        epoch += 1
    run.model.load_state_dict(run.best_state)
    return _checkpoint(cfg, run.model, run.history, data, device, provenance, out)


def _fit_readout_run(cfg: TrainConfig, model: nn.Module, data: RunData, device: torch.device, provenance: dict,
                     out: Path) -> tuple[Path, CheckpointMeta]:
    """--optimizer lbfgs: one pass draws crops_per_image augmented crops of each training image (the stream
    epoch 1 of a gradient run would see), and the read-out is fitted on their statistics (training/readout.py)."""
    if cfg.teacher or cfg.resume:
        raise RunMismatch("--optimizer lbfgs fits in one pass: it takes no --teacher and has nothing to --resume")
    try:
        readout.readout_of(model)
    except readout.NoReadout as exc:
        raise RunMismatch(str(exc)) from None
    t0 = time.time()
    if getattr(data.train, "augment", None) is not None:
        data.train.augment.rng.seed(cfg.seed * 10_007)
    loader = DataLoader(data.train, batch_size=256, shuffle=False, collate_fn=data.collate,
                        worker_init_fn=_seed_worker_augment, num_workers=cfg.workers)
    feats, labels = readout.collect(model.eval(), loader, device)
    row = {"epoch": 1, **readout.fit_readout(model, feats, labels, cfg.weight_decay)}
    row.update(evaluate(model, data), seconds=round(time.time() - t0, 1), crops=len(labels))
    log.info(kv(event="readout_fitted", **{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()}))
    (out / "history.json").write_text(json.dumps([row], indent=2))
    return _checkpoint(cfg, model, [row], data, device, provenance, out)
