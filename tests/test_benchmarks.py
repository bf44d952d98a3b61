"""Every benchmark's --quick mode runs, so the scripts cannot rot (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_extract_benchmark_quick(tmp_path):
    out = tmp_path / "extract.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/extract.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=600)
    report = json.loads(out.read_text())
    assert set(report["frames_per_s"]) == {"decode_only", "cnn_only", "cmmvt", "naive"}
    assert report["frames"] > 0 and report["ratio_cmmvt_over_naive"] > 0


@pytest.mark.slow
def test_attention_benchmark_quick(tmp_path):
    out = tmp_path / "attention.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/attention.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=600)
    report = json.loads(out.read_text())
    assert {"results", "speedup_native_over_hf", "targets"} <= set(report)
    assert all(v > 0 for v in report["speedup_native_over_hf"].values())
