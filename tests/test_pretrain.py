"""Cross-modal pretraining on a tiny hand-made cache: losses fall, retrieval is measured, train loads it."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cmmvt import config
from cmmvt.data import manifest
from cmmvt.train.dataset import splits
from cmmvt.train import loop
from cmmvt.models import build_model
from cmmvt.selfsup import objectives
from cmmvt.selfsup import pretrain as pt
from cmmvt.selfsup import prototypes as protos


def params(root, objective, epochs, **extra):
    return config.validate({
        "seed": 0,
        "data": {"manifest": str(root / "manifest.csv")},
        "extract": {"out": str(root / "features")},
        "prototypes": {"k_video": 2, "k_audio": 3},
        "pretrain": {"objective": objective, "epochs": epochs, "batch_size": 4, "lr": 3e-3, **extra},
        "model": {"hidden": 32, "heads": 2, "layers": 1, "crop_frames": 8, "window": 4, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 4, "min_steps": 0},
    })


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_cache):
    root = make_cache(tmp_path_factory.mktemp("pre"))
    result = protos.fit(root / "features", k_video=2, k_audio=3, seed=0, k_rows=6)
    protos.write(root / "prototypes.h5", result)
    return root


@pytest.mark.parametrize("objective", ["xdc", "infonce", "protonce", "sync", "mask", "order", "combined"])
def test_loss_decreases_and_missing_audio_is_tolerated(tiny, objective):
    first = pt.pretrain(params(tiny, objective, 1), tiny / f"{objective}1.pt", tiny / "prototypes.h5", live_dir=None)
    later = pt.pretrain(params(tiny, objective, 12), tiny / f"{objective}.pt", tiny / "prototypes.h5", live_dir=None)
    assert later.final_loss < first.final_loss
    assert first.clips == 9  # the 9 train clips (test held out), the one without audio included (masked)


def test_test_split_is_held_out_unless_asked_for(tiny):
    every = pt.pretrain(params(tiny, "infonce", 1, splits=["train", "val", "test"]), tiny / "all.pt",
                        tiny / "prototypes.h5", live_dir=None)
    assert every.clips == 12
    with pytest.raises(ValueError, match="pretrain.splits"):
        pt.pretrain(params(tiny, "infonce", 1, splits=["val"]), tiny / "none.pt", tiny / "prototypes.h5", live_dir=None)


def test_sync_shift_longer_than_the_crops_allow_is_refused(tiny):
    with pytest.raises(ValueError, match=r"pretrain.sync_shift = 1.0 s is 4 rows.*12 rows, model.crop_frames = 8"):
        pt.pretrain(params(tiny, "sync", 1, sync_shift=1.0), tiny / "s.pt", tiny / "prototypes.h5", live_dir=None)


def test_xdc_recluster_runs(tiny):
    r = pt.pretrain(params(tiny, "xdc", 3, recluster_every=1), tiny / "re.pt", tiny / "prototypes.h5", live_dir=None)
    assert r.epochs == 3 and r.final_loss == r.final_loss  # not NaN


def test_retrieval_recall_on_hand_made_embeddings():
    q = torch.eye(4).numpy()
    g = q[[0, 1, 3, 2]]  # rows 2 and 3 swapped: recall@1 = 0.5, recall@2 = 1
    assert pt.retrieval_recall(q, g, ks=(1, 2)) == {"recall@1": 0.5, "recall@2": 1.0}


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_train_loads_every_pretrained_encoder_tensor(tiny, fusion):
    p = params(tiny, "combined", 2)
    p.model.fusion = fusion
    pt.pretrain(p, tiny / "enc.pt", tiny / "prototypes.h5", live_dir=tiny / "live")
    assert (tiny / "live/metrics.json").exists()
    saved = torch.load(tiny / "enc.pt", weights_only=True)["state_dict"]
    model = build_model(p.model, {"video": 12, "audio": 12}, 3)
    own = model.state_dict()
    assert set(saved) == {k for k in own if not k.startswith("head.")}  # the whole graph but the head
    assert any(not torch.equal(own[k], v) for k, v in saved.items())
    loop._init(model, p, tiny / "enc.pt")  # train.init: auto → pretrained, since the objective is not none
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items())
    probe = p.model_copy(update={"train": p.train.model_copy(update={"transfer": "probe"})})
    loop._init(model, probe, tiny / "enc.pt")
    assert {n.split(".")[0] for n, q in model.named_parameters() if q.requires_grad} == {"head"}


def test_pretrained_init_without_pretraining_is_refused(tiny):
    p = params(tiny, "none", 0)
    p.train.init = "pretrained"
    with pytest.raises(ValueError, match="pretrain.objective = 'none'"):
        loop._init(build_model(p.model, {"video": 12, "audio": 12}, 3), p, tiny / "enc.pt")


def test_unlabelled_clips_reach_pretraining_only(tmp_path, make_cache):
    root = make_cache(tmp_path)
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    pool = df["video_id"].isin(["c0_1", "c1_1", "c2_1"])  # three train clips become the unlabelled pool
    df.loc[pool, ["label", "split"]] = ["", "unlabelled"]
    df.to_csv(root / "manifest.csv", index=False)
    protos.write(root / "prototypes.h5", protos.fit(root / "features", k_video=2, k_audio=3, seed=0, k_rows=6))
    sp, names = splits(manifest.read(root / "manifest.csv"), root / "features", ("video", "audio"))
    assert names == ["left", "right", "up"]
    assert sorted(sp["unlabelled"].ids) == ["c0_1", "c1_1", "c2_1"] and sp["unlabelled"].labels == [-1] * 3
    assert not {"c0_1", "c1_1", "c2_1"} & set(sp["train"].ids + sp["val"].ids + sp["test"].ids)
    p = params(root, "infonce", 1)
    assert pt.pretrain(p, root / "enc.pt", root / "prototypes.h5", live_dir=None).clips == 9  # 6 train + 3 pool
    labelled_only = params(root, "infonce", 1, splits=["train"])
    assert pt.pretrain(labelled_only, root / "enc.pt", root / "prototypes.h5", live_dir=None).clips == 6
    assert loop.train(p, root / "model.pt", live_dir=None, pretrained=root / "enc.pt").train_clips == 6


def test_mask_spans_respect_lengths_padding_and_hide_one_modality():
    g = torch.Generator().manual_seed(0)
    T = 16
    lengths = torch.tensor([16, 9, 3, 16])
    real = torch.arange(T)[None] < lengths[:, None]  # (B, T): real rows first, padding after
    masks = {"video": real, "audio": real & torch.tensor([True, True, True, False])[:, None]}  # clip 3: no audio
    for _ in range(50):
        hide = objectives.mask_spans(masks, ratio=0.5, span=3, generator=g)
        assert not (hide["video"] & hide["audio"]).any(1).any()  # one modality per clip
        assert (hide["video"] | hide["audio"]).any(1).all()  # every clip hides something
        assert not (hide["video"] & ~masks["video"]).any() and not (hide["audio"] & ~masks["audio"]).any()
        assert not hide["audio"][3].any()  # a clip without audio hides its video
        assert hide["video"][0].sum() + hide["audio"][0].sum() <= 9  # at most 3 spans of 3 rows in 16
    shares = [objectives.mask_spans(masks, 0.5, 3, g) for _ in range(200)]
    picked_video = np.mean([float(h["video"][0].any()) for h in shares])
    assert 0.35 < picked_video < 0.65  # both modalities get hidden, about equally often


def test_hidden_rows_never_reach_the_encoder_as_themselves():
    """The encoder's outputs do not change whatever the hidden rows held; they do when a shown row changes."""
    torch.manual_seed(0)
    p = params(Path("."), "mask", 1).model
    for fusion in ("early", "late"):
        model = build_model(p.model_copy(update={"fusion": fusion}), {"video": 12, "audio": 12}, 3).eval()
        B, T = 2, 8
        batch = {"video": torch.randn(B, T, 12), "audio": torch.randn(B, T, 12),
                 "video_mask": torch.ones(B, T, dtype=torch.bool), "audio_mask": torch.ones(B, T, dtype=torch.bool)}
        rows = torch.zeros(B, T, dtype=torch.bool)
        rows[:, 2:5] = True
        token = torch.randn(12)
        hide = {"video": (rows, token)}
        out = model.tokens(batch, hide)
        assert out["video"].shape == (B, T, p.hidden) and out["audio"].shape == (B, T, p.hidden)
        changed = dict(batch, video=torch.where(rows[..., None], torch.randn(B, T, 12) * 100, batch["video"]))
        again = model.tokens(changed, hide)
        assert all(torch.allclose(out[m], again[m]) for m in out)
        shown = dict(batch, video=batch["video"].clone())
        shown["video"][:, 6] += 1.0  # a row that is not hidden
        assert not torch.allclose(model.tokens(shown, hide)["video"], out["video"])


