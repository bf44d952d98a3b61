"""Native (pure PyTorch) Longformer encoder: a fast drop-in for the HF-backed ``LocalAttention``.

:class:`NativeLocalAttention` computes exactly what ``cmmvt.models.encoder.LocalAttention`` (which
wraps ``transformers.LongformerModel``) computes, with the same module tree, so the two backends'
``state_dict`` s are interchangeable (same keys, same shapes, both directions)::

    longformer.embeddings.{word,position,token_type}_embeddings.weight   (1, D), zero and frozen
    longformer.embeddings.LayerNorm.{weight,bias}
    longformer.encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}
    longformer.encoder.layer.{i}.attention.self.{query,key,value}_global.{weight,bias}
    longformer.encoder.layer.{i}.attention.output.{dense,LayerNorm}.{weight,bias}
    longformer.encoder.layer.{i}.intermediate.dense.{weight,bias}
    longformer.encoder.layer.{i}.output.{dense,LayerNorm}.{weight,bias}

The attention pattern is HF Longformer's (``one_sided_attn_window_size = attention_window // 2``,
here ``w = model.window // 2``), with token 0 ([CLS]) the only global token:

* a real, non-global token ``i`` attends to the real tokens ``j`` with ``1 ≤ j`` and ``|i − j| ≤ w``
  (local ``query``/``key``/``value`` projections) plus to [CLS] (again with the *local* key/value
  projections of [CLS]), in one softmax;
* [CLS] attends to every real token, itself included, with the separate ``query_global`` /
  ``key_global`` / ``value_global`` projections;
* padding tokens (``mask == False``) are never attended to, and their own attention output is 0
  (HF zeroes the probabilities of masked queries), after which they still go through the output
  projection / LayerNorm / FFN like any other token, exactly as in HF.

Block structure (BERT post-LN, as HF's ``LongformerLayer``): embedding LayerNorm(x + pos[0] + type[0])
→ dropout → ``layers`` × [self-attention → dense → dropout → LayerNorm(· + residual) →
dense(4D) → GELU → dense(D) → dropout → LayerNorm(· + residual)].

How it is fast (on CPU):

* Sliding window, chunked SDPA: the sequence is cut into blocks of ``block`` queries (default
  ``max(w, 32)``); the queries of a block attend to the ``block + 2w`` tokens around it plus the
  [CLS] key, through a boolean mask for the exact band, the padding and the [CLS] column. All blocks
  of all clips go through **one** ``F.scaled_dot_product_attention`` call (blocks folded into the
  batch dimension). The overlapping K/V windows are never copied: tokens are laid out once per
  layer with a [CLS] slot at the head of every block and projected by one GEMM, and queries and
  windows are strided views (``Tensor.unfold``) of that projection (:class:`AttentionLayout`,
  ``_Windows``). Time and memory are linear in the length.
* [CLS] global attention, algebraically folded (exact up to float rounding): with
  ``q̃_h = W_kg,hᵀ q_h`` the scores are ``q̃_h · x_j + q_h · b_kg,h`` and the output is
  ``W_vg,h (Σ_j p_j x_j) + b_vg,h``: O(L·D·heads) instead of projecting every token through
  ``key_global`` and ``value_global`` (O(L·D²)), as HF does.
* ``query``/``key``/``value`` run as one fused GEMM.

The projections and the FFN (12·D² multiply-adds per token and layer) are the same work as in HF
and dominate a training step at D = 256, which bounds the end-to-end gain (see
``benchmarks/attention.py``). With attention dropout active (training, ``dropout > 0``) SDPA
falls back to its unfused math kernel, still blockwise, so still linear in the length.

Also unlike HF: ``window = 2`` works (HF's ``_sliding_chunks_query_key_matmul`` fails for a
one-sided window of 1), and no padding to a multiple of the window is needed.

``attn_impl="flex"`` computes the same pattern with FlexAttention and a block mask, meant for CUDA;
PyTorch runs FlexAttention on CPU without gradients only, and this path has no attention dropout.

Example:
    >>> m = NativeLocalAttention(hidden=32, heads=4, layers=1, window=4, dropout=0.1).eval()
    >>> x, mask = torch.randn(2, 9, 32), torch.ones(2, 9, dtype=torch.bool)
    >>> m(x, mask).shape
    torch.Size([2, 9, 32])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cmmvt.models.common import INIT_STD, LN_EPS, init_weights

AttnImpl = Literal["sdpa", "flex"]


def default_block(one_sided: int) -> int:
    """Queries per block of the chunked kernel: ``w = window // 2``, but at least 32 (tiny blocks
    are per-call overhead, big ones waste FLOPs on masked keys)."""
    return max(one_sided, 32)


class AttentionLayout:
    """Per-batch data shared by all layers of one forward pass of the chunked kernel.

    The kernel never copies K/V into overlapping windows. The hidden states are laid out once per
    layer in an *interleaved* order, flattened over the batch (``n = B·C`` blocks of ``b`` tokens,
    ``S = b + 1`` slots per chunk)::

        [margin chunk] [CLS, block 0 of clip 0] … [CLS, block C-1 of clip 0] [CLS, block 0 of clip 1] … [margin chunk]

    and projected with one GEMM. Queries and overlapping key/value windows are then *strided views*
    of that projection (:class:`_Windows`): the window of block ``i`` is the last ``w`` slots of chunk
    ``i - 1``, all of chunk ``i`` (its own [CLS] + its ``b`` tokens) and the first ``w + 1`` slots of
    chunk ``i + 1`` ([CLS] + ``w`` tokens), i.e. ``K = b + 2w + 2`` slots at a constant stride, so
    every block of every clip goes through **one** SDPA call. ``block_mask`` keeps, per query, its
    own [CLS] column plus the exact band ``|i − j| ≤ w`` of real, non-[CLS] tokens of the same clip.
    Junk slots (margins, the tail past the clip end, neighbouring clips) are always masked as keys
    and discarded as queries, so they get exactly zero gradient.

    Args:
        mask: (B, L) bool, True = real token. Token 0 is the global token and must be real.
        one_sided: ``w = window // 2``.
        block: Queries per block, ``≥ w`` (``None`` → :func:`default_block`).
    """

    def __init__(self, mask: torch.Tensor, one_sided: int, block: int | None = None):
        B, L = mask.shape
        w = one_sided
        b = block or default_block(w)
        if b < w:
            raise ValueError(f"block = {b} must be ≥ window // 2 = {w}")
        C = -(-L // b)  # blocks per clip
        dev = mask.device
        self.B, self.L, self.w, self.b, self.C, self.n = B, L, w, b, C, B * C
        self.K = b + 2 * w + 2  # key slots per block
        self.mask = mask
        keep = mask.clone()
        keep[:, 0] = False  # local output of [CLS] is replaced by its global one
        self.keep = keep  # (B, L): rows whose local attention output is kept
        # Band of valid window tokens, offsets o = -w … b+w-1 from the block start.
        key_ok = F.pad(keep, (w, C * b - L + w), value=False).unfold(1, b + 2 * w, b)  # (B, C, b+2w)
        qi = torch.arange(b, device=dev)[:, None]
        o = torch.arange(b + 2 * w, device=dev)[None, :]
        band = (o >= qi) & (o <= qi + 2 * w)  # |i − j| ≤ w, (b, b + 2w)
        local = band & key_ok[:, :, None, :]  # (B, C, b, b + 2w)
        own_cls = torch.ones(B, C, b, 1, dtype=torch.bool, device=dev)
        next_cls = torch.zeros_like(own_cls)
        full = torch.cat(
            [local[..., :w], own_cls, local[..., w : w + b], next_cls, local[..., w + b :]], dim=-1
        )  # (B, C, b, K), in window-slot order
        self.block_mask = full.view(B * C, 1, b, self.K)
        self._flex = None

    def flex_block_mask(self):
        """FlexAttention ``BlockMask`` of the same pattern on the unblocked sequence (lazy)."""
        if self._flex is None:
            from torch.nn.attention.flex_attention import create_block_mask

            mask, w = self.mask, self.w

            def mask_mod(b, h, q_idx, kv_idx):
                return mask[b, kv_idx] & (((q_idx - kv_idx).abs() <= w) | (kv_idx == 0))

            self._flex = create_block_mask(mask_mod, self.B, None, self.L, self.L, device=mask.device)
        return self._flex


class _Interleave(torch.autograd.Function):
    """(B, L, D) → ((n + 2)·S, D) interleaved layout (see :class:`AttentionLayout`); junk slots = 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, C: int, b: int) -> torch.Tensor:
        B, L, D = x.shape
        ctx.shape = (B, L, D, C, b)
        full, rest = divmod(L, b)
        # Junk slots must be finite (a masked key still meets 0 · value), hence the zeros.
        out = x.new_empty(B * C + 2, b + 1, D)
        out[0] = 0
        out[-1] = 0
        body = out[1:-1].view(B, C, b + 1, D)
        body[:, :, 0] = x[:, None, 0]  # [CLS] at the head of every chunk
        body[:, :full, 1:] = x[:, : full * b].reshape(B, full, b, D)
        if rest:
            body[:, full, 1 : 1 + rest] = x[:, full * b :]
            body[:, full, 1 + rest :] = 0
        return out.view(-1, D)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        B, L, D, C, b = ctx.shape
        full, rest = divmod(L, b)
        body = g.reshape(B * C + 2, b + 1, D)[1:-1].view(B, C, b + 1, D)
        gx = g.new_empty(B, L, D)
        gx[:, : full * b].view(B, full, b, D).copy_(body[:, :full, 1:])
        if rest:
            gx[:, full * b :] = body[:, full, 1 : 1 + rest]
        gx[:, 0] += body[:, :, 0].sum(1)
        return gx, None, None


