"""Device choice shared by training and the worker: CUDA, then Apple MPS, then CPU."""
from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from shared.settings import PRECISIONS


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


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 convolutions in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates
    them and bfloat16 is slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """The reduced precision convolutions run in (None: float32). "auto" takes float16 on CUDA and bfloat16 on
    a CPU that has it natively: on such a CPU it doubles the speed of both training and serving."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return torch.float16
        return torch.bfloat16 if kind == "cpu" and bf16_native() else None
    return None if precision == "float32" else getattr(torch, precision)


def precision_name(dtype: torch.dtype | None) -> str:
    """The name --precision takes for this arithmetic; reports record it beside their numbers."""
    return str(dtype or torch.float32).removeprefix("torch.")


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Mixed precision for the forward pass; the weights stay float32, so one checkpoint serves every precision."""
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


class InPrecision(nn.Module):
    """Runs a float32 model under autocast and hands back float32 logits, so callers never see the precision."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype | None):
        super().__init__()
        self.model, self.device, self.dtype = model, device, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self.model(x).float()
