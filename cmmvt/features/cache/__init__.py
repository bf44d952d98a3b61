"""Sharded, crash-safe HDF5 caches of per-frame embeddings: written once by ``extract``, read by every later stage.

One concept per file:

* :mod:`~cmmvt.features.cache.layout`: the files of a modality folder (``cache.json``, shards, failures,
  retractions, locks), their names per writer, finding them.
* :mod:`~cmmvt.features.cache.shards`: the HDF5 shard format: :class:`ClipFeatures` packed into an in-memory
  file, its attrs and index read back, the schema version.
* :mod:`~cmmvt.features.cache.params`: feature params (attrs): normalised and compared, provenance left out.
* :mod:`~cmmvt.features.cache.scan`: the live index of a folder: every writer's shards less their retractions.
* :mod:`~cmmvt.features.cache.failures`: the ``failures.csv`` log of clips that could not be extracted.
* :mod:`~cmmvt.features.cache.writer`: :class:`CacheWriter`: its lock, resume, retractions, failure log and
  atomic, crash-safe shard publication.
* :mod:`~cmmvt.features.cache.reader`: :class:`CacheReader`: a read-only ``video_id → (T, D)`` mapping.
* :mod:`~cmmvt.features.cache.summary`: :func:`info`, the summary behind ``cmmvt cache info``.
* :mod:`~cmmvt.features.cache.errors`: :class:`CacheError`, :class:`ParamsMismatch`, :class:`WriteFault`.

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

from cmmvt.features.cache.errors import CacheError, ParamsMismatch, WriteFault
from cmmvt.features.cache.params import feature_diff
from cmmvt.features.cache.reader import CacheReader
from cmmvt.features.cache.shards import SCHEMA_VERSION, ClipFeatures
from cmmvt.features.cache.summary import info
from cmmvt.features.cache.writer import CacheWriter

__all__ = ["SCHEMA_VERSION", "CacheError", "CacheReader", "CacheWriter", "ClipFeatures", "ParamsMismatch",
           "WriteFault", "feature_diff", "info"]
