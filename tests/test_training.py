"""Training and evaluation on a tiny hand-made cache (no extraction): overfit, checkpoint, reports."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cmmvt import config
from cmmvt import checkpoints
from cmmvt.eval import inference
from cmmvt.train import dataset, loop
from cmmvt.eval import evaluate

def tiny_params(root, **model):
    return config.validate({
        "seed": 0,
        "data": {"manifest": str(root / "manifest.csv")},
        "extract": {"out": str(root / "features")},
        "pretrain": {"objective": "none"},
        "model": {"hidden": 32, "heads": 2, "layers": 2, "crop_frames": 8, "window": 4, "dropout": 0.0} | model,
        "train": {"epochs": 60, "min_steps": 0, "batch_size": 4, "lr": 3e-3, "warmup_epochs": 1, "patience": 100,
                  "label_smoothing": 0.0},
    })


@pytest.mark.parametrize("model", [{"modalities": "video"}, {"modalities": "av", "fusion": "late"}])
def test_overfits_tiny_cache_and_reloads_checkpoint(tmp_path, model, make_cache, classes):
    make_cache(tmp_path)
    p = tiny_params(tmp_path, **model)
    result = loop.train(p, tmp_path / "model.pt", live_dir=tmp_path / "live")
    assert result.best_val_top1 == 1.0  # no val split: validated on train → must fit all of it
    net, ckpt = checkpoints.load_checkpoint(tmp_path / "model.pt")
    assert ckpt["labels"] == classes and ckpt["features"]["video"]["backbone"] == "none"
    sp, _ = dataset.splits(pd.read_csv(tmp_path / "manifest.csv"), tmp_path / "features", net.modalities)
    ds = dataset.ClipDataset(tmp_path / "features", sp["train"].ids, sp["train"].labels, net.modalities, 8)
    logits = inference.predict(net, ds)
    assert (logits.argmax(1) == np.array(sp["train"].labels)).all()
    assert (tmp_path / "live/metrics.json").exists()


def test_training_is_deterministic(tmp_path, make_cache):
    make_cache(tmp_path)
    p = tiny_params(tmp_path, modalities="av")
    p.train.epochs = 3
    loop.train(p, tmp_path / "a.pt", live_dir=None)
    loop.train(p, tmp_path / "b.pt", live_dir=None)
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_audio_is_masked_not_zero(tmp_path, make_cache):
    make_cache(tmp_path)
    ds = dataset.ClipDataset(tmp_path / "features", ["c2_0", "c0_0"], [2, 0], ("video", "audio"), frames=8)
    assert not ds[0]["audio_mask"].any() and ds[0]["video_mask"].all()
    assert ds[1]["audio_mask"].all()


def test_views_and_labels_per_class():
    assert dataset.view_starts(40, 16, 3) == [0, 12, 24]
    assert dataset.view_starts(10, 16, 3) == [0]  # fits: the whole clip, one view
    assert dataset.view_starts(40, 16) == [0, 12, 24]  # default: the fewest views that cover the clip
    assert dataset.view_starts(40, 16, 1) == [12]  # one view of a longer clip: the centred one
    s = dataset.Split([f"x{i}" for i in range(20)], [i % 2 for i in range(20)])
    one, three = (dataset.per_class_subset(s, n, seed=0) for n in (1, 3))
    assert sorted(one.labels) == [0, 1] and sorted(three.labels) == [0, 0, 0, 1, 1, 1]
    assert set(one.ids) <= set(three.ids)  # nested: more labels add clips, never redraw
    assert one == dataset.per_class_subset(s, 1, seed=0)
    assert dataset.per_class_subset(s, 1, seed=1) != one  # each seed draws its own labelled clips
    assert dataset.per_class_subset(s, None, seed=0) == s


def test_evaluate_writes_reports(tmp_path, make_cache, classes):
    make_cache(tmp_path)
    p = tiny_params(tmp_path, modalities="av")
    p.train.epochs = 30
    loop.train(p, tmp_path / "model.pt", live_dir=None)
    m = evaluate.evaluate(p, tmp_path / "model.pt", tmp_path / "eval")
    saved = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert saved == m and set(m) >= {"top1", "top5", "mean_class_accuracy", "macro_f1"}
    per_class = pd.read_csv(tmp_path / "eval/per_class.csv")
    assert per_class["class"].tolist() == classes
    preds = pd.read_csv(tmp_path / "eval/predictions.csv")
    assert set(preds.columns) == {"video_id", "actual", "predicted"} and len(preds) == m["clips"] == 3
    # the reports agree with each other: top-1 and per-class accuracy from the predictions written beside them
    assert m["top1"] == pytest.approx(float((preds["actual"] == preds["predicted"]).mean()))
    for row in per_class.itertuples():
        mine = preds[preds["actual"] == row[1]]
        assert row.support == len(mine) and row.accuracy == pytest.approx((mine["predicted"] == row[1]).mean())
    assert m["top1"] == 1.0  # the classes are separable (video order + audio mean): 30 epochs learn them
    assert (tmp_path / "eval/confusion.png").stat().st_size > 1000


def test_cli_train_writes_only_where_it_is_told(tmp_path, make_cache, monkeypatch):
    """`cmmvt train --out X --reports R` writes X, its resolved params beside it and the train stage's logs under R:
    nothing in the working directory (the same files as the stage, moved by the flags: tests/test_stages.py)."""
    import yaml
    from typer.testing import CliRunner

    from cmmvt.cli import app

    make_cache(tmp_path / "data")
    p = tiny_params(tmp_path / "data").model_dump()
    p["train"]["epochs"] = 2
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path / "work")
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "out" / "m.pt"), "--reports", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["params.yaml"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.params.yaml", "m.pt"]
    assert (tmp_path / "r" / "train" / "metrics.json").is_file()


def _pretrained(root, p):
    """Encoders to start from: the untrained graph of ``p`` saved as the pretrain stage would."""
    from cmmvt.models import build_model
    from cmmvt.selfsup import pretrain as pt
    from cmmvt.selfsup.objectives import PretrainHeads

    torch.manual_seed(1)
    model = build_model(p.model.model_copy(update={"modalities": "av"}), {"video": 12, "audio": 12}, 1)
    heads = PretrainHeads(p.model.hidden, model.head_in, {"video": 2, "audio": 2}, {"video": 2, "audio": 2},
                          {"video": 12, "audio": 12}, p.model.crop_frames)
    pt.save(root / "enc.pt", model, heads, p, {"video": 12, "audio": 12}, {})
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


@pytest.mark.parametrize("transfer", ["lp_ft", "probe", "finetune"])
def test_transfer_trains_the_head_first_then_everything(tmp_path, make_cache, monkeypatch, transfer):
    """Every optimiser step is watched: which weights it changed."""
    make_cache(tmp_path)
    p = tiny_params(tmp_path, modalities="av", fusion="early")
    p.train = p.train.model_copy(update={"epochs": 2, "transfer": transfer, "lp_steps": 4, "init": "pretrained",
                                         "select": "last"})
    p.pretrain.objective = "mask"
    start = _pretrained(tmp_path, p)
    changed: list[set[str]] = []
    real_step = loop.train_step

    def watched(model, *args, **kw):
        before = {n: q.detach().clone() for n, q in model.named_parameters()}
        out = real_step(model, *args, **kw)
        changed.append({n.split(".")[0] for n, q in model.named_parameters() if not torch.equal(before[n], q)})
        return out

    monkeypatch.setattr(loop, "train_step", watched)
    result = loop.train(p, tmp_path / "m.pt", live_dir=None, pretrained=tmp_path / "enc.pt")
    per_epoch = 3  # 9 training clips, batches of 4
    head_steps = {"lp_ft": 4, "probe": 2 * per_epoch, "finetune": 0}[transfer]
    assert result.steps == len(changed) == head_steps + (0 if transfer == "probe" else 2 * per_epoch)
    assert all(c == {"head"} for c in changed[:head_steps])  # the encoders do not move while the head is fit
    assert all({"head", "encoders", "fusion"} <= c for c in changed[head_steps:])  # then everything does
    final = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    same = all(torch.equal(final[k], v) for k, v in start.items())
    assert same == (transfer == "probe")  # a probe never changes the encoder


def test_encoder_learning_rate_is_a_multiple_of_the_heads(tmp_path, make_cache):
    from cmmvt.models import build_model

    p = tiny_params(tmp_path, modalities="av")
    model = build_model(p.model, {"video": 12, "audio": 12}, 3)
    opt, _ = loop._optimiser(model, p.train.model_copy(update={"encoder_lr": 0.1}), "all", 10, 0)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(3e-3), pytest.approx(3e-4)]
    assert sum(len(g["params"]) for g in opt.param_groups) == len([q for q in model.parameters() if q.requires_grad])
    opt, _ = loop._optimiser(model, p.train, "head", 10, 0)
    assert [len(g["params"]) for g in opt.param_groups] == [len(list(model.head.parameters()))]


def test_labelled_clips_are_drawn_alike_for_every_method_and_val_keeps_as_many(tmp_path):
    rows = [{"video_id": f"{s}{c}_{i}", "path": "x.mp4", "label": f"class{c}", "split": s}
            for s, n in (("train", 8), ("val", 6), ("test", 3)) for c in range(3) for i in range(n)]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    from cmmvt.features.cache import CacheWriter, ClipFeatures

    for m in ("video", "audio"):
        with CacheWriter(tmp_path / "features" / m, m, {"backbone": "none", "dim": 4, "fps": 4.0}) as w:
            for r in rows:
                w.add(ClipFeatures(r["video_id"], np.ones((4, 4)), np.arange(4, dtype=np.float32), True, 1.0))
    df = pd.read_csv(tmp_path / "manifest.csv")
    draws = []
    for seed, transfer, objective in ((0, "finetune", "none"), (2, "lp_ft", "mask"), (1, "probe", "sync")):
        p = tiny_params(tmp_path, modalities="av")
        p.seed, p.pretrain.objective = seed, objective
        p.train = p.train.model_copy(update={"labels_per_class": 2, "transfer": transfer, "label_draw": 3})
        sp, _ = loop._datasets(p, tmp_path / "features", df)
        draws.append((sp["train"], sp["val"]))
    assert draws[0] == draws[1] == draws[2]  # paired: the same clips whatever the method and the seed
    train, val = draws[0]
    assert sorted(train.labels) == sorted(val.labels) == [0, 0, 1, 1, 2, 2]  # never more val labels than train
    p.train.label_draw = 4
    other, _ = loop._datasets(p, tmp_path / "features", df)
    assert other["train"] != train  # another draw, other clips


def test_summary_says_when_nearest_centroid_does_better():
    r = loop.TrainResult(best_epoch=3, best_val_top1=0.4, epochs_run=10, train_clips=10, steps=10, step_seconds=1.0,
                         baseline_val_top1=0.6)
    assert "nearest-centroid" in r.line() and "0.600" in r.line()
    assert "nearest-centroid" not in loop.TrainResult(3, 0.7, 10, 10, 10, 1.0, baseline_val_top1=0.6).line()
