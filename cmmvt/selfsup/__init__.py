"""Cross-modal self-supervision: each modality is the teacher of the other.

* :mod:`cmmvt.selfsup.losses`: NT-Xent / InfoNCE between a clip's video and audio embeddings (SimCLR),
  cross-modal cluster cross-entropy (XDC), cross-modal prototype NCE (after PCL) and audio-visual
  synchrony (AVTS), all masking clips that lack a modality.
* :mod:`cmmvt.selfsup.prototypes`: k-means prototypes per modality on the cached embeddings, stored in
  ``data/prototypes.h5``, and their agreement with the classes (NMI, purity).
* :mod:`cmmvt.selfsup.objectives`: one batch's pretraining loss, every objective through the model and the heads.
* :mod:`cmmvt.selfsup.pretrain`: the pretraining run (the ``pretrain`` stage).
"""

from cmmvt.selfsup.losses import cluster_centroids, cross_modal_cluster_ce, nt_xent, prototype_nce, synchrony_bce
from cmmvt.selfsup.prototypes import (
    Prototypes,
    clip_means,
    cluster_quality,
    fit,
    kmeans,
    read,
    write,
)

__all__ = [
    "nt_xent",
    "cross_modal_cluster_ce",
    "prototype_nce",
    "cluster_centroids",
    "synchrony_bce",
    "Prototypes",
    "clip_means",
    "kmeans",
    "fit",
    "write",
    "read",
    "cluster_quality",
]
