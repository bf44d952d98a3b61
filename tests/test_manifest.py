"""Tests for manifest building (:mod:`cmmvt.data.manifest`): fake "videos" are small byte files, never decoded."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cmmvt.data import manifest, records, sources
from cmmvt.config import DataParams, SplitParams
from cmmvt.data.manifest import ManifestError, ManifestReport


def touch(path: Path, data: bytes = b"\x00fake video") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip())
    return path


@pytest.fixture
def synth_tree(tmp_path: Path) -> Path:
    """A fake synth-like folder-per-class tree: 3 classes × 5 clips, plus a hidden partial file."""
    root = tmp_path / "synth"
    for c in ("disk_lr_hum", "square_beeps", "triangle_noise"):
        for i in range(5):
            touch(root / c / f"{c}_{i:03d}.mp4")
    touch(root / "square_beeps" / ".square_beeps_009.partial.mp4")
    return root


def kinetics_csv(path: Path, rows: list[str], header: str = "label,youtube_id,time_start,time_end,split") -> Path:
    return write_csv(path, "\n".join([header, *rows]) + "\n")


# ------------------------------------------------------------------------------------------ folder / synth


def test_folder_tree_ids_labels_paths(synth_tree: Path):
    report = sources.from_folder(synth_tree)
    df = report.manifest
    assert list(df.columns) == manifest.COLUMNS
    assert len(df) == 15
    assert df["video_id"].is_unique
    assert list(df["video_id"]) == sorted(df["video_id"])
    row = df.iloc[0]
    assert row.video_id == "disk_lr_hum/disk_lr_hum_000"
    assert row.label == "disk_lr_hum"
    assert row.path == f"{synth_tree.as_posix()}/disk_lr_hum/disk_lr_hum_000.mp4"
    assert df["split"].isna().all()
    assert report.missing == [] and report.duplicates == [] and report.skipped == []  # hidden file ignored


def test_folder_same_stem_in_different_folders_and_subfolders(tmp_path: Path):
    root = tmp_path / "ds"
    touch(root / "a" / "clip01.mp4")
    touch(root / "b" / "clip01.mp4")
    touch(root / "a" / "sub" / "deeper" / "clip01.MKV")
    df = sources.from_folder(root).manifest
    assert list(df["video_id"]) == ["a/clip01", "a/sub/deeper/clip01", "b/clip01"]
    assert list(df["label"]) == ["a", "a", "b"]


def test_folder_same_stem_different_extension_keeps_both(tmp_path: Path):
    root = tmp_path / "ds"
    touch(root / "a" / "x.mp4")
    touch(root / "a" / "x.avi")
    touch(root / "a" / "y.webm")
    report = sources.from_folder(root)
    assert list(report.manifest["video_id"]) == ["a/x.avi", "a/x.mp4", "a/y"]
    dup_paths = sorted(p for p, _ in report.duplicates)
    assert dup_paths == [(root / "a" / "x.avi").as_posix(), (root / "a" / "x.mp4").as_posix()]
    assert all("same id 'a/x'" in reason for _, reason in report.duplicates)


def test_folder_skips_non_video_hidden_and_root_level(tmp_path: Path):
    root = tmp_path / "ds"
    touch(root / "a" / "clip.mp4")
    touch(root / "a" / "notes.txt")
    touch(root / "a" / "README")
    touch(root / "loose.mp4")
    touch(root / ".cache" / "a" / "hidden.mp4")
    touch(root / "a" / ".DS_Store")
    report = sources.from_folder(root)
    assert list(report.manifest["video_id"]) == ["a/clip"]
    reasons = dict(report.skipped)
    assert set(reasons) == {(root / p).as_posix() for p in ("a/notes.txt", "a/README", "loose.mp4")}
    assert "not a video file (.txt)" in reasons[(root / "a/notes.txt").as_posix()]
    assert "class folder" in reasons[(root / "loose.mp4").as_posix()]


def test_scan_and_unique_ids_for_extract(tmp_path: Path):
    root = tmp_path / "v"
    touch(root / "x.mp4")
    touch(root / "x.mov")
    touch(root / "d" / "x.mp4")
    touch(root / "d" / "info.json")
    files, skipped = records.scan(root)
    assert files == [root / "d" / "x.mp4", root / "x.mov", root / "x.mp4"]
    assert skipped == [((root / "d" / "info.json").as_posix(), "not a video file (.json)")]
    ids = sources.unique_ids(root, files)
    assert ids == {"d/x": root / "d" / "x.mp4", "x.mov": root / "x.mov", "x.mp4": root / "x.mp4"}
    with pytest.raises(ManifestError, match="no such folder"):
        records.scan(tmp_path / "nope")


def test_build_synth_is_folder_per_class(synth_tree: Path):
    report = manifest.build(DataParams(source="synth", root=str(synth_tree)))
    assert report.manifest.equals(sources.from_folder(synth_tree).manifest)


# ------------------------------------------------------------------------------------------ kinetics


def test_kinetics_class_folders_with_spaces_or_underscores(tmp_path: Path):
    root = tmp_path / "k"
    touch(root / "air drumming" / "abc_000010_000020.mp4")
    touch(root / "abseiling" / "def_000000_000010.mkv")
    touch(root / "passing_American_football_(in_game)" / "ghi_000005_000015.webm")
    touch(root / "abseiling" / "unlisted_000000_000010.mp4")
    csv = kinetics_csv(tmp_path / "val.csv", [
        "air drumming,abc,10,20,val",
        "abseiling,def,0,10,validate",
        '"passing American football (in game)",ghi,5,15,train',
    ])
    report = sources.from_kinetics(csv, root)
    df = report.manifest.set_index("video_id")
    assert list(df.index) == ["abc_000010_000020", "def_000000_000010", "ghi_000005_000015"]
    assert df.loc["abc_000010_000020", "label"] == "air drumming"
    assert df.loc["abc_000010_000020", "path"] == (root / "air drumming" / "abc_000010_000020.mp4").as_posix()
    assert df.loc["ghi_000005_000015", "label"] == "passing American football (in game)"
    assert list(df["split"]) == ["val", "val", "train"]
    assert report.missing == [] and report.duplicates == [] and report.skipped == []


def test_kinetics_flat_layout_missing_and_duplicates(tmp_path: Path):
    root = tmp_path / "clips"
    touch(root / "aaa_000001_000011.mp4")
    touch(root / "bbb_000002_000012.avi")
    touch(root / "list.txt")
    csv = kinetics_csv(tmp_path / "train.csv", [
        "cooking,aaa,1,11,train",
        "cooking,aaa,1.0,11.0,train",       # the same clip again
        "dancing,bbb,2,12,train",
        "dancing,zzz,3,13,train",            # no file
    ], header="label,youtube_id,time_start,time_end,split,is_cc")
    report = sources.from_kinetics(csv, root)
    assert list(report.manifest["video_id"]) == ["aaa_000001_000011", "bbb_000002_000012"]
    assert report.missing == ["zzz_000003_000013"]
    assert len(report.duplicates) == 1
    path, reason = report.duplicates[0]
    assert path == (root / "aaa_000001_000011.mp4").as_posix()
    assert "listed again" in reason and ":3" in reason
    assert report.skipped == [((root / "list.txt").as_posix(), "not a video file (.txt)")]


def test_kinetics_same_clip_in_two_places_prefers_label_folder(tmp_path: Path):
    root = tmp_path / "k"
    touch(root / "a_stray" / "abc_000010_000020.mp4")
    touch(root / "train" / "air_drumming" / "abc_000010_000020.mp4")
    touch(root / "abc_000010_000020.mkv")
    csv = kinetics_csv(tmp_path / "k.csv", ["air drumming,abc,10,20,train"])
    report = sources.from_kinetics(csv, root)
    assert list(report.manifest["path"]) == [(root / "train/air_drumming/abc_000010_000020.mp4").as_posix()]
    assert sorted(p for p, _ in report.duplicates) == [
        (root / "a_stray/abc_000010_000020.mp4").as_posix(),
        (root / "abc_000010_000020.mkv").as_posix(),
    ]


def test_kinetics_same_clip_two_places_no_label_folder_first_sorted_kept(tmp_path: Path):
    root = tmp_path / "k"
    touch(root / "b" / "abc_000010_000020.mp4")
    touch(root / "a" / "abc_000010_000020.mp4")
    csv = kinetics_csv(tmp_path / "k.csv", ["zumba,abc,10,20,train"])
    report = sources.from_kinetics(csv, root)
    assert list(report.manifest["path"]) == [(root / "a/abc_000010_000020.mp4").as_posix()]
    assert [p for p, _ in report.duplicates] == [(root / "b/abc_000010_000020.mp4").as_posix()]


def test_kinetics_split_optional_and_bad_values(tmp_path: Path):
    root = tmp_path / "k"
    touch(root / "abc_000010_000020.mp4")
    csv = kinetics_csv(tmp_path / "k.csv", ["x,abc,10,20"], header="label,youtube_id,time_start,time_end")
    assert sources.from_kinetics(csv, root).manifest["split"].isna().all()
    bad = kinetics_csv(tmp_path / "bad.csv", ["x,abc,10,20,holdout"])
    with pytest.raises(ManifestError, match=r"bad\.csv:2: split 'holdout'"):
        sources.from_kinetics(bad, root)
    nolabel = kinetics_csv(tmp_path / "nolabel.csv", ["abc,10,20,test"], header="youtube_id,time_start,time_end,split")
    with pytest.raises(ManifestError, match=r"nolabel\.csv: missing column\(s\) label"):
        sources.from_kinetics(nolabel, root)


def test_kinetics_conflicting_labels_and_bad_rows(tmp_path: Path):
    root = tmp_path / "k"
    touch(root / "abc_000010_000020.mp4")
    csv = kinetics_csv(tmp_path / "k.csv", ["x,abc,10,20,train", "y,abc,10,20,train", ",def,1,2,train",
                                            "x,ghi,soon,2,train", ",jkl,1,2,"])
    report = sources.from_kinetics(csv, root)
    assert list(report.manifest["label"]) == ["x"]
    assert "with label 'y' (kept 'x')" in report.duplicates[0][1]
    assert [r for _, r in report.skipped] == ["clip def_000001_000002: empty label in split train",
                                              "bad time_start/time_end 'soon', '2'"]
    assert report.missing == ["jkl_000001_000002"]  # no label, no split: an unlabelled clip, here not on disk


# ------------------------------------------------------------------------------------------ plain csv


def test_csv_relative_to_csv_folder_missing_and_duplicates(tmp_path: Path):
    base = tmp_path / "set"
    touch(base / "videos" / "a" / "clip01.mp4")
    touch(base / "videos" / "b" / "clip01.mp4")
    touch(base / "videos" / "c.mp4")
    touch(base / "videos" / "c.avi")
    absolute = touch(tmp_path / "elsewhere" / "far.mp4")
    csv = write_csv(base / "list.csv", f"""
