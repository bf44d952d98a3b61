"""Sharded, crash-safe HDF5 caches of per-frame embeddings: written once by ``extract``, read by every later stage.

Layout of one modality directory (e.g. ``data/features/video/``)::

    cache.json            feature params of the cache; a run with other params is refused before any work
    shard-00000.h5        complete shards of writer 0, never modified after the rename that published them
    shard-00001.h5
    shard-00000-w1.h5     complete shards of writer 1 (rank 1 of a torchrun job, or ``--shard 1/N``)
    failures.csv          path, video_id, stage, reason: clips writer 0 could not extract (``failures-w1.csv``: writer 1)
    retracted.json        {video_id: [shard names]}: rows of that id in those shards are void (its source file
                          changed; it is being, or has been, extracted again); ``retracted-w1.json``: writer 1's
    .lock                 held by writer 0 while it writes (``.lock-w1``: writer 1) (:class:`cmmvt.io.FolderLock`)

Several processes may write one folder at once, each as its own *writer* (its rank): every file it writes
carries its id (none for writer 0, so a one-process cache looks as it always did), so no two processes ever
write one file and no lock is shared. Every writer and :class:`CacheReader` read all writers' shards as one
cache; a writer numbers its shards after its own last one.

A shard is built in memory (HDF5 never writes to the disk itself), written to ``<name>.tmp`` with plain
file I/O, fsynced and renamed, so a SIGKILL at any moment loses at most the shard in flight, and a full disk, a
read-only or vanished folder is one :class:`WriteFault` naming what was kept, never a crash inside HDF5;
``*.tmp`` files are never read and are deleted by the writer that failed, by the next writer with its id, or by
any writer that finds its id's lock free. A shard is published
once it holds ``shard_size`` clips or ``shard_rows`` rows; a clip is never split, so a clip longer than the row
budget makes one larger shard, still atomic. Clips arrive in chunks (:meth:`CacheWriter.begin`,
:meth:`~CacheWriter.append`, :meth:`~CacheWriter.end`), so the extractor never holds a whole video's frames.
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
timestamps are stored). A resumed run numbers its shards after the writer's last complete one; the cache
content (id → rows) is the same as after an uninterrupted run, only the shard boundaries may differ.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> feats = pathlib.Path(tempfile.mkdtemp())
    >>> emb, t = np.ones((3, 512), np.float32), np.array([0.125, 0.375, 0.625], np.float32)  # (T, D), (T,)
    >>> with CacheWriter(feats / "video", "video", {"backbone": "resnet18", "dim": 512, "fps": 4.0}) as w:
    ...     w.add(ClipFeatures("clip1", emb, t, has_stream=True, duration=0.75))
    >>> with CacheReader(feats, "video") as r:
    ...     r["clip1"].shape, r.times("clip1").tolist()
    ((3, 512), [0.125, 0.375, 0.625])
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cmmvt.features.fingerprint import Fingerprint, is_current
from cmmvt.io import FolderLock, LockBusy, atomic_path, atomic_write, atomic_write_text


SCHEMA_VERSION = 2  # 2: per-clip source fingerprints; schema-1 clips count as stale (no fingerprint)
META_NAME = "cache.json"
FAILURES_NAME = "failures.csv"
RETRACTED_NAME = "retracted.json"
FAILURE_FIELDS = ("path", "video_id", "stage", "reason")
#: Attr keys that are provenance, not feature params: they may differ between runs that share a cache.
PROVENANCE_KEYS = frozenset({"versions", "library_versions", "engine"})  # recorded, never compared
_RESERVED_KEYS = frozenset({"schema_version", "modality", "attrs_json"})
_SHARD_RE = re.compile(r"^shard-(\d{5,})(?:-w(\d+))?\.h5$")  # shard-00003.h5 (writer 0), shard-00003-w2.h5
_WRITER_RE = re.compile(r"-w(\d+)(?=\.|$)")  # the writer id in any file name (none: writer 0)
_CHUNK_ROWS = 1024
_LOCK_WAIT = 2.0  # seconds a writer waits for its own lock
SHARD_ROWS = 16384  #: rows after which a shard is published (40 MiB of float16 at D = 1280)
_MISSING = "<missing>"


class CacheError(RuntimeError):
    """A feature cache cannot be used as asked (missing, corrupt, locked, made by a newer version)."""


class ParamsMismatch(CacheError):
    """The directory holds features made with other feature params."""


class WriteFault(CacheError):
    """The cache folder cannot be written (full disk, read-only or vanished folder); published shards stay valid."""


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
        source: Fingerprint of the file the rows were made from (``None``: unknown, e.g. a schema-1 shard).
    """

    video_id: str
    emb: np.ndarray  # (T, D) float16 or float32
    t: np.ndarray  # (T,) float32 seconds
    has_stream: bool = True
    duration: float = 0.0
    source: Fingerprint | None = None


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


