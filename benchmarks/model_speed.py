#!/usr/bin/env python
"""Forward-pass speed of checkpoints on this machine's CPU at batch 256 (the training issue's size target).

python benchmarks/model_speed.py [CHECKPOINT ...]   (default: models/default.safetensors)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.modeling.checkpoint import load_for_inference, read_meta  # noqa: E402
from shared.modeling.device import as_input, precision_name  # noqa: E402
from shared.modeling.registry import build_model  # noqa: E402
from shared.settings import DEFAULT_CHECKPOINT, PRECISIONS  # noqa: E402


def images_per_second(model: torch.nn.Module, size: int, batch: int, repeats: int = 5, rounds: int = 3) -> float:
    x = as_input(torch.randn(batch, 3, size, size), "cpu")
    best = 0.0
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x)
            best = max(best, repeats * batch / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoints", nargs="*", default=[str(DEFAULT_CHECKPOINT)])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--precision", nargs="+", default=["auto", "float32"], choices=PRECISIONS,
                    help="one row per precision; auto is what a worker on this machine serves in")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"| checkpoint | version | parameters | file size | precision | inputs/s (batch {args.batch}, {args.threads} threads; "
          "an input is a crop for a crop-based checkpoint) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in args.checkpoints:
        meta = read_meta(Path(path))
        params = sum(p.numel() for p in build_model(meta.architecture, **meta.arch_args).parameters())  # before folding
        done = set()
        for precision in args.precision:
            model, meta = load_for_inference(Path(path), precision=precision)
            name = precision_name(model.dtype)
            if name in done:  # auto resolved to a precision already measured
                continue
            done.add(name)
            rate = images_per_second(model, meta.preprocessing.input_size, args.batch)
            served = " (served here)" if precision == "auto" else ""
            print(f"| {path} | {meta.version} | {params:,} | {Path(path).stat().st_size / 1e6:.1f} MB | {name}{served} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
