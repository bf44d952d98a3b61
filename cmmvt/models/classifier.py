"""Audio-visual clip classifier: per-modality or fused temporal encoders, then an MLP head.

``model.modalities`` picks the inputs (``video``, ``audio`` or ``av``); with ``av``,
``model.fusion`` picks how they meet:

* ``late``: one encoder per modality (VTN, Neimark et al. 2021, run on each stream); the clip
  embeddings are concatenated. A clip lacking a modality (all-False mask, e.g. no audio stream)
  gets that modality's learned ``missing`` vector instead of its encoder output.
* ``early``: per-step fusion (:class:`~cmmvt.models.fusion.EarlyFusion`) into one token sequence
  and a single shared encoder over it.

``model.encoder`` picks the encoder: the temporal transformer
(:class:`~cmmvt.models.encoder.TemporalEncoder`) or the order-blind
:class:`~cmmvt.models.meanpool.MeanPoolEncoder`; with ``early`` fusion the mean is taken over the
fused tokens.

Those choices are made in one place, :func:`cmmvt.models.factory.build_model`, which hands
:class:`Classifier` its built encoders and fusion module.

Batch keys: ``video`` (B, T, Dv) float, ``video_mask`` (B, T) bool, ``audio`` (B, T, Da) float,
``audio_mask`` (B, T) bool (True = real frame); only the modalities in use are read. Zeros in
``audio`` are never taken for sound: only the mask says what is real.
"""

from __future__ import annotations

import torch
from torch import nn

from cmmvt.models.common import INIT_STD, init_weights
from cmmvt.models.encoder import TemporalEncoder
from cmmvt.models.fusion import EarlyFusion


