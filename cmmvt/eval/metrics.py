"""Classification metrics from logits: top-k accuracy, mean class accuracy, macro-F1, confusion.

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0]), k=1)
    >>> m["top1"], m["mean_class_accuracy"]
    (0.5, 0.5)
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` highest logits.

    Args:
        logits: (N, C) scores.
        labels: (N,) integer labels.
        k: Clipped to C.
    """
    k = min(k, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # (N, k)
    return float((topk == labels[:, None]).any(axis=1).mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> dict[str, float]:
    """Top-1, top-k, mean class accuracy (mean per-class recall over classes present) and macro-F1.

    Args:
        logits: (N, C) scores.
        labels: (N,) integer labels in [0, C).
        k: The k of the top-k accuracy, reported as ``top{k}``.
    """
    pred = logits.argmax(axis=1)
    present = np.unique(labels)
    recalls = [float((pred[labels == c] == c).mean()) for c in present]
    return {
        "top1": topk_accuracy(logits, labels, 1),
        f"top{k}": topk_accuracy(logits, labels, k),
        "mean_class_accuracy": float(np.mean(recalls)),
        "macro_f1": float(f1_score(labels, pred, labels=present, average="macro", zero_division=0)),
    }


def subset_accuracy(logits: np.ndarray, labels: np.ndarray, classes: list[int]) -> float:
    """Top-1 accuracy over the rows whose label is in ``classes`` (predictions may be any class).

    Args:
        logits: (N, C) scores.
        labels: (N,) integer labels.
        classes: The label subset; at least one row must carry one of them.
    """
    rows = np.isin(labels, classes)  # (N,)
    return float((logits[rows].argmax(axis=1) == labels[rows]).mean())


def per_class(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> list[dict[str, float | str | int]]:
    """One row per class: support, accuracy (recall), precision and F1."""
    pred = logits.argmax(axis=1)
    rows = []
    for c, name in enumerate(names):
        tp = int(((pred == c) & (labels == c)).sum())
        support, predicted = int((labels == c).sum()), int((pred == c).sum())
        recall = tp / support if support else 0.0
        precision = tp / predicted if predicted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "support": support, "accuracy": recall, "precision": precision, "f1": f1})
    return rows


def confusion(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    return confusion_matrix(labels, logits.argmax(axis=1), labels=list(range(num_classes)))
