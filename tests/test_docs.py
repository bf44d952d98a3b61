"""The walkthroughs in docs/ run as written: every ```bash block of docs/walkthrough.md and of docs/kinetics.md, in
order, with the installed `cmmvt`, in a folder holding only what the page says the reader starts from."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmmvt.cli import app

REPO = Path(__file__).resolve().parents[1]
KINETICS_SPLITS = ("train", "validate", "test")  # Kinetics' own split names, one annotation CSV each


def blocks(path: Path) -> list[str]:
    """The ```bash blocks of a markdown file, in order."""
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def run_blocks(path: Path, cwd: Path) -> tuple[list[str], list[str]]:
    """Run every ```bash block of ``path`` in order in ``cwd`` (``bash -euo pipefail``); fail on the first that
    exits non-zero. Returns the blocks and what each printed (stdout, then stderr, where cmmvt's summaries go)."""
    steps = blocks(path)
    outputs = []
    for step in steps:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=cwd, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{step}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout + proc.stderr)
    return steps, outputs


def output_of(steps: list[str], outputs: list[str], text: str) -> str:
    """The stdout of the first block that contains ``text``."""
    return outputs[steps.index(next(s for s in steps if text in s))]


@pytest.mark.slow
def test_walkthrough_from_a_folder_of_clips_to_predictions(tmp_path):
    """Folder → params → manifest → features → pretrain → train → evaluate → predict (and a timeline) → a variant."""
    import json

    import torch

    steps, outputs = run_blocks(REPO / "docs" / "walkthrough.md", tmp_path)
    assert len(steps) >= 8
    video = torch.load(tmp_path / "work" / "video.pt", weights_only=True)  # the variant: video alone
    assert sorted(video["features"]) == ["video"] and (tmp_path / "work" / "video.params.yaml").is_file()
    assert json.loads((tmp_path / "work" / "video" / "eval" / "metrics.json").read_text())["clips"] > 0
    assert (tmp_path / "work" / "classifier.pt").is_file() and (tmp_path / "work" / "pretrain.pt").is_file()
    assert '"top1"' in output_of(steps, outputs, "metrics.json")
    predicted = output_of(steps, outputs, "--top-k 3")
    assert re.search(r"square_chirp_up_000\.mp4: \w+ \d\.\d\d", predicted), predicted
    assert any(p.suffix == ".png" for p in (tmp_path / "work" / "timeline").iterdir())


def kinetics_download(root: Path) -> None:
    """What docs/kinetics.md starts from, tiny: ``UCF-101/<class>/*.mp4`` (six synthetic 2-s clips of two classes as
    ``cmmvt synth`` writes them: a UCF101-style tree) and the same clips as a Kinetics download,
    ``k400/videos/<youtube_id>_<start:06d>_<end:06d>.mp4`` with one CSV per split, ``k400/{train,validate,test}.csv``:
    clip i of each class in split i, ids such as ``disklrhum02``."""
    res = CliRunner().invoke(app, ["synth", "--out", str(root / "UCF-101"), "--classes", "2", "--clips-per-class", "3",
                                   "--params", str(root / "none.yaml"), "-S", "data.synth.duration=2",
                                   "-S", "data.synth.unlabelled_clips_per_class=0"])
    assert res.exit_code == 0, res.output
    (root / "k400" / "videos").mkdir(parents=True)
    rows: dict[str, list[str]] = {s: [] for s in KINETICS_SPLITS}
    for folder in sorted(p for p in (root / "UCF-101").iterdir() if p.is_dir()):
        for i, clip in enumerate(sorted(folder.glob("*.mp4"))):
            youtube_id, start = f"{folder.name.replace('_', '')[:9]}{i:02d}", 10 * i
            shutil.copy(clip, root / "k400" / "videos" / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4")
            label = folder.name.replace("_", " ")  # Kinetics labels have spaces: "playing guitar"
            rows[KINETICS_SPLITS[i]].append(f"{label},{youtube_id},{start},{start + 10},{KINETICS_SPLITS[i]}")
    for split, lines in rows.items():
        (root / "k400" / f"{split}.csv").write_text("label,youtube_id,time_start,time_end,split\n" + "\n".join(lines)
                                                    + "\n")


@pytest.mark.slow
def test_kinetics_walkthrough_from_a_csv_and_downloaded_clips(tmp_path, monkeypatch):
    """Per-split CSVs → one CSV → params → manifest → features → train → evaluate → predict; then step 8's one
    different command, which the page gives in prose, on the UCF101-style tree (in this process: no start-up)."""
    page = REPO / "docs" / "kinetics.md"
    kinetics_download(tmp_path)
    steps, outputs = run_blocks(page, tmp_path)
    assert len(steps) >= 7
    assert "6 clips, 2 classes (train 2, val 2, test 2)" in output_of(steps, outputs, "cmmvt manifest\n")
    assert (tmp_path / "work" / "classifier.pt").is_file()
    assert '"top1"' in output_of(steps, outputs, "metrics.json")
    predicted = output_of(steps, outputs, "cmmvt predict")
    assert re.search(r"disklrhum02_000020_000030\.mp4: disk (lr hum|rl beeps) \d\.\d\d", predicted), predicted
    ucf = re.findall(r"`cmmvt (manifest --source folder [^`]*)`", page.read_text())
    assert len(ucf) == 1, ucf
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, shlex.split(ucf[0]))
    assert res.exit_code == 0 and "6 clips, 2 classes" in res.output, res.output
