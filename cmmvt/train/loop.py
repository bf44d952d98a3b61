"""Supervised training of the temporal classifier on cached features.

AdamW (Loshchilov & Hutter 2019) with linear warmup and cosine decay, label smoothing (Szegedy et al.
2016), gradient-norm clipping and early stopping on validation top-1. The best checkpoint is saved
with its resolved params, label names and the feature params of the caches it was trained on, and is
loaded back with ``torch.load(weights_only=True)``: no pickled code is ever executed.

Example (needs clips or caches on disk, so not run as a doctest)::

    from cmmvt import config
    from cmmvt.train import loop
    result = loop.train(config.load(), "models/classifier.pt")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from cmmvt.checkpoints import feature_params, load_into, save_checkpoint
from cmmvt.config import Params
from cmmvt.data import manifest as manifest_mod
from cmmvt.eval.inference import eval_frames, predict
from cmmvt.models import MODALITIES, Classifier, build_model
from cmmvt.runtime import live_logger, seed_everything, steps, warmup_cosine
from cmmvt.train.dataset import ClipDataset, Split, per_class_subset, splits


def _loader(ds: ClipDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


@dataclass
class TrainResult:
    """What :func:`train` did."""

    best_epoch: int
    best_val_top1: float
    epochs_run: int
    train_clips: int


def _datasets(p: Params, features: str | Path, df: pd.DataFrame) -> tuple[dict[str, Split], list[str]]:
    sp, names = splits(df, features, MODALITIES[p.model.modalities])
    sp["train"] = per_class_subset(sp["train"], p.train.labels_per_class, p.seed)
    if not sp["train"].ids:
        raise ValueError(f"no training clips: check {p.data.manifest} and the caches under {features}")
    return sp, names


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
               loss_fn: nn.Module, grad_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a labelled batch (gradient-norm clipping at ``grad_clip``).

    Returns:
        The loss and the (B, C) logits.
    """
    logits = model(batch)  # (B, C)
    loss = loss_fn(logits, batch["label"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss, logits


def uses_pretrained(p: Params) -> bool:
    """Whether ``train`` starts from the pretrained encoders (``train.init``; ``auto``: when pretraining ran)."""
    if p.train.init == "auto":
        return p.pretrain.objective != "none"
    return p.train.init == "pretrained"


def _init(model: Classifier, p: Params, pretrained: str | Path | None) -> None:
    """Load pretrained encoders per ``train.init``; freeze everything but the head for a linear probe."""
    if uses_pretrained(p):
        if p.pretrain.objective == "none" and p.train.init == "pretrained":
            raise ValueError("train.init = 'pretrained' but pretrain.objective = 'none': nothing was pretrained")
        if pretrained is None or not Path(pretrained).is_file():
            raise FileNotFoundError(f"train.init needs the pretrained encoders: {pretrained} (run `dvc repro pretrain`)")
        load_into(model, pretrained)
    if p.train.freeze_encoder:
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("head."))


def train(p: Params, out: str | Path | None = None, live_dir: str | Path | None = None,
          features: str | Path | None = None, pretrained: str | Path | None = None) -> TrainResult:
    """Train the classifier described by ``p`` and save the best checkpoint to ``out``.

    Args:
        p: All params (``model``, ``train``, ``data.manifest``, ``extract.out``, ``seed``).
        out: Checkpoint path (default ``paths.classifier``).
        live_dir: DVCLive folder for loss/accuracy curves (None: no logging).
        features: Features root (default ``p.extract.out``).
        pretrained: Encoders from the ``pretrain`` stage, used per ``train.init`` (default ``paths.pretrained``).

    Returns:
        Best epoch and validation top-1.
    """
    seed_everything(p.seed)
    out, pretrained = out or p.paths.classifier, pretrained or p.paths.pretrained
    features = Path(features or p.extract.out)
    mods = MODALITIES[p.model.modalities]
    sp, names = _datasets(p, features, manifest_mod.read(p.data.manifest))
    train_ds = ClipDataset(features, sp["train"].ids, sp["train"].labels, mods, p.model.crop_frames, train=True)
    val_split = sp["val"] if sp["val"].ids else sp["train"]
    val_ds = ClipDataset(features, val_split.ids, val_split.labels, mods, eval_frames(p), views=p.evaluate.views)
    model = build_model(p.model, train_ds.dims, len(names))
    _init(model, p, pretrained)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=p.train.lr, weight_decay=p.train.weight_decay)
    loader = _loader(train_ds, p.train.batch_size, shuffle=True, seed=p.seed)
    sched = warmup_cosine(opt, p.train.warmup_epochs * len(loader), p.train.epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=p.train.label_smoothing)
    live = live_logger(live_dir)
    provenance = feature_params(features, mods)
    best = (-1.0, -1)
    epoch = 0
    for epoch in steps("train", p.train.epochs):
        model.train()
        losses, correct = [], 0
        for batch in loader:
            loss, logits = train_step(model, batch, opt, loss_fn, p.train.grad_clip)
            sched.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == batch["label"]).sum())
        val_logits = predict(model, val_ds)
        val_top1 = float((val_logits.argmax(1) == np.asarray(val_split.labels)).mean())
        if live is not None:
            live.log_metric("train/loss", float(np.mean(losses)))
            live.log_metric("train/top1", correct / len(train_ds))
            live.log_metric("val/top1", val_top1)
            live.log_metric("lr", sched.get_last_lr()[0])
            live.next_step()
        if val_top1 > best[0]:
            best = (val_top1, epoch)
            save_checkpoint(out, model, p, names, train_ds.dims, provenance)
        elif epoch - best[1] >= p.train.patience:
            break
    if live is not None:
        live.end()
    return TrainResult(best_epoch=best[1], best_val_top1=best[0], epochs_run=epoch + 1, train_clips=len(train_ds))


