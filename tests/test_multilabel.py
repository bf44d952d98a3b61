"""AudioSet- and VGGSound-style data: segment CSVs in their released layouts, untrimmed videos, several labels per
clip, splits that keep every label's frequency."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmmvt import config
from cmmvt.data import manifest, youtube

CLASS_INDEX = '''index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/05zppz,"Male speech, man speaking"
2,/m/0jbk,"Animal"
3,/m/0bt9lr,"Dog"
'''
SEGMENTS = '''# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=5, num_segs=5, num_unique_labels=4, num_positive_labels=8
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"
-0RWZT-miFs, 420.000, 430.000, "/m/0jbk,/m/0bt9lr"
-1nilez17Dg, 30.000, 40.000, "/m/0bt9lr,/m/zzzz"
-2PDE7hUArE, 0.000, 10.000, "/m/yyyy"
AbsentClip1, 10.000, 20.000, "/m/09x0r"
'''


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")  # a manifest never opens a video
    return path


def test_audioset_csvs_in_the_released_layout(tmp_path):
    """Comment lines, quoted comma-separated ids named by the class index (names with commas kept whole), trimmed
    files in class folders and an untrimmed one (its row carries the segment), unknown ids and absent files listed."""
    (tmp_path / "class_labels_indices.csv").write_text(CLASS_INDEX)
    (tmp_path / "eval_segments.csv").write_text(SEGMENTS)
    root = tmp_path / "videos"
    _touch(root / "Speech" / "--PJHxphWEs_000030_000040.mp4")
    _touch(root / "-0RWZT-miFs.mkv")  # the whole video, 420 s into it
    _touch(root / "Y-1nilez17Dg_30.000_40.000.mp4")
    _touch(root / "-2PDE7hUArE_000000.mp4")
    p = config.load(tmp_path / "none.yaml", ["data.source=audioset", f"data.root={root}", f"data.csv={tmp_path / 'eval_segments.csv'}",
                           f"data.class_index={tmp_path / 'class_labels_indices.csv'}",
                           f"data.manifest={tmp_path / 'manifest.csv'}"])
    report = manifest.prepare(p.data)
    df = manifest.read(p.data.manifest).set_index("video_id")
    assert list(df.index) == ["--PJHxphWEs_000030_000040", "-0RWZT-miFs_000420_000430", "-1nilez17Dg_000030_000040"]
    assert df.label.tolist() == ["Male speech, man speaking;Speech", "Animal;Dog", "Dog"]
    assert (df.split == "test").all()  # eval_segments.csv
    assert df.loc["-0RWZT-miFs_000420_000430", ["start", "end"]].tolist() == ["420", "430"]
    assert df.loc["--PJHxphWEs_000030_000040", "start"] == ""  # cut already: the whole file
    assert report.missing == ["AbsentClip1_000010_000020"]
    reasons = " ".join(r for _, r in report.skipped)
    assert "/m/zzzz" in reasons and "/m/yyyy (row skipped)" in reasons
    issues = pd.read_csv(tmp_path / "manifest_issues.csv")
    assert set(issues.kind) == {"missing", "skipped"}


def test_audioset_needs_its_class_index(tmp_path):
    (tmp_path / "eval_segments.csv").write_text(SEGMENTS)
    (tmp_path / "v").mkdir()
    p = config.load(tmp_path / "none.yaml", ["data.source=audioset", f"data.root={tmp_path / 'v'}",
                           f"data.csv={tmp_path / 'eval_segments.csv'}"])
    with pytest.raises(manifest.ManifestError, match="data.class_index"):
        manifest.build(p.data)


def test_vggsound_csv_ten_second_segments(tmp_path):
    """No header, quoted labels with commas, train/test splits, 10-s segments; the whole video or the cut file."""
    (tmp_path / "vggsound.csv").write_text('---g-f_I2yQ,1,people marching,test\n--0PQM4-hqg,30,"dog barking, '
                                           'growling",train\n--56QUhyDQM,185,playing tennis,train\n')
    root = tmp_path / "v"
    _touch(root / "---g-f_I2yQ_000001.mp4")
    _touch(root / "--0PQM4-hqg.webm")
    p = config.load(tmp_path / "none.yaml", ["data.source=vggsound", f"data.root={root}", f"data.csv={tmp_path / 'vggsound.csv'}"])
    report = manifest.build(p.data)
    df = report.manifest.set_index("video_id")
    assert df.loc["---g-f_I2yQ_000001_000011", ["label", "split", "start"]].tolist() == ["people marching", "test", ""]
    assert df.loc["--0PQM4-hqg_000030_000040", ["label", "start", "end"]].tolist() == ["dog barking, growling",
                                                                                       "30", "40"]
    assert report.missing == ["--56QUhyDQM_000185_000195"]


def test_plain_csv_with_several_labels_and_segments(tmp_path):
    """A ``labels`` column (``;``-separated, any order) and optional start/end: two segments of one file are two
    clips."""
    root = tmp_path / "clips"
    _touch(root / "a.mp4")
    _touch(root / "long.mp4")
    (tmp_path / "list.csv").write_text("path,labels,start,end\na.mp4,dog; cat,,\nlong.mp4,cat,0,10\n"
                                       "long.mp4,dog;bird,60,70\n")
    report = manifest.from_csv(tmp_path / "list.csv", root)
    df = report.manifest.set_index("video_id")
    assert df.label.to_dict() == {"a": "cat;dog", "long_000000_000010": "cat", "long_000060_000070": "bird;dog"}
    assert df.loc["long_000060_000070", ["start", "end"]].tolist() == ["60", "70"]
    assert not report.duplicates


def test_multilabel_splits_keep_every_labels_frequency():
    """Iterative stratification (Sechidis et al. 2011) where clips carry several labels: a rare label lands in every
    split; the result does not depend on row order."""
    rng = np.random.default_rng(3)
    names = ["a", "b", "c", "d"]
    y = rng.random((150, 4)) < [0.6, 0.3, 0.1, 0.05]
    y[~y.any(1), 0] = True
    df = pd.DataFrame({"video_id": [f"v{i:03d}" for i in range(150)],
                       "label": [manifest.join_labels(n for n, on in zip(names, row) if on) for row in y],
                       "split": None})
    out = manifest.assign_splits(df, config.SplitParams(), seed=0)
    shuffled = manifest.assign_splits(df.sample(frac=1, random_state=1), config.SplitParams(), seed=0)
    assert out.split.tolist() == shuffled.split.tolist()
    for name, total in zip(names, y.sum(0)):
        per_split = out[out.label.str.split(";").apply(lambda x: name in x)].split.value_counts()
        assert set(per_split.index) == {"train", "val", "test"}, name
        assert abs(per_split["train"] - 0.6 * total) <= max(2, 0.15 * total), (name, per_split.to_dict())


def _changing_clip(path: Path, first: int, seconds: int, fps: int = 10, rate: int = 16000) -> None:
    """Second s of the film: its own coarse random picture and its own tone (the same for a file cut from it);
    PCM sound, so a cut file holds the very samples of the film."""
    from cmmvt import media

    frames, audio = [], []
    for s in range(first, first + seconds):
        rng = np.random.default_rng(s)
        picture = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # (64, 64, 3)
        frames += [picture] * fps
        t = np.arange(rate) / rate
        audio.append(0.3 * np.sin(2 * np.pi * (300 + 150 * s) * t))
    path.parent.mkdir(parents=True, exist_ok=True)
    media.encode_clip(path, np.stack(frames), fps, np.concatenate(audio).astype(np.float32), rate, crf=10,
                      acodec="pcm_s16le", video_options={"g": str(fps)})  # a keyframe a second: seeking lands near


def test_a_segment_gives_the_rows_of_the_same_part_cut_to_its_own_file(tmp_path):
    """Extraction of ``start``–``end`` of a 12-s film (seeking to it) equals extraction of a file holding only those
    seconds, row for row in both modalities, and differs from another segment; a segment past the end fails with
    its reason, the others still extract."""
    from cmmvt.config import ExtractParams
    from cmmvt.features import backbones, cache, extract

    _changing_clip(tmp_path / "film.mkv", 0, 12)
    _changing_clip(tmp_path / "cut.mkv", 5, 4)
    items = [extract.Item("seg", tmp_path / "film.mkv", (5.0, 9.0)), extract.Item("cut", tmp_path / "cut.mkv"),
             extract.Item("other", tmp_path / "film.mkv", (0.0, 4.0)),
             extract.Item("past", tmp_path / "film.mkv", (30.0, 40.0))]
    p = ExtractParams(out=str(tmp_path / "f"), backbone="none", image_size=64, fps=4.0, batch_size=8)
    bb = backbones.create("none", image_size=64)
    for mod in ("video", "audio"):
        s = extract.run_modality(items, p, mod, bb)
        ((path, reason),) = s.failures  # the file and the segment named
        assert s.succeeded == 3 and path.endswith("film.mkv") and "segment 30.0–40.0 s is outside the video" in reason
        with cache.CacheReader(tmp_path / "f", mod) as r:
            seg, cut, other = r["seg"], r["cut"], r["other"]
        assert seg.shape == cut.shape == (16, r.dim)
        gap = np.abs(seg - cut).mean()
        assert gap < 0.02 * np.abs(seg - other).mean(), (mod, gap, np.abs(seg - other).mean())
