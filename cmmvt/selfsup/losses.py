"""Cross-modal self-supervised losses: each modality is the teacher of the other.

Every loss takes an optional boolean ``valid`` mask (B,): clips lacking a modality (e.g. no audio
stream, ``batch["audio_mask"].any(1)`` False) are *excluded* from the cross-modal terms, never
zero-filled (a zero or learned ``missing`` vector would be a shared, trivially matchable "clip").
When no row is valid the losses return a zero that is still attached to the inputs' graph
(``z.sum() * 0``), so ``loss.backward()`` works unconditionally and gives zero gradients.

Shapes: B clips per batch, H embedding size, K clusters / prototypes.

Example:
    >>> import torch
    >>> z_v, z_a = torch.randn(4, 8), torch.randn(4, 8)
    >>> has_audio = torch.tensor([True, True, False, True])
    >>> loss = nt_xent(z_v, z_a, temperature=0.1, valid=has_audio)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["nt_xent", "cross_modal_cluster_ce", "prototype_nce", "cluster_centroids", "synchrony_bce",
           "row_ce", "variance_floor"]


def _valid_rows(valid: Tensor | None, n: int, device: torch.device) -> Tensor | None:
    """Check ``valid`` and return it as a (B,) bool tensor on ``device`` (None = all rows valid)."""
    if valid is None:
        return None
    valid = torch.as_tensor(valid, device=device).bool()
    if valid.shape != (n,):
        raise ValueError(f"valid must have shape ({n},), got {tuple(valid.shape)}")
    return valid


def _zero(*tensors: Tensor) -> Tensor:
    """A scalar 0 attached to the graph of every tensor that requires grad (zero gradients)."""
    out = tensors[0].sum() * 0.0
    for t in tensors[1:]:
        if t.is_floating_point():
            out = out + t.sum() * 0.0
    return out


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.1, valid: Tensor | None = None) -> Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy, InfoNCE) between paired embeddings.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"
    (SimCLR), used cross-modally: the two "views" of a clip are its video and its audio embedding.
    With the N valid pairs stacked as 2N L2-normalised embeddings z_1..z_2N, where the positive of
    anchor i is its pair p(i) (i ± N), the loss is (the poster's formula with its typo fixed: the
    denominator runs over every k != i, i.e. 1 positive + 2N - 2 negatives)::

        l_i  = -log( exp(sim(z_i, z_p(i)) / τ) / sum_{k != i} exp(sim(z_i, z_k) / τ) )
        loss = (1 / 2N) * sum_i l_i

    with sim the cosine similarity. Negatives are both cross-modal (other clips' audio for a video
    anchor) and intra-modal (other clips' video). The loss is symmetric in ``(z_a, z_b)``.

    Args:
        z_a: (B, H) embeddings of the first modality (video clip embeddings).
        z_b: (B, H) embeddings of the second modality (audio clip embeddings of the same clips).
        temperature: τ > 0; lower values sharpen the softmax (hard negatives weigh more).
        valid: Optional (B,) bool, True where the clip has both modalities; other rows are dropped.

    Returns:
        Scalar mean loss over the 2N anchors; 0 (in graph) when no valid pair. With a single valid
        pair it is also 0 (the positive is the only term of its denominator).
    """
    if z_a.dim() != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must both be (B, H), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    keep = _valid_rows(valid, z_a.shape[0], z_a.device)
    if keep is not None:
        z_a, z_b = z_a[keep], z_b[keep]  # (N, H)
    n = z_a.shape[0]
    if n == 0:
        return _zero(z_a, z_b)
    z = F.normalize(torch.cat([z_a, z_b], dim=0), dim=1)  # (2N, H) unit rows
    sim = z @ z.t() / temperature  # (2N, 2N) cosine / τ
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))  # k != i
    idx = torch.arange(n, device=z.device)
    target = torch.cat([idx + n, idx])  # (2N,) index of each anchor's pair
    return F.cross_entropy(sim, target)


