"""Opening a media file and finding its streams: the plumbing that probing, video and audio decoding share.

Opening turns every way a file can fail into a :class:`MediaError` carrying the path and a reason; the stream
helpers pick the video stream (never cover art) and the best audio stream, read where a stream starts and how
long its own metadata says it is, and seek a stream to the keyframe before a time. Anything that cannot be
decoded raises :class:`MediaError`; a file that breaks off part-way (a truncated download) is an error too,
never a silently short clip.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import av.error

__all__ = ["MediaError"]

PathLike = str | Path

# Exceptions that mean "this file cannot be read", as raised by PyAV/FFmpeg and the OS.
# ``av.error.FFmpegError`` subclasses also derive from the matching builtins (``ValueError`` for
# ``InvalidDataError``, ``EOFError``, ``OSError`` ...), so this catches them all.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError, EOFError)

# Decoded data may fall short of the duration a header claims by this much (plus two frame
# intervals for video) before the file is considered truncated: covers an unknown last-frame
# duration, container rounding and encoder padding, but not a file cut off part-way.
_TRUNCATION_TOLERANCE_S = 0.25


class MediaError(Exception):
    """A media file that cannot be decoded or is not supported.

    Attributes:
        path: The offending file.
        reason: Human-readable cause (e.g. ``"no video stream"``, ``"empty file"``).

    ``str(err)`` is ``f"{path}: {reason}"``.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across process pools
        return (type(self), (self.path, self.reason))


def _open(path: PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading, turning every failure into :class:`MediaError`."""
    p = Path(path)
    if not p.exists():
        raise MediaError(p, "no such file")
    if not p.is_file():
        raise MediaError(p, "not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(p, "empty file")
    try:
        return av.open(str(p), mode="r")
    except (*_DECODE_ERRORS, ValueError) as exc:
        raise MediaError(p, f"cannot open as media: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """A short, path-free description of a PyAV/OS exception."""
    if isinstance(exc, av.error.FFmpegError):
        return f"{exc.strerror or type(exc).__name__} (errno {exc.errno})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first real video stream (cover art / attached pictures are not video)."""
    for s in container.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    raise MediaError(path, "no video stream")


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The "best" audio stream as FFmpeg ranks them (default disposition, channels, ...)."""
    if not container.streams.audio:
        return None
    try:
        best = container.streams.best("audio")
    except _DECODE_ERRORS:
        best = None
    return best if best is not None else container.streams.audio[0]


_HMS = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*$")


def _tag_duration(stream: av.stream.Stream) -> float | None:
    """Matroska/WebM per-stream ``DURATION`` tag (``"HH:MM:SS.nnnnnnnnn"``), if any."""
    for key, value in (stream.metadata or {}).items():
        if key.upper() == "DURATION":
            m = _HMS.match(str(value))
            if m:
                return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return None


def _declared_duration(stream: av.stream.Stream) -> float | None:
    """A stream's duration in seconds from its own metadata (not the container's), if any."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return _tag_duration(stream)


def _stream_start(stream: av.stream.Stream) -> float | None:
    """``stream.start_time`` in seconds, ``None`` if unknown."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def _from(container: av.container.InputContainer, stream: av.stream.Stream, seek: float) -> Iterator[Any]:
    """Decoded frames of ``stream`` from the keyframe at or before ``seek`` seconds after the stream start (0: from
    the start); where the demuxer lands after ``seek`` (or cannot seek), rewound to the stream start instead."""
    origin, tb = _stream_start(stream), stream.time_base
    if seek <= 0 or origin is None or tb is None:
        return container.decode(stream)
    try:
        container.seek(int((origin + seek) / tb), stream=stream, backward=True)
        frames = container.decode(stream)
        first = next(frames, None)
    except _DECODE_ERRORS:
        first = None
    if first is not None and first.pts is not None and float(first.pts * tb) - origin <= seek + 1e-6:
        return itertools.chain([first], frames)
    container.seek(int(origin / tb), stream=stream, backward=True)  # landed late: read from the start
    return container.decode(stream)
