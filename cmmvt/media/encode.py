"""Encoding of real audio-visual clips with PyAV (FFmpeg): the synthetic dataset, the tests and benchmarks.

:func:`encode_clip` writes deterministic H.264/AAC (or other codec) files of any pixel format, frame rate
(variable too), rotation and audio layout.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.mkv"
    >>> encode_clip(path, np.zeros((5, 16, 24, 3), np.uint8), 25, pix_fmt="yuv444p")
    >>> path.stat().st_size > 0
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.codec.codec import Capabilities

from cmmvt.media.container import PathLike
from cmmvt.media.sampling import _check_fps

__all__ = ["encode_clip"]

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
