"""Real folders end to end: mixed sizes and formats in one run, streaming, changed files, write faults, whole clips."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmmvt import media
from cmmvt.features import backbones, cache, extract, pieces
from cmmvt.cli import app
from cmmvt.config import ExtractParams, ModelParams, Params
from cmmvt.models import build_model
from cmmvt.checkpoints import save_checkpoint

FPS = 4.0
SR = 16000
REPO = Path(__file__).resolve().parents[1]


def _content(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """A moving gradient with a bright square: (n, h, w, 3) uint8, changes over time."""
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (x * 255 // max(w - 1, 1) + 9 * i) % 256
        frames[i, ..., 1] = (y * 255 // max(h - 1, 1)) % 256
        frames[i, ..., 2] = rng.integers(0, 40)
        s = max(2, min(h, w) // 4)
        top, left = (i * 3) % max(1, h - s), (i * 5) % max(1, w - s)
        frames[i, top : top + s, left : left + s] = 255
    return frames


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# name, (width, height), fps, seconds, container/codec options, audio (codec or None)
CLIPS = {
    "wide_169.mp4": ((256, 144), 30, 2.0, {}, "aac"),
    "classic_43.mkv": ((160, 120), 25, 2.5, {"pix_fmt": "yuv444p"}, "libopus"),
    "square_11.avi": ((96, 96), 25, 1.5, {"vcodec": "mpeg4"}, "libmp3lame"),
    "portrait_916.mp4": ((72, 128), 60, 2.0, {}, "aac"),
    "odd_161x97.mkv": ((161, 97), 24, 1.0, {"pix_fmt": "yuv444p"}, None),  # no audio, odd size
    "tenbit.mkv": ((128, 72), 30, 1.5, {"pix_fmt": "yuv420p10le"}, "aac"),
    "vp9.webm": ((112, 64), 25, 1.0, {"vcodec": "libvpx-vp9"}, "libopus"),
    "rotated.mp4": ((128, 96), 25, 1.5, {"rotation": 90}, "aac"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    (root / "clips").mkdir()
    rng = np.random.default_rng(0)
    for name, ((w, h), fps, seconds, opts, acodec) in CLIPS.items():
        frames = _content(rng, int(round(seconds * fps)), h, w)
        wave = _tone(seconds, 300 + 50 * len(name)) if acodec else None
        media.encode_clip(root / "clips" / name, frames, fps, wave, SR, acodec=acodec or "aac", preset="ultrafast",
                          **opts)
    good = (root / "clips" / "wide_169.mp4").read_bytes()
    (root / "clips" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    return root / "clips"


@pytest.fixture(scope="module")
def extracted(folder, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("feats")
    res = CliRunner().invoke(app, ["extract", "--videos", str(folder), "--out", str(out), "--backbone", "none",
                                   "-S", "extract.image_size=64", "--batch-size", "8"])
    return out, res.output + f"\nexit {res.exit_code}"


def test_one_run_over_mixed_sizes_formats_rotations(folder, extracted):
    out, log = extracted
    assert log.endswith("exit 0"), log
    with cache.CacheReader(out, "video") as v, cache.CacheReader(out, "audio") as a:
        assert sorted(v.ids) == sorted(Path(n).stem for n in CLIPS)
        for name in CLIPS:
            vid = Path(name).stem
            expect = len(media.sample_times(media.probe(folder / name).duration, FPS))
            assert len(v[vid]) == expect, name
            has_audio = CLIPS[name][4] is not None
            assert a.has_stream(vid) == has_audio and len(a[vid]) == (expect if has_audio else 0), name
            assert np.isfinite(v[vid]).all() and v[vid].std() > 0
        for r in (v, a):
            assert [f["video_id"] for f in r.failures()] == ["truncated"]
    assert "truncated.mp4" in log and "8 succeeded, 1 failed" in log


def test_rows_equal_each_clip_extracted_alone(folder, extracted):
    """Batching clips of other sizes together changes nothing: each clip's rows equal a run on it alone."""
    out, _ = extracted
    p = ExtractParams(backbone="none", image_size=64, fps=FPS, batch_size=8)
    bb = backbones.create("none", image_size=64)
    with cache.CacheReader(out, "video") as v:
        for name in ("rotated.mp4", "portrait_916.mp4", "odd_161x97.mkv"):
            alone = extract.clip_features(folder / name, p, {"video": bb}, ["video"])["video"]
            np.testing.assert_allclose(alone, v[Path(name).stem], rtol=1e-3, atol=2e-3)  # float16 cache: 1 step


