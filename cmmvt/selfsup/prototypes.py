"""k-means prototypes per modality on the cached frozen-CNN embeddings (``data/prototypes.h5``).

Each modality is clustered on its own: the video clusters are the pseudo-labels (XDC) or
prototypes (ProtoNCE) that teach the audio encoder, and vice versa. By default a clip is one
point, the mean over time of its rows; with ``frame_level=True`` every row is a point, and a
clip's assignment is the majority vote of its rows (ties: the lowest cluster index).

Each modality's single rows are also clustered on their own (``k_rows`` clusters, ``prototypes.k_rows``): the
per-row targets of masked audio-visual prediction (``pretrain.objective: mask``; HuBERT's k-means targets of
frame features, Hsu et al. 2021, used per modality as in AV-HuBERT, Shi et al. 2022). A row's target is its
nearest row centroid (:meth:`Prototypes.row_targets`).

Clips without the stream (``has_stream`` False, e.g. no audio track), without rows, or absent
from the cache are skipped for that modality: they have no assignment there
(:meth:`Prototypes.labels_for` gives -1), and cross-modal losses exclude them.

Memory: clip-level clustering holds the (N, D) float32 clip means. Frame-level clustering holds
all selected rows (float32) only up to ``minibatch_threshold`` rows; above it, MiniBatchKMeans is
initialised with k-means++ on a random sample of rows and then streamed over float32 blocks
(:meth:`~cmmvt.features.cache.CacheReader.iter_rows` when the selection covers the whole cache, else the
selected clips read a block at a time); nothing is ever copied to float64 as a whole.

File layout (``write``/``read``)::

    attrs              schema_version, modalities (JSON list)
    /<modality>/centroids    (k, D) float32   in the frozen-CNN feature space of that modality
    /<modality>/ids          (N,) utf-8       clips with the stream, in clustering order
    /<modality>/assignments  (N,) int64       cluster of each clip, in [0, k)
    /<modality>/row_centroids (k_rows, D) float32  k-means of single rows (targets of masked prediction)
    /<modality> attrs        k, inertia, frame_level, seed, dim, feature_attrs_json

Example (needs clips or caches on disk, so not run as a doctest)::

    res = fit("data/features", ids, k_video=10, k_audio=10, seed=0)
    write("data/prototypes.h5", res)
    y_audio = read("data/prototypes.h5")["audio"].labels_for(batch_ids)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import normalized_mutual_info_score

from cmmvt.features.cache import CacheReader
from cmmvt.io import atomic_path

__all__ = ["Prototypes", "clip_means", "kmeans", "fit", "write", "read", "cluster_quality",
           "MINIBATCH_THRESHOLD", "N_INIT"]

SCHEMA_VERSION = 2  # 2: row_centroids
#: k-means restarts (best inertia kept) for full-batch KMeans; fixed so a seed fixes the result.
N_INIT = 10
#: Points above which MiniBatchKMeans replaces full-batch KMeans.
MINIBATCH_THRESHOLD = 20000
#: MiniBatchKMeans restarts and mini-batch size.
_MB_N_INIT = 3
_MB_BATCH = 4096
#: Passes over the rows when streaming frame-level MiniBatchKMeans.
_STREAM_PASSES = 2
#: Rows sampled (at least 3k) to initialise streamed MiniBatchKMeans with k-means++.
_INIT_ROWS = 20000


@dataclass
class Prototypes:
    """k-means result of one modality.

    Attributes:
        modality: ``video`` or ``audio``.
        centroids: (k, D) float32 cluster centres in the modality's frozen-CNN feature space.
        ids: The N clustered clips (those with the stream), in order.
        assignments: (N,) int64 cluster of each clip in ``ids``.
        inertia: Sum of squared distances of the points (clip means, or rows if ``frame_level``) to
            their nearest centroid.
        k: Number of clusters.
        frame_level: True if rows, not clip means, were clustered.
        seed: The k-means random state.
        feature_attrs: Params of the feature cache that was clustered (backbone, dim, fps, …).
        row_centroids: (k_rows, D) float32 k-means centres of single rows; None in files written before them.
    """

    modality: str
    centroids: np.ndarray  # (k, D) float32
    ids: list[str]
    assignments: np.ndarray  # (N,) int64
    inertia: float
    k: int
    frame_level: bool = False
    seed: int = 0
    feature_attrs: dict[str, Any] = field(default_factory=dict)
    row_centroids: np.ndarray | None = None  # (k_rows, D) float32

    def row_targets(self, rows: np.ndarray) -> np.ndarray:
        """The nearest row centroid of each row: ``rows`` (..., D) → (...,) int64.

        Raises:
            ValueError: The file predates row clusters.
        """
        if self.row_centroids is None:
            raise ValueError(f"{self.modality} prototypes have no row clusters (written by an older cmmvt): "
                             "rerun the prototypes stage (`dvc repro prototypes`)")
        c = self.row_centroids
        flat = np.asarray(rows, np.float32).reshape(-1, c.shape[1])  # (R, D)
        lab, _ = _nearest(flat, c, (c * c).sum(1)[None, :])
        return lab.astype(np.int64).reshape(np.shape(rows)[:-1])

    def labels_for(self, ids: Iterable[str]) -> np.ndarray:
        """(len(ids),) int64 assignments of ``ids``; -1 for clips not clustered (no such stream)."""
        pos = {v: i for i, v in enumerate(self.ids)}
        return np.array([self.assignments[pos[v]] if v in pos else -1 for v in ids], np.int64)


# --------------------------------------------------------------------------------------------------------------
# points


def _usable(reader: CacheReader, ids: Iterable[str] | None) -> list[str]:
    """The ids (default: all cached) that are cached and have the stream, de-duplicated, in order."""
    ids = reader.ids if ids is None else ids
    out, seen = [], set()
    for vid in ids:
        if vid in seen or vid not in reader or not reader.has_stream(vid):
            continue
        seen.add(vid)
        out.append(vid)
    return out


def clip_means(reader: CacheReader, ids: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Mean over time of each clip's rows.

    Args:
        reader: One modality's cache.
        ids: Clips to use (default: all cached); ids without the stream, with no rows or not in
            the cache are skipped.

    Returns:
        ``(ids_with_stream, X (N, D) float32)``, row i the mean embedding of ``ids_with_stream[i]``.
    """
    kept: list[str] = []
    X = np.zeros((0, reader.dim), np.float32)
    rows: list[np.ndarray] = []
    for vid in _usable(reader, ids):
        x = reader[vid]  # (T, D) float32
        if len(x) == 0:
            continue
        kept.append(vid)
        rows.append(x.mean(axis=0, dtype=np.float64).astype(np.float32))  # (D,)
    if rows:
        X = np.stack(rows)  # (N, D)
    return kept, X


