"""What every module of :mod:`cmmvt.models` shares: BERT / Longformer init constants and initialisation."""

from __future__ import annotations

from torch import nn

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

