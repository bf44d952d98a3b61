"""Classification metrics from logits: top-k accuracy, mean class accuracy, macro-F1, confusion; for several labels
per clip mAP, mean AUC, d′ and the decision thresholds chosen on validation.

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


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """mAP, mean AUC and d′ of several labels per clip, as AudioSet papers report them (Gemmeke et al. 2017;
    Hershey et al. 2017, "CNN architectures for large-scale audio classification").

    mAP is the mean over classes of scikit-learn's average precision (classes with at least one positive test
    clip); mean AUC is over classes with positives and negatives; d′ = √2 · Φ⁻¹(mean AUC).

    Args:
        logits: (N, C) scores (any monotone map of the probability: ranks only).
        targets: (N, C) 0/1, clip n's labels.

    Example:
        >>> m = multilabel_metrics(np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]]), np.array([[1, 1], [0, 1], [1, 0]]))
        >>> round(m["mAP"], 3), round(m["mean_auc"], 3)
        (1.0, 1.0)
    """
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    y = np.asarray(targets) > 0  # (N, C)
    aucs = [roc_auc_score(y[:, c], logits[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    mean_auc = float(np.mean(aucs)) if aucs else float("nan")
    return {"mAP": mean_ap(logits, targets), "mean_auc": mean_auc,
            "d_prime": float(np.sqrt(2) * norm.ppf(min(mean_auc, 1 - 1e-12))) if aucs else float("nan")}


def mean_ap(logits: np.ndarray, targets: np.ndarray) -> float:
    """Macro average precision over the classes with at least one positive clip (NaN when none has)."""
    ap = per_class_ap(logits, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def per_class_ap(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(C,) average precision of each class (scikit-learn's); NaN for a class with no positive clip."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(targets) > 0  # (N, C)
    return np.array([average_precision_score(y[:, c], logits[:, c]) if y[:, c].any() else np.nan
                     for c in range(y.shape[1])])


def thresholds(probs: np.ndarray, targets: np.ndarray, per_class: bool = True) -> np.ndarray:
    """(C,) decision thresholds on sigmoid probabilities that maximise F1 on validation clips: each class's own
    (``per_class``), or the one value that maximises micro-F1 over all classes. Candidates lie midway between
    neighbouring validation scores (a margin on both sides), ties go to the one nearest 0.5; a class without
    positives keeps 0.5.

    Example:
        >>> p = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.4]]); y = np.array([[1, 0], [1, 1], [0, 1]])
        >>> thresholds(p, y).round(3).tolist()
        [0.5, 0.3]
    """
    y = np.asarray(targets) > 0

    def best(p: np.ndarray, truth: np.ndarray) -> float:
        """The F1-best cut of scores ``p`` in one sort: after the k highest scores, TP_k positives of k."""
        order = np.argsort(-p, kind="stable")
        ps, tp = p[order], np.cumsum(truth[order])  # (M,) each
        ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # the last index of each run of equal scores
        f1 = 2 * tp[ends] / (ends + 1 + truth.sum())  # predicting the top ends+1 scores
        lower = np.r_[ps[ends[1:]], -np.inf]  # the next lower score after each cut
        cuts = np.where((lower < 0.5) & (0.5 <= ps[ends]), 0.5, (ps[ends] + lower) / 2)  # 0.5 where it fits, else
        cuts[-1] = min(ps[-1], 0.5)  # midway; everything predicted: at the lowest score (or 0.5)
        f1 = np.r_[f1, 0.0 if truth.any() else 1.0]  # nothing predicted (above every score)
        cuts = np.r_[cuts, max(ps[0] + 1e-6, 0.5)]
        top = np.flatnonzero(np.isclose(f1, f1.max()))
        return float(cuts[top[np.argmin(np.abs(cuts[top] - 0.5))]])

    if not per_class:
        return np.full(probs.shape[1], best(probs.ravel(), y.ravel()))
    return np.array([best(probs[:, c], y[:, c]) if y[:, c].any() else 0.5 for c in range(probs.shape[1])])
