"""Tests for :mod:`cmmvt.media` on real files encoded with PyAV (no mocks).

Frames encode their own index as a solid grey level (``STEP * i``), so "which frame was sampled at
time t" can be read back from the pixels even after lossy coding (errors stay within a level or
two, far below ``STEP / 2``).
"""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cmmvt import media
from cmmvt.media import MediaError

SR = 16000
SIZE = 64


def _gray_frames(n: int, step: int, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """``(n, h, w, 3)`` uint8, frame ``i`` solid grey ``step * i``."""
    levels = (np.arange(n) * step).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, h, w, 3)).copy()


def _frame_index(rgb: np.ndarray, step: int) -> np.ndarray:
    """Recover the encoded frame index of each ``(T, H, W, 3)`` frame from its mean grey."""
    return np.rint(rgb.reshape(len(rgb), -1).mean(axis=1) / step).astype(int)  # (T,)


def _sine(freq: float, seconds: float, amp: float = 0.4, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def _lag(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 300) -> int:
    """Shift (samples) of ``decoded`` relative to ``reference`` that best aligns them."""
    n = min(len(decoded), len(reference)) - 2 * max_lag
    ref = reference[max_lag:max_lag + n]
    scores = [float(np.dot(decoded[max_lag + d:max_lag + d + n], ref)) for d in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


# --------------------------------------------------------------------------------------------
# sample_times / MediaError
# --------------------------------------------------------------------------------------------


def test_sample_times_rule():
    assert media.sample_times(1.0, 4).tolist() == [0.125, 0.375, 0.625, 0.875]
    t = media.sample_times(2.0, 25)
    assert len(t) == 50 and t.dtype == np.float64 and np.all(np.diff(t) > 0)
    short = media.sample_times(0.1, 4)  # shorter than 1/fps: one instant, inside the clip
    assert len(short) == 1 and 0 <= short[0] < 0.1
    assert len(media.sample_times(0.0, 4)) == 1
    assert np.all(media.sample_times(1.01, 4) < 1.01)
    with pytest.raises(ValueError):
        media.sample_times(1.0, 0)
    with pytest.raises(ValueError):
        media.sample_times(float("nan"), 4)


def test_media_error_carries_path_and_reason(tmp_path):
    err = MediaError(tmp_path / "x.mp4", "boom")
    assert err.path == tmp_path / "x.mp4" and err.reason == "boom"
    assert str(err) == f"{tmp_path / 'x.mp4'}: boom"
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, MediaError) and str(again) == str(err)


# --------------------------------------------------------------------------------------------
# Video sampling
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfr_clip(tmp_path_factory) -> Path:
    """2 s, 25 fps, 64x64, frame i grey 5*i, with AAC audio."""
    path = tmp_path_factory.mktemp("cfr") / "cfr.mp4"
    media.encode_clip(path, _gray_frames(50, 5), 25, _sine(440, 2.0), SR)
    return path


def test_probe_constant_frame_rate(cfr_clip):
    info = media.probe(cfr_clip)
    assert info.path == cfr_clip
    assert info.duration == pytest.approx(2.0, abs=1e-6)
    assert (info.width, info.height, info.rotation) == (SIZE, SIZE, 0)
    assert info.avg_fps == pytest.approx(25.0)
    assert info.has_audio and info.video_codec == "h264" and info.audio_codec == "aac"


@pytest.mark.parametrize("fps", [4, 10, 50])
def test_constant_frame_rate_sampling_picks_displayed_frame(cfr_clip, fps):
    info = media.probe(cfr_clip)
    frames = media.read_frames(cfr_clip, fps)
    assert abs(len(frames.t) - round(info.duration * fps)) <= 1
    assert np.all(np.diff(frames.t) > 0)
    np.testing.assert_array_equal(frames.t, media.sample_times(info.duration, fps))
    assert frames.rgb.shape == (len(frames.t), SIZE, SIZE, 3) and frames.rgb.dtype == np.uint8
    expected = np.floor(frames.t * 25).astype(int)  # frame i is on screen during [i/25, (i+1)/25)
    np.testing.assert_array_equal(_frame_index(frames.rgb, 5), expected)


def test_iter_frames_streams_same_result(cfr_clip):
    items = list(media.iter_frames(cfr_clip, 4))
    frames = media.read_frames(cfr_clip, 4)
    assert [t for _, t in items] == frames.t.tolist()
    assert all(np.array_equal(rgb, frames.rgb[i]) for i, (rgb, _) in enumerate(items))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_sampled_by_presentation_time(tmp_path, suffix):
    # First second at 5 fps, second second at 30 fps.
    pts = np.concatenate([np.arange(5) / 5, 1 + np.arange(30) / 30])  # (35,)
    path = tmp_path / f"vfr{suffix}"
    media.encode_clip(path, _gray_frames(len(pts), 6), 30, pts_seconds=pts)
    info = media.probe(path)
    assert info.duration == pytest.approx(2.0, abs=0.01)
    frames = media.read_frames(path, 10)
    assert abs(len(frames.t) - round(info.duration * 10)) <= 1
    assert np.all(np.diff(frames.t) > 0)
    expected = np.searchsorted(pts, frames.t, side="right") - 1  # last frame with pts <= t
    np.testing.assert_array_equal(_frame_index(frames.rgb, 6), expected)
    # A frame-count-based sampler would pick very different frames in the first second.
    assert _frame_index(frames.rgb, 6)[2] == 1  # t = 0.25 s shows the frame from 0.2 s


def test_short_side_resize_keeps_aspect(tmp_path):
    path = tmp_path / "wide.mp4"
    media.encode_clip(path, _gray_frames(10, 20, h=48, w=96), 25)
    frames = media.read_frames(path, 25, short_side=24)
    assert frames.rgb.shape == (10, 24, 48, 3)
    np.testing.assert_array_equal(_frame_index(frames.rgb, 20), np.arange(10))
    tall = tmp_path / "tall.mkv"
    media.encode_clip(tall, _gray_frames(4, 20, h=96, w=64), 25)
    assert media.read_frames(tall, 25, short_side=32).rgb.shape == (4, 48, 32, 3)
    with pytest.raises(ValueError):
        media.read_frames(path, 25, short_side=0)


def test_clip_shorter_than_one_sample_gives_one_frame(tmp_path):
    path = tmp_path / "short.mp4"
    media.encode_clip(path, _gray_frames(2, 50), 25)  # 0.08 s
    frames = media.read_frames(path, 4)
    assert frames.rgb.shape == (1, SIZE, SIZE, 3)
    assert 0 <= frames.t[0] < 0.08
    assert _frame_index(frames.rgb, 50).tolist() == [1]  # the frame on screen at t = 0.08-


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_makes_frames_upright(tmp_path, rotation):
    coded = np.zeros((3, 32, 64, 3), np.uint8)  # landscape as stored
    coded[:, :8, :8] = (255, 0, 0)  # red marker in the stored top-left corner
    path = tmp_path / f"rot{rotation}.mp4"
    media.encode_clip(path, coded, 25, rotation=rotation)
    info = media.probe(path)
    assert info.rotation == rotation
    frames = media.read_frames(path, 25)
    upright = np.rot90(coded[0], rotation // 90)  # counter-clockwise, as the display matrix says
    assert (info.height, info.width) == upright.shape[:2] == frames.rgb.shape[1:3]
    red = (frames.rgb[0, ..., 0] > 180) & (frames.rgb[0, ..., 1] < 80)
    want = (upright[..., 0] > 180) & (upright[..., 1] < 80)
    assert (red == want).mean() > 0.97


def test_vp9_webm_video(tmp_path):
    path = tmp_path / "clip.webm"
    media.encode_clip(path, _gray_frames(25, 8), 25, vcodec="libvpx-vp9", acodec="libopus",
                      audio=_sine(440, 1.0))
    info = media.probe(path)
    assert info.video_codec == "vp9" and info.audio_codec == "opus"
    frames = media.read_frames(path, 4)
    np.testing.assert_array_equal(_frame_index(frames.rgb, 8), np.floor(frames.t * 25).astype(int))


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------

_AUDIO_CASES = [
    ("mp4", "aac"),
    ("mkv", "libopus"),
    ("mkv", "libmp3lame"),
    ("mp4", "mp3"),
    ("mkv", "pcm_s16le"),
    ("mov", "pcm_s16le"),
    ("mkv", "flac"),
    ("mkv", "vorbis"),
]


@pytest.mark.parametrize(("ext", "acodec"), _AUDIO_CASES)
def test_audio_codecs_decode_to_mono_at_requested_rate(tmp_path, ext, acodec):
    if acodec not in av.codecs_available:
        pytest.skip(f"{acodec} encoder not in this FFmpeg build")
    rng = np.random.default_rng(0)
    left = _sine(440, 1.0, amp=0.4)
    left[8000:8400] += rng.uniform(-0.4, 0.4, 400).astype(np.float32)  # alignment marker
    stereo = np.stack([left, 0.5 * left], axis=1)  # (N, 2): right = half the left
    path = tmp_path / f"a_{acodec}.{ext}"
    media.encode_clip(path, _gray_frames(25, 8), 25, stereo, SR, acodec=acodec)
    assert media.probe(path).has_audio
    for rate in (SR, 22050):
        audio = media.load_audio(path, rate)
        assert audio is not None and audio.sample_rate == rate
        x = audio.samples
        assert x.dtype == np.float32 and x.ndim == 1 and np.abs(x).max() <= 1.0
        assert abs(len(x) - rate) <= 2048 + 1200, len(x)  # a few codec frames + encoder priming
        assert _peak_hz(x[:rate], rate) == pytest.approx(440, abs=3)
    x = media.load_audio(path, SR).samples
    assert _lag(x, 0.75 * left) == 0  # sample 0 is the first video frame's instant
    # mono = mean of the channels: 0.75 * left (swresample's own downmix would give 1.06 * left)
    seg = slice(2000, 7000)
    gain = np.dot(x[seg], left[seg]) / np.dot(left[seg], left[seg])
    assert gain == pytest.approx(0.75, abs=0.08)


def test_opus_sample_rate_choice(tmp_path):
    # libopus takes 48/24/16/12/8 kHz only: 22.05 kHz input is resampled to 24 kHz for encoding.
    path = tmp_path / "o.mkv"
    media.encode_clip(path, _gray_frames(4, 8), 25, _sine(1000, 1.0, sr=22050), 22050, acodec="libopus")
    audio = media.load_audio(path, 22050)
    assert audio.sample_rate == 22050 and abs(len(audio.samples) - 22050) <= 2048
    assert _peak_hz(audio.samples, 22050) == pytest.approx(1000, abs=3)


def test_no_audio_stream(tmp_path):
    path = tmp_path / "silent.mp4"
    media.encode_clip(path, _gray_frames(5, 8), 25)
    info = media.probe(path)
    assert not info.has_audio and info.audio_codec is None
    assert media.load_audio(path) is None


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SR)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((_sine(300, 0.5)[None] * 32767).astype(np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    audio = media.load_audio(path, 8000)
    assert audio.sample_rate == 8000 and abs(len(audio.samples) - 4000) <= 16
    with pytest.raises(MediaError, match="no video stream") as exc:
        media.probe(path)
    assert exc.value.path == path


# --------------------------------------------------------------------------------------------
# Broken files
# --------------------------------------------------------------------------------------------


def _everything(path: Path) -> None:
    media.probe(path)


def _frames(path: Path) -> None:
    media.read_frames(path, 4)


def _audio(path: Path) -> None:
    media.load_audio(path)


@pytest.mark.parametrize("reader", [_everything, _frames, _audio], ids=["probe", "read_frames", "load_audio"])
@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated_mp4", "truncated_mkv"])
def test_corrupt_files_raise_media_error(tmp_path, cfr_clip, kind, reader):
    path = tmp_path / f"{kind}.{'mkv' if kind.endswith('mkv') else 'mp4'}"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "truncated_mp4":
        data = cfr_clip.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_mkv":
        full = tmp_path / "full.mkv"
        noise = np.random.default_rng(0).integers(0, 256, (50, SIZE, SIZE, 3), dtype=np.uint8)
        media.encode_clip(full, noise, 25, _sine(440, 2.0))
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        if reader is _everything:  # the Matroska header survives: probe cannot tell, decoding does
            assert media.probe(path).duration > 1.5
            return
    with pytest.raises(MediaError) as exc:
        reader(path)
    assert exc.value.path == path and str(path) in str(exc.value) and exc.value.reason


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def test_encode_is_deterministic(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (20, SIZE, SIZE, 3), dtype=np.uint8)
    wave = np.random.default_rng(2).uniform(-0.5, 0.5, SR).astype(np.float32)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    media.encode_clip(a, noise, 25, wave, SR)
    media.encode_clip(b, noise, 25, wave, SR)
    assert a.read_bytes() == b.read_bytes()
    fa, fb = media.read_frames(a, 25), media.read_frames(b, 25)
    np.testing.assert_array_equal(fa.rgb, fb.rgb)
    np.testing.assert_array_equal(media.load_audio(a).samples, media.load_audio(b).samples)


def test_encode_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        media.encode_clip(tmp_path / "odd.mp4", np.zeros((2, 33, 32, 3), np.uint8), 25)
    with pytest.raises(ValueError, match="uint8"):
        media.encode_clip(tmp_path / "f.mp4", np.zeros((2, 32, 32, 3), np.float32), 25)
    with pytest.raises(ValueError, match="increasing"):
        media.encode_clip(tmp_path / "p.mp4", np.zeros((2, 32, 32, 3), np.uint8), 25, pts_seconds=[0.1, 0.0])


def test_multichannel_audio_is_averaged(tmp_path):
    # 6-channel AAC in MP4 reads back with an unnamed "6 channels" layout: still decodes.
    wave = np.zeros((SR, 6), np.float32)
    wave[:, 0] = _sine(440, 1.0, amp=0.6)
    path = tmp_path / "six.mp4"
    media.encode_clip(path, _gray_frames(5, 8), 25, wave, SR)
    x = media.load_audio(path, SR).samples
    assert abs(len(x) - SR) <= 2048
    assert _peak_hz(x, SR) == pytest.approx(440, abs=3)
    assert np.sqrt(np.mean(x[2000:14000] ** 2)) == pytest.approx(0.1 / np.sqrt(2), rel=0.1)
