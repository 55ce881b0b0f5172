"""PNG figures for the evaluation report (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation: the report's Figure 2, where overfitting shows."""
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    a.set(xlabel="epoch", ylabel="binary cross-entropy", title="Loss")
    b.plot(epochs, [h["train_acc"] for h in history], "o-", label="train")
    b.plot(epochs, [h["val_acc"] for h in history], "o-", label="validation")
    b.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _legend_below(ax) -> None:
    """Under the axes, where seven or more rows (evaluate's robustness rows) cannot hide the curves."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", frameon=False)


def roc(curves: dict[str, tuple], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5.6 + 0.18 * len(curves)))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], "k--", alpha=0.4, label="chance")  # and the legend is never empty (one class only)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", aspect="equal")
    _legend_below(ax)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def reliability(bins: dict[str, dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5.8 + 0.18 * len(bins)))
    ax.plot([0, 1], [0, 1], "k--", alpha=0.4, label="perfect calibration")
    for name, b in bins.items():
        xs = [m for m, c in zip(b["mean_p"], b["count"]) if c]
        ys = [f for f, c in zip(b["frac_fake"], b["count"]) if c]
        ax.plot(xs, ys, "o-", label=name)
    ax.set(xlabel="predicted P(fake)", ylabel="observed fraction fake", title="Reliability diagram", aspect="equal")
    _legend_below(ax)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
