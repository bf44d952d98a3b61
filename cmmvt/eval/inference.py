"""Inference on cached features: whole-clip views through a classifier, logits averaged per clip."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cmmvt.config import Params
from cmmvt.train.dataset import ClipDataset, collate_views, per_clip_mean


def eval_frames(p: Params) -> int:
    """Rows per evaluation view: ``evaluate.max_frames``, else the model's one-pass cap ``model.max_frames``."""
    return min(p.evaluate.max_frames or p.model.max_frames, p.model.max_frames)


@torch.inference_mode()
def predict(model: nn.Module, ds: ClipDataset, batch_size: int = 32) -> np.ndarray:
    """Logits of each clip's evaluation views (whole clips up to the cap), averaged per clip → (N, C)."""
    model.eval()
    out = []
    for batch in DataLoader(ds, batch_size=batch_size, collate_fn=collate_views):
        views = batch.pop("views")  # (B,)
        logits = model({k: v for k, v in batch.items() if k != "label"})  # (ΣV, C)
        out.append(per_clip_mean(logits, views))  # (B, C)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