def feature_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old → new`` for each feature param (provenance left out) in which two caches' attrs differ."""
    return _diff(_feature_params(_normalise_attrs(old)), _feature_params(_normalise_attrs(new)))


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


def writer_name(name: str, writer: int) -> str:
    """The name of writer ``writer``'s own copy of the file ``name``: writer 0 keeps it, others add ``-w<id>``.

    >>> writer_name("shard-00003.h5", 2), writer_name("failures.csv", 0), writer_name(".lock", 1)
    ('shard-00003-w2.h5', 'failures.csv', '.lock-w1')
    """
    if not writer:
        return name
    head, dot, ext = name.partition(".") if not name.startswith(".") else (name, "", "")
    return f"{head}-w{writer}{dot}{ext}"


def _writer_of(name: str) -> int:
    m = _WRITER_RE.search(name)
    return int(m.group(1)) if m else 0


def _shard_number(path: Path) -> int:
    return int(_SHARD_RE.match(path.name).group(1))


def _shard_paths(root: Path) -> list[Path]:
    """Complete shards of every writer of ``root``, by writer, then number (``*.tmp`` never match)."""
    if not root.is_dir():
        return []
    out = [p for p in root.iterdir() if _SHARD_RE.match(p.name) and p.is_file()]
    return sorted(out, key=lambda p: (_writer_of(p.name), _shard_number(p)))


def _writers_files(root: Path, name: str) -> list[Path]:
    """Every writer's copy of ``name`` (e.g. ``failures.csv``, ``failures-w1.csv``) in ``root``, by writer."""
    head, _, ext = name.partition(".")
    pattern = re.compile(rf"^{re.escape(head)}(?:-w\d+)?\.{re.escape(ext)}$")
    return sorted((p for p in root.glob(f"{head}*.{ext}") if pattern.match(p.name)), key=lambda p: _writer_of(p.name))


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


def _read_retracted(path: Path, shards: list[Path]) -> dict[str, set[str]]:
    """``{video_id: names of the shards whose rows of it are void}`` from one writer's retraction file.

    A number instead of names (written before there were several writers) voids the id's rows in writer 0's
    shards numbered below it.
    """
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(vid): ({p.name for p in shards if not _writer_of(p.name) and _shard_number(p) < v}
                           if isinstance(v, int) else {str(n) for n in v}) for vid, v in raw.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise CacheError(f"{path}: unreadable ({exc}); delete the cache folder and extract again") from None


def _all_retracted(root: Path, shards: list[Path]) -> dict[str, set[str]]:
    """Every writer's retractions of ``root``, united."""
    out: dict[str, set[str]] = {}
    for path in _writers_files(root, RETRACTED_NAME):
        for vid, names in _read_retracted(path, shards).items():
            out.setdefault(vid, set()).update(names)
    return out


@dataclass
class _Scan:
    """What the complete shards of a folder hold: live entries (last wins, retracted rows left out)."""

    meta: dict[str, Any] | None
    shards: list[Path]
    entries: dict[str, _Entry]
    dim: int


