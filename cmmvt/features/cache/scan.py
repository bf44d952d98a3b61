"""The live index of a modality folder: every writer's complete shards, less the rows their retractions void."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmmvt.features.cache.errors import CacheError
from cmmvt.features.cache.layout import (
    RETRACTED_NAME,
    _read_meta,
    _shard_number,
    _shard_paths,
    _writer_of,
    _writers_files,
)
from cmmvt.features.cache.shards import _check_schema, _Entry, _open_shard, _shard_entries, _shard_meta


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