def cross_modal_cluster_ce(logits: Tensor, pseudo_labels: Tensor, valid: Tensor | None = None) -> Tensor:
    """Cross-entropy of one modality's cluster-classifier logits on the OTHER modality's clusters.

    XDC, Alwassel et al. 2020, "Self-Supervised Learning by Cross-Modal Audio-Video Clustering":
    the video encoder (plus a linear head with ``k_audio`` outputs) is trained to predict the
    k-means cluster of the clip's *audio*, and the audio encoder that of its *video*::

        loss = -(1/N) * sum_i log softmax(logits_i)[y_i]

    Args:
        logits: (B, K) logits of one modality's head, K = number of the other modality's clusters.
        pseudo_labels: (B,) int cluster assignments from the other modality's k-means
            (:attr:`cmmvt.selfsup.prototypes.Prototypes.assignments`); negative values (-1: the clip
            has no such stream, see :meth:`~cmmvt.selfsup.prototypes.Prototypes.labels_for`) are
            excluded like ``valid=False``.
        valid: Optional (B,) bool, True where both modalities are present.

    Returns:
        Scalar mean cross-entropy over the valid rows; 0 (in graph) when none.
    """
    if logits.dim() != 2 or pseudo_labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (B, K) and pseudo_labels (B,), got {tuple(logits.shape)} and "
                         f"{tuple(pseudo_labels.shape)}")
    pseudo_labels = pseudo_labels.to(logits.device).long()  # (B,)
    keep = pseudo_labels >= 0  # (B,)
    mask = _valid_rows(valid, logits.shape[0], logits.device)
    if mask is not None:
        keep = keep & mask
    if not bool(keep.any()):
        return _zero(logits)
    labels = pseudo_labels[keep]
    if int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"pseudo label {int(labels.max())} out of range for {logits.shape[1]} logits")
    return F.cross_entropy(logits[keep], labels)


