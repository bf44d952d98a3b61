"""Audio models trained on sound (``extract.audio.backbone: aisfx``): input framing, weights, extraction."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from cmmvt.config import AudioParams, ExtractParams, Params
from cmmvt.eval.predict import extract_params
from cmmvt.features import backbones, cache, extract, logmel, sound, weights
from cmmvt.features.backbones import BackboneError


def _mel_band(freq: float, n_mels: int = 96, f_max: float = 22050.0) -> int:
    """The HTK mel band whose centre is nearest ``freq`` (centres evenly spaced in mel from 0 to ``f_max``)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    centres = np.linspace(0.0, mel(f_max), n_mels + 2)[1:-1]
    return int(np.abs(centres - mel(freq)).argmin())


def test_the_input_of_a_tone_lands_in_its_band_and_at_its_onset():
    """A 2 kHz tone from 1.5 s: in the window centred on 1.5 s, frames before the middle are silent (0 after the
    package's log scale) and frames after it peak in the 2 kHz mel band; 44.1 kHz, 96 bands, 100 frames."""
    p = AudioParams(backbone="aisfx")
    a = sound.framing(p)
    assert (a.sample_rate, a.n_mels, logmel.window_frames(a), logmel.frame_params(a)) == (44100, 96, 100,
                                                                                          (2048, 1024, 2048))
    sr = 44100
    t = np.arange(3 * sr) / sr  # beyond the window's end (2.66 s)
    wave = np.where(t >= 1.5, 0.5 * np.sin(2 * np.pi * 2000.0 * t), 0.0).astype(np.float32)
    x = sound.aisfx_input(logmel.clip_windows(wave, np.array([1.5, 0.2]), a), p)  # (2, 1, 100, 96)
    assert x.shape == (2, 1, 100, 96)
    before, after = x[0, 0, :47], x[0, 0, 53:]  # frames more than 2 hops (46 ms) from the onset
    assert float(before.max()) == 0.0  # digital silence → log10(1 + 0) = 0
    assert set(after.argmax(1).tolist()) == {_mel_band(2000.0)}
    assert 0.3 < float(after.max()) < 1.2  # the package's scale: its training data spanned [0, 1]
    assert float(x[1].max()) == 0.0  # the window at 0.2 s (up to 1.36 s) holds only silence


def _aisfx_file(path, model: sound.AudioCNN) -> None:
    """``model`` saved as the aisfx package saves its checkpoint: (state dict with the per-dataset classifier
    heads, {dataset: (numpy index, classes)})."""
    sd = OrderedDict((f"embedding_net.{k}", v) for k, v in model.state_dict().items())
    sd["fc.0.0.weight"] = torch.zeros(256, 512)
    torch.save((sd, {"prosfx": (np.int64(0), 78)}), path)


def test_aisfx_weights_load_from_the_package_layout_and_a_plain_state_dict(tmp_path):
    torch.manual_seed(0)
    model = sound.AudioCNN().eval()
    for m in model.modules():  # non-trivial batch-norm statistics, so that loading them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    _aisfx_file(tmp_path / "checkpoint.pth", model)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    x = torch.rand(3, 1, 100, 96)
    with torch.no_grad():
        want = model(x)  # (3, 512)
        for name in ("checkpoint.pth", "plain.pth"):
            got = sound.load_aisfx(tmp_path / name).eval()(x)
            torch.testing.assert_close(got, want)
    assert want.shape == (3, sound.AISFX_DIM)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(BackboneError, match="does not fit the aisfx CNN"):
        sound.load_aisfx(tmp_path / "other.pth")
    with pytest.raises(BackboneError, match="audio weights file not found"):
        sound.load_aisfx(tmp_path / "missing.pth")


def test_without_weights_or_the_package_it_says_how_to_get_them(monkeypatch):
    monkeypatch.setattr(sound.importlib.util, "find_spec", lambda name: None)
    image = backbones.create("none", image_size=64)
    assert sound.audio_backbone(AudioParams(), image) is image  # the default: log-mel images, same CNN
    with pytest.raises(BackboneError, match=r"pip install --no-deps aisfx==0\.1\.2"):
        sound.audio_backbone(AudioParams(backbone="aisfx"), image)


def test_extraction_with_the_audio_model_records_its_framing_and_keeps_caches_apart(tmp_path, monkeypatch):
    """A real encoded clip through the decoder: 512-d audio rows at the frame timestamps, the cache records the
    model's framing and weights hash, the same rows as ``predict``'s in-memory path, and a cache of log-mel-image
    rows refuses them (naming both backbones)."""
    from cmmvt.media import encode_clip

    monkeypatch.setenv("CMMVT_CACHE_DIR", str(tmp_path / "runners"))
    torch.manual_seed(1)
    _aisfx_file(tmp_path / "aisfx.pth", sound.AudioCNN())
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * 660 * t) * (t > 1.2)).astype(np.float32)
    clip = tmp_path / "clip.mp4"
    encode_clip(clip, np.random.default_rng(0).integers(0, 256, (25, 48, 64, 3), dtype=np.uint8), 10, audio, sr)
    items = [extract.Item("clip", clip)]
    p = ExtractParams(fps=2.0, backbone="none", image_size=48, engine="torch",
                      audio=AudioParams(backbone="aisfx", weights=str(tmp_path / "aisfx.pth")))
    q, bbs = extract.create_backbones(p, "cpu")
    assert bbs["audio"].name == "aisfx" and bbs["video"].name == "none"
    extract.run_modality(items, q, "audio", bbs["audio"], out=tmp_path / "features")
    with cache.CacheReader(tmp_path / "features", "audio") as r:
        rows, times, attrs = r["clip"], r.times("clip"), dict(r.attrs)
    assert rows.shape == (5, 512) and np.allclose(times, [0.25, 0.75, 1.25, 1.75, 2.25])
    assert attrs["backbone"] == "aisfx" and attrs["sample_rate"] == 44100 and attrs["n_mels"] == 96
    assert attrs["weights_sha256"] == weights.file_sha256(tmp_path / "aisfx.pth")
    assert not np.allclose(rows[0], rows[-1])  # silence and the tone differ
    np.testing.assert_allclose(extract.clip_features(clip, q, bbs, ["audio"])["audio"], rows, atol=1e-6)
    ckpt = {"params": Params().model_dump(), "features": {"audio": attrs}}  # a model trained on these rows
    again = extract_params(ckpt)  # predict's params: the same audio model and weights
    assert (again.audio.backbone, again.audio.weights, again.backbone) == ("aisfx", str(tmp_path / "aisfx.pth"),
                                                                           Params().extract.backbone)
    image = p.model_copy(update={"audio": AudioParams()})
    q2, bbs2 = extract.create_backbones(image, "cpu")
    with pytest.raises(cache.ParamsMismatch, match="backbone: 'aisfx' → 'none'"):
        extract.run_modality(items, q2, "audio", bbs2["audio"], out=tmp_path / "features")
