"""Supervised training of the temporal classifier on cached features, in one process or data-parallel.

AdamW (Loshchilov & Hutter 2019) with linear warmup and cosine decay, label smoothing (Szegedy et al.
2016), gradient-norm clipping, at least ``train.min_steps`` optimiser steps, and the checkpoint of the best
validation top-1 (early stopping) or the last one (``train.select``). The checkpoint is saved with its resolved
params, label names and the feature params of the caches it was trained on, and is loaded back with
``torch.load(weights_only=True)``: no pickled code is ever executed.

Transfer from pretrained encoders (``train.transfer``, :func:`schedule`): ``finetune`` trains every weight (the
encoders at ``train.encoder_lr`` times the head's rate), ``probe`` the head alone on frozen encoders, ``lp_ft``
the head alone first and then everything (LP-FT, Kumar et al. 2022: a random head fine-tuned with the encoder
distorts the features it reads). With ``train.labels_per_class`` validation keeps as many labels per class as
training (never more), drawn by ``train.label_draw``; the summary says when nearest-centroid on the frozen
clip-mean features does better on them (:mod:`cmmvt.eval.baselines`).

Under torchrun the processes train one model with ``DistributedDataParallel`` (Li et al. 2020, "PyTorch
Distributed: Experiences on Accelerating Data Parallel Training"). ``train.batch_size`` stays the global
batch: each rank steps with its part of the same batches a single process would take
(:class:`~cmmvt.train.sampler.GlobalBatches`), crops a clip as that process would, and its gradients are
averaged into the gradient of the global batch's mean loss, so the weights after each step are those of one
process up to float rounding (with ``model.dropout: 0``; dropout masks are drawn per rank). Validation is
split over the ranks and gathered, so all of them take the same early-stopping decisions; only rank 0
writes the checkpoint and the DVCLive logs.

The ``train`` stage (:func:`stage`) is one call for ``stages/train.py`` and ``cmmvt train`` alike.

Example (needs clips or caches on disk, so not run as a doctest)::

    from cmmvt import config
    from cmmvt.train import loop
    result = loop.stage(config.load())  # models/classifier.pt, its params, reports/train
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cmmvt import config, distributed
from cmmvt.checkpoints import feature_params, load_into, save_checkpoint
from cmmvt.config import Params, TrainParams
from cmmvt.data import manifest as manifest_mod
from cmmvt.distributed import World
from cmmvt.eval import baselines
from cmmvt.eval.inference import eval_frames, predict
from cmmvt.models import MODALITIES, Classifier, build_model
from cmmvt.runtime import live_logger, seed_everything, steps, warmup_cosine
from cmmvt.train.dataset import ClipDataset, Split, per_class_subset, splits
from cmmvt.train import objective
from cmmvt.train.sampler import GlobalBatches


@dataclass
class TrainResult:
    """What :func:`train` did."""

    best_epoch: int  #: the epoch of the checkpoint kept (``train.select``)
    best_val_top1: float  #: its validation score: top-1, or mAP for several labels per clip (``metric``)
    epochs_run: int
    train_clips: int
    steps: int  #: optimiser steps taken (global batches)
    step_seconds: float  #: time in those steps on this rank (validation excluded)
    baseline_val_top1: float | None = None  #: nearest-centroid on the same clips' frozen clip-mean features
    kept: str = "best"  #: which checkpoint was kept (:func:`selection`): ``best`` or ``last``
    metric: str = "top1"  #: the validation score's name (:data:`cmmvt.train.objective.SCORE`)

    def line(self) -> str:
        """One line for the stage and the CLI (and a second where a simpler classifier does better on val)."""
        shown = {"top1": "top-1"}.get(self.metric, self.metric)
        out = (f"{self.kept} val {shown} {self.best_val_top1:.3f} at epoch {self.best_epoch} ({self.epochs_run} epochs "
               f"run, {self.steps} steps at {self.steps / max(self.step_seconds, 1e-9):.3g} steps/s)")
        if self.baseline_val_top1 is not None and self.baseline_val_top1 > self.best_val_top1:
            out += (f"\nnote: nearest-centroid on the frozen clip-mean features scores {self.baseline_val_top1:.3f} on "
                    f"the same val clips, more than this model: with {self.train_clips} training clips a simpler "
                    "classifier wins here (benchmarks/lowlabel.py compares them)")
        return out


def _datasets(p: Params, features: str | Path, df: pd.DataFrame) -> tuple[dict[str, Split], list[str]]:
    """The splits, with ``train.labels_per_class`` clips per class drawn from train and as many from val.

    Validation never has more labels per class than training: a user with one label per class has no larger
    set to choose a checkpoint on. Both draws follow ``train.label_draw`` (not ``seed``), so runs that differ
    in method or seed see the same labelled clips.
    """
    sp, names = splits(df, features, MODALITIES[p.model.modalities], multilabel=p.train.task == "multilabel")
    sp["train_all"] = sp["train"]
    sp["train"] = per_class_subset(sp["train"], p.train.labels_per_class, p.train.label_draw)
    sp["val"] = per_class_subset(sp["val"], p.train.labels_per_class, p.train.label_draw, stream=1)
    if not sp["train"].ids:
        raise ValueError(f"no training clips: check {p.data.manifest} and the caches under {features}")
    return sp, names


def schedule(t: TrainParams, per_epoch: int) -> tuple[list[tuple[str, int]], int, int]:
    """The phases of training and how long it runs, from ``train.*`` and the global batches per epoch.

    Fine-tuning takes ``max(train.epochs · per_epoch, train.min_steps)`` optimiser steps (few labels make short
    epochs: one label per class is one step per epoch); ``lp_ft`` first trains the head alone for
    ``train.lp_steps`` (LP-FT, Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
    Out-of-Distribution"); ``probe`` trains the head alone for as long as fine-tuning would. Early stopping's
    patience grows with the epochs.

    Returns:
        ``([(part, steps), ...], epochs, patience)`` with part ``head`` (the encoders frozen, in eval mode) or
        ``all``.

    Example:
        >>> from cmmvt.config import TrainParams
        >>> schedule(TrainParams(transfer="lp_ft", labels_per_class=1), per_epoch=1)
        ([('head', 100), ('all', 200)], 300, 113)
        >>> schedule(TrainParams(), per_epoch=9)
        ([('all', 360)], 40, 15)
    """
    tune = max(t.epochs * per_epoch, t.min_steps)
    phases = {"finetune": [("all", tune)], "probe": [("head", tune)],
              "lp_ft": [("head", t.lp_steps), ("all", tune)]}[t.transfer]
    epochs = math.ceil(sum(n for _, n in phases) / per_epoch)
    return phases, epochs, math.ceil(t.patience * epochs / t.epochs)


def selection(t: TrainParams) -> str:
    """Which checkpoint is kept: ``train.select``, where ``auto`` is ``last`` with ``train.labels_per_class`` and
    ``best`` otherwise.

    With few labels validation holds as few per class as training (:func:`_datasets`), and the best of a few
    hundred readings of ten clips picks noise: on both low-label sets the last checkpoint of the fixed schedule
    scored higher on the full val split at 1 and 5 labels per class (``reports/bench/lowlabel-pilot-*``).
    """
    if t.select != "auto":
        return t.select
    return "last" if t.labels_per_class is not None else "best"


def _optimiser(model: Classifier, t: TrainParams, part: str, steps: int, warmup: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the head (``part`` head) or every trainable weight, the encoders at ``train.encoder_lr`` × lr;
    warmup then cosine decay over the part's ``steps``."""
    trainable = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    groups = [{"params": [q for n, q in trainable if n.startswith("head.")], "lr": t.lr}]
    rest = [q for n, q in trainable if not n.startswith("head.")]
    if part == "all" and rest:
        groups.append({"params": rest, "lr": t.lr * t.encoder_lr})
    opt = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    return opt, warmup_cosine(opt, min(warmup, steps // 2), steps)


def _mode(model: Classifier, part: str) -> None:
    """Train mode for what the part trains; a frozen encoder gives its eval-mode features (no dropout)."""
    model.train(part == "all")
    model.head.train()


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
               loss_fn: nn.Module, grad_clip: float, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a labelled batch (gradient-norm clipping at ``grad_clip`` over the optimiser's
    weights).

    Args:
        model: The model, or its ``DistributedDataParallel`` wrapper (which averages the ranks' gradients).
        weight: The factor of the mean loss in the backward pass: this rank's
            :attr:`~cmmvt.train.sampler.Share.weight` (1 for one process).

    Returns:
        The (unweighted) mean loss and the (B, C) logits.
    """
    logits = model(batch)  # (B, C)
    loss = loss_fn(logits, batch["label"])
    model.zero_grad(set_to_none=True)
    (loss * weight).backward()
    nn.utils.clip_grad_norm_([q for g in opt.param_groups for q in g["params"]], grad_clip)
    opt.step()
    return loss, logits


def uses_pretrained(p: Params) -> bool:
    """Whether ``train`` starts from the pretrained encoders (``train.init``; ``auto``: when pretraining ran)."""
    if p.train.init == "auto":
        return p.pretrain.objective != "none"
    return p.train.init == "pretrained"


def _init(model: Classifier, p: Params, pretrained: str | Path | None) -> None:
    """Load pretrained encoders per ``train.init``; freeze everything but the head for ``train.transfer: probe``."""
    if uses_pretrained(p):
        if p.pretrain.objective == "none" and p.train.init == "pretrained":
            raise ValueError("train.init = 'pretrained' but pretrain.objective = 'none': nothing was pretrained")
        if pretrained is None or not Path(pretrained).is_file():
            raise FileNotFoundError(
                f"train.init = {p.train.init!r} with pretrain.objective = {p.pretrain.objective!r} needs the pretrained "
                f"encoders: {pretrained} is missing (run `dvc repro pretrain` or `cmmvt pretrain` first, or train from "
                "scratch with -S train.init=scratch)")
        load_into(model, pretrained)
    if p.train.transfer == "probe":
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("head."))


def nearest_centroid_val(features: str | Path, sp: dict[str, Split], modalities: tuple[str, ...]) -> float:
    """Val top-1 of nearest-centroid on frozen clip-mean features (:mod:`cmmvt.eval.baselines`), trained on the
    same labelled clips, centred on the training split's clips."""
    means = {s: baselines.clip_means(features, sp[s].ids, modalities) for s in ("train", "val", "train_all")}
    x = {s: baselines.cl2n(means[s], means["train_all"]) for s in ("train", "val")}
    pred = baselines.nearest_centroid(x["train"], np.asarray(sp["train"].labels), x["val"])
    return float((pred == np.asarray(sp["val"].labels)).mean())


def stage(p: Params, world: World | None = None) -> TrainResult:
    """The ``train`` stage, for ``stages/train.py`` and ``cmmvt train`` alike: the same files from the same params.

    Writes the checkpoint at ``paths.classifier``, the resolved params at ``paths.classifier_params``, the DVCLive
    curves and metrics under ``<paths.reports>/train``, and prints the summary line (rank 0 of several).

    Returns:
        What :func:`train` did, on every rank.
    """
    world = world or distributed.from_env()
    if world.lead:
        config.dump(p, p.paths.classifier_params)
    result = train(p, p.paths.classifier, live_dir=f"{p.paths.reports}/train", pretrained=p.paths.pretrained,
                   world=world)
    if world.lead:
        print(f"saved {p.paths.classifier}: {result.line()}, torch threads: {torch.get_num_threads()}",
              file=sys.stderr, flush=True)
    return result


def train(p: Params, out: str | Path | None = None, live_dir: str | Path | None = None,
          features: str | Path | None = None, pretrained: str | Path | None = None,
          world: World | None = None) -> TrainResult:
    """Train the classifier described by ``p`` and save the best checkpoint to ``out``.

    Every rank of a torchrun job calls this with the same arguments; it joins the job's process group
    (gloo) for the call, and returns on every rank once rank 0 has saved the checkpoint.

    Args:
        p: All params (``model``, ``train``, ``data.manifest``, ``extract.out``, ``seed``).
        out: Checkpoint path (default ``paths.classifier``).
        live_dir: DVCLive folder for loss/accuracy curves (None: no logging).
        features: Features root (default ``p.extract.out``).
        pretrained: Encoders from the ``pretrain`` stage, used per ``train.init`` (default ``paths.pretrained``).
        world: This process among the ranks (default: torchrun's environment, else one process).

    Returns:
        Best epoch and validation top-1, the same on every rank.
    """
    world = world or distributed.from_env()
    with distributed.joined(world), distributed.sigterm_as_exit():
        distributed.share_cores(world)
        result = _train(p, Path(out or p.paths.classifier), live_dir, Path(features or p.extract.out),
                        pretrained or p.paths.pretrained, world)
        distributed.barrier(world)  # rank 0's checkpoint is written
    return result


def _train(p: Params, out: Path, live_dir: str | Path | None, features: Path, pretrained: str | Path,
           world: World) -> TrainResult:
    seed_everything(p.seed)
    mods = MODALITIES[p.model.modalities]
    sp, names = _datasets(p, features, manifest_mod.read(p.data.manifest))
    train_ds = ClipDataset(features, sp["train"].ids, sp["train"].labels, mods, p.model.crop_frames, train=True,
                           seed=p.seed)
    val_split = sp["val"] if sp["val"].ids else sp["train"]
    val_ds = ClipDataset(features, val_split.ids, val_split.labels, mods, eval_frames(p), views=p.evaluate.views)
    batches = GlobalBatches(len(train_ds), p.train.batch_size, world, p.seed)
    phases, epochs, patience = schedule(p.train, len(batches))
    select = selection(p.train)
    model = build_model(p.model, train_ds.dims, len(names))
    _init(model, p, pretrained)
    # the same model on every rank; the wrapper averages gradients in the backward pass (static graph: the
    # encoders' unused token-embedding tables stay without gradients, as in one process)
    net = DistributedDataParallel(model, static_graph=True) if world.group else model
    torch.manual_seed(p.seed + world.rank)  # dropout: each rank draws its own masks
    loss_fn = objective.loss_fn(p.train, sp["train"].labels)
    task, metric = p.train.task, objective.SCORE[p.train.task]
    live = live_logger(live_dir) if world.lead else None
    provenance = feature_params(features, mods)
    best = (-1.0, -1)
    epoch, seconds, step = 0, 0.0, 0
    ends = np.cumsum([n for _, n in phases])  # the step at which each phase ends
    for epoch in steps("train", epochs, show=world.lead):
        part = phases[int(np.searchsorted(ends, step, side="right"))][0]
        _mode(model, part)
        loss_sum, correct, seen = 0.0, 0, 0  # over this rank's clips
        t0 = time.perf_counter()
        for share, batch in batches.batches(train_ds, epoch):
            if step in (0, *ends[:-1]):  # a phase starts: its own optimiser and schedule
                i = int(np.searchsorted(ends, step, side="right"))
                part = phases[i][0]
                opt, sched = _optimiser(model, p.train, part, phases[i][1], p.train.warmup_epochs * len(batches))
                _mode(model, part)
            loss, logits = train_step(net, batch, opt, loss_fn, p.train.grad_clip, share.weight)
            sched.step()
            step += 1
            loss_sum += loss.item() * share.clips
            correct += objective.hits(task, logits[: share.clips], batch["label"][: share.clips])
            seen += share.clips
            if step == ends[-1]:
                break
        seconds += time.perf_counter() - t0
        loss_sum, correct, seen = (sum(x) for x in zip(*distributed.all_gather(world, (loss_sum, correct, seen))))
        val_logits = predict(model, val_ds, world=world)  # (N_val, C), on every rank
        val_top1 = objective.score(task, val_logits, val_split.labels)  # top-1, or mAP for several labels
        if live is not None:
            live.log_metric("train/loss", loss_sum / seen)
            live.log_metric("train/top1" if task == "multiclass" else "train/exact_match", correct / seen)
            live.log_metric(f"val/{metric}", val_top1)
            live.log_metric("lr", sched.get_last_lr()[0])
            live.next_step()
        last = step == ends[-1]
        if (select == "best" and val_top1 > best[0]) or (select == "last" and last):
            best = (val_top1, epoch)
            if world.lead:
                save_checkpoint(out, model, p, names, train_ds.dims, provenance,
                                objective.thresholds(p.train, val_logits, val_split.labels))
        elif select == "best" and epoch - best[1] >= patience:
            break
        if last:
            break
    if live is not None:
        live.end()
    few = p.train.labels_per_class is not None and world.lead and task == "multiclass"  # a simpler one may win
    baseline = nearest_centroid_val(features, sp | {"val": val_split}, mods) if few else None
    return TrainResult(best_epoch=best[1], best_val_top1=best[0], epochs_run=epoch + 1, train_clips=len(train_ds),
                       steps=step, step_seconds=seconds, baseline_val_top1=baseline, kept=select, metric=metric)
