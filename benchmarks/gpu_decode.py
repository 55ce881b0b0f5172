#!/usr/bin/env python
"""GPU rows for the photo benchmark, on a CUDA host: the default model on 4000x3000 JPEG photos decoded on the
CPU (simplejpeg, the workers' path) and batched on the GPU (torchvision's nvjpeg decoder), and how far the two
decoders' pixels move the model's scores. Prints JSON.

python benchmarks/gpu_decode.py [--photos 24] [--device cuda]   (--device cpu checks the script anywhere)
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.imaging import crop_boxes, load_rgb_array, native_crops  # noqa: E402
from shared.modeling.checkpoint import load_for_inference  # noqa: E402
from shared.modeling.scorer import score_prepared  # noqa: E402
from shared.settings import DEFAULT_CHECKPOINT  # noqa: E402


def photo_like(n: int, seed: int = 0) -> list[bytes]:
    """A smooth scene with fine noise on top, 4000x3000, JPEG quality 92 with 4:2:0 chroma as phones write."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).resize((4000, 3000), Image.BICUBIC)
        arr = np.clip(np.asarray(base, np.int16) + rng.integers(-8, 9, (3000, 4000, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=92, subsampling=2)
        out.append(buf.getvalue())
    return out


def best_seconds(fn, device: str, reps: int = 3) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args(argv)
    device, photos = args.device, photo_like(args.photos)
    model, meta = load_for_inference(DEFAULT_CHECKPOINT, device=device)
    spec = meta.preprocessing
    n = len(photos)
    prepared = [native_crops(load_rgb_array(p, 10**9), spec) for p in photos]
    blobs = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in photos]
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255

    @torch.inference_mode()
    def on_gpu() -> torch.Tensor:
        """nvjpeg decode of the whole batch, the same crop grid cut on the device, the same forward pass."""
        crops = []
        for img in torchvision.io.decode_jpeg(blobs, device=device):
            for b in crop_boxes(img.shape[2], img.shape[1], spec):
                crops.append(img[:, b.y: b.y + spec.input_size, b.x: b.x + spec.input_size])
        x = ((torch.stack(crops).float() - mean) / std).contiguous(memory_format=torch.channels_last)
        return model(x)

    cpu_logits = np.array([s.logit for s in score_prepared(model, meta, prepared, device)])
    gpu_logits = on_gpu().float().cpu().numpy().reshape(n, -1).mean(axis=1)
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__, "torchvision": torchvision.__version__, "cpu_cores": os.cpu_count(),
        "version": meta.version, "mb_per_photo": float(np.mean([len(p) for p in photos]) / 1e6),
        "cpu_decode_ms": 1000 * best_seconds(lambda: [load_rgb_array(p, 10**9) for p in photos], device, 1) / n,
        "forward_ms_per_photo": 1000 * best_seconds(lambda: score_prepared(model, meta, prepared, device), device) / n,
        "gpu_decode_only_ms_per_photo": 1000 * best_seconds(lambda: torchvision.io.decode_jpeg(blobs, device=device), device) / n,
        "gpu_decode_and_forward_ms_per_photo": 1000 * best_seconds(on_gpu, device) / n,
        "max_abs_logit_diff_gpu_vs_cpu_decode": float(np.abs(gpu_logits - cpu_logits).max()),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
