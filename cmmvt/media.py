"""Decoding and encoding of audio-visual clips with PyAV (FFmpeg).

Everything in the project that touches a media file goes through this module:

* :func:`probe` reads container/stream metadata into a :class:`VideoInfo`.
* :func:`sample_times` is the one rule that turns a clip duration and a sampling rate into target
  timestamps; video frames (:func:`iter_frames` / :func:`read_frames`) and audio windows
  (:func:`cmmvt.audio.clip_windows`) are both taken at these instants, so video row ``t`` and audio
  row ``t`` of the feature caches describe the same moment.
* :func:`iter_frames` streams the frame *displayed* at each target time, chosen by presentation
  timestamp (correct for variable-frame-rate files), optionally resized while converting to RGB,
  and turned upright according to the stream's display matrix.
* :func:`load_audio` decodes the best audio stream of any codec and channel layout to mono float32
  at a requested sample rate, aligned to the first video frame; it returns ``None`` (not an error)
  for a file without audio.
* :func:`encode_clip` writes real, deterministic H.264/AAC (or other codec) files; the synthetic
  dataset and the tests use it.

Conventions:

* Time zero is the video stream's start (``stream.start_time``, else the first decoded frame's
  presentation timestamp); all times are float64 seconds from there.
* Frame ``rgb`` arrays are ``uint8`` ``(H, W, 3)`` in display orientation: a clip recorded with a
  90° rotation flag comes out upright, with ``H`` and ``W`` swapped relative to the coded size.
* Anything that cannot be decoded raises :class:`MediaError` carrying the path and a reason; a
  file that breaks off part-way (truncated download) is an error too, never a silently short clip.

Example:
    >>> import numpy as np, tempfile, pathlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.codec.codec import Capabilities

__all__ = [
    "Audio",
    "audio_chunks",
    "Frames",
    "MediaError",
    "VideoInfo",
    "encode_clip",
    "iter_frames",
    "load_audio",
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


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side scaled to ``short_side`` (aspect kept, rounded)."""
    if short_side is None:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def _to_rgb(frame: av.VideoFrame, short_side: int | None) -> np.ndarray:
    """Convert (and resize) one decoded frame to an upright ``(H, W, 3)`` uint8 array."""
    w, h = _scaled_size(frame.width, frame.height, short_side)
    # swscale converts colour and resizes in one pass (colour matrix taken from the frame).
    rgb = frame.to_ndarray(format="rgb24", width=w, height=h)  # (h, w, 3)
    k = _rotation_of(frame) // 90
    if k:
        rgb = np.ascontiguousarray(np.rot90(rgb, k))  # rot90 is counter-clockwise, like rotation
    return rgb


