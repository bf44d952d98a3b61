"""Log-mel spectrogram windows aligned with sampled video frames ("spectrogram as image").

A clip's mono waveform becomes one log-mel spectrogram; for every sampled video-frame timestamp
(see :func:`cmmvt.media.sample_times`) a fixed-length window centred on that instant is cut out and
turned into a 3-channel image for a frozen ImageNet CNN, so audio row ``t`` and video row ``t`` of
the feature caches describe the same moment.

The defaults of :class:`cmmvt.config.AudioParams` follow VGGish (Hershey et al. 2017, "CNN
architectures for large-scale audio classification", ICASSP): 16 kHz mono, 25 ms analysis window,
10 ms hop, 64 mel bands and 0.96 s patches, i.e. 96 spectrogram frames by 64 mel bins per window.
Feeding such patches to an ImageNet-pretrained CNN as images follows Gong et al. 2021 (AST,
"AST: Audio Spectrogram Transformer", Interspeech), who standardise log-mel values with fixed
dataset constants before an ImageNet-initialised model; :func:`to_images` does the same.

Conventions:

* Time → column. With ``center=True`` spectrogram frame ``k`` is centred on sample ``k * hop``,
  i.e. on time ``k * hop / sr``. The window for time ``t`` holds frames
  ``s .. s + W - 1`` with ``s = round(t * sr / hop - W / 2)``, so ``t`` falls on column ``W // 2``
  (column 48 of 96 by default) and a sound ``d`` seconds after ``t`` sits ``d * sr / hop`` columns
  right of it.
* Padding. Frames outside the clip are filled with the log floor ``log(1e-6)`` - the value of true
  silence - so every window has exactly ``W`` columns even for a 0.1 s clip, and nothing is
  invented beyond the clip's edges (edge replication would smear the first/last sound over the
  missing part). The waveform itself is zero-padded for the centred STFT (``pad_mode="constant"``),
  for the same reason and so that clips shorter than half an FFT still work.
* Images. :func:`to_images` normalises (``extract.audio.norm``: the fixed affine map
  ``(logmel - LOGMEL_MEAN) / LOGMEL_STD``, which keeps loudness - silence ≈ -2.5, full scale ≈ +2..+3 -,
  or standardisation per window or per clip), resizes to ``extract.audio.image`` and fills the three
  channels with the window (or, ``stack: 3``, with the windows before, at and after the instant). The
  result is already in normalised-input space: do not apply ImageNet mean/std again.

Example:
    >>> import numpy as np
    >>> from cmmvt.config import AudioParams
    >>> p = AudioParams()
    >>> wave = np.zeros(16000, np.float32)  # 1 s of silence
    >>> win = clip_windows(wave, np.array([0.125, 0.375, 0.625, 0.875]), p)
    >>> tuple(win.shape), tuple(to_images(win).shape)
    ((4, 64, 96), (4, 3, 64, 96))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from cmmvt.config import AudioParams

__all__ = [
    "LOG_EPS",
    "LOG_FLOOR",
    "LOGMEL_MEAN",
    "LOGMEL_STD",
    "LogMel",
    "NORM_STD_FLOOR",
    "clip_stats",
    "clip_windows",
    "stack_times",
    "stream_windows",
    "frame_params",
    "to_images",
    "window_frames",
    "windows",
]

LOG_EPS = 1e-6
"""Added to mel power before the log; sets the value of digital silence."""
LOG_FLOOR = math.log(LOG_EPS)
"""``log(1e-6) ≈ -13.8``: the log-mel value of silence and of padding outside the clip."""
LOGMEL_MEAN = -2.5
"""Fixed centre of the log-mel → image map (natural-log mel power of a [-1, 1] waveform)."""
LOGMEL_STD = 4.5
"""Fixed scale of the log-mel → image map: silence → ≈ -2.5, full-scale sound → ≈ +2..+3."""


def frame_params(p: AudioParams) -> tuple[int, int, int]:
    """STFT sizes in samples for ``p``.

    Returns:
        ``(win_length, hop_length, n_fft)`` with ``win_length = round(win_ms * sr / 1000)``,
        ``hop_length = round(hop_ms * sr / 1000)`` and ``n_fft`` the next power of two
        ``>= win_length`` (400, 160, 512 for the VGGish defaults).
    """
    win = max(1, int(round(p.win_ms * p.sample_rate / 1000.0)))
    hop = max(1, int(round(p.hop_ms * p.sample_rate / 1000.0)))
    n_fft = 1 << (win - 1).bit_length()
    return win, hop, n_fft


def window_frames(p: AudioParams) -> int:
    """Columns per window: ``W = round(window_s * 1000 / hop_ms)`` (96 for 0.96 s at 10 ms)."""
    return max(1, int(round(p.window_s * 1000.0 / p.hop_ms)))


class LogMel(torch.nn.Module):
    """Waveform → natural-log mel power spectrogram, ``log(mel + 1e-6)``.

    A thin wrapper around :class:`torchaudio.transforms.MelSpectrogram` (HTK mel scale, no filter
    normalisation, power 2, centred frames, zero padding at the edges) with the VGGish framing of
    Hershey et al. 2017 by default: 25 ms Hann window, 10 ms hop, 64 bands from 0 Hz to Nyquist.

    Args:
        p: Sample rate, mel bands, window and hop lengths.
    """

    def __init__(self, p: AudioParams) -> None:
        super().__init__()
        win, hop, n_fft = frame_params(p)
        self.sample_rate = int(p.sample_rate)
        self.hop_length = hop
        self.n_fft = n_fft
        self.n_mels = int(p.n_mels)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=n_fft,
            win_length=win,
            hop_length=hop,
            n_mels=self.n_mels,
            center=True,
            pad_mode="constant",
            power=2.0,
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Compute the log-mel spectrogram.

        Args:
            wave: ``(N,)`` float waveform in [-1, 1] at ``p.sample_rate`` (leading batch dims allowed).

        Returns:
            ``(n_mels, F)`` float32 with ``F = 1 + N // hop``; values ``>= log(1e-6)``.
        """
        wave = wave.to(torch.float32)
        if wave.shape[-1] == 0:  # torch.stft rejects empty input; silence has one floor frame
            return torch.full((*wave.shape[:-1], self.n_mels, 1), LOG_FLOOR, device=wave.device)
        mel = self.mel(wave)  # (..., n_mels, F)
        return torch.log(mel + LOG_EPS)


