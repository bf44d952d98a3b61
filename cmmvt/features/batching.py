"""Cross-clip CNN batching, and each rank's share of the clips.

:func:`embed_pieces` embeds the rows of a stream of pieces (:mod:`cmmvt.features.pieces`) in batches of
``extract.batch_size`` across clips and streams them, clip by clip, into the cache writer (or memory, for
:func:`cmmvt.features.extract.clip_features`), counting what it did in a :class:`Summary`.

Several processes share the work as the ranks of a :class:`cmmvt.distributed.World` (torchrun, or
``--shard i/N``): every rank gets the same item list, takes its share (:func:`share`: balanced by duration,
deterministic) and writes its own shard files (``CacheWriter(writer=rank)``); the cache is read as one.
Under ONNX Runtime (the default engine) each row is independent of its batch neighbours and of the thread
count, so a run with N ranks caches the rows of a one-process run bit for bit (tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from cmmvt import distributed, media
from cmmvt.distributed import World
from cmmvt.features import backbones, cache, segments
from cmmvt.features.fingerprint import Fingerprint
from cmmvt.features.pieces import Item, Modality, Piece

__all__ = ["MemorySink", "Summary", "embed_pieces", "embed_views", "share"]


@dataclass
class Summary:
    """What one modality's run did."""

    modality: str
    succeeded: int = 0
    failed: int = 0
    cached: int = 0
    no_stream: int = 0
    stale: int = 0
    rows: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def merge(cls, parts: list[Summary]) -> Summary:
        """The summary of a job from its ranks' summaries (in rank order); its time is the slowest rank's."""
        out = cls(parts[0].modality)
        for s in parts:
            for key in ("succeeded", "failed", "cached", "no_stream", "stale", "rows"):
                setattr(out, key, getattr(out, key) + getattr(s, key))
            out.seconds = max(out.seconds, s.seconds)
            out.failures += s.failures
        return out

    def line(self) -> str:
        """One-line human summary."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        article = "an" if self.modality[0] in "aeiou" else "a"
        extra = f", {self.no_stream} without {article} {self.modality} stream" if self.no_stream else ""
        extra += f", {self.stale} changed on disk and extracted again" if self.stale else ""
        return (
            f"{self.modality}: {self.succeeded} succeeded, {self.failed} failed, {self.cached} already cached"
            f"{extra}; {self.rows} rows in {self.seconds:.1f} s ({rate:.1f} frames/s)"
        )


class MemorySink:
    """Where embedded rows go: a :class:`cache.CacheWriter`, or memory (this) for
    :func:`cmmvt.features.extract.clip_features`."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {}
        self.failed: dict[str, str] = {}
        self._open: str | None = None

    def begin(self, video_id: str, source: Fingerprint | None = None) -> None:
        self._open = video_id
        self.rows[video_id] = []

    def append(self, emb: np.ndarray, t: np.ndarray) -> None:
        self.rows[self._open].append(emb)

    def end(self, has_stream: bool = True, duration: float = 0.0) -> None:
        self._open = None

    def abort(self) -> None:
        self.rows.pop(self._open, None)
        self._open = None

    def add_failure(self, path: str, video_id: str, stage: str, reason: str) -> None:
        self.failed[video_id] = reason


def embed_views(bb: backbones.Backbone) -> Callable[[list[torch.Tensor]], np.ndarray]:
    """Embed pieces of ``(n_i, V_i, S, S, 3)`` frame views in one CNN batch, averaging each row's ``V_i`` views
    (clips may have different view counts: a square clip has one centre-and-three-crops view) → ``(Σn_i, D)``."""

    def embed(blocks: list[torch.Tensor]) -> np.ndarray:
        flat = bb.embed(torch.cat([b.flatten(0, 1) for b in blocks]))  # (Σ n_i·V_i, D)
        out, i = [], 0
        for b in blocks:
            n, v = b.shape[:2]
            out.append(flat[i : i + n * v].reshape(n, v, -1).mean(1))  # (n_i, D); exact for one view
            i += n * v
        return np.concatenate(out)

    return embed


