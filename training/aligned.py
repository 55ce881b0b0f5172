"""Aligned real/generated pairs: real photos sent through a latent-diffusion autoencoder.

A latent-diffusion generator's last step is its VAE decoder, so a real photo encoded and decoded by such an
autoencoder differs from the photo only by the decoder's traces: same subject, framing, colours and size
(Rajan et al., ICLR 2025, "aligned datasets"). Training on such pairs leaves a detector nothing but those
traces to learn, which is the point: the sources of `realworld` differ in everything else.

The autoencoder is TAEF2 (madebyollin/taesd, MIT), a distilled stand-in for FLUX.2's VAE, read from local
state dicts (never downloaded). Its layout is rebuilt from the state dicts' keys: a numbered nn.Sequential of
3x3 convolutions, residual blocks of three convolutions (the deepest ones with a 1x1 bottleneck branch and
group norm added in front), stride-2 convolutions down and nearest-neighbour x2 up-sampling in between.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from shared.imaging import ImageRejected, load_rgb_array
from shared.logs import kv
from training.config import ALIGNED_MAX_SIDE as MAX_SIDE
from training.data import DatasetUnavailable, folder_files, source_of
from training.native import centre, psnr

log = logging.getLogger(__name__)

PREFIX = "taef2-"  # sources of the reconstructions are named PREFIX + the real photo's source


def _conv3(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class _SoftClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3 * torch.tanh(x / 3)


class _Block(nn.Module):
    """Three 3x3 convolutions beside the identity; `pool` (deepest blocks) adds a normalised 1x1 branch first."""

    def __init__(self, c: int, bottleneck: bool):
        super().__init__()
        self.conv = nn.Sequential(_conv3(c, c), nn.ReLU(), _conv3(c, c), nn.ReLU(), _conv3(c, c))
        self.pool = (nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(),
                                   nn.Conv2d(4 * c, c, 1, bias=False)) if bottleneck else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


def _from_state(state: dict[str, torch.Tensor], decoder: bool) -> nn.Sequential:
    """Rebuild the numbered Sequential: indices without weights are the clamp, a ReLU or an up-sampling."""
    by_index: dict[int, set[str]] = {}
    for key in state:
        index, rest = key.split(".", 1)
        by_index.setdefault(int(index), set()).add(rest)
    layers: list[nn.Module] = []
    for i in range(max(by_index) + 1):
        keys = by_index.get(i)
        if keys is None:
            layers.append(_SoftClamp() if i == 0 else nn.ReLU() if i == 2 else nn.Upsample(scale_factor=2))
        elif "conv.0.weight" in keys:
            layers.append(_Block(state[f"{i}.conv.0.weight"].shape[0], bottleneck="pool.0.weight" in keys))
        else:
            w = state[f"{i}.weight"]
            # In the encoder every bias-free 3x3 convolution halves the resolution.
            stride = 2 if not decoder and "bias" not in keys else 1
            layers.append(_conv3(w.shape[1], w.shape[0], stride=stride, bias="bias" in keys))
    net = nn.Sequential(*layers)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


class Autoencoder(nn.Module):
    """RGB in [0, 1] -> latent at 1/8 -> RGB in [0, 1]."""

    def __init__(self, folder: Path):
        super().__init__()
        def load(name: str) -> dict[str, torch.Tensor]:
            return torch.load(Path(folder) / name, map_location="cpu", weights_only=True)

        self.encoder = _from_state(load("taef2_encoder.pth"), decoder=False)
        self.decoder = _from_state(load("taef2_decoder.pth"), decoder=True)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).clamp(0, 1)

    def reconstruct(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 H x W x 3 -> uint8, cut to multiples of 8 (the latent's grid) from the top-left."""
        h, w = rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8
        x = torch.from_numpy(np.ascontiguousarray(rgb[:h, :w])).permute(2, 0, 1)[None].float() / 255
        y = self(x)[0].permute(1, 2, 0).numpy()
        return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def make_pairs(data: str, autoencoder: Path, out: Path, max_side: int = MAX_SIDE, every: int = 1,
               quality: int = 90) -> dict:
    """Write OUT/real (links to the real photos of DATA) and OUT/fake (their reconstructions, named
    PREFIX<source>__<id>.jpg, JPEG at `quality` with no chroma subsampling, as `realworld` was encoded).
    Idempotent: reconstructions already written are kept, so an interrupted run continues."""
    missing = [n for n in ("taef2_encoder.pth", "taef2_decoder.pth") if not (Path(autoencoder) / n).is_file()]
    if missing:
        raise DatasetUnavailable(f"{autoencoder} lacks {' and '.join(missing)} (the FLUX.2 tiny autoencoder's "
                                 "state dicts, e.g. ../shared/models/taef2)")
    if not Path(data).is_dir():
        raise DatasetUnavailable(f"{data} is not a folder (an image folder with real/ and fake/ is expected)")
    reals = [f for f, label in folder_files(Path(data)) if label == 0][::every]
    if not reals:
        raise DatasetUnavailable(f"no real photos in {data} (expected a real/ folder, or a synonym of it)")
    ae = Autoencoder(autoencoder)
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "fake").mkdir(parents=True, exist_ok=True)
    made, quality_db = 0, []
    for path in reals:
        name = path.name if source_of(path.name) else f"unnamed__{path.name}"
        link = out / "real" / name
        target = out / "fake" / (PREFIX + Path(name).with_suffix(".jpg").name)
        if not target.exists():
            try:
                rgb = centre(load_rgb_array(path.read_bytes(), 10**9), max_side)
            except ImageRejected as exc:  # that photo gets no pair and no link; the others still do
                log.warning(kv(event="aligned_image_skipped", name=path.name, reason=str(exc)))
                continue
            if min(rgb.shape[:2]) < 8:
                continue
            rec = ae.reconstruct(rgb)
            quality_db.append(psnr(rec, rgb[:rec.shape[0], :rec.shape[1]]))
            Image.fromarray(rec).save(target, "JPEG", quality=quality, subsampling=0)
            made += 1
            if made % 200 == 0:
                log.info(kv(event="aligned_progress", made=made, of=len(reals),
                            psnr_db=round(float(np.mean(quality_db)), 2)))
        if not link.exists():
            os.symlink(path.resolve(), link)
    summary = {"reals": len(reals), "made": made,
               "mean_psnr_db": round(float(np.mean(quality_db)), 2) if quality_db else None}
    log.info(kv(event="aligned_done", **summary))
    return summary
