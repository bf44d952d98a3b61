"""The read-only :class:`CacheReader`: ``video_id → (T, D) float32`` over every writer's complete shards."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cmmvt.features.cache.errors import CacheError
from cmmvt.features.cache.failures import _latest_failures, _read_failures
from cmmvt.features.cache.layout import FAILURES_NAME, META_NAME, _resolve, _writers_files
from cmmvt.features.cache.scan import _scan
from cmmvt.features.cache.shards import ClipFeatures, _check_schema, _Entry, _open_shard
from cmmvt.features.fingerprint import Fingerprint, is_current


class CacheReader(Mapping[str, np.ndarray]):
    """Read-only view over all complete shards of one modality: ``video_id → (T, D) float32``.

    Shards are opened read-only without HDF5 file locking (parallel experiments read the same cache) and
    lazily per process (safe in forked DataLoader workers). The content is a snapshot of the shards present
    when the reader was made; ``*.tmp`` files are ignored. If an id occurs in several shards the last wins.

    Args:
        root: The modality directory, or a features root holding ``<modality>/``.
        modality: Expected modality; required when ``root`` is a features root.

    Raises:
        CacheError: No cache there, a modality other than ``modality``, or a shard of a newer schema.

    Attributes:
        root: The modality directory.
        modality: ``video`` or ``audio``.
        attrs: Feature params the cache was made with (incl. ``versions``).
        dim: Embedding dimension D.
        ids: Cached ids, in shard order.
        n_rows: Total rows.
        shards: Shard paths.
    """

    def __init__(self, root: str | Path, modality: str | None = None) -> None:
        self.root = _resolve(root, modality)
        scan = _scan(self.root)
        self._paths: dict[str, Path] = {p.name: p for p in scan.shards}
        self.shards: list[Path] = scan.shards
        self._index: dict[str, _Entry] = scan.entries
        self._handles: dict[str, h5py.File] = {}
        self._pid = os.getpid()
        meta = scan.meta
        if meta is None:
            raise CacheError(f"{self.root}: no feature cache here (no {META_NAME} and no shards)")
        _check_schema(int(meta.get("schema_version", 0)), self.root)
        self.modality: str = str(meta.get("modality"))
        if modality is not None and self.modality != modality:
            raise CacheError(f"{self.root}: holds {self.modality} features, not {modality}")
        self.attrs: dict[str, Any] = dict(meta["attrs"])
        attr_dim = self.attrs.get("dim")
        self.dim: int = scan.dim or (int(attr_dim) if isinstance(attr_dim, int) else 0)
        self.n_rows: int = sum(e.length for e in self._index.values())

    # -- Mapping

    def __getitem__(self, video_id: str) -> np.ndarray:
        """(T, D) float32 embeddings of ``video_id`` (T = 0 without a stream); one contiguous read."""
        return self.rows(video_id)

    def rows(self, video_id: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(n, D) float32 rows ``start:stop`` of ``video_id`` (clipped to its length), reading only those."""
        e = self._index[video_id]
        a, b = min(max(start, 0), e.length), e.length if stop is None else min(max(stop, 0), e.length)
        if b <= a:
            return np.zeros((0, self.dim), np.float32)
        return self._file(e.shard)["emb"][e.offset + a : e.offset + b].astype(np.float32)

    def length(self, video_id: str) -> int:
        """Rows of ``video_id`` (0 without a stream), without reading them."""
        return self._index[video_id].length

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    @property
    def ids(self) -> list[str]:
        """Cached ids in shard order."""
        return list(self._index)

    # -- per clip

    def times(self, video_id: str) -> np.ndarray:
        """(T,) float32 timestamps (seconds) of the rows of ``video_id``."""
        e = self._index[video_id]
        if e.length == 0:
            return np.zeros(0, np.float32)
        return self._file(e.shard)["t"][e.offset : e.offset + e.length]

    def has_stream(self, video_id: str) -> bool:
        """False when the video has no such stream (its rows are empty: a masked modality)."""
        return self._index[video_id].has_stream

    def duration(self, video_id: str) -> float:
        """Clip duration in seconds."""
        return self._index[video_id].duration

    def source(self, video_id: str) -> Fingerprint | None:
        """Fingerprint of the file ``video_id`` was extracted from (``None``: unknown)."""
        return self._index[video_id].source

    def clip(self, video_id: str) -> ClipFeatures:
        """Everything cached for ``video_id`` (``emb`` as float32)."""
        e = self._index[video_id]
        return ClipFeatures(video_id, self[video_id], self.times(video_id), e.has_stream, e.duration, e.source)

    def stale(self) -> list[str]:
        """Ids whose source file changed since extraction (or whose fingerprint is unknown); vanished files
        are not counted (their rows are still what they were)."""
        return [vid for vid, e in self._index.items()
                if e.source is None or (Path(e.source.path).exists() and not is_current(e.source.path, e.source))]

    # -- whole cache

    def failures(self) -> list[dict[str, str]]:
        """Rows of every writer's ``failures.csv`` (path, video_id, stage, reason): the latest per id (by writer,
        then time), cached ids dropped."""
        rows = [row for path in _writers_files(self.root, FAILURES_NAME) for row in _read_failures(path)]
        return _latest_failures(rows, self._index)

    def iter_rows(self, batch_rows: int = 65536) -> Iterator[np.ndarray]:
        """Stream the rows of every cached id in shard order as float32 blocks of at most ``batch_rows`` (B, D).

        Blocks do not span shards. Rows of ids superseded by a later shard or retracted (their source file
        changed) are left out, so the rows are exactly those the ids map to.
        """
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        spans: dict[str, list[tuple[int, int]]] = {}
        for e in self._index.values():
            if e.length:
                spans.setdefault(e.shard, []).append((e.offset, e.offset + e.length))
        for shard in (name for name in self._paths if name in spans):
            ds = self._file(shard)["emb"]
            runs: list[list[int]] = []
            for a, b in sorted(spans[shard]):  # merge adjacent clips into contiguous reads
                if runs and runs[-1][1] == a:
                    runs[-1][1] = b
                else:
                    runs.append([a, b])
            block: list[np.ndarray] = []
            held = 0
            for a, b in runs:
                pos = a
                while pos < b:
                    n = min(b - pos, batch_rows - held)
                    block.append(ds[pos : pos + n])
                    pos, held = pos + n, held + n
                    if held == batch_rows:
                        yield np.concatenate(block).astype(np.float32)
                        block, held = [], 0
            if block:
                yield np.concatenate(block).astype(np.float32)

    def _file(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():  # forked: HDF5 handles must not be shared across processes
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(shard)
        if f is None:
            f = self._handles[shard] = _open_shard(self._paths[shard])
        return f

    def close(self) -> None:
        """Close the open shard files (the reader reopens them if used again)."""
        if self._pid == os.getpid():
            for f in self._handles.values():
                f.close()
        self._handles = {}

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"CacheReader({str(self.root)!r}, modality={self.modality!r}, videos={len(self)}, "
                f"rows={self.n_rows}, dim={self.dim}, shards={len(self.shards)})")
