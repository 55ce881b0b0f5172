#!/usr/bin/env python
"""Serving speed for large photos: 12-megapixel JPEGs next to CIFAKE's 32x32 images, with the default model.

Prints, and writes into benchmarks/RESULTS.md (the section between the photo markers):
- the cost of one image split into its steps, single-threaded: reading the header, decoding, cutting and
  normalising the crops, the forward pass (median milliseconds per image);
- the no-queue ceiling (the same work in one single-threaded process per core);
- end to end through the real stack (gunicorn, Redis, the database, two Celery workers), from the first
  upload request to the last result, as a ratio of the ceiling;
- peak memory of the web and of a worker.

The photos are mosaics of real photos from ../shared/datasets/realworld at their own resolution (no pixel is
resampled), 4000x3000, saved as JPEG quality 92 with 4:2:0 chroma as phones write them; where that folder is
missing, noise textures stand in. `--smoke` runs it on a few small photos so the harness cannot rot.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measurements import CIFAKE_TEST, ceiling_processes, end_to_end  # noqa: E402
from benchmarks.report import PHOTOS_SECTION  # noqa: E402
from benchmarks.stack import MemoryWatch, Stack, cpu_seconds, database_url, machine  # noqa: E402
from shared import jpeg_regions  # noqa: E402
from shared.modeling.checkpoint import read_meta  # noqa: E402
from shared.settings import DEFAULT_CHECKPOINT, load_settings  # noqa: E402

REALWORLD = ROOT.parent / "shared" / "datasets" / "realworld" / "real"
BEGIN, END = PHOTOS_SECTION, "<!-- /photos -->"


def make_photos(folder: Path, n: int, size: tuple[int, int] = (4000, 3000), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tiles = sorted(REALWORLD.glob("*.jpg")) if REALWORLD.is_dir() else []
    w, h = size
    paths = []
    for i in range(n):
        canvas = Image.new("RGB", size)
        for y in range(0, h, 250):
            for x in range(0, w, 250):
                if tiles:
                    tile = Image.open(tiles[rng.integers(len(tiles))]).convert("RGB").crop((0, 0, 250, 250))
                else:
                    tile = Image.fromarray(rng.integers(0, 255, (250, 250, 3), dtype=np.uint8))
                canvas.paste(tile, (x, y))
        p = folder / f"photo_{i:04d}.jpg"
        canvas.save(p, "JPEG", quality=92, subsampling=2)
        paths.append(p)
    return paths


def cifake_images(folder: Path, n: int) -> list[Path]:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    blobs = [r["bytes"] for r in pq.read_table(CIFAKE_TEST, columns=["image"]).slice(0, n).column("image").to_pylist()]
    paths = []
    for i, b in enumerate(blobs):
        (p := folder / f"{i:05d}.jpg").write_bytes(b)
        paths.append(p)
    return paths


def cost_split(files: list[Path], reps: int = 1) -> dict[str, float]:
    """Median single-threaded milliseconds per image for each step the worker takes."""
    import torch

    from shared.imaging import decode_stored, native_crops, open_image, preprocess_bytes, thumbnails
    from shared.limits import MAX_JPEG_SCANS
    from shared.modeling.checkpoint import load_for_inference
    from shared.modeling.scorer import score_prepared

    torch.set_num_threads(1)
    model, meta = load_for_inference(DEFAULT_CHECKPOINT, precision=load_settings().precision)
    steps: dict[str, list[float]] = {"header": [], "decode": [], "crops": [], "forward": [], "thumbnails": [],
                                     "prepared": []}
    for _ in range(reps):
        for p in files:
            data = p.read_bytes()
            t0 = time.perf_counter()
            img = open_image(data, 10**9)
            t1 = time.perf_counter()
            # as the worker decodes whole (RGBX, for the thumbnails), from the header it opened once
            stored, upright = decode_stored(data, 10**9, MAX_JPEG_SCANS, padded=True, opened=img)
            t2 = time.perf_counter()
            prepared = native_crops(upright(stored[..., :3]), meta.preprocessing)
            t3 = time.perf_counter()
            score_prepared(model, meta, [prepared])
            t4 = time.perf_counter()
            thumbnails(stored, upright)  # the page's previews, made from the same decode
            t5 = time.perf_counter()
            # the worker's own call: for a large sequential JPEG with libturbojpeg, one entropy decode gives the
            # crops and the thumbnails (shared.jpeg_regions); otherwise the whole decode above
            preprocess_bytes(data, meta.preprocessing, 10**9, with_thumbnails=True)
            t6 = time.perf_counter()
            for k, a, b in (("header", t0, t1), ("decode", t1, t2), ("crops", t2, t3), ("forward", t3, t4),
                            ("thumbnails", t4, t5), ("prepared", t5, t6)):
                steps[k].append((b - a) * 1000)
    split = {k: statistics.median(v) for k, v in steps.items()}
    split["crops per image"] = len(prepared.inputs)
    return split


def measure(kind: str, files: list[Path], folder: Path, tmp: Path, batch: int, cores: int, stack: ExitStack) -> dict:
    split = cost_split(files[: min(len(files), 20)])
    ceil = ceiling_processes(files, batch, cores)
    mem = MemoryWatch()
    sub = tmp / f"stack-{kind}"
    sub.mkdir()
    db_url, drop = database_url(sub)
    stack.callback(drop)
    with Stack(sub, db_url, cores, 1, batch, mem) as s:
        web_pid, worker_pids = s.procs[0].pid, [p.pid for p in s.procs[1:]]
        before = (cpu_seconds([web_pid]), cpu_seconds(worker_pids))
        e2e = end_to_end(s, files, folder, per_request=20)  # 20 photos of 5 MB: well under the request limit
        after = (cpu_seconds([web_pid]), cpu_seconds(worker_pids))
    mem.stop()
    web_ms, workers_ms = ((b - a) * 1000 / len(files) for a, b in zip(before, after))
    print(f"{kind}: ceiling {ceil:.1f}/s, end to end {e2e:.1f}/s, split {split}", flush=True)
    return {"split": split, "ceiling": ceil, "e2e": e2e, "web_mb": mem.peak.get("web", 0),
            "worker_mb": mem.peak.get("worker", 0), "web_ms": web_ms, "workers_ms": workers_ms,
            "db": "PostgreSQL" if db_url.startswith("postgresql") else "SQLite"}


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        old = old[: old.index(BEGIN)].rstrip() + "\n\n" + old[old.index(END) + len(END):].lstrip()
    path.write_text(old.rstrip() + "\n\n" + BEGIN + "\n" + text + END + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=200, help="12-megapixel JPEG photos")
    ap.add_argument("--cifake", type=int, default=2000, help="CIFAKE test images (32x32 JPEG)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per task (PIXELPROOF_BATCH_SIZE)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--smoke", action="store_true", help="a few small photos, to check the harness runs")
    args = ap.parse_args(argv)
    size = (4000, 3000)
    if args.smoke:
        args.photos, args.cifake, size = 4, 16, (800, 600)
    cores = os.cpu_count() or 1
    meta = read_meta(DEFAULT_CHECKPOINT)
    with tempfile.TemporaryDirectory(prefix="pixelproof-photos-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        photos = make_photos(tmp / "photos", args.photos, size)
        print(f"photos: {args.photos} x {size[0]}x{size[1]} JPEG, {statistics.mean(p.stat().st_size for p in photos) / 1e6:.1f} MB each", flush=True)
        results = {f"{size[0]}x{size[1]} photos": measure("photos", photos, tmp / "photos", tmp, args.batch_size, cores, stack)}
        if CIFAKE_TEST.exists() and args.cifake:
            small = cifake_images(tmp / "cifake", args.cifake)
            results["CIFAKE 32x32"] = measure("cifake", small, tmp / "cifake", tmp, args.batch_size, cores, stack)

    lines = ["| images | header / decode / crops / forward / thumbnails, ms per image (1 thread), decoded whole | "
             "header to thumbnails as the worker does it | crops | no-queue ceiling | "
             "end to end, 2 workers | ratio | worker CPU / web CPU per image | peak RSS web / worker |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        s = r["split"]
        lines.append(f"| {name} | {s['header']:.1f} / {s['decode']:.1f} / {s['crops']:.1f} / {s['forward']:.1f} / {s['thumbnails']:.1f} | "
                     f"{s['prepared']:.1f} | "
                     f"{s['crops per image']} | {r['ceiling']:.1f} images/s | {r['e2e']:.1f} images/s | "
                     f"{r['e2e'] / r['ceiling']:.2f} x ceiling | {r['workers_ms']:.0f} / {r['web_ms']:.0f} ms | "
                     f"{r['web_mb']:.0f} / {r['worker_mb']:.0f} MB |")
    table = "\n".join(lines)
    db = next(iter(results.values()))["db"]
    text = (f"## Large photos and the crop-based default\n\nMachine: {machine()}\n\nModel: `{meta.version}` "
            f"({meta.preprocessing.input_size}-px crops, at most {meta.preprocessing.max_crops} per image); "
            f"batch {args.batch_size} images per task; database {db}; command: "
            f"`python benchmarks/photos.py{' --smoke' if args.smoke else ''}`\n\n{table}\n\n"
            "The ceiling runs the worker's own code (read, decode, crops, forward pass, thumbnails) in one "
            "single-threaded process per core with no queue; end to end adds the upload through gunicorn, storage, the database, "
            "Redis and the Celery workers on the same cores. The split is measured single-threaded on up to 20 "
            "of the images; decode includes the EXIF orientation (a view, no copy). The worker's own call "
            "(preprocess_bytes) cuts a large sequential JPEG's crops and thumbnails from one entropy decode "
            f"where libturbojpeg is installed (here: {'yes' if jpeg_regions.available() else 'no'}; "
            "shared/jpeg_regions.py); the first split is the whole decode it falls back to.\n")
    print("\n" + table)
    write_section(Path(args.out), text)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
