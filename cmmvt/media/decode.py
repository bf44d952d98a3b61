"""Decoding of audio-visual clips with PyAV (FFmpeg): metadata, frames by timestamp, streamed audio.

Everything in the project that reads a media file goes through this module:

* :func:`probe` reads container/stream metadata into a :class:`VideoInfo`.
* :func:`sample_times` is the one rule that turns a clip duration and a sampling rate into target
  timestamps; video frames (:func:`iter_frames` / :func:`read_frames`) and audio windows
  (:func:`cmmvt.features.logmel.clip_windows`) are both taken at these instants, so video row ``t`` and audio
  row ``t`` of the feature caches describe the same moment.
* :func:`iter_frames` streams the frame *displayed* at each target time, chosen by presentation
  timestamp (correct for variable-frame-rate files), optionally resized while converting to RGB,
  and turned upright according to the stream's display matrix.
* :func:`load_audio` decodes the best audio stream of any codec and channel layout to mono float32
  at a requested sample rate, aligned to the first video frame; it returns ``None`` (not an error)
  for a file without audio.

Conventions:

* Time zero is the video stream's start (``stream.start_time``, else the first decoded frame's
  presentation timestamp); all times are float64 seconds from there.
* Frame ``rgb`` arrays are ``uint8`` ``(H, W, 3)`` in display orientation: a clip recorded with a
  90° rotation flag comes out upright, with ``H`` and ``W`` swapped relative to the coded size.
* Anything that cannot be decoded raises :class:`MediaError` carrying the path and a reason; a
  file that breaks off part-way (truncated download) is an error too, never a silently short clip.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from cmmvt.media.encode import encode_clip
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> frames = np.zeros((25, 32, 32, 3), np.uint8)  # 1 s at 25 fps
    >>> encode_clip(d / "x.mp4", frames, 25, np.zeros(16000, np.float32))
    >>> info = probe(d / "x.mp4")
    >>> (info.width, info.height, info.has_audio, round(info.duration, 2))
    (32, 32, True, 1.0)
    >>> read_frames(d / "x.mp4", fps=4).rgb.shape
    (4, 32, 32, 3)
"""

from __future__ import annotations

import math
import re
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

__all__ = [
    "Audio",
    "audio_chunks",
    "frames_at",
    "Frames",
    "MediaError",
    "VideoInfo",
    "iter_frames",
    "load_audio",
    "segment_span",
    "probe",
    "read_frames",
    "sample_times",
]

PathLike = str | Path

# Exceptions that mean "this file cannot be read", as raised by PyAV/FFmpeg and the OS.
# ``av.error.FFmpegError`` subclasses also derive from the matching builtins (``ValueError`` for
# ``InvalidDataError``, ``EOFError``, ``OSError`` ...), so this catches them all.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError, EOFError)

