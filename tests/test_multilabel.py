"""AudioSet- and VGGSound-style data: segment CSVs in their released layouts, untrimmed videos, several labels per
clip, splits that keep every label's frequency."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmmvt import config
from cmmvt.data import manifest, records, sources

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
    report = sources.from_csv(tmp_path / "list.csv", root)
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
                       "label": [records.join_labels(n for n, on in zip(names, row) if on) for row in y],
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


def test_mean_average_precision_against_scikit_learn():
    """mAP is the mean of scikit-learn's per-class AP; a clip with two labels counts in both classes; d′ follows
    from mean AUC."""
    from scipy.stats import norm
    from sklearn.metrics import average_precision_score, roc_auc_score

    from cmmvt.eval import metrics

    rng = np.random.default_rng(0)
    y = rng.random((40, 3)) < 0.4
    y[0] = [True, True, False]  # two labels
    logits = y * 1.0 + rng.normal(0, 0.8, y.shape)
    m = metrics.multilabel_metrics(logits, y.astype(float))
    ap = [average_precision_score(y[:, c], logits[:, c]) for c in range(3)]
    assert m["mAP"] == pytest.approx(np.mean(ap))
    assert m["mean_auc"] == pytest.approx(np.mean([roc_auc_score(y[:, c], logits[:, c]) for c in range(3)]))
    assert m["d_prime"] == pytest.approx(np.sqrt(2) * norm.ppf(m["mean_auc"]))
    lowered = logits.copy()
    lowered[0, 1] = -9  # the second label of the two-label clip ranked last: class 1's AP falls, class 0's stays
    per = metrics.per_class_ap(lowered, y.astype(float))
    assert per[1] < ap[1] and per[0] == pytest.approx(ap[0])


def _mix(path: Path, classes: list[int], seed: int) -> None:
    """A real clip showing and sounding one or two synthetic classes: the left half of the picture from the first,
    the right half from the second, their sounds added."""
    from cmmvt import media
    from cmmvt.config import SynthParams
    from cmmvt.data.synth import CLASSES, clip_rng, render_clip

    tiny = SynthParams(size=64, duration=2.0)
    parts = [render_clip(CLASSES[c], clip_rng(seed, c, 0), tiny) for c in classes]
    frames = parts[0][0].copy()
    if len(parts) == 2:
        frames[:, :, 32:] = parts[1][0][:, :, 32:]
    wave = sum(w for _, w in parts) / len(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    media.encode_clip(path, frames, tiny.fps, wave.astype(np.float32), tiny.sample_rate)


@pytest.mark.slow
def test_multilabel_training_beats_chance_and_predicts_both_labels(tmp_path):
    """Clips of one or two of four classes (a plain CSV with a ``labels`` column), split by iterative
    stratification, extracted by the real pipeline, trained with ``train.task=multilabel``: test mAP far above the
    chance level (each class's share of clips), thresholds kept in the checkpoint, and ``predict`` names both
    classes of a two-class clip; a multiclass run on the same data refuses in one line."""
    from cmmvt.eval import evaluate, predict
    from cmmvt.features import extract
    from cmmvt.train import loop

    names = ["hum", "chirp", "drum", "bell"]
    combos = [[0], [1], [2], [3], [0, 1], [2, 3], [0, 2], [1, 3]]
    rows = []
    for k, combo in enumerate(combos):
        for i in range(12):
            path = tmp_path / "clips" / f"c{k}_{i}.mp4"
            _mix(path, combo, seed=100 * k + i)
            rows.append({"path": path.name, "labels": ";".join(names[c] for c in combo)})
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    overrides = ["data.source=csv", f"data.csv={tmp_path / 'list.csv'}", f"data.root={tmp_path / 'clips'}",
                 f"data.manifest={tmp_path / 'manifest.csv'}", f"extract.out={tmp_path / 'features'}",
                 "extract.image_size=64", "pretrain.objective=none", "train.task=multilabel", "train.epochs=60",
                 "train.min_steps=0", "model.hidden=64", "seed=0"]
    p = config.load(tmp_path / "none.yaml", overrides)
    manifest.prepare(p.data, seed=p.data.seed)
    assert extract.stage(p.extract, p.data.manifest, overwrite=True)
    assert all(" 0 failed" in (tmp_path / "features" / mod / extract.COMPLETE).read_text() for mod in ("video", "audio"))
    result = loop.train(p, tmp_path / "model.pt", live_dir=None)
    assert result.metric == "mAP" and "val mAP" in result.line()
    m = evaluate.evaluate(p, tmp_path / "model.pt", tmp_path / "eval")
    targets = np.array([[n in r["labels"].split(";") for n in names] for r in rows])
    chance = targets.mean()  # the mAP of scores that ignore the clip
    assert m["mAP"] > chance + 0.3 and m["mean_auc"] > 0.8, (m, chance)
    per_class = pd.read_csv(tmp_path / "eval" / "per_class.csv")
    assert list(per_class.columns) == ["class", "support", "ap"]
    df = manifest.read(p.data.manifest)
    two = df[(df.split == "test") & df.label.str.contains(";")]
    found = predict.predict(two.path.tolist(), tmp_path / "model.pt")
    both = [set(r["labels"]) == set(label.split(";")) for r, label in zip(found, two.label)]
    assert len(two) >= 5 and np.mean(both) >= 0.8, list(zip(two.label, found))
    from cmmvt.eval import timeline

    with pytest.raises(ValueError, match="multi-label model .* not supported by --timeline"):
        timeline.from_cache(p.extract.out, two.video_id.tolist()[:1], tmp_path / "model.pt")
    with pytest.raises(ValueError, match="several labels .* set train.task=multilabel"):
        loop.train(config.load(tmp_path / "none.yaml", [*overrides, "train.task=multiclass"]), tmp_path / "x.pt")


def test_segments_of_one_file_share_one_decoding_pass(tmp_path, monkeypatch):
    """Overlapping and close segments of one file (and one far away) in one run: the close ones are decoded in one
    pass — frames once, audio once — and every segment's rows equal those it gets extracted on its own."""
    from cmmvt import media
    from cmmvt.config import ExtractParams
    from cmmvt.features import backbones, cache, extract

    _changing_clip(tmp_path / "film.mkv", 0, 30)
    spans = {"a": (2.0, 6.0), "b": (4.0, 8.0), "c": (9.5, 12.0), "far": (24.0, 27.0)}  # a, b overlap; c is close
    items = [extract.Item(k, tmp_path / "film.mkv", v) for k, v in spans.items()]
    bb = backbones.create("none", image_size=64)
    calls = {"frames": 0, "audio": 0}

    def counting(name: str, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(media, "frames_at", counting("frames", media.frames_at))
    monkeypatch.setattr(media.video, "frames_at", media.frames_at)
    monkeypatch.setattr(media, "audio_chunks", counting("audio", media.audio_chunks))
    together = ExtractParams(out=str(tmp_path / "together"), backbone="none", image_size=64, fps=4.0, workers=0)
    for mod in ("video", "audio"):
        assert extract.run_modality(items, together, mod, bb).succeeded == 4
    assert calls == {"frames": 2, "audio": 2}  # one pass for a, b, c and one for far, per modality
    alone = together.model_copy(update={"out": str(tmp_path / "alone")})
    for it in items:
        for mod in ("video", "audio"):
            extract.run_modality([it], alone, mod, bb)
    for mod in ("video", "audio"):
        with cache.CacheReader(tmp_path / "together", mod) as r, cache.CacheReader(tmp_path / "alone", mod) as q:
            for k, (start, end) in spans.items():
                assert len(r[k]) == round((end - start) * 4)
                np.testing.assert_allclose(r[k], q[k], atol=1e-4, err_msg=f"{mod} {k}")


def test_released_test_sets_stay_test_and_validation_comes_from_training_rows(tmp_path):
    """AudioSet's eval file is the test split and its training file's rows go to train and val only; VGGSound's
    train rows give train and val (the release has no val); fractional segment bounds keep ids apart."""
    (tmp_path / "class_labels_indices.csv").write_text(CLASS_INDEX)
    rows = [f'v{i:03d}, {10 * i}.000, {10 * i + 10}.000, "/m/09x0r,/m/0jbk"' for i in range(20)]
    (tmp_path / "balanced_train_segments.csv").write_text("# YTID, start_seconds, end_seconds, positive_labels\n"
                                                           + "\n".join(rows) + "\n")
    (tmp_path / "eval_segments.csv").write_text('# header\nev1, 0.000, 10.000, "/m/0bt9lr"\n')
    root = tmp_path / "v"
    for i in range(20):
        _touch(root / f"v{i:03d}.mp4")
    _touch(root / "ev1_000000_000010.mp4")
    p = config.load(tmp_path / "none.yaml", ["data.source=audioset", f"data.root={root}",
                                             f"data.csv=[{tmp_path / 'balanced_train_segments.csv'},"
                                             f"{tmp_path / 'eval_segments.csv'}]",
                                             f"data.class_index={tmp_path / 'class_labels_indices.csv'}",
                                             f"data.manifest={tmp_path / 'm.csv'}"])
    df = manifest.prepare(p.data).manifest.set_index("video_id")
    assert df.loc["ev1_000000_000010", "split"] == "test"
    train_rows = df.drop(index="ev1_000000_000010")
    assert set(train_rows.split) == {"train", "val"} and (train_rows.split == "val").sum() == 5  # 0.6 : 0.2

    (tmp_path / "list.csv").write_text("path,labels,start,end\nlong.mp4,a,10.2,20.2\nlong.mp4,b,10.7,20.7\n")
    _touch(tmp_path / "c" / "long.mp4")
    ids = sources.from_csv(tmp_path / "list.csv", tmp_path / "c").manifest.video_id.tolist()
    assert ids == ["long_000010.200_000020.200", "long_000010.700_000020.700"]
