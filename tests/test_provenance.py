"""report --check: a results block measured before a change to its code is named; regenerated, it passes."""

import subprocess

from typer.testing import CliRunner

from cmmvt.cli import app
from cmmvt.experiments import provenance


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def commit(root, path, text, message):
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(root, "rev-parse", "--short", "HEAD")


def test_check_names_blocks_older_than_their_code(tmp_path, monkeypatch):
    git(tmp_path, "init", "-q")
    first = commit(tmp_path, "cmmvt/models/m.py", "x = 1\n", "model")
    readme = (f"# r\n\n{provenance.marker(first, 'synth')}\n| top-1 | 0.9 |\n\n"
              f"{provenance.marker(first, 'realav', ('cmmvt/eval',))}\n| mAP | 0.5 |\n"
              f"quoted in prose: `{provenance.marker(first, 'x')}`\n")
    commit(tmp_path, "README.md", readme, "results")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["report", "--check"])
    assert res.exit_code == 0 and "2 of 2 results blocks current" in res.output, res.output
    commit(tmp_path, "docs/x.md", "words\n", "docs only")  # touches no dependency
    assert CliRunner().invoke(app, ["report", "--check"]).exit_code == 0
    changed = commit(tmp_path, "cmmvt/models/m.py", "x = 2\n", "change the model")
    res = CliRunner().invoke(app, ["report", "--check"])
    assert res.exit_code == 1 and "README.md:3" in res.output and f"newest: {changed} change the model" in res.output
    assert "README.md:6" not in res.output  # the other block depends on cmmvt/eval only
    blocks, stale = provenance.check(tmp_path / "README.md")
    assert [b.data for b in blocks] == ["synth", "realav"] and [s.block.line for s in stale] == [3]
    commit(tmp_path, "README.md", readme.replace(provenance.marker(first, "synth"), provenance.marker(changed, "synth")),
           "regenerated")
    assert CliRunner().invoke(app, ["report", "--check"]).exit_code == 0


def test_unknown_commit_is_stale(tmp_path):
    git(tmp_path, "init", "-q")
    commit(tmp_path, "README.md", provenance.marker("deadbee", "synth") + "\n", "r")
    _, stale = provenance.check(tmp_path / "README.md")
    assert stale[0].changes == ["unknown commit"]


def test_check_reads_readme_results_and_docs(tmp_path, monkeypatch):
    """Blocks in README.md, reports/RESULTS.md and docs/*.md are all checked, each named `<file>:<line>` against the
    repo root (a doc's depends are repo paths, not paths under docs/)."""
    git(tmp_path, "init", "-q")
    first = commit(tmp_path, "cmmvt/models/m.py", "x = 1\n", "model")
    commit(tmp_path, "README.md", "# r\n\nno numbers here\n", "readme")
    commit(tmp_path, "reports/RESULTS.md", f"# results\n\n{provenance.marker(first, 'synth', ('cmmvt/models',))}\n"
           "| top-1 | 0.9 |\n", "results")
    commit(tmp_path, "docs/scale-out.md", f"# scale\n{provenance.marker(first, 'rows', ('cmmvt/train',))}\n| 1 |\n",
           "docs")
    monkeypatch.chdir(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in provenance.files(tmp_path)] == [
        "README.md", "reports/RESULTS.md", "docs/scale-out.md"]
    res = CliRunner().invoke(app, ["report", "--check"])
    assert res.exit_code == 0 and "2 of 2 results blocks current" in res.output, res.output
    commit(tmp_path, "cmmvt/train/loop.py", "y = 1\n", "change training")
    res = CliRunner().invoke(app, ["report", "--check"])
    assert res.exit_code == 1 and "docs/scale-out.md:2" in res.output and "reports/RESULTS.md:" not in res.output
    assert "1 of 2 results blocks current (reports/RESULTS.md 1, docs/scale-out.md 1)" in res.output
    commit(tmp_path, "cmmvt/models/m.py", "x = 2\n", "change the model")
    res = CliRunner().invoke(app, ["report", "--check"])
    assert "reports/RESULTS.md:3" in res.output and "0 of 2 results blocks current" in res.output
    checked = provenance.check_files(tmp_path)
    assert {p.name: len(stale) for p, (_, stale) in checked.items()} == {"README.md": 0, "RESULTS.md": 1,
                                                                          "scale-out.md": 1}
    # the docs' own folder is not the root their depends are relative to
    assert [s.block.line for s in provenance.check(tmp_path / "docs" / "scale-out.md")[1]] == [2]
