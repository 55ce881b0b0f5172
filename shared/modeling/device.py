"""Device choice shared by training and the worker: CUDA, then Apple MPS, then CPU."""
from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("DEVICE=cuda was requested but CUDA is not available")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("DEVICE=mps was requested but Apple MPS is not available")
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def memory_format(device: str | torch.device) -> torch.memory_format:
    """Channels-last runs convolutions faster on CPU and CUDA; MPS kernels want the default layout.
    Model and input must agree, so both take their layout from here."""
    return torch.contiguous_format if torch.device(device).type == "mps" else torch.channels_last


def as_input(x: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    return x.to(device, non_blocking=True).contiguous(memory_format=memory_format(device))
