"""Bootstrap intervals over runs and clips (cmmvt.eval.intervals): coverage, pairing, and when 0 is excluded."""

import numpy as np
import pytest

from cmmvt.eval.intervals import bootstrap


def test_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        difficulty = rng.random(300) < 0.7  # a test set: which clips are easy
        runs = (difficulty[None] ^ (rng.random((5, 300)) < 0.1)).astype(float)  # 5 runs, each flipping 10 %
        truth = 0.7 * 0.9 + 0.3 * 0.1  # expected accuracy over test sets and runs
        iv = bootstrap(runs, n_boot=1000, seed=trial)
        hits += iv.low <= truth <= iv.high
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_difference_covers_a_known_gain_and_excludes_zero():
    rng = np.random.default_rng(1)
    base = (rng.random((15, 500)) < 0.6).astype(float)  # 5 draws x 3 seeds on 500 clips
    better = base.copy()
    wrong = np.argwhere(base == 0)
    fix = wrong[rng.permutation(len(wrong))[: 15 * 30]]  # 30 more right clips per run: +0.06
    better[fix[:, 0], fix[:, 1]] = 1
    d = bootstrap(better, base)
    assert d.mean == pytest.approx(0.06) and d.low <= 0.06 <= d.high
    assert d.excludes_zero and d.low > 0
    same = bootstrap(base, np.roll(base, 1, axis=0))  # the same method, runs paired differently: no difference
    assert same.low < 0 < same.high and not same.excludes_zero


def test_pairing_uses_the_same_clips_and_cancels_what_both_share():
    rng = np.random.default_rng(2)
    easy = rng.random(400) < 0.5  # clip difficulty shared by both methods dominates the noise
    a = (easy[None] | (rng.random((6, 400)) < 0.10)).astype(float)
    b = (easy[None] | (rng.random((6, 400)) < 0.05)).astype(float)
    paired = bootstrap(a, b)
    unpaired_width = (bootstrap(a).high - bootstrap(a).low) + (bootstrap(b).high - bootstrap(b).low)
    assert paired.high - paired.low < unpaired_width / 3
    with pytest.raises(ValueError, match="same"):
        bootstrap(a, b[:, :300])
