"""Audio as a mono float32 waveform at any sample rate, streamed in bounded memory and aligned to the video.

:func:`audio_chunks` decodes the best audio stream of any codec and channel layout chunk by chunk;
:func:`load_audio` concatenates them. A file without audio gives ``None`` (not an error).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from cmmvt.media.container import (
    _DECODE_ERRORS,
    _TRUNCATION_TOLERANCE_S,
    MediaError,
    PathLike,
    _audio_stream,
    _declared_duration,
    _describe,
    _from,
    _open,
    _stream_start,
    _video_stream,
)

__all__ = ["Audio", "audio_chunks", "load_audio"]


@dataclass
class Audio:
    """A decoded mono waveform.

    Attributes:
        samples: ``(N,)`` float32 in ``[-1, 1]``; sample 0 is at the first video frame's instant.
        sample_rate: Samples per second.
    """

    samples: np.ndarray  # (N,) float32
    sample_rate: int


def _resampler_for(frame: av.AudioFrame, sample_rate: int) -> av.AudioResampler:
    """A resampler from ``frame``'s format, layout and rate to planar float32 at ``sample_rate``, same layout."""
    # Keep the source layout and only convert format and rate; the channels are averaged
    # afterwards (mono = mean of channels, as librosa/torchaudio do). swresample's own
    # stereo->mono matrix sums L and R with gain 1/sqrt(2) each, which is louder than either
    # channel and can leave [-1, 1]; it also needs a known layout, which plain PCM may lack.
    return av.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)


def _mono_chunks(resampled: list[av.AudioFrame]) -> list[np.ndarray]:
    """The resampler's output frames as ``(n,)`` float32 arrays, channels averaged."""
    out = []
    for f in resampled:
        x = f.to_ndarray()  # (C, n) float32, planar
        out.append(x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0])  # (n,)
    return out


