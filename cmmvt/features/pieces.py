"""A clip as pieces of CNN input: decoded, cut into views or log-mel images, and prefetched by background threads.

Video rows are RGB frames sampled at ``extract.fps`` by presentation timestamp; audio rows are log-mel
windows centred on the same timestamps (:func:`cmmvt.media.sample_times`), so row ``t`` of both
modalities describes the same instant.

Rows flow through in pieces of at most :data:`ROWS_PER_PIECE`: the decoder resizes each frame inside the
colour conversion and its square views are cut at once (:mod:`cmmvt.features.views`), so clips of every size,
aspect ratio, pixel format and rotation batch together; audio is decoded and turned into log-mel windows in
chunks (:func:`cmmvt.features.logmel.stream_windows`). Peak memory therefore does not depend on a video's
length. Decoding runs in ``extract.workers`` background threads (:func:`prefetched`; PyAV releases the GIL) a
bounded amount ahead of the CNN (:mod:`cmmvt.features.batching`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cmmvt import media
from cmmvt.config import ExtractParams
from cmmvt.features import logmel, segments, sound, views
from cmmvt.features.fingerprint import Fingerprint, fingerprint

__all__ = ["MODALITIES", "ROWS_PER_PIECE", "Item", "Modality", "Piece", "audio_pieces", "clip_pieces", "pass_pieces",
           "prefetched", "video_pieces"]

Modality = Literal["video", "audio"]
MODALITIES: tuple[Modality, ...] = ("video", "audio")


@dataclass(frozen=True)
class Item:
    """One video to extract: a unique id (the cache key), its path and, for a part of a longer file, the segment."""

    video_id: str
    path: Path
    segment: tuple[float, float | None] | None = None  #: (start, end) seconds; None: the whole file


@dataclass
class Piece:
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

    def split(self, n: int) -> tuple[Piece, Piece]:
        """The first ``n`` rows (never the clip's last piece) and the rest."""
        head = replace(self, inputs=self.inputs[:n], t=self.t[:n], last=False)
        return head, replace(self, inputs=self.inputs[n:], t=self.t[n:], first=False)


ROWS_PER_PIECE = 64  #: rows decoded ahead per piece: 16 s at 4 fps, 9.6 MB of 224-px frames


def video_pieces(item: Item, p: ExtractParams, info: media.VideoInfo, rows: int,
                 shared: tuple[segments.SharedPass, int] | None = None) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Frames at ``extract.fps``, resized while converting and cut into square views per clip
    (:mod:`cmmvt.features.views`): ``(n, V, S, S, 3)`` uint8 blocks, so clips of any size and aspect ratio batch
    together. ``shared``: the pass over several segments of one file this one's frames come from, and its index
    there."""
    s = p.image_size
    fit = views.decoder_resize(s, p.crop)
    block: np.ndarray | None = None  # (rows, V, S, S, 3), made at the first frame (V depends on its shape)
    t = np.empty(rows, np.float64)
    n = 0
    frames = (shared[0].frames(shared[1], skip_nonref=p.fast_decode, **fit) if shared else
              media.iter_frames(item.path, p.fps, info=info, skip_nonref=p.fast_decode, segment=item.segment, **fit))
    for rgb, ti in frames:
        cut = views.frame_views(rgb, s, p.crop, p.flip)  # (V, S, S, 3)
        if block is None:
            block = np.empty((rows, *cut.shape), np.uint8)
        block[n], t[n] = cut, ti
        n += 1
        if n == rows:
            yield torch.from_numpy(block.copy()), t.copy()
            n = 0
    if n:
        yield torch.from_numpy(block[:n].copy()), t[:n].copy()


def audio_pieces(item: Item, p: ExtractParams, info: media.VideoInfo, rows: int,
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


def clip_pieces(item: Item, modality: Modality, p: ExtractParams, rows: int | None = None,
                shared: tuple[segments.SharedPass, int] | None = None) -> Iterator[Piece]:
    """One clip as pieces of at most ``rows`` (default :data:`ROWS_PER_PIECE`) rows; any failure (also part-way)
    becomes a last piece with the reason, never an exception. ``shared``: see :func:`video_pieces`."""
    rows = rows or ROWS_PER_PIECE
    first = True
    try:
        source = fingerprint(item.path)
    except OSError:
        source = None  # unreadable: decoding says why
    try:
        info = shared[0].info if shared else media.probe(item.path)
        start, stop = media.segment_span(item.path, info.duration, item.segment)  # one outside the file fails here
        blocks = (video_pieces if modality == "video" else audio_pieces)(item, p, info, rows, shared)
        for x, t in blocks or ():
            yield Piece(item, x, t, first=first, last=False, source=source)
            first = False
        yield Piece(item, None, np.zeros(0), first=first, last=True, has_stream=blocks is not None,
                    duration=stop - start, source=source)
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop the run; the reason is kept
        reason = exc.reason if isinstance(exc, media.MediaError) else f"{type(exc).__name__}: {exc}"
        yield Piece(item, None, np.zeros(0), first=first, last=True, source=source, error=reason)


def pass_pieces(items: list[Item], modality: Modality, p: ExtractParams) -> Iterator[Piece]:
    """The pieces of ``items``, in order: one clip, or segments of one file that share a decoding pass
    (:func:`cmmvt.features.segments.passes`)."""
    if len(items) == 1:
        yield from clip_pieces(items[0], modality, p)
        return
    try:
        info = media.probe(items[0].path)
    except media.MediaError:
        for it in items:  # each says why
            yield from clip_pieces(it, modality, p)
        return
    spans = []
    for it in items:
        try:
            spans.append(media.segment_span(it.path, info.duration, it.segment))
        except media.MediaError:
            spans.append(None)  # not in the file: its own piece says so
    shared = segments.SharedPass(items[0].path, info, spans, p.fps)
    for j, it in enumerate(items):
        yield from clip_pieces(it, modality, p, shared=(shared, j))


def prefetched(items: list[Item], modality: Modality, p: ExtractParams) -> Iterator[Piece]:
    """The pieces of ``items`` in order, decoded by ``p.workers`` background threads a bounded amount ahead.

    Each clip being decoded ahead holds at most two pieces (PyAV and torch release the GIL while decoding
    and computing spectrograms), so memory does not grow with a clip's length or the folder's size. Segments of
    one file that overlap or sit close are decoded in one pass (:mod:`cmmvt.features.segments`).
    """
    units = [[items[i] for i in unit] for unit in segments.passes([(it.path, it.segment) for it in items])]
    if p.workers == 0:
        for unit in units:
            yield from pass_pieces(unit, modality, p)
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
        for piece in pass_pieces(unit, modality, p):
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