def windows(logmel: torch.Tensor, times: np.ndarray, p: AudioParams) -> torch.Tensor:
    """Cut one ``W``-column window centred on each timestamp out of a log-mel spectrogram.

    Window ``t`` holds spectrogram frames ``s_t .. s_t + W - 1`` with
    ``s_t = round(times[t] * sr / hop - W / 2)``, so ``times[t]`` lands on column ``W // 2``. Frames
    before the first or after the last one are the log floor ``log(1e-6)`` (silence), so every
    window has exactly ``W`` columns whatever the clip length. One gather, no Python loop.

    Args:
        logmel: ``(n_mels, F)`` from :class:`LogMel` with the same ``p``.
        times: ``(T,)`` window centres in seconds (e.g. :func:`cmmvt.media.sample_times`).
        p: The audio params (sample rate, hop, window length).

    Returns:
        ``(T, n_mels, W)`` float32 on ``logmel``'s device; ``W = 96`` for the defaults.
    """
    _, hop, _ = frame_params(p)
    W = window_frames(p)
    M, n_frames = logmel.shape
    t = np.asarray(times, dtype=np.float64).reshape(-1)  # (T,)
    if t.size == 0:
        return logmel.new_zeros((0, M, W))
    centre = t * (p.sample_rate / hop)  # (T,) fractional frame index of each timestamp
    start = np.floor(centre - W / 2.0 + 0.5).astype(np.int64)  # (T,) round half up, not to even
    left = max(0, -int(start.min()))
    right = max(0, int(start.max()) + W - n_frames)
    padded = F.pad(logmel, (left, right), value=LOG_FLOOR)  # (M, left + F + right)
    first = torch.from_numpy(start + left).to(logmel.device)  # (T,) first padded column of each window
    idx = first[:, None] + torch.arange(W, device=logmel.device)  # (T, W)
    return padded[:, idx].permute(1, 0, 2).contiguous()  # (M, T, W) → (T, M, W)


NORM_STD_FLOOR = 1.0
"""Smallest std (natural-log units) that ``norm: window | clip`` divides by: silence stays finite and a
near-constant window is not blown up to full contrast."""