def iter_frames(path: PathLike, fps: float, short_side: int | None = None,
                info: VideoInfo | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Stream the frames displayed at :func:`sample_times` ``(duration, fps)``.

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

    Yields:
        ``(rgb, t)``: ``rgb`` an upright ``(H, W, 3)`` uint8 array, ``t`` the target time in seconds.
        Exactly ``len(sample_times(probe(path).duration, fps))`` items, at least one.

    Raises:
        MediaError: The file cannot be opened or decoded, or decoding fails part-way (e.g. a
            truncated file). Raised lazily, while iterating.
        ValueError: ``fps`` or ``short_side`` is not positive.
    """
    _check_fps(fps)
    if short_side is not None and short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side!r}")
    p = Path(path)
    info = info or probe(p)
    times = sample_times(info.duration, fps)  # (n,)
    n = len(times)
    k = 0  # next target to emit
    with _open(p) as container:
        vs = _video_stream(container, p)
        vs.thread_type = "AUTO"
        tb = vs.time_base
        origin = _stream_start(vs)
        prev: av.VideoFrame | None = None  # frame on screen before the current one
        prev_rgb: np.ndarray | None = None  # its RGB conversion, cached for repeats
        prev_rel = 0.0  # its presentation time, seconds from the stream start
        decoded = 0
        frames = container.decode(vs)
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
                        prev_rgb = _to_rgb(prev, short_side)
                    yield prev_rgb, float(times[k])
                    k += 1
            prev, prev_rgb, prev_rel = frame, None, rel
        if prev is None:
            raise MediaError(p, "video stream has no decodable frames")
        if k < n:  # decoding ended before the last target: is data missing?
            nominal = 1.0 / info.avg_fps if info.avg_fps > 0 else 0.0
            frame_dur = float(prev.duration * tb) if prev.duration and tb is not None else nominal
            covered = prev_rel + frame_dur
            if covered < info.duration - (_TRUNCATION_TOLERANCE_S + 2 * nominal):
                raise MediaError(p, f"video ends at {covered:.3f} s but the stream claims {info.duration:.3f} s "
                                    f"(truncated file?)")
        while k < n:  # the last frame stays on screen until the end
            if prev_rgb is None:
                prev_rgb = _to_rgb(prev, short_side)
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


def audio_chunks(path: PathLike, sample_rate: int = 16000) -> Iterator[np.ndarray] | None:
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
    return _iter_audio(p, int(sample_rate))


def _iter_audio(p: Path, sample_rate: int) -> Iterator[np.ndarray]:
    """The generator behind :func:`audio_chunks` (the file is known to have an audio stream)."""
    with _open(p) as container:
        stream = _audio_stream(container)
        video_start: float | None = None
        try:
            video_start = _stream_start(_video_stream(container, p))
        except MediaError:
            pass  # audio-only file: nothing to align to
        claimed = _declared_duration(stream)
        resampler: av.AudioResampler | None = None
        template: tuple[Any, ...] | None = None
        skip: int | None = None  # samples still to drop (audio starting before the video); None: not known yet
        produced = decoded = 0  # samples the stream produced (before alignment), decoded frames

        def out(chunks: list[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal skip, produced
            for x in chunks:
                produced += len(x)
                if skip:
                    x, skip = x[skip:], max(0, skip - len(x))
                if len(x):
                    yield np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)

        try:
            for frame in container.decode(stream):
                decoded += 1
                if skip is None:
                    skip = 0
                    if video_start is not None and frame.pts is not None and frame.time_base is not None:
                        shift = round((float(frame.pts * frame.time_base) - video_start) * sample_rate)
                        if shift > 0:  # audio starts after the first video frame: silence until then
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
    if claimed is not None and decoded:  # the stream produced less than it claims: a cut-off file
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


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

_PREFERRED_SAMPLE_FORMATS = ("fltp", "flt", "s32p", "s32", "s16p", "s16")


def _as_fraction(fps: float | Fraction) -> Fraction:
    _check_fps(fps)
    return fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)


def _video_options(codec_name: str, crf: int, preset: str) -> dict[str, str]:
    name = codec_name.lower()
    if "264" in name or "265" in name or "hevc" in name:
        return {"crf": str(crf), "preset": preset}
    if "vpx" in name or "vp9" in name or "vp8" in name:
        return {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "0"}
    return {}


def _pick_rate(codec: av.Codec, sample_rate: int) -> int:
    """``sample_rate`` if the encoder supports it, else the nearest supported rate above it."""
    rates = codec.audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    above = [r for r in rates if r >= sample_rate]
    return min(above) if above else max(rates)


def _pick_format(codec: av.Codec) -> str:
    formats = [f.name for f in (codec.audio_formats or [])]
    for name in _PREFERRED_SAMPLE_FORMATS:
        if name in formats:
            return name
    return formats[0] if formats else "fltp"


_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0(side)", 6: "5.1(side)",
                    7: "6.1", 8: "7.1"}


def _layout_name(n_channels: int) -> str:
    """FFmpeg's default layout name for ``n_channels`` (``"mono"``, ``"stereo"``, ``"5.1"`` ...)."""
    return _DEFAULT_LAYOUTS[n_channels]


def _audio_frames(audio: np.ndarray, sample_rate: int, ctx: Any) -> Iterator[av.AudioFrame]:
    """Resample ``audio`` (N, C) to the encoder's rate/format and cut it into encoder frames."""
    src = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio.T), format="fltp",
                                     layout=_layout_name(audio.shape[1]))  # (C, N)
    src.sample_rate = sample_rate
    src.pts = 0
    src.time_base = Fraction(1, sample_rate)
    fmt = ctx.format
    resampler = av.AudioResampler(format=fmt, layout=ctx.layout, rate=ctx.sample_rate)
    parts = [*resampler.resample(src), *resampler.resample(None)]
    planes: list[np.ndarray] = []
    for f in parts:
        x = f.to_ndarray()  # planar: (C, n); packed: (1, n * C)
        planes.append(x if fmt.is_planar else x.reshape(-1, ctx.layout.nb_channels).T)
    if not planes:
        return
    data = np.concatenate(planes, axis=1)  # (C, M)
    caps = ctx.codec.capabilities
    variable = bool(caps & Capabilities.variable_frame_size)
    frame_size = (0 if variable else ctx.frame_size) or 1024
    small_last = variable or bool(caps & Capabilities.small_last_frame)
    for start in range(0, data.shape[1], frame_size):
        chunk = data[:, start:start + frame_size]  # (C, <= frame_size)
        if chunk.shape[1] < frame_size and not small_last:
            chunk = np.pad(chunk, ((0, 0), (0, frame_size - chunk.shape[1])))
        arr = chunk if fmt.is_planar else chunk.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt.name, layout=ctx.layout.name)
        frame.sample_rate = ctx.sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, ctx.sample_rate)
        yield frame