def test_row_targets_are_per_row_nearest_centroids(tiny):
    pro = protos.read(tiny / "prototypes.h5")
    c = pro["video"].row_centroids  # (k_rows, 12)
    assert c.shape == (6, 12)
    rows = np.stack([c[[2, 0, 5]] + 1e-3, c[[1, 1, 4]]])  # (2, 3, 12)
    assert pro["video"].row_targets(rows).tolist() == [[2, 0, 5], [1, 1, 4]]
    old = protos.Prototypes("video", c, [], np.zeros(0, np.int64), 0.0, 2)  # a file from before row clusters
    with pytest.raises(ValueError, match="no row clusters.*dvc repro prototypes"):
        old.row_targets(rows)


def test_shuffled_steps_move_both_modalities_together_within_each_clip():
    g = torch.Generator().manual_seed(0)
    B, T = 3, 8
    lengths = torch.tensor([8, 5, 1])
    real = torch.arange(T)[None] < lengths[:, None]
    batch = {"video": torch.arange(T, dtype=torch.float32).repeat(B, 1)[..., None].expand(B, T, 2).clone(),
             "audio": -torch.arange(T, dtype=torch.float32).repeat(B, 1)[..., None].clone(),
             "video_mask": real, "audio_mask": real}
    source, drawn = objectives.shuffle_steps({"video": real, "audio": real}, ratio=0.5, generator=g)
    assert drawn.sum(1).tolist() == [4, 2, 0]  # round(0.5 · L), at least 2, none in a one-step clip
    assert not (drawn & ~real).any()  # padding never moves
    for b in range(B):
        assert sorted(source[b].tolist()) == list(range(T))  # a permutation
        assert (source[b][~drawn[b]] == torch.arange(T)[~drawn[b]]).all()  # only drawn steps move
    moved = objectives._gather_steps(batch, source)
    assert torch.equal(moved["video"][..., 0], source.float()) and torch.equal(moved["audio"][..., 0], -source.float())
    assert torch.equal(moved["video_mask"], real)  # real steps stay among real steps


def test_sync_reports_its_held_out_accuracy_and_warns_at_chance(tiny):
    r = pt.pretrain(params(tiny, "sync", 2, splits=["train"]), tiny / "s.pt", tiny / "prototypes.h5", live_dir=None)
    assert 0 <= r.metrics["sync/accuracy"] <= 1
    assert torch.load(tiny / "s.pt", weights_only=True)["metrics"]["sync/accuracy"] == r.metrics["sync/accuracy"]
    low = pt.PretrainResult("sync", 30, 0.69, 1500, {"sync/accuracy": 0.52})
    assert "warning" in pt.describe(low) and "0.52" in pt.describe(low)
    high = pt.PretrainResult("sync", 30, 0.10, 1500, {"sync/accuracy": 0.97})
    assert "warning" not in pt.describe(high)