def to_images(
    win: torch.Tensor,
    size: tuple[int, int] | None = None,
    norm: str = "fixed",
    stats: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Log-mel windows → 3-channel CNN inputs.

    Normalisation (``norm``):

    * ``fixed``: the affine map ``(x - LOGMEL_MEAN) / LOGMEL_STD`` (per window, no data-dependent
      statistics: silence maps to ``≈ -2.5``, full-scale sound to ``≈ +2..+3``; loudness is kept).
    * ``window``: each row standardised by its own mean and std (std floored at :data:`NORM_STD_FLOOR`),
      as spectrogram-as-image models do per input (e.g. PANNs-style instance normalisation;
      Kong et al. 2020, "PANNs", TASLP): loudness is removed, spectral shape kept.
    * ``clip``: standardised by the clip's mean and std over all its windows (``stats``, from
      :func:`clip_stats`): loudness relative to the rest of the clip is kept.

    Then optionally resizes (bilinear) to ``size`` - AST (Gong et al. 2021) feeds 128 mel bins to an
    ImageNet model; a 64 × 96 window gives a stride-32 CNN only a 2 × 3 grid - and fills the three
    channels: one window replicated, or three windows (``stack: 3``) as R, G, B. The output is already in
    ImageNet-normalised input space (roughly [-3, 3]); do not normalise it again.

    Args:
        win: ``(T, n_mels, W)`` windows from :func:`windows`, or ``(T, C, n_mels, W)`` with ``C`` 1 or 3.
        size: Optional ``(H, W')`` output size (e.g. ``(128, 192)``); ``None`` keeps ``(n_mels, W)``.
        norm: ``fixed``, ``window`` or ``clip``.
        stats: ``(mean, std)`` of the clip, for ``norm="clip"``.

    Returns:
        ``(T, 3, n_mels, W)`` (or ``(T, 3, *size)``) float32, contiguous.
    """
    x = win.to(torch.float32)
    x = x.unsqueeze(1) if x.dim() == 3 else x  # (T, C, M, W)
    if norm == "fixed":
        x = (x - LOGMEL_MEAN) / LOGMEL_STD
    elif norm == "window":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (T, 1, 1, 1)
        std = x.std(dim=(1, 2, 3), correction=0, keepdim=True).clamp_min(NORM_STD_FLOOR)
        x = (x - mean) / std
    elif norm == "clip":
        if stats is None:
            raise ValueError("norm='clip' needs the clip's (mean, std): see clip_stats")
        x = (x - stats[0]) / max(stats[1], NORM_STD_FLOOR)
    else:
        raise ValueError(f"norm must be one of fixed, window, clip; got {norm!r}")
    if size is not None and tuple(size) != tuple(x.shape[-2:]):
        if x.shape[0] > 0:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)  # (T, C, H, W')
        else:
            x = x.new_zeros((0, x.shape[1], *size))
    return x.expand(-1, 3, -1, -1).contiguous()  # (T, 3, H, W')


def clip_stats(blocks: Iterable[torch.Tensor]) -> tuple[float, float]:
    """Mean and std of every log-mel value in a clip's windows (for ``norm: clip``), in one streamed pass.

    Args:
        blocks: ``(n, ..., n_mels, W)`` blocks of windows (e.g. :func:`stream_windows`).

    Returns:
        ``(mean, std)`` over all values; ``(LOG_FLOOR, 0.0)`` for no windows.
    """
    count, total, squares = 0, 0.0, 0.0
    for b in blocks:
        x = b.to(torch.float64)
        count += x.numel()
        total += float(x.sum())
        squares += float((x * x).sum())
    if count == 0:
        return LOG_FLOOR, 0.0
    mean = total / count
    return mean, math.sqrt(max(squares / count - mean * mean, 0.0))


def stack_times(times: np.ndarray, p: AudioParams) -> np.ndarray:
    """Window centres of the rows' channels: ``t`` itself (``stack: 1``) or ``t - w, t, t + w`` interleaved
    (``stack: 3``, ``w = window_s``), so consecutive groups of ``stack`` windows make one row.

    Args:
        times: ``(T,)`` row timestamps in seconds.
        p: The audio params.

    Returns:
        ``(T * stack,)`` seconds.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)  # (T,)
    if p.stack == 1:
        return t
    offsets = np.array([-p.window_s, 0.0, p.window_s])  # (3,)
    return (t[:, None] + offsets).reshape(-1)  # (T * 3,)


@functools.lru_cache(maxsize=8)
def _frames_cached(sample_rate: int, n_mels: int, win_ms: float, hop_ms: float) -> torchaudio.transforms.MelSpectrogram:
    p = AudioParams(sample_rate=sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms)
    win, hop, n_fft = frame_params(p)
    return torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=win, hop_length=hop,
                                                n_mels=n_mels, center=False, power=2.0).eval()


