"""The files of one modality folder: their names (per writer), finding them, and the metadata file.

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
write one file and no lock is shared. Every writer and :class:`~cmmvt.features.cache.reader.CacheReader` read
all writers' shards as one cache; a writer numbers its shards after its own last one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cmmvt.features.cache.errors import CacheError


META_NAME = "cache.json"
FAILURES_NAME = "failures.csv"
RETRACTED_NAME = "retracted.json"
_SHARD_RE = re.compile(r"^shard-(\d{5,})(?:-w(\d+))?\.h5$")  # shard-00003.h5 (writer 0), shard-00003-w2.h5
_WRITER_RE = re.compile(r"-w(\d+)(?=\.|$)")  # the writer id in any file name (none: writer 0)


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


def _resolve(root: str | Path, modality: str | None) -> Path:
    """The modality directory: ``root`` itself or ``root/modality``."""
    root = Path(root)
    if modality is not None and not (root / META_NAME).is_file() and (root / modality).is_dir():
        return root / modality
    return root


def _is_cache_dir(path: Path) -> bool:
    return (path / META_NAME).is_file() or bool(_shard_paths(path))