# --------------------------------------------------------------------------------------------------------------
# k-means


def _check_k(n: int, k: int, what: str) -> None:
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if n < k:
        raise ValueError(f"cannot make {k} clusters from {n} {what}")


def kmeans(X: np.ndarray, k: int, seed: int = 0,
           minibatch_threshold: int = MINIBATCH_THRESHOLD) -> tuple[np.ndarray, np.ndarray, float]:
    """k-means on in-memory points, deterministic for a seed.

    Full-batch :class:`sklearn.cluster.KMeans` (k-means++, ``n_init`` = :data:`N_INIT`) up to
    ``minibatch_threshold`` points, :class:`~sklearn.cluster.MiniBatchKMeans` above (Sculley 2010).
    float32 input stays float32 (no float64 copy).

    Args:
        X: (N, D) points, float32 (other dtypes are converted to float32).
        k: Number of clusters, 2 <= k <= N.
        seed: Random state.
        minibatch_threshold: Largest N clustered with full-batch KMeans.

    Returns:
        ``(centroids (k, D) float32, assignments (N,) int64, inertia)``.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be (N, D), got shape {X.shape}")
    _check_k(len(X), k, "points")
    if len(X) <= minibatch_threshold:
        km = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=_MB_N_INIT, batch_size=_MB_BATCH, random_state=seed)
    km.fit(X)
    return (km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64), float(km.inertia_))


def _nearest(x: np.ndarray, c: np.ndarray, c2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (B,), squared distances (B,)) of rows ``x`` (B, D) to centroids ``c`` (k, D)."""
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ c.T) + c2  # (B, k) float32
    lab = d.argmin(1)
    return lab, np.maximum(d[np.arange(len(x)), lab], 0.0)


