"""Frozen CNN backbones: real offline ImageNet weights, embeddings, and offline failure modes."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from cmmvt.features import backbones, weights
from cmmvt.features.backbones import BackboneError

CHURCHY = {442, 497, 698}  # bell cote, church, palace


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny batches gain nothing from two, and on a busy 2-core machine the
    OpenMP spin-waits of a second thread make these tests 3× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lite0() -> backbones.Backbone:
    return backbones.create("efficientnet_lite0", image_size=96)


@pytest.fixture(scope="module")
def rand() -> backbones.Backbone:
    return backbones.create("none", image_size=96)


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg")[None]  # (1, 427, 640, 3) uint8


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache, and any network connection attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path


def _top5(logits: np.ndarray) -> set[int]:
    return set(np.argsort(-logits[0])[:5].tolist())


def test_packaged_lite0_weights_classify_china_jpg(china):
    logits = backbones.classifier_logits("efficientnet_lite0", image_size=224)(china)  # real ImageNet head
    assert logits.shape == (1, 1000)
    top5 = _top5(logits)
    assert top5 & CHURCHY, top5


def test_random_weights_do_not_classify_china_jpg(china):
    rand224 = backbones.create("none", image_size=224, optimize=False)
    assert rand224.weights == "random"
    top5 = _top5(rand224.logits(china))
    assert not top5 & CHURCHY, top5


def test_every_packaged_tensor_maps_with_equal_shape():
    import timm

    src = weights.load_file(weights.lite0_weights_path())
    dst = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    mapped = weights.map_by_position(src, dst)
    assert len(src) == len(mapped) == len(dst) == 296
    assert list(mapped) == list(dst)
    for (sk, sv), (dk, dv) in zip(src.items(), mapped.items(), strict=True):
        assert sv.shape == dst[dk].shape and dv is sv, (sk, dk)


def test_position_mapping_fails_loudly_on_mismatch():
    import timm

    src = weights.load_file(weights.lite0_weights_path())
    dst = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    keys = list(src)
    with pytest.raises(BackboneError, match="295 tensors, the model has 296"):
        weights.map_by_position({k: src[k] for k in keys[:-1]}, dst)
    swapped = dict(src)
    swapped[keys[0]], swapped[keys[1]] = src[keys[1]], src[keys[0]]  # conv stem ↔ bn weight
    with pytest.raises(BackboneError, match="tensor 0"):
        weights.map_by_position(swapped, dst)


@pytest.mark.parametrize("which", ["lite0", "rand"])
def test_embed_shape_dtype_finite_deterministic(which, request):
    bb: backbones.Backbone = request.getfixturevalue(which)
    assert bb.dim == 1280 and bb.weights == {"lite0": weights.LITE0_FILE, "rand": "random"}[which]
    rgb = np.random.default_rng(0).integers(0, 256, (3, 120, 160, 3), dtype=np.uint8)
    a, b = bb.embed(rgb), bb.embed(torch.from_numpy(rgb))
    assert a.shape == (3, bb.dim) and a.dtype == np.float32
    assert np.isfinite(a).all() and np.array_equal(a, b)
    assert bb.embed(rgb[:0]).shape == (0, bb.dim)
    assert np.array_equal(bb.embed(rgb[:, :, :, ::-1][:, :, :, ::-1]), a)  # negative strides are fine
    for p in bb.model.parameters():
        assert not p.requires_grad
    assert not bb.model.training


def test_embed_images_takes_non_square_spectrograms(rand):
    x = torch.randn(4, 3, 64, 96)  # (T, 3, n_mels, W), already normalised
    y = rand.embed_images(x)
    assert isinstance(y, torch.Tensor) and y.shape == (4, 1280) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert rand.embed_images(x[:0]).shape == (0, 1280)


def test_engine_torch_runs_the_eager_model(rand):
    """``engine="torch"`` (create's default) on CPU is the eager model itself (#27: no TorchScript trace)."""
    eager = backbones.create("none", image_size=96, optimize=False)
    assert eager.runner is None and rand.runner is None and rand.engine == eager.engine == "torch"
    rgb = np.random.default_rng(1).integers(0, 256, (2, 100, 90, 3), dtype=np.uint8)
    np.testing.assert_allclose(rand.embed(rgb), eager.embed(rgb), rtol=1e-3, atol=1e-3)


def test_preprocess_crops_resizes_and_normalises(rand):
    mean = np.array(rand.mean) * 255
    rgb = np.broadcast_to(mean.round().astype(np.uint8), (2, 50, 300, 3))  # read-only, wide
    x = rand.preprocess(rgb)
    assert x.shape == (2, 3, 96, 96) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.abs().max() < 0.02
    with pytest.raises(BackboneError, match="uint8"):
        rand.preprocess(np.zeros((1, 8, 8, 3), np.float32))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_large"])
def test_torchvision_without_cached_weights_fails_at_once(name, offline, monkeypatch):
    url = weights.torchvision_weights(name).url

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(BackboneError) as err:
        backbones.create(name)
    msg = str(err.value)
    assert url in msg and "--weights" in msg and str(weights.cached_weights_path(name)) in msg


def test_torchvision_weights_file_loads(offline):
    import torchvision

    path = offline / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    bb = backbones.create("resnet18", weights=str(path), image_size=64)
    assert bb.dim == 512 and bb.weights == str(path)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 80, 64, 3), dtype=np.uint8)
    out = bb.embed(rgb)
    assert out.shape == (2, 512) and out.dtype == np.float32 and np.isfinite(out).all()

    cached = weights.cached_weights_path("resnet18")  # the same file in the hub cache is found offline
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    bb2 = backbones.create("resnet18", image_size=64)
    assert bb2.weights == "IMAGENET1K_V1"
    np.testing.assert_array_equal(bb2.embed(rgb), out)


