"""Audio models trained on sound, beside the default "spectrogram as image" path (``extract.audio.backbone``).

``image`` (the default) feeds log-mel windows as images to the frame backbone (:mod:`cmmvt.features.logmel`).
``aisfx`` is the sound-effects embedding of Ma & Lerch 2022 ("Representation learning for the automatic indexing
of sound effects libraries", ISMIR; PyPI ``aisfx`` 0.1.2, model and weights CC BY 4.0): the 9-layer CNN of the
DCASE 2018 cross-task baseline (Kong et al. 2018, "DCASE 2018 challenge surrey cross-task convolutional neural
network baseline") trained on sound-effects libraries, 512-d. Its input is fixed by training:

* 44.1 kHz mono, 2048-sample Hann frames every 1024 samples (46 ms / 23 ms), 96 HTK mel bands up to Nyquist,
  each filter normalised to unit sum (librosa's ``norm=1``), power 2;
* ``log10(1 + 10⁴ · mel) / 9.4578`` (the package's "original" min–max scale);
* blocks of 100 frames (2.32 s), time × frequency.

Here those blocks are the windows of :func:`cmmvt.features.logmel.stream_windows` with the model's framing
(:func:`framing`), centred on each sampled frame timestamp like every audio row; ``extract.audio``'s own sample
rate, bands, window and image settings are ignored and the cache records the framing used. One difference from
the package: it scales each file to peak 1 before the spectrogram, which needs the whole file first; streamed
extraction keeps the decoded level (at most a constant gain per clip).

Weights: ``extract.audio.weights`` (the package's ``checkpoint.pth``, a ``(state dict, datasets)`` pair, or a
plain state dict of the embedding network), else the checkpoint of an installed ``aisfx`` package (installed with
``pip install --no-deps aisfx==0.1.2``: its wheel pins numpy 1.23, which cmmvt does not need).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from cmmvt.config import AudioParams
from cmmvt.features import logmel
from cmmvt.features.backbones import Backbone, BackboneError, freeze
from cmmvt.features.weights import file_sha256, load_file

__all__ = ["MODELS", "AISFX_DIM", "AudioCNN", "aisfx_input", "audio_backbone", "framing", "load_aisfx"]

MODELS = ("aisfx",)  #: the audio models of ``extract.audio.backbone`` (besides ``image``)
AISFX_RATE = 44100
AISFX_FRAMING = {"sample_rate": AISFX_RATE, "n_mels": 96, "win_ms": 2048 * 1000 / AISFX_RATE,
                 "hop_ms": 1024 * 1000 / AISFX_RATE, "window_s": 100 * 1024 / AISFX_RATE, "image": None,
                 "norm": "fixed", "stack": 1}
"""The input aisfx was trained on, as :class:`cmmvt.config.AudioParams` (100 frames of 1024 samples per window)."""
AISFX_MAX = 9.457798957824707  #: the package's "original" spectrogram maximum (min 0)
AISFX_DIM = 512


def framing(p: AudioParams) -> AudioParams:
    """The audio params that windows are actually cut with: ``p`` itself, or the audio model's own framing."""
    return p if p.backbone == "image" else p.model_copy(update=AISFX_FRAMING)


def aisfx_input(win: torch.Tensor, p: AudioParams) -> torch.Tensor:
    """Log-mel windows of :func:`framing` → aisfx's input.

    :class:`cmmvt.features.logmel.LogMel` gives ``log(mel + 1e-6)`` with unnormalised filters; this undoes the
    log, divides each band by its filter's sum (librosa's ``norm=1``) and applies the package's
    ``log10(1 + 10⁴ · mel) / 9.4578``. The log floor (silence, padding outside the clip) maps to 0.

    Args:
        win: ``(T, 96, 100)`` windows (bands × frames) from :func:`cmmvt.features.logmel.stream_windows`.
        p: The audio params (:func:`framing` of them is used).

    Returns:
        ``(T, 1, 100, 96)`` float32 (frames × bands, one channel).
    """
    a = framing(p)
    mel = (win.to(torch.float32).exp() - logmel.LOG_EPS).clamp_min(0.0)  # (T, M, W) mel power
    mel = mel / _filter_sums(a.sample_rate, a.n_mels, round(a.win_ms * a.sample_rate / 1000))[:, None]
    return (torch.log10(1.0 + 1e4 * mel) / AISFX_MAX).transpose(1, 2).unsqueeze(1).contiguous()  # (T, 1, W, M)


