"""End to end: the real DVC pipeline in a temporary copy of the repo with tiny params.

``dvc repro`` generates clips, the manifest, both caches, trains and evaluates; then
``dvc exp run -S model.attention=global`` must rerun only train/evaluate (asserted from DVC's output).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"synth": {"classes": 3, "clips_per_class": 4, "duration": 1.5, "size": 64}},
    "extract": {"backbone": "none", "image_size": 64, "fps": 4.0, "batch_size": 16},
    "prototypes": {"k_video": 3, "k_audio": 3},
    "pretrain": {"epochs": 2},
    "model": {"hidden": 32, "heads": 2, "layers": 2, "max_frames": 8, "window": 4},
    "train": {"epochs": 3, "batch_size": 4},
}


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def _sh(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def _running(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file() and not f.startswith(("reports/", "dvc.lock")):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    params = _merge(yaml.safe_load((dst / "params.yaml").read_text()), TINY)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        _sh(cmd, dst)
    return dst


@pytest.mark.slow
def test_repro_then_experiment_reruns_only_downstream(repo):
    dvc = [sys.executable, "-m", "dvc"]
    out = _sh(dvc + ["repro"], repo)
    assert _running(out) >= {"synth", "prepare", "extract@video", "extract@audio", "prototypes", "pretrain", "train",
                             "evaluate"}
    metrics = json.loads((repo / "reports/eval/metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["clips"] > 0
    assert (repo / "reports/eval/confusion.png").exists()
    assert "Data and pipelines are up to date" in _sh(dvc + ["status"], repo)
    clip = sorted((repo / "data/synth").rglob("*.mp4"))[0]
    pred = json.loads(_sh([sys.executable, "-m", "cmmvt.cli", "predict", str(clip), "--top-k", "2", "--json"], repo))
    assert [r["path"] for r in pred] == [str(clip)] and len(pred[0]["top"]) == 2
    assert pred[0]["top"][0][0] in {p.name for p in (repo / "data/synth").iterdir() if p.is_dir()}
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], repo)

    _sh([sys.executable, str(REPO / "benchmarks/quality.py"), "--quick", "--out", str(repo.parent / "q.json")], repo)
    assert json.loads((repo.parent / "q.json").read_text())
    _sh([sys.executable, str(REPO / "benchmarks/lowlabel.py"), "--quick", "--out", str(repo.parent / "l.json")], repo)
    low = json.loads((repo.parent / "l.json").read_text())
    assert set(low["top1"]) == {"none", "xdc", "infonce", "protonce"}

    out = _sh(dvc + ["exp", "run", "-S", "model.attention=global"], repo)
    assert _running(out) == {"pretrain", "train", "evaluate"}, out  # never synth/prepare/extract/prototypes
    shown = json.loads(_sh(dvc + ["exp", "show", "--json"], repo))
    assert "global" in json.dumps(shown)
