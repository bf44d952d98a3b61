"""Media files through PyAV (FFmpeg): everything in the project that reads or writes one goes through here.

* :mod:`~cmmvt.media.container`: opening a file, picking its streams, seeking; :class:`MediaError`.
* :mod:`~cmmvt.media.sampling`: the instants a clip is sampled at (:func:`sample_times`, :func:`segment_span`).
* :mod:`~cmmvt.media.probe`: a clip's metadata (:func:`probe`, :func:`header_duration`).
* :mod:`~cmmvt.media.video`: frames by timestamp, resized while converted to RGB, upright.
* :mod:`~cmmvt.media.audio`: mono audio at any rate, streamed and aligned to the first video frame.
* :mod:`~cmmvt.media.encode`: real clips for the synthetic set, the tests and the benchmarks.
"""

from cmmvt.media.audio import Audio, audio_chunks, load_audio
from cmmvt.media.container import MediaError
from cmmvt.media.encode import encode_clip
from cmmvt.media.probe import VideoInfo, header_duration, probe
from cmmvt.media.sampling import sample_times, segment_span
from cmmvt.media.video import Frames, frames_at, iter_frames, read_frames

__all__ = ["Audio", "Frames", "MediaError", "VideoInfo", "audio_chunks", "encode_clip", "frames_at", "header_duration",
           "iter_frames", "load_audio", "probe", "read_frames", "sample_times", "segment_span"]
