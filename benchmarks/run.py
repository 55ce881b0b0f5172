#!/usr/bin/env python
"""Throughput and latency of the queue against its ceiling and against one-image-per-request serving.

One command (`make bench`, or `python benchmarks/run.py`) runs every measurement on the same images, prints
a table and writes it to benchmarks/RESULTS.md. `--smoke` runs the same code on a handful of images (the
test suite does, so the harness cannot rot); its figures mean nothing. The processes are in stack.py, the
measurements in measurements.py, the table and its notes in report.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measurements import (  # noqa: E402
    ceiling,
    ceiling_processes,
    end_to_end,
    one_image_latency,
    prepare_images,
    synchronous,
)
from benchmarks.report import KEPT_SECTION, PHOTOS_SECTION, Figures, notes, table  # noqa: E402
from benchmarks.stack import (  # noqa: E402
    MemoryWatch,
    Stack,
    cpu_seconds,
    database_cpu_seconds,
    database_url,
    machine,
)
from shared.modeling.checkpoint import read_meta  # noqa: E402
from shared.modeling.device import compute_dtype, precision_name  # noqa: E402
from shared.settings import DEFAULT_CHECKPOINT, load_settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=int, default=10_000, help="CIFAKE test images")
    ap.add_argument("--large", type=int, default=200, help="upscaled 1536 px JPEG photos")
    ap.add_argument("--sync-images", type=int, default=2_000, help="images sent to the synchronous endpoint")
    ap.add_argument("--latency-reps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the harness runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.small, args.large, args.sync_images, args.latency_reps = 60, 4, 16, 3
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="pixelproof-bench-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        folder = tmp / "images"
        files = prepare_images(folder, args.small, args.large)
        print(f"images: {args.small} CIFAKE 32x32 JPEG + {args.large} upscaled 1536x1536 JPEG", flush=True)

        ceil1, ceil_setup = ceiling(files, args.batch_size, cores)
        ceil2 = ceiling_processes(files, args.batch_size, cores)
        print(f"ceiling: one process {ceil1:.0f} images/s ({ceil_setup}), {cores} processes {ceil2:.0f} images/s", flush=True)
        sync = synchronous(tmp, files[: args.sync_images // 2] + files[-args.sync_images // 2:], 1)
        print(f"synchronous endpoint: {sync:.0f} images/s", flush=True)

        results = {}
        for workers in (1, 2):
            mem = MemoryWatch()
            sub = tmp / f"stack{workers}"
            sub.mkdir()
            # A database of its own for each run: the second would otherwise find every image's prediction
            # cached by the first (same bytes, same model) and measure cache hits, not classification.
            db_url, drop = database_url(sub)
            stack.callback(drop)
            with Stack(sub, db_url, workers, max(1, cores // workers), args.batch_size, mem) as s:
                web_pid, worker_pids = s.procs[0].pid, [p.pid for p in s.procs[1:]]
                before = (cpu_seconds([web_pid]), cpu_seconds(worker_pids), database_cpu_seconds())
                e2e = end_to_end(s, files, folder)
                after = (cpu_seconds([web_pid]), cpu_seconds(worker_pids), database_cpu_seconds())
                cpu_ms = [(b - a) * 1000 / len(files) for a, b in zip(before, after)]
                p50, p95 = one_image_latency(s, files[0], args.latency_reps) if workers == 1 else (None, None)
            mem.stop()
            results[workers] = (e2e, p50, p95, mem.peak.get("web", 0), mem.peak.get("worker", 0), cpu_ms)
            print(f"end to end, {workers} worker(s): {e2e:.0f} images/s", flush=True)

    import torch

    e1, p50, p95, web_mb, worker_mb, _ = results[1]
    e2, _, _, web_mb2, worker_mb2, (web_ms, workers_ms, db_ms) = results[2]
    figures = Figures(cores=cores, ceil_one=ceil1, ceil_setup=ceil_setup, ceil_procs=ceil2, sync=sync, e2e_1=e1,
                      e2e_2=e2, p50_ms=p50, p95_ms=p95, web_mb=max(web_mb, web_mb2), worker_mb=max(worker_mb, worker_mb2),
                      web_ms=web_ms, workers_ms=workers_ms, db_ms=db_ms,
                      db_kind="PostgreSQL" if db_url.startswith("postgresql") else "SQLite", gpu=torch.cuda.is_available())
    table_md = table(figures)
    precision = load_settings().precision  # the workers, the ceilings and the synchronous server all read this one
    report = (f"# Benchmark results\n\nMachine: {machine()}\n\nModel: `{read_meta(DEFAULT_CHECKPOINT).version}` "
              f"(the default checkpoint, which every worker serves), forward pass in "
              f"{precision_name(compute_dtype('cpu', precision))} (`PIXELPROOF_PRECISION={precision}` on this CPU)\n\nImages: {args.small} CIFAKE test JPEGs (32x32) + "
              f"{args.large} upscaled 1536x1536 JPEG photos; batch size {args.batch_size}; command: "
              f"`python benchmarks/run.py{' --smoke' if args.smoke else ''}`\n\n{table_md}\n\n{notes(figures)}\n")
    print("\n" + table_md)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    kept = next((old.index(m) for m in (KEPT_SECTION, PHOTOS_SECTION) if m in old), None)
    out.write_text(report + ("\n" + old[kept:] if kept is not None else ""))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
