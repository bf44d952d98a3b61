"""Cross-modal self-supervised pretraining of the temporal encoders, without labels: the epochs, the held-out
retrieval and synchrony checks, the saved encoders. The objectives themselves (XDC, InfoNCE, ProtoNCE, sync,
mask, order) and why each is built as it is: :mod:`cmmvt.selfsup.objectives`.

Clips missing a modality are left out of every cross-modal loss, never zero-filled.

**Data-parallel under torchrun.** ``pretrain.batch_size`` is the global batch; each rank steps with its part
(:class:`~cmmvt.train.sampler.GlobalBatches`) and ``DistributedDataParallel`` averages the ranks' gradients of
:class:`Objectives`, whose one ``forward`` calls the model through ``embed``, ``represent`` and the heads. InfoNCE
takes its negatives from the whole global batch (:func:`cmmvt.distributed.cat_ranks`), so N ranks optimise the
loss of one process; the per-clip objectives (xdc, protonce, sync) average within each rank's part, weighted by its
size, which equals the global mean when every clip has both modalities; sync's shifts are drawn per rank.
Prototypes, re-clustering and retrieval embed the clips split over the ranks and gathered. Rank 0 writes.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from cmmvt import distributed
from cmmvt.config import Params
from cmmvt.data import manifest as manifest_mod
from cmmvt.distributed import World
from cmmvt.features.cache import CacheReader
from cmmvt.io import atomic_path
from cmmvt.models import Classifier, build_model
from cmmvt.runtime import live_logger, seed_everything, steps
from cmmvt.train.dataset import ClipDataset, collate_views, per_clip_mean, splits
from cmmvt.train.sampler import GlobalBatches
from cmmvt.selfsup import losses
from cmmvt.selfsup.objectives import MODALITIES, OTHER, Objectives, PretrainHeads, sync_pairs
from cmmvt.selfsup import prototypes as protos

@dataclass
class PretrainResult:
    """What :func:`pretrain` did."""

    objective: str
    epochs: int
    final_loss: float
    clips: int
    metrics: dict[str, float] = field(default_factory=dict)  #: on the held-out test clips (retrieval, sync)


SYNC_CHANCE_MARGIN = 0.1  #: sync accuracy below 0.5 + this on held-out clips: nothing learned from timing


def describe(r: PretrainResult) -> str:
    """One line for the stage and the CLI (and a warning where synchrony was not learned)."""
    if r.epochs == 0:
        return f"pretrain: objective {r.objective!r}, no pretraining ({r.clips} clips; encoders saved untrained)"
    out = f"pretrain {r.objective}: {r.epochs} epochs on {r.clips} clips, final loss {r.final_loss:.4f}"
    acc = r.metrics.get("sync/accuracy")
    if acc is not None and acc < 0.5 + SYNC_CHANCE_MARGIN:
        out += (f"\nwarning: in-sync and shifted audio are told apart on {acc:.2f} of the held-out clips (chance "
                "0.50): these clips carry little audio-visual timing to learn from, and an encoder pretrained on "
                "nothing it can learn fine-tunes poorly (reports/RESULTS.md, 'Cross-modal pretraining with few "
                "labels')")
    return out


def _model(p: Params, dims: dict[str, int]) -> Classifier:
    """The classifier with both modalities (its head, 1 class, is never trained here)."""
    return build_model(p.model.model_copy(update={"modalities": "av"}), dims, num_classes=1)


def embed_all(model: Classifier, heads: PretrainHeads, ds: ClipDataset, batch_size: int = 64, world: World = World()
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Encoder embeddings, projected embeddings and 'has both modalities' for every clip of ``ds``.

    The ranks of a group each embed every ``size``-th clip and gather (:func:`cmmvt.distributed.shared_rows`).

    Returns:
        ``({m: (N, H)}, {m: (N, H)}, valid (N,) bool)``, on every rank.
    """

    def rows(idx: list[int]) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray], bool]]:
        z, g, valid = _embed(model, heads, Subset(ds, idx), batch_size)
        return [({m: z[m][i] for m in MODALITIES}, {m: g[m][i] for m in MODALITIES}, valid[i]) for i in range(len(idx))]

    out = distributed.shared_rows(world, rows, len(ds))
    stack = lambda k: {m: np.stack([r[k][m] for r in out]) for m in MODALITIES}  # noqa: E731
    return stack(0), stack(1), np.array([r[2] for r in out], bool)