def test_rotated_and_portrait_frames_are_upright_squares(folder):
    """The views are squares of the upright frame, whatever the aspect ratio: three along a long side (default)."""
    p = ExtractParams(backbone="none", image_size=48, fps=FPS)
    for name in ("rotated.mp4", "portrait_916.mp4", "wide_169.mp4"):
        info = media.probe(folder / name)
        blocks = list(pieces.video_pieces(extract.Item("x", folder / name), p, info, rows=3))
        assert all(x.shape[1:] == (3, 48, 48, 3) and x.dtype == torch.uint8 for x, _ in blocks)
        assert sum(len(x) for x, _ in blocks) == len(media.sample_times(info.duration, FPS))
    assert media.probe(folder / "rotated.mp4").height > media.probe(folder / "rotated.mp4").width


def test_predict_on_mixed_folder(folder, extracted, tmp_path):
    out, _ = extracted
    with cache.CacheReader(out, "video") as v, cache.CacheReader(out, "audio") as a:
        features = {"video": {k: val for k, val in v.attrs.items() if k != "versions"},
                    "audio": {k: val for k, val in a.attrs.items() if k != "versions"}}
    params = Params.model_validate({"extract": {"backbone": "none", "image_size": 64, "fps": FPS},
                                    "model": {"hidden": 32, "heads": 2, "layers": 1, "crop_frames": 4}})
    torch.manual_seed(0)
    model = build_model(params.model, {"video": 1280, "audio": 1280}, 3)
    save_checkpoint(tmp_path / "m.pt", model, params, ["a", "b", "c"], {"video": 1280, "audio": 1280}, features)
    paths = sorted(str(p) for p in folder.iterdir())
    res = CliRunner().invoke(app, ["predict", *paths, "--model", str(tmp_path / "m.pt"), "--json"])
    assert res.exit_code == 0, res.output
    import json

    results = json.loads(res.stdout)
    assert len(results) == len(paths)
    errors = {Path(r["path"]).name for r in results if "error" in r}
    assert errors == {"truncated.mp4"}
    assert all(abs(sum(p for _, p in r["top"]) - 1.0) < 1e-4 for r in results if "top" in r)


# ------------------------------------------------------------------------------------------- streaming


def test_streamed_rows_equal_whole_clip_and_writer_gets_bounded_chunks(tmp_path, monkeypatch):
    """A 12-s clip (48 rows) through pieces of 5 rows gives the rows of one 1000-row piece, bit for bit."""
    rng = np.random.default_rng(1)
    clip = tmp_path / "long.mp4"
    media.encode_clip(clip, _content(rng, 12 * 10, 72, 96), 10, _tone(12.0, 440), SR, preset="ultrafast")
    items = [extract.Item("long", clip)]
    bb = backbones.create("none", image_size=48)
    sizes: list[int] = []
    piece_rows: list[int] = []
    append, make_pieces = cache.CacheWriter.append, pieces.clip_pieces

    def spy(self, emb, t):
        sizes.append(len(emb))
        return append(self, emb, t)

    def spy_pieces(*args, **kw):
        for piece in make_pieces(*args, **kw):
            piece_rows.append(piece.rows)
            yield piece

    monkeypatch.setattr(cache.CacheWriter, "append", spy)
    monkeypatch.setattr(pieces, "clip_pieces", spy_pieces)
    rows = {}
    for piece in (5, 1000):
        monkeypatch.setattr(pieces, "ROWS_PER_PIECE", piece)
        sizes.clear()
        piece_rows.clear()
        p = ExtractParams(out=str(tmp_path / f"p{piece}"), backbone="none", image_size=48, fps=FPS, batch_size=8)
        for m in ("video", "audio"):
            extract.run_modality(items, p, m, bb)
            with cache.CacheReader(tmp_path / f"p{piece}", m) as r:
                rows[piece, m] = (r["long"], r.times("long"))
        assert sum(sizes) == sum(piece_rows) == 2 * 48
        if piece == 5:  # decoder → CNN → writer in pieces of at most 5 rows
            assert max(piece_rows) == 5 and max(sizes) <= 5
        else:
            assert max(piece_rows) == 48
    for m in ("video", "audio"):
        assert rows[5, m][0].shape == (48, 1280)
        assert rows[5, m][0].tobytes() == rows[1000, m][0].tobytes(), m
        np.testing.assert_array_equal(rows[5, m][1], rows[1000, m][1])


