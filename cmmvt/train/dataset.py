"""Clips of cached per-frame features for the temporal models: crops, views, padding masks, labels, splits.

A training item is one random temporal crop of up to ``frames`` rows (``model.crop_frames``), padded to
``frames``; its start depends only on the seed, the epoch and the clip's index, so every process of a
data-parallel job (and one process alone) crops a clip alike. An evaluation item is the **whole clip** in one
view when it has at most ``frames`` rows
(``model.max_frames``, 1,024 by default: VTN's whole-video inference, Neimark et al. 2021), else
``views`` evenly spaced views of ``frames`` rows (by default as many as cover the clip); their logits
are averaged. Evaluation items have their own lengths: :func:`collate_views` pads a batch to its longest
view and concatenates the views of all its clips. Video and audio rows are time-aligned, so the same
row indices are taken from both. A clip without an audio stream gets an all-False ``audio_mask``: the
model treats it as missing, never as silent zeros.

Example (needs clips or caches on disk, so not run as a doctest)::

    ds = ClipDataset("data/features", ["a/clip1"], [0], ("video", "audio"), frames=16, train=True)
    item = ds[0]; item["video"].shape, item["video_mask"].shape
    # → (torch.Size([16, 1280]), torch.Size([16]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cmmvt.data.manifest import LABEL_SEP, SPLITS, UNLABELLED, label_set
from cmmvt.features.cache import CacheReader


@dataclass(frozen=True)
class Split:
    """The ids and labels of one split: integer labels, or (multi-label) each clip's (C,) 0/1 targets."""

    ids: list[str]
    labels: list[int] | list[list[float]]


def label_names(manifest: pd.DataFrame) -> list[str]:
    """Sorted class names: index = integer label (the unlabelled pool is no class; ``a;b`` is two classes)."""
    cells = manifest.loc[manifest["split"] != UNLABELLED, "label"].astype(str).unique()
    return sorted({name for cell in cells for name in label_set(cell)})


def splits(manifest: pd.DataFrame, features: str | Path, modalities: Sequence[str],
           multilabel: bool = False) -> tuple[dict[str, Split], list[str]]:
    """Split the manifest into train/val/test (and the unlabelled pool) over the clips present in every needed cache.

    Args:
        manifest: video_id, path, label, split.
        features: Features root holding ``<modality>/`` caches.
        modalities: The caches that must hold a clip (failed extractions are left out).
        multilabel: Labels as (C,) 0/1 targets (``train.task: multilabel``) instead of integers.

    Returns:
        ``({split: Split}, label_names)`` for the splits ``train``, ``val``, ``test`` and ``unlabelled`` (whose
        labels are all -1, or all-zero targets: only self-supervised stages read it).

    Raises:
        ValueError: Clips with several labels and ``multilabel`` False (one line naming a clip and the key).
    """
    names = label_names(manifest)
    index = {n: i for i, n in enumerate(names)}
    several = manifest.loc[manifest["label"].astype(str).str.contains(LABEL_SEP, regex=False)]
    if len(several) and not multilabel:
        raise ValueError(f"{len(several)} clip(s) have several labels (e.g. {several['video_id'].iloc[0]}: "
                         f"{several['label'].iloc[0]!r}): set train.task=multilabel")

    def target(cell: object) -> int | list[float]:
        if not multilabel:
            return index[str(cell)]
        hot = [0.0] * len(names)
        for name in label_set(cell):
            hot[index[name]] = 1.0
        return hot

    cached = None
    for m in modalities:
        with CacheReader(features, m) as r:
            ids = set(r.ids)
        cached = ids if cached is None else cached & ids
    out = {}
    for split in SPLITS + (UNLABELLED,):
        rows = manifest[(manifest["split"] == split) & manifest["video_id"].isin(cached or set())]
        labels = ([target("")] * len(rows) if multilabel else [-1] * len(rows)) if split == UNLABELLED else \
            [target(x) for x in rows["label"]]
        out[split] = Split(rows["video_id"].tolist(), labels)
    return out, names


def per_class_subset(split: Split, n: int | None, seed: int, stream: int = 0) -> Split:
    """The first ``n`` clips of each class in a seeded shuffle (``train.labels_per_class``; None: all clips).

    Nested: for one seed, the clips kept at ``n`` are among those kept at any larger ``n``, so a low-label
    curve (1, 2, 5, all labels per class) adds labels rather than redrawing them. Order follows ``split``.
    ``stream`` gives another split (validation) a draw of its own for the same seed.
    """
    if n is None:
        return split
    labels = np.asarray(split.labels)  # (N,) integers or (N, C) multi-label targets
    kept: set[int] = set()
    for c in (range(labels.shape[1]) if labels.ndim == 2 else np.unique(labels)):
        idx = np.flatnonzero(labels[:, c] > 0 if labels.ndim == 2 else labels == c)
        rng = np.random.default_rng([seed, int(c), stream])
        kept.update(rng.permutation(idx)[:n].tolist())  # multi-label: the union of each class's draw
    keep = sorted(kept)
    return Split([split.ids[i] for i in keep], [split.labels[i] for i in keep])


