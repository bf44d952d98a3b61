"""Simple classifiers on frozen clip-mean features: what the transformer must beat, above all with few labels.

A clip is the mean over time of its cached rows, per modality. Each modality's means are centred on the
mean of a reference set of clips (labels unused) and L2-normalised, then the modalities are concatenated
(each weighing the same): SimpleShot's CL2N features (Wang et al. 2019, "SimpleShot: Revisiting
Nearest-Neighbor Classification for Few-Shot Learning"). On them:

* :func:`nearest_centroid`: the class whose mean feature is nearest (cosine), SimpleShot's classifier;
* :func:`knn`: the majority of the ``k`` nearest labelled clips (cosine; ties to the nearest);
* :func:`linear_probe`: multinomial logistic regression (scikit-learn, L2, ``C``).

Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> nearest_centroid(x[[0, 2]], np.array([0, 1]), x).tolist()
    [0, 0, 1, 1]
    >>> [knn(x[[0, 1, 2]], np.array([0, 0, 1]), x[[3]], k=k).tolist() for k in (1, 3)]  # nearest; majority
    [[1], [0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmmvt.features.cache import CacheReader


def clip_means(features: str | Path, ids: Sequence[str], modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """``{m: (N, D_m)}`` float32 mean row of each clip (zeros for a clip without that stream)."""
    out = {}
    for m in modalities:
        with CacheReader(features, m) as r:
            rows = [r[v] for v in ids]
            out[m] = np.stack([x.mean(0) if len(x) else np.zeros(r.dim, np.float32) for x in rows]).astype(np.float32)
    return out


def cl2n(means: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> np.ndarray:
    """SimpleShot's centred, L2-normalised features, per modality, concatenated: (N, ΣD_m).

    Args:
        means: ``{m: (N, D_m)}`` clip means to transform.
        reference: ``{m: (R, D_m)}`` clip means whose average is subtracted (no labels needed).
    """
    parts = []
    for m, x in means.items():
        c = x - reference[m].mean(0, keepdims=True)  # (N, D_m)
        parts.append(c / np.linalg.norm(c, axis=1, keepdims=True).clip(1e-12))
    return np.concatenate(parts, axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def nearest_centroid(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """The class of the nearest class mean (cosine) for each row of ``test_x`` → (N,) labels."""
    classes = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])  # (C, D)
    return classes[(_unit(test_x) @ _unit(centroids).T).argmax(1)]


def knn(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 5) -> np.ndarray:
    """Majority label of the ``min(k, N_train)`` nearest training rows (cosine); a tie goes to the nearest."""
    sim = _unit(test_x) @ _unit(train_x).T  # (N, N_train)
    order = np.argsort(-sim, axis=1, kind="stable")[:, : min(k, len(train_x))]  # (N, k)
    out = np.empty(len(test_x), train_y.dtype)
    for i, nearest in enumerate(order):
        labels = train_y[nearest]
        counts = {c: int((labels == c).sum()) for c in labels}
        top = max(counts.values())
        out[i] = next(c for c in labels if counts[c] == top)  # labels are in order of nearness
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, C: float = 1.0) -> np.ndarray:
    """Multinomial L2 logistic regression (``C``: inverse regularisation) → (N,) labels."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=2000)
    return clf.fit(train_x, train_y).predict(test_x)
