"""Order-blind baseline: masked mean over time (``model.encoder: meanpool``).

The control for the temporal encoder of VTN (Neimark et al. 2021): the same per-frame features,
averaged over the real frames, so any gain of :class:`~cmmvt.models.encoder.TemporalEncoder` over
this one comes from modelling order and interactions between frames.
"""

from __future__ import annotations

import torch
from torch import nn

from cmmvt.models.common import init_weights


class MeanPoolEncoder(nn.Module):
    """Masked mean over time → Linear → GELU.

    Args:
        in_dim: Per-frame feature size, or ``None`` for ``hidden``-sized tokens (early fusion).
        hidden: Output size (``model.hidden``).
    """

    def __init__(self, in_dim: int | None, hidden: int):
        super().__init__()
        self.proj = nn.Linear(in_dim if in_dim is not None else hidden, hidden)
        self.act = nn.GELU()
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool a batch of clips.

        Args:
            x: (B, T, in_dim) per-frame features.
            mask: (B, T) bool, True = real frame; an all-False row pools to zeros.

        Returns:
            (B, hidden) clip embeddings.
        """
        mask = mask.bool()
        x = x.masked_fill(~mask[..., None], 0.0)  # (B, T, in_dim)
        count = mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype)  # (B, 1)
        return self.act(self.proj(x.sum(1) / count))  # (B, hidden)
