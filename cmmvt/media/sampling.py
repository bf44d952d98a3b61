"""The sampling rule: the instants of a clip (or of a segment of it) that frames and audio windows are taken at.

Time zero is the video stream's start (``stream.start_time``, else the first decoded frame's presentation
timestamp); all times are float64 seconds from there. Video frames (:func:`cmmvt.media.iter_frames`) and audio
windows (:func:`cmmvt.features.logmel.clip_windows`) are both taken at :func:`sample_times`, so video row ``t``
and audio row ``t`` of the feature caches describe the same moment.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from cmmvt.media.container import MediaError, PathLike

__all__ = ["sample_times", "segment_span"]


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
    """Raise ValueError unless ``fps`` is a positive finite number (int, float or Fraction)."""
    if not (isinstance(fps, (int, float, Fraction)) and math.isfinite(float(fps)) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
