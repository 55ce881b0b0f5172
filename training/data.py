"""Labelled images from a parquet directory, an image folder or a Hugging Face hub dataset.

Every example is decoded by :func:`shared.imaging.load_rgb` and sized by :func:`shared.imaging.fit`, the
same calls the worker makes on an upload, then kept as uint8 so an epoch does not decode JPEG again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared.folders import visible_files
from shared.imaging import ImageRejected, Preprocessing, fit, load_rgb
from shared.logs import kv

log = logging.getLogger(__name__)

FAKE_NAMES = {"fake", "ai", "ai-generated", "ai_generated", "generated", "synthetic", "1"}
REAL_NAMES = {"real", "human", "photo", "authentic", "0"}


class DatasetUnavailable(RuntimeError):
    """The data source named on the command line cannot be read here, or holds no labels to learn from."""


@dataclass
class ImageSet:
    images: np.ndarray  # N x H x W x 3 uint8, already at the model's input size
    labels: np.ndarray  # N int64, 0 = real, 1 = fake
    raw: list[bytes] | None = None  # original file bytes, kept only where evaluation needs them

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ImageSet:
        raw = [self.raw[i] for i in idx] if self.raw is not None else None
        return ImageSet(self.images[idx], self.labels[idx], raw)


def _load_hf(source: str):
    from datasets import load_dataset

    path = Path(source)
    if path.is_dir():
        if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
            return load_dataset("parquet", data_dir=str(path))
        return _folder_dataset(path)
    # A hub name: downloaded when the network allows, otherwise served from the datasets cache of an earlier
    # download (HF_HUB_OFFLINE=1 skips the network at once).
    try:
        return load_dataset(source)
    except (ConnectionError, FileNotFoundError) as exc:
        raise DatasetUnavailable(
            f"{source!r} is neither a local directory nor a reachable or cached Hugging Face dataset ({exc}); "
            "download it where there is network, or pass a parquet or image-folder directory"
        ) from exc


_LAYOUT = (f"an image folder needs a sub-folder for each class, real ({', '.join(sorted(REAL_NAMES))}) and "
           f"AI-generated ({', '.join(sorted(FAKE_NAMES))}); a dataset, a 'label' column")


def _label_map(features, source: str = "the data") -> dict[int, int]:
    if "label" not in features:
        raise DatasetUnavailable(f"{source} has no labels: {_LAYOUT}")
    names = getattr(features["label"], "names", None)
    if not names:
        return {0: 0, 1: 1}
    mapping = {}
    for i, name in enumerate(names):
        low = name.strip().lower()
        if low in FAKE_NAMES:
            mapping[i] = 1
        elif low in REAL_NAMES:
            mapping[i] = 0
        else:
            raise DatasetUnavailable(f"{source}: cannot tell whether class {name!r} means real or AI-generated; "
                                     f"{_LAYOUT}")
    return mapping


def _bytes_of(item: dict) -> bytes:
    if item.get("bytes"):
        return item["bytes"]
    return Path(item["path"]).read_bytes()


def decode_split(split, spec: Preprocessing, keep_raw: bool = False, source: str = "the data") -> ImageSet:
    from datasets import Image as HFImage

    mapping = _label_map(split.features, source)
    split = split.cast_column("image", HFImage(decode=False))
    n = len(split)
    size = spec.input_size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    raw: list[bytes] = []
    kept = 0
    names = split["filename"] if "filename" in split.column_names else [None] * n
    for i, (item, label, name) in enumerate(zip(split["image"], split["label"], names)):
        data = _bytes_of(item)
        try:
            images[kept] = np.asarray(fit(load_rgb(data, 10**9, target=size), spec))
        except ImageRejected as exc:  # named as a person can look for it: file name, path, or row
            where = name or (item.get("path") if isinstance(item, dict) else None) or f"row {i}"
            log.warning(kv(event="training_image_skipped", name=where, reason=str(exc)))
            continue
        labels[kept] = mapping[int(label)]
        if keep_raw:
            raw.append(data)
        kept += 1
    return ImageSet(images[:kept], labels[:kept], raw if keep_raw else None)


def load_image_sets(
    source: str, spec: Preprocessing, splits: tuple[str, ...] = ("train", "test"),
    keep_raw: tuple[str, ...] = (), cache_dir: Path | None = Path(".cache/datasets"),
) -> dict[str, ImageSet]:
    """Decode the requested splits, caching the uint8 arrays on disk keyed by source and preprocessing."""
    out: dict[str, ImageSet] = {}
    ds = None
    for name in splits:
        key = hashlib.sha256(json.dumps([str(Path(source).resolve()), name, spec.to_dict()]).encode()).hexdigest()[:16]
        cached = cache_dir / f"{key}.npz" if cache_dir else None
        if cached and cached.exists() and name not in keep_raw:
            data = np.load(cached)
            out[name] = ImageSet(data["images"], data["labels"])
            continue
        if ds is None:
            ds = _load_hf(source)
        if name not in ds:
            raise KeyError(f"{source} has no split {name!r} (has: {', '.join(ds)})")
        out[name] = decode_split(ds[name], spec, keep_raw=name in keep_raw, source=source)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, images=out[name].images, labels=out[name].labels)
    return out


def split_validation(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_val = max(1, int(round(len(train) * fraction)))
    return train.subset(np.sort(order[n_val:])), train.subset(np.sort(order[:n_val]))


def is_image_folder(source: str) -> bool:
    path = Path(source)
    return path.is_dir() and not any(path.glob("*.parquet")) and not any(path.glob("*/*.parquet"))


def source_of(name: str) -> str:
    """``<source>__<id>.jpg`` -> ``<source>``; names without the separator belong to no named source."""
    stem = Path(name).name
    return stem.split("__", 1)[0] if "__" in stem else ""


def folder_files(root: Path) -> list[tuple[Path, int]]:
    """(path, label) for an image-folder layout with real/ and fake/ (or any synonyms), at any depth below them."""
    items = []
    for sub in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        low = sub.name.lower()
        label = 1 if low in FAKE_NAMES else 0 if low in REAL_NAMES else None
        if label is None:
            continue
        items += [(f, label) for f in visible_files(sub)]  # a Mac's ._ companions and .DS_Store are no images
    return items


# An image folder may also come split, as Kaggle's sets do (train/REAL, train/FAKE, test/REAL, ...).
SPLIT_NAMES = {"train": "train", "test": "test", "validation": "validation", "valid": "validation", "val": "validation"}


def folder_splits(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """An image folder's labelled files by split: class folders at the top are one split, "train"; otherwise
    each split folder (train/, test/, val/ ...) that holds class folders is one. Empty: no labels anywhere."""
    if items := folder_files(Path(root)):
        return {"train": items}
    return _split_folders(Path(root))


def _split_folders(root: Path) -> dict[str, list[tuple[Path, int]]]:
    splits: dict[str, list[tuple[Path, int]]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (name := SPLIT_NAMES.get(sub.name.lower())) and (items := folder_files(sub)):
            splits[name] = splits.get(name, []) + items
    return splits


def no_labelled_images(root: Path, flag: str = "") -> DatasetUnavailable:
    """One message for a folder with no labelled image, wherever it is read (train, evaluate's --data and
    --cross-domain): class folders that are there but empty are named as such, not reported as missing."""
    where = f"{flag} {root}" if flag else str(root)
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [p for p in subs if p.name.lower() in REAL_NAMES | FAKE_NAMES]
    classes += [c for p in subs if p.name.lower() in SPLIT_NAMES for c in sorted(p.iterdir())
                if c.is_dir() and c.name.lower() in REAL_NAMES | FAKE_NAMES]
    if classes:
        named = ", ".join(str(c.relative_to(root)) for c in classes)
        return DatasetUnavailable(f"{where} has no labelled images: its class folders ({named}) hold no files")
    found = ", ".join(p.name for p in subs)
    return DatasetUnavailable(f"{where} has no labels{f' (its sub-folders: {found})' if found else ''}: {_LAYOUT}")


def _folder_dataset(root: Path):
    """An image folder as `datasets` splits, labelled by folder_files' rule, the one evaluation uses: the
    `imagefolder` builder drops every label when the files sit at different depths (fake/midjourney/x.png
    beside fake/y.png) and knows no synonyms."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from datasets import Image as HFImage

    splits = folder_splits(root)
    if not splits:
        raise no_labelled_images(root)
    features = Features({"image": HFImage(), "label": ClassLabel(names=["real", "fake"]), "filename": Value("string")})
    return DatasetDict({name: Dataset.from_dict(
        {"image": [str(f) for f, _ in items], "label": [lab for _, lab in items],
         "filename": [str(f.relative_to(root)) for f, _ in items]}, features=features) for name, items in splits.items()})


