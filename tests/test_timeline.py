"""Timelines: a real concatenated video of three known segments, windows, cache = file, bounded memory, outputs."""

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cmmvt import config, media
from cmmvt.cli import app
from cmmvt.eval import timeline
from cmmvt.features import cache, extract
from cmmvt.models import build_model
from cmmvt.train import loop

FPS, SR, SIDE = 4.0, 16000, 48
COLOURS = {"red": (200, 30, 30), "green": (30, 190, 40), "blue": (40, 50, 210)}
TONES = {"red": 330.0, "green": 880.0, "blue": 1900.0}


def _segment(label: str, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, 3) frames of the class colour with moving noise and (N,) its tone with noise, at 12 fps."""
    n = int(round(seconds * 12))
    frames = np.clip(np.array(COLOURS[label])[None, None, None] + rng.normal(0, 25, (n, SIDE, SIDE, 3)), 0, 255)
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * TONES[label] * t) + 0.02 * rng.standard_normal(len(t))
    return frames.astype(np.uint8), wave.astype(np.float32)


def _encode(path, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
    media.encode_clip(path, np.concatenate([f for f, _ in parts]), 12, np.concatenate([w for _, w in parts]), SR,
                      preset="ultrafast")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on real encoded 2-s clips of three colour+tone classes; and a 24-s video of three
    8-s segments (green, blue, red) encoded as one file."""
    root = tmp_path_factory.mktemp("timeline")
    rng = np.random.default_rng(0)
    rows = []
    for label in COLOURS:
        for i in range(4):
            path = root / "clips" / f"{label}_{i}.mp4"
            path.parent.mkdir(exist_ok=True)
            _encode(path, [_segment(label, 2.0, rng)])
            rows.append({"video_id": f"{label}_{i}", "path": str(path), "label": label, "split": "train"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    p = config.validate({
        "seed": 0, "data": {"manifest": str(root / "manifest.csv")},
        "extract": {"out": str(root / "features"), "backbone": "none", "image_size": 32, "fps": FPS, "batch_size": 16},
        "pretrain": {"objective": "none"},
        "model": {"hidden": 32, "heads": 2, "layers": 1, "crop_frames": 4, "window": 2, "dropout": 0.0},
        "train": {"epochs": 25, "min_steps": 0, "batch_size": 4, "lr": 3e-3, "warmup_epochs": 1, "patience": 100,
                  "label_smoothing": 0.0}})
    items, _ = extract.discover(root / "manifest.csv")
    extract.run(items, p.extract, show_progress=False)
    loop.train(p, root / "model.pt", live_dir=None)
    long = root / "long.mp4"
    _encode(long, [_segment(label, 8.0, rng) for label in ("green", "blue", "red")])
    return root, long


def test_three_segments_within_one_stride(trained, tmp_path):
    root, long = trained
    [tl] = timeline.from_files([long], root / "model.pt", cache_dir=tmp_path / "cache", stride=0.5)
    assert [s.label for s in tl.segments] == ["green", "blue", "red"]
    bounds = [s.end for s in tl.segments[:-1]]
    assert np.allclose(bounds, [8.0, 16.0], atol=0.5), bounds  # one stride
    assert tl.segments[0].start == 0 and tl.segments[-1].end == pytest.approx(24.0, abs=0.3)
    # from the cache the file was extracted into: the same timeline, no decoding
    [again] = timeline.from_cache(tmp_path / "cache", ["long"], root / "model.pt", stride=0.5)
    np.testing.assert_allclose(again.window_prob, tl.window_prob, atol=1e-6)
    assert again.segments == tl.segments


def test_cli_writes_csv_json_png_that_agree(trained, tmp_path):
    root, long = trained
    res = CliRunner().invoke(app, ["predict", str(long), "--timeline", "--model", str(root / "model.pt"),
                                   "--stride", "0.5", "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    [r] = json.loads(res.stdout[res.stdout.index("["):])
    files = {k: tmp_path / "out" / v.split("/")[-1] for k, v in r["files"].items()}
    segments = pd.read_csv(files["segments"])
    assert list(segments["label"]) == [s["label"] for s in r["segments"]] == ["green", "blue", "red"]
    windows = pd.read_csv(files["windows"])
    assert windows["start"].iloc[0] == 0 and windows["end"].iloc[-1] == pytest.approx(24.0, abs=0.3)
    assert np.allclose(np.diff(windows["start"]), 0.5)
    assert json.loads(files["json"].read_text())["segments"] == r["segments"]
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["png"].stat().st_size > 10_000


def test_broken_file_reported_others_go_on(trained, tmp_path):
    root, long = trained
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(long.read_bytes()[:3000])
    out = timeline.from_files([bad, long], root / "model.pt")
    assert out[0]["path"] == str(bad) and out[0]["error"]
    assert [s.label for s in out[1].segments] == ["green", "blue", "red"]


@pytest.mark.parametrize("length,window,stride", [(1, 4, 2), (3, 4, 2), (4, 4, 2), (10, 4, 3), (17, 16, 8),
                                                  (100, 16, 5)])
def test_windows_cover_every_row(length, window, stride):
    starts = timeline.window_starts(length, window, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all() and starts[0] == 0 and np.all(np.diff(starts) == stride)
    assert starts[-1] + window >= length and (len(starts) == 1 or starts[-2] + window < length)  # no extra window
    if length <= window:
        assert starts == [0]


def test_min_segment_joins_short_runs_to_the_neighbour_they_favour():
    prob = np.full((12, 3), 0.1)
    lab = [0] * 5 + [2] + [1] * 6  # a one-row blip between two long runs
    prob[np.arange(12), lab] = 0.8
    prob[5, 1] = 0.5  # the blip's row prefers class 1 over 0
    assert timeline.merge_segments(prob, 1) == [(0, 5, 0), (5, 6, 2), (6, 12, 1)]
    assert timeline.merge_segments(prob, 2) == [(0, 5, 0), (5, 12, 1)]
    assert timeline.merge_segments(prob, 100) in ([(0, 12, 1)], [(0, 12, 0)])  # never fewer than one


def _write_cache(root, n_rows: int, dim: int = 256, **attrs) -> None:
    rng = np.random.default_rng(0)
    for m in ("video", "audio"):
        with cache.CacheWriter(root / m, m, {"backbone": "none", "dim": dim, "fps": FPS, **attrs}) as w:
            w.begin("clip")
            for a in range(0, n_rows, 1000):  # written in chunks: the writer's own memory is not measured here
                n = min(1000, n_rows - a)
                w.append(rng.standard_normal((n, dim)).astype(np.float32), ((np.arange(a, a + n) + 0.5) / FPS))
            w.end(True, n_rows / FPS)


def test_memory_does_not_grow_with_length(tmp_path):
    """Windows are read from the cache a batch at a time: 40x the rows, about the same peak (the rows of the long
    clip alone would be 20 MB)."""
    p = config.validate({"model": {"hidden": 16, "heads": 2, "layers": 1, "crop_frames": 8, "window": 4}})
    torch.manual_seed(0)
    model = build_model(p.model, {"video": 256, "audio": 256}, 3).eval()
    ckpt = {"labels": ["a", "b", "c"], "params": p.model_dump()}
    peaks = {}
    for n in (500, 20_000):
        _write_cache(tmp_path / str(n), n)
        with cache.CacheReader(tmp_path / str(n), "video") as v, cache.CacheReader(tmp_path / str(n), "audio") as a:
            tracemalloc.start()
            tl = timeline.timeline(model, ckpt, {"video": v, "audio": a}, "clip", stride=1.0)
            peaks[n] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert len(tl.row_prob) == n and tl.row_prob.shape[1] == 3
    assert peaks[20_000] < 4 * peaks[500] and peaks[20_000] < 0.25 * 20_000 * 256 * 4, peaks


def test_cache_of_other_features_refused(trained, tmp_path):
    root, _ = trained
    _write_cache(tmp_path, 20, dim=1280, image_size=64)  # the model's features were 32 px
    with pytest.raises(cache.ParamsMismatch, match="image_size: 32 → 64"):
        timeline.from_cache(tmp_path, ["clip"], root / "model.pt")


def test_explain_whole_clip_and_windows(trained, tmp_path):
    """--explain without --timeline: the whole clip as one window, one segment; with it, every window's rollout."""
    root, long = trained
    res = CliRunner().invoke(app, ["predict", str(long), "--explain", "--model", str(root / "model.pt"),
                                   "--out", str(tmp_path / "whole"), "--json"])
    assert res.exit_code == 0, res.output
    [r] = json.loads(res.stdout[res.stdout.index("["):])
    assert len(r["segments"]) == 1 and len(pd.read_csv(r["files"]["windows"])) == 1
    rows = pd.read_csv(r["files"]["rows"])
    assert len(rows) == 96 and rows["relevance_av"].mean() == pytest.approx(1.0, abs=1e-3)
    assert rows["relevance_av"].std() > 0.01 and (rows["relevance_av"] >= 0).all()
    [tl] = timeline.from_files([long], root / "model.pt", stride=0.5, explain=True)
    assert set(tl.relevance) == {"av"} and len(tl.relevance["av"]) == 96
    assert tl.relevance["av"].mean() == pytest.approx(1.0, abs=0.05)
    files = timeline.write(tl, tmp_path / "win")
    assert files["png"].stat().st_size > 10_000 and "rows" in files


def test_portrait_video_without_audio(trained, tmp_path):
    """A portrait clip with no audio stream: the audio strip is empty, the video still decides, outputs written."""
    root, _ = trained
    rng = np.random.default_rng(1)
    frames = np.concatenate([np.clip(np.array(COLOURS[c])[None, None, None] + rng.normal(0, 25, (72, 96, 48, 3)),
                                     0, 255).astype(np.uint8) for c in ("blue", "red")])  # 2 × 6 s at 12 fps
    path = tmp_path / "portrait.mp4"
    media.encode_clip(path, frames, 12, preset="ultrafast")
    [tl] = timeline.from_files([path], root / "model.pt", stride=0.5)
    assert not tl.present["audio"].any() and tl.present["video"].all() and len(tl.row_prob) == 48
    assert tl.segments[0].start == 0 and tl.segments[-1].end == pytest.approx(12.0, abs=0.3)
    files = timeline.write(tl, tmp_path / "out")
    assert len(pd.read_csv(files["segments"])) == len(tl.segments) and files["png"].is_file()
