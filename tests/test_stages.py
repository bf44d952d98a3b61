"""One code path per stage: ``cmmvt extract/train/evaluate`` outside DVC make the files the DVC stage scripts make."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cmmvt import config
from cmmvt.cli import app
from cmmvt.data import manifest
from cmmvt.features import cache

STAGES = Path(__file__).resolve().parents[1] / "stages"


def _params(clips: Path) -> dict:
    """One params file for both runs; every output path relative, so each run writes into its own folder."""
    return {
        "seed": 0,
        "data": {"source": "folder", "root": str(clips), "manifest": "data/manifest.csv",
                 "splits": {"train": 0.5, "val": 0.25, "test": 0.25}},
        "extract": {"out": "data/features", "backbone": "none", "image_size": 64, "fps": 4.0, "batch_size": 8},
        "pretrain": {"objective": "none"},
        "model": {"hidden": 32, "heads": 2, "layers": 1, "crop_frames": 4, "window": 2, "dropout": 0.0},
        "train": {"epochs": 3, "min_steps": 0, "batch_size": 2, "lr": 3e-3, "warmup_epochs": 1, "patience": 100,
                  "init": "scratch"},
    }


def _stage(script: str, *args: str) -> None:
    """``python stages/<script>.py args`` in this process (the working directory is the run's folder)."""
    argv = sys.argv
    sys.argv = [str(STAGES / f"{script}.py"), *args]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        sys.argv = argv


def _cli(*args: str) -> None:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    from cmmvt.config import SynthParams
    from cmmvt.data import synth

    root = tmp_path_factory.mktemp("clips")
    synth.make_dataset(root, SynthParams(classes=2, clips_per_class=4, duration=2.0, size=48,
                                         unlabelled_clips_per_class=0), seed=0)
    return root


def test_cli_and_stage_scripts_make_the_same_files_and_checkpoint(clips, tmp_path, monkeypatch):
    runs = {"stage": tmp_path / "stage", "cli": tmp_path / "cli"}
    for root in runs.values():
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(_params(clips)))
        monkeypatch.chdir(root)
        manifest.prepare(config.load().data)
    monkeypatch.chdir(runs["stage"])
    for script, args in (("extract", ["video"]), ("extract", ["audio"]), ("train", []), ("evaluate", [])):
        _stage(script, *args)
    monkeypatch.chdir(runs["cli"])
    for mod in ("video", "audio"):
        _cli("extract", "--manifest", "data/manifest.csv", "--modality", mod, "--overwrite")
    _cli("train")
    _cli("evaluate")

    stage, cli = (_files(r) for r in runs.values())
    assert stage == cli
    assert {"models/classifier.pt", "models/classifier.params.yaml", "reports/train/metrics.json",
            "reports/eval/metrics.json", "reports/eval/predictions.csv", "data/features/video/.complete"} <= stage
    for name in ("models/classifier.params.yaml", "reports/eval/metrics.json", "reports/eval/predictions.csv",
                 "reports/eval/per_class.csv", "reports/train/metrics.json"):
        assert (runs["stage"] / name).read_text() == (runs["cli"] / name).read_text(), name
    one, two = (torch.load(r / "models/classifier.pt", weights_only=True) for r in runs.values())
    assert one["state_dict"].keys() == two["state_dict"].keys()
    for k, v in one["state_dict"].items():
        assert torch.equal(v, two["state_dict"][k]), k
    for mod in ("video", "audio"):
        with (cache.CacheReader(runs["stage"] / "data/features", mod) as a,
              cache.CacheReader(runs["cli"] / "data/features", mod) as b):
            assert sorted(a.ids) == sorted(b.ids) and len(a.ids) == 8
            for vid in a.ids:
                np.testing.assert_array_equal(a[vid], b[vid])


def test_cli_flags_are_overrides_of_the_stage_params(clips, tmp_path, monkeypatch):
    """``--out`` and ``--reports`` move the stage's files, and nothing lands anywhere else."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(_params(clips) | {"extract": _params(clips)["extract"] | {
        "out": str(tmp_path / "features")}, "data": _params(clips)["data"] | {"manifest": str(tmp_path / "m.csv")}}))
    monkeypatch.chdir(work)
    manifest.prepare(config.load().data)
    _cli("extract", "--manifest", str(tmp_path / "m.csv"))
    _cli("train", "--out", str(tmp_path / "out" / "m.pt"), "--reports", str(tmp_path / "r"))
    _cli("evaluate", "--model", str(tmp_path / "out" / "m.pt"), "--reports", str(tmp_path / "r"))
    assert _files(work) == {"params.yaml"}
    assert _files(tmp_path / "out") == {"m.pt", "m.params.yaml"}
    assert {"train/metrics.json", "eval/metrics.json"} <= _files(tmp_path / "r")
    saved = yaml.safe_load((tmp_path / "out" / "m.params.yaml").read_text())
    assert saved["paths"]["classifier"] == str(tmp_path / "out" / "m.pt")
    assert all((tmp_path / "features" / mod / ".complete").is_file() for mod in ("video", "audio"))