@torch.inference_mode()
def _embed(model: Classifier, heads: PretrainHeads, ds: ClipDataset | Subset, batch_size: int
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """:func:`embed_all` in this process."""
    model.eval()
    heads.eval()
    z: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITIES}
    g: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITIES}
    valid = []
    for batch in DataLoader(ds, batch_size=batch_size, collate_fn=collate_views):
        views = batch.pop("views")  # (B,): whole clips up to model.max_frames, else views averaged
        flat = {k: v for k, v in batch.items() if k != "label"}  # (ΣV, T, D)
        emb = model.embed(flat)
        for m in MODALITIES:
            z[m].append(per_clip_mean(emb[m], views))
            g[m].append(per_clip_mean(heads.proj[m](emb[m]), views))
        present = flat["video_mask"].any(1) & flat["audio_mask"].any(1)  # (ΣV,)
        valid.append(per_clip_mean(present.float(), views) > 0)
    cat = lambda d: {m: torch.cat(v).numpy() for m, v in d.items()}  # noqa: E731
    return cat(z), cat(g), torch.cat(valid).numpy()


def retrieval_recall(query: np.ndarray, gallery: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Cross-modal retrieval: recall@k of the paired row of ``gallery`` for each row of ``query`` (cosine)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True).clip(1e-12)
    sim = q @ g.T  # (N, N)
    rank = (sim > np.diag(sim)[:, None]).sum(1)  # rows scoring above the true pair
    return {f"recall@{k}": float((rank < k).mean()) for k in ks}


def _weights(p: Params) -> dict[str, float]:
    if p.pretrain.objective == "combined":
        return p.pretrain.weights.model_dump()
    return {p.pretrain.objective: 1.0}


