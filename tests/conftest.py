"""Shared fixtures: a tiny copy of the repo in which the real DVC pipeline runs in seconds."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cmmvt.features.cache import CacheWriter, ClipFeatures

REPO = Path(__file__).resolve().parents[1]
# Traced CNNs go to a temporary folder shared by the session (and its subprocesses), never to ~/.cache.
os.environ["CMMVT_CACHE_DIR"] = tempfile.mkdtemp(prefix="cmmvt-test-cache-")
TINY = {
    "data": {"synth": {"classes": 3, "clips_per_class": 4, "duration": 1.5, "size": 64, "unlabelled_clips_per_class": 2}},
    "extract": {"backbone": "none", "image_size": 64, "fps": 4.0, "batch_size": 16},
    "prototypes": {"k_video": 3, "k_audio": 3},
    "pretrain": {"epochs": 2},
    "model": {"hidden": 32, "heads": 2, "layers": 2, "crop_frames": 8, "window": 4},
    "train": {"epochs": 3, "batch_size": 4, "min_steps": 0},
}


def _merge(base: dict, extra: dict) -> dict:
    """Deep-merge ``extra`` into ``base``."""
    for k, v in extra.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` in ``cwd`` (with ``env``, default: ours); assert it succeeded; return stdout + stderr."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def running(out: str) -> set[str]:
    """The stages DVC ran, from its ``Running stage '…'`` lines."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def tiny_repo(dst: Path) -> Path:
    """Copy the repo's tracked and untracked-but-not-ignored files into ``dst`` with tiny params; ``git init``."""
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
        sh(cmd, dst)
    return dst


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny repo with nothing run yet (one per test module)."""
    return tiny_repo(tmp_path_factory.mktemp("repo"))


def dvc(*args: str) -> list[str]:
    """The ``python -m dvc`` command line."""
    return [sys.executable, "-m", "dvc", *args]


@pytest.fixture(scope="session")
def dvc_cmd():
    """``dvc_cmd(*args)``: the ``python -m dvc`` command line (see :func:`dvc`)."""
    return dvc


CLASSES = ["left", "right", "up"]


def _make_cache(root, n_per_class=4, t=8, dim=12, missing_audio=("c2_0",)):
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


@pytest.fixture(scope="session")
def make_cache():
    """``make_cache(root, ...)``: a hand-made cache of 3 classes (features/{video,audio}, manifest.csv) → root."""
    return _make_cache


@pytest.fixture(scope="session")
def classes() -> list[str]:
    """The class names of :func:`make_cache`'s cache."""
    return CLASSES


@pytest.fixture(scope="session")
def run():
    """``run(cmd, cwd, env=None)``: run a command, assert it succeeded, return its output (see :func:`sh`)."""
    return sh


@pytest.fixture(scope="session")
def stages_run():
    """``stages_run(output)``: the stages DVC ran, from its output (see :func:`running`)."""
    return running
