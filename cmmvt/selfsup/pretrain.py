"""Cross-modal self-supervised pretraining of the temporal encoders, without labels.

Each modality is the teacher of the other (the poster's contribution, after XDC, Alwassel et al. 2020):

* ``xdc``: the video encoder predicts its clip's *audio* k-means cluster and the audio encoder the
  *video* cluster (cross-entropy on cross-modal pseudo-labels); with ``pretrain.recluster_every`` the
  encoders' own outputs are re-clustered every N epochs (XDC's iterative form);
* ``infonce``: NT-Xent (Chen et al. 2020) between a clip's projected video and audio embeddings, the other
  2N−2 embeddings of the batch being negatives;
* ``protonce``: each clip's projected embedding is contrasted with the other modality's prototypes, the
  positive being its cross-modal cluster (after PCL, Li et al. 2021); prototypes are the per-cluster means
  of the other modality's projected embeddings, recomputed at the start of every epoch;
* ``sync``: audio-visual temporal synchronisation (AVTS, Korbar et al. 2018): the classifier's own clip
  representation (:meth:`~cmmvt.models.Classifier.represent`, the input of its head) of a clip with its
  audio in time, against the same clip with its audio shifted by at least ``pretrain.sync_shift`` seconds
  (hard negatives: same content, wrong timing), through a small binary head, plus VICReg's variance term
  (Bardes et al. 2022) on that representation: telling a clip from its own shifted copy is met as well by a
  representation that is the same for every clip, the collapse :func:`~cmmvt.selfsup.losses.variance_floor`
  prevents;
* ``mask``: masked audio-visual prediction (AV-HuBERT, Shi et al. 2022, with HuBERT's k-means targets, Hsu
  et al. 2021): in each clip, spans of one modality's rows (``pretrain.mask_span`` rows each, about
  ``pretrain.mask_ratio`` of its rows; the modality drawn per clip) are replaced at the input by a learned mask
  token (:meth:`~cmmvt.models.Classifier.tokens`), and the encoder's output at each hidden row predicts that
  row's cluster among the modality's k-means clusters of single rows (``prototypes.k_rows``,
  :meth:`~cmmvt.selfsup.prototypes.Prototypes.row_targets`). It trains the fused input that fine-tuning reads
  (early fusion: the other modality stays in place), and filling a span of a moving or sweeping pattern needs
  its direction from the rows around it and the other modality's timing at the same steps;
* ``order``: frame-order modelling (HERO, Li et al. 2020): in each crop, ``pretrain.order_ratio`` of the time
  steps (video and audio rows together) swap places among themselves, and the encoder's output at each of them
  predicts the place its content came from (:func:`shuffle_steps`). Telling where a moving disk or a sweeping
  chirp was needs their direction: the temporal order that a bag of frames cannot see;
* ``combined``: the weighted sum of the others (``pretrain.weights``).

**One graph for pretraining and fine-tuning.** The model pretrained is the classifier itself
(:class:`cmmvt.models.Classifier` built from ``model.*`` with both modalities), head excepted, so ``train``
loads every encoder tensor (``train.init``). The objectives reach it two ways, for late and early fusion
alike:

* the cross-modal targets (``xdc``, ``infonce``, ``protonce``) need one embedding per modality:
  :meth:`~cmmvt.models.Classifier.embed`, i.e. each modality's encoder (late), or the fused encoder run
  on the fused sequence with the other modality masked, as its ``missing`` token at every step (early;
  the masked-modality form of fused inputs, as in Shi et al. 2022, AV-HuBERT, modality dropout);
* ``sync`` trains :meth:`~cmmvt.models.Classifier.represent` on the very input fine-tuning feeds it:
  both modalities, fused per step (early) or concatenated (late) — the fused graph with nothing masked.

Synchrony needs what the other objectives cannot use: instance-level timing (the synthetic set's per-clip
events). Windows of ``W`` rows are taken from each training crop, video at one offset and the negative's
audio at another at least ``ceil(sync_shift · fps)`` rows away; both are contiguous stretches of the clip, so
audio alone never reveals the shift (no seam), only its timing against the video does.

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
from cmmvt.config import Params, PretrainParams
from cmmvt.data import manifest as manifest_mod
from cmmvt.distributed import World
from cmmvt.features.cache import CacheReader
from cmmvt.io import atomic_path
from cmmvt.models import Classifier, build_model
from cmmvt.runtime import live_logger, seed_everything, steps
from cmmvt.train.dataset import ClipDataset, collate_views, per_clip_mean, splits
from cmmvt.train.sampler import GlobalBatches
from cmmvt.selfsup import losses
from cmmvt.selfsup import prototypes as protos

MODALITIES = ("video", "audio")
OTHER = {"video": "audio", "audio": "video"}


class PretrainHeads(nn.Module):
    """Projection MLPs (contrastive losses), cross-modal cluster classifiers (XDC), and the learned input mask
    token and row-cluster classifier of masked prediction, per modality; the synchrony head on the classifier's
    representation (the input its own head reads)."""

    def __init__(self, hidden: int, head_in: int, k: dict[str, int], k_rows: dict[str, int], dims: dict[str, int],
                 places: int):
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
                                   for m in MODALITIES})
        # the video encoder predicts the audio cluster and vice versa
        self.xdc = nn.ModuleDict({m: nn.Linear(hidden, k[OTHER[m]]) for m in MODALITIES})
        self.sync = nn.Sequential(nn.LayerNorm(head_in), nn.Linear(head_in, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.mask = nn.ModuleDict({m: nn.Linear(hidden, k_rows[m]) for m in MODALITIES})
        self.mask_token = nn.ParameterDict({m: nn.Parameter(torch.zeros(dims[m])) for m in MODALITIES})  # (D_m,)
        self.order = nn.ModuleDict({m: nn.Linear(hidden, places) for m in MODALITIES})


class Objectives(nn.Module):
    """The pretraining loss of one batch part: every objective of ``weights`` through the model and the heads, in
    one ``forward`` (as dinov2's ``forward_backward``, Oquab et al. 2024), so that ``DistributedDataParallel`` can
    average the gradients of the several methods it calls (``embed``, ``represent``, ``tokens``, the heads).

    Args:
        model: The classifier whose encoders are pretrained.
        heads: The pretraining heads.
        weights: Each objective's weight (:func:`_weights`); objectives left out are not computed.
        pt: ``pretrain.*`` (temperature, mask and order ratios).
        pro: The k-means prototypes (row targets of ``mask``).
        shift: The smallest audio shift of ``sync``, in rows.
        world: The ranks (InfoNCE draws its negatives from the whole global batch).
    """

    def __init__(self, model: Classifier, heads: PretrainHeads, weights: dict[str, float], pt: PretrainParams,
                 pro: dict[str, protos.Prototypes], shift: int, world: World):
        super().__init__()
        self.model, self.heads = model, heads
        self.weights, self.pt, self.pro, self.shift, self.world = weights, pt, pro, shift, world

    def forward(self, batch: dict[str, torch.Tensor], clips: int, targets: dict[str, torch.Tensor | None],
                prototypes_now: dict[str, torch.Tensor], shifts: torch.Generator) -> torch.Tensor:
        """The weighted loss of ``batch`` (its first ``clips`` clips this rank's part; the rest a stand-in).

        Args:
            batch: Collated crops, ``{m: (B, T, D_m), m_mask: (B, T)}``.
            clips: How many clips of the batch are this rank's part (InfoNCE leaves a stand-in out).
            targets: Each modality's clips' cluster in the *other* modality, (B,) (XDC, ProtoNCE), or None.
            prototypes_now: Each modality's prototypes in the projected space, (K, H) (ProtoNCE).
            shifts: The rank's generator of sync shifts, mask spans and shuffled steps.
        """
        model, heads, weights, pt = self.model, self.heads, self.weights, self.pt
        valid = batch["video_mask"].any(1) & batch["audio_mask"].any(1)  # (B,)
        loss = torch.zeros(())
        if weights.get("xdc") or weights.get("infonce") or weights.get("protonce"):  # one embedding per modality
            emb = model.embed(batch)  # {m: (B, H)}
            proj = {m: heads.proj[m](emb[m]) for m in MODALITIES}
        if weights.get("infonce"):  # negatives from the global batch: every rank's part (a stand-in clip left out)
            z_v, z_a, pairs = (distributed.cat_ranks(self.world, x[:clips])
                               for x in (proj["video"], proj["audio"], valid.float()))
            loss = loss + weights["infonce"] * losses.nt_xent(z_v, z_a, pt.temperature, valid=pairs.bool())
        if weights.get("sync"):
            in_sync, shifted, room = sync_pairs(batch, self.shift, shifts)
            both = {key: torch.cat([in_sync[key], shifted[key]]) for key in in_sync}  # (2B, W, D), (2B, W)
            rep = model.represent(both)  # (2B, head_in)
            pos, neg = heads.sync(rep)[:, 0].chunk(2)  # (B,), (B,)
            keep = valid & room
            loss = loss + weights["sync"] * (losses.synchrony_bce(pos, neg, valid=keep)
                                             + losses.variance_floor(rep[: len(keep)][keep]))
        if weights.get("mask"):
            hide = mask_spans({m: batch[f"{m}_mask"] for m in MODALITIES}, pt.mask_ratio, pt.mask_span,
                              shifts)  # {m: (B, T)}
            rows = model.tokens(batch, {m: (hide[m], heads.mask_token[m]) for m in MODALITIES})  # {m: (B, T, H)}
            for m in MODALITIES:
                target = torch.from_numpy(self.pro[m].row_targets(batch[m].numpy()))  # (B, T) row clusters
                loss = loss + weights["mask"] * 0.5 * losses.row_ce(heads.mask[m](rows[m]), target, hide[m])
        if weights.get("order"):
            source, drawn = shuffle_steps({m: batch[f"{m}_mask"] for m in MODALITIES}, pt.order_ratio,
                                          shifts)  # (B, T), (B, T)
            rows = model.tokens(_gather_steps(batch, source))  # {m: (B, T, H)}
            for m in MODALITIES:
                loss = loss + weights["order"] * 0.5 * losses.row_ce(heads.order[m](rows[m]), source, drawn)
        for m in MODALITIES:
            if weights.get("xdc"):
                loss = loss + weights["xdc"] * 0.5 * losses.cross_modal_cluster_ce(heads.xdc[m](emb[m]), targets[m],
                                                                                 valid=valid)
            if weights.get("protonce"):
                loss = loss + weights["protonce"] * 0.5 * losses.prototype_nce(
                    proj[m], prototypes_now[OTHER[m]], targets[m], pt.temperature, valid=valid)
        return loss


def mask_spans(masks: dict[str, torch.Tensor], ratio: float, span: int, generator: torch.Generator
               ) -> dict[str, torch.Tensor]:
    """Rows to hide for masked audio-visual prediction: spans of one modality per clip.

    Each clip hides one modality, drawn with equal odds (the one it has, if it lacks the other); with ``L`` real
    rows of it, ``max(1, round(ratio · L / span))`` spans of ``span`` rows start uniformly in ``[0, L − span]``
    (spans may overlap, so about ``ratio`` of the rows are hidden, fewer where they do: wav2vec 2.0's
    sampling, Baevski et al. 2020). Padding is never hidden.

    Args:
        masks: ``{"video": (B, T) bool, "audio": (B, T) bool}``, True = real row.
        ratio: Share of the chosen modality's rows to hide.
        span: Rows per span.
        generator: Draws the modality and the spans.

    Returns:
        ``{"video": (B, T) bool, "audio": (B, T) bool}``, True = hidden; in each clip one of them is all False.
    """
    video, audio = masks["video"].bool(), masks["audio"].bool()  # (B, T)
    B, T = video.shape
    pick_video = ((torch.rand(B, generator=generator) < 0.5) & video.any(1)) | ~audio.any(1)  # (B,)
    real = torch.where(pick_video[:, None], video, audio)  # (B, T) rows of the chosen modality
    length = real.sum(1)  # (B,)
    n = (ratio * length / span).round().long().clamp(min=1)  # (B,) spans per clip
    most = max(1, math.ceil(ratio * T / span))
    room = (length - span + 1).clamp(min=1)  # (B,) possible starts
    starts = (torch.rand(B, most, generator=generator) * room[:, None]).long()  # (B, N)
    rows = torch.arange(T)[None, None]  # (1, 1, T)
    inside = (rows >= starts[..., None]) & (rows < starts[..., None] + span)  # (B, N, T)
    hidden = (inside & (torch.arange(most)[None, :, None] < n[:, None, None])).any(1) & real  # (B, T)
    return {"video": hidden & pick_video[:, None], "audio": hidden & ~pick_video[:, None]}


def sync_pairs(batch: dict[str, torch.Tensor], shift: int, generator: torch.Generator
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """In-sync and shifted-audio windows of a batch of training crops (AVTS hard negatives).

    Each crop's real rows (a prefix of length L) give windows of ``W = L − 2·shift`` rows: the video and the
    in-sync audio start at a random offset ``o ∈ [0, 2·shift]``, the negative's audio at an offset at least
    ``shift`` rows from ``o``. Every window is a contiguous stretch of the clip.

    Args:
        batch: ``video``/``audio`` (B, T, D) and their (B, T) masks (real rows first, as training crops are).
        shift: The least shift, in rows (≥ 1).
        generator: Draws the offsets.

    Returns:
        ``(in_sync, shifted, valid)``: two batches of (B, T, D) rows with (B, T) masks (rows past ``W`` padded),
        and (B,) bool: True where the clip has both modalities and at least ``shift`` rows per window.
    """
    video, audio = batch["video"], batch["audio"]  # (B, T, D)
    length = torch.minimum(batch["video_mask"].sum(1), batch["audio_mask"].sum(1))  # (B,)
    B, T, _ = video.shape
    width = (length - 2 * shift).clamp(min=0)  # (B,)
    valid = width >= shift
    start = torch.randint(0, 2 * shift + 1, (B,), generator=generator)  # (B,) in-sync offset
    offsets = torch.arange(2 * shift + 1)  # (K,)
    far = (offsets[None] - start[:, None]).abs() >= shift  # (B, K): never empty (0 or 2·shift qualifies)
    other = torch.multinomial(far.float(), 1, generator=generator)[:, 0]  # (B,) the negative's audio offset
    rows = torch.arange(T)[None]  # (1, T)
    mask = (rows < width[:, None]) & valid[:, None]  # (B, T)

    def window(x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        idx = (first[:, None] + rows).clamp(max=T - 1)  # (B, T)
        return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[2])).masked_fill(~mask[..., None], 0.0)

    in_sync = {"video": window(video, start), "audio": window(audio, start), "video_mask": mask, "audio_mask": mask}
    shifted = in_sync | {"audio": window(audio, other)}
    return in_sync, shifted, valid


def shuffle_steps(masks: dict[str, torch.Tensor], ratio: float, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame-order targets (HERO's frame order modelling, Li et al. 2020): some steps of each clip swap places.

    Of a clip's ``L`` real steps (a step is real where any modality is), ``max(2, round(ratio · L))`` (at most
    ``L``) are drawn and permuted among themselves at random; a drawn step may land where it was.

    Args:
        masks: ``{"video": (B, T) bool, "audio": (B, T) bool}``, True = real row.
        ratio: Share of the real steps drawn.
        generator: Draws the steps and their permutation.

    Returns:
        ``(source, drawn)``: (B, T) int64, the step whose rows position t now shows (``t`` where nothing moved),
        and (B, T) bool, the drawn positions (the targets: predict ``source`` there).
    """
    real = masks["video"].bool() | masks["audio"].bool()  # (B, T)
    B, T = real.shape
    source = torch.arange(T).repeat(B, 1)  # (B, T)
    drawn = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        steps_b = real[b].nonzero()[:, 0]  # (L,)
        n = min(len(steps_b), max(2, round(ratio * len(steps_b))))
        if n < 2:
            continue
        pick = steps_b[torch.randperm(len(steps_b), generator=generator)[:n]]  # (n,)
        source[b, pick] = pick[torch.randperm(n, generator=generator)]
        drawn[b, pick] = True
    return source, drawn


def _gather_steps(batch: dict[str, torch.Tensor], source: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch with every modality's rows and masks reordered: position t shows step ``source[:, t]``."""
    out = {}
    for key, x in batch.items():
        if key in MODALITIES:
            out[key] = torch.gather(x, 1, source[..., None].expand(-1, -1, x.shape[2]))  # (B, T, D)
        elif key.endswith("_mask"):
            out[key] = torch.gather(x, 1, source)  # (B, T)
    return out


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
                "nothing it can learn fine-tunes poorly (README, 'Cross-modal pretraining with few labels')")
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


