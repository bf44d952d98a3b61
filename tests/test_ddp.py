"""Data-parallel training, pretraining and evaluation: 2 torchrun ranks (gloo, CPU) against one process.

The hand-made cache has 9 training clips and 3 test clips. With ``train.batch_size: 6`` the last global
batch of an epoch has 3 clips, split 2 + 1 over the ranks; with 4 it has 1, so rank 1 steps on a stand-in of
weight 0. Clips are as long as ``model.crop_frames`` (every crop starts at row 0) and dropout is 0. The
one-process references run with the threads of one rank: the thread count alone (1 or 2) moved a weight by
1.6e-5 after 6 Adam steps here, through a gradient element near 0 whose rounding Adam's normalisation
magnifies; at equal threads 2 ranks stay within 3e-7 of one process. Each torchrun launch costs seconds of
start-up, so the file launches four (the ``slow`` tests): ``cmmvt train``, ``cmmvt evaluate``,
``cmmvt pretrain`` and the DVC stage script ``stages/train.py``.
"""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cmmvt import config, distributed
from cmmvt.config import ConfigError
from cmmvt.distributed import World
from cmmvt.eval import evaluate
from cmmvt.selfsup import pretrain as pt
from cmmvt.selfsup import prototypes as protos
from cmmvt.train import loop
from cmmvt.train.dataset import ClipDataset
from cmmvt.train.sampler import GlobalBatches

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
EPOCHS = 3


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def params_dict(root: Path, batch_size: int = 6) -> dict:
    return {
        "seed": 0,
        "data": {"manifest": str(root / "manifest.csv")},
        "extract": {"out": str(root / "features")},
        "prototypes": {"k_video": 2, "k_audio": 3},
        "pretrain": {"objective": "infonce", "epochs": 2, "batch_size": 4, "lr": 3e-3},
        "model": {"hidden": 32, "heads": 2, "layers": 1, "crop_frames": 8, "window": 4, "dropout": 0.0},
        "train": {"epochs": EPOCHS, "min_steps": 0, "batch_size": batch_size, "lr": 3e-3, "warmup_epochs": 1, "patience": 100,
                  "init": "scratch"},
        "paths": {"classifier": "models/classifier.pt", "classifier_params": "models/classifier.params.yaml",
                  "pretrained": str(root / "pretrain.pt"), "prototypes": str(root / "prototypes.h5"),
                  "reports": "reports"},
    }


@contextmanager
def rank_threads():
    """Within the block, torch uses the threads that each of 2 ranks gets on this machine."""
    before = torch.get_num_threads()
    distributed.share_cores(World(rank=0, size=2, local_size=2, group=True))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_cache) -> Path:
    """The cache, prototypes and a params.yaml in ``work/`` (where the commands run)."""
    root = make_cache(tmp_path_factory.mktemp("ddp"))
    protos.write(root / "prototypes.h5", protos.fit(root / "features", k_video=2, k_audio=3, seed=0, k_rows=6))
    (root / "work").mkdir()
    (root / "work" / "params.yaml").write_text(yaml.safe_dump(params_dict(root)))
    return root


@pytest.fixture(scope="module")
def reference(tiny) -> Path:
    """The classifier trained by one process."""
    with rank_threads():
        loop.train(config.validate(params_dict(tiny)), tiny / "one.pt", world=World())
    return tiny / "one.pt"


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, worst


