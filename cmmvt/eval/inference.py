"""Inference on cached features: whole-clip views through a classifier, logits averaged per clip."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from cmmvt import distributed
from cmmvt.config import Params
from cmmvt.distributed import World
from cmmvt.train.dataset import ClipDataset, collate_views, per_clip_mean


def eval_frames(p: Params) -> int:
    """Rows per evaluation view: ``evaluate.max_frames``, else the model's one-pass cap ``model.max_frames``."""
    return min(p.evaluate.max_frames or p.model.max_frames, p.model.max_frames)


@torch.inference_mode()
def predict(model: nn.Module, ds: ClipDataset, batch_size: int = 32, world: World = World()) -> np.ndarray:
    """Logits of each clip's evaluation views (whole clips up to the cap), averaged per clip → (N, C).

    The ranks of a group each predict every ``size``-th clip and gather the logits, so every rank returns all
    of them in order, each clip computed once (:func:`cmmvt.distributed.shared_rows`). ``model`` is the bare
    model, not its ``DistributedDataParallel`` wrapper: the ranks run different numbers of batches here.
    """
    model.eval()

    def logits(idx: list[int]) -> list[np.ndarray]:
        out = []
        for batch in DataLoader(Subset(ds, idx), batch_size=batch_size, collate_fn=collate_views):
            views = batch.pop("views")  # (B,)
            x = model({k: v for k, v in batch.items() if k != "label"})  # (ΣV, C)
            out.extend(per_clip_mean(x, views).numpy())  # B rows of (C,)
        return out

    rows = distributed.shared_rows(world, logits, len(ds))
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)
