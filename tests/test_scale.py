"""Sharded extraction: torchrun ranks (gloo, CPU) and independent ``--shard i/N`` ranks give the one-process cache.

Each torchrun launch costs a few seconds of start-up, so the file launches four (the ``slow`` tests): a 2-rank
run, a 2-rank run whose rank 1 is killed, the rerun of that one, and the DVC stage with ``extract.procs: 2``.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from typer.testing import CliRunner

from cmmvt import distributed
from cmmvt.cli import app
from cmmvt.config import ExtractParams
from cmmvt.distributed import World
from cmmvt.features import cache, extract
from test_extract import write_clip

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
DURATIONS = [2.0, 1.0, 3.0, 0.5, 1.5, 2.5, 1.0, 2.0]
FLAGS = ["--backbone", "none", "-S", "extract.image_size=64", "--batch-size", "8", "-S", "extract.shard_size=1"]


def params(out: Path) -> ExtractParams:
    return ExtractParams(out=str(out), backbone="none", image_size=64, batch_size=8, shard_size=1)


def torchrun(*args: str, procs: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *args]


def assert_same_cache(a: Path, b: Path, modalities=("video",)) -> None:
    """Same ids, bit-identical rows and timestamps, same failures."""
    for m in modalities:
        with cache.CacheReader(a, m) as x, cache.CacheReader(b, m) as y:
            assert sorted(x.ids) == sorted(y.ids)
            for vid in x.ids:
                assert np.array_equal(x[vid], y[vid]) and np.array_equal(x.times(vid), y.times(vid)), (m, vid)
            assert sorted(f["video_id"] for f in x.failures()) == sorted(f["video_id"] for f in y.failures())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Eight clips of different lengths and one broken file."""
    root = tmp_path_factory.mktemp("clips")
    for i, seconds in enumerate(DURATIONS):
        write_clip(root / f"c{i}.mp4", cls=i, duration=seconds, seed=i)
    (root / "broken.mp4").write_text("not a video\n" * 20)
    return root


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """Both modalities extracted by one process."""
    out = tmp_path_factory.mktemp("ref")
    items, _ = extract.discover(folder)
    extract.run(items, params(out), show_progress=False, world=World())
    return out


def test_balanced_split_is_deterministic_complete_and_balanced():
    w = list(np.random.default_rng(0).uniform(0, 10, 101))
    for n in (1, 2, 3, 7):
        parts = distributed.balanced_split(w, n)
        assert parts == distributed.balanced_split(w, n) and sorted(sum(parts, [])) == list(range(101))
        loads = [sum(w[i] for i in p) for p in parts]
        assert max(loads) <= sum(w) / n + max(w)  # LPT: at most one item over the mean
    assert distributed.balanced_split([], 2) == [[], []]


