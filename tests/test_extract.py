"""Extraction through the real decoder, CNN and HDF5 cache: rows, alignment, determinism, resume, failures."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmmvt import media
from cmmvt.features import backbones, cache, extract
from cmmvt.cli import app
from cmmvt.config import ExtractParams, SynthParams
from cmmvt.data.synth import CLASSES, clip_rng, render_clip

FPS = 4.0
TINY = SynthParams(size=64, duration=2.0)


def params(out: Path, **kw) -> ExtractParams:
    return ExtractParams(out=str(out), backbone="none", image_size=64, fps=FPS, batch_size=8, **kw)


def write_clip(path: Path, cls: int = 0, duration: float = 2.0, audio: bool = True, seed: int = 0) -> Path:
    frames, wave = render_clip(CLASSES[cls], clip_rng(seed, cls, 0), TINY.model_copy(update={"duration": duration}))
    path.parent.mkdir(parents=True, exist_ok=True)
    media.encode_clip(path, frames, TINY.fps, wave if audio else None, TINY.sample_rate)
    return path


@pytest.fixture(scope="module")
def bb():
    return backbones.create("none", image_size=64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    write_clip(root / "a" / "x.mp4", cls=0)
    write_clip(root / "b" / "x.mp4", cls=1)  # same stem, other folder
    write_clip(root / "b" / "short.mp4", cls=2, duration=0.16)  # shorter than 1/fps
    write_clip(root / "b" / "mute.mkv", cls=3, duration=1.0, audio=False)
    return root


def test_rows_aligned_and_ids_unique(clips, tmp_path, bb):
    items, skipped = extract.discover(clips)
    assert sorted(i.video_id for i in items) == ["a/x", "b/mute", "b/short", "b/x"] and not skipped
    p = params(tmp_path)
    sums = [extract.run_modality(items, p, m, bb) for m in ("video", "audio")]
    assert all(s.succeeded == 4 and s.failed == 0 for s in sums)
    with cache.CacheReader(tmp_path, "video") as v, cache.CacheReader(tmp_path, "audio") as a:
        assert v.dim == a.dim == 1280
        for vid, duration in [("a/x", 2.0), ("b/x", 2.0), ("b/short", 0.16)]:
            expect = max(1, round(duration * FPS))
            assert abs(len(v[vid]) - expect) <= 1 and len(v[vid]) == len(a[vid])
            np.testing.assert_array_equal(v.times(vid), a.times(vid))
            assert v[vid].dtype == np.float32 and np.isfinite(v[vid]).all()
        assert len(v["b/short"]) == 1
        assert not np.array_equal(v["a/x"], v["b/x"])  # same stem, different clips: nothing overwritten
        assert len(v["b/mute"]) == 4 and len(a["b/mute"]) == 0 and not a.has_stream("b/mute")
        assert v.attrs["fps"] == FPS and a.attrs["n_mels"] == 64 and "versions" in v.attrs


def test_same_input_gives_bit_identical_cache(clips, tmp_path, bb):
    items, _ = extract.discover(clips)
    for run in ("one", "two"):
        extract.run_modality(items, params(tmp_path / run), "video", bb)
    shards = sorted((tmp_path / "one/video").glob("shard-*.h5"))
    assert shards
    for s in shards:
        assert s.read_bytes() == (tmp_path / "two/video" / s.name).read_bytes()


def test_failures_are_recorded_and_run_continues(clips, tmp_path, bb):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n" * 50)
    good = (clips / "a" / "x.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(good[: len(good) // 3])
    items, _ = extract.discover(clips)
    items += extract.discover(bad)[0]
    s = extract.run_modality(items, params(tmp_path / "f"), "video", bb)
    assert s.succeeded == 4 and s.failed == 3
    with cache.CacheReader(tmp_path / "f", "video") as r:
        fails = {Path(f["path"]).name: f for f in r.failures()}
    assert set(fails) == {"empty.mp4", "text.mp4", "truncated.mp4"}
    assert all(f["stage"] == "decode" and f["reason"] for f in fails.values())
    assert "4 succeeded, 3 failed" in s.line()


def test_refuses_to_mix_feature_params(clips, tmp_path, bb):
    items, _ = extract.discover(clips)
    extract.run_modality(items[:1], params(tmp_path), "video", bb)
    with pytest.raises(cache.ParamsMismatch, match="fps"):
        extract.run_modality(items, params(tmp_path).model_copy(update={"fps": 8.0}), "video", bb)
    s = extract.run_modality(items, params(tmp_path).model_copy(update={"fps": 8.0}), "video", bb, overwrite=True)
    assert s.succeeded == 4 and s.cached == 0


def test_cli_on_folder_with_non_video_file(clips, tmp_path):
    (clips / "notes.txt").write_text("not a video")
    try:
        _cli_checks(clips, tmp_path)
    finally:
        (clips / "notes.txt").unlink()


def _cli_checks(clips, tmp_path):
    out = tmp_path / "cli"
    runner = CliRunner()
    res = runner.invoke(app, ["extract", "--videos", str(clips), "--out", str(out), "--backbone", "none",
                              "-S", "extract.image_size=64", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    assert "notes.txt" in res.output and "4 succeeded, 0 failed" in res.output
    again = runner.invoke(app, ["extract", "--videos", str(clips), "--out", str(out), "--backbone", "none",
                                "-S", "extract.image_size=64", "--modality", "video"])
    assert "4 already cached" in again.output
    info = runner.invoke(app, ["cache", "info", str(out)])
    assert info.exit_code == 0 and "4 videos" in info.output and "1 without stream" in info.output
    mixed = runner.invoke(app, ["extract", "--videos", str(clips), "--out", str(out), "--backbone", "none",
                                "-S", "extract.image_size=64", "--fps", "2"])
    assert mixed.exit_code == 1 and "--overwrite" in mixed.output


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    root = tmp_path / "clips"
    for i in range(6):
        write_clip(root / f"c{i}.mp4", cls=i, duration=2.0)
    cmd = [sys.executable, "-m", "cmmvt.cli", "extract", "--videos", str(root), "--backbone", "none",
           "--modality", "video", "--batch-size", "8", "-S", "extract.image_size=64", "-S", "extract.shard_size=1",
           "-S", "extract.workers=1"]
    killed = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "killed/video").glob("shard-*.h5")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    done_before = len(list((tmp_path / "killed/video").glob("shard-*.h5")))
    assert 1 <= done_before < 6
    subprocess.run(cmd + ["--out", str(tmp_path / "killed")], check=True, capture_output=True)
    subprocess.run(cmd + ["--out", str(tmp_path / "clean")], check=True, capture_output=True)
    with cache.CacheReader(tmp_path / "killed", "video") as k, cache.CacheReader(tmp_path / "clean", "video") as c:
        assert sorted(k.ids) == sorted(c.ids) and len(c) == 6
        for vid in c.ids:
            np.testing.assert_array_equal(k[vid], c[vid])
            np.testing.assert_array_equal(k.times(vid), c.times(vid))


def test_stage_resumes_interrupted_run_but_redoes_completed_one(tmp_path):
    import pandas as pd

    clip = write_clip(tmp_path / "c" / "a.mp4", cls=0)
    write_clip(tmp_path / "c" / "b.mp4", cls=1)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"video_id": ["a", "b"], "path": [str(clip), str(tmp_path / "c" / "b.mp4")], "label": ["x", "y"],
                  "split": ["train", "test"]}).to_csv(manifest, index=False)
    p = params(tmp_path / "feats")

    def stage() -> str:  # the DVC stage's call; its summary line is the .complete marker
        assert extract.stage(p, manifest, "video", overwrite=True)
        return (tmp_path / "feats/video" / extract.COMPLETE).read_text()

    assert stage().startswith("video: 2 succeeded, 0 failed, 0 already cached")
    with cache.CacheReader(tmp_path / "feats", "video") as r:
        before = r["a"]
    write_clip(clip, cls=4)  # the input changed: DVC reruns the completed stage
    assert stage().startswith("video: 2 succeeded, 0 failed, 0 already cached")
    with cache.CacheReader(tmp_path / "feats", "video") as r:
        assert not np.array_equal(before, r["a"])
    (tmp_path / "feats/video" / extract.COMPLETE).unlink()  # as if killed before the end
    assert stage().startswith("video: 0 succeeded, 0 failed, 2 already cached")