def view_starts(length: int, frames: int, views: int | None = None) -> list[int]:
    """First rows of the evaluation views of a clip of ``length`` rows.

    A clip of at most ``frames`` rows is one view from row 0 (the whole clip). A longer one gets ``views``
    evenly spaced views of ``frames`` rows (``None``: ``ceil(length / frames)``, the fewest that cover the
    clip); a single view is the centred one.
    """
    last = max(length - frames, 0)
    if last == 0:
        return [0]
    n = math.ceil(length / frames) if views is None else views
    return sorted(set(np.linspace(0, last, n).round().astype(int).tolist())) if n > 1 else [last // 2]


def crops(rows: np.ndarray, starts: Sequence[int], frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``rows[s : s + frames]`` for each start and zero-pad to ``frames``.

    Args:
        rows: (L, D) features of one clip (L may be 0: a missing stream).
        starts: First row of each view.
        frames: T.

    Returns:
        (V, T, D) features and (V, T) bool mask (True = real row).
    """
    x = torch.zeros(len(starts), frames, rows.shape[1])
    mask = torch.zeros(len(starts), frames, dtype=torch.bool)
    for v, s in enumerate(starts):
        crop = torch.from_numpy(np.ascontiguousarray(rows[s : s + frames]))
        x[v, : len(crop)], mask[v, : len(crop)] = crop, True
    return x, mask


def clip_views(rows: dict[str, np.ndarray], frames: int, views: int | None = None) -> dict[str, torch.Tensor]:
    """The evaluation views of one clip (:func:`view_starts`): ``{m: (V, T, D), m_mask: (V, T)}``, ``T ≤ frames``."""
    length = max(len(r) for r in rows.values())
    starts = view_starts(length, frames, views)
    width = max(1, min(length, frames))  # the whole clip when it fits: no padding beyond it
    out = {}
    for m, r in rows.items():
        out[m], out[f"{m}_mask"] = crops(r, starts, width)
    return out


def collate_views(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch evaluation items of different lengths and view counts.

    Returns:
        ``{m: (ΣV, T_max, D), m_mask: (ΣV, T_max), "views": (B,) int64, "label": (B,)}``: the views of all
        clips back to back, zero-padded (mask False) to the longest.
    """
    width = max(x.shape[1] for item in items for k, x in item.items() if k.endswith("_mask"))
    out: dict[str, torch.Tensor] = {}
    for key in items[0]:
        if key == "label":
            out[key] = torch.stack([item[key] for item in items])
        else:
            out[key] = torch.cat([F.pad(item[key], (0, 0, 0, width - item[key].shape[1]) if item[key].dim() == 3
                                        else (0, width - item[key].shape[1])) for item in items])
    mask_key = next(k for k in items[0] if k.endswith("_mask"))
    out["views"] = torch.tensor([item[mask_key].shape[0] for item in items])
    return out


def per_clip_mean(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Average consecutive rows of ``x`` (ΣV, ...) over each clip's ``views`` (B,) → (B, ...)."""
    return torch.stack([chunk.mean(0) for chunk in torch.split(x, views.tolist())])


PRELOAD_BYTES = 1 << 30  #: caches whose float32 rows fit in this many bytes are held in memory


class ClipDataset(Dataset):
    """Cached clips as padded tensors: random training crops, or whole-clip evaluation views.

    Args:
        features: Features root holding ``video/`` and/or ``audio/`` caches.
        ids: Clip ids.
        labels: Integer labels, aligned with ``ids``.
        modalities: Modalities to load, e.g. ``("video", "audio")``.
        frames: Training crop length (``model.crop_frames``), or the evaluation view cap (``model.max_frames``).
        train: One random crop per item (training) or the evaluation views (:func:`clip_views`).
        views: Evaluation views for clips longer than ``frames`` (``None``: enough to cover the clip).
        seed: Seeds the training crops, with the epoch (:meth:`set_epoch`) and the item's index.

    Training items are ``<m>`` (T, D) float32, ``<m>_mask`` (T,) bool and ``label``; evaluation items are
    ``<m>`` (V, T_i, D) and ``<m>_mask`` (V, T_i) with their own length: batch them with :func:`collate_views`.
    Readers open lazily in each process, so DataLoader workers each hold their own file handles.
    """

    def __init__(self, features: str | Path, ids: Sequence[str], labels: Sequence[int], modalities: Sequence[str],
                 frames: int, train: bool = False, views: int | None = None, seed: int = 0) -> None:
        self.features, self.ids, self.labels = Path(features), list(ids), list(labels)
        self.modalities, self.frames, self.train, self.views = tuple(modalities), frames, train, views
        self.seed, self.epoch = seed, 0
        self._readers: dict[str, CacheReader] | None = None
        self.dims = {m: self._reader(m).dim for m in self.modalities}
        rows = sum(self._reader(m).n_rows * self.dims[m] for m in self.modalities)
        # small caches live in RAM (one read per clip, once), so training never waits on HDF5
        self._memory: dict[str, dict[str, np.ndarray]] | None = None
        if rows * 4 <= PRELOAD_BYTES:
            self._memory = {m: {v: self._reader(m)[v] for v in dict.fromkeys(self.ids)} for m in self.modalities}

    def _reader(self, modality: str) -> CacheReader:
        if self._readers is None:
            self._readers = {m: CacheReader(self.features, m) for m in self.modalities}
        return self._readers[modality]

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Draw the training crops of epoch ``epoch``."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vid = self.ids[i]
        rows = {m: self._memory[m][vid] if self._memory else self._reader(m)[vid] for m in self.modalities}  # (T_m, D_m)
        item: dict[str, torch.Tensor] = {"label": torch.tensor(self.labels[i])}
        if not self.train:
            return item | clip_views(rows, self.frames, self.views)
        length = max(len(r) for r in rows.values())
        start = int(np.random.default_rng([self.seed, self.epoch, i]).integers(max(length - self.frames, 0) + 1))
        for m, r in rows.items():
            x, mask = crops(r, [start], self.frames)  # (1, T, D), (1, T)
            item[m], item[f"{m}_mask"] = x[0], mask[0]
        return item
