"""How should a large photo reach a 32x32 model? Score a labelled folder under several candidate routes.

Usage: python -m training.resize_study --checkpoint models/cifake/cifake.safetensors --folder ../shared/datasets/mixed100 \
    [--precision float32]

Candidates: the whole image squashed to the input size (what serving does); the whole image resized to k times
the input size and cut into k x k tiles whose P(fake) is averaged; and random crops at the file's native
resolution. The last is printed to show the trap: a native crop's content scale depends on the photo's pixel
size, which is exactly the shortcut that separates mixed100's classes, so it must not be adopted.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from shared.imaging import fit, load_rgb, to_array
from shared.modeling.checkpoint import load_for_inference
from shared.modeling.device import as_input
from shared.scoring import calibrated
from shared.settings import PRECISIONS

from .data import folder_files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--folder", required=True)
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="float32 reproduces on every CPU; auto is what a worker here would serve in")
    args = ap.parse_args(argv)
    model, meta = load_for_inference(Path(args.checkpoint), precision=args.precision)
    spec = meta.preprocessing
    if spec.native:
        ap.error(f"{args.checkpoint} reads native-resolution crops; this study compares the whole-image routes")
    size = spec.input_size
    items = folder_files(Path(args.folder))
    files = [p.read_bytes() for p, _ in items]
    y = np.array([label for _, label in items])

    @torch.inference_mode()
    def p_fake(crops):
        logits = model(as_input(torch.from_numpy(np.stack(crops)), "cpu")).float().reshape(-1).numpy()
        return float(calibrated(logits, meta.temperature).mean())  # serving's own calibration (shared.scoring)

    def tiles(data, k):
        # load_rgb(), fit() and to_array() are serving's own steps (k = 1 is serving exactly, reduced-scale
        # JPEG decode included); only the tiling around them is new here.
        big = fit(load_rgb(data, 10**9, target=k * size), replace(spec, input_size=k * size))
        return [to_array(big.crop((x, y, x + size, y + size)), spec) for x in range(0, k * size, size) for y in range(0, k * size, size)]

    def native(data, n=16):
        img = load_rgb(data, 10**9)
        rng = np.random.default_rng(0)
        w, h = img.size
        return [to_array(img.crop((x, y, x + size, y + size)), spec)
                for x, y in zip(rng.integers(0, w - size, n), rng.integers(0, h - size, n))]

    routes = {"squash (serving)": lambda data: tiles(data, 1), "2x2 tiles": lambda data: tiles(data, 2),
              "4x4 tiles": lambda data: tiles(data, 4), "8x8 tiles": lambda data: tiles(data, 8),
              "native crops (leaks pixel scale)": native}
    print("| route | ROC-AUC | accuracy | mean P(fake) real | mean P(fake) fake |\n| --- | --- | --- | --- | --- |")
    for name, route in routes.items():
        p = np.array([p_fake(route(data)) for data in files])
        print(f"| {name} | {roc_auc_score(y, p):.3f} | {((p >= meta.threshold) == y).mean():.3f} | "
              f"{p[y == 0].mean():.2f} | {p[y == 1].mean():.2f} |")


if __name__ == "__main__":
    main()
