"""Sharded, crash-safe HDF5 caches of per-frame embeddings: written once by ``extract``, read by every later stage.

Layout of one modality directory (e.g. ``data/features/video/``)::

    cache.json            feature params of the cache; a run with other params is refused before any work
    shard-00000.h5        complete shards, never modified after the rename that published them
    shard-00001.h5
    failures.csv          path, video_id, stage, reason: clips that could not be extracted
    .lock                 held (flock) by the one writer allowed at a time

A shard is written to ``shard-NNNNN.h5.tmp``, flushed, fsynced and renamed, so a SIGKILL at any moment loses
at most the shard in flight; ``*.tmp`` files are never read and are deleted by the next writer. Inside a
shard the clips are packed ragged arrays::

    /emb               (N_total, D) float16  rows of all clips back to back, chunked along N, uncompressed
    /t                 (N_total,)   float32  timestamp (seconds) of each row
    /index/video_id    (C,) utf-8 str
    /index/offset      (C,) int64    first row of the clip in /emb
    /index/length      (C,) int64    its number of rows (0 for a clip without this stream)
    /index/has_stream  (C,) bool     False: the video has no such stream (e.g. no audio): a masked modality
    /index/duration    (C,) float32  seconds
    attrs              schema_version, modality, every feature param (None/dict/list values as JSON strings,
                       e.g. ``versions``), and ``attrs_json``: all of them as one JSON object

Shards are bit-reproducible: the same clips added in the same order give byte-identical files (no HDF5
timestamps are stored). A resumed run numbers its shards after the last complete one; the cache content
(id → rows) is the same as after an uninterrupted run, only the shard boundaries may differ.

Example:
    >>> attrs = {"backbone": "resnet18", "dim": 512, "fps": 4.0}
    >>> with CacheWriter("feats/video", "video", attrs) as w:                     # doctest: +SKIP
    ...     w.add(ClipFeatures("clip1", emb, t, has_stream=True, duration=3.2))
    >>> with CacheReader("feats", "video") as r:                                  # doctest: +SKIP
    ...     x = r["clip1"]                                                        # (T, D) float32
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

try:  # POSIX advisory lock: one writer per modality directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
META_NAME = "cache.json"
FAILURES_NAME = "failures.csv"
FAILURE_FIELDS = ("path", "video_id", "stage", "reason")
#: Attr keys that are provenance, not feature params: they may differ between runs that share a cache.
PROVENANCE_KEYS = frozenset({"versions", "library_versions"})
_RESERVED_KEYS = frozenset({"schema_version", "modality", "attrs_json"})
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
_CHUNK_ROWS = 1024
_MISSING = "<missing>"


class CacheError(RuntimeError):
    """A feature cache cannot be used as asked (missing, corrupt, locked, made by a newer version)."""


class ParamsMismatch(CacheError):
    """The directory holds features made with other feature params."""


@dataclass
class ClipFeatures:
    """The embeddings of one clip in one modality.

    Attributes:
        video_id: The cache key.
        emb: (T, D) embeddings, any float dtype (float32 from the CNN or float16); stored as float16.
            A clip without this stream (``has_stream=False``) has T = 0. Arrays returned by
            :class:`CacheReader` are float32.
        t: (T,) float32 timestamp in seconds of each row.
        has_stream: False when the video has no such stream (e.g. no audio track): a masked modality.
        duration: Clip duration in seconds.
    """

    video_id: str
    emb: np.ndarray  # (T, D) float16 or float32
    t: np.ndarray  # (T,) float32 seconds
    has_stream: bool = True
    duration: float = 0.0


# --------------------------------------------------------------------------------------------------------------
# helpers


def _normalise_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """JSON round trip (tuples → lists, keys → str) so attrs compare equal to those read back from disk."""
    try:
        return json.loads(json.dumps(dict(attrs), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cache attrs must be JSON-serialisable without NaN/inf: {exc}") from None


def _feature_params(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in PROVENANCE_KEYS}


def _same(a: Any, b: Any) -> bool:
    """Equal as params: 4 == 4.0, but True != 1."""
    return a == b and (type(a) is bool) == (type(b) is bool)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old → new`` for every differing key, sorted (``<missing>`` for an absent key)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if not _same(a, b):
            lines.append(f"{key}: {a if a is _MISSING else repr(a)} → {b if b is _MISSING else repr(b)}")
    return lines


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync_path(path)
    except OSError:  # pragma: no cover - some filesystems cannot fsync a directory
        pass


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _shard_paths(root: Path) -> list[tuple[int, Path]]:
    """Complete shards of ``root`` sorted by number (``*.tmp`` never match)."""
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if (m := _SHARD_RE.match(p.name)) and p.is_file()]
    return sorted(out)


def _read_meta(root: Path) -> dict[str, Any] | None:
    path = root / META_NAME
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable cache metadata ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("attrs"), dict):
        raise CacheError(f"{path}: not a cmmvt cache metadata file")
    return meta


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


def _shard_index(f: h5py.File) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, offset (C,), length (C,), has_stream (C,), duration (C,)) of an open shard."""
    try:
        g = f["index"]
        ids = [str(s) for s in g["video_id"].asstr()[()]]
        return ids, g["offset"][()], g["length"][()], g["has_stream"][()], g["duration"][()]
    except KeyError as exc:
        raise CacheError(f"{f.filename}: not a cmmvt shard ({exc})") from None


