"""Metrics on hand-made logits equal hand-computed values."""

import numpy as np
import pytest

from cmmvt.eval import metrics

# 3 classes, 6 samples. argmax predictions: [0, 1, 1, 2, 2, 0]; labels: [0, 0, 1, 1, 2, 2]
LOGITS = np.array(
    [
        [5.0, 1.0, 0.0],  # label 0, pred 0 (top-2: 0, 1)
        [1.0, 3.0, 2.0],  # label 0, pred 1 (top-2: 1, 2) -> 0 not in top-2
        [0.0, 4.0, 1.0],  # label 1, pred 1
        [0.0, 1.0, 2.0],  # label 1, pred 2 (top-2: 2, 1) -> in top-2
        [0.0, 1.0, 3.0],  # label 2, pred 2
        [3.0, 0.0, 2.0],  # label 2, pred 0 (top-2: 0, 2) -> in top-2
    ]
)
LABELS = np.array([0, 0, 1, 1, 2, 2])


def test_hand_computed_metrics():
    m = metrics.classification_metrics(LOGITS, LABELS, k=2)
    assert m["top1"] == pytest.approx(3 / 6)
    assert m["top2"] == pytest.approx(5 / 6)
    # every class: 1 of 2 correct -> mean class accuracy 0.5
    assert m["mean_class_accuracy"] == pytest.approx(0.5)
    # precision: class0 1/2 (preds rows 0,5), class1 1/2 (rows 1,2), class2 1/2 (rows 3,4); recall 1/2 each
    assert m["macro_f1"] == pytest.approx(0.5)


def test_unbalanced_mean_class_accuracy_differs_from_top1():
    logits = np.array([[1.0, 0.0]] * 4 + [[1.0, 0.0]])  # always predicts class 0
    labels = np.array([0, 0, 0, 0, 1])
    m = metrics.classification_metrics(logits, labels, k=1)
    assert m["top1"] == pytest.approx(0.8)
    assert m["mean_class_accuracy"] == pytest.approx(0.5)
    # F1 class 0: p=0.8, r=1 -> 8/9; class 1: 0 -> macro 4/9
    assert m["macro_f1"] == pytest.approx(4 / 9)


def test_subset_accuracy_counts_rows_of_those_classes_only():
    assert metrics.subset_accuracy(LOGITS, LABELS, [0]) == pytest.approx(1 / 2)  # rows 0, 1
    assert metrics.subset_accuracy(LOGITS, LABELS, [1, 2]) == pytest.approx(2 / 4)  # rows 2-5: 2 and 4 right


def test_per_class_and_confusion():
    rows = metrics.per_class(LOGITS, LABELS, ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    assert all(r["support"] == 2 and r["accuracy"] == 0.5 for r in rows)
    cm = metrics.confusion(LOGITS, LABELS, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