def test_clip_longer_than_shard_budget_is_one_atomic_shard(tmp_path):
    rows = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    with cache.CacheWriter(tmp_path, "video", {"dim": 8}, shard_size=10, shard_rows=16) as w:
        w.begin("long")
        for i in range(0, 50, 7):
            w.append(rows[i : i + 7], np.arange(i, min(i + 7, 50), dtype=np.float32))
        assert not list(tmp_path.glob("shard-*"))  # nothing published while the clip is open
        w.end(True, 12.5)
        assert len(list(tmp_path.glob("shard-*.h5"))) == 1  # over budget: published at once, whole
        w.add(cache.ClipFeatures("short", rows[:3], np.zeros(3, np.float32)))
    with cache.CacheReader(tmp_path) as r:
        np.testing.assert_array_equal(r["long"], rows.astype(np.float16).astype(np.float32))
        assert len(r.shards) == 2


# ------------------------------------------------------------------------------------- changed files


def test_changed_file_is_extracted_again_unchanged_is_not(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "v").mkdir()
    for name in ("a", "b"):
        media.encode_clip(tmp_path / "v" / f"{name}.mp4", _content(rng, 20, 64, 64), 10, preset="ultrafast")
    args = ["extract", "--videos", str(tmp_path / "v"), "--out", str(tmp_path / "f"), "--backbone", "none",
            "-S", "extract.image_size=32", "--modality", "video"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    with cache.CacheReader(tmp_path / "f", "video") as r:
        before = {k: r[k] for k in r}
    os.utime(tmp_path / "v" / "b.mp4", ns=(1, 1))  # touched, same content: not stale
    media.encode_clip(tmp_path / "v" / "a.mp4", _content(np.random.default_rng(9), 30, 48, 80), 10,
                      preset="ultrafast")  # new content under the same path
    info = runner.invoke(app, ["cache", "info", str(tmp_path / "f"), "--json"])
    import json

    assert json.loads(info.stdout)["video"]["stale"] == 1
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 succeeded" in again.output and "1 already cached" in again.output
    assert "1 changed on disk" in again.output
    with cache.CacheReader(tmp_path / "f", "video") as r:
        assert r["a"].shape[0] == 12 and before["a"].shape[0] == 8
        np.testing.assert_array_equal(r["b"], before["b"])
        assert r.stale() == []


def test_retracted_rows_are_never_served_even_if_reextraction_fails(tmp_path):
    clip = cache.ClipFeatures("x", np.ones((3, 4), np.float32), np.zeros(3, np.float32))
    with cache.CacheWriter(tmp_path, "video", {"dim": 4}) as w:
        w.add(clip)
    with cache.CacheWriter(tmp_path, "video", {"dim": 4}) as w:
        w.retract({"x"})
        w.add_failure("/v/x.mp4", "x", "decode", "now broken")
    with cache.CacheReader(tmp_path) as r:
        assert "x" not in r and [f["video_id"] for f in r.failures()] == ["x"]
    with cache.CacheWriter(tmp_path, "video", {"dim": 4}) as w:
        w.add(cache.ClipFeatures("x", np.full((2, 4), 2.0, np.float32), np.zeros(2, np.float32)))
    with cache.CacheReader(tmp_path) as r:
        assert r["x"].tolist() == [[2.0] * 4] * 2
        assert [b.tolist() for b in r.iter_rows(3)] == [[[2.0] * 4] * 2]  # the retracted rows are not streamed


# ---------------------------------------------------------------------------------------------- faults


def _limit_file_size(limit: int):
    def apply() -> None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_write_fault_is_one_line_and_rerun_completes(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "v").mkdir()
    for i, seconds in enumerate((1.0, 1.0, 6.0, 1.0)):  # the 6-s clip's shard is larger than the limit
        media.encode_clip(tmp_path / "v" / f"c{i}.mp4", _content(rng, int(10 * seconds), 48, 64), 10,
                          preset="ultrafast")
    cmd = [sys.executable, "-m", "cmmvt.cli", "extract", "--videos", str(tmp_path / "v"), "--backbone", "none",
           "--modality", "video", "-S", "extract.image_size=32", "-S", "extract.shard_size=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    full = subprocess.run(cmd + ["--out", str(tmp_path / "full")], capture_output=True, text=True, env=env,
                          preexec_fn=_limit_file_size(40_000))
    assert full.returncode == 1, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr
    assert "cannot write shard-00002.h5: File too large" in errors[0] and "Kept 2 complete shards" in errors[0]
    assert "rerun the same command" in errors[0]
    root = tmp_path / "full" / "video"
    assert not list(root.glob("*.tmp"))
    with cache.CacheReader(root) as r:
        assert sorted(r.ids) == ["c0", "c1"]
    rerun = subprocess.run(cmd + ["--out", str(tmp_path / "full")], capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    subprocess.run(cmd + ["--out", str(tmp_path / "clean")], check=True, capture_output=True, env=env)
    with cache.CacheReader(root) as a, cache.CacheReader(tmp_path / "clean" / "video") as b:
        assert sorted(a.ids) == sorted(b.ids) == ["c0", "c1", "c2", "c3"]
        for vid in b.ids:
            assert a[vid].tobytes() == b[vid].tobytes()


def test_vanished_or_unusable_folder_is_a_write_fault(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(cache.WriteFault, match="cannot create the cache folder"):
        cache.CacheWriter(tmp_path / "file" / "video", "video", {"dim": 4})
    w = cache.CacheWriter(tmp_path / "gone", "video", {"dim": 4}, shard_size=1)
    import shutil

    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(cache.WriteFault, match="cannot write shard-00000.h5"):
        w.add(cache.ClipFeatures("x", np.ones((2, 4), np.float32), np.zeros(2, np.float32)))
    w.close()  # after a fault: nothing more is written, no second error


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_bad_backbone_weights_are_one_line(tmp_path, folder, problem):
    weights = tmp_path / "w.pth"
    if problem == "corrupt":
        weights.write_bytes(b"not a state dict")
    res = CliRunner().invoke(app, ["extract", "--videos", str(folder), "--out", str(tmp_path / "f"),
                                   "--weights", str(weights), "-S", "extract.image_size=32"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 1 and len(lines) <= 2 and lines[-1].startswith("error:"), res.output
    assert str(weights) in lines[-1] and not (tmp_path / "f").exists()


# ---------------------------------------------------------------------------------------------- whole clips


def test_positions_beyond_training_length_and_padding_invariance():
    torch.manual_seed(0)
    p = ModelParams(hidden=16, heads=2, layers=1, crop_frames=8, max_frames=64, window=4, dropout=0.0,
                    modalities="video")
    for attention in ("local", "global"):
        model = build_model(p.model_copy(update={"attention": attention}), {"video": 12}, 3).eval()
        enc = model.encoders["video"]
        pos = enc.positions(40)  # (1, 41, D)
        torch.testing.assert_close(pos[0, 1], enc.pos[0, 1])
        torch.testing.assert_close(pos[0, -1], enc.pos[0, -1])
        assert torch.equal(enc.positions(5), enc.pos[:, :6])
        x = torch.randn(1, 40, 12)
        alone = model.represent({"video": x, "video_mask": torch.ones(1, 40, dtype=torch.bool)})  # (1, D)
        padded = model.represent({"video": torch.cat([x, torch.randn(1, 9, 12)], 1),
                                  "video_mask": torch.arange(49)[None] < 40})
        torch.testing.assert_close(alone, padded, atol=1e-5, rtol=0)
        # clips of several lengths (in and beyond the table) in one batch: each as it is alone, so a clip's
        # positions never depend on how far its batchmates pad it
        lengths = [40, 12, 6, 25]
        batch = {"video": torch.randn(4, 40, 12), "video_mask": torch.arange(40)[None] < torch.tensor(lengths)[:, None]}
        together = model.represent(batch)  # (4, D)
        for i, n in enumerate(lengths):
            one = model.represent({"video": batch["video"][i : i + 1, :n], "video_mask": torch.ones(1, n, dtype=torch.bool)})
            torch.testing.assert_close(together[i : i + 1], one, atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="model.max_frames"):
            model({"video": torch.randn(1, 65, 12), "video_mask": torch.ones(1, 65, dtype=torch.bool)})


def test_whole_clip_evaluation_sees_every_row(tmp_path):
    """A 40-row clip is one view of 40 rows by default; with evaluate.max_frames=16 one centred crop."""
    from cmmvt.train.dataset import ClipDataset, collate_views

    rows = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float16).astype(np.float32)  # as cached
    for m in ("video", "audio"):
        with cache.CacheWriter(tmp_path / m, m, {"dim": 6}) as w:
            w.add(cache.ClipFeatures("long", rows, np.arange(40, dtype=np.float32) / 4))
            w.add(cache.ClipFeatures("short", rows[:10], np.arange(10, dtype=np.float32) / 4))
    whole = collate_views([ClipDataset(tmp_path, ["long", "short"], [0, 1], ("video", "audio"), 1024)[i]
                           for i in range(2)])
    assert whole["video"].shape == (2, 40, 6) and whole["views"].tolist() == [1, 1]
    assert whole["video_mask"].sum(1).tolist() == [40, 10]
    crop = ClipDataset(tmp_path, ["long"], [0], ("video",), 16, views=1)[0]
    assert crop["video"].shape == (1, 16, 6) and torch.equal(crop["video"][0], torch.from_numpy(rows[12:28]))
    cover = ClipDataset(tmp_path, ["long"], [0], ("video",), 16)[0]
    assert cover["video"].shape[0] == 3  # views that cover the clip
