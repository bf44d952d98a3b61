"""The native Longformer backend equals the HF-backed one: outputs and gradients, state dicts.

The reference is ``cmmvt.models.encoder.LocalAttention`` (``transformers.LongformerModel``), weights
copied across with ``load_state_dict``. HF's sliding-chunk code crashes for ``window = 2``
(``one_sided_attn_window_size = 1``: a shape mismatch in ``_sliding_chunks_query_key_matmul``), so
that window is checked against :func:`dense_reference`, an independent O(L²) statement of the same
pattern, itself checked against HF on the other windows.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from cmmvt import config
from cmmvt.config import ModelParams
from cmmvt.models.encoder import LocalAttention
from cmmvt.models.factory import build_encoder
from cmmvt.models.native import AttentionLayout, NativeLocalAttention

TOL = dict(atol=1e-4, rtol=1e-4)
HIDDEN, HEADS = 32, 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second OpenMP thread only adds barrier stalls on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params(window: int, layers: int = 2, dropout: float = 0.1) -> dict:
    """The plain sizes both backends take."""
    return dict(hidden=HIDDEN, heads=HEADS, window=window, layers=layers, dropout=dropout)


def perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Move every trainable parameter off its init (unit LayerNorms, zero biases hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in module.parameters():
            if prm.requires_grad:
                prm.add_(0.2 * torch.randn(prm.shape, generator=gen))


def batch(B: int, L: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens and a variable-length mask: row 0 full; with B ≥ 3 the last row is [CLS] only."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, HIDDEN, generator=gen)
    lens = torch.randint(1, L + 1, (B,), generator=gen)
    lens[0] = L
    if B >= 3:
        lens[-1] = 1
    mask = torch.arange(L)[None] < lens[:, None]
    return x, mask


def run(module: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, upstream: torch.Tensor):
    """Output, d(loss)/dx and d(loss)/d(every trainable parameter), loss = <out, upstream>."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = module(x, mask)
    (out * upstream).sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    return out.detach(), x.grad, grads


