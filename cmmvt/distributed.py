"""Ranks of a job: which of N processes this one is, how the processes agree, and how they are launched.

cmmvt scales on PyTorch's own engine. ``torchrun`` (``python -m torch.distributed.run``; under SLURM inside
``srun``) starts N processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``;
:func:`joined` makes them one ``torch.distributed`` process group (``env://``) through which they agree on
the work and gather one summary. ``--shard i/N`` makes this process rank ``i`` of N *independent* ranks that
never talk (a SLURM job array whose tasks must not wait for each other): the same code path, without the
group, where every collective of this module is local.

Extraction exchanges only small Python objects (clip durations, summaries), so the group always uses the
gloo backend, on GPU ranks too; NCCL pays off for tensors on GPUs. Training is data-parallel (Li et al. 2020,
"PyTorch Distributed: Experiences on Accelerating Data Parallel Training"): every rank holds the model and
steps with its part of each global batch; :func:`cat_ranks` is what the pretraining objectives need beyond
``DistributedDataParallel`` (InfoNCE's negatives from the whole global batch); :func:`shared_rows` splits
evaluation.

This module sits at the bottom of the package (it imports only torch), so a stage can depend on it without
depending on the training code.

Example:
    >>> World(rank=1, size=2, group=True).device("cuda"), World().lead
    ('cuda:0', True)
    >>> balanced_split([5.0, 1.0, 4.0, 2.0, 3.0], 2)
    [[0, 1, 3], [2, 4]]
"""

from __future__ import annotations

import heapq
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

T = TypeVar("T")
R = TypeVar("R")

#: How long a rank waits for the others at a collective: the fastest may finish long before the slowest
#: (other machines, other clips), and a crashed rank is noticed by torchrun, not by this timeout.
TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class World:
    """This process among the ranks of a job.

    Attributes:
        rank: This process's rank, ``0 <= rank < size``.
        size: Number of ranks.
        local_rank: Rank among the processes on this machine (selects the GPU).
        local_size: Processes on this machine (they share its cores).
        group: The ranks form a ``torch.distributed`` process group (torchrun); False: independent ranks
            (``--shard i/N``) or one process.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    group: bool = False

    @property
    def lead(self) -> bool:
        """True where this process reports for its job: rank 0 of a group, or an independent rank."""
        return self.rank == 0 or not self.group

    def device(self, device: str) -> str:
        """``device`` for this rank: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per rank)."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.group else device

    def label(self) -> str:
        """``rank 1 of 2`` (empty for one process): the prefix of what a rank reports about itself."""
        return f"rank {self.rank} of {self.size}" if self.size > 1 else ""


def from_env(shard: str | None = None) -> World:
    """The world of this process: ``--shard i/N`` if given, else torchrun's environment, else one process.

    Args:
        shard: ``"i/N"``: rank ``i`` of ``N`` independent ranks (``0 <= i < N``).

    Raises:
        ValueError: A malformed shard, or a shard given to a process that torchrun started as one of several.
    """
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    if shard is not None:
        if size > 1:
            raise ValueError(f"--shard {shard} under torchrun ({size} processes): use one or the other")
        i, sep, n = shard.partition("/")
        if not (sep and i.isdigit() and n.isdigit() and int(i) < int(n)):
            raise ValueError(f"--shard = {shard!r}: expected i/N with 0 <= i < N, e.g. 0/4")
        return World(rank=int(i), size=int(n))
    if size <= 1:
        return World()
    local_rank = int(env.get("LOCAL_RANK", "0"))
    return World(rank=int(env["RANK"]), size=size, local_rank=local_rank,
                 local_size=int(env.get("LOCAL_WORLD_SIZE", "1")), group=True)


@contextmanager
def joined(world: World) -> Iterator[World]:
    """Join the process group of ``world`` (gloo, ``env://``) for the block; nothing for independent ranks.

    Re-entrant: inside a block that already joined, it does nothing more.
    """
    if not world.group or dist.is_initialized():
        yield world
        return
    dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait until every rank of the group is here (nothing for independent ranks)."""
    if world.group:
        dist.barrier()


@contextmanager
def rank_zero_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block before the other ranks run it (e.g. preparing a folder they all write to)."""
    if world.rank != 0:
        barrier(world)
    yield
    if world.rank == 0:
        barrier(world)


