"""Models: temporal encoders (VTN, Neimark et al. 2021; Longformer, Beltagy et al. 2020) and the
audio-visual classifier built from ``params.yaml``'s ``model`` section by :func:`build_model`
(:mod:`cmmvt.models.factory`, where every choice among the params' values is made).

Example:
    >>> import torch
    >>> from cmmvt.config import ModelParams
    >>> from cmmvt.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> p = ModelParams(hidden=32, heads=2, layers=1, window=4, fusion="late")
    >>> model = build_model(p, {"video": 64, "audio": 16}, num_classes=5).eval()
    >>> batch = {
    ...     "video": torch.randn(2, 8, 64), "video_mask": torch.ones(2, 8, dtype=torch.bool),
    ...     "audio": torch.randn(2, 8, 16),
    ...     "audio_mask": torch.tensor([[True] * 8, [False] * 8]),  # clip 1 has no audio stream
    ... }
    >>> model(batch).shape
    torch.Size([2, 5])
    >>> {m: tuple(e.shape) for m, e in model.embed(batch).items()}
    {'video': (2, 32), 'audio': (2, 32)}
    >>> sorted(model.encoders)
    ['audio', 'video']
"""

from __future__ import annotations

from cmmvt.models.classifier import Classifier
from cmmvt.models.encoder import GlobalAttention, LocalAttention, TemporalEncoder
from cmmvt.models.factory import MODALITIES, build_attention, build_encoder, build_model
from cmmvt.models.fusion import EarlyFusion
from cmmvt.models.meanpool import MeanPoolEncoder

__all__ = [
    "MODALITIES",
    "Classifier",
    "EarlyFusion",
    "GlobalAttention",
    "LocalAttention",
    "MeanPoolEncoder",
    "TemporalEncoder",
    "build_attention",
    "build_encoder",
    "build_model",
]
