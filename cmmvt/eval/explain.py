"""Which rows decided: attention rollout of a trained classifier over the rows of a clip or a window.

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020) follows the
attention through the layers: each layer's head-averaged attention matrix ``A_l`` with the residual connection
added (``0.5 A_l + 0.5 I``, rows renormalised) is multiplied from the first layer to the last, and row ``i`` of
the product says how much of output token ``i`` came from each input token. The clip embedding the head reads
is the [CLS] output, the mean of the frames' outputs, or their average (``model.pool``), so its relevance is the
same combination of the product's rows; the frame columns, normalised to sum 1, are the relevance of each row.

The attention matrices are recomputed from each layer's input (captured by a forward pre-hook) with the layer's
own projections, so the kernels stay as they are: Longformer's pattern for ``model.attention: local`` (a frame
attends to the frames within ``window / 2`` and to [CLS] in one softmax; [CLS] to every real token with the
``*_global`` projections; both backends share the module tree) and ``nn.MultiheadAttention``'s own weights for
``global``. With early fusion a row is one time step of both modalities; with late fusion each modality's
encoder gets its own relevance.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from cmmvt.models import Classifier
from cmmvt.models.encoder import GlobalAttention, TemporalEncoder


def local_attention(sa: nn.Module, h: torch.Tensor, mask: torch.Tensor, one_sided: int,
                    per_head: bool = False) -> torch.Tensor:
    """Attention probabilities of one Longformer self-attention (token 0 global), dense, averaged over heads.

    Args:
        sa: The layer's self-attention (``query``, ``key``, ``*_global`` linears; native or HF-backed).
        h: (B, L, D) the layer's input.
        mask: (B, L) bool, True = real token.
        one_sided: ``model.window // 2``.
        per_head: Keep the heads apart: (B, H, L, L).

    Returns:
        (B, L, L) rows sum to 1 for real tokens, 0 for padding.
    """
    B, L, D = h.shape
    H = sa.num_heads
    d = D // H
    split = lambda x: x.view(B, -1, H, d).transpose(1, 2)  # noqa: E731  (B, H, L, d)
    scores = split(sa.query(h)) @ split(sa.key(h)).transpose(-1, -2) / math.sqrt(d)  # (B, H, L, L)
    i, j = torch.arange(L)[:, None], torch.arange(L)[None]
    band = ((i - j).abs() <= one_sided) & (j >= 1) | (j == 0)  # (L, L) a frame: its window and [CLS]
    allowed = band[None] & mask[:, None, :]  # (B, L, L)
    probs = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)  # (B, H, L, L)
    qg = split(sa.query_global(h[:, :1]))  # (B, H, 1, d)
    glob = (qg @ split(sa.key_global(h)).transpose(-1, -2) / math.sqrt(d)).masked_fill(
        ~mask[:, None, None, :], float("-inf")).softmax(-1)  # (B, H, 1, L)
    probs = torch.cat([glob, probs[:, :, 1:]], dim=2)  # (B, H, L, L) row 0 = [CLS]'s global attention
    probs = probs * mask[:, None, :, None]  # padding queries attend to nothing
    return probs if per_head else probs.mean(1)


def attention_maps(encoder: TemporalEncoder, x: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every layer's head-averaged attention over [CLS] and the frames, from one pass of ``encoder``.

    Returns:
        ``layers`` × (B, L, L) with L = T + 1 ([CLS] first), and the (B, L) token mask.
    """
    bb = encoder.backbone
    glob = isinstance(bb, GlobalAttention)
    layers = list(bb.encoder.layers) if glob else list(bb.longformer.encoder.layer)
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args, kwargs: inputs.append(
        args[0] if args else kwargs["hidden_states"]), with_kwargs=True) for m in layers]
    try:
        encoder(x, mask)
    finally:
        for hk in hooks:
            hk.remove()
    L = x.shape[1] + 1
    tokens = torch.nn.functional.pad(mask.bool(), (1, 0), value=True)  # (B, L)
    maps = []
    for layer, h in zip(layers, inputs):
        h = h[:, :L]  # (the HF backend pads to a multiple of the window)
        if glob:
            _, w = layer.self_attn(h, h, h, key_padding_mask=~tokens, need_weights=True, average_attn_weights=True)
            maps.append(w * tokens[:, :, None])
        else:
            maps.append(local_attention(layer.attention.self, h, tokens, bb.window // 2))
    return maps, tokens


def rollout(maps: list[torch.Tensor], tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """Relevance of each frame for the pooled clip embedding (Abnar & Zuidema 2020), (B, T), rows sum to 1."""
    L = tokens.shape[1]
    eye = torch.eye(L)
    flow = eye.expand_as(maps[0]).clone()  # (B, L, L)
    for a in maps:
        a = 0.5 * a + 0.5 * eye
        flow = (a / a.sum(-1, keepdim=True)) @ flow
    frames = tokens[:, 1:].float()  # (B, T)
    cls = flow[:, 0]  # (B, L)
    mean = (flow[:, 1:] * frames[..., None]).sum(1) / frames.sum(1, keepdim=True).clamp(min=1)  # (B, L)
    pooled = {"cls": cls, "mean": mean, "both": (cls + mean) / 2}[pool]
    rel = pooled[:, 1:] * frames  # (B, T) the frames' share
    return rel / rel.sum(1, keepdim=True).clamp(min=1e-12)


@torch.inference_mode()
def relevance(model: Classifier, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Relevance of each row of each clip in ``batch``: ``{"av": (B, T)}`` (early fusion) or ``{m: (B, T)}``.

    Raises:
        ValueError: ``model.encoder: meanpool`` has no attention to follow.
    """
    model.eval()
    out = {}
    for name, (enc, x, mask) in model.streams(batch).items():
        if not isinstance(enc, TemporalEncoder):
            raise ValueError("--explain follows attention: model.encoder = 'meanpool' has none")
        maps, tokens = attention_maps(enc, x, mask)
        out[name] = rollout(maps, tokens, enc.pool).numpy()
    return out