_MAX_DISPLAY_SIZE = 1 << 16  # sanity bound on the frame size read from a header

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


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a clip's (first, non-cover-art) video stream, from :func:`probe`.

    Attributes:
        path: The probed file.
        duration: Seconds covered by the video stream (stream metadata, else container/Matroska
            tags, else measured from the packets' timestamps).
        width: Display width in pixels, i.e. after applying :attr:`rotation`; equals the ``W`` of
            frames from :func:`iter_frames` without resizing.
        height: Display height in pixels (after rotation).
        avg_fps: Average frame rate (frames per second) as reported by the demuxer.
        rotation: Counter-clockwise rotation in degrees (0, 90, 180 or 270) that the display
            matrix asks for; :func:`iter_frames` applies it.
        has_audio: Whether the file has at least one audio stream.
        video_codec: FFmpeg name of the video codec (``"h264"``, ``"vp9"`` ...).
        audio_codec: FFmpeg name of the best audio stream's codec, ``None`` without audio.
    """

    path: Path
    duration: float
    width: int
    height: int
    avg_fps: float
    rotation: int
    has_audio: bool
    video_codec: str
    audio_codec: str | None


@dataclass
class Frames:
    """Frames sampled from a clip at :func:`sample_times`.

    Attributes:
        rgb: ``(T, H, W, 3)`` uint8 frames, upright.
        t: ``(T,)`` float64 target times in seconds from the first video frame.
    """

    rgb: np.ndarray  # (T, H, W, 3) uint8
    t: np.ndarray  # (T,) float64


@dataclass
class Audio:
    """A decoded mono waveform.

    Attributes:
        samples: ``(N,)`` float32 in ``[-1, 1]``; sample 0 is at the first video frame's instant.
        sample_rate: Samples per second.
    """

    samples: np.ndarray  # (N,) float32
    sample_rate: int


# --------------------------------------------------------------------------------------------
# Sampling rule
# --------------------------------------------------------------------------------------------


def sample_times(duration: float, fps: float) -> np.ndarray:
    """Target timestamps for sampling a clip at ``fps``.

    ``n = max(1, round(duration * fps))`` instants at the centres of consecutive ``1 / fps``
    intervals, ``t_i = (i + 0.5) / fps``, each clipped to lie strictly before ``duration`` (so a
    clip shorter than ``1 / fps`` still gives one instant, inside the clip). Shared by video and
    audio extraction so that video row ``t`` and audio row ``t`` describe the same instant.

    Args:
        duration: Clip duration in seconds (negative values are treated as 0).
        fps: Sampling rate in instants per second, > 0.

    Returns:
        ``(n,)`` float64 seconds relative to the first video frame, non-decreasing.

    Raises:
        ValueError: If ``fps`` is not a positive finite number or ``duration`` is not finite.

    Example:
        >>> sample_times(1.0, 4).tolist()
        [0.125, 0.375, 0.625, 0.875]
        >>> sample_times(0.1, 4).tolist()
        [0.09999999999999999]
    """
    _check_fps(fps)
    if not math.isfinite(duration):
        raise ValueError(f"duration must be finite, got {duration!r}")
    duration = max(float(duration), 0.0)
    n = max(1, round(duration * fps))
    t = (np.arange(n, dtype=np.float64) + 0.5) / float(fps)  # (n,)
    return np.minimum(t, np.nextafter(duration, 0.0)).astype(np.float64)


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


def segment_span(path: PathLike, duration: float, segment: tuple[float, float | None] | None) -> tuple[float, float]:
    """``(start, stop)`` seconds of a file's ``segment`` (``(start, end)``; None: all of it), ``end`` clipped to the
    file's ``duration``.

    Raises:
        MediaError: The segment is empty or starts at or after the file's end.
    """
    if segment is None:
        return 0.0, duration
    start, end = float(segment[0]), (duration if segment[1] is None else min(float(segment[1]), duration))
    if not (0 <= start < end):
        raise MediaError(Path(path), f"segment {segment[0]}–{segment[1]} s is outside the video (0–{duration:.3f} s)")
    return start, end


def _check_fps(fps: float) -> None:
    if not (isinstance(fps, (int, float, Fraction)) and math.isfinite(float(fps)) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")


# --------------------------------------------------------------------------------------------
# Opening and probing
# --------------------------------------------------------------------------------------------


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


def header_duration(path: PathLike) -> float:
    """A clip's duration as its container declares it, in seconds, without decoding anything.

    Costs an open of the container (~4 ms for an MP4 here), a third of :func:`probe`, which decodes a frame.
    For weighing work (sharing clips among processes), not for sampling: use :func:`probe` for that.

    Returns:
        The declared duration of the video stream (else the container's); 0.0 when none is declared or the
        file cannot be opened.
    """
    p = Path(path)
    try:
        with _open(p) as container:
            duration = _declared_duration(_video_stream(container, p))
            if duration is None and container.duration:
                duration = container.duration / av.time_base
    except MediaError:
        return 0.0
    return float(duration) if duration and math.isfinite(duration) and duration > 0 else 0.0


def _measured_duration(path: Path, avg_fps: float) -> float:
    """Video duration from packet timestamps: demux only (no decoding), cheap fallback."""
    with _open(path) as container:
        vs = _video_stream(container, path)
        tb = vs.time_base
        first: float | None = None
        end = 0.0
        count = 0
        try:
            for packet in container.demux(vs):
                if packet.size == 0:
                    continue  # flush packet
                count += 1
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None or tb is None:
                    continue
                t0 = float(ts * tb)
                dur = float(packet.duration * tb) if packet.duration else (1.0 / avg_fps if avg_fps > 0 else 0.0)
                first = t0 if first is None else min(first, t0)
                end = max(end, t0 + dur)
        except _DECODE_ERRORS as exc:
            raise MediaError(path, f"cannot read video packets: {_describe(exc)}") from exc
    if count == 0:
        raise MediaError(path, "video stream has no packets")
    if first is None:  # no timestamps at all: count frames
        return count / avg_fps if avg_fps > 0 else 0.0
    return max(end - first, 0.0)


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 path: Path) -> av.VideoFrame:
    """Decode the first frame (for the display matrix and to prove the stream decodes)."""
    try:
        for frame in container.decode(stream):
            return frame
    except _DECODE_ERRORS as exc:
        raise MediaError(path, f"cannot decode video: {_describe(exc)}") from exc
    raise MediaError(path, "video stream has no decodable frames")


def _rotation_of(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation of ``frame`` snapped to 0/90/180/270."""
    try:
        deg = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):  # no / malformed display matrix
        return 0
    return int(round(deg / 90.0)) % 4 * 90


def probe(path: PathLike) -> VideoInfo:
    """Read a clip's metadata.

    Opens the container, picks the first video stream that is not cover art, decodes its first
    frame (which proves the stream is decodable and carries the display matrix), and reads the
    duration from stream metadata (falling back to Matroska tags, then to packet timestamps).

    Args:
        path: Media file.

    Returns:
        The clip's :class:`VideoInfo`.

    Raises:
        MediaError: The file is missing, empty, not media, truncated before its index, has no video
            stream, or its first video frame cannot be decoded.
    """
    p = Path(path)
    with _open(p) as container:
        vs = _video_stream(container, p)
        ctx = vs.codec_context
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        avg_fps = float(rate) if rate else 0.0
        duration = _declared_duration(vs)
        if duration is None and len(container.streams) == 1 and container.duration:
            duration = container.duration / av.time_base  # container duration is in AV_TIME_BASE
        a = _audio_stream(container)
        frame = _first_frame(container, vs, p)
        rotation = _rotation_of(frame)
        width, height = frame.width or ctx.width, frame.height or ctx.height
        video_codec = ctx.name
        audio_codec = a.codec_context.name if a is not None else None
    if not (0 < width < _MAX_DISPLAY_SIZE and 0 < height < _MAX_DISPLAY_SIZE):
        raise MediaError(p, f"invalid frame size {width}x{height}")
    if duration is None or not math.isfinite(duration) or duration <= 0:
        duration = _measured_duration(p, avg_fps)
    if rotation in (90, 270):
        width, height = height, width
    if avg_fps <= 0 and duration > 0:
        avg_fps = 1.0 / duration
    return VideoInfo(path=p, duration=float(duration), width=int(width), height=int(height),
                     avg_fps=avg_fps, rotation=rotation, has_audio=a is not None,
                     video_codec=video_codec, audio_codec=audio_codec)


# --------------------------------------------------------------------------------------------
# Video frames
# --------------------------------------------------------------------------------------------


def _scaled_size(width: int, height: int, short_side: int | None, long_side: int | None = None) -> tuple[int, int]:
    """(width, height) with the shorter side scaled to ``short_side``, or the longer one to ``long_side``
    (aspect kept, rounded)."""
    if short_side is None and long_side is None:
        return width, height
    if (width <= height) == (short_side is not None):  # the side to fit is the width
        side = short_side or long_side
        return side, max(1, round(height * side / width))
    side = short_side or long_side
    return max(1, round(width * side / height)), side


def _to_rgb(frame: av.VideoFrame, short_side: int | None, long_side: int | None = None) -> np.ndarray:
    """Convert (and resize) one decoded frame to an upright ``(H, W, 3)`` uint8 array."""
    w, h = _scaled_size(frame.width, frame.height, short_side, long_side)
    # swscale converts colour and resizes in one pass (colour matrix taken from the frame). Bilinear: 1.2 ms
    # per 640×360 → 398×224 frame against 2.0 ms for PyAV's default (bicubic), with a filter that still
    # widens with the downscale factor (unlike FAST_BILINEAR).
    rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BILINEAR")  # (h, w, 3)
    k = _rotation_of(frame) // 90
    if k:
        rgb = np.ascontiguousarray(np.rot90(rgb, k))  # rot90 is counter-clockwise, like rotation
    return rgb


def iter_frames(path: PathLike, fps: float, short_side: int | None = None,
                info: VideoInfo | None = None, long_side: int | None = None,
                skip_nonref: bool = False, segment: tuple[float, float | None] | None = None
                ) -> Iterator[tuple[np.ndarray, float]]:
    """Stream the frames displayed at :func:`sample_times` ``(duration, fps)`` (of a segment: :func:`segment_span`).

    For every target time ``t`` the frame shown at that instant is chosen: the last decoded frame
    whose presentation timestamp (relative to the stream start) is ``<= t``, so variable-frame-rate
    files sample correctly and a frame is repeated when ``fps`` exceeds the clip's rate. Targets
    before the first frame get the first frame. Decoding is threaded (``thread_type="AUTO"``),
    only frames that are actually emitted are converted to RGB, and at most two decoded frames are
    held at a time, so memory does not grow with the clip length.

    Args:
        path: Media file.
        fps: Sampling rate (targets per second), > 0.
        short_side: If given, frames are resized (by swscale, during the RGB conversion) so their
            shorter side has this many pixels, keeping the aspect ratio.
        info: The file's :func:`probe` result, if the caller has it (saves probing again).
        long_side: Instead of ``short_side``: resize so the longer side has this many pixels.
        skip_nonref: Ask the decoder to skip frames no other frame refers to (FFmpeg's
            ``skip_frame=NONREF``: the outer B-frames of H.264/HEVC, about half of x264's default stream).
            Each target then gets the last *decoded* frame at or before it - the nearest decodable frame,
            at most one source frame early for x264's default B-pyramid - for up to twice the decoding speed.
        segment: ``(start, end)`` seconds of a part of the file (``end`` None: to its end). The decoder seeks to
            the keyframe before ``start`` instead of decoding from the beginning; times are then sampled over
            the segment and yielded relative to its start, as if it were a file of its own.

    Yields:
        ``(rgb, t)``: ``rgb`` an upright ``(H, W, 3)`` uint8 array, ``t`` the target time in seconds.
        Exactly ``len(sample_times(duration, fps))`` items, at least one, where ``duration`` is the file's
        (``probe(path).duration``) or the segment's.

    Raises:
        MediaError: The file cannot be opened or decoded, or decoding fails part-way (e.g. a
            truncated file). Raised lazily, while iterating.
        ValueError: ``fps``, ``short_side`` or ``long_side`` is not positive, or both sides are given.
    """
    _check_fps(fps)
    for name, side in (("short_side", short_side), ("long_side", long_side)):
        if side is not None and side <= 0:
            raise ValueError(f"{name} must be positive, got {side!r}")
    if short_side is not None and long_side is not None:
        raise ValueError("give short_side or long_side, not both")
    p = Path(path)
    info = info or probe(p)
    start, stop = segment_span(p, info.duration, segment)
    times = start + sample_times(stop - start, fps)  # (n,) seconds from the stream start
    for rgb, t in frames_at(p, times, info, short_side, long_side, skip_nonref, stop, seek=start):
        yield rgb, t - start


def frames_at(path: PathLike, times: np.ndarray, info: VideoInfo, short_side: int | None = None,
              long_side: int | None = None, skip_nonref: bool = False, stop: float | None = None,
              seek: float = 0.0) -> Iterator[tuple[np.ndarray, float]]:
    """The frames displayed at ``times`` — sorted seconds from the stream start, repeats allowed — in one pass
    (see :func:`iter_frames`, which samples a clip or a segment with it; several segments of one file share a
    pass through it).

    Args:
        stop: Where the wanted part of the stream ends (default: ``info.duration``): a stream that ends earlier
            than that (less the tolerance) is a truncated file.
        seek: Start decoding at the keyframe at or before this many seconds (at most ``times[0]``; 0: from the
            first frame). A demuxer that lands after it (some cannot seek precisely) is read from the start.

    Yields:
        ``(rgb, t)`` for each ``t`` of ``times``.
    """
    p = Path(path)
    stop = info.duration if stop is None else stop
    n = len(times)
    k = 0  # next target to emit
    with _open(p) as container:
        vs = _video_stream(container, p)
        vs.thread_type = "AUTO"
        if skip_nonref:
            vs.codec_context.skip_frame = "NONREF"
        tb = vs.time_base
        origin = _stream_start(vs)
        prev: av.VideoFrame | None = None  # frame on screen before the current one
        prev_rgb: np.ndarray | None = None  # its RGB conversion, cached for repeats
        prev_rel = 0.0  # its presentation time, seconds from the stream start
        decoded = 0
        try:
            frames = _from(container, vs, seek)
        except _DECODE_ERRORS as exc:
            raise MediaError(p, f"cannot seek to {seek:.3f} s: {_describe(exc)}") from exc
        while k < n:
            try:
                frame = next(frames, None)
            except _DECODE_ERRORS as exc:
                if decoded == 0:
                    raise MediaError(p, f"cannot decode video: {_describe(exc)}") from exc
                raise MediaError(p, f"decoding failed after {decoded} frames (truncated or corrupt file): "
                                    f"{_describe(exc)}") from exc
            if frame is None:
                break
            decoded += 1
            ts = frame.pts if frame.pts is not None else frame.dts
            if ts is not None and tb is not None:
                abs_t = float(ts * tb)
                if origin is None:
                    origin = abs_t
                rel = abs_t - origin
            else:  # no timestamps at all: assume a constant rate
                rel = (decoded - 1) / info.avg_fps
            if prev is not None:
                while k < n and times[k] < rel:  # targets shown before this frame appears
                    if prev_rgb is None:
                        prev_rgb = _to_rgb(prev, short_side, long_side)
                    yield prev_rgb, float(times[k])
                    k += 1
            prev, prev_rgb, prev_rel = frame, None, rel
        if prev is None:
            raise MediaError(p, "video stream has no decodable frames")
        if k < n:  # decoding ended before the last target: is data missing?
            nominal = 1.0 / info.avg_fps if info.avg_fps > 0 else 0.0
            frame_dur = float(prev.duration * tb) if prev.duration and tb is not None else nominal
            covered = prev_rel + frame_dur
            if covered < stop - (_TRUNCATION_TOLERANCE_S + 2 * nominal):
                raise MediaError(p, f"video ends at {covered:.3f} s but the stream claims {info.duration:.3f} s "
                                    f"(truncated file?)")
        while k < n:  # the last frame stays on screen until the end
            if prev_rgb is None:
                prev_rgb = _to_rgb(prev, short_side, long_side)
            yield prev_rgb, float(times[k])
            k += 1


def read_frames(path: PathLike, fps: float, short_side: int | None = None) -> Frames:
    """Decode all frames at :func:`sample_times` into memory (see :func:`iter_frames`).

    Args:
        path: Media file.
        fps: Sampling rate (frames per second), > 0.
        short_side: Optional resize target for the shorter side.

    Returns:
        :class:`Frames` with ``T >= 1`` rows (a clip shorter than ``1 / fps`` gives one frame).

    Raises:
        MediaError: The file cannot be decoded (see :func:`iter_frames`).
    """
    rgbs: list[np.ndarray] = []
    ts: list[float] = []
    for rgb, t in iter_frames(path, fps, short_side):
        rgbs.append(rgb)  # repeated frames share one array; np.stack copies
        ts.append(t)
    return Frames(rgb=np.stack(rgbs), t=np.asarray(ts, dtype=np.float64))  # (T, H, W, 3), (T,)


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def _resampler_for(frame: av.AudioFrame, sample_rate: int) -> av.AudioResampler:
    # Keep the source layout and only convert format and rate; the channels are averaged
    # afterwards (mono = mean of channels, as librosa/torchaudio do). swresample's own
    # stereo->mono matrix sums L and R with gain 1/sqrt(2) each, which is louder than either
    # channel and can leave [-1, 1]; it also needs a known layout, which plain PCM may lack.
    return av.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)


def _mono_chunks(resampled: list[av.AudioFrame]) -> list[np.ndarray]:
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
    start is padded with silence), matching the time axis of :func:`sample_times`. One decoded
    frame's samples are held at a time, so an hour of audio costs no more memory than a second.

    Args:
        path: Media file (a pure audio file such as ``.wav`` works too).
        sample_rate: Output rate in Hz, > 0.
        segment: ``(start, stop)`` seconds of a part of the file (:func:`segment_span`): the decoder seeks to
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
        segment: ``(start, stop)`` seconds of a part of the file (:func:`segment_span`): the decoder seeks to
            it, sample 0 is ``start`` (after the first video frame) and the waveform ends at ``stop``.

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