class Classifier(nn.Module):
    """Clip classifier over cached per-frame embeddings.

    Built by :func:`cmmvt.models.factory.build_model`, which decides the encoders and the fusion.

    Args:
        dims: Feature size per modality in use, in reading order, e.g. ``{"video": 1280, "audio": 1280}``.
        num_classes: Number of output logits.
        encoders: ``{modality: encoder}`` for each of ``dims`` (late fusion, single modality), or
            ``{"av": encoder}``, one encoder over the fused tokens, with ``fusion``. Each maps
            (B, T, D) features + (B, T) mask to a (B, hidden) embedding.
        fusion: The :class:`EarlyFusion` of ``dims`` (early fusion), or ``None``.
        hidden: Embedding size of every encoder (``model.hidden``).
        dropout: Dropout in the head (``model.dropout``).
        input_norm: LayerNorm over each row's features first (``model.input_norm``).
        input_dropout: Dropout on the (normalised) features (``model.input_dropout``).

    Attributes:
        modalities: The modalities read from a batch, e.g. ``("video", "audio")``.
        encoders: ``nn.ModuleDict`` keyed by modality (``"video"``/``"audio"``), or a single
            ``"av"`` entry, the shared encoder, with early fusion. Pretrained per-modality
            encoders can be loaded into it.
        missing: Learned per-modality ``missing`` vectors (B-independent, (hidden,)); late fusion
            and single-modality models only (early fusion keeps its own, per step).
        inputs: Per modality, what the CNN features go through first: ``LayerNorm`` (``model.input_norm``)
            and ``Dropout(model.input_dropout)``.
        fusion: The :class:`EarlyFusion` module, or ``None``.
        head: LayerNorm → Linear(→hidden) → GELU → Dropout → Linear(→num_classes), on
            :meth:`represent`.
        head_in: The size of :meth:`represent`'s output.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, encoders: dict[str, nn.Module],
                 fusion: EarlyFusion | None, hidden: int, dropout: float, input_norm: bool = False,
                 input_dropout: float = 0.0):
        super().__init__()
        self.modalities = tuple(dims)
        assert list(encoders) == (["av"] if fusion is not None else list(dims)), (list(encoders), list(dims))
        self.dims = {m: int(d) for m, d in dims.items()}
        # per-row LayerNorm (Ba et al. 2016) of the frozen CNN's features, then dropout on them
        # (Srivastava et al. 2014): the features' scale varies by modality and setting, and the encoders
        # see a few hundred clips; no parameters at all when both are off
        self.inputs = nn.ModuleDict({
            m: nn.Sequential(nn.LayerNorm(d) if input_norm else nn.Identity(), nn.Dropout(input_dropout))
            for m, d in self.dims.items()})
        self.early = fusion is not None
        self.fusion = fusion
        self.encoders = nn.ModuleDict(encoders)
        if self.early:
            self.missing = None  # early fusion keeps its own, per step
            head_in = hidden
        else:
            self.missing = nn.ParameterDict(
                {m: nn.Parameter(torch.randn(hidden) * INIT_STD) for m in self.modalities}  # (hidden,) each
            )
            head_in = hidden * len(self.modalities)
        self.head_in = head_in
        self.head = nn.Sequential(
            nn.LayerNorm(head_in),
            nn.Linear(head_in, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.head.apply(init_weights)

    def _inputs(self, batch: dict[str, torch.Tensor], hide: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> dict[str, tuple[torch.Tensor, ...]]:
        """Check and unpack ``{modality: (x (B, T, D), mask (B, T) bool)}`` from a batch, ``x`` through
        :attr:`inputs`; with ``hide[m] = (rows (B, T) bool, token (D,))`` those rows are replaced by the token
        first."""
        out = {}
        for m in self.modalities:
            if m not in batch or f"{m}_mask" not in batch:
                raise KeyError(f"batch needs '{m}' and '{m}_mask' (has {sorted(batch)})")
            x, mask = batch[m], batch[f"{m}_mask"].bool()
            if x.dim() != 3 or x.shape[-1] != self.dims[m] or mask.shape != x.shape[:2]:
                raise ValueError(
                    f"batch['{m}'] {tuple(x.shape)} / batch['{m}_mask'] {tuple(mask.shape)}: "
                    f"expected (B, T, {self.dims[m]}) / (B, T)"
                )
            x = x.masked_fill(~mask[..., None], 0.0)  # (B, T, D); padding zeroed first
            if hide is not None and m in hide:  # hidden rows never reach the encoder as themselves
                rows, token = hide[m]
                x = torch.where(rows[..., None], token.to(x.dtype), x)
            out[m] = (self.inputs[m](x), mask)
        if self.early and len({x.shape[:2] for x, _ in out.values()}) > 1:
            raise ValueError("early fusion needs time-aligned modalities of equal (B, T)")
        return out

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality clip embeddings (for cross-modal contrastive pretraining).

        Late fusion / single modality: each modality's encoder output ([CLS] or pooled), with the
        learned ``missing`` vector for clips lacking that modality. Early fusion: the shared
        encoder run on each modality alone (the others marked absent at every step).

        Rows of clips lacking a modality carry no information about the clip; contrastive losses
        should drop them, using ``batch[f"{m}_mask"].any(1)``.

        Returns:
            ``{modality: (B, hidden)}``.
        """
        inputs = self._inputs(batch)
        if self.early:
            enc = self.encoders["av"]
            return {m: enc(*self.fusion(inputs, only=m)) for m in self.modalities}
        out = {}
        for m, (x, mask) in inputs.items():
            h = self.encoders[m](x, mask)  # (B, hidden)
            present = mask.any(1, keepdim=True)  # (B, 1)
            out[m] = torch.where(present, h, self.missing[m])
        return out

    def tokens(self, batch: dict[str, torch.Tensor], hide: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
               ) -> dict[str, torch.Tensor]:
        """Per-row outputs of the encoder(s), with the rows in ``hide`` replaced by a mask token at the input.

        Masked audio-visual prediction (AV-HuBERT, Shi et al. 2022) reads these: with early fusion a hidden
        row of one modality is predicted from the other modality at the same step and from both around it;
        with late fusion each modality's encoder sees its own rows only.

        Args:
            batch: ``{m: (B, T, D_m), f"{m}_mask": (B, T) bool}`` for each modality in use.
            hide: ``{m: (rows (B, T) bool, token (D_m,))}``: the rows to hide and what replaces them (a learned
                mask embedding, wav2vec 2.0's, Baevski et al. 2020); a modality left out hides nothing.

        Returns:
            ``{m: (B, T, hidden)}``: the fused sequence's outputs for every modality (early), else each
            modality's own encoder's.

        Raises:
            ValueError: ``model.encoder: meanpool`` has no per-row outputs.
        """
        inputs = self._inputs(batch, hide)
        if not all(isinstance(e, TemporalEncoder) for e in self.encoders.values()):
            raise ValueError("masked prediction needs per-row outputs: model.encoder = 'meanpool' has none "
                             "(use model.encoder: longformer)")
        if self.early:
            _, rows = self.encoders["av"](*self.fusion(inputs), return_tokens=True)  # (B, T, hidden)
            return {m: rows for m in self.modalities}
        return {m: self.encoders[m](x, mask, return_tokens=True)[1] for m, (x, mask) in inputs.items()}

    def streams(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
        """Each encoder with what it reads: ``{"av": (encoder, tokens (B, T, hidden), steps (B, T))}`` with early
        fusion, else ``{m: (encoder, x (B, T, D_m), mask (B, T))}`` (for explanations)."""
        inputs = self._inputs(batch)
        if self.early:
            return {"av": (self.encoders["av"], *self.fusion(inputs))}
        return {m: (self.encoders[m], x, mask) for m, (x, mask) in inputs.items()}

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The clip representation the head reads: the fused [CLS] (early) or the concatenated per-modality
        embeddings (late / single modality).

        Pretraining's synchrony objective trains this very representation, so the pretrained graph is the
        one fine-tuning uses.

        Args:
            batch: ``{m: (B, T, D_m), f"{m}_mask": (B, T) bool}`` for each modality in use.

        Returns:
            (B, head_in): (B, hidden) early, (B, M * hidden) otherwise.
        """
        if self.early:
            tokens, steps = self.fusion(self._inputs(batch))  # (B, T, hidden), (B, T)
            return self.encoders["av"](tokens, steps)  # (B, hidden)
        emb = self.embed(batch)
        return torch.cat([emb[m] for m in self.modalities], dim=-1)  # (B, M * hidden)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Classify a batch of clips.

        Args:
            batch: ``{m: (B, T, D_m), f"{m}_mask": (B, T) bool}`` for each modality in use.

        Returns:
            (B, num_classes) logits.
        """
        return self.head(self.represent(batch))  # (B, C)