def _rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Blocks of exactly ``size`` rows (the last may be smaller), from blocks of any size."""
    buf: list[np.ndarray] = []
    n = 0
    for b in blocks:
        buf.append(b)
        n += len(b)
        while n >= size:
            cat = np.concatenate(buf) if len(buf) > 1 else buf[0]
            yield cat[:size]
            buf, n = [cat[size:]], n - size
    if n:
        yield np.concatenate(buf)


def _frame_kmeans(reader: CacheReader, ids: list[str], k: int, seed: int, minibatch_threshold: int,
                  batch_rows: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Frame-level k-means over the rows of ``ids``; clip assignment = majority vote of its rows."""
    lengths = np.array([len(reader.times(v)) for v in ids], np.int64)  # (N,) rows per clip
    total = int(lengths.sum())
    _check_k(total, k, "rows")
    if total <= minibatch_threshold:
        rows = np.concatenate([reader[v] for v in ids])  # (R, D) float32, R <= threshold
        centroids, row_lab, inertia = kmeans(rows, k, seed, minibatch_threshold)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        assign = np.array([np.bincount(row_lab[a:b], minlength=k).argmax()
                           for a, b in zip(bounds[:-1], bounds[1:])], np.int64)
        return centroids, assign, inertia

    rng = np.random.default_rng(seed)
    # k-means++ initialisation on a random sample of rows drawn from many random clips (the cache order
    # may be by class); at most ~``want`` rows are held
    want = max(_INIT_ROWS, 3 * k)
    per_clip = 2 * -(-want // len(ids))  # rows kept per visited clip
    sample, got = [], 0
    for i in rng.permutation(len(ids)):
        x = reader[ids[i]]  # (T, D) float32
        if len(x) > per_clip:
            x = x[np.sort(rng.choice(len(x), size=per_clip, replace=False))]
        sample.append(x)
        got += len(x)
        if got >= want:
            break
    sample_x = np.concatenate(sample)  # (<= want + per_clip, D)
    init, _, _ = kmeans(sample_x, k, seed, minibatch_threshold=len(sample_x))  # full k-means++ on the sample
    block = max(batch_rows, 3 * k)
    # no random reassignment of "small" centres: the stream may be ordered (e.g. by class), so a centre
    # unseen in the current blocks is not a dead one
    mb = MiniBatchKMeans(n_clusters=k, init=init, n_init=1, batch_size=min(block, _MB_BATCH),
                         reassignment_ratio=0.0, random_state=seed)
    idset = set(ids)
    whole = all(v in idset for v in reader.ids if reader.has_stream(v))
    for _ in range(_STREAM_PASSES):
        if whole:  # contiguous shard reads
            source: Iterable[np.ndarray] = reader.iter_rows(block)
        else:  # only the selected clips, in a fresh random order each pass
            source = (reader[ids[i]] for i in rng.permutation(len(ids)))
        for b in _rechunk(source, block):
            mb.partial_fit(b[rng.permutation(len(b))])
    centroids = mb.cluster_centers_.astype(np.float32)  # (k, D)
    c2 = (centroids * centroids).sum(1)[None, :]  # (1, k)
    assign = np.empty(len(ids), np.int64)
    inertia = 0.0
    for i, v in enumerate(ids):
        lab, d = _nearest(reader[v], centroids, c2)
        assign[i] = np.bincount(lab, minlength=k).argmax()
        inertia += float(d.sum(dtype=np.float64))
    return centroids, assign, inertia


def fit(features_root: str | Path, ids: Iterable[str] | None = None, k_video: int = 10, k_audio: int = 10,
        seed: int = 0, frame_level: bool = False, minibatch_threshold: int = MINIBATCH_THRESHOLD,
        batch_rows: int = 65536, modalities: Sequence[str] = ("video", "audio"), k_rows: int | None = None
        ) -> dict[str, Prototypes]:
    """k-means prototypes of each modality's cache.

    Args:
        features_root: The features root holding ``video/`` and ``audio/`` caches (``extract.out``).
        ids: Clips to cluster (e.g. the training split; default all cached). Per modality, clips
            without that stream are skipped.
        k_video: Clusters of the video embeddings.
        k_audio: Clusters of the audio embeddings.
        seed: Random state (the same seed gives the same prototypes).
        frame_level: Cluster every row instead of clip means; a clip's assignment is then the
            majority vote of its rows.
        minibatch_threshold: Above this many points, MiniBatchKMeans (streamed when frame-level).
        batch_rows: Rows per streamed block (frame-level MiniBatchKMeans).
        modalities: Which caches to cluster.
        k_rows: Clusters of single rows per modality (:attr:`Prototypes.row_centroids`); None: not clustered.

    Returns:
        ``{modality: Prototypes}``.

    Raises:
        CacheError: A modality's cache is missing.
        ValueError: Fewer clips (rows) with the stream than clusters.
    """
    ids = None if ids is None else list(ids)
    ks = {"video": k_video, "audio": k_audio}
    out: dict[str, Prototypes] = {}
    for m in modalities:
        if m not in ks:
            raise ValueError(f"unknown modality {m!r}; expected one of {sorted(ks)}")
        with CacheReader(features_root, m) as r:
            try:
                if frame_level:
                    kept = [v for v in _usable(r, ids) if len(r.times(v)) > 0]
                    centroids, assign, inertia = _frame_kmeans(r, kept, ks[m], seed, minibatch_threshold,
                                                               batch_rows)
                else:
                    kept, X = clip_means(r, ids)
                    centroids, assign, inertia = kmeans(X, ks[m], seed, minibatch_threshold)
                rows = None
                if k_rows is not None:
                    with_rows = [v for v in kept if len(r.times(v)) > 0]
                    n_rows = sum(len(r.times(v)) for v in with_rows)  # a tiny set gets as many clusters as rows
                    rows, _, _ = _frame_kmeans(r, with_rows, min(k_rows, n_rows), seed, minibatch_threshold,
                                               batch_rows)
            except ValueError as exc:
                raise ValueError(f"{m}: {exc} (of clips with a {m} stream)") from None
            out[m] = Prototypes(m, centroids, kept, assign, inertia, ks[m], frame_level, seed, dict(r.attrs), rows)
    return out


# --------------------------------------------------------------------------------------------------------------
# file


def write(path: str | Path, result: dict[str, Prototypes]) -> None:
    """Write prototypes to an HDF5 file atomically (``path.tmp`` then rename); reproducible bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="earliest", track_order=True) as f:
        f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        f.attrs["modalities"] = json.dumps(list(result))
        for m, p in result.items():
            g = f.create_group(m)
            c = np.asarray(p.centroids, np.float32)
            g.create_dataset("centroids", data=c, track_times=False)
            g.create_dataset("ids", data=np.array(list(p.ids), dtype=object),
                             dtype=h5py.string_dtype("utf-8"), shape=(len(p.ids),), track_times=False)
            g.create_dataset("assignments", data=np.asarray(p.assignments, np.int64), track_times=False)
            if p.row_centroids is not None:
                g.create_dataset("row_centroids", data=np.asarray(p.row_centroids, np.float32), track_times=False)
            g.attrs["modality"] = p.modality
            g.attrs["k"] = np.int64(p.k)
            g.attrs["inertia"] = float(p.inertia)
            g.attrs["frame_level"] = bool(p.frame_level)
            g.attrs["seed"] = np.int64(p.seed)
            g.attrs["dim"] = np.int64(c.shape[1] if c.ndim == 2 else 0)
            g.attrs["feature_attrs_json"] = json.dumps(p.feature_attrs, sort_keys=True)
        f.flush()


def read(path: str | Path) -> dict[str, Prototypes]:
    """Read prototypes written by :func:`write`: ``{modality: Prototypes}``.

    Raises:
        ValueError: The file is not a cmmvt prototypes file or of a newer schema.
    """
    with h5py.File(path, "r", locking=False) as f:
        try:
            version = int(f.attrs["schema_version"])
            modalities = json.loads(f.attrs["modalities"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a cmmvt prototypes file ({exc})") from None
        if version > SCHEMA_VERSION:
            raise ValueError(f"{path}: prototypes schema {version} is newer than this cmmvt's ({SCHEMA_VERSION})")
        out = {}
        for m in modalities:
            g = f[m]
            out[m] = Prototypes(
                modality=str(g.attrs["modality"]),
                centroids=g["centroids"][()].astype(np.float32),
                ids=[str(s) for s in g["ids"].asstr()[()]],
                assignments=g["assignments"][()].astype(np.int64),
                inertia=float(g.attrs["inertia"]),
                k=int(g.attrs["k"]),
                frame_level=bool(g.attrs["frame_level"]),
                seed=int(g.attrs["seed"]),
                feature_attrs=json.loads(g.attrs["feature_attrs_json"]),
                row_centroids=g["row_centroids"][()].astype(np.float32) if "row_centroids" in g else None,
            )
    return out


# --------------------------------------------------------------------------------------------------------------
# quality


def cluster_quality(assignments: Sequence[int] | np.ndarray, labels: Sequence[Any] | np.ndarray) -> dict[str, float]:
    """Agreement of clusters with ground-truth classes (for reports; labels are never used to fit).

    Args:
        assignments: (N,) cluster of each clip.
        labels: (N,) class of each clip (ints or strings).

    Returns:
        ``{"nmi": normalized mutual information (arithmetic mean normalisation), "purity": share of
        clips whose class is their cluster's majority class}``, both in [0, 1].
    """
    a = np.asarray(assignments)
    y = np.asarray(labels)
    if a.shape != y.shape or a.ndim != 1:
        raise ValueError(f"assignments and labels must both be (N,), got {a.shape} and {y.shape}")
    if len(a) == 0:
        raise ValueError("cluster_quality needs at least one clip")
    _, ai = np.unique(a, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    table = np.zeros((ai.max() + 1, yi.max() + 1), np.int64)  # (clusters, classes) contingency
    np.add.at(table, (ai, yi), 1)
    purity = float(table.max(axis=1).sum() / len(a))
    return {"nmi": float(normalized_mutual_info_score(yi, ai)), "purity": purity}


def stage(p: Any) -> dict[str, float]:
    """The ``prototypes`` stage, for ``stages/prototypes.py`` and ``cmmvt prototypes`` alike: :func:`build` into
    ``paths.prototypes``, the metrics into ``<paths.reports>/prototypes/metrics.json``, one summary line printed.

    Returns:
        The metrics.
    """
    m = build(p, p.paths.prototypes, f"{p.paths.reports}/prototypes/metrics.json")
    print(", ".join(f"{k} {v:.3f}" for k, v in m.items()), file=sys.stderr, flush=True)
    return m


def build(p: Any, out: str | Path | None = None, metrics_path: str | Path | None = None) -> dict[str, float]:
    """The ``prototypes`` stage: k-means on the clips pretraining reads (``pretrain.splits``, by default train,
    val and the unlabelled pool; the test split is held out), then NMI/purity against the labels of its
    labelled clips.

    The labels are read for insight only: they never reach the clustering or any training.

    Args:
        p: :class:`cmmvt.config.Params` (``prototypes.*``, ``seed``, ``data.manifest``, ``extract.out``).
        out: The prototypes file (default ``paths.prototypes``).
        metrics_path: Where to write ``{video/nmi, video/purity, audio/nmi, audio/purity}`` (None: don't).

    Returns:
        The metrics.
    """
    out = out or p.paths.prototypes
    from cmmvt.data import manifest as manifest_mod

    df = manifest_mod.read(p.data.manifest)
    df = df[df["split"].isin(p.pretrain.splits)]
    result = fit(p.extract.out, df["video_id"].tolist(), p.prototypes.k_video, p.prototypes.k_audio, p.seed,
                 p.prototypes.frame_level, p.prototypes.minibatch_threshold, k_rows=p.prototypes.k_rows)
    write(out, result)
    label_of = dict(zip(df["video_id"], df["label"]))
    metrics = {}
    for m, proto in result.items():
        labelled = [j for j, i in enumerate(proto.ids) if label_of[i]]  # the unlabelled pool has no class to agree with
        if labelled:  # none when pretrain.splits is the pool alone
            quality = cluster_quality(proto.assignments[labelled], [label_of[proto.ids[j]] for j in labelled])
            metrics |= {f"{m}/{k}": v for k, v in quality.items()}
    if metrics_path is not None:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
