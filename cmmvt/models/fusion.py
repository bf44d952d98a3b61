"""Early audio-visual fusion: one token per time step carrying both modalities.

Video and audio rows are time-aligned (row t of both is the same instant), so each modality is
projected to ``hidden`` and the projections are summed per step, each with a learned modality
embedding. Where a modality is absent at a step (its mask is False, e.g. a clip with no audio
stream) it contributes a learned ``missing`` embedding instead of its (meaningless) features. A
step is real when any modality is present there.
"""

from __future__ import annotations

import torch
from torch import nn

from cmmvt.models.common import INIT_STD, init_weights


class EarlyFusion(nn.Module):
    """Sum of per-modality projections (or ``missing`` embeddings) plus modality embeddings.

    Args:
        dims: Feature size per modality, e.g. ``{"video": 1280, "audio": 1280}``.
        hidden: Token size (``model.hidden``).
    """

    def __init__(self, dims: dict[str, int], hidden: int):
        super().__init__()
        self.modalities = tuple(dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in dims.items()})
        self.proj.apply(init_weights)
        self.modality = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(hidden) * INIT_STD) for m in self.modalities}  # (hidden,) each
        )
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(hidden) * INIT_STD) for m in self.modalities}  # (hidden,) each
        )

    def forward(
        self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor]], only: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse time-aligned modalities into one token sequence.

        Args:
            inputs: ``{modality: (x (B, T, D_m), mask (B, T) bool)}``.
            only: Treat every other modality as absent (a single-modality view through the shared
                encoder, used for per-modality embeddings).

        Returns:
            tokens (B, T, hidden) and step mask (B, T) bool.
        """
        tokens, steps = 0.0, None
        for m in self.modalities:
            x, mask = inputs[m]  # (B, T, D_m), (B, T)
            if only is not None and m != only:
                mask = torch.zeros_like(mask)
            h = self.proj[m](x.masked_fill(~mask[..., None], 0.0))  # (B, T, hidden)
            h = torch.where(mask[..., None], h, self.missing[m]) + self.modality[m]
            tokens = tokens + h
            steps = mask if steps is None else steps | mask
        return tokens, steps