def test_bad_weights_and_names_raise_backbone_error(offline):
    import torchvision

    path = offline / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(BackboneError, match="does not fit"):
        backbones.create("resnet50", weights=str(path))
    with pytest.raises(BackboneError, match="does not fit"):
        backbones.create("efficientnet_lite0", weights=str(path))
    with pytest.raises(BackboneError, match="not found"):
        backbones.create("resnet18", weights=str(offline / "missing.pth"))
    (offline / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(BackboneError, match="not a readable"):
        backbones.create("resnet18", weights=str(offline / "junk.pth"))
    with pytest.raises(BackboneError, match="unknown backbone"):
        backbones.create("vgg16")
    with pytest.raises(BackboneError, match="no weights"):
        backbones.create("none", weights=str(path))


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_backbones_table_matches_models(name, offline):
    """The declared embedding size is what each architecture's pooled output really has."""
    import torchvision

    if name in weights._TORCHVISION:  # random weights of the right architecture, as a weights file
        path = offline / f"{name}.pth"
        torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), path)
        bb = backbones.create(name, weights=str(path), image_size=64, optimize=False)
    else:
        bb = backbones.create(name, image_size=64, optimize=False)
    out = bb.embed(np.zeros((1, 64, 64, 3), np.uint8))
    assert out.shape == (1, backbones.BACKBONES[name]) == (1, bb.dim)


