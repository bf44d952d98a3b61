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
from cmmvt.features.cache import CacheWriter, ClipFeatures

CLASSES = ["left", "right", "up"]


def make_cache(root, n_per_class=4, t=8, dim=12, missing_audio=("c2_0",)):
    """Features whose class is only in the temporal order of the video rows and in the audio mean."""
    rng = np.random.default_rng(0)
    rows = []
    with CacheWriter(root / "features/video", "video", {"backbone": "none", "dim": dim, "fps": 4.0}) as wv, \
         CacheWriter(root / "features/audio", "audio", {"backbone": "none", "dim": dim, "fps": 4.0}) as wa:
        for c, name in enumerate(CLASSES):
            for i in range(n_per_class):
                vid = f"c{c}_{i}"
                ramp = np.linspace(-1, 1, t)[:, None] * (1 if c != 1 else -1)  # (T, 1) order carries the class
                v = ramp * np.eye(dim)[0] + 0.05 * rng.standard_normal((t, dim))
                a = np.eye(dim)[c + 1] + 0.05 * rng.standard_normal((t, dim))
                ts = ((np.arange(t) + 0.5) / 4).astype(np.float32)
                wv.add(ClipFeatures(vid, v, ts, True, t / 4))
                if vid in missing_audio:
                    wa.add(ClipFeatures(vid, np.zeros((0, dim)), np.zeros(0, np.float32), False, t / 4))
                else:
                    wa.add(ClipFeatures(vid, a, ts, True, t / 4))
                split = "train" if i < n_per_class - 1 else "test"
                rows.append({"video_id": vid, "path": f"{vid}.mp4", "label": name, "split": split})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


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
def test_overfits_tiny_cache_and_reloads_checkpoint(tmp_path, model):
    make_cache(tmp_path)
    p = tiny_params(tmp_path, **model)
    result = loop.train(p, tmp_path / "model.pt", live_dir=tmp_path / "live")
    assert result.best_val_top1 == 1.0  # no val split: validated on train → must fit all of it
    net, ckpt = checkpoints.load_checkpoint(tmp_path / "model.pt")
    assert ckpt["labels"] == CLASSES and ckpt["features"]["video"]["backbone"] == "none"
    sp, _ = dataset.splits(pd.read_csv(tmp_path / "manifest.csv"), tmp_path / "features", net.modalities)
    ds = dataset.ClipDataset(tmp_path / "features", sp["train"].ids, sp["train"].labels, net.modalities, 8)
    logits = inference.predict(net, ds)
    assert (logits.argmax(1) == np.array(sp["train"].labels)).all()
    assert (tmp_path / "live/metrics.json").exists()


def test_training_is_deterministic(tmp_path):
    make_cache(tmp_path)
    p = tiny_params(tmp_path, modalities="av")
    p.train.epochs = 3
    loop.train(p, tmp_path / "a.pt", live_dir=None)
    loop.train(p, tmp_path / "b.pt", live_dir=None)
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_audio_is_masked_not_zero(tmp_path):
    make_cache(tmp_path)
    ds = dataset.ClipDataset(tmp_path / "features", ["c2_0", "c0_0"], [2, 0], ("video", "audio"), frames=8)
    assert not ds[0]["audio_mask"].any() and ds[0]["video_mask"].all()
    assert ds[1]["audio_mask"].all()


def test_views_and_label_fraction():
    assert dataset.view_starts(40, 16, 3) == [0, 12, 24]
    assert dataset.view_starts(10, 16, 3) == [0]  # fits: the whole clip, one view
    assert dataset.view_starts(40, 16) == [0, 12, 24]  # default: the fewest views that cover the clip
    assert dataset.view_starts(40, 16, 1) == [12]  # one view of a longer clip: the centred one
    s = dataset.Split([f"x{i}" for i in range(20)], [i % 2 for i in range(20)])
    sub = dataset.stratified_subset(s, 0.1, seed=0)
    assert sorted(sub.labels) == [0, 1]
    assert sub == dataset.stratified_subset(s, 0.1, seed=0)


def test_evaluate_writes_reports(tmp_path):
    make_cache(tmp_path)
    p = tiny_params(tmp_path, modalities="av")
    p.train.epochs = 30
    loop.train(p, tmp_path / "model.pt", live_dir=None)
    m = evaluate.evaluate(p, tmp_path / "model.pt", tmp_path / "eval")
    saved = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert saved == m and set(m) >= {"top1", "top5", "mean_class_accuracy", "macro_f1"}
    assert m["clips"] == 3 and m["top5"] == 1.0
    per_class = pd.read_csv(tmp_path / "eval/per_class.csv")
    assert per_class["class"].tolist() == CLASSES
    preds = pd.read_csv(tmp_path / "eval/predictions.csv")
    assert set(preds.columns) == {"video_id", "actual", "predicted"} and len(preds) == 3
    assert (tmp_path / "eval/confusion.png").stat().st_size > 1000
