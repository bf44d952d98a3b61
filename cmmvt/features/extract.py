"""The extraction loop: decode → batch → embed with a frozen CNN → HDF5 cache; streamed, resumable, failure-tolerant.

Video rows are RGB frames sampled at ``extract.fps`` by presentation timestamp; audio rows are log-mel
windows centred on the same timestamps (:func:`cmmvt.media.sample_times`), so row ``t`` of both
modalities describes the same instant.

Rows flow through in pieces of at most :data:`ROWS_PER_PIECE`: the decoder resizes each frame inside the
colour conversion and its square views (``extract.crop``, ``extract.flip``: :func:`frame_views`) are cut at
once, so clips of every size, aspect ratio, pixel format and rotation batch together; audio is decoded and
turned into log-mel windows in chunks (:func:`cmmvt.features.logmel.stream_windows`); the cache writer receives
each clip's rows piece by piece. Peak memory therefore does not depend on a video's length (an hour
costs what ten seconds cost, plus 2.5 KB per cached row until its shard is published). Decoding runs in
``extract.workers`` background threads (PyAV releases the GIL) a bounded amount ahead while the CNN runs
in the calling thread; rows of several clips share CNN batches.

Each cached clip records its file's fingerprint (:mod:`cmmvt.features.fingerprint`): a file changed under the
same path is retracted from the cache before anything else happens and extracted again.

Several processes share the work as the ranks of a :class:`cmmvt.distributed.World` (torchrun, or
``--shard i/N``): every rank gets the same item list, takes its share (:func:`share`: balanced by duration,
deterministic) and writes its own shard files (``CacheWriter(writer=rank)``); the cache is read as one.
Under ONNX Runtime (the default engine) each row is independent of its batch neighbours and of the thread
count, so a run with N ranks caches the rows of a one-process run bit for bit (tests).

:func:`stage` is the one entry for the DVC ``extract@<modality>`` stage and ``cmmvt extract``.

Example (needs clips or caches on disk, so not run as a doctest)::

    from cmmvt import config
    from cmmvt.features import extract
    extract.stage(config.ExtractParams(), "videos/")  # both modalities into data/features
"""

from __future__ import annotations

import platform
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cmmvt import distributed, media
from cmmvt.config import ExtractParams
from cmmvt.distributed import World
from cmmvt.features import backbones, cache, logmel, segments, sound
from cmmvt.features.fingerprint import Fingerprint, fingerprint, is_current

Modality = Literal["video", "audio"]
MODALITIES: tuple[Modality, ...] = ("video", "audio")


@dataclass(frozen=True)
class Item:
    """One video to extract: a unique id (the cache key), its path and, for a part of a longer file, the segment."""

    video_id: str
    path: Path
    segment: tuple[float, float | None] | None = None  #: (start, end) seconds; None: the whole file


@dataclass
class _Piece:
    """A run of consecutive rows of one clip, ready for the CNN, or the news that the clip ended or failed.

    A clip arrives as one or more pieces in order; the ``last`` one carries ``duration`` and ``has_stream``
    (or ``error``). Pieces hold at most ``ROWS_PER_PIECE`` rows, so no stage ever holds a whole video.
    """

    item: Item
    inputs: torch.Tensor | None  # (n, V, S, S, 3) uint8 frame views or (n, 3, H, W) float log-mel images; None: no rows
    t: np.ndarray  # (n,) seconds
    first: bool
    last: bool
    has_stream: bool = True
    duration: float = 0.0
    source: Fingerprint | None = None
    error: str | None = None

    @property
    def rows(self) -> int:
        return 0 if self.inputs is None else len(self.inputs)

    def split(self, n: int) -> tuple[_Piece, _Piece]:
        """The first ``n`` rows (never the clip's last piece) and the rest."""
        head = replace(self, inputs=self.inputs[:n], t=self.t[:n], last=False)
        return head, replace(self, inputs=self.inputs[n:], t=self.t[n:], first=False)


