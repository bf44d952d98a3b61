"""What every training loop shares: seeding, the learning-rate schedule, the DVCLive logger, a progress bar."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; deterministic kernels where torch has them (CPU runs repeat exactly)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def live_logger(live_dir: str | Path | None):  # noqa: ANN201 - dvclive.Live | None, imported lazily
    """A DVCLive logger writing metrics and plots under ``live_dir`` (DVC stages declare them), or None."""
    if live_dir is None:
        return None
    from dvclive import Live

    return Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)


def steps(label: str, n: int, show: bool = True) -> Iterable[int]:
    """``range(n)`` with a rich progress bar on stderr while a loop runs, shown only on a terminal (never in logs)
    and only where ``show`` (rank 0 of several)."""
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    return track(range(n), description=label, total=n, console=console, transient=True,
                 disable=not (show and console.is_terminal))
