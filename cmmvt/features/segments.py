"""Several segments of one file in one decoding pass: the AudioSet, VGGSound or Kinetics rows of an untrimmed video
that overlap or sit close, or a user's list of parts of one recording.

Extracted one by one, each segment seeks to the keyframe before it and decodes to its end; where segments overlap
or follow each other closely that decodes the shared stretch again. Here consecutive segments of one file that start
at most :data:`CLOSE_S` after the previous ones end (and span at most :data:`MAX_SPAN_S` together) are one
*pass*: the frames every segment samples come from one run of the decoder over their union, routed to their
segments (a frame two segments sample is decoded once), and the audio from one read of the union, of which each
segment takes its own samples. Each segment's rows equal those it gets on its own (seeking to it): its times are
its own, relative to its start, and its audio windows see silence outside it, as if it were a file of its own.

Memory: the audio of one pass (at most :data:`MAX_SPAN_S` seconds) and the frames decoded for later segments of the
pass while an earlier one is being embedded (at most the overlap); never the whole video.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from cmmvt import media

__all__ = ["CLOSE_S", "MAX_SPAN_S", "SharedPass", "passes"]

CLOSE_S = 5.0  #: a segment starting at most this long after the pass so far ends joins it
MAX_SPAN_S = 120.0  #: the longest union of segments one pass covers (its audio is held in memory)


def passes(keys: list[tuple[Path, tuple[float, float | None] | None]]) -> list[list[int]]:
    """Group consecutive items (``(path, segment)``) into passes: runs of segments of one file, each starting no
    earlier than the run's first and at most :data:`CLOSE_S` after the run so far ends, spanning at most
    :data:`MAX_SPAN_S`; any other item alone.

    Example:
        >>> f = Path("film.mp4")
        >>> passes([(f, (0, 10)), (f, (5, 15)), (f, (18, 28)), (f, (300, 310)), (Path("x.mp4"), None)])
        [[0, 1, 2], [3], [4]]
        >>> passes([(f, (1000, 1010)), (f, (0, 10)), (f, (12, 20))])  # out of order: never one long pass
        [[0], [1, 2]]
    """
    out: list[list[int]] = []
    first = end = 0.0
    for i, (path, seg) in enumerate(keys):
        whole = seg is None or seg[1] is None
        prev = keys[out[-1][-1]] if out else None
        if (not whole and prev is not None and prev[0] == path and prev[1] is not None and prev[1][1] is not None
                and first <= seg[0] <= end + CLOSE_S and max(end, seg[1]) - first <= MAX_SPAN_S):
            out[-1].append(i)
            end = max(end, float(seg[1]))
        else:
            out.append([i])
            first, end = (0.0, 0.0) if whole else (float(seg[0]), float(seg[1]))
    return out


class SharedPass:
    """One decoding pass over the segments of one file, handing each segment its frames or its audio.

    Segments are served in the order given (a frame decoded for a later segment waits in a buffer); a decoding
    error fails the segment being served and every later one with the same reason.

    Args:
        path: The file.
        info: Its :func:`cmmvt.media.probe` result.
        spans: ``(start, stop)`` of each segment (:func:`cmmvt.media.segment_span`), None for one that is not in
            the file (it is never served).
        fps: Rows per second.
    """

    def __init__(self, path: Path, info: media.VideoInfo, spans: list[tuple[float, float] | None], fps: float) -> None:
        self.path, self.info, self.spans, self.fps = path, info, spans, fps
        targets = sorted((start + t, j) for j, span in enumerate(spans) if span is not None
                         for start, stop in [span] for t in media.sample_times(stop - start, fps))
        self._times = np.array([t for t, _ in targets])  # (N,) seconds from the stream start, sorted
        self._owner = [j for _, j in targets]
        self._count = {j: self._owner.count(j) for j in set(self._owner)}
        self._frames: Iterator | None = None
        self._waiting: dict[int, deque] = defaultdict(deque)
        self._error: Exception | None = None
        self._wave: np.ndarray | None | bool = False  # False: not read yet; None: the file has no audio
        self._audio_error: Exception | None = None

    def frames(self, j: int, **decode: object) -> Iterator[tuple[np.ndarray, float]]:
        """Segment ``j``'s frames as :func:`cmmvt.media.iter_frames` yields them for the segment alone; ``decode``:
        its resize and decoder options (the same for every segment of the pass)."""
        start = self.spans[j][0]
        for _ in range(self._count.get(j, 0)):
            while not self._waiting[j]:
                if self._error is not None:
                    raise self._error
                if self._frames is None:
                    stop = max(span[1] for span in self.spans if span is not None)
                    self._frames = zip(media.frames_at(self.path, self._times, self.info, stop=stop,
                                                       seek=float(self._times[0]), **decode), self._owner)
                try:
                    (rgb, t), owner = next(self._frames)
                except Exception as exc:  # noqa: BLE001 - this segment and every later one fail with it
                    self._error = exc
                    raise
                self._waiting[owner].append((rgb, t))
            rgb, t = self._waiting[j].popleft()
            yield rgb, t - start

    def audio(self, j: int, sample_rate: int) -> Callable[[], Iterator[np.ndarray]] | None:
        """Segment ``j``'s waveform as :func:`cmmvt.media.audio_chunks` gives it for the segment alone (a function
        that returns a fresh iterator of it each call), or None when the file has no audio."""
        first = min(span[0] for span in self.spans if span is not None)
        if self._audio_error is not None:  # read once: every segment of the pass fails with the reason
            raise self._audio_error
        if self._wave is False:
            last = max(span[1] for span in self.spans if span is not None)
            try:
                chunks = media.audio_chunks(self.path, sample_rate, (first, last))
                self._wave = None if chunks is None else np.concatenate([np.zeros(0, np.float32), *chunks])
            except Exception as exc:  # noqa: BLE001 - kept for the later segments
                self._audio_error = exc
                raise
        if self._wave is None:
            return None
        start, stop = self.spans[j]
        part = self._wave[round((start - first) * sample_rate) : round((stop - first) * sample_rate)]
        return lambda: iter([part])
