"""The Typer CLI: help with examples everywhere, domain errors as one red line with exit status 1."""

import pytest
from typer.testing import CliRunner

from cmmvt.cli import app

runner = CliRunner()
COMMANDS = [["synth"], ["manifest"], ["extract"], ["cache", "info"], ["train"], ["evaluate"], ["predict"],
            ["prototypes"], ["pretrain"], ["ablate"], ["report"]]


def test_no_args_shows_help():
    res = runner.invoke(app, [])
    assert "Usage" in res.output and "extract" in res.output


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_examples(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "cmmvt " + cmd[0] in res.output


def test_bad_params_override_is_one_line(tmp_path):
    res = runner.invoke(app, ["train", "--params", str(tmp_path / "none.yaml"), "-S", "model.attention=globl"])
    assert res.exit_code == 1
    assert "model.attention = 'globl' is not one of: local, global" in res.output
    assert "Traceback" not in res.output


def test_missing_manifest_is_one_line(tmp_path):
    res = runner.invoke(app, ["extract", "--manifest", str(tmp_path / "nope.csv")])
    assert res.exit_code == 1 and "nope.csv" in res.output and "Traceback" not in res.output


def test_manifest_command_on_folder(tmp_path):
    for label in ("a", "b"):
        for i in range(3):
            (tmp_path / "clips" / label).mkdir(parents=True, exist_ok=True)
            (tmp_path / "clips" / label / f"{i}.mp4").write_bytes(b"x")
    out = tmp_path / "m.csv"
    res = runner.invoke(app, ["manifest", "--source", "folder", "--root", str(tmp_path / "clips"), "--out", str(out),
                              "--params", str(tmp_path / "none.yaml")])
    assert res.exit_code == 0, res.output
    assert "6 clips, 2 classes" in res.output and out.exists()


def test_ablate_unknown_grid_is_one_line():
    res = runner.invoke(app, ["ablate", "--grid", "nope"])
    assert res.exit_code == 1 and "--grid = 'nope' is not one of: default, poster, attention" in res.output
    assert "Traceback" not in res.output


def test_report_outside_a_dvc_repo_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["report", "--grid", "smoke"])
    assert res.exit_code == 1 and "not inside of a DVC repository" in res.output and "Traceback" not in res.output