def pil_from_uint8(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr, "RGB")


def labelled_files(source: str, split: str = "test", sources: tuple[str, ...] = ()) -> tuple[list[bytes], np.ndarray, list[str]]:
    """(file bytes, labels, names) of an image folder (all of it, or its split folder when it comes split) or
    of a parquet / hub dataset's split, restricted to the named sources (file names ``<source>__<id>``) when
    any are given."""
    path = Path(source)
    if is_image_folder(source):
        files = folder_files(path)  # class folders at the top: the whole folder
        if not files:
            if not (splits := _split_folders(path)):
                raise no_labelled_images(path)  # the message train gives for the same folder
            if split not in splits:
                raise DatasetUnavailable(f"{source} has no split {split!r} (has: {', '.join(splits)})")
            files = splits[split]
        items = [(f.read_bytes(), label, str(f.relative_to(path))) for f, label in files]
    else:
        from datasets import Image as HFImage

        ds = _load_hf(source)
        if split not in ds:
            raise DatasetUnavailable(f"{source} has no split {split!r} (has: {', '.join(ds)})")
        part = ds[split]
        mapping = _label_map(part.features, source)
        part = part.cast_column("image", HFImage(decode=False))
        names = part["filename"] if "filename" in part.column_names else [str(i) for i in range(len(part))]
        items = [(_bytes_of(im), mapping[int(lab)], str(n)) for im, lab, n in zip(part["image"], part["label"], names)]
    if sources:
        items = [it for it in items if source_of(it[2]) in sources]
    if not items:
        raise DatasetUnavailable(f"no labelled images in {source}" + (f" from sources {', '.join(sources)}" if sources else ""))
    return [it[0] for it in items], np.array([it[1] for it in items]), [it[2] for it in items]
