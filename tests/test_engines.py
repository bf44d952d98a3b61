"""CNN inference engines (#13, #27): ONNX Runtime equals eager torch on real frames and audio images; exports are
cached."""

import sys

import numpy as np
import pytest
import torch

from cmmvt.config import AudioParams
from cmmvt.features import backbones, engines, logmel, weights
from cmmvt.features.backbones import BackboneError


def real_frames(n: int = 6) -> np.ndarray:
    """Crops of scikit-learn's bundled photographs (china.jpg, flower.jpg) of several shapes: (n, 180, 240, 3)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    return np.stack([photos[i % 2][40 * i : 40 * i + 180, 50 * i : 50 * i + 240] for i in range(n)])


def audio_images(size: tuple[int, int] | None) -> torch.Tensor:
    sr = 16000
    t = np.arange(3 * sr) / sr
    wave = 0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.02 * np.random.default_rng(0).standard_normal(len(t))
    win = logmel.clip_windows(wave.astype(np.float32), np.array([0.5, 1.2, 2.4]), AudioParams())
    return logmel.to_images(win, size, "window")  # (3, 3, H, W)


def make(name: str, engine: str, tmp_path, image_size: int = 96) -> backbones.Backbone:
    if name in weights._TORCHVISION:  # the architecture with random weights, as a weights file
        import torchvision

        path = tmp_path / f"{name}.pth"
        if not path.exists():
            torch.manual_seed(0)
            torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), path)
        return backbones.create(name, weights=str(path), image_size=image_size, engine=engine)
    return backbones.create(name, image_size=image_size, engine=engine)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "none", "resnet18"])  # (random mobilenet_v3 outputs ~1e-8)
def test_onnxruntime_equals_torch_on_real_frames_and_audio_images(name, tmp_path):
    ort, ref = make(name, "onnxruntime", tmp_path), make(name, "torch", tmp_path)
    assert ort.engine == "onnxruntime" and ref.engine == "torch" and ref.runner is None  # engine torch: eager
    eager = ref.model  # the eager module itself is the reference
    frames = real_frames()
    with torch.inference_mode():
        want = eager(ref.preprocess(frames)).numpy()
    got = ort.embed(frames)
    assert got.shape == want.shape == (6, backbones.BACKBONES[name])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    assert np.abs(want).max() > 0.1  # not a trivially zero output
    for size in (None, (128, 192)):  # any input size through the same graph
        x = audio_images(size)
        with torch.inference_mode():
            want = eager(x.contiguous(memory_format=torch.channels_last)).numpy()
        np.testing.assert_allclose(ort.embed_images(x).numpy(), want, rtol=0,
                                   atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_export_is_reused_and_redone_for_another_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("CMMVT_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    export = engines.export_onnx
    monkeypatch.setattr(engines, "export_onnx", lambda *a: calls.append(a[1:]) or export(*a))
    first = backbones.create("none", image_size=64, engine="onnxruntime")
    files = sorted((tmp_path / "cache").glob("*.onnx"))
    assert len(calls) == 1 and len(files) == 1
    second = backbones.create("none", image_size=64, engine="onnxruntime")
    assert len(calls) == 1 and second._parts is None  # loaded: no export, no eager model built
    frames = real_frames(2)
    np.testing.assert_array_equal(first.embed(frames), second.embed(frames))
    assert second.logits(frames).shape == (2, 1000) and second._parts is not None  # the head builds on demand
    backbones.create("efficientnet_lite0", image_size=64, engine="onnxruntime")  # another backbone: exported
    assert len(calls) == 2 and len(list((tmp_path / "cache").glob("*.onnx"))) == 2
    backbones.create("none", image_size=96, engine="onnxruntime")  # another size: exported
    assert len(calls) == 3 and len(list((tmp_path / "cache").glob("none-*.onnx"))) == 2
    files[0].write_bytes(b"damaged")  # a broken file is exported again
    third = backbones.create("none", image_size=64, engine="onnxruntime")
    assert len(calls) == 4
    np.testing.assert_array_equal(third.embed(frames), first.embed(frames))


def test_engine_not_installed_or_unknown_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(BackboneError, match="onnxruntime is not installed.*pip install onnxruntime"):
        backbones.create("none", image_size=64, engine="onnxruntime")
    with pytest.raises(BackboneError, match="unknown engine 'tensorrt'; choose one of: onnxruntime, torch"):
        backbones.create("none", engine="tensorrt")
