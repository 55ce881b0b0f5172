"""Classification and calibration metrics (scikit-learn for the standard ones, ECE by its definition)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins of the predicted class."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    pred = (probs >= 0.5).astype(int)
    conf = np.where(pred == 1, probs, 1.0 - probs)
    correct = (pred == labels).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        mask = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict:
    """P(fake) bins: mean predicted vs observed fraction fake."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    mean_p, frac, count = [], [], []
    for b in range(bins):
        m = idx == b
        count.append(int(m.sum()))
        mean_p.append(float(probs[m].mean()) if m.any() else float("nan"))
        frac.append(float(labels[m].mean()) if m.any() else float("nan"))
    return {"edges": edges.tolist(), "mean_p": mean_p, "frac_fake": frac, "count": count}


def tpr_at_fpr(labels: np.ndarray, probs: np.ndarray, fpr: float) -> float:
    """Share of fakes caught by the best threshold that calls at most ``fpr`` of the reals fake."""
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return float("nan")
    f, t, _ = roc_curve(labels, probs)
    return float(t[f <= fpr + 1e-12].max())


def label_shares(labels: np.ndarray, names: np.ndarray) -> dict:
    """What the three labels did to each class: the false-alarm rate is real_called_fake."""
    labels, names = np.asarray(labels).astype(int), np.asarray(names)
    out = {}
    for cls, word in ((0, "real"), (1, "fake")):
        mask = labels == cls
        for name in ("real", "fake", "uncertain"):
            out[f"{word}_called_{name}"] = float((names[mask] == name).mean()) if mask.any() else float("nan")
    return out


def roc_auc_interval(labels: np.ndarray, probs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """DeLong's confidence interval for ROC-AUC (DeLong et al. 1988; Sun & Xu's midrank form, 2014).

    On a set of 100 images the interval is about +-0.1 wide; a card that quotes 0.658 should say so. Each
    image is counted as independent, which images of one source are not: for a new source the spread is wider.
    Deterministic, unlike a bootstrap, so a report is reproduced exactly. (nan, nan) without both classes.
    """
    from statistics import NormalDist

    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    pos, neg = probs[labels == 1], probs[labels == 0]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    both = rankdata(np.r_[pos, neg])  # midranks: ties share the mean of the ranks they span
    auc = (both[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    # each image's share of the pairs it wins: a fake's among the reals, a real's among the fakes
    v_pos = (both[:m] - rankdata(pos)) / n
    v_neg = 1.0 - (both[m:] - rankdata(neg)) / m
    var = (v_pos.var(ddof=1) / m if m > 1 else 0.0) + (v_neg.var(ddof=1) / n if n > 1 else 0.0)
    half = NormalDist().inv_cdf(0.5 + level / 2) * float(np.sqrt(var))
    return float(max(0.0, auc - half)), float(min(1.0, auc + half))


def classification_report(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    pred = (probs >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, pred, average="binary", pos_label=1, zero_division=0)
    cm = confusion_matrix(labels, pred, labels=[0, 1])
    both = len(np.unique(labels)) == 2
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": float(roc_auc_score(labels, probs)) if both else float("nan"),
        "roc_auc_ci95": list(roc_auc_interval(labels, probs)),
        "tpr_at_fpr_1": tpr_at_fpr(labels, probs, 0.01),
        "tpr_at_fpr_5": tpr_at_fpr(labels, probs, 0.05),
        "ece": expected_calibration_error(labels, probs),
        "confusion_matrix": {"tn": int(cm[0, 0]), "fp": int(cm[0, 1]), "fn": int(cm[1, 0]), "tp": int(cm[1, 1])},
    }


def roc_points(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(labels, probs)
    return fpr, tpr
