"""Training data for crop-based checkpoints: images kept at their own resolution, cut into random crops.

Every file is decoded by :func:`shared.imaging.load_rgb_array`, the worker's own decoder, and kept whole (up
to ``keep_side`` a side, centre region). Training then cuts a random crop of the checkpoint's crop size from
it each time it is drawn, so a few thousand images give millions of different inputs; validation and
evaluation score the fixed grid that serving scores (:func:`shared.imaging.native_crops`).

File names of the form ``<source>__<id>.<ext>`` name their source, so whole sources can be held out.
"""
from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shared.imaging import (
    ImageRejected,
    Preprocessing,
    load_rgb_array,
    native_crops,
    normalise,
    pad_to,
)
from shared.logs import kv
from shared.modeling import scorer

from .augment import jpeg_reencode
from .data import DatasetUnavailable, labelled_files, source_of

log = logging.getLogger(__name__)

_FILTERS = (Image.Resampling.BICUBIC, Image.Resampling.BILINEAR, Image.Resampling.LANCZOS, Image.Resampling.BOX)


@dataclass
class NativeSet:
    images: list[np.ndarray]  # upright H x W x 3 uint8, native resolution
    labels: np.ndarray  # 0 = real, 1 = fake
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sources(self) -> np.ndarray:
        return np.array([source_of(n) for n in self.names])

    def subset(self, idx) -> NativeSet:
        idx = np.asarray(idx, dtype=int)
        return NativeSet([self.images[i] for i in idx], self.labels[idx], [self.names[i] for i in idx])

    def without_sources(self, held_out: tuple[str, ...]) -> tuple[NativeSet, NativeSet]:
        """(the images of every other source, the images of the held-out ones).

        A fold may name sources this data lacks: aligned pairs (training.aligned) hold real photos only, yet a
        fold's held-out set also names the generated sources it is scored against later, so that `calibrate`
        and `evaluate --held-out` find them in the evaluation data. Naming none that is here is a mistake."""
        unknown = set(held_out) - set(self.sources)
        if unknown == set(held_out):
            named = sorted(set(self.sources) - {""})
            has = (f"sources: {', '.join(named)}" if named else
                   "no file name here names a source: name files <source>__<id>.jpg to hold sources out")
            raise DatasetUnavailable(f"no images of source(s) {', '.join(sorted(unknown))} in the data ({has})")
        if unknown:
            log.info(kv(event="holdout_sources_absent", sources=",".join(sorted(unknown))))
        out = np.isin(self.sources, list(held_out))
        return self.subset(np.flatnonzero(~out)), self.subset(np.flatnonzero(out))


def centre(arr: np.ndarray, side: int) -> np.ndarray:
    """The centre square of at most `side` px (0: the whole image), at native resolution, as its own array."""
    if side <= 0:
        return arr
    h, w = arr.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(arr[top: top + side, left: left + side])


def load_native_set(source: str, keep_side: int = 512) -> NativeSet:
    """An image folder (``real/``, ``fake/``) or a parquet / Hugging Face dataset's train split."""
    files, labels, names = labelled_files(source, split="train")
    images, kept = [], []
    for i, (data, name) in enumerate(zip(files, names)):
        try:
            images.append(centre(load_rgb_array(data, 10**9), keep_side))
            kept.append(i)
        except ImageRejected as exc:
            log.warning(kv(event="training_image_skipped", name=name, reason=str(exc)))
    return NativeSet(images, labels[kept], [names[i] for i in kept])


def split_validation(data: NativeSet, fraction: float, seed: int) -> tuple[NativeSet, NativeSet]:
    """A random split stratified by source, so every source is seen in training and checked in validation."""
    rng = np.random.default_rng(seed)
    val = []
    sources = data.sources
    for src in sorted(set(sources)):
        for label in (0, 1):
            idx = np.flatnonzero((sources == src) & (data.labels == label))
            val += list(rng.permutation(idx)[:_n_validation(len(idx), fraction)])
    val_mask = np.zeros(len(data), dtype=bool)
    val_mask[val] = True
    return data.subset(np.flatnonzero(~val_mask)), data.subset(np.flatnonzero(val_mask))


def _n_validation(n: int, fraction: float) -> int:
    """How many of a source's n images (of one class) go to validation: at least one where there are two.
    Thresholds need both classes in validation, and a small fine-tuning set (e.g. reviewed images) or a small
    source would otherwise round them away."""
    return max(1, round(n * fraction)) if n >= 2 and fraction > 0 else 0