def encode_clip(
    path: PathLike,
    frames: np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    vcodec: str = "libx264",
    acodec: str = "aac",
    pts_seconds: np.ndarray | None = None,
    crf: int = 18,
    preset: str = "medium",
    audio_bitrate: int | None = None,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
    video_options: dict[str, str] | None = None,
    audio_options: dict[str, str] | None = None,
) -> None:
    """Encode frames (and optionally audio) into a real media file.

    The container is chosen from the file extension (``.mp4``, ``.mkv``, ``.webm``, ``.mov``,
    ``.avi`` ...; the name may be e.g. ``x.partial.mp4``). Video is ``pix_fmt`` (``yuv420p`` by default). Encoding is
    deterministic - the same inputs give a byte-identical stream on any machine - because every
    encoder runs single-threaded (x264's output depends on its thread count) with fixed options.

    Audio is resampled to a rate the encoder supports (e.g. Opus: 48/24/16/12/8 kHz; if
    ``sample_rate`` is unsupported the next higher supported rate is used) and to its sample
    format, then fed in chunks of the encoder's ``frame_size`` (1024 for encoders that accept any
    size, e.g. PCM), the last chunk zero-padded for encoders that require full frames, and the
    encoder is flushed.

    Args:
        path: Output file; parent folders must exist. Overwritten if present.
        frames: ``(T, H, W, 3)`` uint8 RGB, ``T >= 1``, ``H`` and ``W`` even (yuv420p).
        fps: Frame rate (frames per second); a float is turned into a Fraction (``29.97`` ->
            ``30000/1001``). With ``pts_seconds`` it is only the nominal rate.
        audio: Optional ``(N,)`` mono or ``(N, C)`` multi-channel float32 waveform in ``[-1, 1]``.
        sample_rate: Rate of ``audio`` in Hz.
        vcodec: FFmpeg video encoder name (``"libx264"``, ``"libvpx-vp9"``, ``"mpeg4"`` ...).
        acodec: FFmpeg audio encoder name (``"aac"``, ``"libopus"``, ``"libmp3lame"``,
            ``"pcm_s16le"``, ``"vorbis"`` (experimental, enabled automatically), ``"flac"`` ...).
        pts_seconds: Optional ``(T,)`` strictly increasing presentation times in seconds, for
            variable-frame-rate files; shifted so the first frame is at 0 (timestamps are stored with 1/90000 s precision in the codec;
            the container may round further, e.g. Matroska to 1 ms). The last frame lasts as long
            as the interval before it.
        crf: Constant rate factor for x264/x265/VPx (lower = better quality).
        preset: x264/x265 preset.
        audio_bitrate: Audio bit rate in bit/s; encoder default if ``None``.
        rotation: Counter-clockwise display rotation in degrees written as the stream's display
            matrix (players and :func:`iter_frames` rotate by it); 0 writes none.
        pix_fmt: Pixel format of the coded video (``yuv420p``, ``yuv444p``, ``yuv420p10le`` ...).
        video_options: Extra encoder options (override the defaults).
        audio_options: Extra audio encoder options.

    Raises:
        ValueError: Bad shapes/dtypes, odd frame size, non-increasing ``pts_seconds``, or a codec
            the container does not support.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    n_frames, height, width, _ = frames.shape
    if (height % 2 or width % 2) and "420" in pix_fmt:
        raise ValueError(f"{pix_fmt} needs an even frame size, got {width}x{height}")
    rate = _as_fraction(fps)
    if pts_seconds is not None:
        pts_seconds = np.asarray(pts_seconds, dtype=np.float64)
        if pts_seconds.shape != (n_frames,):
            raise ValueError(f"pts_seconds must have shape ({n_frames},), got {pts_seconds.shape}")
        if n_frames > 1 and not np.all(np.diff(pts_seconds) > 0):
            raise ValueError("pts_seconds must be strictly increasing")
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]  # (N, 1)
        if audio.ndim != 2 or not 1 <= audio.shape[1] <= 8:
            raise ValueError(f"audio must be (N,) or (N, C) with C <= 8, got {audio.shape}")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        sample_rate = int(sample_rate)
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")

    # AVI cannot store negative timestamps (encoder priming of AAC/MP3); FFmpeg's default shift
    # would then misplace the video frames, so keep video exact and let the priming play.
    fmt_options = {"avoid_negative_ts": "disabled"} if Path(path).suffix.lower() == ".avi" else {}
    with av.open(str(path), mode="w", options=fmt_options) as container:
        # --- video stream
        if pts_seconds is None:
            time_base = Fraction(1, 1) / rate
            pts = np.arange(n_frames, dtype=np.int64)  # (T,) in time_base units
            durations = np.ones(n_frames, dtype=np.int64)
        else:
            time_base = Fraction(1, 90000)
            ticks = np.round((pts_seconds - pts_seconds[0]) * 90000).astype(np.int64)  # (T,)
            if n_frames > 1 and not np.all(np.diff(ticks) > 0):
                raise ValueError("pts_seconds are closer than 1/90000 s")
            pts = ticks
            gaps = np.diff(ticks)
            last = gaps[-1] if len(gaps) else int(round(90000 / rate))
            durations = np.append(gaps, last)
        vstream = container.add_stream(vcodec, rate=rate, time_base=time_base)
        vstream.width, vstream.height = width, height
        vstream.pix_fmt = pix_fmt
        vctx = vstream.codec_context
        vctx.thread_count = 1  # determinism: x264's decisions depend on its thread count
        vstream.options = {**_video_options(vctx.name, crf, preset), **(video_options or {})}
        if rotation % 360:
            vstream.set_display_rotation(rotation % 360)

        # --- audio stream
        astream = None
        if audio is not None:
            codec = av.Codec(acodec, "w")
            if codec.name == "vorbis" and audio.shape[1] == 1:
                audio = np.repeat(audio, 2, axis=1)  # FFmpeg's own Vorbis encoder is stereo-only
            astream = container.add_stream(acodec, rate=_pick_rate(codec, sample_rate))
            actx = astream.codec_context
            actx.layout = _layout_name(audio.shape[1])
            actx.format = _pick_format(codec)
            actx.thread_count = 1
            if audio_bitrate:
                actx.bit_rate = int(audio_bitrate)
            opts = dict(audio_options or {})
            if codec.experimental:
                opts.setdefault("strict", "experimental")
            astream.options = opts
            astream.time_base = Fraction(1, actx.sample_rate)

        # --- frames, interleaved in time order (audio first on ties)
        audio_frames = [] if astream is None else list(_audio_frames(audio, sample_rate, _opened(astream)))
        ai = 0
        for i in range(n_frames):
            t_video = float(pts[i] * time_base)
            while ai < len(audio_frames) and float(audio_frames[ai].pts * audio_frames[ai].time_base) <= t_video:
                container.mux(astream.encode(audio_frames[ai]))
                ai += 1
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")  # (H, W, 3)
            vf = vf.reformat(format=pix_fmt)
            vf.pts = int(pts[i])
            vf.duration = int(durations[i])
            vf.time_base = time_base
            container.mux(vstream.encode(vf))
        for af in audio_frames[ai:]:
            container.mux(astream.encode(af))
        container.mux(vstream.encode(None))
        if astream is not None:
            container.mux(astream.encode(None))


def _opened(stream: av.stream.Stream) -> Any:
    """The stream's codec context, opened (so ``frame_size`` is known)."""
    ctx = stream.codec_context
    if not ctx.is_open:
        ctx.open()
    return ctx