class _Windows(torch.autograd.Function):
    """Queries and overlapping key/value windows as strided views of the interleaved projection.

    ``qkv`` ((n + 2)·S, 3, H, d) → q (n, H, b, d), k and v (n, H, K, d). The backward writes the
    three gradients straight into one buffer (no per-window scatter-add kernel).
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, n: int, b: int, w: int):
        S, K = b + 1, b + 2 * w + 2
        ctx.dims = (n, b, w)
        chunks = qkv.view(n + 2, S, *qkv.shape[1:])
        q = chunks[1 : n + 1, 1:, 0].transpose(1, 2)
        k = qkv[S - w :, 1].unfold(0, K, S)[:n].transpose(2, 3)
        v = qkv[S - w :, 2].unfold(0, K, S)[:n].transpose(2, 3)
        return q, k, v

    @staticmethod
    def backward(ctx, gq: torch.Tensor, gk: torch.Tensor, gv: torch.Tensor):
        n, b, w = ctx.dims
        S = b + 1
        gq, gk, gv = (None if t is None else t.transpose(1, 2) for t in (gq, gk, gv))  # (n, ·, H, d)
        ref = next(t for t in (gq, gk, gv) if t is not None)
        g = ref.new_zeros(n + 2, S, 3, *ref.shape[2:])
        if gq is not None:
            g[1 : n + 1, 1:, 0] = gq
        for i, gw in ((1, gk), (2, gv)):
            if gw is None:
                continue
            g[1 : n + 1, :, i] += gw[:, w : w + S]  # own chunk
            g[:n, S - w :, i] += gw[:, :w]  # tail of the previous chunk
            g[2:, : w + 1, i] += gw[:, w + S :]  # head of the next chunk
        return g.view(-1, *g.shape[2:]), None, None, None


class _Finish(torch.autograd.Function):
    """Blocked local output (B, Lq, D) + [CLS] global output (B, D) → (B, L, D), HF semantics:
    row 0 = global output, padding rows = 0, other rows = local output."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, glob: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L = keep.shape
        ctx.save_for_backward(keep)
        ctx.Lq = local.shape[1]
        out = local[:, :L] * keep[..., None]
        out[:, 0] = glob
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (keep,) = ctx.saved_tensors
        B, L = keep.shape
        g_local = g.new_empty(B, ctx.Lq, g.shape[-1])
        torch.mul(g, keep[..., None], out=g_local[:, :L])
        g_local[:, L:] = 0
        return g_local, g[:, 0], None


