"""The HDF5 shard format: a shard encoded in memory from :class:`ClipFeatures`, its attrs and index read back.

Inside a shard the clips are packed ragged arrays::

    /emb               (N_total, D) float16  rows of all clips back to back, chunked along N, uncompressed
    /t                 (N_total,)   float32  timestamp (seconds) of each row
    /index/video_id    (C,) utf-8 str
    /index/offset      (C,) int64    first row of the clip in /emb
    /index/length      (C,) int64    its number of rows (0 for a clip without this stream)
    /index/has_stream  (C,) bool     False: the video has no such stream (e.g. no audio): a masked modality
    /index/duration    (C,) float32  seconds
    /index/path        (C,) utf-8 str   the source file                      ┐ its fingerprint
    /index/size        (C,) int64       bytes (-1: unknown)                  │ (cmmvt.features.fingerprint):
    /index/mtime_ns    (C,) int64       modification time                    │ a changed file is
    /index/digest      (C,) utf-8 str   sampled-content digest ("" unknown)  ┘ extracted again
    attrs              schema_version, modality, every feature param (None/dict/list values as JSON strings,
                       e.g. ``versions``), and ``attrs_json``: all of them as one JSON object

Shards are bit-reproducible: the same clips added in the same order give byte-identical files (no HDF5
timestamps are stored).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cmmvt.features.cache.errors import CacheError
from cmmvt.features.fingerprint import Fingerprint


SCHEMA_VERSION = 2  # 2: per-clip source fingerprints; schema-1 clips count as stale (no fingerprint)
_RESERVED_KEYS = frozenset({"schema_version", "modality", "attrs_json"})
_CHUNK_ROWS = 1024


@dataclass
class ClipFeatures:
    """The embeddings of one clip in one modality.

    Attributes:
        video_id: The cache key.
        emb: (T, D) embeddings, any float dtype (float32 from the CNN or float16); stored as float16.
            A clip without this stream (``has_stream=False``) has T = 0. Arrays returned by
            :class:`~cmmvt.features.cache.reader.CacheReader` are float32.
        t: (T,) float32 timestamp in seconds of each row.
        has_stream: False when the video has no such stream (e.g. no audio track): a masked modality.
        duration: Clip duration in seconds.
        source: Fingerprint of the file the rows were made from (``None``: unknown, e.g. a schema-1 shard).
    """

    video_id: str
    emb: np.ndarray  # (T, D) float16 or float32
    t: np.ndarray  # (T,) float32 seconds
    has_stream: bool = True
    duration: float = 0.0
    source: Fingerprint | None = None


def _open_shard(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise CacheError(f"{path}: unreadable shard ({exc}); delete it to re-extract its clips") from None


def _shard_meta(f: h5py.File) -> dict[str, Any]:
    """``{"schema_version", "modality", "attrs"}`` of an open shard."""
    try:
        attrs = json.loads(f.attrs["attrs_json"])
        return {"schema_version": int(f.attrs["schema_version"]), "modality": str(f.attrs["modality"]),
                "attrs": attrs}
    except (KeyError, ValueError) as exc:
        raise CacheError(f"{f.filename}: not a cmmvt shard ({exc})") from None


@dataclass(frozen=True)
class _Entry:
    """Where one clip's rows are: shard file name, first row, row count, and what else the index says."""

    shard: str
    offset: int
    length: int
    has_stream: bool
    duration: float
    source: Fingerprint | None


def _shard_entries(f: h5py.File, shard: str) -> dict[str, _Entry]:
    """The index of an open shard: ``{video_id: _Entry}`` in shard order."""
    try:
        g = f["index"]
        ids = [str(s) for s in g["video_id"].asstr()[()]]
        off, length, has, dur = g["offset"][()], g["length"][()], g["has_stream"][()], g["duration"][()]
        if "digest" in g:  # schema 2
            paths, digests = g["path"].asstr()[()], g["digest"].asstr()[()]
            size, mtime = g["size"][()], g["mtime_ns"][()]
            sources = [Fingerprint(str(paths[j]), int(size[j]), int(mtime[j]), str(digests[j])) if digests[j]
                       else None for j in range(len(ids))]
        else:
            sources = [None] * len(ids)
    except KeyError as exc:
        raise CacheError(f"{f.filename}: not a cmmvt shard ({exc})") from None
    return {vid: _Entry(shard, int(off[j]), int(length[j]), bool(has[j]), float(dur[j]), sources[j])
            for j, vid in enumerate(ids)}


def _check_schema(version: int, where: object) -> None:
    if version > SCHEMA_VERSION:
        raise CacheError(f"{where}: cache schema {version} is newer than this cmmvt's ({SCHEMA_VERSION}); "
                         "upgrade cmmvt or re-extract")



def _h5_attr(value: Any) -> Any:
    """Scalars as themselves, anything else (None, dicts, lists) as a JSON string."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)



def _shard_bytes(clips: list[ClipFeatures], modality: str, attrs: Mapping[str, Any], dim: int | None,
                 compression: str | None) -> bytes:
    """The HDF5 file of ``clips``, built in memory (HDF5 never touches the disk, so I/O errors are Python's).

    Args:
        clips: The clips of the shard, in order.
        modality: ``video`` or ``audio``.
        attrs: Normalised feature params, stored as attrs.
        dim: Embedding dimension D (``None``: not known yet; a shard of empty clips then has D = 1).
        compression: Optional h5py compression of ``/emb``.
    """
    dim = int(dim or 1)
    lengths = np.array([len(c.emb) for c in clips], np.int64)  # (C,)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (C,)
    n = int(lengths.sum())
    emb = np.concatenate([c.emb for c in clips]) if n else np.zeros((0, dim), np.float16)  # (N, D)
    t = np.concatenate([c.t for c in clips]) if n else np.zeros(0, np.float32)  # (N,)
    src = [c.source for c in clips]
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="earliest") as f:
        f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        f.attrs["modality"] = modality
        for key in sorted(attrs):
            f.attrs[key] = _h5_attr(attrs[key])
        f.attrs["attrs_json"] = json.dumps(attrs, sort_keys=True)
        f.create_dataset("emb", data=emb, dtype=np.float16, chunks=(min(n, _CHUNK_ROWS), dim) if n else None,
                         compression=compression if n else None, track_times=False)
        f.create_dataset("t", data=t, dtype=np.float32, track_times=False)
        g = f.create_group("index")
        text = h5py.string_dtype("utf-8")
        columns = {
            "video_id": ([c.video_id for c in clips], text),
            "offset": (offsets, np.int64),
            "length": (lengths, np.int64),
            "has_stream": (np.array([c.has_stream for c in clips], bool), bool),
            "duration": (np.array([c.duration for c in clips], np.float32), np.float32),
            "path": ([s.path if s else "" for s in src], text),
            "size": (np.array([s.size if s else -1 for s in src], np.int64), np.int64),
            "mtime_ns": (np.array([s.mtime_ns if s else -1 for s in src], np.int64), np.int64),
            "digest": ([s.digest if s else "" for s in src], text),
        }
        for name, (data, dtype) in columns.items():
            g.create_dataset(name, data=data, dtype=dtype, track_times=False)
    return buf.getvalue()
