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


def test_report_results_fills_the_block_of_reports_results_md(tmp_path, monkeypatch):
    """`cmmvt report --results` writes the grid's body into reports/RESULTS.md's ablation block (the README carries
    none); without that file it fails in one line; `--readme` is gone."""
    from cmmvt.experiments import report

    monkeypatch.chdir(tmp_path)
    body = "<!-- measured: commit=abc1234 data=synth-params/grid-smoke -->\nGrid `smoke`\n\n![chart](ablations/top1.png)"
    monkeypatch.setattr(report, "build", lambda root, grid, rev, out: report.Report(
        body, root / out, None, results=2, problems=0, wall_s=None))
    res = runner.invoke(app, ["report", "--grid", "smoke", "--results"])
    assert res.exit_code == 1 and "reports/RESULTS.md: no such file" in res.output and "Traceback" not in res.output
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/RESULTS.md").write_text(f"# Results\n{report.BEGIN}\nold\n{report.END}\nafter\n")
    res = runner.invoke(app, ["report", "--grid", "smoke", "--results"])
    assert res.exit_code == 0 and "reports/RESULTS.md updated" in res.output, res.output
    assert (tmp_path / "reports/RESULTS.md").read_text() == f"# Results\n{report.BEGIN}\n{body}\n{report.END}\nafter\n"
    assert runner.invoke(app, ["report", "--readme"]).exit_code == 2  # no such option
