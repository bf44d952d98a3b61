"""Checkpoints: the classifier's (weights + everything needed to rebuild and use it) and loading pretrained encoders.

Everything is saved as tensors and plain types and loaded with ``torch.load(weights_only=True)``: no pickled
code is ever executed, so a checkpoint from anywhere is safe to load. A checkpoint is replaced atomically: a
run stopped while saving (torchrun stopping rank 0 because another rank failed) leaves the previous one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cmmvt.config import Params
from cmmvt.features.cache import CacheReader
from cmmvt.io import atomic_path
from cmmvt.models import Classifier, build_model

CHECKPOINT_VERSION = 1


def feature_params(features: str | Path, modalities: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The feature params of each cache (backbone, fps, audio windows…), stored in checkpoints for ``predict``."""
    out = {}
    for m in modalities:
        with CacheReader(features, m) as r:
            out[m] = {k: v for k, v in r.attrs.items() if k != "versions"}
    return out


def save_checkpoint(path: str | Path, model: Classifier, p: Params, names: list[str], dims: dict[str, int],
                    features: dict[str, dict[str, Any]], thresholds: list[float] | None = None) -> None:
    """Save weights + everything needed to rebuild and use the model (only tensors and plain types); a multi-label
    model keeps its decision thresholds (one per class, chosen on val)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    extra = {} if thresholds is None else {"thresholds": thresholds}
    with atomic_path(path) as tmp:
        torch.save({"version": CHECKPOINT_VERSION, "state_dict": model.state_dict(), "params": p.model_dump(),
                    "labels": names, "dims": dims, "features": features, **extra}, tmp)


def load_checkpoint(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a classifier from a checkpoint (``weights_only=True``: safe to load untrusted files).

    Returns:
        The model in eval mode and the checkpoint dict (``params``, ``labels``, ``dims``, ``features``).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    p = Params.model_validate(ckpt["params"])
    model = build_model(p.model, ckpt["dims"], len(ckpt["labels"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def load_into(model: Classifier, path: str | Path) -> list[str]:
    """Copy pretrained encoder weights into ``model`` (every tensor whose name and shape match, head excluded).

    Returns:
        The names of the loaded tensors.

    Raises:
        ValueError: Nothing of the checkpoint fits ``model`` (e.g. an early-fusion checkpoint into a
            single-modality model).
    """
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    fit = {k: v for k, v in ckpt["state_dict"].items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("encoders.") for k in fit):
        raise ValueError(f"{path}: no encoder weights fit this model (pretrained with model.fusion/"
                         f"modalities other than the classifier's?)")
    model.load_state_dict(fit, strict=False)
    return sorted(fit)
