"""Tests for :mod:`cmmvt.features.logmel`: shapes, time/frequency alignment, image normalisation, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from cmmvt.features import logmel
from cmmvt.config import AudioParams

P = AudioParams()
SR = P.sample_rate
W = 96
CENTRE = W // 2  # the column a window's timestamp falls on


def _times(duration: float, fps: float) -> np.ndarray:
    """Same rule as ``cmmvt.media.sample_times`` (kept local so this test stands alone)."""
    n = max(1, round(duration * fps))
    return np.minimum((np.arange(n) + 0.5) / fps, np.nextafter(duration, 0)).astype(np.float64)


def _burst(duration: float = 4.0, on: float = 1.5, off: float = 1.7, freq: float = 1000.0) -> np.ndarray:
    """``duration`` s of digital silence with a Hann-shaped ``freq`` Hz tone burst in [on, off).

    The Hann envelope (peak 0.5 at the burst's middle) gives the burst a single energy maximum,
    so "where is the burst" is an argmax, not a plateau.
    """
    n = int(round(duration * SR))
    t = np.arange(n) / SR
    env = np.where((t >= on) & (t < off), np.sin(np.pi * (t - on) / (off - on)) ** 2, 0.0)
    return (0.5 * env * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _mel_bin(freq: float) -> int:
    """The mel band whose triangular filter peaks nearest ``freq`` (same filterbank as LogMel)."""
    _, _, n_fft = logmel.frame_params(P)
    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, SR / 2, P.n_mels, SR)  # (n_freqs, n_mels)
    return int(fb[int(round(freq * n_fft / SR))].argmax())


@pytest.fixture(scope="module")
def burst_windows() -> torch.Tensor:
    return logmel.clip_windows(_burst(), np.array([1.2, 1.6, 3.5]), P)  # (3, 64, 96)


# ------------------------------------------------------------------------------------ shapes


def test_default_sizes():
    assert logmel.frame_params(P) == (400, 160, 512)
    assert logmel.window_frames(P) == W


@pytest.mark.parametrize("duration", [0.1, 0.2, 1.0, 2.5, 10.0])
def test_shapes_for_durations(duration):
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(round(duration * SR)))).astype(np.float32)
    t = _times(duration, 4.0)
    win = logmel.clip_windows(wave, t, P)
    assert win.shape == (len(t), P.n_mels, W)
    assert win.dtype == torch.float32
    assert torch.isfinite(win).all()
    assert float(win.min()) >= logmel.LOG_FLOOR - 1e-4


def test_short_clip_has_one_full_window():
    wave = np.zeros(int(0.2 * SR), np.float32)
    t = _times(0.2, 4.0)
    assert len(t) == 1
    win = logmel.clip_windows(wave, t, P)
    assert win.shape == (1, P.n_mels, W)
    # silence and padding are both the log floor
    torch.testing.assert_close(win, torch.full_like(win, logmel.LOG_FLOOR), atol=1e-4, rtol=0)


def test_edge_times_are_padded_with_floor():
    rng = np.random.default_rng(1)
    wave = (0.5 * rng.standard_normal(2 * SR)).astype(np.float32)  # 2 s of loud noise
    win = logmel.clip_windows(wave, np.array([0.0, 2.0 - 1e-6, -0.3, 2.4]), P)
    assert win.shape == (4, P.n_mels, W)
    col = win.mean(dim=1)  # (4, W) mean log-mel per column
    floor = logmel.LOG_FLOOR
    # t = 0: the left half lies before the clip (floor), the right half is noise
    assert torch.allclose(col[0, : CENTRE - 2], torch.tensor(floor), atol=1e-4)
    assert (col[0, CENTRE + 2 :] > floor + 5).all()
    # t = end: mirror image
    assert (col[1, : CENTRE - 2] > floor + 5).all()
    assert torch.allclose(col[1, CENTRE + 2 :], torch.tensor(floor), atol=1e-4)
    # times outside the clip still give full windows
    assert torch.allclose(col[2, :10], torch.tensor(floor), atol=1e-4)
    assert torch.allclose(col[3, -10:], torch.tensor(floor), atol=1e-4)


def test_empty_inputs():
    assert logmel.clip_windows(np.zeros(SR, np.float32), np.zeros(0), P).shape == (0, P.n_mels, W)
    assert logmel.clip_windows(np.zeros(0, np.float32), np.array([0.0]), P).shape == (1, P.n_mels, W)
    assert logmel.to_images(torch.zeros(0, P.n_mels, W)).shape == (0, 3, P.n_mels, W)


def test_non_default_params():
    p = AudioParams(sample_rate=8000, n_mels=32, win_ms=32.0, hop_ms=16.0, window_s=0.64)
    assert logmel.frame_params(p) == (256, 128, 256)
    win = logmel.clip_windows(np.zeros(8000, np.float32), np.array([0.1, 0.5]), p)
    assert win.shape == (2, 32, 40)


def test_logmel_module_shape():
    m = logmel.LogMel(P)
    out = m(torch.zeros(SR))
    assert out.shape == (P.n_mels, 1 + SR // 160)


# --------------------------------------------------------------------------------- alignment


def test_burst_centred_in_its_window(burst_windows):
    win = burst_windows[1]  # centred on t = 1.6, the middle of the 1.5-1.7 s burst
    col = win.mean(dim=0)  # (W,)
    assert abs(int(col.argmax()) - CENTRE) <= 1
    band = win[:, CENTRE]  # (n_mels,) spectrum at the centre column
    k = _mel_bin(1000.0)
    assert abs(int(band.argmax()) - k) <= 1
    # in the 1 kHz band the burst covers ±0.1 s = ±10 columns around the centre and nothing else
    loud = torch.nonzero(win[k] > logmel.LOG_FLOOR + 3).flatten()
    assert abs(int(loud.min()) - (CENTRE - 10)) <= 2
    assert abs(int(loud.max()) - (CENTRE + 10)) <= 2


def test_no_burst_far_away(burst_windows):
    win = burst_windows[2]  # centred on t = 3.5, 1.8 s after the burst
    assert float(win.max()) < logmel.LOG_FLOOR + 1.0
    assert float(win.max()) < float(burst_windows[1].max()) - 15


def test_time_maps_to_columns(burst_windows):
    win = burst_windows[0]  # centred on t = 1.2
    col = win.mean(dim=0)  # (W,)
    loud = torch.nonzero(win[_mel_bin(1000.0)] > logmel.LOG_FLOOR + 3).flatten()
    # onset 1.5 s = 0.3 s after the centre = 30 columns right; burst middle 1.6 s = 40 columns right;
    # its end (1.7 s) is past the window's last column (1.2 + 0.47 s)
    assert abs(int(loud.min()) - (CENTRE + 30)) <= 2
    assert int(loud.max()) == W - 1
    assert (col[: CENTRE + 27] < logmel.LOG_FLOOR + 1).all()
    assert abs(int(col.argmax()) - (CENTRE + 40)) <= 2
    assert abs(int(win[:, CENTRE + 40].argmax()) - _mel_bin(1000.0)) <= 1


def test_click_lands_on_expected_column():
    """A 2 ms click at 1.6 s is ~40 columns right of the centre of the window at 1.2 s."""
    x = np.zeros(4 * SR, np.float32)
    i = int(1.6 * SR)
    x[i : i + 32] = 0.5
    win = logmel.clip_windows(x, np.array([1.2, 1.6]), P)
    col = win.mean(dim=1)  # (2, W)
    assert abs(int(col[0].argmax()) - (CENTRE + 40)) <= 1
    assert abs(int(col[1].argmax()) - CENTRE) <= 1


# ------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("kind", ["silence", "white", "loud"])
def test_images_finite_and_three_identical_channels(kind):
    rng = np.random.default_rng(2)
    wave = {
        "silence": np.zeros(3 * SR, np.float32),
        "white": (0.3 * rng.standard_normal(3 * SR)).astype(np.float32),
        "loud": rng.uniform(-1, 1, 3 * SR).astype(np.float32),
    }[kind]
    img = logmel.to_images(logmel.clip_windows(wave, _times(3.0, 4.0), P))
    assert img.shape == (12, 3, P.n_mels, W)
    assert img.is_contiguous()
    assert torch.isfinite(img).all()
    assert float(img.abs().max()) < 5  # ImageNet-normalised range, roughly [-2.5, 3]
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 1], img[:, 2])
    if kind == "silence":
        expected = (logmel.LOG_FLOOR - logmel.LOGMEL_MEAN) / logmel.LOGMEL_STD
        torch.testing.assert_close(img, torch.full_like(img, expected), atol=1e-4, rtol=0)
    else:
        assert float(img.std()) > 0.05


def test_images_resize():
    win = logmel.clip_windows(_burst(), np.array([1.6, 3.5]), P)
    img = logmel.to_images(win, size=(224, 224))
    assert img.shape == (2, 3, 224, 224)
    assert torch.isfinite(img).all()
    assert torch.equal(img[:, 0], img[:, 2])
    # the burst stays in the middle of the resized image
    col = img[0, 0].mean(dim=0)
    assert abs(int(col.argmax()) - 112) <= 2


def test_images_monotone_in_loudness():
    quiet = logmel.to_images(logmel.clip_windows(_burst() * 0.01, np.array([1.6]), P))
    loud = logmel.to_images(logmel.clip_windows(_burst(), np.array([1.6]), P))
    assert float(loud.max()) > float(quiet.max()) + 0.5


# ------------------------------------------------------------------------------- determinism


def test_deterministic():
    rng = np.random.default_rng(3)
    wave = (0.2 * rng.standard_normal(5 * SR)).astype(np.float32)
    t = _times(5.0, 4.0)
    a = logmel.to_images(logmel.clip_windows(wave, t, P))
    b = logmel.to_images(logmel.clip_windows(wave.copy(), t.copy(), P))
    c = logmel.to_images(logmel.windows(logmel.LogMel(P)(torch.from_numpy(wave)), t, P).detach())
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


def test_windows_match_slicing():
    """The vectorised gather equals plain slicing of the spectrogram (interior windows)."""
    rng = np.random.default_rng(4)
    spec = torch.from_numpy(rng.standard_normal((P.n_mels, 500)).astype(np.float32))
    t = np.array([0.6, 1.234, 2.5, 4.0])
    win = logmel.windows(spec, t, P)
    for k, tk in enumerate(t):
        s = int(np.floor(tk * 100 - W / 2 + 0.5))
        assert torch.equal(win[k], spec[:, s : s + W])


# ------------------------------------------------------------------ audio image settings (#11)

SETTINGS = [(size, norm) for size in (None, (128, 192), (224, 224)) for norm in ("fixed", "window", "clip")]


@pytest.mark.parametrize(("size", "norm"), SETTINGS)
def test_image_settings_shape_and_range(size, norm):
    wave = _burst() + (0.01 * np.random.default_rng(0).standard_normal(4 * SR)).astype(np.float32)
    win = logmel.clip_windows(wave, _times(4.0, 4.0), P)  # (16, 64, 96)
    stats = logmel.clip_stats([win])
    img = logmel.to_images(win, size, norm, stats)
    assert img.shape == (16, 3, *(size or (P.n_mels, W)))
    assert torch.isfinite(img).all() and float(img.abs().max()) < 12.0  # a pure tone peaks at ~9 std when standardised
    if norm == "window":  # each window standardised: mean 0, std 1 (its std is above the floor here)
        flat = logmel.to_images(win, None, norm)[:, 0].flatten(1)
        torch.testing.assert_close(flat.mean(1), torch.zeros(16), atol=1e-4, rtol=0)
        torch.testing.assert_close(flat.std(1, correction=0), torch.ones(16), atol=1e-4, rtol=0)
    if norm == "clip":  # the clip as a whole standardised
        flat = logmel.to_images(win, None, norm, stats)[:, 0]
        assert abs(float(flat.mean())) < 1e-4 and abs(float(flat.std(correction=0)) - 1) < 1e-3


@pytest.mark.parametrize("norm", ["fixed", "window", "clip"])
def test_silence_stays_finite(norm):
    win = logmel.clip_windows(np.zeros(2 * SR, np.float32), np.array([0.5, 1.5]), P)
    img = logmel.to_images(win, (128, 192), norm, logmel.clip_stats([win]))
    assert torch.isfinite(img).all()
    if norm != "fixed":  # constant input: no division by a zero std, just zeros
        assert float(img.abs().max()) < 1e-4


@pytest.mark.parametrize("size", [(128, 192), (224, 224), (32, 48)])
@pytest.mark.parametrize("freq", [300.0, 1000.0, 4000.0])
def test_tone_lands_in_the_right_mel_rows_after_resizing(size, freq):
    win = logmel.clip_windows(_burst(freq=freq), np.array([1.6]), P)  # (1, 64, 96)
    img = logmel.to_images(win, size, "window")[0, 0]  # (H, W')
    row = int(img.mean(dim=1).argmax())  # the loudest image row
    expected = (_mel_bin(freq) + 0.5) * size[0] / P.n_mels - 0.5  # the band's centre after the bilinear resize
    assert abs(row - expected) <= size[0] / P.n_mels + 1


def test_normalisations_differ_in_what_they_keep():
    """A gain shifts every log-mel value by the same 2·ln(gain) (well above the log floor): fixed keeps the
    shift (loudness), window and clip standardisation remove it."""
    t = _times(4.0, 4.0)[2:-2]  # windows inside the clip (the padding outside it is the floor, never shifted)
    wave = _burst() + (0.05 * np.random.default_rng(1).standard_normal(4 * SR)).astype(np.float32)
    loud, quiet = (logmel.clip_windows(wave * g, t, P) for g in (1.0, 0.1))
    shift = 2 * np.log(10.0) / logmel.LOGMEL_STD
    torch.testing.assert_close(logmel.to_images(loud) - logmel.to_images(quiet),
                               torch.full((12, 3, P.n_mels, W), shift), atol=0.1, rtol=0)
    for norm in ("window", "clip"):
        a = logmel.to_images(loud, None, norm, logmel.clip_stats([loud]))
        b = logmel.to_images(quiet, None, norm, logmel.clip_stats([quiet]))
        torch.testing.assert_close(a, b, atol=0.1, rtol=0.05)  # the fixed map shifted by 1.02


def test_clip_needs_its_stats():
    with pytest.raises(ValueError, match="clip_stats"):
        logmel.to_images(torch.zeros(1, 64, 96), None, "clip")
    with pytest.raises(ValueError, match="fixed, window, clip"):
        logmel.to_images(torch.zeros(1, 64, 96), None, "loud")


def test_stacked_windows_are_the_rows_before_now_and_after():
    p = AudioParams(stack=3)
    t = np.array([1.0, 2.0])
    times = logmel.stack_times(t, p)
    np.testing.assert_allclose(times, [0.04, 1.0, 1.96, 1.04, 2.0, 2.96])
    wave = _burst(on=1.9, off=2.05)  # a burst just before t = 2.0 (inside row 1's centre window, and row 0's "after")
    win = logmel.clip_windows(wave, times, p).reshape(2, 3, P.n_mels, W)
    img = logmel.to_images(win, (128, 192), "fixed")  # (2, 3, 128, 192): R = t - w, G = t, B = t + w
    energy = img.mean(dim=(2, 3))  # (2, 3)
    assert int(energy[0].argmax()) == 2  # for row t = 1.0 the burst lies in the window after it
    assert int(energy[1].argmax()) == 1  # for row t = 2.0 in its own window
    assert float(energy[1, 0]) < float(energy[1, 1])  # and not in the one before