ROWS_PER_PIECE = 64  #: rows decoded ahead per piece: 16 s at 4 fps, 9.6 MB of 224-px frames


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


def discover(path: str | Path) -> tuple[list[Item], list[tuple[str, str]]]:
    """List the videos to extract from a folder tree (recursive) or a manifest CSV.

    Args:
        path: A folder (every file with a video extension, at any depth) or a manifest ``.csv``.

    Returns:
        The items (ids unique: the path relative to the folder without extension) and the skipped
        non-video files as ``(path, reason)``.
    """
    from cmmvt.data import manifest  # pandas: only for discovery, not for predict's start-up

    path = Path(path)
    if path.is_file() and path.suffix == ".csv":
        df = manifest.read(path)
        return [Item(r.video_id, Path(r.path), _segment(r)) for r in df.itertuples()], []
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder or manifest")
    files, skipped = manifest.scan(path)
    return [Item(vid, p) for vid, p in manifest.unique_ids(path, files).items()], skipped


def _segment(row: object) -> tuple[float, float | None] | None:
    """A manifest row's ``start``/``end`` (blank or absent: the whole file)."""
    start, end = getattr(row, "start", ""), getattr(row, "end", "")
    return (float(start or 0), float(end) if end else None) if start or end else None


def for_backbone(p: ExtractParams, bb: backbones.Backbone) -> ExtractParams:
    """``p`` with the backbone's own input side (a timm model's pretrained one; ``extract.image_size`` otherwise).

    Frames are resized by the decoder's bilinear scaler whatever the model's interpolation (measured 1.7×
    faster than bicubic per frame; :func:`cmmvt.media.decode.iter_frames`); its mean, std and size are the
    model's."""
    return p.model_copy(update={"image_size": bb.image_size})


def create_backbones(p: ExtractParams, device: str) -> tuple[ExtractParams, dict[Modality, backbones.Backbone]]:
    """The frozen models of both modalities (the frame backbone; for audio the same on log-mel images, or the audio
    model of ``extract.audio.backbone``) and ``p`` with the frame backbone's input side (:func:`for_backbone`)."""
    bb = backbones.create(p.backbone, p.weights, image_size=p.image_size, device=device, engine=p.engine)
    return for_backbone(p, bb), {"video": bb, "audio": sound.audio_backbone(p.audio, bb)}


def feature_attrs(p: ExtractParams, modality: Modality, bb: backbones.Backbone) -> dict[str, object]:
    """The params that define a modality's features: a cache made with others is never mixed in.

    Besides ``extract.*``: the backbone's weights (description, ``source``, ``weights_sha256``) and, for frames,
    the input normalisation it was trained with (``mean``, ``std``), so that rows of another model or
    preprocessing never join a cache (:class:`cmmvt.features.cache.ParamsMismatch` names both)."""
    attrs: dict[str, object] = {"backbone": bb.name, "weights": bb.weights, "source": bb.source,
                                "weights_sha256": bb.weights_sha256, "dim": bb.dim, "fps": p.fps}
    if modality == "video":  # (log-mel images are standardised by extract.audio.norm, not by the model's mean/std)
        attrs.update(image_size=bb.image_size, mean=list(bb.mean), std=list(bb.std), crop=p.crop, flip=p.flip,
                     fast_decode=p.fast_decode, resize="bilinear")
    else:
        attrs.update(sound.framing(p.audio).model_dump(exclude={"backbone", "weights"}))  # those: the audio model's above
    return attrs


