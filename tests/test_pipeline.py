"""End to end: the real DVC pipeline in a temporary copy of the repo with tiny params.

``dvc repro`` generates clips, the manifest, both caches, trains and evaluates; then
``dvc exp run -S model.attention=global`` must rerun only train/evaluate (asserted from DVC's output).
"""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_repro_then_experiment_reruns_only_downstream(repo, run, stages_run):
    dvc = [sys.executable, "-m", "dvc"]
    out = run(dvc + ["repro"], repo)
    assert stages_run(out) >= {"synth", "prepare", "extract@video", "extract@audio", "prototypes", "pretrain",
                               "train", "evaluate"}
    metrics = json.loads((repo / "reports/eval/metrics.json").read_text())
    preds = pd.read_csv(repo / "reports/eval/predictions.csv")
    assert metrics["clips"] == len(preds) > 0
    assert metrics["top1"] == pytest.approx(float((preds["actual"] == preds["predicted"]).mean()))
    assert (repo / "reports/eval/confusion.png").exists()
    assert "Data and pipelines are up to date" in run(dvc + ["status"], repo)
    plots = run(dvc + ["plots", "show", "--json"], repo)  # pretrain.objective infonce (default): a real loss curve
    assert "failed to load" not in plots and "reports/pretrain/plots/metrics" in plots
    clip = sorted((repo / "data/synth").rglob("*.mp4"))[0]
    pred = json.loads(run([sys.executable, "-m", "cmmvt.cli", "predict", str(clip), "--top-k", "2", "--json"], repo))
    assert [r["path"] for r in pred] == [str(clip)] and len(pred[0]["top"]) == 2
    assert pred[0]["top"][0][0] in {p.name for p in (repo / "data/synth").iterdir() if p.is_dir()}
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], repo)

    run([sys.executable, str(REPO_ROOT / "benchmarks/quality.py"), "--quick", "--out", str(repo.parent / "q.json")], repo)
    quality = json.loads((repo.parent / "q.json").read_text())
    assert all(len(r["clips"]) == metrics["clips"] for runs in quality.values() for r in runs)
    assert "| reference |" in (repo.parent / "q.md").read_text()  # the second variant paired against the first
    run([sys.executable, str(REPO_ROOT / "benchmarks/lowlabel.py"), "--quick", "--out", str(repo.parent / "l.json")], repo)
    (low,) = json.loads((repo.parent / "l.json").read_text())  # the quick synthetic set: one pool
    assert low["sizes"]["test"] > 0 and {r["labels"] for r in low["runs"]} == {"1", "all"}
    assert {"scratch · finetune", "nearest-centroid"} <= {r["method"] for r in low["runs"]}

    out = run(dvc + ["exp", "run", "-S", "model.attention=global", "-S", "pretrain.objective=none"], repo)
    assert stages_run(out) == {"pretrain", "train", "evaluate"}, out  # never synth/prepare/extract/prototypes
    shown = json.dumps(json.loads(run(dvc + ["exp", "show", "--json"], repo)))
    assert "global" in shown and '"objective": "none"' in shown and '"objective": "infonce"' in shown
    plots = run(dvc + ["plots", "show", "--json"], repo)  # pretraining off: an empty curve, still no error
    assert "failed to load" not in plots


@pytest.mark.slow
def test_own_folder_gets_no_synthetic_clips(tmp_path_factory, run):
    """With data.source: folder, `dvc repro` reads the user's clips and renders none of the synthetic set."""
    import yaml

    from conftest import tiny_repo

    repo = tiny_repo(tmp_path_factory.mktemp("own"))
    clips = repo.parent / "my_clips"
    run([sys.executable, "-m", "cmmvt.cli", "synth", "--out", str(clips), "--classes", "2", "--clips-per-class", "4",
         "-S", "data.synth.unlabelled_clips_per_class=0"], repo)  # stands in for a user's folder of clips
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"] |= {"source": "folder", "root": str(clips)}
    params["prototypes"] |= {"k_video": 2, "k_audio": 2}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "dvc", "repro"], repo)
    assert (repo / "data/synth").is_dir() and not any((repo / "data/synth").rglob("*"))  # the stage's empty output
    listed = pd.read_csv(repo / "data/manifest.csv")
    assert len(listed) == 8 and set(listed["label"]) == {d.name for d in clips.iterdir() if d.is_dir()}
    assert json.loads((repo / "reports/eval/metrics.json").read_text())["clips"] > 0
