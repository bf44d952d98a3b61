"""Classification metrics from logits: top-k accuracy, mean class accuracy, macro-F1, confusion.

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0]), k=1)
    >>> m["top1"], m["mean_class_accuracy"]
    (0.5, 0.5)
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support,
                             top_k_accuracy_score)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` highest logits (scikit-learn's ``top_k_accuracy_score``).

    Args:
        logits: (N, C) scores.
        labels: (N,) integer labels.
        k: Clipped to C.
    """
    C = logits.shape[1]
    if C == 1:
        return float((labels == 0).mean())
    if C == 2:  # sklearn's binary form takes the positive class's score
        pred = logits.argmax(axis=1) if k < 2 else labels
        return float((pred == labels).mean())
    return float(top_k_accuracy_score(labels, logits, k=min(k, C), labels=np.arange(C)))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> dict[str, float]:
    """Top-1, top-k, mean class accuracy (mean per-class recall over classes present) and macro-F1.

    Args:
        logits: (N, C) scores.
        labels: (N,) integer labels in [0, C).
        k: The k of the top-k accuracy, reported as ``top{k}``.
    """
    pred = logits.argmax(axis=1)
    present = np.unique(labels)
    return {
        "top1": topk_accuracy(logits, labels, 1),
        f"top{k}": topk_accuracy(logits, labels, k),
        "mean_class_accuracy": float(balanced_accuracy_score(labels, pred)),
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
    """One row per class: support, accuracy (recall), precision and F1 (scikit-learn's per-class scores)."""
    pred = logits.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=np.arange(len(names)),
                                                                     zero_division=0)
    return [{"class": name, "support": int(support[c]), "accuracy": float(recall[c]),
             "precision": float(precision[c]), "f1": float(f1[c])} for c, name in enumerate(names)]


def confusion(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    return confusion_matrix(labels, logits.argmax(axis=1), labels=list(range(num_classes)))