def library_versions() -> dict[str, str]:
    """Versions recorded in every shard, for provenance."""
    import av
    import h5py
    import torchaudio

    return {"python": platform.python_version(), "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "av": av.__version__, "h5py": h5py.__version__}


PAD_RGB = (124, 116, 104)  #: ImageNet mean colour: the padding of ``crop: full`` normalises to ≈ 0


def frame_views(rgb: np.ndarray, side: int, crop: str = "centre", flip: bool = False) -> np.ndarray:
    """The square CNN inputs made from one frame: ``(V, side, side, 3)`` uint8, their embeddings averaged.

    ``rgb`` is already resized by the decoder: short side ``side`` for ``centre`` and ``three``, long side
    ``side`` for ``full``.

    * ``centre``: the centred square (Kinetics-style "short-side resize, centre crop"; on 16:9 footage it
      drops 44 % of the picture, and with it a subject near the edge).
    * ``full``: the whole frame, centred on a ``side × side`` canvas of the ImageNet mean colour
      (letterboxing; every pixel kept, the subject smaller).
    * ``three``: three squares along the long axis (start, centre, end; the 3-crop test of
      Feichtenhofer et al. 2019, "SlowFast Networks", ICCV), 3× the CNN cost; one on a square frame.
    * ``flip``: each view also mirrored left-right (2× the cost).

    Args:
        rgb: ``(H, W, 3)`` uint8 frame.
        side: Square side of the CNN input.
        crop: ``centre``, ``full`` or ``three``.
        flip: Add the mirrored views.

    Returns:
        ``(V, side, side, 3)`` uint8 with ``V = 1`` or ``3`` (``three`` on a non-square frame), doubled by ``flip``.
    """
    h, w = rgb.shape[:2]
    if crop == "full":
        out = np.empty((1, side, side, 3), np.uint8)
        out[:] = PAD_RGB
        top, left = (side - h) // 2, (side - w) // 2
        out[0, top : top + h, left : left + w] = rgb[:side, :side]
    else:
        sq = min(h, w, side)
        along = max(h, w) - sq  # free length along the long axis
        offsets = [along // 2] if crop == "centre" or along == 0 else [0, along // 2, along]  # square: one view
        short = (h - sq) // 2 if w >= h else (w - sq) // 2
        out = np.stack([rgb[short : short + sq, o : o + sq] if w >= h else rgb[o : o + sq, short : short + sq]
                        for o in offsets])  # (V, sq, sq, 3)
    return np.concatenate([out, out[:, :, ::-1]]) if flip else out


def _video_pieces(item: Item, p: ExtractParams, info: media.VideoInfo, rows: int,
                  shared: tuple[segments.SharedPass, int] | None = None) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Frames at ``extract.fps``, resized while converting and cut into square views per clip (see
    :func:`frame_views`): ``(n, V, S, S, 3)`` uint8 blocks, so clips of any size and aspect ratio batch together.
    ``shared``: the pass over several segments of one file this one's frames come from, and its index there."""
    s = p.image_size
    fit = {"long_side": s} if p.crop == "full" else {"short_side": s}
    block: np.ndarray | None = None  # (rows, V, S, S, 3), made at the first frame (V depends on its shape)
    t = np.empty(rows, np.float64)
    n = 0
    frames = (shared[0].frames(shared[1], skip_nonref=p.fast_decode, **fit) if shared else
              media.iter_frames(item.path, p.fps, info=info, skip_nonref=p.fast_decode, segment=item.segment, **fit))
    for rgb, ti in frames:
        views = frame_views(rgb, s, p.crop, p.flip)  # (V, S, S, 3)
        if block is None:
            block = np.empty((rows, *views.shape), np.uint8)
        block[n], t[n] = views, ti
        n += 1
        if n == rows:
            yield torch.from_numpy(block.copy()), t.copy()
            n = 0
    if n:
        yield torch.from_numpy(block[:n].copy()), t[:n].copy()


def _audio_pieces(item: Item, p: ExtractParams, info: media.VideoInfo, rows: int,
                  shared: tuple[segments.SharedPass, int] | None = None
                  ) -> Iterator[tuple[torch.Tensor, np.ndarray]] | None:
    """Log-mel images (or the audio model's input: :mod:`cmmvt.features.sound`) centred on the same instants as
    the frames, streamed from the decoder (or taken from a ``shared`` pass's audio); None: no audio.

    ``norm: clip`` reads the audio twice: once for the clip's statistics, once for the images.
    """
    a = sound.framing(p.audio)
    start, stop = media.segment_span(item.path, info.duration, item.segment)
    segment = (start, stop) if item.segment else None
    t = media.sample_times(stop - start, p.fps)  # (T,)
    read = shared[0].audio(shared[1], a.sample_rate) if shared else (
        lambda: media.audio_chunks(item.path, a.sample_rate, segment))
    chunks = read() if read else None
    if chunks is None:
        return None
    stats = None
    if a.norm == "clip":
        stats = logmel.clip_stats(logmel.stream_windows(chunks, t, a, rows))
        chunks = read()
    size, k = (tuple(a.image) if a.image else None), a.stack

    def images(win: torch.Tensor) -> torch.Tensor:  # (n * k, M, W) → (n, 3, H, W'), or the audio model's (n, 1, W, M)
        if a.backbone != "image":
            return sound.aisfx_input(win, a)
        return logmel.to_images(win.reshape(-1, k, *win.shape[1:]), size, a.norm, stats)

    return ((images(win), t[i // k : (i + len(win)) // k])  # (n, C, H, W'), (n,)
            for i, win in _offsets(logmel.stream_windows(chunks, logmel.stack_times(t, a), a, rows * k)))


def _offsets(blocks: Iterable[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first row, block)`` for consecutive blocks of rows."""
    i = 0
    for block in blocks:
        yield i, block
        i += len(block)


def _pieces(item: Item, modality: Modality, p: ExtractParams, rows: int | None = None,
            shared: tuple[segments.SharedPass, int] | None = None) -> Iterator[_Piece]:
    """One clip as pieces of at most ``rows`` (default :data:`ROWS_PER_PIECE`) rows; any failure (also part-way)
    becomes a last piece with the reason, never an exception. ``shared``: see :func:`_video_pieces`."""
    rows = rows or ROWS_PER_PIECE
    first = True
    try:
        source = fingerprint(item.path)
    except OSError:
        source = None  # unreadable: decoding says why
    try:
        info = shared[0].info if shared else media.probe(item.path)
        start, stop = media.segment_span(item.path, info.duration, item.segment)  # one outside the file fails here
        blocks = (_video_pieces if modality == "video" else _audio_pieces)(item, p, info, rows, shared)
        for x, t in blocks or ():
            yield _Piece(item, x, t, first=first, last=False, source=source)
            first = False
        yield _Piece(item, None, np.zeros(0), first=first, last=True, has_stream=blocks is not None,
                     duration=stop - start, source=source)
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop the run; the reason is kept
        reason = exc.reason if isinstance(exc, media.MediaError) else f"{type(exc).__name__}: {exc}"
        yield _Piece(item, None, np.zeros(0), first=first, last=True, source=source, error=reason)


def _pass_pieces(items: list[Item], modality: Modality, p: ExtractParams) -> Iterator[_Piece]:
    """The pieces of ``items``, in order: one clip, or segments of one file that share a decoding pass
    (:func:`cmmvt.features.segments.passes`)."""
    if len(items) == 1:
        yield from _pieces(items[0], modality, p)
        return
    try:
        info = media.probe(items[0].path)
    except media.MediaError:
        for it in items:  # each says why
            yield from _pieces(it, modality, p)
        return
    spans = []
    for it in items:
        try:
            spans.append(media.segment_span(it.path, info.duration, it.segment))
        except media.MediaError:
            spans.append(None)  # not in the file: its own piece says so
    shared = segments.SharedPass(items[0].path, info, spans, p.fps)
    for j, it in enumerate(items):
        yield from _pieces(it, modality, p, shared=(shared, j))


def _prefetched(items: list[Item], modality: Modality, p: ExtractParams) -> Iterator[_Piece]:
    """The pieces of ``items`` in order, decoded by ``p.workers`` background threads a bounded amount ahead.

    Each clip being decoded ahead holds at most two pieces (PyAV and torch release the GIL while decoding
    and computing spectrograms), so memory does not grow with a clip's length or the folder's size. Segments of
    one file that overlap or sit close are decoded in one pass (:mod:`cmmvt.features.segments`).
    """
    units = [[items[i] for i in unit] for unit in segments.passes([(it.path, it.segment) for it in items])]
    if p.workers == 0:
        for unit in units:
            yield from _pass_pieces(unit, modality, p)
        return
    stop = threading.Event()
    done = object()

    def put(q: queue.Queue, x: object) -> bool:
        """Hand ``x`` to the consumer; False once it has stopped (never blocks for good)."""
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump(unit: list[Item], q: queue.Queue) -> None:
        for piece in _pass_pieces(unit, modality, p):
            if not put(q, piece):
                return
        put(q, done)

    ahead = 2 * p.workers
    pool = ThreadPoolExecutor(p.workers, thread_name_prefix=f"decode-{modality}")
    queues: list[queue.Queue] = []
    try:
        for i in range(len(units)):
            while len(queues) < min(len(units), i + 1 + ahead):
                queues.append(queue.Queue(maxsize=2))
                pool.submit(pump, units[len(queues) - 1], queues[-1])
            while (piece := queues[i].get()) is not done:
                yield piece
            queues[i] = None  # type: ignore[call-overload]
    finally:  # also when the consumer stopped early (an error, an interrupt): free the decoding threads
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


class _Sink:
    """Where embedded rows go: a :class:`cache.CacheWriter`, or memory for :func:`clip_features`."""

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


def _embed_views(bb: backbones.Backbone) -> Callable[[list[torch.Tensor]], np.ndarray]:
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


def _extract(pieces: Iterable[_Piece], sink: cache.CacheWriter | _Sink, modality: Modality,
             bb: backbones.Backbone, batch_size: int, summary: Summary,
             progress: Callable[[int, int], None] | None = None) -> None:
    """Embed the rows of ``pieces`` in batches of ``batch_size`` (across clips) and stream them into ``sink``.

    Rows are embedded in the order they arrive, in consecutive blocks of ``batch_size`` (a short one at
    the very end), so the same items give the same batches and bit-identical rows whatever the decoding
    threads or piece sizes. A clip that fails part-way is aborted in the sink: none of its rows are kept.
    """
    fn = _embed_views(bb) if modality == "video" else (lambda xs: np.asarray(bb.embed_images(torch.cat(xs))))
    pending: deque[_Piece] = deque()  # pieces in order, rows not embedded yet
    waiting = 0  # rows in ``pending``

    def settle(piece: _Piece, emb: np.ndarray | None) -> None:
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
            batch: list[_Piece] = []
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


def run_modality(
    items: list[Item],
    p: ExtractParams,
    modality: Modality,
    bb: backbones.Backbone,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    world: World = World(),
) -> Summary:
    """Extract one modality of ``items`` into ``out/<modality>``, skipping clips already cached.

    With several ranks every rank calls this with the same ``items`` and extracts its :func:`share` into its
    own shard files; rank 0 opens the folder first (checking the feature params, replacing the cache if
    asked), and no rank writes before every rank has read the shards.

    Args:
        items: Videos to extract.
        p: Extraction params (fps, backbone, audio windows, batch size, workers).
        modality: ``video`` or ``audio``.
        bb: The frozen backbone (shared between modalities).
        out: Features root (default ``p.out``); the modality's shards go to ``out/<modality>/``.
        overwrite: Replace a cache made with other feature params instead of refusing.
        progress: Called with ``(videos_done, rows_done, videos_to_do)`` before the first clip and after each.
        world: This process among the ranks (default: one process).

    Returns:
        What this rank did.

    Raises:
        cache.ParamsMismatch: The folder holds features made with other params.
    """
    root = Path(out or p.out) / modality
    attrs = feature_attrs(p, modality, bb) | {"versions": library_versions(), "engine": bb.engine}
    summary = Summary(modality)
    start = time.perf_counter()
    with distributed.rank_zero_first(world):
        writer = cache.CacheWriter(root, modality, attrs, shard_size=p.shard_size, overwrite=overwrite,
                                   writer=world.rank)
    with writer:
        sources = writer.sources()
        changed = {it.video_id for it in items if it.video_id in sources
                   and not is_current(it.path, sources[it.video_id])}
        done = writer.done_ids() - changed
        distributed.barrier(world)  # every rank has read the shards: from here on they change
        todo, summary.cached = share(items, done, world)
        stale = [it.video_id for it in todo if it.video_id in changed]
        writer.retract(stale)  # before any work: their old rows are never served again
        summary.stale = len(stale)
        if progress:
            progress(0, 0, len(todo))
        tick = progress and (lambda videos, rows: progress(videos, rows, len(todo)))
        _extract(_prefetched(todo, modality, p), writer, modality, bb, p.batch_size, summary, tick)
    summary.seconds = time.perf_counter() - start
    return summary


def set_threads(p: ExtractParams, world: World = World()) -> int:
    """Give the CNN ``extract.threads`` threads, or (0) this machine's cores shared by its ranks.

    Measured on 2 cores with one decoding thread (``benchmarks/extract.py``): the CNN at 2 threads beside
    the decoder ran 1.2× faster than at 1 thread, because decoding leaves its core idle most of the time
    (it is ~1/3 of the work), so "cores minus decoders" would waste it. Set ``threads`` where decoding
    dominates, e.g. many decoding workers on a many-core machine. With N ranks on one machine each gets
    ``max(1, cores // N)`` (:func:`cmmvt.distributed.threads_per_rank`).

    Returns:
        The CNN's thread count (also what :class:`backbones.OnnxRunner` takes).
    """
    threads = p.threads or distributed.threads_per_rank(world, distributed.cores())
    torch.set_num_threads(threads)
    return threads


def run(
    items: list[Item],
    p: ExtractParams,
    modality: Literal["video", "audio", "both"] = "both",
    out: str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    world: World | None = None,
) -> list[Summary]:
    """Extract the requested modalities with one shared frozen backbone, with a progress bar.

    Every rank of a job calls this with the same items (see :func:`run_modality`). A group's ranks join
    their process group here and each returns the job's merged summaries, gathered once every rank has
    published its shards; SIGTERM (torchrun stopping the ranks after one failed, SLURM's time limit) ends
    the run like an error: complete clips in flight are published first.

    Args:
        items: Videos to extract (see :func:`discover`).
        p: Extraction params.
        modality: ``video``, ``audio`` or ``both``.
        out: Features root (default ``p.out``).
        overwrite: Replace caches made with other feature params.
        show_progress: Draw a rich progress bar (videos/s and frames/s) on stderr (rank 0's, in a group).
        world: This process among the ranks (default: torchrun's environment, else one process).

    Returns:
        One :class:`Summary` per modality: the job's in a group, else this process's.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    world = world or distributed.from_env()
    with distributed.joined(world), distributed.sigterm_as_exit():
        set_threads(p, world)
        p, bbs = create_backbones(p, world.device(p.device))
        summaries = []
        for mod in MODALITIES if modality == "both" else (modality,):
            label = f"{mod} ({world.label()})" if world.label() else mod
            columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
            with Progress(*columns, disable=not (show_progress and world.lead), transient=False) as bar:
                task = bar.add_task(mod, total=None, rate="")
                t0 = time.perf_counter()

                def tick(videos: int, rows: int, total: int, task=task, t0=t0, bar=bar) -> None:
                    dt = max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, completed=videos, total=total,
                               rate=f"{videos / dt:.1f} videos/s  {rows / dt:.0f} frames/s")

                summary = run_modality(items, p, mod, bbs[mod], out=out, overwrite=overwrite, progress=tick, world=world)
            summaries.append(Summary.merge(distributed.all_gather(world, summary)))
    return summaries


COMPLETE = ".complete"


def stage(p: ExtractParams, source: str | Path, modality: Literal["video", "audio", "both"] = "both",
          overwrite: bool = False, world: World | None = None) -> bool:
    """Extract every clip of ``source``: the DVC ``extract@<modality>`` stage (``overwrite``) and ``cmmvt extract``
    alike, in this process, as a rank of torchrun's, or as one of ``--shard i/N``'s independent processes.

    With ``extract.procs`` > 1 (and not already under torchrun) the very command runs again as that many torchrun
    processes (:func:`cmmvt.distributed.relaunch`). An interrupted run resumes where it stopped: clips already
    cached are skipped. With ``overwrite`` a cache made with other feature params is replaced, and a folder
    holding a *completed* run is wiped first (by rank 0, before the other ranks open it): DVC reruns a completed
    stage only when its inputs (clips, code, feature params) changed, and cached rows of changed inputs must not
    survive. Once every rank has published its shards the run is marked complete (``.complete``, its summary
    line), except by independent ``--shard`` processes, none of which knows when the others finish. Skipped
    files, failures and each modality's summary line are printed (rank 0 of a group).

    Args:
        p: Extraction params (``extract.out`` is the features root).
        source: A folder of videos (recursive) or a manifest CSV (:func:`discover`).
        modality: ``video``, ``audio`` or ``both``.
        overwrite: Start afresh as above (what the DVC stage does).
        world: This process among the ranks (default: torchrun's environment, else one process).

    Returns:
        Whether the run did its job: False where every clip of every modality failed (exit status 1).
    """
    import shutil

    launched = distributed.relaunch(p.procs)
    if launched is not None:
        return launched == 0
    world = world or distributed.from_env()
    mods = MODALITIES if modality == "both" else (modality,)
    with distributed.joined(world):
        with distributed.rank_zero_first(world):
            for mod in mods if overwrite and world.rank == 0 else ():
                if (Path(p.out) / mod / COMPLETE).exists():
                    shutil.rmtree(Path(p.out) / mod)
        items, skipped = discover(source)
        summaries = run(items, p, modality=modality, overwrite=overwrite, show_progress=sys.stderr.isatty(),
                        world=world)
        if world.rank == 0 and (world.group or world.size == 1):
            for s in summaries:
                (Path(p.out) / s.modality).mkdir(parents=True, exist_ok=True)
                (Path(p.out) / s.modality / COMPLETE).write_text(s.line() + "\n")
    if world.lead:
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)
        for s in summaries:
            for path, reason in s.failures:
                print(f"failed {path}: {reason}", file=sys.stderr, flush=True)
            print(s.line(), file=sys.stderr, flush=True)
    return any(s.succeeded or s.cached or not s.failed for s in summaries)


def clip_features(path: str | Path, p: ExtractParams, bbs: Mapping[Modality, backbones.Backbone],
                  modalities: Iterable[Modality] = MODALITIES) -> dict[Modality, np.ndarray]:
    """Features of one video, in memory, through the same streamed path as :func:`run_modality` (for ``predict``).

    ``bbs`` maps each modality to its backbone (:func:`create_backbones`).

    Returns:
        ``{modality: (T, D) float32}``; a modality whose stream is absent has 0 rows.

    Raises:
        media.MediaError: The file cannot be decoded.
    """
    item = Item(Path(path).stem, Path(path))
    out = {}
    for m in modalities:
        sink = _Sink()
        _extract(_pieces(item, m, p), sink, m, bbs[m], p.batch_size, Summary(m))
        if item.video_id in sink.failed:
            raise media.MediaError(path, sink.failed[item.video_id])
        rows = sink.rows[item.video_id]
        emb = np.concatenate(rows) if rows else np.zeros((0, bbs[m].dim), np.float32)  # (T, D)
        out[m] = emb.astype(np.float16).astype(np.float32)  # the cache stores float16
    return out
