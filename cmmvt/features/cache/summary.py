"""The summary of the caches under a folder, behind ``cmmvt cache info PATH``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmmvt.features.cache.errors import CacheError
from cmmvt.features.cache.layout import _is_cache_dir, _read_meta
from cmmvt.features.cache.reader import CacheReader
from cmmvt.features.cache.shards import SCHEMA_VERSION


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
