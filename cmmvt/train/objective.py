"""The supervised objective of ``train.task``: the loss, the validation score that selects a checkpoint, and (for
several labels per clip) the decision thresholds kept with it.

* ``multiclass``: softmax cross-entropy with label smoothing (Szegedy et al. 2016); score: top-1.
* ``multilabel``: a sigmoid per class with binary cross-entropy, as AudioSet classifiers are trained (Hershey et
  al. 2017; Kong et al. 2020, "PANNs"); ``train.balance: loss`` weights each class's positives by its
  negatives/positives ratio on the training clips (BCE ``pos_weight``) for imbalanced sets such as AudioSet; score:
  mAP. The thresholds that turn probabilities into labels are chosen on val (max F1, per class or one value).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cmmvt.config import TrainParams
from cmmvt.eval import metrics

__all__ = ["SCORE", "hits", "loss_fn", "score", "thresholds"]

SCORE = {"multiclass": "top1", "multilabel": "mAP"}  #: the validation score of each task


def loss_fn(t: TrainParams, train_labels: list) -> nn.Module:
    """The loss of ``t.task`` (``train_labels``: the training clips' integer labels or (C,) targets)."""
    if t.task == "multiclass":
        return nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    y = np.asarray(train_labels, np.float32)  # (N, C)
    pos = y.sum(0)
    weight = np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0) if t.balance == "loss" else None
    return nn.BCEWithLogitsLoss(pos_weight=None if weight is None else torch.as_tensor(weight, dtype=torch.float32))


def score(task: str, logits: np.ndarray, labels: list) -> float:
    """Top-1 (multiclass) or mAP (multilabel) of (N, C) ``logits``."""
    if task == "multiclass":
        return float((logits.argmax(1) == np.asarray(labels)).mean())
    return metrics.mean_ap(logits, np.asarray(labels))


def hits(task: str, logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Training clips right: top-1 (multiclass), every label right at probability 0.5 (multilabel)."""
    if task == "multiclass":
        return int((logits.argmax(1) == labels).sum())
    return int(((logits > 0) == (labels > 0)).all(1).sum())


def thresholds(t: TrainParams, val_logits: np.ndarray, val_labels: list) -> list[float] | None:
    """Multilabel: the (C,) probability thresholds chosen on val (:func:`cmmvt.eval.metrics.thresholds`)."""
    if t.task == "multiclass":
        return None
    probs = 1 / (1 + np.exp(-val_logits))
    return metrics.thresholds(probs, np.asarray(val_labels), per_class=t.threshold == "per_class").tolist()
