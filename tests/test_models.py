"""Models: shapes and gradients for every configuration, masking, locality, determinism."""

import itertools

import pytest
import torch

from cmmvt import config
from cmmvt.config import ModelParams
from cmmvt.models import Classifier, build_encoder, build_model
from cmmvt.models.meanpool import MeanPoolEncoder

DIMS = {"video": 24, "audio": 12}
C = 5
TINY = dict(hidden=16, heads=2, layers=2, max_frames=16, window=4)


def _combos():
    """encoder × attention × modalities × fusion, minus duplicates (meanpool has no attention,
    a single modality no fusion)."""
    seen = []
    for enc, att, mod, fus in itertools.product(
        ["longformer", "meanpool"], ["local", "global"], ["video", "audio", "av"], ["late", "early"]
    ):
        key = (enc, att if enc == "longformer" else "-", mod, fus if mod == "av" else "-")
        if key not in seen:
            seen.append(key)
            yield pytest.param(enc, att, mod, fus, id="-".join(key))


COMBOS = list(_combos())


def _params(enc="longformer", att="local", mod="av", fus="late", **kw) -> ModelParams:
    return ModelParams(encoder=enc, attention=att, modalities=mod, fusion=fus, **{**TINY, **kw})


def _batch(T=16, lengths=(16, 11, 4, 16), no_audio=(1,), seed=0) -> dict[str, torch.Tensor]:
    """Variable lengths (padding at the end) and clips without an audio stream."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    audio_mask = mask.clone()
    audio_mask[list(no_audio)] = False
    return {
        "video": torch.randn(B, T, DIMS["video"], generator=g),
        "video_mask": mask,
        "audio": torch.randn(B, T, DIMS["audio"], generator=g),
        "audio_mask": audio_mask,
    }


@pytest.mark.parametrize("enc,att,mod,fus", COMBOS)
def test_forward_shapes_and_every_parameter_gets_a_gradient(enc, att, mod, fus):
    torch.manual_seed(0)
    model = build_model(_params(enc, att, mod, fus), DIMS, C)
    batch = _batch(T=TINY["max_frames"])
    logits = model(batch)
    assert logits.shape == (4, C)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    emb = model.embed(batch)
    assert list(emb) == list(model.modalities)
    assert all(e.shape == (4, TINY["hidden"]) and torch.isfinite(e).all() for e in emb.values())


@pytest.mark.parametrize("pool", ["cls", "both"])
@pytest.mark.parametrize("norm", [False, True], ids=["raw", "input_norm"])
@pytest.mark.parametrize("enc,att,mod,fus", COMBOS)
def test_padding_and_missing_audio_do_not_change_logits(enc, att, mod, fus, norm, pool):
    torch.manual_seed(0)
    model = build_model(_params(enc, att, mod, fus, input_norm=norm, pool=pool), DIMS, C).eval()
    batch = _batch(T=12, lengths=(12, 9, 3, 7), no_audio=(1,))
    with torch.no_grad():
        ref = model(batch)
        for fill in (torch.randn, lambda *s: torch.full(s, float("nan"))):
            noisy = {k: v.clone() for k, v in batch.items()}
            for m in ("video", "audio"):
                pad = ~noisy[f"{m}_mask"]  # padded steps and the whole audio of clip 1
                noisy[m][pad] = 100 * fill(int(pad.sum()), noisy[m].shape[-1])
            assert torch.allclose(model(noisy), ref, atol=1e-6), "masked features leaked"


@pytest.mark.parametrize("fus", ["late", "early"])
def test_input_norm_makes_logits_blind_to_each_rows_gain_and_offset(fus):
    """``model.input_norm``: a LayerNorm per row, so a row's scale and offset (loudness, exposure, a setting's
    range) cannot reach the encoders; without it they do. ``model.input_dropout`` acts only while training."""
    batch = _batch()
    gain = torch.rand(*batch["video"].shape[:2], 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    moved = {**batch, "video": batch["video"] * gain - 3.0, "audio": batch["audio"] * 0.2 + 1.0}
    torch.manual_seed(0)
    plain = build_model(_params(fus=fus, dropout=0.0), DIMS, C).eval()
    torch.manual_seed(0)
    model = build_model(_params(fus=fus, dropout=0.0, input_norm=True, input_dropout=0.5), DIMS, C).eval()
    with torch.no_grad():  # what the head reads (the logits of an untrained head are all ~0)
        assert (model.represent(moved) - model.represent(batch)).abs().max() < 1e-4  # up to LayerNorm's eps
        assert (plain.represent(moved) - plain.represent(batch)).abs().max() > 1e-3
        assert torch.equal(model(batch), model(batch))  # eval: no dropout
        model.train()
        assert not torch.allclose(model(batch), model(batch))  # training: inputs dropped out


@pytest.mark.parametrize("att", ["local", "global"])
def test_mean_pool_is_the_mean_of_the_real_frames_outputs(att):
    """``model.pool: mean``: the clip embedding averages the encoder's outputs at real frames only; a clip
    without frames falls back to its [CLS] output. ``both``: the average of that and the [CLS] output."""
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [False] * 6])
    out = {}
    for pool in ("cls", "mean", "both"):
        torch.manual_seed(0)  # the same weights for every pool
        enc = build_encoder(_params(att=att, layers=1, dropout=0.0, pool=pool), 8).eval()
        with torch.no_grad():
            out[pool], tokens = enc(x, mask, return_tokens=True)  # (3, hidden), (3, 6, hidden)
    mean = out["mean"]
    assert torch.allclose(mean[0], tokens[0].mean(0), atol=1e-6)
    assert torch.allclose(mean[1], tokens[1, :4].mean(0), atol=1e-6)
    assert not torch.allclose(mean[1], tokens[1].mean(0), atol=1e-4)  # the padded frames are left out
    assert torch.allclose(mean[2], out["cls"][2], atol=1e-6)  # no frames: the [CLS] output
    assert not torch.allclose(mean[:2], out["cls"][:2], atol=1e-4)
    assert torch.allclose(out["both"], (mean + out["cls"]) / 2, atol=1e-6)


def test_missing_audio_uses_the_learned_missing_vector():
    torch.manual_seed(0)
    model = build_model(_params(mod="av", fus="late"), DIMS, C).eval()
    batch = _batch(no_audio=(1,))
    with torch.no_grad():
        emb = model.embed(batch)
        assert torch.equal(emb["audio"][1], model.missing["audio"])
        assert not torch.equal(emb["audio"][0], model.missing["audio"])
        z = torch.cat([emb["video"], emb["audio"]], -1)
        assert torch.allclose(model(batch), model.head(z))


@pytest.mark.parametrize("att", ["local", "global"])
def test_backbone_ignores_padded_tokens(att):
    """The attention masks themselves (not only input zeroing) hide padded tokens."""
    torch.manual_seed(0)
    enc = build_encoder(_params(att=att), 8).eval()
    x = torch.randn(2, 13, 16)  # (B, L, D) already-embedded tokens, [CLS] first
    mask = torch.arange(13)[None] < torch.tensor([13, 6])[:, None]
    with torch.no_grad():
        ref = enc.backbone(x, mask)
        x2 = x.clone()
        x2[~mask] = 100 * torch.randn(int((~mask).sum()), 16)
        out = enc.backbone(x2, mask)
    assert torch.allclose(out[mask], ref[mask], atol=1e-6)


@pytest.mark.parametrize("j", [0, 7, 15])
def test_one_local_layer_sees_only_its_window_and_cls_sees_all(j):
    """One layer, window 4: frame i's output depends on frame j only when |i - j| <= 2; a global
    layer mixes everything; [CLS] (global in both) sees every frame."""
    T, half = 16, TINY["window"] // 2
    x = torch.randn(1, T, 8)
    mask = torch.ones(1, T, dtype=torch.bool)
    x2 = x.clone()
    x2[0, j] += 1.0
    for att in ("local", "global"):
        torch.manual_seed(0)
        enc = build_encoder(_params(att=att, layers=1, dropout=0.0), 8).eval()
        with torch.no_grad():
            cls1, tok1 = enc(x, mask, return_tokens=True)
            cls2, tok2 = enc(x2, mask, return_tokens=True)
        change = (tok2 - tok1).abs().amax(-1)[0]  # (T,)
        assert (cls2 - cls1).abs().max() > 1e-4, f"{att}: [CLS] missed frame {j}"
        for i in range(T):
            if att == "global" or abs(i - j) <= half:
                assert change[i] > 1e-4, f"{att}: frame {i} did not see frame {j}"
            else:
                assert change[i] <= 1e-6, f"local: frame {i} saw frame {j} outside the window"


@pytest.mark.parametrize("att", ["local", "global"])
def test_no_hidden_position_signal(att):
    """With our position embedding zeroed and identical frames, outputs depend on position only
    through the window clipped at the clip's ends: mirror-symmetric, equal in the interior. So
    Longformer's own position / token-type embeddings contribute nothing."""
    torch.manual_seed(0)
    T, half = 10, TINY["window"] // 2
    enc = build_encoder(_params(att=att, dropout=0.0), 8).eval()
    with torch.no_grad():
        enc.pos.zero_()
        _, tok = enc(torch.randn(1, 1, 8).expand(1, T, 8), torch.ones(1, T, dtype=torch.bool), True)
    assert torch.allclose(tok, tok.flip(1), atol=1e-5)
    inner = tok[:, half * 2 : T - half * 2]  # frames whose receptive field (2 layers) is unclipped
    assert torch.allclose(inner, inner[:, :1].expand_as(inner), atol=1e-5)