path,label,split
videos/a/clip01.mp4,1,
videos/b/clip01.mp4,2,train
./videos/a/clip01.mp4,1,
videos/c.mp4,3,Validation
videos/c.avi,3,
videos/gone.mp4,3,
{absolute},007,test
""")
    report = sources.from_csv(csv)
    df = report.manifest.set_index("video_id")
    assert list(df.index) == sorted(df.index)
    assert set(df.index) == {"videos/a/clip01", "videos/b/clip01", "videos/c.mp4", "videos/c.avi",
                             absolute.with_suffix("").as_posix().lstrip("/")}
    assert df.loc["videos/a/clip01", "path"] == (base / "videos/a/clip01.mp4").as_posix()
    assert df.loc["videos/a/clip01", "label"] == "1"
    assert df.loc[absolute.with_suffix("").as_posix().lstrip("/"), "label"] == "007"  # labels stay strings
    assert df.loc["videos/c.mp4", "split"] == "val"
    assert df.loc["videos/b/clip01", "split"] == "train"
    assert pd.isna(df.loc["videos/a/clip01", "split"])
    assert report.missing == [(base / "videos/gone.mp4").as_posix()]
    listed_twice = [p for p, r in report.duplicates if "listed again" in r]
    assert listed_twice == [(base / "videos/a/clip01.mp4").as_posix()]
    same_id = sorted(p for p, r in report.duplicates if "same id" in r)
    assert same_id == [(base / "videos/c.avi").as_posix(), (base / "videos/c.mp4").as_posix()]


def test_csv_relative_to_root_and_errors(tmp_path: Path):
    root = tmp_path / "root"
    touch(root / "a.mp4")
    csv = write_csv(tmp_path / "lists" / "l.csv", "path,label\na.mp4,cat\n")
    df = sources.from_csv(csv, root=root).manifest
    assert list(df["path"]) == [(root / "a.mp4").as_posix()] and list(df["video_id"]) == ["a"]
    assert sources.from_csv(csv).missing == [(tmp_path / "lists" / "a.mp4").as_posix()]
    with pytest.raises(ManifestError, match=r"l2\.csv: missing column\(s\) label"):
        sources.from_csv(write_csv(tmp_path / "l2.csv", "path,class\na.mp4,cat\n"), root=root)
    with pytest.raises(ManifestError, match="no such CSV"):
        sources.from_csv(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------------ build errors


def test_build_errors(tmp_path: Path, synth_tree: Path):
    with pytest.raises(ManifestError, match=r"data\.root = .*nope.*no such folder.*synth"):
        manifest.build(DataParams(source="synth", root=str(tmp_path / "nope")))
    with pytest.raises(ManifestError, match=r"data\.csv is required when data\.source = 'kinetics'"):
        manifest.build(DataParams(source="kinetics", root=str(synth_tree)))
    with pytest.raises(ManifestError, match=r"data\.csv = .*missing\.csv.*no such file"):
        manifest.build(DataParams(source="csv", root=str(synth_tree), csv=str(tmp_path / "missing.csv")))
    empty = tmp_path / "empty"
    touch(empty / "readme.txt")
    with pytest.raises(ManifestError, match=r"no video files in class folders.*1 other file"):
        manifest.build(DataParams(source="folder", root=str(empty)))
    csv = kinetics_csv(tmp_path / "k.csv", ["x,abc,10,20,train"])
    with pytest.raises(ManifestError, match=r"no usable clips \(1 of 1 listed not found"):
        manifest.build(DataParams(source="kinetics", root=str(synth_tree), csv=str(csv)))
    assert issubclass(ManifestError, ValueError)


def test_build_dispatches_csv_and_kinetics(tmp_path: Path):
    root = tmp_path / "r"
    touch(root / "abc_000010_000020.mp4")
    k = kinetics_csv(tmp_path / "k.csv", ["x,abc,10,20,train"])
    assert list(manifest.build(DataParams(source="kinetics", root=str(root), csv=str(k))).manifest["video_id"]) \
        == ["abc_000010_000020"]
    c = write_csv(tmp_path / "c.csv", "path,label\nabc_000010_000020.mp4,x\n")
    assert list(manifest.build(DataParams(source="csv", root=str(root), csv=str(c))).manifest["video_id"]) \
        == ["abc_000010_000020"]


# ------------------------------------------------------------------------------------------ splits


def _toy(n_per_class: dict[str, int]) -> pd.DataFrame:
    rows = [{"video_id": f"{c}/{i:03d}", "path": f"r/{c}/{i:03d}.mp4", "label": c, "split": None}
            for c, n in n_per_class.items() for i in range(n)]
    return pd.DataFrame(rows, columns=manifest.COLUMNS)


def test_splits_deterministic_and_independent_of_row_order():
    df = _toy({"a": 10, "b": 7, "c": 3})
    s1 = manifest.assign_splits(df, SplitParams(), seed=0)
    s2 = manifest.assign_splits(df.sample(frac=1.0, random_state=3), SplitParams(), seed=0)
    pd.testing.assert_frame_equal(s1, s2)
    assert list(s1["video_id"]) == sorted(df["video_id"])
    s3 = manifest.assign_splits(df, SplitParams(), seed=1)
    assert not s1["split"].equals(s3["split"])


def test_splits_stratified_with_minimums():
    out = manifest.assign_splits(_toy({"a": 10, "b": 3, "c": 4, "d": 2, "e": 1}), SplitParams(), seed=0)
    counts = out.groupby("label")["split"].value_counts().unstack(fill_value=0)
    assert counts.loc["a"].to_dict() == {"train": 6, "val": 2, "test": 2}
    for c in ("b", "c"):
        assert counts.loc[c, "val"] >= 1 and counts.loc[c, "test"] >= 1 and counts.loc[c, "train"] >= 1
    assert counts.loc["d"].sum() == 2 and counts.loc["e"].sum() == 1
    assert set(out["split"]) <= set(manifest.SPLITS)


def test_splits_keep_given_and_per_class_stable():
    df = _toy({"a": 10, "b": 10})
    df.loc[0, "split"] = "test"
    df.loc[1, "split"] = "Validate"
    out = manifest.assign_splits(df, SplitParams(), seed=0).set_index("video_id")
    assert out.loc["a/000", "split"] == "test" and out.loc["a/001", "split"] == "val"
    alone = manifest.assign_splits(_toy({"b": 10}), SplitParams(), seed=0).set_index("video_id")
    with_more = manifest.assign_splits(_toy({"b": 10, "z": 5}), SplitParams(), seed=0).set_index("video_id")
    assert alone["split"].equals(with_more.loc[alone.index, "split"])


def test_splits_zero_fraction_and_errors():
    out = manifest.assign_splits(_toy({"a": 5}), SplitParams(train=0.8, val=0.0, test=0.2), seed=0)
    assert out["split"].value_counts().to_dict() == {"train": 4, "test": 1}
    with pytest.raises(ManifestError, match="all 0"):
        manifest.assign_splits(_toy({"a": 5}), SplitParams(train=0, val=0, test=0), seed=0)


# ------------------------------------------------------------------------------------------ write / read


def test_write_read_roundtrip_and_issues(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    df = manifest.assign_splits(_toy({"1": 3, "b": 3}), SplitParams(), seed=0)
    report = ManifestReport(df.iloc[::-1], missing=["m.mp4"], duplicates=[("d.mp4", "why")],
                            skipped=[("s.txt", "not a video file (.txt)")])
    out = tmp_path / "sub" / "manifest.csv"
    with caplog.at_level(logging.INFO, logger="cmmvt.data.manifest"):
        manifest.write(report, out)
    assert "6 clips, 2 classes" in caplog.text and "1 missing, 1 duplicates, 1 skipped" in caplog.text
    back = manifest.read(out)
    assert list(back.columns) == manifest.COLUMNS
    assert list(back["video_id"]) == sorted(df["video_id"])
    assert back["label"].tolist()[:3] == ["1", "1", "1"]  # strings, not ints
    issues = pd.read_csv(tmp_path / "sub" / "manifest_issues.csv")
    assert issues.values.tolist() == [["missing", "m.mp4", "listed in the source CSV but no file found"],
                                      ["duplicate", "d.mp4", "why"],
                                      ["skipped", "s.txt", "not a video file (.txt)"]]


def test_write_always_writes_issues_header_and_refuses_unsplit(tmp_path: Path):
    df = manifest.assign_splits(_toy({"a": 3}), SplitParams(), seed=0)
    manifest.write(ManifestReport(df), tmp_path / "m.csv")
    assert (tmp_path / "manifest_issues.csv").read_text().strip() == "kind,path,reason"
    with pytest.raises(ManifestError, match="split"):
        manifest.write(ManifestReport(_toy({"a": 3})), tmp_path / "m2.csv")


def test_read_errors(tmp_path: Path):
    bad = write_csv(tmp_path / "bad.csv", "video_id,path\na,a.mp4\n")
    with pytest.raises(ManifestError, match=r"bad\.csv: missing column\(s\) label, split"):
        manifest.read(bad)
    dup = write_csv(tmp_path / "dup.csv", "video_id,path,label,split\na,a.mp4,x,train\na,b.mp4,x,val\n")
    with pytest.raises(ManifestError, match=r"dup\.csv: video_id 'a' appears more than once"):
        manifest.read(dup)
    with pytest.raises(ManifestError, match="no such manifest"):
        manifest.read(tmp_path / "none.csv")


# ------------------------------------------------------------------------------------------ stage


def test_prepare_end_to_end_synth(tmp_path: Path, synth_tree: Path):
    data = DataParams(source="synth", root=str(synth_tree), manifest=str(tmp_path / "data" / "manifest.csv"))
    report = manifest.prepare(data, seed=0)
    df = manifest.read(data.manifest)
    assert len(df) == 15 and set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("label")["split"].nunique().eq(3).all()
    first = Path(data.manifest).read_bytes()
    manifest.prepare(data, seed=0)
    assert Path(data.manifest).read_bytes() == first  # deterministic, byte for byte
    line = manifest.summary(report, data.manifest)
    assert "15 clips, 3 classes (train 9, val 3, test 3); 0 missing, 0 duplicates, 0 skipped" in line


def test_import_pulls_no_av_or_torch():
    code = "import sys, cmmvt.data.manifest; print(sorted({'av', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1],
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": ""})
    assert out.stdout.strip() == "[]"


def test_splits_accept_pandas_na_and_string_dtype():
    df = _toy({"a": 4}).astype("string")
    df.loc[0, "split"] = "train"
    out = manifest.assign_splits(df, SplitParams(), seed=0)
    assert out["split"].notna().all() and out.set_index("video_id").loc["a/000", "split"] == "train"


def test_unlabelled_pool_from_folder_csv_and_kinetics(tmp_path: Path, synth_tree: Path, caplog):
    for i in range(4):
        touch(synth_tree / "unlabelled" / f"clip_{i:04d}.mp4")
    data = DataParams(source="folder", root=str(synth_tree), manifest=str(tmp_path / "m.csv"))
    with caplog.at_level(logging.INFO):
        report = manifest.prepare(data, seed=0)
    df = manifest.read(data.manifest)
    pool = df[df["split"] == "unlabelled"]
    assert len(pool) == 4 and (pool["label"] == "").all() and pool["video_id"].str.startswith("unlabelled/").all()
    assert set(df.loc[df["split"] != "unlabelled", "label"]) == {"disk_lr_hum", "square_beeps", "triangle_noise"}
    assert (df["split"] != "unlabelled").sum() == 15  # the labelled clips keep their stratified splits
    assert "3 classes (train 9, val 3, test 3, unlabelled 4)" in manifest.summary(report, data.manifest)
    # CSV: an empty label or the split unlabelled (any spelling) → the pool; its label is dropped
    for name in ("a", "b", "c"):
        touch(tmp_path / "clips" / f"{name}.mp4")
    csv = write_csv(tmp_path / "list.csv", "path,label,split\nclips/a.mp4,cat,train\nclips/b.mp4,,\n"
                                           "clips/c.mp4,dog,Unlabeled\n")
    rows = manifest.assign_splits(sources.from_csv(csv).manifest, SplitParams(), 0).set_index("video_id")
    assert rows.loc["clips/a", ["label", "split"]].tolist() == ["cat", "train"]
    assert rows.loc["clips/b", ["label", "split"]].tolist() == ["", "unlabelled"]
    assert rows.loc["clips/c", ["label", "split"]].tolist() == ["", "unlabelled"]
    # Kinetics: rows without a label (its test CSVs) are the pool, not skipped
    touch(tmp_path / "k" / "abc_000001_000011.mp4")
    k = kinetics_csv(tmp_path / "k.csv", [",abc,1,11,"])
    rep = sources.from_kinetics(k, tmp_path / "k")
    assert rep.manifest[["label", "split"]].values.tolist() == [["", "unlabelled"]] and not rep.skipped


def test_labels_exactly_where_the_split_is_labelled(tmp_path: Path):
    bad = pd.DataFrame({"video_id": ["a", "b"], "path": ["a.mp4", "b.mp4"], "label": ["cat", "dog"],
                        "split": ["train", "unlabelled"]})
    with pytest.raises(ManifestError, match="'b'.*not allowed in unlabelled"):
        manifest.write(ManifestReport(bad), tmp_path / "m.csv")
    bad = bad.assign(label=["", ""])
    with pytest.raises(ManifestError, match="'a'.*a label is required in train"):
        manifest.write(ManifestReport(bad), tmp_path / "m.csv")
