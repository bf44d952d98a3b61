"""Global batches that are the same for one process or N: each rank steps with its part of every batch.

PyTorch's ``DistributedSampler`` shards the *dataset*: each rank batches its own shard, padded with repeated
clips to equal length, so what one optimiser step sees depends on N and some clips count twice an epoch.
Here every rank draws the same seeded permutation of the clips each epoch (from ``(seed, epoch)``, without
communication), cuts it into global batches of ``batch_size`` clips and takes its contiguous part of each,
``np.array_split(batch, N)[rank]``. With one process the part is the whole batch: one code path for any N.
:class:`GlobalBatches` is the ``batch_sampler`` of a ``DataLoader``, which loads and collates each part.

Data-parallel training (DDP: Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel
Training") averages the ranks' gradients. A rank multiplies its mean loss by its :attr:`Share.weight`,
``N · n_r / L`` (its ``n_r`` of the batch's ``L`` clips), so that average is the gradient of the mean loss
over the global batch, also for the last, smaller batch, whose parts may differ by a clip. A rank whose part
is empty (a last batch of fewer clips than ranks) still steps, on a stand-in clip of weight 0: every rank
must take part in each gradient all-reduce.

Example: 5 clips, a global batch of 4, 2 ranks: the batches are [2, 4, 3, 0] and [1]; rank 1 has no clip of
the last one and steps on it as a stand-in, with weight 0.

    >>> from cmmvt.distributed import World
    >>> [[s.indices for s in GlobalBatches(5, 4, World(rank=r, size=2, group=True), seed=0).epoch(0)]
    ...  for r in range(2)]
    [[[2, 4], [1]], [[3, 0], [1]]]
    >>> [(s.clips, s.weight) for s in GlobalBatches(5, 4, World(rank=1, size=2, group=True), seed=0).epoch(0)]
    [(2, 1.0), (0, 0.0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from cmmvt.config import ConfigError
from cmmvt.distributed import World
from cmmvt.train.dataset import ClipDataset


@dataclass(frozen=True)
class Share:
    """This rank's part of one global batch.

    Attributes:
        indices: The clips this rank steps with: its part, or one stand-in clip of the batch when that is empty.
        clips: How many of ``indices`` are its part (0 for a stand-in).
        weight: ``N · clips / L``, the factor of this rank's mean loss (``L``: the clips of the global batch).
    """

    indices: list[int]
    clips: int
    weight: float


class GlobalBatches(Sampler[list[int]]):
    """Each epoch's global batches of ``batch_size`` clips out of ``n``, and this rank's part of each: a
    ``batch_sampler`` yielding the part's clip indices for the epoch set by :meth:`set_epoch`.

    Args:
        n: Clips in the dataset.
        batch_size: The global batch (every rank's parts together); divisible by the number of ranks.
        world: The ranks.
        seed: Seeds each epoch's permutation, with the epoch.
        drop_last: Leave out the last batch when it is smaller than ``batch_size``.
        key: The param that set ``batch_size``, named in the error.

    Raises:
        ConfigError: ``batch_size`` is not divisible by the number of ranks.
    """

    def __init__(self, n: int, batch_size: int, world: World, seed: int, drop_last: bool = False,
                 key: str = "train.batch_size") -> None:
        if batch_size % world.size:
            raise ConfigError(f"{key} = {batch_size} is the global batch, split over {world.size} processes: "
                              f"use a multiple of {world.size}")
        self.n, self.batch_size, self.world, self.seed, self.drop_last = n, batch_size, world, seed, drop_last
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose permutation :meth:`__iter__` cuts (as ``DistributedSampler.set_epoch``)."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's clip indices of each global batch of the current epoch."""
        return (share.indices for share in self.epoch(self._epoch))

    def __len__(self) -> int:
        """Global batches (optimiser steps) per epoch, the same for every number of ranks."""
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Share]:
        """This rank's part of each global batch of epoch ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)  # (n,), the same on every rank
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]  # (L,), L <= batch_size
            part = np.array_split(batch, self.world.size)[self.world.rank]  # (n_r,)
            yield Share(part.tolist() or [int(batch[0])], len(part), self.world.size * len(part) / len(batch))

    def batches(self, ds: ClipDataset, epoch: int) -> Iterator[tuple[Share, dict[str, torch.Tensor]]]:
        """This rank's share of each global batch of epoch ``epoch`` and its collated training items (the
        epoch's crops, :meth:`ClipDataset.set_epoch`)."""
        ds.set_epoch(epoch)
        self.set_epoch(epoch)
        # its own generator: a loader draws a base seed per iterator, which must not move torch's global RNG
        # (the dropout masks of the steps)
        yield from zip(self.epoch(epoch), DataLoader(ds, batch_sampler=self, generator=torch.Generator()))
