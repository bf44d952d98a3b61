"""The one place where ``params.yaml``'s ``model`` section becomes modules.

Every choice among params values is made here and nowhere else: the modalities read
(``model.modalities``), the fusion (``model.fusion``), the encoder (``model.encoder``) and the attention
backbone (``model.attention`` × ``model.backend``). The modules themselves take plain sizes and already
built parts. Whether the values fit together (an even window for local attention, heads dividing
``hidden``, …) is checked earlier, when the params are validated (:class:`cmmvt.config.ModelParams`),
so a bad value fails at ``config.load`` with its key, like any other.

Modules are built in a fixed order (fusion, then the encoders, each encoder's own weights before its
backbone, then the ``missing`` vectors and the head), so a seed always draws the same weights.

Example:
    >>> import torch
    >>> from cmmvt.config import ModelParams
    >>> p = ModelParams(hidden=16, heads=2, layers=1, modalities="video", attention="global")
    >>> type(build_encoder(p, 8).backbone).__name__
    'GlobalAttention'
    >>> build_model(p, {"video": 8, "audio": 4}, 3)(
    ...     {"video": torch.randn(2, 5, 8), "video_mask": torch.ones(2, 5, dtype=torch.bool)}).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cmmvt.config import ModelParams
from cmmvt.models.classifier import Classifier
from cmmvt.models.encoder import GlobalAttention, LocalAttention, TemporalEncoder
from cmmvt.models.fusion import EarlyFusion
from cmmvt.models.meanpool import MeanPoolEncoder
from cmmvt.models.native import NativeLocalAttention

MODALITIES = {"video": ("video",), "audio": ("audio",), "av": ("video", "audio")}  # model.modalities → streams read


def build_attention(p: ModelParams, **native: Any) -> nn.Module:
    """The attention backbone of ``model.attention`` and ``model.backend``.

    ``global``: full self-attention; ``local``: Longformer's sliding window with global [CLS], run by the
    native chunked-SDPA module or by transformers' ``LongformerModel`` (``hf``, imported only then). Both
    local backends draw the same weights for a seed and share one ``state_dict`` layout.

    Args:
        p: ``params.yaml``'s ``model`` section (validated).
        **native: Passed to :class:`NativeLocalAttention` (``attn_impl``, ``block``); only with
            ``attention: local`` and ``backend: native``.

    Returns:
        A module mapping (B, L, D) tokens and a (B, L) mask to (B, L, D).
    """
    assert not native or (p.attention == "local" and p.backend == "native"), native
    sizes = dict(hidden=p.hidden, heads=p.heads, layers=p.layers, dropout=p.dropout)
    if p.attention == "global":
        return GlobalAttention(**sizes)
    if p.backend == "native":  # needs no transformers
        return NativeLocalAttention(**sizes, window=p.window, **native)
    return LocalAttention(**sizes, window=p.window)


def build_encoder(p: ModelParams, in_dim: int | None) -> nn.Module:
    """The encoder of ``model.encoder``: clips of per-frame features → (B, hidden) embeddings.

    Args:
        p: ``params.yaml``'s ``model`` section (validated).
        in_dim: Per-frame feature size, or ``None`` for ``hidden``-sized tokens (after early fusion).

    Returns:
        A :class:`TemporalEncoder` (``longformer``) with :func:`build_attention`'s backbone, or a
        :class:`MeanPoolEncoder` (``meanpool``).
    """
    if p.encoder == "meanpool":
        return MeanPoolEncoder(in_dim, p.hidden)
    return TemporalEncoder(in_dim, p.hidden, p.crop_frames, p.max_frames, p.pool, backbone=lambda: build_attention(p))


def build_model(p: ModelParams, dims: dict[str, int], num_classes: int) -> Classifier:
    """Build the classifier described by ``p``.

    Args:
        p: ``params.yaml``'s ``model`` section (validated: see :class:`cmmvt.config.ModelParams`).
        dims: Per-frame feature size per modality, e.g. ``{"video": 1280, "audio": 1280}`` (extra keys are
            ignored).
        num_classes: Number of classes.

    Returns:
        A :class:`Classifier`; ``model(batch)`` gives (B, num_classes) logits.

    Raises:
        ValueError: ``dims`` lacks a modality of ``model.modalities`` (the features do not fit the params).

    Example:
        >>> from cmmvt.config import ModelParams
        >>> m = build_model(ModelParams(hidden=16, heads=2, modalities="video"), {"video": 8}, 3)
        >>> type(m.encoders["video"]).__name__
        'TemporalEncoder'
    """
    modalities = MODALITIES[p.modalities]
    absent = [m for m in modalities if m not in dims]
    if absent:
        raise ValueError(f"model.modalities = {p.modalities!r} needs feature dims for {absent}")
    dims = {m: int(dims[m]) for m in modalities}
    if len(modalities) > 1 and p.fusion == "early":  # one token per step, one shared encoder
        fusion: EarlyFusion | None = EarlyFusion(dims, p.hidden)
        encoders = {"av": build_encoder(p, None)}
    else:  # one encoder per modality, embeddings concatenated
        fusion = None
        encoders = {m: build_encoder(p, d) for m, d in dims.items()}
    return Classifier(dims, num_classes, encoders, fusion, hidden=p.hidden, dropout=p.dropout,
                      input_norm=p.input_norm, input_dropout=p.input_dropout)