def stream_windows(chunks: Iterable[np.ndarray], times: np.ndarray, p: AudioParams,
                   rows: int = 64) -> Iterator[torch.Tensor]:
    """Log-mel windows centred on ``times`` from a waveform that arrives in chunks, in bounded memory.

    Computes exactly :class:`LogMel` followed by :func:`windows` on the whole waveform (same frames,
    same log floor outside the clip), but holds only the samples that the next ``rows`` windows need:
    spectrogram frame ``k`` is the centred STFT frame over samples ``[k·hop − n_fft/2, k·hop + n_fft/2)``
    (zeros outside the clip), frames ``k ≥ 1 + N // hop`` or ``k < 0`` are the log floor, and ``N``, the
    clip's length, matters only for the last windows, which wait for the end of the stream.

    Args:
        chunks: ``(n,)`` float32 pieces of a mono waveform at ``p.sample_rate`` (e.g. :func:`cmmvt.media.audio_chunks`).
        times: ``(T,)`` window centres in seconds (e.g. :func:`cmmvt.media.sample_times`).
        p: The audio params.
        rows: Windows per yielded block.

    Yields:
        ``(n ≤ rows, n_mels, W)`` float32 blocks; their concatenation is the ``(T, n_mels, W)`` windows.
    """
    _, hop, n_fft = frame_params(p)
    half, W = n_fft // 2, window_frames(p)
    t = np.asarray(times, dtype=np.float64).reshape(-1)  # (T,)
    starts = np.floor(t * (p.sample_rate / hop) - W / 2.0 + 0.5).astype(np.int64)  # (T,) first frame per window
    later_min = np.minimum.accumulate(starts[::-1])[::-1] if len(starts) else starts  # (T,) min of starts[i:]
    mel = _frames_cached(int(p.sample_rate), int(p.n_mels), float(p.win_ms), float(p.hop_ms))
    source = iter(chunks)
    buf, b0 = np.zeros(0, np.float32), 0  # samples [b0, b0 + len(buf)) of the waveform
    total: int | None = None  # N, once the stream has ended
    for i in range(0, len(t), rows):
        group = starts[i : i + rows]  # (n,)
        k_lo, k_hi = int(group.min()), int(group.max()) + W  # frames [k_lo, k_hi) cover the group
        need = (k_hi - 1) * hop + half  # samples needed (exclusive end) by the group's last frame
        parts = [buf]
        have = b0 + len(buf)
        while total is None and have < need:
            chunk = next(source, None)
            if chunk is None:
                total = have
            else:
                parts.append(np.asarray(chunk, np.float32).reshape(-1))
                have += len(parts[-1])
        buf = np.concatenate(parts) if len(parts) > 1 else buf
        n_frames = k_hi if total is None else 1 + total // hop  # frames that exist (so far)
        f_lo, f_hi = max(k_lo, 0), min(k_hi, n_frames)
        logmel = torch.full((int(p.n_mels), k_hi - k_lo), LOG_FLOOR)  # (M, k_hi - k_lo)
        if f_hi > f_lo:
            a, b = f_lo * hop - half, (f_hi - 1) * hop + half  # samples of frames f_lo .. f_hi - 1
            seg = np.zeros(b - a, np.float32)
            lo, hi = max(a, b0), min(b, b0 + len(buf))
            if hi > lo:
                seg[lo - a : hi - a] = buf[lo - b0 : hi - b0]
            with torch.no_grad():
                logmel[:, f_lo - k_lo : f_hi - k_lo] = torch.log(mel(torch.from_numpy(seg)) + LOG_EPS)
        idx = torch.from_numpy(group - k_lo)[:, None] + torch.arange(W)  # (n, W)
        yield logmel[:, idx].permute(1, 0, 2).contiguous()  # (M, n, W) → (n, M, W)
        if i + rows < len(t):  # drop the samples no later window needs
            keep = max(int(later_min[i + rows]) * hop - half, b0)
            buf, b0 = buf[keep - b0 :], keep


def clip_windows(samples: np.ndarray, times: np.ndarray, p: AudioParams) -> torch.Tensor:
    """Waveform → log-mel windows centred on ``times`` (:func:`stream_windows` over the whole waveform).

    Args:
        samples: ``(N,)`` float32 mono waveform in [-1, 1] at ``p.sample_rate``.
        times: ``(T,)`` window centres in seconds.
        p: The audio params.

    Returns:
        ``(T, n_mels, W)`` float32 on the CPU.
    """
    wave = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)  # (N,)
    blocks = list(stream_windows([wave], times, p, rows=max(1, len(np.atleast_1d(times)))))
    return torch.cat(blocks) if blocks else torch.zeros((0, int(p.n_mels), window_frames(p)))