def _timm_file(tmp_path, arch: str):
    """A timm model with random weights (``pretrained=False``: nothing downloaded), its state dict saved."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    path = tmp_path / f"{arch}.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("arch,engine", [("test_resnet.r160_in1k", "onnxruntime"), ("test_resnet.r160_in1k", "torch"),
                                         ("test_vit.r160_in1k", "torch")])
def test_timm_model_from_a_weights_file_embeds_like_the_model_in_memory(arch, engine, offline, monkeypatch):
    monkeypatch.setenv("CMMVT_CACHE_DIR", str(offline / "runners"))
    model, path = _timm_file(offline, arch)
    model.reset_classifier(0)
    model.eval()
    bb = backbones.create(f"timm:{arch}", str(path), engine=engine)
    assert bb.engine == engine and bb.source == "file" and bb.weights_sha256 == weights.file_sha256(path)
    assert bb.dim == model.num_features and bb.image_size == 160  # timm's pretrained config, not image_size=224
    rgb = np.random.default_rng(0).integers(0, 256, (3, 120, 200, 3), dtype=np.uint8)
    with torch.inference_mode():
        want = model(bb.preprocess(rgb).contiguous()).numpy()  # (3, D)
    np.testing.assert_allclose(bb.embed(rgb), want, rtol=1e-4, atol=1e-5)
    spec = bb.embed_images(torch.randn(2, 3, 128, 192))  # a log-mel image, not square
    assert spec.shape == (2, bb.dim) and torch.isfinite(spec).all()


def test_timm_vit_under_onnxruntime_falls_back_to_torch_and_says_why(offline, monkeypatch):
    monkeypatch.setenv("CMMVT_CACHE_DIR", str(offline / "runners"))
    _, path = _timm_file(offline, "test_vit.r160_in1k")
    with pytest.warns(UserWarning, match=r"timm:test_vit.r160_in1k: extract.engine onnxruntime cannot run it .*using torch"):
        bb = backbones.create("timm:test_vit.r160_in1k", str(path), engine="onnxruntime")
    assert bb.engine == "torch" and bb.runner is None
    assert bb.embed_images(torch.randn(1, 3, 128, 192)).shape == (1, 64)


def test_timm_preprocessing_follows_the_models_pretrained_config(offline):
    import timm

    rgb = np.random.default_rng(1).integers(0, 256, (1, 90, 90, 3), dtype=np.uint8)
    inputs = {}
    for arch in ("test_resnet.r160_in1k", "lcnet_050.ra2_in1k"):
        _, path = _timm_file(offline, arch)
        bb = backbones.create(f"timm:{arch}", str(path), optimize=False)
        cfg = timm.data.resolve_model_data_config(timm.create_model(arch, pretrained=False))
        assert (bb.mean, bb.std, bb.interpolation) == (tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"])
        assert bb.image_size == cfg["input_size"][-1]
        x = bb.preprocess(rgb)
        small = bb.preprocess(np.full((1, bb.image_size, bb.image_size, 3), 255, np.uint8))  # white, no resize
        want = (1 - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])
        torch.testing.assert_close(small[0, :, 0, 0], want.float())
        inputs[arch] = x
    assert inputs["test_resnet.r160_in1k"].shape[-1] == 160 and inputs["lcnet_050.ra2_in1k"].shape[-1] == 224


def test_timm_names_and_files_fail_clearly(offline, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no minute of retries at each refusal
    with pytest.raises(BackboneError, match="timm has no model 'not_a_model'"):
        backbones.create("timm:not_a_model", optimize=False)
    _, path = _timm_file(offline, "test_resnet.r160_in1k")
    with pytest.raises(BackboneError, match="does not fit"):
        backbones.create("timm:test_vit.r160_in1k", str(path), optimize=False)
    with pytest.raises(BackboneError, match=r"timm could not fetch its pretrained weights.*extract.weights"):
        backbones.create("timm:test_resnet.r160_in1k", optimize=False)  # offline: the download is refused


def test_a_cache_refuses_rows_of_another_backbone_naming_both(offline, monkeypatch):
    from cmmvt.config import ExtractParams
    from cmmvt.features import cache, extract
    from cmmvt.media import encode_clip

    monkeypatch.setenv("CMMVT_CACHE_DIR", str(offline / "runners"))
    clip = offline / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 256, (10, 64, 96, 3), dtype=np.uint8)
    encode_clip(clip, frames, 10, None, 16000)
    items = [extract.Item("clip", clip)]
    paths = {arch: _timm_file(offline, arch)[1] for arch in ("test_resnet.r160_in1k", "test_convnext.r160_in1k")}
    p = ExtractParams(fps=2.0, crop="centre", engine="torch")
    for i, (arch, path) in enumerate(paths.items()):
        bb = backbones.create(f"timm:{arch}", str(path), engine="torch")
        q = extract.for_backbone(p.model_copy(update={"backbone": f"timm:{arch}", "weights": str(path)}), bb)
        if i == 0:
            extract.run_modality(items, q, "video", bb, out=offline / "features")
            continue
        with pytest.raises(cache.ParamsMismatch) as err:
            extract.run_modality(items, q, "video", bb, out=offline / "features")
        msg = str(err.value)
        assert "backbone: 'timm:test_resnet.r160_in1k' → 'timm:test_convnext.r160_in1k'" in msg
        assert "weights_sha256" in msg
    with cache.CacheReader(offline / "features", "video") as r:  # the first backbone's rows, untouched
        from cmmvt import media

        rows = len(media.sample_times(media.probe(clip).duration, 2.0))
        assert r.attrs["backbone"] == "timm:test_resnet.r160_in1k" and r["clip"].shape == (rows, 96)