def test_longformer_tables_stay_zero_and_frozen_under_training():
    torch.manual_seed(0)
    model = build_model(_params(att="local"), DIMS, C)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model(_batch()).sum().backward()
    opt.step()
    tables = [
        (name, param)
        for name, param in model.named_parameters()
        if "longformer.embeddings" in name and "LayerNorm" not in name
    ]
    assert len(tables) == 2 * 3  # word / position / token-type, per modality
    for name, param in tables:
        assert not param.requires_grad and param.abs().sum() == 0, name


def test_odd_window_names_the_key(tmp_path):
    # caught with the other bad params, before any model is built (ModelParams itself rejects it too)
    with pytest.raises(config.ConfigError, match=r"model\.window"):
        config.load(tmp_path / "params.yaml", {"model.attention": "local", "model.window": 5})
    with pytest.raises(ValueError, match="window"):
        _params(att="local", window=5)
    build_model(_params(att="global", window=5), DIMS, C)  # unused there
    build_model(_params(enc="meanpool", window=5), DIMS, C)


def test_bad_dims_and_too_many_frames(tmp_path):
    with pytest.raises(config.ConfigError, match=r"model\.heads"):  # caught in the params now (ModelParams too)
        config.load(tmp_path / "params.yaml", {"model.hidden": 18, "model.heads": 4})
    with pytest.raises(ValueError, match="heads"):
        _params(hidden=18, heads=4)
    with pytest.raises(ValueError, match="audio"):
        build_model(_params(mod="av"), {"video": 24}, C)
    model = build_model(_params(mod="video", max_frames=8), DIMS, C)
    with pytest.raises(ValueError, match=r"model\.max_frames"):
        model(_batch(T=12, lengths=(12, 12, 12, 12)))


@pytest.mark.parametrize("att,fus", [("local", "late"), ("global", "early")])
def test_same_seed_same_logits(att, fus):
    batch = _batch()

    def run():
        torch.manual_seed(123)
        return build_model(_params(att=att, fus=fus), DIMS, C).eval()(batch)

    with torch.no_grad():
        assert torch.equal(run(), run())


def test_encoders_are_keyed_by_modality_and_swappable():
    late = build_model(_params(fus="late"), DIMS, C)
    early = build_model(_params(fus="early"), DIMS, C)
    assert isinstance(late, Classifier)
    assert sorted(late.encoders) == ["audio", "video"] and list(early.encoders) == ["av"]
    pretrained = build_encoder(_params(), DIMS["audio"])
    late.encoders["audio"].load_state_dict(pretrained.state_dict())
    meanpool = build_model(_params(enc="meanpool"), DIMS, C)
    assert all(isinstance(e, MeanPoolEncoder) for e in meanpool.encoders.values())
