"""Temporal encoder over per-frame embeddings: a [CLS] token and the frames' mean summarise a clip.

After VTN (Neimark et al., "Video Transformer Network", 2021): frozen per-frame CNN features are
projected, given learned position embeddings, prefixed with a learned [CLS] token and passed through
a transformer encoder whose [CLS] output, the mean of its frame outputs, or their average
(``model.pool``) is the clip embedding. The attention pattern of an otherwise identical BERT-style
(post-LN) encoder is ``model.attention``'s, chosen by :func:`cmmvt.models.factory.build_attention`:

* ``local``: Longformer sliding-window attention (Beltagy et al., "Longformer: The Long-Document
  Transformer", 2020), via ``transformers.LongformerModel``. ``model.window`` is the total window
  width: every frame attends to the ``window / 2`` frames either side of it and to [CLS]; [CLS] has
  global attention (attends to, and is attended by, every frame).
* ``global``: full softmax(QKᵀ/√d_k)·V self-attention (``nn.TransformerEncoder``).

Both backbones take the same ``(tokens, mask)`` and apply the same block structure:
embedding LayerNorm → dropout → ``layers`` × [attention → residual → LayerNorm → FFN(GELU) →
residual → LayerNorm], with the same initialisation (BERT: normal(0, 0.02)).

The modules here take plain sizes; which one a ``params.yaml`` builds, and whether its values fit
(even window, heads dividing hidden), is decided by :mod:`cmmvt.models.factory` and
:class:`cmmvt.config.ModelParams`. The ``assert`` s below only catch a programming error.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cmmvt.models.common import INIT_STD, LN_EPS, init_weights

Pool = Literal["cls", "mean", "both"]


class LocalAttention(nn.Module):
    """Longformer encoder (sliding window + global [CLS]) over already-embedded tokens.

    Longformer's own embedding layer is neutralised: we feed ``inputs_embeds`` that already carry
    our position embeddings, so its word / position / token-type tables are shrunk to one row,
    zeroed and frozen, and ``position_ids`` / ``token_type_ids`` are passed explicitly as all-zero
    (row 0 is also the ``padding_idx``, which ``nn.Embedding`` never updates). What remains of it
    is the embedding LayerNorm + dropout, i.e. exactly the BERT embedding post-processing.

    Args:
        hidden: Model width ``D`` (FFN width 4D).
        heads: Attention heads (dividing ``hidden``).
        layers: Transformer blocks.
        window: Total window width, even and ≥ 4 (transformers' kernel fails for ``window / 2 = 1``).
        dropout: Dropout of hidden states and attention probabilities.
    """

    def __init__(self, hidden: int, heads: int, layers: int, window: int, dropout: float):
        super().__init__()
        assert hidden % heads == 0 and window % 2 == 0 and window >= 4, (hidden, heads, window)
        self.window = window
        from transformers import LongformerConfig, LongformerModel  # ~2 s to import: only for backend hf

        cfg = LongformerConfig(
            vocab_size=1,
            type_vocab_size=1,
            max_position_embeddings=1,  # we pass position_ids = 0 (the zero, frozen padding row)
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
            sep_token_id=0,
            tie_word_embeddings=False,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            hidden_act="gelu",
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            attention_window=[window] * layers,
            initializer_range=INIT_STD,
            layer_norm_eps=LN_EPS,
        )
        self.longformer = LongformerModel(cfg, add_pooling_layer=False)
        emb = self.longformer.embeddings
        for table in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            nn.init.zeros_(table.weight)
            table.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode tokens; token 0 gets global attention.

        Args:
            x: (B, L, D) embedded tokens, [CLS] first.
            mask: (B, L) bool, True = real token.

        Returns:
            (B, L, D) contextualised tokens.
        """
        B, L, _ = x.shape
        pad = -L % self.window  # pad ourselves so HF neither warns nor pads
        x = F.pad(x, (0, 0, 0, pad))  # (B, Lp, D)
        mask = F.pad(mask, (0, pad), value=False).long()  # (B, Lp)
        global_mask = torch.zeros_like(mask)
        global_mask[:, 0] = 1  # [CLS]
        zeros = torch.zeros_like(mask)
        out = self.longformer(
            inputs_embeds=x,
            attention_mask=mask,
            global_attention_mask=global_mask,
            position_ids=zeros,
            token_type_ids=zeros,
        ).last_hidden_state  # (B, Lp, D)
        return out[:, :L]


class GlobalAttention(nn.Module):
    """Full self-attention with the same post-LN block structure as :class:`LocalAttention`.

    Args:
        hidden: Model width ``D`` (FFN width 4D).
        heads: Attention heads (dividing ``hidden``).
        layers: Transformer blocks.
        dropout: Dropout of hidden states and attention probabilities.
    """

    def __init__(self, hidden: int, heads: int, layers: int, dropout: float):
        super().__init__()
        assert hidden % heads == 0, (hidden, heads)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)  # embedding LayerNorm, as in BERT/Longformer
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden,
            nhead=heads,
            dim_feedforward=4 * hidden,
            dropout=dropout,
            activation="gelu",
            layer_norm_eps=LN_EPS,
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode tokens.

        Args:
            x: (B, L, D) embedded tokens, [CLS] first.
            mask: (B, L) bool, True = real token.

        Returns:
            (B, L, D) contextualised tokens.
        """
        x = self.drop(self.norm(x))
        return self.encoder(x, src_key_padding_mask=~mask)  # (B, L, D)


class TemporalEncoder(nn.Module):
    """Frames → clip embedding (VTN, Neimark et al. 2021; Longformer, Beltagy et al. 2020).

    Linear(in_dim → hidden) → prepend learned [CLS] → + position embedding → local or global attention
    encoder, over clips of any length up to ``model.max_frames`` in one pass. The clip embedding
    (``model.pool``) is the [CLS] output (``cls``), the mean of the real frames' outputs (``mean``: global
    average pooling, which ViT found as good as a class token once tuned: Dosovitskiy et al. 2021,
    appendix D.3), or the average of the two (``both``). With local attention each frame's output still
    carries its neighbours in order, so the mean keeps local order.

    Positions: a learned table of ``crop_frames`` frame positions (plus one for [CLS]) used as is for
    clips of up to ``crop_frames`` rows — the training crops — and linearly interpolated to the clip's
    length for longer ones (whole-clip evaluation), as ViT resizes its learned position embeddings for
    longer inputs (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", §3.2). Chosen over
    sinusoidal or absolute positions because every evaluation position then lies inside the range the
    model was trained on (a 10-s clip's row 30 never sees an untrained embedding), and over rotary ones
    because it needs no change inside the attention kernels (both backends stay exactly equivalent); the
    price is that a longer clip is read at a coarser position resolution. With local attention the
    relative order of neighbours, which the window sees, is kept at any length.

    Args:
        in_dim: Per-frame feature size, or ``None`` when the inputs are already ``hidden``-sized
            tokens (early fusion projects each modality itself), which skips the input projection.
        hidden: Token size ``D`` (``model.hidden``).
        crop_frames: Frame rows of the learned position table (``model.crop_frames``).
        max_frames: Most frames encoded in one pass (``model.max_frames``).
        pool: The clip embedding (``model.pool``): ``"cls"``, ``"mean"`` or ``"both"``.
        backbone: Builds the attention backbone, (B, L, D) tokens + (B, L) mask → (B, L, D); called
            once, after this module's own weights are drawn (so a seed gives the same weights whatever
            the backbone).
    """

    def __init__(self, in_dim: int | None, hidden: int, crop_frames: int, max_frames: int, pool: Pool,
                 backbone: Callable[[], nn.Module]):
        super().__init__()
        assert pool in ("cls", "mean", "both"), pool
        self.max_frames = max_frames
        self.pool = pool
        self.proj = nn.Linear(in_dim, hidden) if in_dim is not None else nn.Identity()
        self.cls = nn.Parameter(torch.empty(1, 1, hidden))
        self.pos = nn.Parameter(torch.empty(1, crop_frames + 1, hidden))  # [CLS] at 0, then frame positions
        nn.init.normal_(self.cls, std=INIT_STD)
        nn.init.normal_(self.pos, std=INIT_STD)
        self.proj.apply(init_weights)
        self.backbone = backbone()

    def positions(self, T: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Position embeddings of [CLS] and ``T`` frames, per clip of its own length.

        A clip of ``L`` real frames takes the table's first ``L`` rows when ``L`` fits the table, else its
        frame rows linearly interpolated to ``L`` (first and last kept, as ``F.interpolate(...,
        align_corners=True)``), so a clip's positions never depend on how far its batch is padded.

        Args:
            T: Frames per clip in the batch (padded length).
            lengths: (B,) real frames per clip; ``None``: every clip has ``T``.

        Returns:
            (B, T + 1, hidden) ((1, T + 1, hidden) without ``lengths``); rows past a clip's length are
            filler (padding, masked).
        """
        P = self.pos.shape[1] - 1  # frame rows of the table
        frames = self.pos[0, 1:]  # (P, D)
        L = torch.full((1,), T, device=frames.device) if lengths is None else lengths.to(frames.device)
        L = L.to(frames.dtype)[:, None]  # (B, 1)
        t = torch.arange(T, device=frames.device, dtype=frames.dtype)[None]  # (1, T)
        scale = torch.where(L > P, (P - 1) / (L - 1).clamp(min=1), torch.ones_like(L))  # (B, 1)
        src = (t * scale).clamp(max=P - 1)  # (B, T) fractional table row of each frame
        lo = src.floor().long()  # (B, T)
        hi = (lo + 1).clamp(max=P - 1)
        w = (src - lo.to(src.dtype))[..., None]  # (B, T, 1); 0 where the table row is taken as is
        pe = frames[lo] * (1 - w) + frames[hi] * w  # (B, T, D)
        return torch.cat([self.pos[:, :1].expand(len(pe), -1, -1), pe], dim=1)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, return_tokens: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of clips.

        Args:
            x: (B, T, in_dim) per-frame features (T ≤ ``model.max_frames``).
            mask: (B, T) bool, True = real frame. An all-False row is allowed (the clip then
                reduces to its [CLS] token alone).
            return_tokens: Also return the frame tokens.

        Returns:
            (B, hidden) clip embeddings (``model.pool``: the [CLS] output, the mean of the real frames'
            outputs, or the average of both), or ``(embedding, tokens)`` with tokens (B, T, hidden).
        """
        B, T, _ = x.shape
        if T > self.max_frames:
            raise ValueError(f"clip has {T} frames but model.max_frames = {self.max_frames}")
        mask = mask.bool()
        x = x.masked_fill(~mask[..., None], 0.0)  # padding never leaks, even NaN/garbage
        x = self.proj(x)  # (B, T, D)
        x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1) + self.positions(T, mask.sum(1))  # (B, T+1, D)
        mask = F.pad(mask, (1, 0), value=True)  # (B, T+1), [CLS] is always real
        h = self.backbone(x, mask)  # (B, T+1, D)
        if self.pool == "cls":
            emb = h[:, 0]
        else:
            real = mask[:, 1:, None]  # (B, T, 1)
            count = real.sum(1)  # (B, 1)
            mean = h[:, 1:].masked_fill(~real, 0.0).sum(1) / count.clamp(min=1)  # (B, D)
            emb = torch.where(count > 0, mean, h[:, 0])  # a clip without frames: its [CLS] alone
            if self.pool == "both":
                emb = (emb + h[:, 0]) / 2
        return (emb, h[:, 1:]) if return_tokens else emb