class CropAugment:
    """One random crop of an image, passed through what happens to real uploads on the way, for both classes
    alike so none of it can tell them apart: resampling (a resize by 0.5-1.5x with a random filter), JPEG
    re-encoding (quality 50-100, 4:4:4 or 4:2:0 chroma), horizontal flips, and now and then a crop smaller
    than the model's input, padded the way serving pads small images (shared.imaging.pad_to)."""

    def __init__(self, side: int, p_resize: float = 0.3, scale: tuple[float, float] = (0.5, 1.5),
                 p_jpeg: float = 0.6, quality: tuple[int, int] = (50, 100), p_small: float = 0.05,
                 p_flip: float = 0.5, seed: int = 0):
        self.side, self.p_resize, self.scale, self.p_jpeg, self.quality = side, p_resize, scale, p_jpeg, quality
        self.p_small, self.p_flip = p_small, p_flip
        self.rng = random.Random(seed)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        r, side = self.rng, self.side
        h, w = img.shape[:2]
        out = side + 8  # a margin, so the JPEG block grid falls at a random offset inside the final crop
        scale = math.exp(r.uniform(*map(math.log, self.scale))) if r.random() < self.p_resize else 1.0
        rh, rw = min(h, math.ceil(out / scale)), min(w, math.ceil(out / scale))
        y, x = r.randint(0, h - rh), r.randint(0, w - rw)
        region = img[y: y + rh, x: x + rw]
        if scale != 1.0:
            size = (max(1, round(rw * scale)), max(1, round(rh * scale)))
            region = np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize(size, r.choice(_FILTERS)))
        if r.random() < self.p_jpeg:
            region = np.asarray(jpeg_reencode(Image.fromarray(np.ascontiguousarray(region)), r.randint(*self.quality),
                                              subsampling=r.choice((0, 2))))
        ch, cw = min(side, region.shape[0]), min(side, region.shape[1])
        if r.random() < self.p_small:
            ch, cw = r.randint(min(ch, side // 4), ch), r.randint(min(cw, side // 4), cw)
        y, x = r.randint(0, region.shape[0] - ch), r.randint(0, region.shape[1] - cw)
        crop = region[y: y + ch, x: x + cw]
        if r.random() < self.p_flip:
            crop = crop[:, ::-1]
        return pad_to(np.ascontiguousarray(crop), side)


class CropDataset(Dataset):
    """``samples`` random crops an epoch, each from an image drawn in turn (index modulo the image count)."""

    def __init__(self, data: NativeSet, spec: Preprocessing, augment: CropAugment, samples: int = 0):
        self.data, self.spec, self.augment = data, spec, augment
        self.samples = samples or len(data)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int):
        i %= len(self.data)
        crop = self.augment(self.data.images[i])
        return torch.from_numpy(normalise(crop[None], self.spec)[0]), torch.tensor(float(self.data.labels[i]))


class PairedCropDataset(Dataset):
    """Aligned pairs (training.aligned): each item is a real photo's random crop and its reconstruction's crop
    at the same place, through the same augmentation (the augmenter's random state is replayed for the second),
    so within a batch the two classes differ by the decoder's traces alone. Items are (2 x C x H x W, [0, 1]);
    flatten_pairs makes a batch of 2 x the pairs drawn."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], spec: Preprocessing, augment: CropAugment,
                 samples: int = 0):
        self.pairs, self.spec, self.augment = pairs, spec, augment
        self.samples = samples or len(pairs)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int):
        real, fake = self.pairs[i % len(self.pairs)]
        state = self.augment.rng.getstate()
        first = self.augment(real)
        self.augment.rng.setstate(state)
        both = np.stack([first, self.augment(fake)])
        return torch.from_numpy(normalise(both, self.spec)), torch.tensor([0.0, 1.0])


class MixedCropDataset(Dataset):
    """train --with-pairs: each item is one crop of an image (as CropDataset gives it) followed by one aligned
    pair (as PairedCropDataset gives it), both drawn through the same augmentation object, so the training
    loop's per-epoch seeding covers both. Items are (3 x C x H x W, [label, 0, 1]); flatten_pairs batches them."""

    def __init__(self, single: CropDataset, paired: PairedCropDataset):
        if single.augment is not paired.augment:
            raise ValueError("the single crops and the pairs must share one augmentation (one seeded stream)")
        self.single, self.paired, self.augment = single, paired, single.augment

    def __len__(self) -> int:
        return len(self.single)

    def __getitem__(self, i: int):
        x, y = self.single[i]
        xp, yp = self.paired[i]
        return torch.cat([x[None], xp]), torch.cat([y[None], yp])


def flatten_pairs(batch):
    return torch.cat([x for x, _ in batch]), torch.cat([y for _, y in batch])


def aligned_pairs(data: NativeSet, prefix: str, side: int, min_psnr_db: float = 20.0) -> NativeSet:
    """Match each reconstruction (named `prefix` + its real photo's name) with its real photo, cut the photo as
    the reconstruction was cut (its centre of at most `side` px, then the latent's grid from the top-left), and
    check that they line up. Returns them pair by pair: real at even indices, its reconstruction after it.
    Pairs made with another --max-side are found too: the centre's side is within 8 px of the larger side of
    the reconstruction, or the whole photo."""
    reals = {_stem(n): i for i, n in enumerate(data.names) if data.labels[i] == 0}
    images, names, skipped = [], [], 0
    for i, name in enumerate(data.names):
        if data.labels[i] != 1 or not _stem(name).startswith(prefix):
            continue
        j = reals.get(_stem(name)[len(prefix):])
        real = None if j is None else _cut_like(data.images[j], data.images[i], side, min_psnr_db)
        if real is None:
            skipped += 1
            continue
        images += [real, data.images[i]]
        names += [data.names[j], name]
    if skipped:
        log.warning(kv(event="aligned_pairs_skipped", skipped=skipped, reason="no matching real photo, or not aligned"))
    if not images:
        raise DatasetUnavailable(f"no aligned pairs (a real photo and {prefix}<its name>) in the data: make them "
                                 "with `pixelproof make-aligned`")
    return NativeSet(images, np.array([0, 1] * (len(images) // 2)), names)


def _cut_like(real: np.ndarray, fake: np.ndarray, side: int, min_psnr_db: float) -> np.ndarray | None:
    """The photo cut as make-aligned cut it for `fake`: its centre of `side` px, of a side within 8 px of the
    reconstruction's larger side, or whole; then the reconstruction's size from the top-left. None: no cut
    lines up."""
    h, w = fake.shape[:2]
    for s in (side, *range(max(h, w), max(h, w) + 8), 0):
        cut = centre(real, s)[:h, :w]
        if cut.shape == fake.shape and psnr(cut, fake) >= min_psnr_db:
            return np.ascontiguousarray(cut)
    return None


def split_pairs(pairs: NativeSet, held_out: tuple[str, ...], fraction: float,
                seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], NativeSet, NativeSet | None]:
    """(training pairs, validation images, held-out images) of aligned_pairs' output, by pair: a photo and its
    reconstruction always fall on the same side. held_out names the real photos' sources."""
    reals = NativeSet(pairs.images[0::2], np.zeros(len(pairs) // 2, dtype=int), pairs.names[0::2])
    k = np.arange(len(reals))
    if held_out:
        reals.without_sources(held_out)  # naming no source that is here is a mistake, as for unpaired data
    out = np.isin(reals.sources, list(held_out))
    rng = np.random.default_rng(seed)
    val = np.zeros(len(reals), dtype=bool)
    for src in sorted(set(reals.sources[~out])):
        idx = np.flatnonzero((reals.sources == src) & ~out)
        val[rng.permutation(idx)[:_n_validation(len(idx), fraction)]] = True
    train = k[~out & ~val]

    def both(sel: np.ndarray) -> NativeSet:
        return pairs.subset(np.stack([2 * sel, 2 * sel + 1], axis=1).ravel())

    return ([(pairs.images[2 * i], pairs.images[2 * i + 1]) for i in train], both(k[val]),
            both(k[out]) if held_out else None)


def _stem(name: str) -> str:
    """"real/cams__1.png" -> "cams__1": how a photo, its link and its reconstruction's name are matched."""
    return name.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def pairs_except(pairs: NativeSet, held_out: tuple[str, ...],
                 left_out: Iterable[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pairs of aligned_pairs' output whose real photo is neither of a held-out source nor one of the
    images named in `left_out` (matched by file name): train --with-pairs must not see, as a pair, a photo that
    its validation or held-out scores are meant to be new to."""
    unseen = {_stem(n) for n in left_out}
    keep = [k for k in range(len(pairs) // 2)
            if source_of(pairs.names[2 * k]) not in held_out and _stem(pairs.names[2 * k]) not in unseen]
    if not keep:
        raise DatasetUnavailable("no aligned pairs left once the held-out sources and the validation photos are "
                                 "left out")
    return [(pairs.images[2 * k], pairs.images[2 * k + 1]) for k in keep]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def crop_logits(model, data: NativeSet, spec: Preprocessing, device: torch.device, batch: int = 256) -> tuple[np.ndarray, list[int]]:
    """Every image's serving grid through the model: (all crop logits in order, crops per image)."""
    logits, counts = [], []
    prepared = (native_crops(img, spec) for img in data.images)
    for run in scorer.in_batches(prepared, lambda p: len(p.inputs), batch):
        logits.append(scorer.crop_logits(model, run, device))
        counts += [len(p.inputs) for p in run]
    return (np.concatenate(logits) if logits else np.zeros(0)), counts