class NativeSelfAttention(nn.Module):
    """Longformer self-attention (sliding window + global token 0), HF parameter names.

    Args:
        hidden: Model width ``D``.
        heads: Attention heads.
        window: Total window width (even); ``w = window // 2`` neighbours either side.
        dropout: Attention-probability dropout.
        attn_impl: ``"sdpa"`` (chunked SDPA, any device) or ``"flex"`` (FlexAttention).
    """

    def __init__(self, hidden: int, heads: int, window: int, dropout: float, attn_impl: AttnImpl = "sdpa"):
        super().__init__()
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.embed_dim = hidden
        self.one_sided_attn_window_size = window // 2
        self.dropout = dropout
        self.attn_impl = attn_impl
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.query_global = nn.Linear(hidden, hidden)
        self.key_global = nn.Linear(hidden, hidden)
        self.value_global = nn.Linear(hidden, hidden)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        """Fused ``query``/``key``/``value`` projection: (…, D) → (…, 3D)."""
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        return F.linear(x, weight, bias)

    def _local(self, x: torch.Tensor, lay: AttentionLayout) -> torch.Tensor:
        """Windowed + [CLS]-column attention of every token: (B, Lq, D) blocked (sdpa) or (B, L, D)."""
        B, L, D = x.shape
        H, d = self.num_heads, self.head_dim
        if self.attn_impl == "flex":
            from torch.nn.attention.flex_attention import flex_attention

            q, k, v = self._qkv(x).view(B, L, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B,H,L,d)
            out = flex_attention(q, k, v, block_mask=lay.flex_block_mask())  # no attention dropout
            return out.transpose(1, 2).reshape(B, L, D)
        x_lay = _Interleave.apply(x, lay.C, lay.b)  # ((n + 2)(b + 1), D)
        qkv = self._qkv(x_lay).view(-1, 3, H, d)
        q, k, v = _Windows.apply(qkv, lay.n, lay.b, lay.w)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=lay.block_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (n, H, b, d)
        return out.transpose(1, 2).reshape(B, lay.C * lay.b, D)

    def _global(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[CLS] (token 0) attending to every real token with the *_global projections, (B, D)."""
        B, L, D = x.shape
        H, d = self.num_heads, self.head_dim
        qg = self.query_global(x[:, 0]).view(B, H, d) / math.sqrt(d)  # (B, H, d)
        wk = self.key_global.weight.view(H, d, D)
        wv = self.value_global.weight.view(H, d, D)
        q_tilde = torch.einsum("bhd,hdD->bhD", qg, wk)  # key_global folded into the query
        # (B, H, L). The key_global bias adds q·b_kg to a whole row: softmax-invariant, kept anyway so
        # that its gradient is HF's (≈ 0) rather than None (an optimizer would skip decaying it).
        scores = torch.bmm(q_tilde, x.transpose(1, 2))
        scores = scores + (qg * self.key_global.bias.view(H, d)).sum(-1, keepdim=True)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        probs = F.dropout(scores.softmax(-1), self.dropout, self.training)
        ctx = torch.bmm(probs, x)  # (B, H, D)
        out = torch.einsum("bhD,hdD->bhd", ctx, wv) + self.value_global.bias.view(H, d)
        return out.reshape(B, D)

    def forward(self, x: torch.Tensor, lay: AttentionLayout) -> torch.Tensor:
        """Attend.

        Args:
            x: (B, L, D) hidden states, token 0 global.
            lay: :class:`AttentionLayout` of the batch's mask.

        Returns:
            (B, L, D) attention output (before the output projection).
        """
        return _Finish.apply(self._local(x, lay), self._global(x, lay.mask), lay.keep)


class NativeSelfOutput(nn.Module):
    """``dense → dropout → LayerNorm(· + residual)`` (HF ``LongformerSelfOutput`` / ``LongformerOutput``)."""

    def __init__(self, d_in: int, hidden: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(d_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class NativeAttention(nn.Module):
    """HF ``LongformerAttention``: ``self`` (attention) + ``output`` (projection, residual, LN)."""

    def __init__(self, hidden: int, heads: int, window: int, dropout: float, attn_impl: AttnImpl):
        super().__init__()
        self.self = NativeSelfAttention(hidden, heads, window, dropout, attn_impl)
        self.output = NativeSelfOutput(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor, lay: AttentionLayout) -> torch.Tensor:
        return self.output(self.self(x, lay), x)


class NativeIntermediate(nn.Module):
    """HF ``LongformerIntermediate``: ``dense(D → 4D) → GELU`` (exact erf GELU, HF's ``"gelu"``)."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(h))


class NativeLongformerLayer(nn.Module):
    """One post-LN Longformer block with HF ``LongformerLayer``'s parameter names.

    Args:
        hidden: Model width ``D`` (FFN width 4D).
        heads: Attention heads.
        window: Total window width (even).
        dropout: Dropout everywhere (attention probabilities and hidden states), as in the wrapper.
        attn_impl: ``"sdpa"`` or ``"flex"``.
    """

    def __init__(self, hidden: int, heads: int, window: int, dropout: float, attn_impl: AttnImpl = "sdpa"):
        super().__init__()
        self.attention = NativeAttention(hidden, heads, window, dropout, attn_impl)
        self.intermediate = NativeIntermediate(hidden, 4 * hidden)
        self.output = NativeSelfOutput(4 * hidden, hidden, dropout)

    def forward(self, x: torch.Tensor, lay: AttentionLayout) -> torch.Tensor:
        """(B, L, D) → (B, L, D)."""
        h = self.attention(x, lay)
        return self.output(self.intermediate(h), h)


class NativeEmbeddings(nn.Module):
    """What the wrapper keeps of HF ``LongformerEmbeddings``: LayerNorm(x + pos[0] + type[0]) → dropout.

    The three one-row tables exist (zero, frozen) only so the state dicts match HF's.
    """

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        # Registration order = HF's, so parameters() (hence optimizer state) line up too.
        self.word_embeddings = nn.Embedding(1, hidden, padding_idx=0)
        self.token_type_embeddings = nn.Embedding(1, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)
        self.position_embeddings = nn.Embedding(1, hidden, padding_idx=0)

    def freeze_tables(self) -> None:
        """Zero and freeze the three one-row tables (what the HF-backed wrapper does to its own)."""
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            nn.init.zeros_(table.weight)
            table.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.position_embeddings.weight[0] + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x + extra))