def assert_same(a, b) -> None:
    out_a, gx_a, gp_a = a
    out_b, gx_b, gp_b = b
    torch.testing.assert_close(out_a, out_b, **TOL)
    torch.testing.assert_close(gx_a, gx_b, **TOL)
    assert gp_a.keys() == gp_b.keys()
    for name in gp_a:
        assert gp_a[name] is not None and gp_b[name] is not None, name
        torch.testing.assert_close(gp_a[name], gp_b[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


def pair(p: dict, seed: int = 0, **kw) -> tuple[LocalAttention, NativeLocalAttention]:
    torch.manual_seed(seed)
    hf = LocalAttention(**p)
    perturb(hf, seed)
    hf.eval()
    return hf, NativeLocalAttention.from_hf(hf, **kw)


def dense_reference(m: NativeLocalAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """HF Longformer semantics written out with full (L, L) masks, from ``m``'s parameters (eval)."""
    lf = m.longformer
    B, L, D = x.shape
    emb = lf.embeddings
    h = emb.LayerNorm(x + emb.position_embeddings.weight[0] + emb.token_type_embeddings.weight[0])
    w = m.window // 2
    i, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    local = ((i - j).abs() <= w) & (j != 0)
    allowed = (local | (j == 0))[None] & mask[:, None, :]  # (B, L, L): band ∪ [CLS], real keys
    for layer in lf.encoder.layer:
        sa = layer.attention.self
        H, d = sa.num_heads, sa.head_dim

        def heads(t):
            return t.view(B, L, H, d).transpose(1, 2)

        q, k, v = heads(sa.query(h)), heads(sa.key(h)), heads(sa.value(h))
        s = (q / math.sqrt(d)) @ k.transpose(-1, -2)
        att = s.masked_fill(~allowed[:, None], float("-inf")).softmax(-1) @ v  # (B, H, L, d)
        att = att.transpose(1, 2).reshape(B, L, D) * mask[..., None]  # padding queries → 0
        qg = heads(sa.query_global(h))[:, :, :1]
        sg = (qg / math.sqrt(d)) @ heads(sa.key_global(h)).transpose(-1, -2)
        g = sg.masked_fill(~mask[:, None, None], float("-inf")).softmax(-1) @ heads(sa.value_global(h))
        att = torch.cat([g.transpose(1, 2).reshape(B, 1, D), att[:, 1:]], dim=1)
        a = layer.attention.output(att, h)
        h = layer.output(layer.intermediate(a), a)
    return h


# ---- structure ------------------------------------------------------------------------------


def test_state_dict_and_parameters_match_hf():
    p = params(window=4, layers=3)
    hf, nat = LocalAttention(**p), NativeLocalAttention(**p)
    sd_hf, sd_nat = hf.state_dict(), nat.state_dict()
    assert list(sd_hf) == list(sd_nat)
    assert all(sd_hf[k].shape == sd_nat[k].shape for k in sd_hf)
    # same parameter order and trainability → optimizer state dicts are interchangeable too
    assert [(n, q.shape, q.requires_grad) for n, q in hf.named_parameters()] == [
        (n, q.shape, q.requires_grad) for n, q in nat.named_parameters()
    ]
    # both directions
    perturb(hf)
    nat.load_state_dict(hf.state_dict())
    hf2 = LocalAttention(**p)
    hf2.load_state_dict(nat.state_dict())
    for k, v in hf.state_dict().items():
        torch.testing.assert_close(hf2.state_dict()[k], v, atol=0, rtol=0)


def test_init_equals_hf_for_a_seed():
    """Built without transformers, the native module draws exactly HF's weights and leaves the RNG as HF does."""
    p = dict(hidden=64, heads=4, window=4, layers=2, dropout=0.1)
    torch.manual_seed(3)
    hf, after_hf = LocalAttention(**p).state_dict(), torch.rand(3)
    torch.manual_seed(3)
    nat, after_nat = NativeLocalAttention(**p).state_dict(), torch.rand(3)
    assert list(hf) == list(nat)
    for k in hf:
        assert torch.equal(nat[k], hf[k]), k
    assert torch.equal(after_hf, after_nat)
    assert abs(nat["longformer.encoder.layer.0.attention.self.query.weight"].std().item() - 0.02) < 3e-3


def test_native_backend_never_imports_transformers():
    import subprocess
    import sys

    code = ("import sys, torch; from cmmvt.config import ModelParams; from cmmvt.models import build_model; "
            "m = build_model(ModelParams(hidden=32, heads=2, layers=1), {'video': 8, 'audio': 8}, 3); "
            "m({'video': torch.randn(1, 5, 8), 'video_mask': torch.ones(1, 5, dtype=torch.bool), "
            "'audio': torch.randn(1, 5, 8), 'audio_mask': torch.ones(1, 5, dtype=torch.bool)}); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("bad", [dict(window=5), dict(hidden=30, heads=4)])
def test_invalid_params_raise(bad, tmp_path):
    """Caught with the other bad params when they are loaded, before any module is built."""
    overrides = {f"model.{k}": v for k, v in {**dict(hidden=32, heads=4, window=4), **bad}.items()}
    with pytest.raises(config.ConfigError, match="model\\."):
        config.load(tmp_path / "params.yaml", overrides)


# ---- equivalence with HF ---------------------------------------------------------------------


@pytest.mark.parametrize("window", [4, 8, 16])
@pytest.mark.parametrize("B", [1, 3])
def test_matches_hf(window, B):
    """Outputs and gradients (input, all parameters) equal HF's, for lengths shorter than, equal to
    and not a multiple of the window, with variable lengths within the batch."""
    hf, nat = pair(params(window), seed=window + B)
    for L in sorted({2, 3, window - 1, window, window + 1, 2 * window + 3, 45}):
        x, mask = batch(B, L, seed=L)
        upstream = torch.randn(B, L, HIDDEN, generator=torch.Generator().manual_seed(L + 1))
        assert_same(run(hf, x, mask, upstream), run(nat, x, mask, upstream))


@pytest.mark.parametrize("block", [8, 16, 64])
def test_block_size_does_not_change_the_result(block):
    """Several blocks per clip, a partial last block, clips flattened next to each other."""
    hf, nat = pair(params(window=16), seed=3, block=block)
    x, mask = batch(3, 70, seed=1)
    upstream = torch.randn(3, 70, HIDDEN)
    assert_same(run(hf, x, mask, upstream), run(nat, x, mask, upstream))


def test_dense_reference_matches_hf():
    """Validates :func:`dense_reference`, which stands in for HF where HF cannot run."""
    for window in (4, 8):
        hf, nat = pair(params(window), seed=window)
        x, mask = batch(3, 21, seed=window)
        with torch.no_grad():
            torch.testing.assert_close(dense_reference(nat, x, mask), hf(x, mask), **TOL)


@pytest.mark.parametrize("B", [1, 3])
def test_window_2_matches_dense_reference(B):
    """HF's chunked kernel crashes for window = 2; native follows the same rule: |i − j| ≤ 1."""
    torch.manual_seed(0)
    nat = NativeLocalAttention(**params(window=2))
    perturb(nat)
    nat.eval()
    for L in (2, 3, 7, 20):
        x, mask = batch(B, L, seed=L)
        upstream = torch.randn(B, L, HIDDEN)
        nat.zero_grad(set_to_none=True)
        x1 = x.clone().requires_grad_(True)
        (dense_reference(nat, x1, mask) * upstream).sum().backward()
        ref = {n: q.grad.clone() for n, q in nat.named_parameters() if q.requires_grad}
        ref_out = dense_reference(nat, x, mask).detach()
        out, gx, grads = run(nat, x, mask, upstream)
        assert_same((ref_out, x1.grad, ref), (out, gx, grads))


def test_window_boundary_is_inclusive():
    """Token i sees j iff |i − j| ≤ window/2 (HF's one_sided_attn_window_size), not < ."""
    p = params(window=4, layers=1, dropout=0.0)
    hf, nat = pair(p, seed=1)
    x, mask = batch(1, 12)
    for m in (hf, nat):
        xg = x.clone().requires_grad_(True)
        m(xg, mask)[0, 6].sum().backward()
        seen = xg.grad[0].abs().sum(-1) > 0
        assert seen.nonzero().flatten().tolist() == [0, 4, 5, 6, 7, 8]


def test_padding_does_not_leak():
    """Changing padded tokens changes no real token's output (nor the [CLS])."""
    nat = NativeLocalAttention(**params(window=4)).eval()
    x, mask = batch(3, 19, seed=5)
    y = x.clone()
    y[~mask] = torch.randn(int((~mask).sum()), HIDDEN) * 100
    with torch.no_grad():
        a, b = nat(x, mask), nat(y, mask)
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=0)


def test_gradcheck_float64():
    """The hand-written backward passes (_Interleave, _Windows, _Finish) against finite differences."""
    nat = NativeLocalAttention(hidden=8, heads=2, window=4, layers=1, dropout=0.0, block=2).double().eval()
    perturb(nat)
    x, _ = batch(2, 9)
    x = x[..., :8].double().requires_grad_(True)
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    assert torch.autograd.gradcheck(lambda t: nat(t, mask), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


# ---- drop-in use ---------------------------------------------------------------------------


def test_drop_in_for_temporal_encoder():
    """Swapping the backbone of a TemporalEncoder keeps its output and its gradients (incl. a clip
    with no real frame)."""
    p = ModelParams(hidden=HIDDEN, heads=HEADS, window=4, layers=2, max_frames=30, backend="hf")
    torch.manual_seed(0)
    enc = build_encoder(p, 12).eval()
    perturb(enc.backbone)
    x = torch.randn(3, 30, 12)
    mask = torch.arange(30)[None] < torch.tensor([30, 17, 0])[:, None]
    ref = enc(x, mask)
    ref.sum().backward()
    g_ref = enc.proj.weight.grad.clone()
    enc.zero_grad()
    enc.backbone = NativeLocalAttention.from_hf(enc.backbone)  # params read back from its config
    out = enc(x, mask)
    out.sum().backward()
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(enc.proj.weight.grad, g_ref, **TOL)


def test_train_mode_dropout():
    """Dropout is active in training (stochastic), off in eval (deterministic), grads finite."""
    nat = NativeLocalAttention(**params(window=4, dropout=0.5))
    x, mask = batch(2, 20)
    a, b = nat(x, mask), nat(x, mask)
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in nat.parameters() if q.requires_grad)
    nat.eval()
    torch.testing.assert_close(nat(x, mask), nat(x, mask), atol=0, rtol=0)


def test_memory_is_linear_in_length():
    """No tensor of the forward or backward pass grows like L² (the layout, mask and windows are
    O(L)). Checked by recording every tensor the dispatcher produces."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    nat = NativeLocalAttention(hidden=16, heads=2, window=8, layers=1, dropout=0.0)
    L = 2048
    x = torch.randn(2, L, 16, requires_grad=True)
    with Largest():
        nat(x, torch.ones(2, L, dtype=torch.bool)).sum().backward()
    assert Largest.numel < 2 * L * 64 * 2  # ≈ B·L·4D (FFN activations); L² would be 4.2M per clip


def test_layout_shapes():
    lay = AttentionLayout(torch.ones(3, 70, dtype=torch.bool), one_sided=8, block=32)
    assert (lay.C, lay.n, lay.K) == (3, 9, 32 + 16 + 2)
    assert lay.block_mask.shape == (9, 1, 32, 50)
    with pytest.raises(ValueError, match="block"):
        AttentionLayout(torch.ones(1, 8, dtype=torch.bool), one_sided=8, block=4)


def test_flex_attention_forward_matches_sdpa():
    """FlexAttention path (meant for CUDA): forward-only on CPU in PyTorch, checked here without grad."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    assert flex is not None
    p = params(window=4, dropout=0.0)
    torch.manual_seed(0)
    sdpa = NativeLocalAttention(**p).eval()
    perturb(sdpa)
    fx = NativeLocalAttention(**p, attn_impl="flex").eval()
    fx.load_state_dict(sdpa.state_dict())
    x, mask = batch(3, 33, seed=2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fx(x, mask)
        except Exception as exc:  # pragma: no cover - depends on the PyTorch build
            pytest.skip(f"FlexAttention unavailable on CPU here: {exc}")
        torch.testing.assert_close(out, sdpa(x, mask), **TOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_matches_hf_on_cuda():  # pragma: no cover - CPU CI
    hf, nat = pair(params(window=8), seed=0)
    hf, nat = hf.cuda(), nat.cuda()
    x, mask = batch(3, 45)
    up = torch.randn(3, 45, HIDDEN)
    a = run(hf, x.cuda(), mask.cuda(), up.cuda())
    b = run(nat, x.cuda(), mask.cuda(), up.cuda())
    assert_same(a, b)


def test_bad_attn_impl():
    with pytest.raises(ValueError, match="attn_impl"):
        NativeLocalAttention(**params(window=4), attn_impl="xla")  # type: ignore[arg-type]


def test_matches_hf_float_inputs_mask_as_long():
    """The mask may arrive as 0/1 integers, like HF's attention_mask."""
    hf, nat = pair(params(window=4), seed=2)
    x, mask = batch(3, 10)
    with torch.no_grad():
        torch.testing.assert_close(nat(x, mask.long()), hf(x, mask), **TOL)


def test_backend_param_gives_the_same_encoder():
    """``model.backend`` native and hf build equal weights for a seed and give equal outputs."""
    x = torch.randn(2, 16, 12)
    mask = torch.arange(16)[None] < torch.tensor([16, 9])[:, None]
    outs = {}
    for backend in ("native", "hf"):
        torch.manual_seed(0)
        enc = build_encoder(ModelParams(hidden=HIDDEN, heads=HEADS, window=4, layers=2, backend=backend), 12).eval()
        assert isinstance(enc.backbone, NativeLocalAttention) == (backend == "native")
        outs[backend] = enc(x, mask)
    torch.testing.assert_close(outs["native"], outs["hf"], **TOL)