def run_ranks(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(torchrun(*args), capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def test_global_batches_are_the_same_for_any_number_of_ranks():
    for n, drop_last in [(9, False), (8, False), (5, False), (1, False), (9, True)]:
        one = GlobalBatches(n, 4, World(), seed=3, drop_last=drop_last)
        for size in (1, 2, 4):
            ranks = [GlobalBatches(n, 4, World(rank=r, size=size, group=True), seed=3, drop_last=drop_last)
                     for r in range(size)]
            assert all(len(b) == len(one) == (n // 4 if drop_last else -(-n // 4)) for b in ranks)
            for epoch in range(3):
                seen = []
                for whole, *parts in zip(one.epoch(epoch), *(b.epoch(epoch) for b in ranks)):
                    # the ranks' parts, in rank order, are the one-process batch; the weights average to its mean
                    assert sum((s.indices[: s.clips] for s in parts), []) == whole.indices
                    assert sum(s.weight for s in parts) == pytest.approx(size)
                    assert all(s.weight == size * s.clips / whole.clips for s in parts)
                    assert all(len(s.indices) == 1 and s.indices[0] in whole.indices for s in parts if s.clips == 0)
                    seen += whole.indices
                assert len(seen) == len(set(seen)) == (n // 4 * 4 if drop_last else n)  # each clip at most once
    orders = [[s.indices for s in GlobalBatches(9, 4, World(), seed=3).epoch(e)] for e in range(2)]
    assert orders[0] != orders[1]  # a new permutation every epoch
    with pytest.raises(ConfigError, match=r"train.batch_size = 6 is the global batch, split over 4 processes"):
        GlobalBatches(9, 6, World(rank=0, size=4, group=True), seed=0)


def test_training_crops_depend_only_on_seed_epoch_and_clip(tiny):
    ids = [f"c0_{i}" for i in range(3)]
    a, b = (ClipDataset(tiny / "features", ids, [0, 0, 0], ("video",), frames=3, train=True, seed=1) for _ in "ab")
    first = [a[i]["video"] for i in range(3)]
    assert all(torch.equal(b[i]["video"], first[i]) for i in (2, 0, 1))  # any order, any process
    a.set_epoch(1)
    assert any(not torch.equal(a[i]["video"], first[i]) for i in range(3))


def test_one_process_shares_rows_without_a_group():
    calls = []
    rows = distributed.shared_rows(World(), lambda idx: calls.append(idx) or [i * i for i in idx], 4)
    assert rows == [0, 1, 4, 9] and calls == [[0, 1, 2, 3]]
    assert distributed.shared_rows(World(), lambda idx: calls.append(idx) or idx, 0) == [] and len(calls) == 1
    x = torch.ones(2, 3)
    assert distributed.cat_ranks(World(), x) is x


@pytest.mark.slow
def test_two_ranks_train_the_weights_of_one_process_and_rank_0_writes_one_checkpoint(tiny, reference):
    work = tiny / "work"
    proc = run_ranks("-m", "cmmvt.cli", "train", "--out", str(tiny / "two" / "model.pt"), "--reports",
                     str(tiny / "two-reports"), cwd=work)
    assert sorted(p.name for p in (tiny / "two").iterdir()) == ["model.params.yaml", "model.pt"]  # rank 0's only
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]
    one = torch.load(reference, weights_only=True)
    two = torch.load(tiny / "two" / "model.pt", weights_only=True)
    assert_close(two["state_dict"], one["state_dict"])  # 6 steps; each epoch's last with parts of 2 and 1 clips
    assert proc.stderr.count("best val top-1") == 1 and "saved" in proc.stderr


@pytest.mark.slow
def test_two_ranks_evaluate_every_test_clip_once(tiny, reference):
    p = config.validate(params_dict(tiny))
    with rank_threads():
        one = evaluate.evaluate(p, reference, tiny / "eval1", world=World())
    proc = run_ranks("-m", "cmmvt.cli", "evaluate", "--model", str(reference), "--reports", str(tiny / "r2"),
                     cwd=tiny / "work")
    two = json.loads((tiny / "r2" / "eval" / "metrics.json").read_text())
    assert two == pytest.approx(one) and two["clips"] == 3
    preds = pd.read_csv(tiny / "r2" / "eval" / "predictions.csv")
    test_ids = pd.read_csv(tiny / "manifest.csv").query("split == 'test'")["video_id"]
    assert sorted(preds["video_id"]) == sorted(test_ids)  # 3 clips over 2 ranks: each once, none padded in
    assert preds.equals(pd.read_csv(tiny / "eval1" / "predictions.csv"))
    assert proc.stderr.count("clips 3") == 1


@pytest.mark.slow
def test_two_ranks_pretrain_infonce_like_one_process(tiny):
    p = config.validate(params_dict(tiny))
    with rank_threads():
        pt.pretrain(p, tiny / "pre1.pt", live_dir=None, world=World())
    proc = run_ranks("-m", "cmmvt.cli", "pretrain", "--out", str(tiny / "pre2" / "enc.pt"), "--reports",
                     str(tiny / "pre2-reports"), cwd=tiny / "work")
    assert sorted(p.name for p in (tiny / "pre2").iterdir()) == ["enc.pt"]
    one = torch.load(tiny / "pre1.pt", weights_only=True)
    two = torch.load(tiny / "pre2" / "enc.pt", weights_only=True)
    # negatives from the global batch (gathered with gradients): the InfoNCE of one process, step for step
    assert_close(two["state_dict"], one["state_dict"])
    assert_close(two["heads"], one["heads"])
    assert two["metrics"] == pytest.approx(one["metrics"])  # retrieval on the test clips, split and gathered
    assert proc.stderr.count("pretrain infonce: 2 epochs on 9 clips") == 1


@pytest.mark.slow
def test_train_stage_under_torchrun_steps_a_stand_in_and_writes_checkpoint_params_and_curves_once(tiny):
    p = params_dict(tiny, batch_size=4)
    with rank_threads():
        loop.train(config.validate(p), tiny / "one4.pt", world=World())
    work = tiny / "stage"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    proc = run_ranks(str(REPO / "stages" / "train.py"), cwd=work)
    assert proc.stderr.count("best val top-1") == 1
    assert {p.name for p in (work / "models").iterdir()} == {"classifier.pt", "classifier.params.yaml"}
    one = torch.load(tiny / "one4.pt", weights_only=True)["state_dict"]
    assert_close(torch.load(work / "models" / "classifier.pt", weights_only=True)["state_dict"], one)
    curve = work / "reports" / "train" / "plots" / "metrics" / "train" / "loss.tsv"
    assert len(curve.read_text().splitlines()) == 1 + EPOCHS  # one writer: a header and a row per epoch
    assert json.loads((work / "reports" / "train" / "metrics.json").read_text())["step"] == EPOCHS - 1
    assert np.isfinite(json.loads((work / "reports" / "train" / "metrics.json").read_text())["train"]["loss"])


@pytest.mark.slow
def test_two_ranks_train_a_multilabel_model_like_one_process(tiny):
    """Several labels per clip (``train.task=multilabel``): 2 ranks reach one process's weights and the same
    decision thresholds (chosen on val on every rank, written once)."""
    df = pd.read_csv(tiny / "manifest.csv")
    names = sorted(df.label.unique())
    df["label"] = [f"{x};{names[(names.index(x) + 1) % len(names)]}" if i % 2 else x for i, x in enumerate(df.label)]
    df.to_csv(tiny / "manifest-ml.csv", index=False)
    d = params_dict(tiny)
    d["data"]["manifest"] = str(tiny / "manifest-ml.csv")
    d["train"]["task"] = "multilabel"
    work = tiny / "work-ml"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(d))
    with rank_threads():
        loop.train(config.validate(d), tiny / "one-ml.pt", world=World())
    proc = run_ranks("-m", "cmmvt.cli", "train", "--out", str(tiny / "two-ml.pt"), cwd=work)
    one, two = (torch.load(tiny / f"{n}-ml.pt", weights_only=True) for n in ("one", "two"))
    assert_close(two["state_dict"], one["state_dict"])
    assert two["thresholds"] == pytest.approx(one["thresholds"], abs=1e-4) and len(one["thresholds"]) == len(names)
    assert proc.stderr.count("best val mAP") == 1
    with rank_threads():  # pretraining reads no label: the multi-label manifest pretrains as the single-label one
        pt.pretrain(config.validate(d), tiny / "pre-ml.pt", live_dir=None, world=World())
        pt.pretrain(config.validate(params_dict(tiny)), tiny / "pre-sl.pt", live_dir=None, world=World())
    ml, sl = (torch.load(tiny / f"pre-{n}.pt", weights_only=True) for n in ("ml", "sl"))
    assert_close(ml["state_dict"], sl["state_dict"], atol=0)
