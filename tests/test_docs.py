"""The walkthrough in docs/ runs as written: every ```bash block of docs/walkthrough.md, in order, in an empty
folder, with the installed `cmmvt`."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def blocks(path: Path) -> list[str]:
    """The ```bash blocks of a markdown file, in order."""
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.slow
def test_walkthrough_from_a_folder_of_clips_to_predictions(tmp_path):
    """Folder → params → manifest → features → pretrain → train → evaluate → predict (and a timeline)."""
    steps = blocks(REPO / "docs" / "walkthrough.md")
    assert len(steps) >= 7
    outputs = []
    for step in steps:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=tmp_path, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{step}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    assert (tmp_path / "work" / "classifier.pt").is_file() and (tmp_path / "work" / "pretrain.pt").is_file()
    assert '"top1"' in outputs[steps.index(next(s for s in steps if "metrics.json" in s))]
    predicted = outputs[steps.index(next(s for s in steps if "--top-k 3" in s))]
    assert re.search(r"square_chirp_up_000\.mp4: \w+ \d\.\d\d", predicted), predicted
    assert any(p.suffix == ".png" for p in (tmp_path / "work" / "timeline").iterdir())