def _scan(root: Path) -> _Scan:
    """Read ``cache.json``, the index of every writer's complete shards and their retractions of a modality folder."""
    meta = _read_meta(root)
    shards = _shard_paths(root)
    retracted = _all_retracted(root, shards)
    entries: dict[str, _Entry] = {}
    dim = 0
    for path in shards:
        with _open_shard(path) as f:
            smeta = _shard_meta(f)
            _check_schema(smeta["schema_version"], path)
            if meta is None:
                meta = smeta
            for vid, e in _shard_entries(f, path.name).items():
                if path.name not in retracted.get(vid, ()):
                    entries.pop(vid, None)
                    entries[vid] = e
            dim = dim or int(f["emb"].shape[1])
    return _Scan(meta, shards, entries, dim)


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

    Clips are buffered and published as an atomic shard once ``shard_size`` clips or ``shard_rows`` rows are
    buffered; :meth:`close` (or leaving the ``with`` block, also by an exception or KeyboardInterrupt) publishes
    the buffered clips and rewrites ``failures.csv``. A clip arrives whole (:meth:`add`) or in chunks
    (:meth:`begin`, :meth:`append` …, :meth:`end`; :meth:`abort` drops it). A writer that dies without closing
    loses only its buffered clips; rerun and it resumes. A write that fails (full disk, read-only or vanished
    folder) removes its ``.tmp`` file and raises :class:`WriteFault`; published shards stay valid.

    Several writers with different ``writer`` ids may write one folder at once (the ranks of a job): each
    writes only its own files, and each sees every writer's complete shards as already cached when it opens.

    Args:
        root: The modality directory (created if missing).
        modality: ``video`` or ``audio``.
        attrs: Feature params (backbone, weights, dim, fps, image_size, sample_rate, …), JSON-serialisable;
            keys in :data:`PROVENANCE_KEYS` (``versions``) are recorded but do not have to match on resume.
        shard_size: Clips per shard.
        overwrite: If the directory holds features made with other params, delete its shards, failures and
            metadata instead of raising :class:`ParamsMismatch`. A cache with the same params is resumed.
        compression: Optional h5py compression of ``/emb`` (e.g. ``"gzip"``); default none (fastest reads).
        shard_rows: Rows after which a shard is published even with fewer than ``shard_size`` clips.
        writer: This writer's id (its rank); it names the files it writes (:func:`writer_name`).

    Raises:
        ParamsMismatch: The directory holds features made with other params and ``overwrite`` is False.
        CacheError: Another writer with this id holds the directory (or, to replace the cache, any other
            writer), or a shard is unreadable or of a newer schema.
        WriteFault: The directory cannot be created or written.
    """

    def __init__(self, root: str | Path, modality: str, attrs: Mapping[str, Any], shard_size: int = 256,
                 overwrite: bool = False, compression: str | None = None, shard_rows: int = SHARD_ROWS,
                 writer: int = 0) -> None:
        if shard_size < 1 or shard_rows < 1 or writer < 0:
            raise ValueError(f"shard_size and shard_rows must be >= 1 and writer >= 0, got {shard_size}, "
                             f"{shard_rows}, {writer}")
        if not modality or not isinstance(modality, str):
            raise ValueError(f"modality must be a non-empty string, got {modality!r}")
        reserved = _RESERVED_KEYS & set(attrs)
        if reserved:
            raise ValueError(f"cache attrs may not contain the reserved keys {sorted(reserved)}")
        self.root = Path(root)
        self.modality = modality
        self.attrs = _normalise_attrs(attrs)
        self.shard_size = shard_size
        self.shard_rows = shard_rows
        self.compression = compression
        self.writer = writer
        self._dim: int | None = self.attrs.get("dim") if isinstance(self.attrs.get("dim"), int) else None
        self._buf: list[ClipFeatures] = []
        self._open_clip: tuple[str, Fingerprint | None, list[np.ndarray], list[np.ndarray]] | None = None
        self._failures: list[dict[str, str]] = []
        self._closed = False
        self._broken = False
        self._lock = None
        self._entries: dict[str, _Entry] = {}
        with self._faults("create the cache folder"):
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = self._acquire_lock()
        try:
            self._open(overwrite)
        except BaseException:
            self._release_lock()
            raise

    # -- setup

    def _own(self, name: str) -> Path:
        """This writer's copy of ``name`` in the folder."""
        return self.root / writer_name(name, self.writer)

    def _acquire_lock(self) -> FolderLock:
        try:  # waits a moment: another writer may hold this lock for the milliseconds of :meth:`_idle_writers`
            return FolderLock(self.root, writer_name(".lock", self.writer), wait=_LOCK_WAIT).acquire()
        except LockBusy:
            raise CacheError(f"{self.root}: another extraction is writing this cache") from None

    @contextmanager
    def _idle_writers(self, strict: bool) -> Iterator[set[int]]:
        """Hold the locks of the other writers that left files here and are not running; yield their ids.

        Args:
            strict: Raise :class:`CacheError` if one of them is running.
        """
        ids = {_writer_of(p.name) for p in self.root.iterdir()} - {self.writer}
        held: dict[int, FolderLock] = {}
        try:
            for w in sorted(ids):
                try:
                    held[w] = FolderLock(self.root, writer_name(".lock", w)).acquire()
                except LockBusy:
                    if strict:
                        raise CacheError(f"{self.root}: writer {w} (another rank) is writing this cache") from None
            yield set(held)
        finally:
            for lock in held.values():
                lock.release()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _open(self, overwrite: bool) -> None:
        new = {"schema_version": SCHEMA_VERSION, "modality": self.modality, "attrs": self.attrs}
        old = _read_meta(self.root)
        shards = _shard_paths(self.root)
        if old is None and shards:  # metadata lost: fall back on the first shard's
            with _open_shard(shards[0]) as f:
                old = _shard_meta(f)
        with self._faults("prepare the cache folder"):
            if old is not None:
                _check_schema(int(old.get("schema_version", 0)), self.root)
                differ = _diff({"modality": old.get("modality"), **_feature_params(old["attrs"])},
                               {"modality": self.modality, **_feature_params(self.attrs)})
                if differ and not overwrite:
                    raise ParamsMismatch(
                        f"{self.root} holds features made with other params: " + "; ".join(differ)
                        + ". Choose another --out or pass --overwrite to replace them.")
                if differ:
                    self._wipe()
                    old = None
            with self._idle_writers(strict=False) as idle:  # files in flight when a writer died
                for p in self.root.glob("*.tmp"):
                    if _writer_of(p.name) in idle | {self.writer}:
                        p.unlink(missing_ok=True)
            if old is None or int(old.get("schema_version", 0)) != SCHEMA_VERSION:
                meta = json.dumps(new, indent=2, sort_keys=True) + "\n"
                with atomic_path(self.root / META_NAME, self._own(META_NAME + ".tmp")) as tmp:
                    tmp.write_text(meta, encoding="utf-8")
        scan = _scan(self.root)
        own = [_shard_number(p) for p in scan.shards if _writer_of(p.name) == self.writer]
        self._next = max(own) + 1 if own else 0
        self._entries = scan.entries
        self._retracted = _read_retracted(self._own(RETRACTED_NAME), scan.shards)
        if self._dim is None and scan.dim:
            self._dim = scan.dim
        self._earlier_failures = _read_failures(self._own(FAILURES_NAME))

    def _wipe(self) -> None:
        """Delete every writer's shards, failures, retractions and the metadata (no other writer may be running)."""
        with self._idle_writers(strict=True):
            for p in _shard_paths(self.root):
                p.unlink()
            for name in (FAILURES_NAME, RETRACTED_NAME):
                for p in _writers_files(self.root, name):
                    p.unlink()
            (self.root / META_NAME).unlink(missing_ok=True)
            for p in self.root.glob("*.tmp"):
                p.unlink(missing_ok=True)

    # -- API

    def done_ids(self) -> set[str]:
        """Ids already cached: in complete shards or added to this writer. Failed ids are not done (retried)."""
        return set(self._entries) | {c.video_id for c in self._buf}

    def sources(self) -> dict[str, Fingerprint | None]:
        """``{video_id: fingerprint of the file its rows were made from}`` for every cached id."""
        return {vid: e.source for vid, e in self._entries.items()} | {c.video_id: c.source for c in self._buf}

    def retract(self, video_ids: set[str] | list[str]) -> None:
        """Void the cached rows of ``video_ids`` (their source changed) so they can be extracted again.

        Recorded in ``retracted.json`` before anything else is written: readers never serve the old rows,
        even if the new extraction fails or is interrupted.
        """
        ids = [v for v in video_ids if v in self._entries]
        if not ids:
            return
        for v in ids:
            self._retracted.setdefault(v, set()).add(self._entries.pop(v).shard)
        path = self._own(RETRACTED_NAME)
        with self._faults(f"write {path.name}"):
            atomic_write_text(path, json.dumps({v: sorted(n) for v, n in self._retracted.items()}, indent=1,
                                               sort_keys=True))

    def add(self, clip: ClipFeatures) -> None:
        """Buffer one whole clip (see :meth:`begin`, :meth:`append`, :meth:`end` for the rules)."""
        self.begin(clip.video_id, clip.source)
        try:
            self.append(clip.emb, clip.t)
            self.end(clip.has_stream, clip.duration)
        finally:
            self._open_clip = None  # a clip that did not validate leaves nothing behind

    def begin(self, video_id: str, source: Fingerprint | None = None) -> None:
        """Start a clip whose rows will come in chunks.

        Raises:
            ValueError: Empty or already cached id, or another clip is still open.
            CacheError: The writer is closed.
        """
        if self._closed:
            raise CacheError(f"{self.root}: writer is closed")
        vid = str(video_id)
        if not vid:
            raise ValueError("empty video_id")
        if self._open_clip is not None:
            raise ValueError(f"{vid}: clip {self._open_clip[0]} is still open")
        if vid in self._entries or any(c.video_id == vid for c in self._buf):
            raise ValueError(f"{vid}: already cached")
        self._open_clip = (vid, source, [], [])

    def append(self, emb: np.ndarray, t: np.ndarray) -> None:
        """Add a chunk of rows to the open clip: ``emb`` (n, D) float, ``t`` (n,) seconds; stored as float16.

        Raises:
            ValueError: No open clip, bad shapes, a dimension that differs from the cache's, or non-finite
                values (also after the float16 cast).
        """
        if self._open_clip is None:
            raise ValueError("append() without begin()")
        vid, _, embs, ts = self._open_clip
        emb, t = np.asarray(emb), np.asarray(t)
        if emb.ndim != 2 or (emb.size and not np.issubdtype(emb.dtype, np.floating)):
            raise ValueError(f"{vid}: emb must be a (T, D) float array, got {emb.dtype} {emb.shape}")
        if t.shape != (emb.shape[0],):
            raise ValueError(f"{vid}: t must have shape ({emb.shape[0]},), got {t.shape}")
        dim = emb.shape[1]
        if dim < 1:
            raise ValueError(f"{vid}: embedding dimension must be >= 1")
        if self._dim is None:
            self._dim = dim
        elif dim != self._dim:
            raise ValueError(f"{vid}: embedding dimension {dim} differs from the cache's {self._dim}")
        with np.errstate(over="ignore"):  # overflow is reported below
            emb16 = emb.astype(np.float16)  # (n, D) a copy, so callers may reuse their buffers
        if not np.isfinite(emb16).all():
            raise ValueError(f"{vid}: embedding has NaN/inf values (float16 overflows above 65504)")
        embs.append(emb16)
        ts.append(t.astype(np.float32))

    def end(self, has_stream: bool = True, duration: float = 0.0) -> None:
        """Finish the open clip; a shard is published once the buffer is full.

        Raises:
            ValueError: No open clip, rows for a clip without a stream, or a non-finite duration.
            WriteFault: Publishing the shard failed.
        """
        if self._open_clip is None:
            raise ValueError("end() without begin()")
        vid, source, embs, ts = self._open_clip
        self._open_clip = None
        emb = np.concatenate(embs) if embs else np.zeros((0, self._dim or 1), np.float16)  # (T, D)
        if not has_stream and len(emb):
            raise ValueError(f"{vid}: a clip without a stream must have 0 rows, got {len(emb)}")
        duration = float(duration)
        if not math.isfinite(duration):
            raise ValueError(f"{vid}: duration must be finite, got {duration}")
        t = np.concatenate(ts) if ts else np.zeros(0, np.float32)  # (T,)
        self._buf.append(ClipFeatures(vid, emb, t, bool(has_stream), duration, source))
        if len(self._buf) >= self.shard_size or sum(len(c.emb) for c in self._buf) >= self.shard_rows:
            self._flush()

    def abort(self) -> None:
        """Drop the open clip's rows (its decoding failed part-way); nothing of it is written."""
        self._open_clip = None

    def add_failure(self, path: str, video_id: str, stage: str, reason: str) -> None:
        """Record a clip that could not be extracted; appended to ``failures.csv`` at once (survives a kill).

        A later run retries it; :meth:`close` rewrites the file as the latest failure of each id not cached.
        """
        row = {"path": str(path), "video_id": str(video_id), "stage": str(stage), "reason": str(reason)}
        self._failures.append(row)
        path_csv = self._own(FAILURES_NAME)
        with self._faults(f"append to {path_csv.name}"):
            new = not path_csv.is_file() or path_csv.stat().st_size == 0
            with open(path_csv, "a", encoding="utf-8", newline="") as f:
                w = csv.DictWriter(f, FAILURE_FIELDS)
                if new:
                    w.writeheader()
                w.writerow(row)

    def close(self) -> None:
        """Publish the buffered clips as a last (partial) shard and rewrite ``failures.csv``; idempotent.

        After a :class:`WriteFault` nothing more is written: the buffered clips are dropped (a rerun
        extracts them) and the lock is released.
        """
        if self._closed:
            return
        try:
            if self._buf and not self._broken:
                self._flush()
            if not self._broken:
                rows = _latest_failures(self._earlier_failures + self._failures, self.done_ids())
                path = self._own(FAILURES_NAME)
                with self._faults(f"write {path.name}"):
                    atomic_write_text(path, _csv_text(rows))  # always present
        finally:
            self._closed = True
            self._release_lock()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # also on an exception: buffered clips are complete and are kept

    # -- shards

    def _faults(self, what: str) -> _FaultGuard:
        return _FaultGuard(self, what)

    def _fault_message(self, what: str, exc: OSError) -> str:
        kept = len(_shard_paths(self.root))
        reason = exc.strerror or type(exc).__name__
        lost = f"; the {len(self._buf)} clips in flight will be extracted again" if self._buf else ""
        return (f"{self.root}: cannot {what}: {reason}. Kept {kept} complete shards ({len(self._entries)} clips)"
                f"{lost}. Free space or fix the folder, then rerun the same command to resume.")

    def _flush(self) -> None:
        clips = self._buf
        final = self._own(f"shard-{self._next:05d}.h5")
        with self._faults(f"write {final.name}"):
            atomic_write(final, self._shard_bytes(clips))
        offset = 0
        for c in clips:
            self._entries[c.video_id] = _Entry(final.name, offset, len(c.emb), c.has_stream, c.duration, c.source)
            offset += len(c.emb)
        self._next, self._buf = self._next + 1, []

    def _shard_bytes(self, clips: list[ClipFeatures]) -> bytes:
        """The HDF5 file of ``clips``, built in memory (HDF5 never touches the disk, so I/O errors are Python's)."""
        dim = int(self._dim or 1)
        lengths = np.array([len(c.emb) for c in clips], np.int64)  # (C,)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (C,)
        n = int(lengths.sum())
        emb = np.concatenate([c.emb for c in clips]) if n else np.zeros((0, dim), np.float16)  # (N, D)
        t = np.concatenate([c.t for c in clips]) if n else np.zeros(0, np.float32)  # (N,)
        src = [c.source for c in clips]
        buf = io.BytesIO()
        with h5py.File(buf, "w", libver="earliest") as f:
            f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            f.attrs["modality"] = self.modality
            for key in sorted(self.attrs):
                f.attrs[key] = _h5_attr(self.attrs[key])
            f.attrs["attrs_json"] = json.dumps(self.attrs, sort_keys=True)
            f.create_dataset("emb", data=emb, dtype=np.float16, chunks=(min(n, _CHUNK_ROWS), dim) if n else None,
                             compression=self.compression if n else None, track_times=False)
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


class _FaultGuard:
    """Turns an ``OSError`` inside the block into one :class:`WriteFault` line and stops further writes."""

    def __init__(self, writer: CacheWriter, what: str) -> None:
        self.writer, self.what = writer, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, OSError):
            self.writer._broken = True
            raise WriteFault(self.writer._fault_message(self.what, exc)) from exc
        return False


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
        ``failures`` (count, cached ids excluded), ``stale`` (ids whose source file changed since extraction,
        or whose fingerprint is unknown: the next ``extract`` redoes them), ``schema_version`` and ``attrs``.

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
                "stale": len(r.stale()),
                "schema_version": int(meta["schema_version"]) if meta else SCHEMA_VERSION,
                "attrs": r.attrs,
            }
    return out
