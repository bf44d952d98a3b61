"""95 % intervals for accuracies and paired differences, by bootstrapping runs and test clips together.

A result here is a matrix of per-clip scores, (R, N): R runs (seeds, label draws) of one method, each scored
on the same N test clips (1 = right, 0 = wrong). Its noise has two sources, the runs and the finite test set,
so both are resampled: each bootstrap replicate draws R runs and N clips with replacement and averages the
drawn runs over the drawn clips (a two-stage bootstrap, Davison & Hinkley 1997, §3.8; percentile interval,
Efron & Tibshirani 1993). A **paired** difference of two methods resamples the same runs and the same clips for
both, so what the two share (a hard clip, an unlucky label draw) cancels: run r of each method must use the
same seed and label draw.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = (rng.random((5, 400)) < 0.8).astype(float)  # 5 runs, 400 clips, about 80 % right
    >>> iv = bootstrap(a)
    >>> iv.low < 0.8 < iv.high
    True
    >>> b = a.copy(); b[:, :40] = 0  # the same runs, 40 clips fewer right
    >>> d = bootstrap(a, b)
    >>> round(d.mean, 3), d.low > 0
    (0.082, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean and its ``level`` percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference that is not noise)."""
        return self.low > 0 or self.high < 0

    def signed(self) -> str:
        """``+0.052 [+0.021, +0.083]`` (for differences)."""
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(scores: np.ndarray, reference: np.ndarray | None = None, n_boot: int = 4000, level: float = 0.95,
              seed: int = 0) -> Interval:
    """Mean of ``scores`` (or of ``scores − reference``, paired) with a bootstrap interval over runs and clips.

    Args:
        scores: (R, N) per-clip scores of R runs on the same N clips (a (N,) vector is one run).
        reference: Optional (R, N) scores of the method compared against, run r paired with run r of ``scores``
            (same seed and label draw) and clip n with clip n.
        n_boot: Bootstrap replicates.
        level: Coverage of the interval.
        seed: Seeds the resampling.

    Returns:
        The mean over runs and clips and its interval.
    """
    x = np.atleast_2d(np.asarray(scores, np.float64))
    if reference is not None:
        ref = np.atleast_2d(np.asarray(reference, np.float64))
        if ref.shape != x.shape:
            raise ValueError(f"paired scores must have the same (runs, clips) shape, got {x.shape} and {ref.shape}")
        x = x - ref  # (R, N)
    R, N = x.shape
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(N, np.full(N, 1.0 / N), size=n_boot) / N  # (n_boot, N) clips drawn
    per_run = weights @ x.T  # (n_boot, R) each run's mean over the drawn clips
    runs = rng.integers(0, R, size=(n_boot, R))  # (n_boot, R) runs drawn
    stats = np.take_along_axis(per_run, runs, axis=1).mean(1)  # (n_boot,)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(float(x.mean()), float(low), float(high), level)
