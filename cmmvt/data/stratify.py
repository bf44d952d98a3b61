"""Splits of multi-label data that keep every label's frequency: iterative stratification.

Sechidis, Tsoumakas & Vlahavas 2011, "On the stratification of multi-label data" (ECML PKDD), Algorithm 1: the
label with the fewest clips still to place goes first (rare labels are the ones a random split starves); each of
its clips goes to the split that most wants that label (its desired count of the label minus what it has), ties to
the split that wants most clips, then at random. A single-label set reduces to a stratified split per class.

Example (200 clips, 4 labels of which the rarest has 6 clips; a random 60/20/20 split put none of label 2's 13
clips and none of label 3's 6 in test):
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((200, 4)) < [0.5, 0.2, 0.1, 0.04]
    >>> y[~y.any(1), 0] = True
    >>> split = iterative(y, np.array([0.6, 0.2, 0.2]), np.random.default_rng(0))
    >>> np.bincount(split).tolist(), y.sum(0).tolist()
    ([117, 41, 42], [169, 43, 13, 6])
    >>> [y[split == s].sum(0).tolist() for s in range(3)]  # every label in every split, near 60/20/20
    [[101, 26, 8, 4], [34, 9, 2, 1], [34, 8, 3, 1]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["iterative"]


def iterative(y: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign each row of a multi-hot matrix to a split.

    Args:
        y: (N, C) bool, row n's labels (at least one per row).
        fractions: (S,) the share of rows each split should get (normalised here).
        rng: Breaks ties.

    Returns:
        (N,) int64, each row's split index in ``[0, S)``.
    """
    y = np.asarray(y, bool)
    r = np.asarray(fractions, np.float64) / np.sum(fractions)  # (S,)
    want_rows = r * len(y)  # (S,) rows each split still wants
    want = np.outer(r, y.sum(0)).astype(np.float64)  # (S, C) clips of each label each split still wants
    out = np.full(len(y), -1, np.int64)
    left = y.copy()  # (N, C) labels of the rows not yet placed
    while (out < 0).any():
        counts = left.sum(0)  # (C,)
        if not counts.any():  # rows without labels: to the split that wants most rows
            for n in np.flatnonzero(out < 0):
                out[n] = int(np.argmax(want_rows))
                want_rows[out[n]] -= 1
            break
        rarest = np.flatnonzero(counts == counts[counts > 0].min())
        c = int(rng.choice(rarest))
        for n in rng.permutation(np.flatnonzero(left[:, c])):
            best = np.flatnonzero(want[:, c] == want[:, c].max())
            if len(best) > 1:
                best = best[want_rows[best] == want_rows[best].max()]
            s = int(rng.choice(best))
            out[n] = s
            want[s] -= y[n]
            want_rows[s] -= 1
            left[n] = False
    return out
