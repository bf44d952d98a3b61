"""Clips of cached per-frame features for the temporal models: crops, padding masks, labels, splits.

A training item is one random temporal crop of up to ``max_frames`` rows; an evaluation item is
``views`` evenly spaced crops (their logits are averaged, as in VTN's multi-view testing, Neimark et
al. 2021). Video and audio rows are time-aligned, so the same row indices are cropped from both. A
clip without an audio stream gets an all-False ``audio_mask``: the model treats it as missing, never
as silent zeros.

Example:
    >>> ds = ClipDataset("data/features", ["a/clip1"], [0], ("video", "audio"), max_frames=16)  # doctest: +SKIP
    >>> item = ds[0]; item["video"].shape, item["video_mask"].shape                           # doctest: +SKIP
    (torch.Size([16, 1280]), torch.Size([16]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cmmvt.cache import CacheReader


@dataclass(frozen=True)
class Split:
    """The ids and integer labels of one split."""

    ids: list[str]
    labels: list[int]


def label_names(manifest: pd.DataFrame) -> list[str]:
    """Sorted class names: index = integer label."""
    return sorted(manifest["label"].astype(str).unique())


def splits(manifest: pd.DataFrame, features: str | Path, modalities: Sequence[str]) -> tuple[dict[str, Split], list[str]]:
    """Split the manifest into train/val/test over the clips present in every needed cache.

    Args:
        manifest: video_id, path, label, split.
        features: Features root holding ``<modality>/`` caches.
        modalities: The caches that must hold a clip (failed extractions are left out).

    Returns:
        ``({split: Split}, label_names)``.
    """
    names = label_names(manifest)
    index = {n: i for i, n in enumerate(names)}
    cached = None
    for m in modalities:
        with CacheReader(features, m) as r:
            ids = set(r.ids)
        cached = ids if cached is None else cached & ids
    out = {}
    for split in ("train", "val", "test"):
        rows = manifest[(manifest["split"] == split) & manifest["video_id"].isin(cached or set())]
        out[split] = Split(rows["video_id"].tolist(), [index[str(x)] for x in rows["label"]])
    return out, names


def stratified_subset(split: Split, fraction: float, seed: int) -> Split:
    """A deterministic stratified subset keeping ``fraction`` of each class (at least one clip per class)."""
    if fraction >= 1.0:
        return split
    rng = np.random.default_rng(seed)
    labels = np.asarray(split.labels)
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, round(fraction * len(idx)))
        keep.extend(rng.choice(idx, size=n, replace=False).tolist())
    keep.sort()
    return Split([split.ids[i] for i in keep], [split.labels[i] for i in keep])


def crop_starts(length: int, max_frames: int, views: int) -> list[int]:
    """First rows of ``views`` evenly spaced crops of ``max_frames`` rows in a clip of ``length`` rows."""
    last = max(length - max_frames, 0)
    return sorted(set(np.linspace(0, last, views).round().astype(int).tolist())) if views > 1 else [last // 2]


def crops(rows: np.ndarray, starts: Sequence[int], max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``rows[s : s + max_frames]`` for each start and zero-pad to ``max_frames``.

    Args:
        rows: (L, D) features of one clip (L may be 0: a missing stream).
        starts: First row of each view.
        max_frames: T.

    Returns:
        (V, T, D) features and (V, T) bool mask (True = real row).
    """
    x = torch.zeros(len(starts), max_frames, rows.shape[1])
    mask = torch.zeros(len(starts), max_frames, dtype=torch.bool)
    for v, s in enumerate(starts):
        crop = torch.from_numpy(np.ascontiguousarray(rows[s : s + max_frames]))
        x[v, : len(crop)], mask[v, : len(crop)] = crop, True
    return x, mask


PRELOAD_BYTES = 1 << 30  #: caches whose float32 rows fit in this many bytes are held in memory


class ClipDataset(Dataset):
    """Cached clips as fixed-size padded tensors.

    Args:
        features: Features root holding ``video/`` and/or ``audio/`` caches.
        ids: Clip ids.
        labels: Integer labels, aligned with ``ids``.
        modalities: Modalities to load, e.g. ``("video", "audio")``.
        max_frames: Crop length T.
        train: Random crops (training) or ``views`` fixed crops (evaluation).
        views: Evaluation crops per clip.

    Items are dicts: ``<m>`` (T, D) or (V, T, D) float32, ``<m>_mask`` (T,) or (V, T) bool, ``label``.
    Readers open lazily in each process, so DataLoader workers each hold their own file handles.
    """

    def __init__(self, features: str | Path, ids: Sequence[str], labels: Sequence[int], modalities: Sequence[str],
                 max_frames: int, train: bool = False, views: int = 1) -> None:
        self.features, self.ids, self.labels = Path(features), list(ids), list(labels)
        self.modalities, self.max_frames, self.train, self.views = tuple(modalities), max_frames, train, views
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

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vid = self.ids[i]
        rows = {m: self._memory[m][vid] if self._memory else self._reader(m)[vid] for m in self.modalities}  # (T_m, D_m)
        length = max(len(r) for r in rows.values())
        if self.train:
            starts = [int(torch.randint(0, max(length - self.max_frames, 0) + 1, ()).item())]
        else:
            starts = crop_starts(length, self.max_frames, self.views)
            starts += [starts[-1]] * (self.views - len(starts))  # short clips: repeat the one crop
        item: dict[str, torch.Tensor] = {"label": torch.tensor(self.labels[i])}
        for m, r in rows.items():
            item[m], item[f"{m}_mask"] = crops(r, starts, self.max_frames)  # (V, T, D), (V, T)
            if self.train:
                item[m], item[f"{m}_mask"] = item[m][0], item[f"{m}_mask"][0]  # (T, D), (T,)
        return item
