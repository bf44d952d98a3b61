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
        "model": {"hidden": 32, "heads": 2, "layers": 2, "crop_frames": 8, "window": 4, "dropout": 0.0} | model,
        "train": {"epochs": 60, "batch_size": 4, "lr": 3e-3, "warmup_epochs": 1, "patience": 100,
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


def test_cli_train_writes_only_what_it_is_told(tmp_path, make_cache, monkeypatch):
    """`cmmvt train --out X` writes X and nothing else (no DVCLive folder in the working directory)."""
    import yaml
    from typer.testing import CliRunner

    from cmmvt.cli import app

    make_cache(tmp_path / "data")
    p = tiny_params(tmp_path / "data").model_dump()
    p["train"]["epochs"] = 2
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path / "work")
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "out" / "m.pt")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["params.yaml"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.pt"]