def test_cpu_ranks_share_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert extract.set_threads(ExtractParams(), World(rank=1, size=2, local_rank=1, local_size=2, group=True)) \
        == max(1, cores // 2)
    assert extract.set_threads(ExtractParams(threads=3), World(size=4, local_size=4, group=True)) == 3
    assert extract.set_threads(ExtractParams(), World()) == cores


@pytest.mark.slow
def test_two_torchrun_ranks_equal_one_process(folder, reference, tmp_path):
    out = tmp_path / "two"
    proc = subprocess.run(torchrun("-m", "cmmvt.cli", "extract", "--videos", str(folder), "--out", str(out), *FLAGS),
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert_same_cache(out, reference, ("video", "audio"))
    for m in ("video", "audio"):  # each rank wrote its own files; one failure, found by one rank
        names = {p.name for p in (out / m).iterdir()}
        assert {"shard-00000.h5", "shard-00000-w1.h5"} <= names
        assert len([f for f in cache.CacheReader(out, m).failures() if f["video_id"] == "broken"]) == 1
    # rank 0 reports the job once: every rank's clips and failures
    assert proc.stderr.count("video: 8 succeeded, 1 failed") == 1 and proc.stderr.count("failed ") == 2
    assert "rank 1" not in proc.stderr


def _rank1(launcher: psutil.Process, deadline: float) -> psutil.Process:
    while time.time() < deadline:
        for p in launcher.children(recursive=True):
            try:
                if p.environ().get("RANK") == "1":
                    return p
            except psutil.Error:
                continue
        time.sleep(0.02)
    raise AssertionError("torchrun started no rank 1")


@pytest.mark.slow
def test_killed_rank_leaves_valid_shards_and_rerun_with_two_or_one_rank_completes(folder, reference, tmp_path):
    killed = tmp_path / "killed"
    cmd = ["-m", "cmmvt.cli", "extract", "--videos", str(folder), "--modality", "video", *FLAGS]
    launcher = subprocess.Popen(torchrun(*cmd, "--out", str(killed)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ENV)
    deadline = time.time() + 300
    rank1 = _rank1(psutil.Process(launcher.pid), deadline)
    while not list((killed / "video").glob("shard-*-w1.h5")) and time.time() < deadline:
        time.sleep(0.005)
    rank1.send_signal(signal.SIGKILL)  # after its first clip
    _, err = launcher.communicate(timeout=300)
    assert launcher.returncode != 0 and "SIGKILL" in err  # torchrun names the rank that failed, stops the other
    with cache.CacheReader(killed, "video") as r:  # what was published is valid; the job is not complete
        assert 1 <= len(r) < 8 and all(r[v].shape[0] > 0 for v in r)
    two, one = tmp_path / "two", tmp_path / "one"
    shutil.copytree(killed, two)
    shutil.copytree(killed, one)
    rerun = subprocess.run(torchrun(*cmd, "--out", str(two)), capture_output=True, text=True, env=ENV, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "already cached" in rerun.stderr and "8 succeeded" not in rerun.stderr
    items, _ = extract.discover(folder)
    s = extract.run(items, params(one), modality="video", show_progress=False, world=World())[0]
    assert s.cached >= 1 and s.cached + s.succeeded == 8
    for out in (two, one):
        assert_same_cache(out, reference)
        assert not list((out / "video").glob("*.tmp"))


@pytest.mark.slow  # the one-process reference of both modalities
def test_independent_shards_cover_the_folder_and_resume_across_n(folder, reference, tmp_path):
    items, _ = extract.discover(folder)
    for i in range(2):  # a job array of 2: the tasks never talk
        extract.run(items, params(tmp_path / "array"), modality="video", show_progress=False, world=World(i, 2))
    assert_same_cache(tmp_path / "array", reference)
    out = tmp_path / "changed"
    first = extract.run(items, params(out), modality="video", show_progress=False, world=World(0, 3))[0]
    assert 0 < first.succeeded + first.failed < 9
    rest = [extract.run(items, params(out), modality="video", show_progress=False, world=World(i, 2))[0]
            for i in range(2)]  # the same folder with another N: the clips done by task 0 of 3 count as done
    assert sum(s.cached for s in rest) == first.succeeded
    assert sum(s.succeeded for s in rest) == 8 - first.succeeded
    assert_same_cache(out, reference)


def test_shard_option_is_checked_and_errors_name_the_rank(folder, tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(app, ["extract", "--videos", str(folder), "--shard", "2/2"])
    assert res.exit_code == 1 and "--shard = '2/2': expected i/N with 0 <= i < N" in res.output
    cache.CacheWriter(tmp_path / "video", "video", {"dim": 1280}).close()  # a cache of other feature params
    res = runner.invoke(app, ["extract", "--videos", str(folder), "--out", str(tmp_path), "--shard", "1/2", *FLAGS])
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert any(line.startswith("error: rank 1 of 2: ") for line in res.output.splitlines())  # a line of its own
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = runner.invoke(app, ["extract", "--videos", str(folder), "--shard", "0/2"])
    assert res.exit_code == 1 and "under torchrun" in res.output


@pytest.mark.slow
def test_dvc_stage_runs_extract_procs_torchrun_processes(folder, reference, tmp_path):
    import pandas as pd

    paths = sorted(folder.glob("c*.mp4"))
    pd.DataFrame({"video_id": [p.stem for p in paths], "path": [str(p) for p in paths], "label": "x",
                  "split": "train"}).to_csv(tmp_path / "manifest.csv", index=False)
    p = {"data": {"manifest": "manifest.csv"},
         "extract": {"out": "features", "backbone": "none", "image_size": 64, "batch_size": 8, "shard_size": 1,
                     "procs": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "extract.py"), "video"], cwd=tmp_path,
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("video: 8 succeeded, 0 failed") == 1  # rank 0 prints the job's summary
    root = tmp_path / "features" / "video"
    assert (root / extract.COMPLETE).is_file() and list(root.glob("shard-*-w1.h5"))
    with cache.CacheReader(root) as r, cache.CacheReader(reference, "video") as ref:
        assert sorted(r.ids) == sorted(v for v in ref.ids)
        assert all(np.array_equal(r[v], ref[v]) for v in r.ids)