def _check_schema(version: int, where: object) -> None:
    if version > SCHEMA_VERSION:
        raise CacheError(f"{where}: cache schema {version} is newer than this cmmvt's ({SCHEMA_VERSION}); "
                         "upgrade cmmvt or re-extract")


def _read_failures(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: (row.get(k) or "") for k in FAILURE_FIELDS} for row in csv.DictReader(f)]


def _latest_failures(rows: list[dict[str, str]], cached: set[str] | Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per video_id (its latest), dropping ids that are cached, ordered by latest occurrence."""
    last: dict[str, dict[str, str]] = {}
    for row in rows:
        last.pop(row["video_id"], None)
        last[row["video_id"]] = row
    return [row for vid, row in last.items() if vid not in cached]


def _resolve(root: str | Path, modality: str | None) -> Path:
    """The modality directory: ``root`` itself or ``root/modality``."""
    root = Path(root)
    if modality is not None and not (root / META_NAME).is_file() and (root / modality).is_dir():
        return root / modality
    return root


# --------------------------------------------------------------------------------------------------------------
# writer


class CacheWriter:
    """Append-only writer for one modality directory.

    Clips are buffered and written ``shard_size`` at a time as an atomic shard; :meth:`close` (or leaving the
    ``with`` block, also by an exception or KeyboardInterrupt) writes the buffered clips and ``failures.csv``.
    A writer that dies without closing loses only its buffered clips; rerun and it resumes.

    Args:
        root: The modality directory (created if missing).
        modality: ``video`` or ``audio``.
        attrs: Feature params (backbone, weights, dim, fps, image_size, sample_rate, …), JSON-serialisable;
            keys in :data:`PROVENANCE_KEYS` (``versions``) are recorded but do not have to match on resume.
        shard_size: Clips per shard.
        overwrite: If the directory holds features made with other params, delete its shards, failures and
            metadata instead of raising :class:`ParamsMismatch`. A cache with the same params is resumed.
        compression: Optional h5py compression of ``/emb`` (e.g. ``"gzip"``); default none (fastest reads).

    Raises:
        ParamsMismatch: The directory holds features made with other params and ``overwrite`` is False.
        CacheError: Another writer holds the directory, or a shard is unreadable or of a newer schema.
    """

    def __init__(self, root: str | Path, modality: str, attrs: Mapping[str, Any], shard_size: int = 256,
                 overwrite: bool = False, compression: str | None = None) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        if not modality or not isinstance(modality, str):
            raise ValueError(f"modality must be a non-empty string, got {modality!r}")
        reserved = _RESERVED_KEYS & set(attrs)
        if reserved:
            raise ValueError(f"cache attrs may not contain the reserved keys {sorted(reserved)}")
        self.root = Path(root)
        self.modality = modality
        self.attrs = _normalise_attrs(attrs)
        self.shard_size = shard_size
        self.compression = compression
        self._dim: int | None = self.attrs.get("dim") if isinstance(self.attrs.get("dim"), int) else None
        self._buf: list[ClipFeatures] = []
        self._failures: list[dict[str, str]] = []
        self._closed = False
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            self._open(overwrite)
        except BaseException:
            self._release_lock()
            raise

    # -- setup

    def _acquire_lock(self) -> Any:
        f = open(self.root / ".lock", "a+")  # noqa: SIM115 - held until close()
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise CacheError(f"{self.root}: another extraction is writing this cache") from None
        return f

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def _open(self, overwrite: bool) -> None:
        new = {"schema_version": SCHEMA_VERSION, "modality": self.modality, "attrs": self.attrs}
        old = _read_meta(self.root)
        shards = _shard_paths(self.root)
        if old is None and shards:  # metadata lost: fall back on the first shard's
            with _open_shard(shards[0][1]) as f:
                old = _shard_meta(f)
        if old is not None:
            _check_schema(int(old.get("schema_version", 0)), self.root)
            differ = _diff({"schema_version": old.get("schema_version"), "modality": old.get("modality"),
                            **_feature_params(old["attrs"])},
                           {"schema_version": SCHEMA_VERSION, "modality": self.modality,
                            **_feature_params(self.attrs)})
            if differ and not overwrite:
                raise ParamsMismatch(
                    f"{self.root} holds features made with other params: " + "; ".join(differ)
                    + ". Choose another --out or pass --overwrite to replace them.")
            if differ:
                self._wipe()
                old, shards = None, []
        for p in self.root.glob("*.tmp"):  # shards (or metadata) in flight when a writer died
            p.unlink(missing_ok=True)
        if old is None:
            _atomic_write_text(self.root / META_NAME, json.dumps(new, indent=2, sort_keys=True) + "\n")
        self._next = shards[-1][0] + 1 if shards else 0
        self._done: set[str] = set()
        for _, path in shards:
            with _open_shard(path) as f:
                _check_schema(_shard_meta(f)["schema_version"], path)
                self._done.update(_shard_index(f)[0])
                if self._dim is None and f["emb"].shape[1]:
                    self._dim = int(f["emb"].shape[1])
        self._earlier_failures = _read_failures(self.root / FAILURES_NAME)

    def _wipe(self) -> None:
        for _, p in _shard_paths(self.root):
            p.unlink()
        for name in (FAILURES_NAME, META_NAME):
            (self.root / name).unlink(missing_ok=True)
        for p in self.root.glob("*.tmp"):
            p.unlink(missing_ok=True)

    # -- API

    def done_ids(self) -> set[str]:
        """Ids already cached: in complete shards or added to this writer. Failed ids are not done (retried)."""
        return self._done | {c.video_id for c in self._buf}

    def add(self, clip: ClipFeatures) -> None:
        """Buffer one clip; a shard is written once ``shard_size`` clips are buffered.

        Raises:
            ValueError: Bad shapes, a dimension that differs from the cache's, rows for a clip without a
                stream, non-finite values (also after the float16 cast), or an id already cached.
            CacheError: The writer is closed.
        """
        if self._closed:
            raise CacheError(f"{self.root}: writer is closed")
        vid = str(clip.video_id)
        if not vid:
            raise ValueError("empty video_id")
        emb = np.asarray(clip.emb)
        t = np.asarray(clip.t)
        if emb.ndim != 2 or (emb.size and not np.issubdtype(emb.dtype, np.floating)):
            raise ValueError(f"{vid}: emb must be a (T, D) float array, got {emb.dtype} {emb.shape}")
        if t.shape != (emb.shape[0],):
            raise ValueError(f"{vid}: t must have shape ({emb.shape[0]},), got {t.shape}")
        if not clip.has_stream and emb.shape[0]:
            raise ValueError(f"{vid}: a clip without a stream must have 0 rows, got {emb.shape[0]}")
        dim = emb.shape[1]
        if dim < 1:
            raise ValueError(f"{vid}: embedding dimension must be >= 1")
        if self._dim is None:
            self._dim = dim
        elif dim != self._dim:
            raise ValueError(f"{vid}: embedding dimension {dim} differs from the cache's {self._dim}")
        if vid in self._done or any(c.video_id == vid for c in self._buf):
            raise ValueError(f"{vid}: already cached")
        with np.errstate(over="ignore"):  # overflow is reported below
            emb16 = emb.astype(np.float16)  # (T, D) a copy, so callers may reuse their buffers
        if not np.isfinite(emb16).all():
            raise ValueError(f"{vid}: embedding has NaN/inf values (float16 overflows above 65504)")
        duration = float(clip.duration)
        if not math.isfinite(duration):
            raise ValueError(f"{vid}: duration must be finite, got {duration}")
        self._buf.append(ClipFeatures(vid, emb16, t.astype(np.float32), bool(clip.has_stream), duration))
        if len(self._buf) >= self.shard_size:
            self._flush()

    def add_failure(self, path: str, video_id: str, stage: str, reason: str) -> None:
        """Record a clip that could not be extracted; appended to ``failures.csv`` at once (survives a kill).

        A later run retries it; :meth:`close` rewrites the file as the latest failure of each id not cached.
        """
        row = {"path": str(path), "video_id": str(video_id), "stage": str(stage), "reason": str(reason)}
        self._failures.append(row)
        path_csv = self.root / FAILURES_NAME
        new = not path_csv.is_file() or path_csv.stat().st_size == 0
        with open(path_csv, "a", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, FAILURE_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)

    def close(self) -> None:
        """Write the buffered clips as a last (partial) shard and rewrite ``failures.csv``; idempotent."""
        if self._closed:
            return
        try:
            if self._buf:
                self._flush()
            rows = _latest_failures(self._earlier_failures + self._failures, self._done)
            _atomic_write_text(self.root / FAILURES_NAME, _csv_text(rows))  # always present, maybe header only
        finally:
            self._closed = True
            self._release_lock()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # also on an exception: buffered clips are complete and are kept

    # -- shards

    def _flush(self) -> None:
        clips = self._buf
        final = self.root / f"shard-{self._next:05d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        self._write_shard(tmp, clips)
        _fsync_path(tmp)
        os.replace(tmp, final)
        self._next, self._buf = self._next + 1, []
        self._done.update(c.video_id for c in clips)
        _fsync_dir(self.root)

    def _write_shard(self, path: Path, clips: list[ClipFeatures]) -> None:
        dim = int(self._dim or 1)
        lengths = np.array([len(c.emb) for c in clips], np.int64)  # (C,)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (C,)
        n = int(lengths.sum())
        emb = np.concatenate([c.emb for c in clips]) if n else np.zeros((0, dim), np.float16)  # (N, D)
        t = np.concatenate([c.t for c in clips]) if n else np.zeros(0, np.float32)  # (N,)
        with h5py.File(path, "w", libver="earliest") as f:
            f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            f.attrs["modality"] = self.modality
            for key in sorted(self.attrs):
                f.attrs[key] = _h5_attr(self.attrs[key])
            f.attrs["attrs_json"] = json.dumps(self.attrs, sort_keys=True)
            f.create_dataset("emb", data=emb, dtype=np.float16, chunks=(min(n, _CHUNK_ROWS), dim) if n else None,
                             compression=self.compression if n else None, track_times=False)
            f.create_dataset("t", data=t, dtype=np.float32, track_times=False)
            g = f.create_group("index")
            g.create_dataset("video_id", data=[c.video_id for c in clips], dtype=h5py.string_dtype("utf-8"),
                             track_times=False)
            g.create_dataset("offset", data=offsets, track_times=False)
            g.create_dataset("length", data=lengths, track_times=False)
            g.create_dataset("has_stream", data=np.array([c.has_stream for c in clips], bool),
                             track_times=False)
            g.create_dataset("duration", data=np.array([c.duration for c in clips], np.float32),
                             track_times=False)
            f.flush()


def _h5_attr(value: Any) -> Any:
    """Scalars as themselves, anything else (None, dicts, lists) as a JSON string."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def _csv_text(rows: list[dict[str, str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, FAILURE_FIELDS)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------------
# reader


@dataclass(frozen=True)
class _Entry:
    shard: int
    offset: int
    length: int
    has_stream: bool
    duration: float


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
        meta = _read_meta(self.root)
        self.shards: list[Path] = [p for _, p in _shard_paths(self.root)]
        self._index: dict[str, _Entry] = {}
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        dim = 0
        for i, path in enumerate(self.shards):
            with _open_shard(path) as f:
                smeta = _shard_meta(f)
                _check_schema(smeta["schema_version"], path)
                if meta is None:
                    meta = smeta
                ids, off, length, has, dur = _shard_index(f)
                dim = dim or int(f["emb"].shape[1])
            for j, vid in enumerate(ids):
                self._index.pop(vid, None)
                self._index[vid] = _Entry(i, int(off[j]), int(length[j]), bool(has[j]), float(dur[j]))
        if meta is None:
            raise CacheError(f"{self.root}: no feature cache here (no {META_NAME} and no shards)")
        _check_schema(int(meta.get("schema_version", 0)), self.root)
        self.modality: str = str(meta.get("modality"))
        if modality is not None and self.modality != modality:
            raise CacheError(f"{self.root}: holds {self.modality} features, not {modality}")
        self.attrs: dict[str, Any] = dict(meta["attrs"])
        attr_dim = self.attrs.get("dim")
        self.dim: int = dim or (int(attr_dim) if isinstance(attr_dim, int) else 0)
        self.n_rows: int = sum(e.length for e in self._index.values())

    # -- Mapping

    def __getitem__(self, video_id: str) -> np.ndarray:
        """(T, D) float32 embeddings of ``video_id`` (T = 0 without a stream); one contiguous read."""
        e = self._index[video_id]
        if e.length == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._file(e.shard)["emb"][e.offset : e.offset + e.length].astype(np.float32)

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

    def clip(self, video_id: str) -> ClipFeatures:
        """Everything cached for ``video_id`` (``emb`` as float32)."""
        e = self._index[video_id]
        return ClipFeatures(video_id, self[video_id], self.times(video_id), e.has_stream, e.duration)

    # -- whole cache

    def failures(self) -> list[dict[str, str]]:
        """Rows of ``failures.csv`` (path, video_id, stage, reason): the latest per id, cached ids dropped."""
        return _latest_failures(_read_failures(self.root / FAILURES_NAME), self._index)

    def iter_rows(self, batch_rows: int = 65536) -> Iterator[np.ndarray]:
        """Stream all embedding rows in shard order as float32 blocks of at most ``batch_rows`` (B, D).

        Blocks do not span shards. Rows of ids superseded by a later shard (none in caches written by
        :class:`CacheWriter`) are included.
        """
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        for i in range(len(self.shards)):
            ds = self._file(i)["emb"]
            for start in range(0, ds.shape[0], batch_rows):
                yield ds[start : start + batch_rows].astype(np.float32)

    def _file(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: HDF5 handles must not be shared across processes
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(shard)
        if f is None:
            f = self._handles[shard] = _open_shard(self.shards[shard])
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


# --------------------------------------------------------------------------------------------------------------
# info


def _is_cache_dir(path: Path) -> bool:
    return (path / META_NAME).is_file() or bool(_shard_paths(path))


def info(root: str | Path) -> dict[str, dict[str, Any]]:
    """Summaries for ``cmmvt cache info PATH``, keyed by modality.

    Args:
        root: A modality directory, or a features root holding modality subdirectories (``video/``, ``audio/``).

    Returns:
        ``{modality: summary}``, one entry per cache found; a summary has ``path``, ``modality``, ``videos``,
        ``no_stream`` (videos without this stream), ``rows``, ``dim``, ``shards``, ``bytes`` (of the shards),
        ``failures`` (count, cached ids excluded), ``schema_version`` and ``attrs``.

    Raises:
        CacheError: No cache at ``root``.
    """
    root = Path(root)
    if _is_cache_dir(root):
        dirs = [root]
    else:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and _is_cache_dir(p)) if root.is_dir() else []
    if not dirs:
        raise CacheError(f"{root}: no feature cache here")
    out: dict[str, dict[str, Any]] = {}
    for d in dirs:
        with CacheReader(d) as r:
            meta = _read_meta(d)
            out[r.modality] = {
                "path": str(d),
                "modality": r.modality,
                "videos": len(r),
                "no_stream": sum(not e.has_stream for e in r._index.values()),
                "rows": r.n_rows,
                "dim": r.dim,
                "shards": len(r.shards),
                "bytes": sum(p.stat().st_size for p in r.shards),
                "failures": len(r.failures()),
                "schema_version": int(meta["schema_version"]) if meta else SCHEMA_VERSION,
                "attrs": r.attrs,
            }
    return out