def prototype_nce(z: Tensor, prototypes: Tensor, assignments: Tensor, temperature: float = 0.1,
                  valid: Tensor | None = None) -> Tensor:
    """ProtoNCE-style loss: contrast each clip with the other modality's prototypes.

    After PCL, Li et al. 2021, "Prototypical Contrastive Learning of Unsupervised Representations"
    (with one shared temperature instead of PCL's per-prototype concentration φ, and the prototypes
    taken from the *other* modality): the positive of clip i is the prototype of the cluster its
    other-modality stream was assigned to, all K prototypes form the softmax::

        loss = -(1/N) * sum_i log( exp(cos(z_i, c_{y_i}) / τ) / sum_k exp(cos(z_i, c_k) / τ) )

    The loss takes the prototypes **already in embedding space** (H): k-means centroids live in the
    frozen-CNN feature space (D_other), not in the encoder's output space, so the caller projects
    them, e.g. by (a) averaging the other modality's current (or momentum-encoder) embeddings of
    the clips in each cluster (PCL; :func:`cluster_centroids`), or (b) running each centroid through
    the other modality's encoder as a one-frame clip. Both ``z`` and ``prototypes`` are
    L2-normalised here. Gradients flow into ``prototypes`` only if the caller does not detach them
    (PCL detaches: prototypes act as fixed teachers).

    Args:
        z: (B, H) clip embeddings of one modality.
        prototypes: (K, H) the other modality's prototypes in embedding space.
        assignments: (B,) int, each clip's cluster in the other modality; negative = no such stream
            (excluded, like ``valid=False``).
        temperature: τ > 0.
        valid: Optional (B,) bool, True where both modalities are present.

    Returns:
        Scalar mean loss over the valid rows; 0 (in graph) when none.
    """
    if z.dim() != 2 or prototypes.dim() != 2 or z.shape[1] != prototypes.shape[1]:
        raise ValueError(f"expected z (B, H) and prototypes (K, H), got {tuple(z.shape)} and "
                         f"{tuple(prototypes.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if assignments.shape != z.shape[:1]:
        raise ValueError(f"assignments must be ({z.shape[0]},), got {tuple(assignments.shape)}")
    assignments = assignments.to(z.device).long()  # (B,)
    keep = assignments >= 0
    mask = _valid_rows(valid, z.shape[0], z.device)
    if mask is not None:
        keep = keep & mask
    if not bool(keep.any()):
        return _zero(z, prototypes)
    labels = assignments[keep]  # (N,)
    if int(labels.max()) >= prototypes.shape[0]:
        raise ValueError(f"assignment {int(labels.max())} out of range for {prototypes.shape[0]} prototypes")
    zn = F.normalize(z[keep], dim=1)  # (N, H)
    cn = F.normalize(prototypes, dim=1)  # (K, H)
    logits = zn @ cn.t() / temperature  # (N, K) cosine / τ
    return F.cross_entropy(logits, labels)


def cluster_centroids(z: Tensor, assignments: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Prototypes in embedding space: the mean L2-normalised embedding of each cluster (PCL).

    Args:
        z: (N, H) embeddings of the modality that was clustered (e.g. audio embeddings of a batch
            or of the whole training set, usually detached / from a momentum encoder).
        assignments: (N,) int clusters in ``[0, k)``; negative values are ignored.
        k: Number of clusters.

    Returns:
        ``(prototypes (k, H), counts (k,))``; a cluster with no member gets a zero row (its cosine
        with every clip is 0) and count 0.
    """
    assignments = assignments.to(z.device).long()
    keep = assignments >= 0
    zn = F.normalize(z[keep], dim=1)  # (N', H)
    lab = assignments[keep]
    sums = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, lab, zn)  # (k, H)
    counts = torch.bincount(lab, minlength=k)[:k]  # (k,)
    return sums / counts.clamp(min=1).unsqueeze(1).to(z.dtype), counts


def synchrony_bce(in_sync: Tensor, shifted: Tensor, valid: Tensor | None = None) -> Tensor:
    """Audio-visual temporal synchronisation: is this audio in time with this video?

    AVTS, Korbar, Tran & Torresani 2018, "Cooperative Learning of Audio and Video Models from
    Self-Supervised Synchronization", with their hard negatives: the audio of the *same* clip shifted in
    time, so content cannot tell the pair apart and only timing can. Binary cross-entropy, positives and
    negatives weighted equally::

        loss = ½ · mean_i BCE(σ(s_i), 1) + ½ · mean_i BCE(σ(s'_i), 0)

    with ``s_i`` the logit of clip i with its own audio in sync and ``s'_i`` with that audio shifted.

    Args:
        in_sync: (B,) logits of the in-sync pairs.
        shifted: (B,) logits of the same clips with shifted audio.
        valid: Optional (B,) bool, True where the clip has both modalities and room for a shift.

    Returns:
        Scalar loss; 0 (in graph) when no row is valid.
    """
    if in_sync.dim() != 1 or in_sync.shape != shifted.shape:
        raise ValueError(f"in_sync and shifted must both be (B,), got {tuple(in_sync.shape)} and {tuple(shifted.shape)}")
    keep = _valid_rows(valid, in_sync.shape[0], in_sync.device)
    if keep is not None:
        in_sync, shifted = in_sync[keep], shifted[keep]
    if in_sync.numel() == 0:
        return _zero(in_sync, shifted)
    return 0.5 * (F.binary_cross_entropy_with_logits(in_sync, torch.ones_like(in_sync))
                  + F.binary_cross_entropy_with_logits(shifted, torch.zeros_like(shifted)))


def variance_floor(z: Tensor, floor: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Hinge on each dimension's standard deviation over the batch: the variance term of VICReg.

    Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
    Learning"::

        loss = (1/H) * sum_h max(0, floor - sqrt(Var_b(z_bh) + eps))

    An objective that only has to tell two versions of one clip apart (synchrony: in time or shifted) is met as
    well by a representation that is the same for every clip, and that is where it drifts when the timing is
    hard to see: on the real-content set a sync-pretrained encoder gave every clip the same representation
    (mean pairwise cosine 0.9999999) and fine-tuned to chance. This term keeps the clips apart.

    Args:
        z: (B, H) representations of B different clips.
        floor: The standard deviation each dimension is held above.
        eps: Numerical floor inside the square root.

    Returns:
        Scalar; 0 (in graph) for fewer than 2 rows.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be (B, H), got {tuple(z.shape)}")
    if z.shape[0] < 2:
        return _zero(z)
    std = torch.sqrt(z.var(dim=0) + eps)  # (H,)
    return F.relu(floor - std).mean()


def row_ce(logits: Tensor, targets: Tensor, rows: Tensor) -> Tensor:
    """Per-row classification on the selected rows only: masked cluster prediction and frame-order prediction.

    * masked prediction (HuBERT, Hsu et al. 2021, "HuBERT: Self-Supervised Speech Representation Learning by
      Masked Prediction of Hidden Units"; AV-HuBERT, Shi et al. 2022, "Learning Audio-Visual Speech
      Representation by Masked Multimodal Cluster Prediction"): the rows are those hidden behind a mask
      embedding, the targets their k-means clusters (HuBERT's ``α = 1``: no loss on visible rows);
    * frame-order modelling (HERO, Li et al. 2020, "HERO: Hierarchical Encoder for Video+Language Omni-
      representation Pre-training"): the rows are those moved by a shuffle, the targets their original places::

        loss = -(1/M) * sum_{(b, t) selected} log softmax(logits_bt)[y_bt]

    Args:
        logits: (B, T, K) per-row logits.
        targets: (B, T) int class of each row (any value where not selected).
        rows: (B, T) bool, True where the row counts.

    Returns:
        Scalar mean over the selected rows; 0 (in graph) when none.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or rows.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, T, K), targets and rows (B, T), got {tuple(logits.shape)}, "
                         f"{tuple(targets.shape)} and {tuple(rows.shape)}")
    rows = rows.to(logits.device).bool()
    if not bool(rows.any()):
        return _zero(logits)
    return F.cross_entropy(logits[rows], targets.to(logits.device).long()[rows])  # (M, K) vs (M,)
