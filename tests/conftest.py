"""Shared fixtures: a tiny copy of the repo in which the real DVC pipeline runs in seconds."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Traced CNNs go to a temporary folder shared by the session (and its subprocesses), never to ~/.cache.
os.environ["CMMVT_CACHE_DIR"] = tempfile.mkdtemp(prefix="cmmvt-test-cache-")
TINY = {
    "data": {"synth": {"classes": 3, "clips_per_class": 4, "duration": 1.5, "size": 64}},
    "extract": {"backbone": "none", "image_size": 64, "fps": 4.0, "batch_size": 16},
    "prototypes": {"k_video": 3, "k_audio": 3},
    "pretrain": {"epochs": 2},
    "model": {"hidden": 32, "heads": 2, "layers": 2, "crop_frames": 8, "window": 4},
    "train": {"epochs": 3, "batch_size": 4},
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
