"""What every module of :mod:`cmmvt.models` shares: BERT / Longformer init constants and the params check."""

from __future__ import annotations

from torch import nn

from cmmvt.config import ModelParams

INIT_STD = 0.02  # BERT / Longformer ``initializer_range``
LN_EPS = 1e-5


def init_weights(module: nn.Module) -> None:
    """BERT-style init (normal(0, 0.02) weights, zero biases) for modules we build ourselves.

    Leaves ``nn.Embedding`` alone on purpose (Longformer's frozen, zeroed tables must stay zero).
    Use as ``module.apply(init_weights)``.
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):  # fused q/k/v projection is a bare Parameter
        nn.init.normal_(module.in_proj_weight, std=INIT_STD)
        nn.init.zeros_(module.in_proj_bias)


def check_params(p: ModelParams) -> None:
    """Raise ``ValueError`` naming the ``params.yaml`` key when ``p`` cannot build a transformer."""
    if p.hidden % p.heads:
        raise ValueError(f"model.hidden = {p.hidden} must be divisible by model.heads = {p.heads}")
    if p.encoder == "longformer" and p.attention == "local" and p.window % 2:
        raise ValueError(
            f"model.window = {p.window} must be even for local (Longformer) attention: "
            "it is the total width, each frame attending to window/2 neighbours either side"
        )
    if p.encoder == "longformer" and p.attention == "local" and p.backend == "hf" and p.window == 2:
        raise ValueError("model.window = 2 needs model.backend = native (HF Longformer's kernel fails for window/2 = 1)")