def _cluster(emb: dict[str, np.ndarray], present: np.ndarray, k: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """k-means pseudo-labels of each modality's embeddings (-1 for clips lacking both modalities)."""
    out = {}
    for m in MODALITIES:
        labels = np.full(len(present), -1, np.int64)
        _, assign, _ = protos.kmeans(emb[m][present].astype(np.float32), k[m], seed=seed)
        labels[present] = assign
        out[m] = labels
    return out


def stage(p: Params, world: World | None = None) -> PretrainResult:
    """The ``pretrain`` stage, for ``stages/pretrain.py`` and ``cmmvt pretrain`` alike: encoders at
    ``paths.pretrained`` from the prototypes at ``paths.prototypes``, the DVCLive curve and metrics under
    ``<paths.reports>/pretrain``, one summary line printed (rank 0 of several).

    Returns:
        What :func:`pretrain` did, on every rank.
    """
    world = world or distributed.from_env()
    r = pretrain(p, p.paths.pretrained, p.paths.prototypes, live_dir=f"{p.paths.reports}/pretrain", world=world)
    if world.lead:
        print(describe(r), file=sys.stderr, flush=True)
    return r


def pretrain(p: Params, out: str | Path | None = None, prototypes_path: str | Path | None = None,
             live_dir: str | Path | None = None, features: str | Path | None = None,
             world: World | None = None) -> PretrainResult:
    """Pretrain the encoders on the clips of ``pretrain.splits`` (labels unused) and save them to ``out``.

    The test split is held out by default: an encoder that learns to predict (or match) the other modality of
    the very clips it is tested on memorises it, which leaks that modality into single-modality models (a
    video-only classifier reached 0.83 top-1 on the synthetic set, whose video-only ceiling is 0.50, when
    the test clips were pretrained on). Retrieval recall is measured on the test clips, unseen.

    Args:
        p: Params (``pretrain.*``, ``model.*``, ``prototypes.*``, ``data.manifest``, ``extract.out``, ``seed``).
        out: Checkpoint path (default ``paths.pretrained``; written even for ``objective: none``, with untrained
            encoders, so the pipeline has one shape).
        prototypes_path: k-means prototypes from the ``prototypes`` stage (default ``paths.prototypes``).
        live_dir: DVCLive folder for the loss curve and ``metrics.json`` (test-split retrieval recall); None: none.
        features: Features root (default ``p.extract.out``).
        world: This process among the ranks (default: torchrun's environment, else one process); every rank
            returns once rank 0 has saved the encoders.
    """
    world = world or distributed.from_env()
    with distributed.joined(world), distributed.sigterm_as_exit():
        distributed.share_cores(world)
        result = _pretrain(p, out or p.paths.pretrained, prototypes_path or p.paths.prototypes, live_dir,
                           Path(features or p.extract.out), world)
        distributed.barrier(world)  # rank 0's checkpoint is written
    return result


def _pretrain(p: Params, out: str | Path, prototypes_path: str | Path, live_dir: str | Path | None, features: Path,
              world: World) -> PretrainResult:
    seed_everything(p.seed)
    df = manifest_mod.read(p.data.manifest)
    sp, _ = splits(df, features, MODALITIES, multilabel=True)  # ids only: no label is read
    ids = [i for s in p.pretrain.splits for i in sp[s].ids]  # no labels are used
    if not ids:
        raise ValueError(f"pretrain.splits = {p.pretrain.splits}: no clips with both caches in those splits")
    ds = ClipDataset(features, ids, list(range(len(ids))), MODALITIES, p.model.crop_frames, train=True, seed=p.seed)
    eval_ds = ClipDataset(features, ids, list(range(len(ids))), MODALITIES, p.model.max_frames)
    k = {"video": p.prototypes.k_video, "audio": p.prototypes.k_audio}
    weights = {} if p.pretrain.objective == "none" else _weights(p)
    pro = protos.read(prototypes_path) if weights.get("xdc") or weights.get("protonce") or weights.get("mask") else {}
    if weights.get("mask") and any(pro[m].row_centroids is None for m in MODALITIES):
        raise ValueError(f"{prototypes_path} has no row clusters, which pretrain.objective 'mask' predicts (written by "
                         "an older cmmvt): rerun the prototypes stage (`dvc repro prototypes`)")
    k_rows = {m: len(pro[m].row_centroids) if weights.get("mask") else 1 for m in MODALITIES}  # 1: an unused head
    model = _model(p, ds.dims)
    heads = PretrainHeads(p.model.hidden, model.head_in, k, k_rows, ds.dims, p.model.crop_frames)
    with CacheReader(features, "video") as r:
        shift = max(1, math.ceil(p.pretrain.sync_shift * float(r.attrs["fps"]) - 1e-9))  # rows
    shifts = torch.Generator().manual_seed(p.seed + world.rank)  # each rank its own (sync shifts, mask spans)
    if weights.get("sync") and 3 * shift > p.model.crop_frames:  # sync_pairs needs windows of ≥ shift rows
        raise ValueError(f"pretrain.sync_shift = {p.pretrain.sync_shift} s is {shift} rows: the sync objective needs "
                         f"crops of at least {3 * shift} rows, model.crop_frames = {p.model.crop_frames}")
    labels: dict[str, np.ndarray] = {}
    if weights.get("xdc") or weights.get("protonce"):
        labels = {m: pro[m].labels_for(ids) for m in MODALITIES}
    objectives = Objectives(model, heads, weights, p.pretrain, pro, shift, world)
    # every rank builds the same model and heads; the wrapper averages their gradients in the backward pass (static
    # graph: the heads of objectives left out stay without gradients, as in one process)
    net = DistributedDataParallel(objectives, static_graph=True) if world.group else objectives
    params = list(objectives.parameters())
    torch.manual_seed(p.seed + world.rank)  # dropout: each rank draws its own masks (the model is the same on all)
    opt = torch.optim.AdamW(params, lr=p.pretrain.lr, weight_decay=p.pretrain.weight_decay)
    live = live_logger(live_dir) if world.lead else None
    loss_value, epochs = float("nan"), p.pretrain.epochs if weights else 0
    batches = GlobalBatches(len(ds), p.pretrain.batch_size, world, p.seed, drop_last=len(ds) > p.pretrain.batch_size,
                            key="pretrain.batch_size")
    for epoch in steps("pretrain", epochs, show=world.lead):
        prototypes_now: dict[str, torch.Tensor] = {}
        if weights.get("protonce") or (p.pretrain.recluster_every and epoch and epoch % p.pretrain.recluster_every == 0):
            z, g, present = embed_all(model, heads, eval_ds, world=world)
            if p.pretrain.recluster_every and epoch and epoch % p.pretrain.recluster_every == 0:
                labels = _cluster(z, present, k, p.seed + epoch)
            if weights.get("protonce"):
                for m in MODALITIES:  # prototypes of modality m in the projected space
                    keep = labels[m] >= 0
                    c, _ = losses.cluster_centroids(torch.from_numpy(g[m][keep]), torch.from_numpy(labels[m][keep]), k[m])
                    prototypes_now[m] = c
        model.train()
        heads.train()
        total = []
        for share, batch in batches.batches(ds, epoch):
            idx = batch.pop("label").numpy()
            targets = {m: torch.from_numpy(labels[OTHER[m]][idx]) if labels else None for m in MODALITIES}
            loss = net(batch, share.clips, targets, prototypes_now, shifts) * share.weight  # this rank's part of
            opt.zero_grad(set_to_none=True)  # the global batch's mean; DDP averages the ranks' gradients
            if loss.requires_grad:  # (not when every weight of `combined` is 0)
                loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            total.append(loss.item())
        loss_value = float(np.mean(np.sum(distributed.all_gather(world, total), axis=0))) / world.size
        if live is not None:
            live.log_metric("pretrain/loss", loss_value)
            live.next_step()
    metrics = _retrieval(model, heads, features, sp["test"].ids, p, world)
    if weights.get("sync"):
        metrics |= _sync_accuracy(model, heads, features, sp["test"].ids, p, shift)
    if live is not None:
        for name, value in metrics.items():
            live.summary[name] = value
        live.end()
        if not epochs:  # no pretraining: an empty loss curve, so `dvc plots show` has a file to read, not an error
            curve = Path(live_dir) / "plots" / "metrics" / "pretrain" / "loss.tsv"
            curve.parent.mkdir(parents=True, exist_ok=True)
            curve.write_text("step\tloss\n")
    if world.lead:
        save(out, model, heads, p, ds.dims, metrics)
    return PretrainResult(p.pretrain.objective, epochs, loss_value, len(ids), metrics)


def _retrieval(model: Classifier, heads: PretrainHeads, features: Path, test_ids: list[str], p: Params,
               world: World) -> dict[str, float]:
    """Video→audio retrieval recall@1/5 among the test clips that have both modalities."""
    if not test_ids:
        return {}
    ds = ClipDataset(features, test_ids, list(range(len(test_ids))), MODALITIES, p.model.max_frames)
    _, g, present = embed_all(model, heads, ds, world=world)
    result = retrieval_recall(g["video"][present], g["audio"][present])
    return {"retrieval/" + k: v for k, v in result.items()} | {"retrieval/chance@1": 1.0 / max(1, int(present.sum()))}


@torch.inference_mode()
def _sync_accuracy(model: Classifier, heads: PretrainHeads, features: Path, test_ids: list[str], p: Params,
                   shift: int) -> dict[str, float]:
    """Share of held-out clips whose in-sync window scores above its shifted-audio copy (chance 0.5).

    Every rank computes it alike (seeded crops and shifts)."""
    if not test_ids:
        return {}
    model.eval()
    heads.eval()
    ds = ClipDataset(features, test_ids, list(range(len(test_ids))), MODALITIES, p.model.crop_frames, train=True,
                     seed=p.seed)
    draws = torch.Generator().manual_seed(p.seed)
    right = []
    for batch in DataLoader(ds, batch_size=64):
        batch.pop("label")
        in_sync, shifted, room = sync_pairs(batch, shift, draws)
        both = {key: torch.cat([in_sync[key], shifted[key]]) for key in in_sync}
        pos, neg = heads.sync(model.represent(both))[:, 0].chunk(2)  # (B,), (B,)
        keep = room & batch["video_mask"].any(1) & batch["audio_mask"].any(1)
        right.append((pos > neg)[keep])
    right = torch.cat(right)
    return {"sync/accuracy": float(right.float().mean())} if len(right) else {}


def save(path: str | Path, model: Classifier, heads: PretrainHeads, p: Params, dims: dict[str, int],
         metrics: dict[str, float]) -> None:
    """Save the pretrained encoders (the classifier head is not part of pretraining)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    with atomic_path(path) as tmp:  # a run stopped while saving leaves the previous file
        torch.save({"state_dict": state, "heads": heads.state_dict(), "params": p.model_dump(), "dims": dims,
                    "objective": p.pretrain.objective, "metrics": metrics}, tmp)