def all_gather(world: World, obj: T) -> list[T]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` for independent ranks)."""
    if not world.group:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def shared_rows(world: World, fn: Callable[[list[int]], Sequence[R]], n: int) -> list[R]:
    """``fn(range(n))`` on every rank, each rank of a group computing the rows of every ``size``-th index.

    Rank r calls ``fn`` on indices ``r, r + size, …`` (never on an empty list) and every rank gets all ``n``
    rows in index order: each index is computed once, unlike PyTorch's ``DistributedSampler``, which pads the
    shares to equal length with repeated indices. Independent ranks cannot share the work: each computes all.

    Args:
        world: The ranks.
        fn: Maps a list of indices to one row (any picklable object) per index, in that order.
        n: Number of indices.
    """
    if not world.group:
        return list(fn(list(range(n)))) if n else []
    mine = list(range(world.rank, n, world.size))
    parts = all_gather(world, list(fn(mine)) if mine else [])  # parts[r] = rows of r, r + size, …
    out: list[Any] = [None] * n
    for r, part in enumerate(parts):
        out[r :: world.size] = part
    return out


def map_shared(world: World, fn: Callable[[T], R], xs: Sequence[T]) -> list[R]:
    """``[fn(x) for x in xs]`` on every rank, each rank of a group computing every ``size``-th element."""
    return shared_rows(world, lambda idx: [fn(xs[i]) for i in idx], len(xs))


def cat_ranks(world: World, x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``x`` concatenated in rank order, on every rank, with gradients.

    Each rank may hold its own number of rows (they are padded for the all-gather and cut again). The backward
    pass sums, into each rank's own rows, the gradients that every rank's loss sends them
    (``torch.distributed.nn.functional.all_gather``): a loss computed identically on every rank from the
    gathered rows, e.g. a contrastive loss whose negatives are the whole global batch (SimCLR, Chen et al.
    2020), then gets the gradient of one process holding the global batch once the ranks' gradients are
    averaged. Independent ranks: ``x`` itself.

    Args:
        x: (B_r, ...) this rank's rows.

    Returns:
        (ΣB_r, ...).
    """
    if not world.group:
        return x
    sizes = all_gather(world, x.shape[0])
    padded = torch.cat([x, x.new_zeros(max(sizes) - x.shape[0], *x.shape[1:])])  # (max B_r, ...)
    with warnings.catch_warnings():  # deprecated for torch.distributed._functional_collectives, a private module
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_nn.all_gather(padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def balanced_split(weights: Sequence[float], n: int) -> list[list[int]]:
    """Split indices ``0..len(weights)-1`` into ``n`` parts of near-equal total weight, deterministically.

    Greedy longest-processing-time-first (Graham 1969): heaviest first, each to the lightest part so far
    (ties: lower index, lower part), so no part exceeds the mean by more than one item's weight. Each part is
    returned in index order.

    Args:
        weights: Non-negative weight of each item (e.g. a clip's duration).
        n: Number of parts (``>= 1``).

    Returns:
        ``n`` sorted index lists that together hold every index once.
    """
    heap = [(0.0, part) for part in range(n)]  # (load, part)
    parts: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, part = heapq.heappop(heap)
        parts[part].append(i)
        heapq.heappush(heap, (load + weights[i], part))
    return [sorted(p) for p in parts]


def cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_rank(world: World, cores: int) -> int:
    """The CPU threads of one rank: this machine's ``cores`` shared by its ``local_size`` ranks (at least 1)."""
    return max(1, cores // world.local_size)


def share_cores(world: World) -> None:
    """Give a rank of a group its share of this machine's cores as torch threads (torchrun sets 1 per process).

    One process keeps torch's default, or ``OMP_NUM_THREADS`` (which ``cmmvt ablate -j`` sets).
    """
    if world.group:
        torch.set_num_threads(threads_per_rank(world, cores()))


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` in the main thread, so ``finally`` and ``with`` blocks
    run (e.g. a cache writer publishes its complete clips) before the process ends.

    SIGTERM is how torchrun stops the other ranks when one failed, and how SLURM ends a job at its time
    limit. Outside the main thread (where handlers cannot be set) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def relaunch(procs: int) -> int | None:
    """Run this very command again as ``procs`` torchrun processes on this machine, unless it is one of them.

    The command is the interpreter's original command line (``sys.orig_argv``: a script, ``-m module`` or a
    console script alike), started by ``python -m torch.distributed.run --standalone`` with
    ``--nproc_per_node procs``.

    Returns:
        The launcher's exit status, or ``None`` when nothing was launched: ``procs`` is 1, or this process
        already is one of torchrun's.
    """
    if procs <= 1 or "WORLD_SIZE" in os.environ:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           "--no-python", sys.executable, *sys.orig_argv[1:]]
    return subprocess.run(cmd, check=False).returncode
