"""Attention rollout: the recomputed attention is the kernels' own, rollout on constructed cases, both backends."""

import numpy as np
import pytest
import torch

from cmmvt.config import ModelParams
from cmmvt.eval import explain
from cmmvt.models import build_encoder, build_model
from cmmvt.models.encoder import LocalAttention
from cmmvt.models.native import AttentionLayout, NativeLocalAttention


def test_local_attention_probabilities_reproduce_the_native_kernel():
    """P @ V with the recomputed per-head probabilities equals the chunked-SDPA layer's output (the Longformer band,
    [CLS] column and global row, padding)."""
    torch.manual_seed(0)
    nat = NativeLocalAttention(hidden=32, heads=4, window=4, layers=1, dropout=0.0).eval()
    sa = nat.longformer.encoder.layer[0].attention.self
    h = torch.randn(2, 11, 32)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        ref = sa(h, AttentionLayout(mask, 2))  # (B, L, D)
        probs = explain.local_attention(sa, h, mask, 2, per_head=True)  # (B, H, L, L)
        split = lambda x: x.view(2, 11, 4, 8).transpose(1, 2)  # noqa: E731
        out = probs @ split(sa.value(h))  # (B, H, L, d)
        out[:, :, 0] = (probs[:, :, :1] @ split(sa.value_global(h)))[:, :, 0]  # [CLS] reads the global values
        out = out.transpose(1, 2).reshape(2, 11, 32)
    np.testing.assert_allclose(out[mask], ref[mask], atol=1e-5)
    assert torch.allclose(probs.sum(-1)[mask[:, None].expand(-1, 4, -1)], torch.tensor(1.0))
    assert (probs[1, :, :, 7:] == 0).all() and (probs[:, :, 5, :2].sum(-1) > 0).all()  # padding never, [CLS] always
    assert (probs[:, :, 5, 8:] == 0).all() and (probs[:, :, 5, 1:3] == 0).all()  # outside the ±2 band: nothing


def test_both_backends_give_the_same_maps():
    torch.manual_seed(0)
    p = ModelParams(hidden=32, heads=4, window=4, layers=2, dropout=0.0, crop_frames=8, backend="hf")
    hf = build_encoder(p, 16).eval()
    native = build_encoder(p.model_copy(update={"backend": "native"}), 16).eval()
    native.load_state_dict(hf.state_dict())
    assert isinstance(hf.backbone, LocalAttention)
    x, mask = torch.randn(3, 9, 16), torch.ones(3, 9, dtype=torch.bool)
    mask[2, 5:] = False
    with torch.no_grad():
        a, tokens = explain.attention_maps(hf, x, mask)
        b, _ = explain.attention_maps(native, x, mask)
    assert len(a) == 2 and tokens.shape == (3, 10)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-5)


def test_rollout_follows_the_attention():
    L = 5  # [CLS] + 4 frames
    tokens = torch.ones(1, L, dtype=torch.bool)
    a = torch.eye(L)[None].clone()
    a[0, 0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])  # [CLS] reads frame 2 (index 2 = frame 1) only
    rel = explain.rollout([a], tokens, "cls")
    assert rel.argmax().item() == 1 and rel[0, 1] == pytest.approx(1.0)
    uniform = torch.full((1, L, L), 1.0 / L)
    rel = explain.rollout([uniform, uniform], tokens, "both")
    np.testing.assert_allclose(rel, 0.25, atol=1e-6)
    padded = tokens.clone()
    padded[0, 4] = False
    assert explain.rollout([uniform], padded, "mean")[0, 3] == 0  # a padded frame gets no relevance


@pytest.mark.parametrize("model", [{"attention": "global", "fusion": "early"}, {"attention": "local", "fusion": "late"}])
def test_relevance_per_encoder(model):
    torch.manual_seed(0)
    p = ModelParams(hidden=16, heads=2, layers=2, window=2, crop_frames=8, **model)
    net = build_model(p, {"video": 6, "audio": 6}, 3)
    batch = {"video": torch.randn(2, 8, 6), "audio": torch.randn(2, 8, 6),
             "video_mask": torch.ones(2, 8, dtype=torch.bool), "audio_mask": torch.ones(2, 8, dtype=torch.bool)}
    batch["video_mask"][1, 6:] = batch["audio_mask"][1, 6:] = False
    rel = explain.relevance(net, batch)
    assert set(rel) == ({"av"} if model["fusion"] == "early" else {"video", "audio"})
    for r in rel.values():
        assert r.shape == (2, 8) and np.allclose(r.sum(1), 1) and (r[1, 6:] == 0).all()
