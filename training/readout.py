"""Fit a fixed-feature model's linear read-out to convergence in one go (``--optimizer lbfgs``).

A model whose statistics are fixed (``residual_stats``) is a logistic regression on them. Trained by AdamW
for 15 epochs its read-out stopped well short of the optimum, and where it stopped depended on the schedule:
the same 66 statistics fitted to convergence held up better on unseen sources (model card, "How it was
chosen"). Here the statistics of ``crops_per_image`` augmented crops of every training image are computed
once, the BatchNorm's running statistics are set to theirs, and the linear layer is fitted by L-BFGS on the
standardised statistics (logistic loss plus ``weight_decay / 2 * |w|^2``): deterministic given the crops.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

MAX_ITER = 1000


class NoReadout(ValueError):
    """The architecture has no fixed features under a linear read-out."""


def readout_of(model: nn.Module) -> tuple[nn.BatchNorm1d, nn.Linear]:
    norm, head = getattr(model, "norm", None), getattr(model, "head", None)
    if not (callable(getattr(model, "features", None)) and isinstance(norm, nn.BatchNorm1d)
            and isinstance(head, nn.Linear)):
        raise NoReadout(f"--optimizer lbfgs fits a linear read-out on fixed statistics; {type(model).__name__} "
                        "has none (residual_spectrum and residual_stats without a hidden layer have)")
    return norm, head


@torch.no_grad()
def collect(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed statistics of every crop the loader yields, in float64, with the crops' labels."""
    feats, labels = [], []
    for x, y in loader:
        feats.append(model.features(x.to(device)).double().cpu())
        labels.append(y.double())
    return torch.cat(feats), torch.cat(labels)


def fit_readout(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor, l2: float) -> dict:
    """Set the model's standardisation and fit its linear layer; returns the training loss and accuracy."""
    norm, head = readout_of(model)
    mean, var = feats.mean(0), feats.var(0, unbiased=False)
    z = (feats - mean) / torch.sqrt(var + norm.eps)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=MAX_ITER, history_size=20, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, labels) + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(objective)
    with torch.no_grad():
        logits = z @ w + b
        norm.running_mean.copy_(mean), norm.running_var.copy_(var)
        norm.weight.fill_(1.0), norm.bias.zero_()
        head.weight.copy_(w.view(1, -1)), head.bias.copy_(b)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return {"train_loss": float(loss), "train_acc": float(((logits > 0).double() == labels).double().mean())}
