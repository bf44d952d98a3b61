"""The append-only :class:`CacheWriter`: its lock, resume, retractions, failure log and atomic shard publication.

A shard is built in memory (HDF5 never writes to the disk itself), written to ``<name>.tmp`` with plain
file I/O, fsynced and renamed, so a SIGKILL at any moment loses at most the shard in flight, and a full disk, a
read-only or vanished folder is one :class:`~cmmvt.features.cache.errors.WriteFault` naming what was kept, never
a crash inside HDF5; ``*.tmp`` files are never read and are deleted by the writer that failed, by the next writer
with its id, or by any writer that finds its id's lock free. A shard is published
once it holds ``shard_size`` clips or ``shard_rows`` rows; a clip is never split, so a clip longer than the row
budget makes one larger shard, still atomic. Clips arrive in chunks (:meth:`CacheWriter.begin`,
:meth:`~CacheWriter.append`, :meth:`~CacheWriter.end`), so the extractor never holds a whole video's frames.

A resumed run numbers its shards after the writer's last complete one; the cache content (id → rows) is the
same as after an uninterrupted run, only the shard boundaries may differ.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cmmvt.features.cache.errors import CacheError, ParamsMismatch, WriteFault
from cmmvt.features.cache.failures import FAILURE_FIELDS, _csv_text, _latest_failures, _read_failures
from cmmvt.features.cache.layout import (
    FAILURES_NAME,
    META_NAME,
    RETRACTED_NAME,
    _read_meta,
    _shard_number,
    _shard_paths,
    _writer_of,
    _writers_files,
    writer_name,
)
from cmmvt.features.cache.params import _diff, _feature_params, _normalise_attrs
from cmmvt.features.cache.scan import _read_retracted, _scan
from cmmvt.features.cache.shards import (
    _RESERVED_KEYS,
    SCHEMA_VERSION,
    ClipFeatures,
    _check_schema,
    _Entry,
    _open_shard,
    _shard_bytes,
    _shard_meta,
)
from cmmvt.features.fingerprint import Fingerprint
from cmmvt.io import FolderLock, LockBusy, atomic_path, atomic_write, atomic_write_text


_LOCK_WAIT = 2.0  # seconds a writer waits for its own lock
SHARD_ROWS = 16384  #: rows after which a shard is published (40 MiB of float16 at D = 1280)


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
            keys in :data:`~cmmvt.features.cache.params.PROVENANCE_KEYS` (``versions``) are recorded but do not
            have to match on resume.
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
            atomic_write(final, _shard_bytes(clips, self.modality, self.attrs, self._dim, self.compression))
        offset = 0
        for c in clips:
            self._entries[c.video_id] = _Entry(final.name, offset, len(c.emb), c.has_stream, c.duration, c.source)
            offset += len(c.emb)
        self._next, self._buf = self._next + 1, []


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