def embed_pieces(pieces: Iterable[Piece], sink: cache.CacheWriter | MemorySink, modality: Modality,
                 bb: backbones.Backbone, batch_size: int, summary: Summary,
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Embed the rows of ``pieces`` in batches of ``batch_size`` (across clips) and stream them into ``sink``.

    Rows are embedded in the order they arrive, in consecutive blocks of ``batch_size`` (a short one at
    the very end), so the same items give the same batches and bit-identical rows whatever the decoding
    threads or piece sizes. A clip that fails part-way is aborted in the sink: none of its rows are kept.

    Args:
        pieces: The clips' pieces in order (:func:`cmmvt.features.pieces.prefetched`).
        sink: A :class:`cmmvt.features.cache.CacheWriter`, or a :class:`MemorySink`.
        modality: ``video`` (``(n, V, S, S, 3)`` views, averaged per row) or ``audio`` (``(n, C, H, W)`` images).
        bb: The frozen backbone.
        batch_size: Rows per CNN batch.
        summary: Counts rows, successes, failures and clips without the stream (updated in place).
        progress: Called with ``(videos_done, rows_done)`` after each clip.
    """
    fn = embed_views(bb) if modality == "video" else (lambda xs: np.asarray(bb.embed_images(torch.cat(xs))))
    pending: deque[Piece] = deque()  # pieces in order, rows not embedded yet
    waiting = 0  # rows in ``pending``

    def settle(piece: Piece, emb: np.ndarray | None) -> None:
        if piece.first and piece.error is None:
            sink.begin(piece.item.video_id, piece.source)
        if emb is not None:
            sink.append(emb, piece.t.astype(np.float32))
            summary.rows += len(emb)
        if not piece.last:
            return
        if piece.error is not None:
            sink.abort()
            sink.add_failure(str(piece.item.path), piece.item.video_id, "decode", piece.error)
            summary.failed += 1
            summary.failures.append((str(piece.item.path), piece.error))
        else:
            sink.end(piece.has_stream, piece.duration)
            summary.succeeded += 1
            summary.no_stream += not piece.has_stream
        if progress:
            progress(summary.succeeded + summary.failed, summary.rows)

    def drain(final: bool) -> None:
        nonlocal waiting
        while pending:
            if not pending[0].rows:
                settle(pending.popleft(), None)
                continue
            if waiting < batch_size and not final:
                return
            batch: list[Piece] = []
            n = min(batch_size, waiting)
            while n:
                piece = pending.popleft()
                if piece.rows > n:
                    piece, rest = piece.split(n)
                    pending.appendleft(rest)
                batch.append(piece)
                n -= piece.rows
            emb = fn([q.inputs for q in batch if q.rows])  # (B, D)
            waiting -= len(emb)
            offset = 0
            for q in batch:
                settle(q, emb[offset : offset + q.rows] if q.rows else None)
                offset += q.rows

    for piece in pieces:
        if piece.error is not None:  # drop the failed clip's rows that are not embedded yet
            while pending and pending[-1].item == piece.item:
                waiting -= pending.pop().rows
        pending.append(piece)
        waiting += piece.rows
        drain(final=False)
    drain(final=True)


def _seconds(item: Item) -> float:
    """A clip's length to weigh its work: its segment's, else the file's declared duration."""
    if item.segment is not None and item.segment[1] is not None:
        return float(item.segment[1]) - float(item.segment[0])
    return media.header_duration(item.path)


def share(items: list[Item], done: set[str], world: World) -> tuple[list[Item], int]:
    """This rank's share of the clips not in ``done``, and the number of cached clips it accounts for.

    Shares are balanced by the clips' declared durations (:func:`cmmvt.media.header_duration`, read from
    the container headers, no decoding; a segment's own length) with :func:`cmmvt.distributed.balanced_split`
    over the decoding passes (:func:`cmmvt.features.segments.passes`: segments that share one stay together), so
    every rank computes the same split from the same list. The ranks of a group agree on ``done`` (read from
    every writer's shards before anyone writes) and split only the clips left, probing their durations
    together; after a crash or with another number of ranks the remaining work is balanced again. Independent
    ranks (``--shard i/N``) cannot agree on what is left, so each splits the whole list (probing every clip
    itself) and skips the clips already done.

    Args:
        items: Every clip of the job, the same list on every rank.
        done: Ids already cached (by any writer).
        world: The ranks.

    Returns:
        The clips this rank extracts, in ``items`` order, and how many clips it counts as cached (in a group,
        rank 0 counts them all).
    """
    todo = [it for it in items if it.video_id not in done]
    if world.size == 1:
        return todo, len(items) - len(todo)
    pool = todo if world.group else items
    units = segments.passes([(it.path, it.segment) for it in pool])  # segments sharing a pass stay on one rank
    seconds = distributed.map_shared(world, _seconds, pool)
    weights = [sum(seconds[i] for i in unit) for unit in units]
    mine = [pool[i] for u in distributed.balanced_split(weights, world.size)[world.rank] for i in units[u]]
    if world.group:
        return mine, (len(items) - len(todo) if world.rank == 0 else 0)
    return [it for it in mine if it.video_id not in done], sum(it.video_id in done for it in mine)
