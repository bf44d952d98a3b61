"""What runs the frozen CNN: ONNX Runtime on the CPU (``extract.engine: onnxruntime``, the default), else eager torch.

* ``onnxruntime``: the eager CNN is exported once per backbone, weights file and image size to an ONNX graph with
  free batch, height and width, kept in :func:`cache_dir` (``$CMMVT_CACHE_DIR``, default ``<torch hub dir>/../cmmvt``,
  i.e. beside the torch cache) and run by :class:`OnnxRunner`. Later starts open the cached graph in about 0.1 s and
  build the eager model (and import timm) only if :attr:`~cmmvt.features.backbones.Backbone.model` or
  :meth:`~cmmvt.features.backbones.Backbone.logits` is used. A timm model runs under it only where its graph
  reproduces torch (:func:`onnx_or_torch`), else under torch, with a warning that says why.
* ``torch``: the eager model itself (``torch.inference_mode``, ``channels_last``) on every device; on a GPU always,
  in mixed precision.

Up to #27, ``engine: torch`` ran a frozen TorchScript trace on the CPU. Measured against both
(``benchmarks/engines.py`` → ``reports/bench/engines.md``, 2 threads, batch 32): the trace beat eager torch by
1.4–1.9× on efficientnet_lite0, but it only ever ran under the non-default ``engine: torch`` on the CPU, for the
built-in CNNs, and ONNX Runtime (the default, a required dependency) ran each of them faster still (1.1–1.9× the
trace). So it went, with its ``.pt`` cache: one engine fewer (``torch.jit`` is deprecated, too).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from cmmvt.io import atomic_path

ENGINES = ("onnxruntime", "torch")  #: ``extract.engine``: what runs the frozen CNN on the CPU
EXPORT_VERSION = 1  #: part of an exported graph's cache key: bump when the graph changes (e.g. preprocessing inside it)


class Model(Protocol):
    """What an engine needs of a :class:`cmmvt.features.backbones.Backbone` (which imports this module)."""

    name: str
    image_size: int
    device: str

    @property
    def model(self) -> nn.Module:
        """The eager, frozen CNN (built on first use)."""


def cache_dir() -> Path:
    """Where exported CNNs are kept: ``$CMMVT_CACHE_DIR``, else ``cmmvt/`` beside torch's hub cache."""
    env = os.environ.get("CMMVT_CACHE_DIR")
    return Path(env) if env else Path(torch.hub.get_dir()).parent / "cmmvt"


def onnx_path(name: str, weights: Path | None, image_size: int) -> Path:
    """The ``.onnx`` file for this backbone, weights file (path, size, mtime) and image size, under :func:`cache_dir`
    (the key also holds the torch version and :data:`EXPORT_VERSION`)."""
    st = weights.stat() if weights is not None else None
    key = json.dumps([name, str(weights.resolve()) if weights else None, st.st_size if st else 0,
                      st.st_mtime_ns if st else 0, int(image_size), torch.__version__, EXPORT_VERSION, "onnxruntime"])
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    stem = name.replace(":", "-").replace("/", "-")
    return cache_dir() / f"{stem}-{int(image_size)}-{digest}.onnx"


class OnnxRunner:
    """The frozen CNN as an ONNX graph run by ONNX Runtime on the CPU (``extract.engine: onnxruntime``).

    ONNX Runtime fuses batch norm, activations and the depthwise convolutions of these mobile networks into
    kernels that ran EfficientNet-Lite0 1.8–3.3× faster than eager torch and 1.1–1.9× faster than the frozen
    TorchScript trace that ``engine: torch`` used on CPU before #27 (128- and 224-px frames, 128×192 log-mel images;
    2 threads, batch 32; ``benchmarks/engines.py``), with outputs equal within 2e-5.

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


def export_onnx(model: nn.Module, image_size: int, path: Path) -> None:
    """Write ``model`` as an ONNX graph with free batch, height and width (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    probe = torch.zeros(1, 3, image_size, image_size)
    with atomic_path(path, path.with_name(f"{path.name}.{os.getpid()}.tmp")) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(model.float().to(memory_format=torch.contiguous_format), (probe,), str(tmp),
                          input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch"}})


def onnx_runner(bb: Model, path: Path) -> OnnxRunner:
    """The ONNX Runtime runner for ``bb``: loaded from ``path``, exported there first if it is missing or broken.

    Raises:
        ImportError: onnxruntime is not installed (saying how to fix it).
    """
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        raise ImportError("extract.engine=onnxruntime, but onnxruntime is not installed: "
                          "`pip install onnxruntime`, or pass -S extract.engine=torch") from None
    threads = torch.get_num_threads()
    if path.is_file():
        try:
            return OnnxRunner(path, threads)
        except Exception:  # noqa: BLE001 - a damaged cache file is exported again
            path.unlink(missing_ok=True)
    try:
        export_onnx(bb.model, bb.image_size, path)
    except OSError:  # the cache folder cannot be written: export to a temporary file instead
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="cmmvt-onnx-")) / path.name
        export_onnx(bb.model, bb.image_size, path)
    return OnnxRunner(path, threads)


def onnx_or_torch(bb: Model, path: Path, check: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """``(runner, engine)`` for ``extract.engine: onnxruntime``: ONNX Runtime's, ``"onnxruntime"``, or ``None, "torch"``.

    With ``check`` (a timm model) only where its graph exports and reproduces torch's output (within 1e-4 of its
    scale) on square frames and on non-square images, else torch, with a warning that says why (e.g. a vision
    transformer, whose exported graph keeps the position grid of one input size). The built-in CNNs export
    (tested against torch) and are not checked.

    Raises:
        ImportError: Without ``check``: onnxruntime (or the exporter's ``onnx``) is not installed.
    """
    if not check:
        return onnx_runner(bb, path), "onnxruntime"
    try:
        runner = onnx_runner(bb, path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            square = torch.randn(2, 3, bb.image_size, bb.image_size)
            other = torch.randn(2, 3, max(32, bb.image_size // 2), bb.image_size)  # log-mel images are not square
        for probe in (square, other):
            with torch.inference_mode():
                want = bb.model(probe.to(bb.device))
            got = runner(probe)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * want.abs().max()):
                raise ValueError(f"its ONNX graph differs from torch by {float((got - want).abs().max()):.3g} "
                                 f"on {tuple(probe.shape[2:])} images")
        return runner, "onnxruntime"
    except Exception as exc:  # noqa: BLE001 - an exporter that cannot follow the model: torch runs it
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
    path.unlink(missing_ok=True)
    warnings.warn(f"{bb.name}: extract.engine onnxruntime cannot run it ({reason}); using torch", stacklevel=2)
    return None, "torch"
