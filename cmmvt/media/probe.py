"""A clip's metadata: :func:`probe` reads it into a :class:`VideoInfo`, :func:`header_duration` reads the declared
duration alone.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from cmmvt.media.encode import encode_clip
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> frames = np.zeros((25, 32, 32, 3), np.uint8)  # 1 s at 25 fps
    >>> encode_clip(d / "x.mp4", frames, 25, np.zeros(16000, np.float32))
    >>> info = probe(d / "x.mp4")
    >>> (info.width, info.height, info.has_audio, round(info.duration, 2))
    (32, 32, True, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av

from cmmvt.media.container import (
    _DECODE_ERRORS,
    MediaError,
    PathLike,
    _audio_stream,
    _declared_duration,
    _describe,
    _open,
    _video_stream,
)

__all__ = ["VideoInfo", "header_duration", "probe"]

_MAX_DISPLAY_SIZE = 1 << 16  # sanity bound on the frame size read from a header


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a clip's (first, non-cover-art) video stream, from :func:`probe`.

    Attributes:
        path: The probed file.
        duration: Seconds covered by the video stream (stream metadata, else container/Matroska
            tags, else measured from the packets' timestamps).
        width: Display width in pixels, i.e. after applying :attr:`rotation`; equals the ``W`` of
            frames from :func:`~cmmvt.media.iter_frames` without resizing.
        height: Display height in pixels (after rotation).
        avg_fps: Average frame rate (frames per second) as reported by the demuxer.
        rotation: Counter-clockwise rotation in degrees (0, 90, 180 or 270) that the display
            matrix asks for; :func:`~cmmvt.media.iter_frames` applies it.
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
