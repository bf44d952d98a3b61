"""End to end: the real DVC pipeline in a temporary copy of the repo with tiny params.

``dvc repro`` generates clips, the manifest, both caches, trains and evaluates; then
``dvc exp run -S model.attention=global`` must rerun only train/evaluate (asserted from DVC's output).
"""

import json
import sys

import pytest

from conftest import REPO, running, sh


@pytest.mark.slow
def test_repro_then_experiment_reruns_only_downstream(repo):
    dvc = [sys.executable, "-m", "dvc"]
    out = sh(dvc + ["repro"], repo)
    assert running(out) >= {"synth", "prepare", "extract@video", "extract@audio", "prototypes", "pretrain", "train",
                             "evaluate"}
    metrics = json.loads((repo / "reports/eval/metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["clips"] > 0
    assert (repo / "reports/eval/confusion.png").exists()
    assert "Data and pipelines are up to date" in sh(dvc + ["status"], repo)
    plots = sh(dvc + ["plots", "show", "--json"], repo)  # pretrain.objective none: an empty curve, no error
    assert "failed to load" not in plots and "reports/pretrain/plots/metrics" in plots
    clip = sorted((repo / "data/synth").rglob("*.mp4"))[0]
    pred = json.loads(sh([sys.executable, "-m", "cmmvt.cli", "predict", str(clip), "--top-k", "2", "--json"], repo))
    assert [r["path"] for r in pred] == [str(clip)] and len(pred[0]["top"]) == 2
    assert pred[0]["top"][0][0] in {p.name for p in (repo / "data/synth").iterdir() if p.is_dir()}
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], repo)

    sh([sys.executable, str(REPO / "benchmarks/quality.py"), "--quick", "--out", str(repo.parent / "q.json")], repo)
    assert json.loads((repo.parent / "q.json").read_text())
    sh([sys.executable, str(REPO / "benchmarks/lowlabel.py"), "--quick", "--out", str(repo.parent / "l.json")], repo)
    low = json.loads((repo.parent / "l.json").read_text())
    assert set(low["top1"]) == {"none", "xdc", "infonce", "protonce"}

    out = sh(dvc + ["exp", "run", "-S", "model.attention=global"], repo)
    assert running(out) == {"pretrain", "train", "evaluate"}, out  # never synth/prepare/extract/prototypes
    shown = json.loads(sh(dvc + ["exp", "show", "--json"], repo))
    assert "global" in json.dumps(shown)