@functools.lru_cache(maxsize=4)
def _filter_sums(sample_rate: int, n_mels: int, n_fft: int) -> torch.Tensor:
    """(n_mels,) sums of torchaudio's HTK mel filters over the FFT bins (what librosa's ``norm=1`` divides by)."""
    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
    return fb.sum(0)  # (n_freqs, M) → (M,)


class AudioCNN(nn.Module):
    """The 9-layer CNN embedding of aisfx (Kong et al. 2018's cross-task baseline): four blocks of two 3×3
    convolutions with batch norm and ReLU, 2×2 max pooling after the first three; mean over frequency, max over
    time. Parameter names follow the package's ``EmbeddingNet`` so that its checkpoint loads as it is.

    Args:
        width: Channels of the first block (doubled per block: 64 → 512).
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 8 * width]
        for i in range(4):
            block = nn.Module()
            block.conv1 = nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False)
            block.conv2 = nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1, bias=False)
            block.bn1, block.bn2 = nn.BatchNorm2d(chans[i + 1]), nn.BatchNorm2d(chans[i + 1])
            self.add_module(f"conv_block{i + 1}", block)
        self.dim = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, frames, bands)`` → ``(B, dim)``."""
        for i in range(4):
            b = getattr(self, f"conv_block{i + 1}")
            x = F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))))  # (B, C, T, F)
            x = F.max_pool2d(x, 2) if i < 3 else x
        return x.mean(dim=3).amax(dim=2)  # (B, C, T', F') → (B, C)


def _package_checkpoint() -> Path:
    spec = importlib.util.find_spec("aisfx")  # located, not imported (its modules need librosa)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError("extract.audio.backbone aisfx: no weights; set extract.audio.weights to the package's "
                            "checkpoint.pth or install it with `pip install --no-deps aisfx==0.1.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "checkpoint.pth"
    if not path.is_file():
        raise BackboneError(f"extract.audio.backbone aisfx: {path} is missing from the installed package; reinstall "
                            "it or set extract.audio.weights")
    return path


def load_aisfx(path: Path) -> AudioCNN:
    """The aisfx CNN with the weights at ``path``: the package's ``(state dict, datasets)`` checkpoint, whose
    ``embedding_net.*`` tensors are kept (the per-dataset classifiers dropped), or a plain state dict."""
    if not path.is_file():
        raise BackboneError(f"audio weights file not found: {path}; nothing was extracted: fix "
                            "extract.audio.weights and rerun")
    sd = load_file(path)
    prefix = "embedding_net."
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)} or sd
    model = AudioCNN()
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{path}: does not fit the aisfx CNN: {str(exc).splitlines()[0]}") from None
    return model


def audio_backbone(p: AudioParams, image: Backbone) -> Backbone:
    """The backbone that embeds audio rows: the frame backbone ``image`` on log-mel images (``image``), or the
    audio model (``aisfx``) on the same device, in eager torch."""
    if p.backbone == "image":
        return image
    path = Path(p.weights).expanduser() if p.weights else _package_checkpoint()
    dev = torch.device(image.device)
    model = freeze(load_aisfx(path), dev)
    return Backbone(name="aisfx", weights=p.weights or "aisfx-0.1.2 checkpoint.pth", dim=AISFX_DIM,
                    build=lambda: (model, None), device=str(dev), source="file" if p.weights else "package",
                    weights_sha256=file_sha256(path), image_size=0)
