"""Media files through PyAV (FFmpeg): :mod:`~cmmvt.media.decode` reads them, :mod:`~cmmvt.media.encode` writes them."""

from cmmvt.media.decode import (
    Audio,
    Frames,
    MediaError,
    VideoInfo,
    audio_chunks,
    frames_at,
    header_duration,
    iter_frames,
    load_audio,
    probe,
    read_frames,
    sample_times,
    segment_span,
)
from cmmvt.media.encode import encode_clip

__all__ = ["Audio", "Frames", "MediaError", "VideoInfo", "audio_chunks", "encode_clip", "frames_at", "header_duration",
           "iter_frames", "load_audio", "probe", "read_frames", "sample_times", "segment_span"]