class _Encoder(nn.Module):
    def __init__(self, layers: list[NativeLongformerLayer]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _Longformer(nn.Module):
    def __init__(self, hidden: int, heads: int, layers: int, window: int, dropout: float, attn_impl: AttnImpl):
        super().__init__()
        self.embeddings = NativeEmbeddings(hidden, dropout)
        self.encoder = _Encoder(
            [NativeLongformerLayer(hidden, heads, window, dropout, attn_impl) for _ in range(layers)]
        )


def _longformer_init(module: nn.Module) -> None:
    """transformers' ``LongformerPreTrainedModel._init_weights``, applied like its ``post_init`` (post-order).

    Modules are built in HF's order (so their default inits draw the same random numbers) and then
    re-initialised here with the same draws: normal(0, 0.02) linears and tables, zero biases, unit
    LayerNorms. So for a seed this module gets exactly the weights of the HF-backed ``LocalAttention``,
    and leaves the random stream where HF leaves it, without importing transformers.
    """
    init_weights(module)
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_STD)


class NativeLocalAttention(nn.Module):
    """Drop-in for ``cmmvt.models.encoder.LocalAttention`` (same forward, same state dict).

    Built without transformers, with the same weights as the HF-backed module for the same seed
    (:func:`_longformer_init`).

    Args:
        hidden: Model width ``D`` (FFN width 4D).
        heads: Attention heads (dividing ``hidden``).
        layers: Transformer blocks.
        window: Total window width (even); ``w = window // 2`` neighbours either side.
        dropout: Dropout of hidden states and attention probabilities.
        attn_impl: ``"sdpa"`` (default; chunked SDPA, CPU or CUDA) or ``"flex"`` (FlexAttention;
            meant for CUDA — on CPU PyTorch supports it without gradients only).
        block: Queries per block of the chunked kernel (default :func:`default_block`); the result
            does not depend on it.

    Raises:
        ValueError: An ``attn_impl`` other than ``"sdpa"`` / ``"flex"``.
    """

    def __init__(self, hidden: int, heads: int, layers: int, window: int, dropout: float,
                 attn_impl: AttnImpl = "sdpa", block: int | None = None):
        super().__init__()
        assert hidden % heads == 0 and window % 2 == 0, (hidden, heads, window)  # users' values: ModelParams
        if attn_impl not in ("sdpa", "flex"):
            raise ValueError(f"attn_impl = {attn_impl!r} is not one of: sdpa, flex")
        self.window = window
        self.block = block
        self.longformer = _Longformer(hidden, heads, layers, window, dropout, attn_impl)
        self.longformer.apply(_longformer_init)  # the same draws, in the same order, as HF's post_init
        self.longformer.embeddings.freeze_tables()

    @classmethod
    def from_hf(cls, local: nn.Module, **kwargs) -> "NativeLocalAttention":
        """Build a native module carrying the weights (and train/eval mode, device, dtype) of an
        HF-backed ``LocalAttention``, its sizes read back from its ``LongformerConfig``. The reverse
        needs no helper: ``LocalAttention(...).load_state_dict(native.state_dict())``.

        Args:
            local: A ``cmmvt.models.encoder.LocalAttention`` (its ``state_dict`` keys are ours).
            **kwargs: Passed to the constructor (``attn_impl``, ``block``).
        """
        cfg = local.longformer.config
        sizes = dict(hidden=cfg.hidden_size, heads=cfg.num_attention_heads, layers=cfg.num_hidden_layers,
                     window=cfg.attention_window[0], dropout=cfg.hidden_dropout_prob)
        with torch.random.fork_rng(devices=[]):  # its own init is overwritten: leave the caller's RNG untouched
            native = cls(**sizes, **kwargs)
        native.load_state_dict(local.state_dict())
        ref = next(local.parameters())
        native.train(local.training)
        return native.to(device=ref.device, dtype=ref.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode tokens; token 0 gets global attention.

        Args:
            x: (B, L, D) embedded tokens, [CLS] first.
            mask: (B, L) bool, True = real token ([CLS] must be real).

        Returns:
            (B, L, D) contextualised tokens.
        """
        mask = mask.bool()
        lay = AttentionLayout(mask, self.window // 2, self.block)
        h = self.longformer.embeddings(x)
        for layer in self.longformer.encoder.layer:
            h = layer(h, lay)
        return h