def audio_chunks(path: PathLike, sample_rate: int = 16000,
                 segment: tuple[float, float] | None = None) -> Iterator[np.ndarray] | None:
    """Stream a clip's audio as mono float32 chunks at ``sample_rate``, in bounded memory.

    Decodes the best audio stream (as ranked by FFmpeg) of any codec (AAC, Opus, MP3, Vorbis,
    PCM, ...) and any channel layout; resamples with ``av.AudioResampler`` (flushed at the end) and
    averages the channels. If the file also has a video stream, the waveform is aligned to it:
    sample 0 is the first video frame's instant (leading audio before it is dropped, a late audio
    start is padded with silence), matching the time axis of :func:`~cmmvt.media.sample_times`. One decoded
    frame's samples are held at a time, so an hour of audio costs no more memory than a second.

    Args:
        path: Media file (a pure audio file such as ``.wav`` works too).
        sample_rate: Output rate in Hz, > 0.
        segment: ``(start, stop)`` seconds of a part of the file (:func:`~cmmvt.media.segment_span`): the decoder seeks to
            it, sample 0 is ``start`` (after the first video frame) and the waveform ends at ``stop``.

    Returns:
        An iterator of ``(n,)`` float32 chunks in ``[-1, 1]`` (their concatenation is the waveform), or
        ``None`` when the file has **no audio stream** (an explicit "no audio", not an error).

    Raises:
        MediaError: The file cannot be opened (at once) or its audio cannot be decoded, or ends before the
            duration its stream claims (while iterating).
        ValueError: ``sample_rate`` is not positive.
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    p = Path(path)
    with _open(p) as container:
        if _audio_stream(container) is None:
            return None
    return _iter_audio(p, int(sample_rate), segment)


def _iter_audio(p: Path, sample_rate: int, segment: tuple[float, float] | None = None) -> Iterator[np.ndarray]:
    """The generator behind :func:`audio_chunks` (the file is known to have an audio stream)."""
    start, stop = segment or (0.0, None)
    wanted = None if stop is None else round((stop - start) * sample_rate)  # samples of the segment
    with _open(p) as container:
        stream = _audio_stream(container)
        video_start: float | None = None
        try:
            video_start = _stream_start(_video_stream(container, p))
        except MediaError:
            pass  # audio-only file: nothing to align to
        frames = container.decode(stream)
        if start > 0:  # sample 0 is ``start`` after the first video frame (the audio stream's start without one)
            audio_start = _stream_start(stream) or 0.0
            video_start = (video_start if video_start is not None else audio_start) + start
            try:  # half a second early: the decoder's first frames after a seek prime it
                frames = _from(container, stream, max(video_start - 0.5 - audio_start, 0.0))
            except _DECODE_ERRORS as exc:
                raise MediaError(p, f"cannot seek the audio to {start:.3f} s: {_describe(exc)}") from exc
        claimed = _declared_duration(stream)
        resampler: av.AudioResampler | None = None
        template: tuple[Any, ...] | None = None
        skip: int | None = None  # samples still to drop (audio starting before the video); None: not known yet
        produced = decoded = 0  # samples the stream produced (before alignment), decoded frames

        emitted = 0  # samples yielded

        def out(chunks: list[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal skip, produced, emitted
            for x in chunks:
                produced += len(x)
                if skip:
                    x, skip = x[skip:], max(0, skip - len(x))
                if wanted is not None:
                    x = x[: wanted - emitted]
                if len(x):
                    emitted += len(x)
                    yield np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)

        try:
            for frame in frames:
                if wanted is not None and emitted >= wanted:
                    break
                decoded += 1
                if skip is None:
                    skip = 0
                    if video_start is not None and frame.pts is not None and frame.time_base is not None:
                        shift = round((float(frame.pts * frame.time_base) - video_start) * sample_rate)
                        if shift > 0:  # audio starts after the first video frame: silence until then
                            emitted += shift
                            yield np.zeros(shift, np.float32)
                        skip = max(0, -shift)
                sig = (frame.format.name, frame.layout.name, frame.sample_rate)
                if sig != template:  # first frame, or parameters changed mid-stream
                    if resampler is not None:
                        yield from out(_mono_chunks(resampler.resample(None)))
                    resampler, template = _resampler_for(frame, sample_rate), sig
                yield from out(_mono_chunks(resampler.resample(frame)))
            if resampler is not None:
                yield from out(_mono_chunks(resampler.resample(None)))  # flush the filter's delay
        except _DECODE_ERRORS as exc:
            where = f"after {decoded} frames (truncated or corrupt file)" if decoded else "at the start"
            raise MediaError(p, f"audio decoding failed {where}: {_describe(exc)}") from exc
    if segment is not None:  # the segment's part of the stream must be there
        expected = (min(stop, claimed) if claimed is not None else stop) - start
        if emitted / sample_rate < expected - _TRUNCATION_TOLERANCE_S:
            raise MediaError(p, f"audio of the segment {start:g}–{stop:g} s ends after {emitted / sample_rate:.3f} s "
                                "(truncated file?)")
    elif claimed is not None and decoded:  # the stream produced less than it claims: a cut-off file
        if produced / sample_rate < claimed - _TRUNCATION_TOLERANCE_S:
            raise MediaError(p, f"audio ends at {produced / sample_rate:.3f} s but the stream claims "
                                f"{claimed:.3f} s (truncated file?)")


def load_audio(path: PathLike, sample_rate: int = 16000) -> Audio | None:
    """Decode a clip's whole audio to mono float32 at ``sample_rate``: :func:`audio_chunks`, concatenated.

    Args:
        path: Media file (a pure audio file such as ``.wav`` works too).
        sample_rate: Output rate in Hz, > 0.

    Returns:
        :class:`Audio` with ``(N,)`` float32 samples in ``[-1, 1]``, or ``None`` when the file has
        **no audio stream** (an explicit "no audio", not an error). A stream with no decodable
        samples gives ``N == 0``.

    Raises:
        MediaError: The file cannot be opened or its audio cannot be decoded.
        ValueError: ``sample_rate`` is not positive.
    """
    chunks = audio_chunks(path, sample_rate)
    if chunks is None:
        return None
    parts = list(chunks)
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)  # (N,)
    return Audio(samples=np.ascontiguousarray(samples), sample_rate=int(sample_rate))
