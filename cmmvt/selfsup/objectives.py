"""The pretraining objectives of one batch: cross-modal self-supervision of the temporal encoders, without labels.

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

:class:`Objectives` computes them all in one ``forward`` (so ``DistributedDataParallel`` can average their
gradients); :mod:`cmmvt.selfsup.pretrain` runs the epochs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cmmvt import distributed
from cmmvt.config import PretrainParams
from cmmvt.distributed import World
from cmmvt.models import Classifier
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
        weights: Each objective's weight (:func:`cmmvt.selfsup.pretrain._weights`); objectives left out are not computed.
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
